//! Offboarding cases at scale, in one process (the simulator, the crawl, the cases and the
//! GraphQL router, as `serve` wires them):
//! 1. a leaver holding ~100,000 contacts: opening the case (freezing the holdings), the case page's
//!    query, a bulk decision of every contact, the page again, the cases list; each timed as the
//!    audit page sends it (POST /graphql through the router), median of 5 where repeatable;
//! 2. carrying out MOVES reassignments at a rate budget: requests made per move (the floor is
//!    two: the PATCH and the read back from Drift) and the time over the budget's floor.
//!
//! Run it with `cargo bench --bench cases`, or quicker with
//! `CONTACTS=20000 MOVES=500 RATE=100 cargo bench --bench cases`.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drift_sim::{Sim, SimConfig};
use futures::future::BoxFuture;
use idgraph::app::cases::{CaseConfig, Cases};
use idgraph::app::observe::Quiet;
use idgraph::app::pipeline;
use idgraph::app::reassign::Jobs;
use idgraph_cases::{CaseState, Desk};
use idgraph_crawler::{CrawlConfig, Crawler, Credentials, Secret};
use idgraph_graph::{Graph, ShrinkGuard};
use idgraph_graphql::{
    router, Metrics, Operations, ReassignOutcome, ReassignRequest, ScheduleStatus, Scope, ServerConfig,
};

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

struct BenchOps {
    cases: Arc<Cases>,
}

impl Operations for BenchOps {
    fn schedule(&self) -> ScheduleStatus {
        ScheduleStatus::default()
    }
    fn trigger(&self, _: Scope) -> bool {
        false
    }
    fn reassign(&self, _: ReassignRequest) -> BoxFuture<'static, Result<ReassignOutcome, String>> {
        Box::pin(async { Err("not here".to_string()) })
    }
    fn cases(&self) -> Option<Arc<dyn Desk>> {
        Some(self.cases.clone())
    }
}

