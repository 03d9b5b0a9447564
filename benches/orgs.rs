//! Many orgs in one `idgraph serve`, measured as an operator runs it (the release binary as a
//! child process, simulated orgs in this process, each with Drift's own budget):
//! 1. the baseline: one org of BIG contacts (1,000,000) served, its resident memory once ready;
//! 2. ORGS orgs (100) of CONTACTS contacts (10,000) from one `[[org]]` configuration: every first
//!    crawl at once, each at the org's own budget (RATE, Drift's 200/min); the time until every
//!    org is served, and the process's resident memory then;
//! 3. `contact(email)` through nginx (routing written by `idgraph gateway-config`) and directly,
//!    interleaved in one run: p50 and p99 of each;
//! 4. one org's Drift down (its reindex failing and retrying) and another's token revoked (a
//!    reload restarts it; Drift answers 401): a third org's lookup p99 before and after;
//! 5. a restart: the time until every org is served from its stored index.
//!
//! Run it with `cargo bench --bench orgs` (about 5 minutes, most of it the 1,000,000-contact
//! baseline and the first crawls at 200/min); `BIG=0` skips the baseline; quicker:
//! `ORGS=20 CONTACTS=2000 BIG=0 cargo bench --bench orgs`.
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use drift_sim::{RateLimit, RunningSim, Sim, SimConfig};

const TOKEN: &str = "bench-token";

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn spawn_sim(seed: u64, contacts: usize, rate: Option<&str>) -> (Sim, RunningSim) {
    let sim = Sim::new(SimConfig {
        seed,
        contacts,
        agents: (contacts / 200).clamp(5, 10_000),
        token: TOKEN.into(),
        rate_limit: rate.map(|r| r.parse::<RateLimit>().unwrap()),
        ..SimConfig::default()
    });
    let r = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, r)
}

fn idgraph() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_idgraph"));
    c.env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    c
}

