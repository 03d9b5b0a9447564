//! What someone with no token, the read token or the admin token can do to the server: each probe
//! of the hardening review, as an attacker runs it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use drift_sim::SimConfig;
use tokio::io::AsyncWriteExt;

const READ: &str = "read-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

/// Raises this test process's own limit on open files (it holds the slow connections).
fn raise_file_limit() {
    #[cfg(unix)]
    unsafe {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

async fn healthz_ms(url: &str) -> u128 {
    let t = Instant::now();
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("{url}/healthz"))
        .send()
        .await;
    assert!(r.is_ok_and(|r| r.status() == 200), "/healthz answers");
    t.elapsed().as_millis()
}

/// 1,000 slow connections (nothing sent, a partial header, a header a byte a second, an idle
/// keep-alive): `/healthz` keeps answering at once, and each is closed after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_are_cut_and_healthz_keeps_answering() {
    raise_file_limit();
    let (_sim, r) = sim(SimConfig { contacts: 200, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(&r, dir.path(), &["--read-token", READ, "--admin-token", ADMIN]).await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        match i % 4 {
            0 => {}
            1 => s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x").await.unwrap(),
            2 => s.write_all(b"G").await.unwrap(),
            _ => {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            }
        }
        held.push(s);
    }
    for _ in 0..5 {
        let ms = healthz_ms(&srv.url).await;
        assert!(ms < 2000, "/healthz took {ms} ms beside 1,000 slow connections");
    }
    // The dribbling ones keep sending, a byte a second.
    let start = Instant::now();
    let mut closed = 0;
    while start.elapsed() < Duration::from_secs(14) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for s in held.iter_mut().skip(2).step_by(4) {
            let _ = s.write_all(b"E").await;
        }
    }
    let mut open_by_kind = [0usize; 4];
    for (i, mut s) in held.into_iter().enumerate() {
        let mut buf = [0u8; 4096];
        // A closed connection reads EOF (after any answer it was given) or errors.
        let mut open = true;
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(200), tokio::io::AsyncReadExt::read(&mut s, &mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    open = false;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
        closed += (!open) as usize;
        open_by_kind[i % 4] += open as usize;
    }
    assert_eq!(
        closed, 1000,
        "every slow or idle connection was closed after the header timeout; still open (nothing, partial, dribbling, idle keep-alive): {open_by_kind:?}"
    );
    assert!(healthz_ms(&srv.url).await < 2000);
}

/// Without tokens (`--insecure-no-auth`): a cross-site `text/plain` POST, a request for another
/// `Host` (DNS rebinding) and one from another site's page are refused; the pages carry the
/// headers that keep them from being framed or sniffed; a bad CORS origin is refused at start and
/// `*` does not crash it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_refuses_other_sites_and_pages_are_guarded() {
    let (_sim, r) = sim(SimConfig { contacts: 200, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(&r, dir.path(), &["--insecure-no-auth"]).await;
    let http = reqwest::Client::new();
    let gql = format!("{}/graphql", srv.url);
    let m = r#"{"query":"mutation { reindex { crawling } }"}"#;
    let plain = http.post(&gql).header("content-type", "text/plain").body(m).send().await.unwrap();
    assert_eq!(plain.status(), 415, "a text/plain POST (what a cross-site form can send)");
    let rebound = http
        .post(&gql)
        .header("host", "attacker.example:8080")
        .header("content-type", "application/json")
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403, "a request addressed to another name");
    let host = srv.url.trim_start_matches("http://").to_string();
    let cross = http
        .post(&gql)
        .header("origin", "https://attacker.example")
        .header("content-type", "application/json")
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403, "a request from another site's page");
    let same = http
        .post(&gql)
        .header("origin", format!("http://{host}"))
        .header("content-type", "application/json")
        .body(r#"{"query":"{ indexStatus { ready } }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200, "this server's own page");
    for page in ["/", "/audit"] {
        let p = http.get(format!("{}{page}", srv.url)).send().await.unwrap();
        let h = p.headers();
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    }
    let out = idgraph()
        .args(["serve", "--insecure-no-auth", "--listen", "127.0.0.1:0", "--token", TOKEN, "--drift-url", &r.url()])
        .args(["--cors-origin", "not an origin", "--data-dir"])
        .arg(dir.path().join("other"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not an origin"));
    let star = serve(&r, &dir.path().join("star"), &["--insecure-no-auth", "--cors-origin", "*"]).await;
    assert!(healthz_ms(&star.url).await < 2000, "'*' starts");
}

/// The store, backups and everything idgraph writes are its owner's alone, whatever the umask it
/// was started with; `check` warns about wider modes.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_on_disk_is_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let (_sim, r) = sim(SimConfig { contacts: 200, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = idgraph()
        .args(["crawl", "--drift-url", &r.url(), "--scim-url", &r.scim_url(), "--token", TOKEN, "--data-dir"])
        .arg(&data)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
    let d = data.to_str().unwrap();
    let out = idgraph().args(["check", "--data-dir", d]).output().await.unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning"));
    std::fs::set_permissions(data.join("db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = idgraph().args(["check", "--data-dir", d]).output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("can be read by others (mode 644)") && said.contains("chmod 600"), "{said}");
}

/// The read token's probes: a fragment bomb (24 fragments, each spreading the next twice), 1,000
/// aliases of a whole-org audit and 400 aliased introspections are refused with
/// `BAD_USER_INPUT` naming the limit, and `/healthz` answers while 20 bombs are in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_bombs_and_alias_floods_are_refused_before_they_cost() {
    let (_sim, r) = sim(SimConfig { contacts: 2000, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(&r, dir.path(), &["--read-token", READ, "--admin-token", ADMIN]).await;
    let mut bomb = String::from("{ ...F0 }\n");
    for i in 0..24 {
        bomb.push_str(&format!("fragment F{i} on Query {{ ...F{} ...F{} }}\n", i + 1, i + 1));
    }
    bomb.push_str("fragment F24 on Query { indexStatus { generation } }\n");
    let aliases: String = (0..1000).map(|i| format!("a{i}: auditReport(all: true) ")).collect();
    let intro: String = (0..400).map(|i| format!("i{i}: __schema {{ types {{ name }} }} ")).collect();
    for doc in [bomb.clone(), format!("{{ {aliases} }}"), format!("{{ {intro} }}")] {
        let v = gql(&srv.url, Some(READ), &doc, serde_json::Value::Null).await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{v}");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("limit of 50000"), "{v}");
        assert!(v.get("data").is_none_or(|d| d.is_null()));
    }
    let flood: Vec<_> = (0..20)
        .map(|_| {
            let (url, bomb) = (srv.url.clone(), bomb.clone());
            tokio::spawn(async move { gql(&url, Some(READ), &bomb, serde_json::Value::Null).await })
        })
        .collect();
    assert!(healthz_ms(&srv.url).await < 2000, "/healthz answers beside the bombs");
    for f in flood {
        assert_eq!(f.await.unwrap()["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
    // One audit of the org is still fine.
    let ok = gql(&srv.url, Some(READ), "{ auditSummary }", serde_json::Value::Null).await;
    assert!(ok.get("errors").is_none(), "{ok}");
}

/// Who asks comes first: a request without a token is refused before its body is read (a client
/// announcing 4 MB gets its 401 without sending a byte of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_is_refused_before_its_body_is_read() {
    use tokio::io::AsyncReadExt;
    let (_sim, r) = sim(SimConfig { contacts: 100, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(&r, dir.path(), &["--read-token", READ, "--admin-token", ADMIN]).await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(format!("POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("answered at once").unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}
