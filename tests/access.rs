//! People, roles and the access trail, against a real OpenID provider (panva's `oidc-provider`,
//! started by the test from tests/browser) and a real browser:
//! - a person signs in through the provider to /audit, sees the org audit with their name and
//!   role, and signs out; a viewer is refused the export with FORBIDDEN;
//! - an API client's JWT from the provider is accepted, and every forged or stale JWT is refused
//!   with UNAUTHENTICATED and a log line naming why;
//! - a service token revoked from the command line is refused within a second;
//! - the access log holds an entry per request, with its principal, and `access-log verify`
//!   passes, then names the entry after a byte is changed or an entry removed;
//! - no secret of the run appears in any log, the access log or /metrics.
//!
//! Needs Node with `npm ci` in tests/browser, and Chromium for the browser part (`.ci/run`
//! installs both and sets IDGRAPH_BROWSER_TEST=required: then nothing is skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use drift_sim::SimConfig;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};

const CLIENT_SECRET: &str = "oidc-client-s3cret-4f9a1c";
const ADMIN_TOKEN: &str = "configured-admin-t0ken-77d2";

struct Provider {
    _child: tokio::process::Child,
    issuer: String,
}

async fn provider(dir: &Path, port: u16, redirect: &str) -> Provider {
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("oidc.mjs"))
        .arg(port.to_string())
        .arg(redirect)
        .arg(CLIENT_SECRET)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(std::env::temp_dir().join("idgraph-test-oidc.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the provider starts")
        .unwrap()
        .expect("the provider says where it listens");
    // Keep reading: the provider writes notices to stdout, and dies on a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    Provider { _child: child, issuer: v["issuer"].as_str().unwrap().to_string() }
}

/// `idgraph serve` with its whole log kept (every line, for the secrets check).
async fn serve_logged(
    r: &drift_sim::RunningSim,
    data: &Path,
    config: &Path,
    port: u16,
) -> (tokio::process::Child, String, Arc<Mutex<String>>) {
    let mut child = idgraph()
        .args(["--log-format", "json", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--drift-url", &r.url(), "--scim-url", &r.scim_url(), "--rate-limit", "2000/s"])
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("DRIFT_TOKEN", TOKEN)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    for pipe in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut g = log.lock();
                g.push_str(&l);
                g.push('\n');
            }
        });
    }
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
            if r.status() == 200 {
                return (child, url, log);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server never became ready: {}", log.lock());
}