/// Polls `url` until it answers 200 and `done` holds for its body; the time it took.
async fn wait_until(url: &str, limit: Duration, done: impl Fn(&serde_json::Value) -> bool) -> Duration {
    let t = Instant::now();
    let http = reqwest::Client::new();
    while t.elapsed() < limit {
        if let Ok(r) = http.get(url).send().await {
            if r.status() == 200 {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if done(&v) {
                        return t.elapsed();
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} not ready after {limit:?}");
}

async fn stop(mut child: tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `contact(email)` latencies in ms, one request at a time over a kept-alive connection, the
/// targets taken in turn.
async fn lookups(targets: &[String], emails: &[String], n: usize) -> Vec<Vec<f64>> {
    let http = reqwest::Client::new();
    let mut out = vec![Vec::with_capacity(n); targets.len()];
    for i in 0..n {
        for (k, url) in targets.iter().enumerate() {
            let q = format!("{{ contact(email: \"{}\") {{ id owner {{ id }} }} }}", emails[i % emails.len()]);
            let t = Instant::now();
            let r = http.post(url).json(&serde_json::json!({ "query": q })).send().await.unwrap();
            let ok = r.status() == 200;
            let _ = r.bytes().await;
            assert!(ok, "{url}");
            out[k].push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    out
}

fn org_toml(name: &str, r: &RunningSim, token: &str, rate: &str) -> String {
    format!(
        "[[org]]\nname = \"{name}\"\ndrift_url = \"{}\"\nscim_url = \"{}\"\ntoken = \"{token}\"\nrate_limit = \"{rate}\"\nfull_every = \"24h\"\nagents_every = \"1h\"\nrefresh_share = 0.0\n\n",
        r.url(),
        r.scim_url()
    )
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let orgs: usize = env("ORGS", 100);
    let contacts: usize = env("CONTACTS", 10_000);
    let big: usize = env("BIG", 1_000_000);
    let rate: String = env("RATE", "200/min".to_string());
    let dir = tempfile::tempdir().unwrap();
    println!("orgs bench: {orgs} orgs of {contacts} contacts at {rate} each; baseline one org of {big}");

    // 1. The baseline.
    let mut baseline = None;
    if big > 0 {
        let (_s, r) = spawn_sim(1, big, None).await;
        let port = free_port();
        let data = dir.path().join("big");
        let child = idgraph()
            .args(["serve", "--insecure-no-auth", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--drift-url", &r.url(), "--scim-url", &r.scim_url(), "--token", TOKEN])
            .args(["--rate-limit", "100000/s", "--full-every", "24h", "--refresh-share", "0", "--data-dir"])
            .arg(&data)
            .spawn()
            .unwrap();
        let took = wait_until(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(900), |_| true).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mb = rss_mb(child.id().unwrap());
        println!("baseline: one org of {big} contacts served after {:.1} s; RSS {mb:.0} MB", took.as_secs_f64());
        baseline = Some(mb);
        stop(child).await;
        r.stop().await;
    }

    // 2. Many orgs, every first crawl at once.
    let mut sims = Vec::new();
    for i in 0..orgs {
        sims.push(spawn_sim(100 + i as u64, contacts, Some(&rate)).await);
    }
    let name = |i: usize| format!("org{i:03}");
    let port = free_port();
    let data = dir.path().join("many");
    let cache = std::env::var("CACHE_MB").map(|m| format!("cache_mb = {m}\n")).unwrap_or_default();
    let top = format!("data_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n{cache}\n", data.display());
    let mut sections: Vec<String> =
        sims.iter().enumerate().map(|(i, (_, r))| org_toml(&name(i), r, TOKEN, &rate)).collect();
    let config = dir.path().join("orgs.toml");
    write_private(&config, &(top.clone() + &sections.concat()));
    let serve = || {
        let mut c = idgraph();
        c.args(["serve", "--insecure-no-auth", "--config"]).arg(&config);
        c
    };
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let all_ready = |v: &serde_json::Value| {
        v["orgs"].as_array().is_some_and(|a| a.len() == orgs && a.iter().all(|o| o["ready"] == true))
    };
    let child = serve().spawn().unwrap();
    let crawled = wait_until(&readyz, Duration::from_secs(1800), all_ready).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = child.id().unwrap();
    let many_mb = rss_mb(pid);
    println!(
        "{orgs} orgs: every first crawl done after {:.1} s (each org alone at {rate}: {} pages of 100 and the agents); RSS {many_mb:.0} MB{}",
        crawled.as_secs_f64(),
        contacts.div_ceil(100),
        baseline.map(|b| format!(" = {:.2}x the baseline", many_mb / b)).unwrap_or_default()
    );

    // 3. Through nginx and directly.
    let emails: Vec<String> = sims[7]
        .0
        .contacts_json()
        .iter()
        .filter_map(|c| c["attributes"]["email"].as_str().or(c["email"].as_str()).map(str::to_string))
        .take(500)
        .collect();
    let proxy_port = free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .args(["gateway-config", "--listen", &format!("127.0.0.1:{proxy_port}")])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, &out.stdout).unwrap();
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists());
    let _proxy = nginx.map(|n| {
        tokio::process::Command::new(n)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off; master_process off;"])
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    });
    let direct = format!("http://127.0.0.1:{port}/orgs/{}/graphql", name(7));
    if nginx.is_some() {
        wait_until(&format!("http://127.0.0.1:{proxy_port}/readyz"), Duration::from_secs(10), |_| true).await;
        let via = format!("http://127.0.0.1:{proxy_port}/orgs/{}/graphql", name(7));
        lookups(&[direct.clone(), via.clone()], &emails, 200).await;
        let mut l = lookups(&[direct.clone(), via], &emails, 3000).await;
        let (d50, d99) = (pct(&mut l[0], 0.5), pct(&mut l[0], 0.99));
        let (g50, g99) = (pct(&mut l[1], 0.5), pct(&mut l[1], 0.99));
        println!(
            "contact(email), 3,000 each, interleaved: direct p50 {d50:.2} ms p99 {d99:.2} ms; through nginx p50 {g50:.2} ms p99 {g99:.2} ms ({:.2}x at p99)",
            g99 / d99
        );
    } else {
        println!("contact(email) through nginx: skipped, nginx is not installed");
    }

    // 4. One org's Drift down, another's token revoked: a third org's lookups.
    let mut idle = lookups(std::slice::from_ref(&direct), &emails, 3000).await;
    let idle99 = pct(&mut idle[0], 0.99);
    // org001's simulator stops (sims[2] is org003's after this).
    let down = sims.remove(1);
    down.1.stop().await;
    let http = reqwest::Client::new();
    let _ = http
        .post(format!("http://127.0.0.1:{port}/orgs/{}/graphql", name(1)))
        .json(&serde_json::json!({"query": "mutation { reindex { crawling } }"}))
        .send()
        .await;
    sections[3] = org_toml(&name(3), &sims[2].1, "revoked", &rate);
    write_private(&config, &(top.clone() + &sections.concat()));
    let _ = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut busy = lookups(std::slice::from_ref(&direct), &emails, 3000).await;
    let busy99 = pct(&mut busy[0], 0.99);
    let status: serde_json::Value = http
        .post(format!("http://127.0.0.1:{port}/graphql"))
        .json(&serde_json::json!({"query": "{ orgs { name failing } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failing: Vec<String> = status["data"]["orgs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|o| !o["failing"].is_null())
                .map(|o| format!("{}: {}", o["name"].as_str().unwrap_or(""), o["failing"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "{}'s contact(email) p99: {idle99:.2} ms idle; {busy99:.2} ms with {}'s Drift down and {}'s token revoked",
        name(7),
        name(1),
        name(3)
    );
    for f in failing.iter().take(3) {
        let short: String = f.chars().take(160).collect();
        println!("  failing: {short}");
    }

    // 5. A restart from the stored indexes.
    stop(child).await;
    let t = Instant::now();
    let child = serve().spawn().unwrap();
    wait_until(&readyz, Duration::from_secs(120), all_ready).await;
    println!(
        "restart: every one of {orgs} orgs served from its stored index after {:.2} s; RSS then {:.0} MB",
        t.elapsed().as_secs_f64(),
        rss_mb(child.id().unwrap())
    );
    stop(child).await;
}
