//! The budget against the simulator: what the client tells the pacer of a service's answers.

mod common;

use common::*;
use drift_sim::{Faults, SimConfig};

/// A service answering 5xx (or a broken body) to many requests still let them by its rate limiter:
/// the client counts every answer but a 429 as let by, so that when a 429 then comes, the pacer,
/// which was spending its whole budget, eases off a little and does not mistake the failures for
/// the service's limit (which cut a crawl under faults by a tenth, and kept it there). The pace
/// that follows is the pacer's own unit test, on tokio's paused clock; here, against the
/// simulator, what the client counts, which no busy machine changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_answers_count_as_let_by() {
    let faults = Faults { seed: 3, error_rate: 0.15, malformed_rate: 0.05, ..Faults::default() };
    let (sim, r) = sim(SimConfig { contacts: 100, agents: 5, faults, ..SimConfig::default() }).await;
    let mut cfg = idgraph_crawler::CrawlConfig::new(
        r.url(),
        idgraph_crawler::Credentials::Token(idgraph_crawler::Secret::new(TOKEN)),
    );
    cfg.budget = "100/s".parse().unwrap();
    let crawler = std::sync::Arc::new(idgraph_crawler::Crawler::new(cfg).unwrap());
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (c, url) = (crawler.clone(), format!("{}/users", r.url()));
            tokio::spawn(async move {
                for _ in 0..16 {
                    c.client().get(&url).await.unwrap();
                }
            })
        })
        .collect();
    for t in readers {
        t.await.unwrap();
    }
    let stats = sim.stats();
    assert!(stats.server_errors > 10 && stats.malformed > 2, "faults happened: {stats:?}");
    assert_eq!(stats.rate_limited, 0);
    assert_eq!(
        crawler.client().budget().passed_total(),
        stats.requests,
        "every answer, a 5xx or a broken body too, counted as let by: {stats:?}"
    );
}