async fn post(url: &str, bearer: &str, query: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/graphql"))
        .bearer_auth(bearer)
        .json(&serde_json::json!({ "query": query }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

fn code(v: &serde_json::Value) -> &str {
    v["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

async fn cli(args: &[&str], data: &Path) -> (bool, String, String) {
    let out = idgraph().args(args).arg("--data-dir").arg(data).output().await.unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn access_files(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("access"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_roles_tokens_and_the_access_trail() {
    let required = std::env::var("IDGRAPH_BROWSER_TEST").is_ok_and(|v| v == "required");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/oidc-provider").exists() {
        assert!(!required, "oidc-provider is missing: run `npm ci` in tests/browser");
        eprintln!("skipping: no oidc-provider here (run `npm ci` in tests/browser; CI requires it)");
        return;
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let browser = Path::new(&chromium).exists() && dir.join("node_modules/playwright-core").exists();
    assert!(browser || !required, "Chromium or playwright-core is missing");

    let (_sim, r) = sim(SimConfig { contacts: 400, agents: 12, ..SimConfig::default() }).await;
    let (idp_port, port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let idp = provider(&dir, idp_port, &format!("{base}/auth/callback")).await;

    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let secret_file = work.path().join("oidc-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let admin_file = work.path().join("admin-token");
    std::fs::write(&admin_file, ADMIN_TOKEN).unwrap();
    let config = work.path().join("idgraph.toml");
    std::fs::write(
        &config,
        format!(
            r#"admin_token_file = "{admin}"
access_log = "{sink}"

[oidc]
issuer = "{issuer}"
client_id = "idgraph"
client_secret_file = "{secret}"
audience = "idgraph"
scopes = ["email", "profile", "groups"]

[oidc.roles]
viewer = ["idgraph-viewers"]
auditor = ["idgraph-auditors"]
admin = ["idgraph-admins"]
"#,
            admin = admin_file.display(),
            sink = work.path().join("siem.ndjson").display(),
            issuer = idp.issuer,
            secret = secret_file.display()
        ),
    )
    .unwrap();
    let (mut child, url, log) = serve_logged(&r, &data, &config, port).await;
    let mut secrets: Vec<String> = vec![CLIENT_SECRET.into(), ADMIN_TOKEN.into(), TOKEN.into()];

    // No credentials: 401, and the pages send a browser to sign in.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (s, v) = post(&url, "", "{ me { name } }").await;
    assert_eq!((s, code(&v)), (401, "UNAUTHENTICATED"), "{v}");
    let page = http.get(format!("{url}/audit")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert!(page.headers()["location"].to_str().unwrap().starts_with("/auth/login"));

    // ---- People, in a browser ------------------------------------------------------------------
    if browser {
        let run = |user: &'static str| {
            let (dir, base, chromium, log) = (dir.clone(), base.clone(), chromium.clone(), log.clone());
            async move {
                let out = tokio::process::Command::new("node")
                    .arg(dir.join("signin.mjs"))
                    .arg(&base)
                    .arg(user)
                    .env("CHROMIUM", &chromium)
                    .output()
                    .await
                    .expect("node runs");
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let v: serde_json::Value = serde_json::from_str(text.trim())
                    .unwrap_or_else(|_| panic!("{text}\n{}", String::from_utf8_lossy(&out.stderr)));
                assert_eq!(v["ok"], true, "{v}\nthe server's log:\n{}", log.lock());
                v
            }
        };
        let alice = run("alice").await;
        assert_eq!(alice["signInAt"], idp.issuer.as_str(), "the page sent the browser to the provider: {alice}");
        assert_eq!(alice["whoami"], "alice@example.com · auditor", "{alice}");
        assert!(alice["cards"].as_u64().unwrap() >= 3, "an auditor sees the org audit: {alice}");
        assert_eq!(alice["export"]["status"], 200, "{alice}");
        assert!(alice["export"]["rows"].as_u64().is_some(), "{alice}");
        assert_eq!(alice["withoutCsrf"], 401, "a POST with the cookie but no CSRF token is refused: {alice}");
        assert_eq!(alice["cookie"]["httpOnly"], true);
        assert_eq!(alice["cookie"]["sameSite"], "Lax");
        assert_eq!(alice["meAfter"], 401, "sign-out ends the session: {alice}");

        let victor = run("victor").await;
        assert_eq!(victor["whoami"], "victor@example.com · viewer", "{victor}");
        assert_eq!(victor["export"]["status"], 403, "{victor}");
        assert_eq!(victor["export"]["code"], "FORBIDDEN", "{victor}");
        assert!(
            victor["error"].as_str().unwrap_or("").contains("auditor"),
            "the refusal names the role needed: {victor}"
        );
    }

    // ---- API clients' JWTs ---------------------------------------------------------------------
    // A real access token from the provider (client credentials, JWT for the resource).
    let tok: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer))
        .basic_auth("idgraph", Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", "api"), ("resource", "urn:idgraph:api")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = tok["access_token"].as_str().expect("the provider issued a token").to_string();
    secrets.push(jwt.clone());
    let (s, v) = post(&url, &jwt, "query Orphans { me { name kind role } orphans(first: 3) { totalCount } }").await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("errors").is_none(), "the provider's JWT is accepted: {v}");
    assert_eq!(v["data"]["me"]["kind"], "jwt");
    assert_eq!(v["data"]["me"]["role"], "AUDITOR");

    let mint = |case: &'static str| {
        let issuer = idp.issuer.clone();
        async move { reqwest::get(format!("{issuer}/mint?case={case}")).await.unwrap().text().await.unwrap() }
    };
    let valid = mint("valid").await;
    secrets.push(valid.clone());
    let (s, v) = post(&url, &valid, "{ orphans(first: 1) { totalCount } }").await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("errors").is_none(), "{v}");
    let (_, v) = post(&url, &valid, "mutation { reindex(scope: AGENTS) { generation } }").await;
    assert_eq!(code(&v), "FORBIDDEN", "an auditor may not reindex: {v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("admin"), "{v}");
    for (case, why) in [
        ("expired", "jwt_expired"),
        ("nbf", "jwt_not_yet_valid"),
        ("audience", "jwt_audience"),
        ("issuer", "jwt_issuer"),
        ("none", "jwt_algorithm"),
        ("hs256", "jwt_algorithm"),
        ("kid", "jwt_unknown_key"),
        ("tampered", "jwt_signature"),
    ] {
        let t = mint(case).await;
        secrets.push(t.clone());
        let (s, v) = post(&url, &t, "{ orphans(first: 1) { totalCount } }").await;
        assert_eq!((s, code(&v)), (401, "UNAUTHENTICATED"), "{case}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let l = log.lock().clone();
        assert!(
            l.lines().any(|line| line.contains("request refused") && line.contains(why)),
            "{case}: a log line names why ({why})"
        );
    }
    let norole = mint("norole").await;
    let (s, v) = post(&url, &norole, "{ me { name } }").await;
    assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "a JWT without a mapped group has no role: {v}");

    // ---- Service tokens ------------------------------------------------------------------------
    let (ok, ci_token, err) =
        cli(&["token", "create", "ci-export", "--role", "auditor", "--expires", "90d"], &data).await;
    assert!(ok, "{err}");
    let ci_token = ci_token.trim().to_string();
    assert!(ci_token.starts_with("idg_") && !ci_token.contains('\n'), "the token alone on stdout");
    secrets.push(ci_token.clone());
    let stored = std::fs::read_to_string(data.join("tokens.json")).unwrap();
    assert!(!stored.contains(&ci_token), "stored hashed");
    // The running server takes it within a second.
    let started = Instant::now();
    loop {
        let (s, _) = post(&url, &ci_token, "{ orphans(first: 1) { totalCount } }").await;
        if s == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "a created token is taken within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, listed, _) = cli(&["token", "list"], &data).await;
    assert!(ok && listed.contains("ci-export\tauditor") && !listed.contains(&ci_token), "{listed}");
    // A client uses it while it is revoked.
    let user_url = url.clone();
    let user_token = ci_token.clone();
    let client = tokio::spawn(async move {
        loop {
            let (s, _) = post(&user_url, &user_token, "{ orphans(first: 1) { totalCount } }").await;
            if s != 200 {
                return (s, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ok, _, err) = cli(&["token", "revoke", "ci-export"], &data).await;
    let revoked_at = Instant::now();
    assert!(ok, "{err}");
    let (s, refused_at) = tokio::time::timeout(Duration::from_secs(5), client).await.unwrap().unwrap();
    assert_eq!(s, 401);
    let took = refused_at.saturating_duration_since(revoked_at);
    assert!(took < Duration::from_secs(1), "a revoked token is refused within a second (took {took:?})");
    // The configured admin token is a named token: it may create one through the server.
    let (s, v) =
        post(&url, ADMIN_TOKEN, r#"mutation { createServiceToken(name: "viewer-bot", role: VIEWER) { token } }"#).await;
    assert_eq!(s, 200, "{v}");
    let bot = v["data"]["createServiceToken"]["token"].as_str().unwrap().to_string();
    secrets.push(bot.clone());
    let (_, v) = post(&url, &bot, "{ contact(id: \"1\") { id } }").await;
    assert!(v.get("errors").is_none(), "a viewer looks up: {v}");
    let (_, v) = post(&url, &bot, "{ orphans(first: 1) { totalCount } }").await;
    assert_eq!(code(&v), "FORBIDDEN", "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("auditor"), "{v}");

    // ---- The access log ------------------------------------------------------------------------
    let (s, v) = post(
        &url,
        ADMIN_TOKEN,
        "{ accessLog(first: 1000) { edges { node { seq principal kind role route operation fields rows outcome } } } }",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let entries = v["data"]["accessLog"]["edges"].as_array().unwrap().clone();
    let by = |who: &str| entries.iter().filter(|e| e["node"]["principal"] == who).count();
    assert!(by("ci-export") >= 2, "the service token's requests are there");
    assert!(by("idgraph") >= 1, "the provider's JWT (subject idgraph) is there");
    assert!(by("script-1") >= 2, "the minted JWT's subject is there");
    assert!(by("viewer-bot") >= 2);
    assert!(by("admin_token") >= 1);
    if browser {
        assert!(entries
            .iter()
            .any(|e| e["node"]["principal"] == "alice@example.com" && e["node"]["outcome"] == "signed_in"));
        assert!(entries
            .iter()
            .any(|e| e["node"]["principal"] == "alice@example.com" && e["node"]["route"] == "GET /export/orphans"));
        assert!(entries
            .iter()
            .any(|e| e["node"]["principal"] == "victor@example.com" && e["node"]["outcome"] == "forbidden"));
    }
    let orphans_q =
        entries.iter().find(|e| e["node"]["operation"] == "Orphans").expect("the named operation is recorded");
    assert_eq!(orphans_q["node"]["fields"], serde_json::json!(["me", "orphans"]));
    assert_eq!(orphans_q["node"]["kind"], "jwt");
    assert!(entries.iter().filter(|e| e["node"]["outcome"] == "unauthenticated").count() >= 9, "refusals are recorded");

    // ---- No secret anywhere --------------------------------------------------------------------
    let metrics_text = metrics(&url).await;
    assert!(metric(&metrics_text, "idgraph_access_log_entries_total") >= entries.len() as f64);
    assert_eq!(metric(&metrics_text, "idgraph_access_log_dropped_total"), 0.0);
    // Stop gracefully so that the log is synced, then read everything the run wrote.
    let pid = child.id().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    tokio::time::timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    let mut written = log.lock().clone();
    written.push_str(&metrics_text);
    for f in access_files(&data) {
        written.push_str(&std::fs::read_to_string(f).unwrap());
    }
    for s in &secrets {
        assert!(!written.contains(s.as_str()), "a secret of the run appears in a log, the access log or /metrics");
    }

    // The SIEM's copy: the same entries, one JSON object a line, with the fields it relies on.
    let siem = std::fs::read_to_string(work.path().join("siem.ndjson")).unwrap();
    let chained: usize = access_files(&data).iter().map(|f| std::fs::read_to_string(f).unwrap().lines().count()).sum();
    assert_eq!(siem.lines().count(), chained, "every entry streamed");
    for l in siem.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for k in ["time", "principal", "kind", "role", "route", "operation", "fields", "rows", "outcome", "seq", "hash"]
        {
            assert!(v.get(k).is_some(), "{k} in {l}");
        }
    }

    // ---- access-log verify ---------------------------------------------------------------------
    let (ok, out, err) = cli(&["access-log", "verify"], &data).await;
    assert!(ok, "the chain holds: {out}{err}");
    let file = access_files(&data).pop().unwrap();
    let good = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    assert!(lines.len() > 20);
    // One byte of entry 7 changed.
    let mut bytes = good.clone().into_bytes();
    let at = lines[..6].iter().map(|l| l.len() + 1).sum::<usize>() + lines[6].find("\"rows\":").unwrap() + 7;
    bytes[at] = if bytes[at] == b'9' { b'8' } else { b'9' };
    std::fs::write(&file, &bytes).unwrap();
    let (ok, _, err) = cli(&["access-log", "verify"], &data).await;
    assert!(!ok, "a changed byte is found");
    assert!(err.contains("entry 7 "), "the changed entry is named: {err}");
    // Entry 12 removed.
    let mut removed = lines.clone();
    removed.remove(11);
    std::fs::write(&file, removed.join("\n") + "\n").unwrap();
    let (ok, _, err) = cli(&["access-log", "verify"], &data).await;
    assert!(!ok, "a removed entry is found");
    assert!(err.contains("entry 12 ") && err.contains("removed"), "{err}");
}