/// An org crawled into a fresh store, its biggest holder deprovisioned through SCIM and seen so
/// by an agents refresh: (sim, running, crawler, graph, leaver, heir, dir).
async fn org(
    contacts: usize,
    agents: usize,
    rate: Option<u64>,
) -> (Sim, drift_sim::RunningSim, Crawler, Arc<Graph>, u64, u64, tempfile::TempDir) {
    let sim = Sim::new(SimConfig {
        contacts,
        agents,
        token: "bench".into(),
        rate_limit: rate.map(|r| format!("{r}/s").parse().unwrap()),
        ..SimConfig::default()
    });
    let running = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut cfg = CrawlConfig::new(running.url(), Credentials::Token(Secret::new("bench")));
    cfg.scim_url = Some(running.scim_url());
    cfg.budget = format!("{}/s", rate.unwrap_or(100_000)).parse().unwrap();
    let crawler = Crawler::new(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let graph = Arc::new(Graph::open(dir.path()).unwrap());
    pipeline::reindex(&graph, &crawler, &Quiet, ShrinkGuard::default(), true).await.unwrap();
    let (leaver, heir) = {
        let ix = graph.read();
        let mut by: Vec<(usize, u64)> = sim
            .users_json()
            .iter()
            .filter_map(|u| u["id"].as_u64())
            .map(|id| (ix.owned_contact_ids(id).len(), id))
            .collect();
        by.sort_unstable_by(|a, b| b.cmp(a));
        (by[0].1, by[1].1)
    };
    reqwest::Client::new()
        .delete(format!("{}/scim/v2/Users/{leaver}", running.url()))
        .bearer_auth("bench")
        .send()
        .await
        .unwrap();
    pipeline::refresh_agents(&graph, &crawler, ShrinkGuard::off()).await.unwrap();
    (sim, running, crawler, graph, leaver, heir, dir)
}

async fn post(app: &axum::Router, query: &str, variables: serde_json::Value) -> (Duration, serde_json::Value) {
    use tower::ServiceExt;
    let body = serde_json::json!({ "query": query, "variables": variables }).to_string();
    let req = axum::http::Request::post("/graphql")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let t = Instant::now();
    let resp = app.clone().oneshot(req).await.unwrap();
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    let took = t.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(v.get("errors").is_none(), "{query}: {v}");
    (took, v["data"].clone())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // Two agents: the larger holds about three quarters, a case of about 100,000 items.
    let contacts: usize = env("CONTACTS", 135_000);
    let moves: usize = env("MOVES", 2_000);
    let rate: u64 = env("RATE", 100);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        // 1. A case of about 100,000 contacts.
        let (_sim, _running, crawler, graph, leaver, heir, _dir) = org(contacts, 2, None).await;
        let jobs = Jobs::open(graph.clone(), crawler.clone(), None).unwrap();
        let cases = Cases::open(graph.clone(), Some(jobs), Some(crawler), CaseConfig::default()).unwrap();
        let t = Instant::now();
        let case = cases.open_for(leaver, "bench", "bench").unwrap();
        println!("case of {} items ({} contacts in the org): opened (frozen and stored) in {}", case.items.len(), contacts, ms(t.elapsed()));
        let app = router(graph.clone(), Arc::new(BenchOps { cases: cases.clone() }), Arc::new(Metrics::default()), ServerConfig::default());
        let id = case.id.to_string();
        let page = "query($id: ID!) { case(id: $id) { id state totalItems counts { group count } items(first: 1000) { edges { node { kind id email group decision { kind to reason by } } } } } agents(status: [ACTIVE], first: 100) { edges { node { id email } } } }";
        let mut times = Vec::new();
        for _ in 0..5 {
            times.push(post(&app, page, serde_json::json!({ "id": id })).await.0);
        }
        times.sort();
        println!("  the case page's query (1,000 items shown, counts, the agent picker): median {} (max {})", ms(times[2]), ms(times[4]));
        let (took, d) = post(
            &app,
            "mutation($c: ID!, $to: ID!) { decide(case: $c, decision: REASSIGN, to: $to, filter: { undecided: true, kind: CONTACT }) { decided } }",
            serde_json::json!({ "c": id, "to": heir.to_string() }),
        )
        .await;
        println!("  bulk decision of {} contacts (REASSIGN, stored with its chain entry): {} (target < 1 s)", d["decide"]["decided"], ms(took));
        let (took, d) = post(
            &app,
            "mutation($c: ID!) { decide(case: $c, decision: KEEP, reason: \"team inbox\", filter: { undecided: true }) { decided } }",
            serde_json::json!({ "c": id }),
        )
        .await;
        println!("  bulk decision of the other {} items (KEEP): {}", d["decide"]["decided"], ms(took));
        let mut times = Vec::new();
        for _ in 0..5 {
            times.push(post(&app, page, serde_json::json!({ "id": id })).await.0);
        }
        times.sort();
        println!("  the case page after the decisions: median {} (max {}) (target < 200 ms)", ms(times[2]), ms(times[4]));
        let (took, _) = post(&app, "{ cases(first: 100) { edges { node { id state overdue totalItems agent { email } } } } }", serde_json::Value::Null).await;
        println!("  the cases list: {}", ms(took));
        drop(app);
        drop(cases);

        // 2. Carrying out at the rate budget.
        let contacts2 = (moves * 3).max(3_000);
        let (_sim2, _running2, crawler, graph, leaver, heir, _dir2) = org(contacts2, 3, Some(rate)).await;
        let jobs = Jobs::open(graph.clone(), crawler.clone(), None).unwrap();
        jobs.spawn();
        let cases = Cases::open(graph.clone(), Some(jobs), Some(crawler.clone()), CaseConfig::default()).unwrap();
        let case = cases.open_for(leaver, "bench", "bench").unwrap();
        let ids: Vec<String> = case.items.iter().filter(|i| i.contact_id().is_some()).take(moves).map(|i| i.id.clone()).collect();
        let n = ids.len();
        let filter = idgraph_cases::Filter { ids: Some(ids), ..Default::default() };
        cases.decide(case.id, filter, idgraph_cases::Verdict::Reassign { to: heir }, None, "alice").unwrap();
        cases
            .decide(case.id, idgraph_cases::Filter { undecided: true, ..Default::default() }, idgraph_cases::Verdict::Keep, Some("x".into()), "alice")
            .unwrap();
        let before = crawler.client().stats.requests.load(Ordering::Relaxed);
        let t = Instant::now();
        cases.carry_out(case.id, "alice").unwrap();
        loop {
            cases.step().await.unwrap();
            if cases.get(case.id).is_some_and(|c| c.state == CaseState::CarriedOut) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = t.elapsed().as_secs_f64();
        let requests = crawler.client().stats.requests.load(Ordering::Relaxed) - before;
        let floor = 2 * n;
        println!(
            "carrying out {n} moves at {rate}/s: {requests} requests = {:.3} x the floor of {floor} (a PATCH and a read back each; target <= 1.05); {took:.1} s = {:.2} x the budget's floor of {:.1} s",
            requests as f64 / floor as f64,
            took / (floor as f64 / rate as f64),
            floor as f64 / rate as f64
        );
    });
}
