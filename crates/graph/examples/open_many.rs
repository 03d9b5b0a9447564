//! Resident memory of many stores opened in one process (the graphs of a server of many orgs):
//! `cargo run --release -p idgraph-graph --example open_many -- DIR...` prints the RSS after each
//! tenth store opened.
fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let cache: u64 = std::env::var("CACHE_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(8 << 20);
    let mut graphs = Vec::new();
    println!("start: {:.0} MB", rss_mb());
    for (i, dir) in std::env::args().skip(1).enumerate() {
        match idgraph_graph::Graph::open_with_cache(std::path::Path::new(&dir), cache) {
            Ok(g) => graphs.push(g),
            Err(e) => eprintln!("{dir}: {e}"),
        }
        if (i + 1) % 10 == 0 {
            println!("{} stores: {:.0} MB", i + 1, rss_mb());
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    println!("after 3 s: {:.0} MB ({} graphs)", rss_mb(), graphs.len());
}
