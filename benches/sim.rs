//! The simulator's scale: generating 1,000,000 contacts and 10,000 agents (time and memory), and
//! serving pages of 100 contacts (pages a second), so that it is never a crawl benchmark's
//! bottleneck.
//!
//!     cargo bench --bench sim

use std::time::Instant;

use drift_sim::{Sim, SimConfig};

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

async fn walk(url: String, pages: usize, start_after: Option<String>) -> usize {
    let http = reqwest::Client::new();
    let mut next = start_after;
    let mut n = 0;
    while n < pages {
        let u = match &next {
            Some(c) => format!("{url}/contacts?limit=100&next={c}"),
            None => format!("{url}/contacts?limit=100"),
        };
        let v: serde_json::Value =
            http.get(&u).bearer_auth("sim-token").send().await.expect("get").json().await.expect("json");
        n += 1;
        match v["next"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => next = None,
        }
    }
    n
}

#[tokio::main]
async fn main() {
    let rss0 = rss_mb();
    let t = Instant::now();
    let sim = Sim::new(SimConfig { contacts: 1_000_000, agents: 10_000, ..SimConfig::default() });
    println!(
        "generate 1,000,000 contacts and 10,000 agents: {:.2} s (target < 5 s), {:.0} MB (target < 2000 MB)",
        t.elapsed().as_secs_f64(),
        rss_mb() - rss0
    );
    let r = sim.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("spawn");
    let url = r.url();
    walk(url.clone(), 50, None).await; // warm up
    let t = Instant::now();
    let n = walk(url.clone(), 3000, None).await;
    let one = n as f64 / t.elapsed().as_secs_f64();
    // Four clients at different places in the listing.
    let t = Instant::now();
    let starts = [None, Some("c1.f4240".to_string()), Some("c1.16e360".to_string()), Some("c1.1e8480".to_string())];
    let tasks: Vec<_> = starts.into_iter().map(|s| tokio::spawn(walk(url.clone(), 1500, s))).collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("join");
    }
    let four = total as f64 / t.elapsed().as_secs_f64();
    println!(
        "serve pages of 100 contacts: {one:.0} pages/s on one connection, {four:.0} pages/s on four (Drift allows about 3.3 requests/s)"
    );
}
