//! Crawl efficiency, 429 share and memory, against the simulator.
//!
//!     cargo bench --bench crawl
//!
//! 1. Budget known: the simulator allows R requests a second and the crawler is told R. The ratio
//!    of wall time to the floor (requests made / R) is printed; the target is at most 1.05.
//! 2. Budget too high: the crawler is told 2R. The share of requests answered 429 is printed; the
//!    target is at most 2%, and the crawl completes.
//! 3. Memory: `idgraph sim` serves 1,000,000 contacts in another process; this process crawls it,
//!    counting records, and prints its peak resident memory (target < 200 MB).
//!
//! 4. A large budget under faults: the `drift` profile (a request a contact) against a simulator
//!    allowing 5,000 requests a second with every fault on (5% 5xx, malformed, truncated and
//!    dropped answers, slow answers, 429 storms); the crawler is told 5,000/s. The ratio of wall
//!    time to the floor is printed (target <= 1.10), with the reads kept in flight.
//!
//! `IDGRAPH_BENCH_QUICK=1` runs smaller orgs; `CRAWL_CASES=4` (a comma list) runs some cases;
//! `FAULTS_CONTACTS=100000` sets case 4's org size (40,000 by default); `NO_STORMS=1` and
//! `NO_FAULTS=1` turn its 429 storms, or every fault, off.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use drift_sim::{Sim, SimConfig};
use idgraph_crawler::{Checkpoint, CrawlConfig, CrawlEvent, Crawler, Credentials, Secret};
use tokio::sync::mpsc;

fn peak_rss_mb(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn crawl(url: &str, scim: &str, token: &str, budget: &str) -> (u64, Duration) {
    let mut cfg = CrawlConfig::new(url, Credentials::Token(Secret::new(token)));
    cfg.scim_url = Some(scim.to_string());
    cfg.budget = budget.parse().expect("budget");
    let crawler = Crawler::new(cfg).expect("crawler");
    let (tx, mut rx) = mpsc::channel(8);
    let t = Instant::now();
    let task = tokio::spawn(async move { crawler.run(Checkpoint::default(), HashSet::new(), tx).await });
    let mut records = 0u64;
    while let Some(ev) = rx.recv().await {
        if let CrawlEvent::Page { records: r, .. } = ev {
            records += r.len() as u64;
        }
    }
    task.await.expect("join").expect("the crawl completes");
    (records, t.elapsed())
}

/// A running simulator of `contacts` contacts and 200 agents allowing `rate` requests a second,
/// the rest of its configuration from `base`.
async fn rated_sim(contacts: usize, rate: u32, base: SimConfig) -> (Sim, drift_sim::RunningSim) {
    let sim =
        Sim::new(SimConfig { contacts, agents: 200, rate_limit: Some(format!("{rate}/s").parse().unwrap()), ..base });
    let r = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, r)
}

/// Case 4: a drift-profile crawl at 5,000 requests a second, faults on.
async fn large_budget_under_faults(contacts: usize) {
    let rate = 5000u32;
    let faults = if std::env::var("NO_FAULTS").is_ok() {
        drift_sim::Faults::default()
    } else if std::env::var("NO_STORMS").is_ok() {
        drift_sim::Faults { storm_rate: 0.0, ..drift_sim::Faults::all(7) }
    } else {
        drift_sim::Faults::all(7)
    };
    let (sim, r) =
        rated_sim(contacts, rate, SimConfig { profile: drift_sim::Profile::Drift, faults, ..SimConfig::default() })
            .await;
    let (records, wall) = crawl(&r.url(), &r.scim_url(), "sim-token", &format!("{rate}/s")).await;
    let s = sim.stats();
    let floor = s.requests as f64 / f64::from(rate);
    println!(
        "large budget under faults ({rate}/s, drift profile): {records} records, {} requests ({:.0}/s), wall {:.2} s, floor {floor:.2} s, ratio {:.3} (target <= 1.10), 429s {}",
        s.requests,
        s.requests as f64 / wall.as_secs_f64(),
        wall.as_secs_f64(),
        wall.as_secs_f64() / floor,
        s.rate_limited
    );
    r.stop().await;
}

#[tokio::main]
async fn main() {
    let cases: Vec<String> = std::env::var("CRAWL_CASES")
        .unwrap_or_else(|_| "1,2,3,4".into())
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    let run = |c: &str| cases.iter().any(|x| x == c);
    let quick = std::env::var("IDGRAPH_BENCH_QUICK").is_ok();
    if run("4") {
        let n = std::env::var("FAULTS_CONTACTS").ok().and_then(|n| n.parse().ok());
        large_budget_under_faults(n.unwrap_or(if quick { 10_000 } else { 40_000 })).await;
    }
    if !(run("1") || run("2") || run("3")) {
        return;
    }
    let rate = 50u32;
    let contacts = if quick { 10_000 } else { 60_000 };

    // 1. Budget known.
    let (sim, r) = rated_sim(contacts, rate, SimConfig::default()).await;
    let (records, wall) = crawl(&r.url(), &r.scim_url(), "sim-token", &format!("{rate}/s")).await;
    let s = sim.stats();
    let floor = s.requests as f64 / f64::from(rate);
    println!(
        "budget known ({rate}/s): {records} records, {} requests, wall {:.2} s, floor {floor:.2} s, ratio {:.3} (target <= 1.05), 429s {}",
        s.requests,
        wall.as_secs_f64(),
        wall.as_secs_f64() / floor,
        s.rate_limited
    );
    r.stop().await;

    // 2. Budget set too high (twice the real one).
    let (sim, r) = rated_sim(contacts, rate, SimConfig::default()).await;
    let (records, wall) = crawl(&r.url(), &r.scim_url(), "sim-token", &format!("{}/s", rate * 2)).await;
    let s = sim.stats();
    println!(
        "budget too high ({}/s against {rate}/s): {records} records, {} requests, {} answered 429 = {:.2}% (target <= 2%), wall {:.2} s ({:.3} x the floor)",
        rate * 2,
        s.requests,
        s.rate_limited,
        100.0 * s.rate_limited as f64 / s.requests as f64,
        wall.as_secs_f64(),
        wall.as_secs_f64() / (s.requests as f64 / f64::from(rate))
    );
    r.stop().await;

    // 3. Memory of the crawler itself, crawling 1,000,000 contacts served by another process.
    let big = if quick { 100_000 } else { 1_000_000 };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let exe = env!("CARGO_BIN_EXE_idgraph");
    let mut child = std::process::Command::new(exe)
        .args([
            "sim",
            "--port",
            &port.to_string(),
            "--contacts",
            &big.to_string(),
            "--agents",
            "10000",
            "--token",
            "bench",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("idgraph sim");
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(120), "the simulator did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = peak_rss_mb("self");
    let (records, wall) = crawl(&url, &format!("{url}/scim/v2"), "bench", "100000/s").await;
    let peak = peak_rss_mb("self");
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "memory: crawled {records} records in {:.1} s; peak resident memory of the crawling process {peak:.0} MB (before the crawl {before:.0} MB; target < 200 MB)",
        wall.as_secs_f64()
    );
}
