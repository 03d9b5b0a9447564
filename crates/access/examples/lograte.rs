//! How fast the access log takes entries: `cargo run --release -p idgraph-access --example lograte`.
use std::time::Instant;

use idgraph_access::log::{AccessLog, Entry};

fn main() {
    let dir = std::env::temp_dir().join(format!("idgraph-lograte-{}", std::process::id()));
    let log = AccessLog::open(&dir, 400, None).unwrap();
    let n = 500_000u64;
    let t = Instant::now();
    for i in 0..n {
        if i % 50_000 == 0 {
            log.settle();
        }
        log.record(Entry {
            time: chrono::Utc::now(),
            principal: "ci-export".into(),
            kind: "service_token".into(),
            role: Some("auditor".into()),
            org: None,
            route: "POST /graphql".into(),
            operation: None,
            fields: vec!["contact".into()],
            rows: 1,
            outcome: "ok".into(),
            client: Some("127.0.0.1".into()),
            detail: None,
        });
    }
    let queued = t.elapsed();
    log.close();
    let all = t.elapsed();
    println!(
        "{n} entries: queued in {:.2} µs each, written in {:.2} µs each; dropped {}",
        queued.as_secs_f64() * 1e6 / n as f64,
        all.as_secs_f64() * 1e6 / n as f64,
        log.dropped()
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The parts of an entry's cost: SHA-256 of a line, and serializing the time.
    use sha2::Digest;
    let line = vec![b'x'; 350];
    let t = Instant::now();
    let mut acc = 0u8;
    for _ in 0..n {
        acc ^= sha2::Sha256::digest(&line)[0];
    }
    println!("sha256 of 350 bytes: {:.3} µs ({acc})", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let now = chrono::Utc::now();
    let t = Instant::now();
    let mut len = 0;
    for _ in 0..n {
        len += serde_json::to_string(&now).unwrap().len();
    }
    println!("a time as JSON: {:.3} µs ({len})", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
