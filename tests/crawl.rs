//! The crawler's targets, against the simulator on port 0, through `idgraph crawl` as a user runs it.

mod common;

use std::time::Duration;

use common::*;
use drift_sim::{Faults, Profile, SimConfig};

/// Every fault on, OAuth tokens expiring every 2 s: the crawl is exact, in both profiles.
async fn exact_under_faults(profile: Profile, contacts: usize, agents: usize) {
    let (sim, r) = sim(SimConfig {
        contacts,
        agents,
        profile,
        // Storms more often than `Faults::all` in a short test, so that it meets several.
        faults: if contacts >= 100_000 { Faults::all(11) } else { Faults { storm_rate: 0.01, ..Faults::all(11) } },
        access_token_ttl: Some(Duration::from_secs(2)),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth_config(&r, &sim, dir.path()).await;
    let (ok, err) =
        crawl(&r, &dir.path().join("data"), &["--config", cfg.to_str().unwrap(), "--rate-limit", "400/s"]).await;
    assert!(ok, "crawl failed: {err}");
    assert_exact(&sim, &dir.path().join("data"));
    let s = sim.stats();
    assert!(s.server_errors > 0 && s.malformed > 0 && s.dropped > 0 && s.rate_limited > 0, "faults happened: {s:?}");
    assert!(s.token_refreshes > 0, "tokens expired and were refreshed: {s:?}");
    assert!(!err.contains("access-"), "no token in the output");
    // The token file was rewritten with the newest refresh token, mode 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tokens.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// `IDGRAPH_FULL_SCALE=1` runs the scale (100,000 contacts, 1,000 agents) in both
/// profiles; by default the tests stay small enough for CI (the drift profile costs a request a
/// contact).
fn scale(default: (usize, usize)) -> (usize, usize) {
    if std::env::var("IDGRAPH_FULL_SCALE").is_ok_and(|v| v == "1") {
        (100_000, 1_000)
    } else {
        default
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_under_every_fault_seed_profile() {
    let (c, a) = scale((30_000, 300));
    exact_under_faults(Profile::Seed, c, a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_under_every_fault_drift_profile() {
    let (c, a) = scale((1_500, 120));
    exact_under_faults(Profile::Drift, c, a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_refused_means_rest_only_with_one_warning() {
    let (sim, r) = sim(SimConfig { contacts: 500, agents: 20, scim_enabled: false, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = crawl(&r, dir.path(), &["--token", TOKEN, "--rate-limit", "1000/s"]).await;
    assert!(ok, "{err}");
    assert_eq!(err.matches("SCIM is not available").count(), 1, "{err}");
    assert_exact(&sim, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_that_cannot_complete_fails_loudly_and_keeps_the_index() {
    let (sim, r) = sim(SimConfig { contacts: 600, agents: 20, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = crawl(&r, dir.path(), &["--token", TOKEN, "--rate-limit", "1000/s"]).await;
    assert!(ok, "{err}");
    sim.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let (ok, err) = crawl(&r, dir.path(), &["--token", TOKEN, "--rate-limit", "1000/s"]).await;
    assert!(!ok, "a crawl that cannot complete must exit non-zero");
    assert!(err.contains("gave up after"), "says why: {err}");
    sim.set_faults(Faults::default());
    assert_exact(&sim, dir.path());
    let store = idgraph_graph::Store::open(dir.path()).unwrap();
    assert_eq!(store.current().unwrap(), Some(1), "generation 1 still served");
    // A wrong token is an auth failure, said clearly.
    drop(store);
    let (ok, err) = crawl(&r, dir.path(), &["--token", "wrong", "--rate-limit", "1000/s"]).await;
    assert!(!ok);
    assert!(err.contains("refused with HTTP 40"), "{err}");
    assert!(!err.contains("wrong"), "the token is not echoed: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_kill_9_is_exact_and_cheap() {
    let cfg = SimConfig { contacts: 30_000, agents: 50, ..SimConfig::default() };
    // The cost of an uninterrupted crawl, on an identical org.
    let (clean, rc) = sim(cfg.clone()).await;
    let d0 = tempfile::tempdir().unwrap();
    let (ok, err) = crawl(&rc, d0.path(), &["--token", TOKEN, "--rate-limit", "150/s"]).await;
    assert!(ok, "{err}");
    let uninterrupted = clean.stats().requests;

    let (sim, r) = sim(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = idgraph()
        .args([
            "crawl",
            "--drift-url",
            &r.url(),
            "--scim-url",
            &r.scim_url(),
            "--token",
            TOKEN,
            "--rate-limit",
            "150/s",
            "--data-dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    let before = sim.stats().requests;
    assert!(before < uninterrupted, "killed in the middle ({before} of {uninterrupted} requests)");
    let (ok, err) = crawl(&r, dir.path(), &["--token", TOKEN, "--rate-limit", "150/s"]).await;
    assert!(ok, "{err}");
    assert!(err.contains("(resumed)"), "{err}");
    assert_exact(&sim, dir.path());
    let total = sim.stats().requests;
    assert!((total as f64) <= uninterrupted as f64 * 1.10, "{total} requests in all, uninterrupted {uninterrupted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_uses_known_ids_and_reads_only_new_conversations() {
    let (sim, r) = sim(SimConfig { contacts: 800, agents: 20, profile: Profile::Drift, ..SimConfig::default() }).await;
    let http = reqwest::Client::new();
    // Created through the API, not in a chat: only a CRM export (the known-ids file) finds it.
    let resp = http
        .post(format!("{}/contacts", r.url()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"attributes": {"email": "imported@crm.example", "ownerId": 20003}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known.txt");
    std::fs::write(&known, "# CRM export\nimported@crm.example\next:crm-0\n").unwrap();
    let data = dir.path().join("data");
    let args = ["--token", TOKEN, "--rate-limit", "2000/s", "--known-ids-file", known.to_str().unwrap()];
    let (ok, err) = crawl(&r, &data, &args).await;
    assert!(ok, "{err}");
    assert_exact(&sim, &data);
    let first = sim.stats().requests;

    // A new chat: the next run reads conversations back to the last high-water mark only.
    let resp = http
        .post(format!("{}/conversations/new", r.url()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"email": "new.lead@example.com", "message": {"body": "hello"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (ok, err) = crawl(&r, &data, &args).await;
    assert!(ok, "{err}");
    assert_exact(&sim, &data);
    let second = sim.stats().requests - first;
    assert!(second * 10 < first, "the incremental run made {second} requests, the first {first}");
}
