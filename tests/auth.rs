//! `idgraph auth login`: the authorization-code flow with a loopback redirect, as a person runs it
//! (the "browser" here is an HTTP client that follows the redirects).

mod common;

use common::*;
use drift_sim::SimConfig;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_tokens_0600_and_a_crawl_uses_them() {
    let (sim, r) = sim(SimConfig { contacts: 300, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("oauth.json");
    let mut child = idgraph()
        .args(["auth", "login", "--client-id", "sim-client", "--client-secret", "sim-secret", "--timeout", "30s"])
        .args(["--authorize-url", &format!("{}/oauth2/authorize", r.url())])
        .args(["--token-url", &format!("{}/oauth2/token", r.url())])
        .arg("--token-file")
        .arg(&token_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next_line().await.unwrap().expect("the authorize URL is printed");
        if line.trim_start().starts_with("http") {
            break line.trim().to_string();
        }
    };
    assert!(url.contains("response_type=code") && url.contains("state="), "{url}");
    // The browser: consent (the simulator approves at once) and follow the redirect home.
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("authorized"));
    let mut rest = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        rest.push_str(&l);
        rest.push('\n');
    }
    assert!(child.wait().await.unwrap().success());
    assert!(!rest.contains("refresh-"), "no token is printed: {rest}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // The stored tokens drive a crawl.
    let cfg = write_oauth_config(&r, dir.path(), &token_file);
    let (ok, err) =
        crawl(&r, &dir.path().join("data"), &["--config", cfg.to_str().unwrap(), "--rate-limit", "1000/s"]).await;
    assert!(ok, "{err}");
    assert_exact(&sim, &dir.path().join("data"));
}
