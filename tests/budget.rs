//! The budget against the simulator: what the pacer makes of a service's answers. In a test
//! binary of its own, so that no crawl running beside it holds back the pace it measures.

mod common;

use common::*;
use drift_sim::{Faults, SimConfig};

/// A service answering 5xx (or a broken body) to many requests still let them by its rate limiter:
/// when a 429 then comes, the pacer, which was spending its whole budget, eases off a little and
/// does not mistake the failures for the service's limit (which cut a crawl under faults by a
/// tenth, and kept it there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_answers_count_as_let_by_when_a_429_comes() {
    let faults = Faults { seed: 3, error_rate: 0.15, malformed_rate: 0.05, ..Faults::default() };
    let (sim, r) = sim(SimConfig { contacts: 100, agents: 5, faults, ..SimConfig::default() }).await;
    let mut cfg = idgraph_crawler::CrawlConfig::new(
        r.url(),
        idgraph_crawler::Credentials::Token(idgraph_crawler::Secret::new(TOKEN)),
    );
    cfg.budget = "100/s".parse().unwrap();
    let crawler = std::sync::Arc::new(idgraph_crawler::Crawler::new(cfg).unwrap());
    // Two and a half seconds of the budget, spent by 16 readers at once.
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
    assert!(sim.stats().server_errors > 10, "faults happened: {:?}", sim.stats());
    let budget = crawler.client().budget();
    budget.on_rate_limited(None);
    let rate = budget.rate();
    assert!(rate >= 0.85 * 100.0, "one 429 at full pace cut the pace to {rate:.0}/s of 100/s");
}
