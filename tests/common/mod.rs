//! Helpers shared by the end-to-end tests: a simulator in the test process, the `idgraph` binary
//! as a child process (as a user runs it), and an exactness check of a crawl against the org.

#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;

use drift_sim::{RunningSim, Sim, SimConfig};
use idgraph_graph::Store;
use idgraph_model::{Account, Contact, ScimUser, User};
use serde_json::{json, Value};
use std::time::Duration;

pub const TOKEN: &str = "test-token";

pub async fn sim(cfg: SimConfig) -> (Sim, RunningSim) {
    let sim = Sim::new(SimConfig { token: TOKEN.into(), ..cfg });
    let running = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, running)
}

pub fn idgraph() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_idgraph"));
    c.env_remove("DRIFT_TOKEN").env("RUST_LOG", "info,sled=warn").stdin(Stdio::null()).kill_on_drop(true);
    c
}

/// Runs `idgraph crawl` against the simulator; returns (success, stderr).
pub async fn crawl(r: &RunningSim, data_dir: &Path, extra: &[&str]) -> (bool, String) {
    let out = idgraph()
        .args(["crawl", "--drift-url", &r.url(), "--scim-url", &r.scim_url(), "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .output()
        .await
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn sorted<T, K: Ord>(mut v: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    v.sort_by_key(|x| key(x));
    v
}

/// Asserts that the current generation holds exactly the simulator's org: nothing lost,
/// duplicated or altered.
pub fn assert_exact(sim: &Sim, data_dir: &Path) {
    let store = Store::open(data_dir).unwrap();
    let g = store.current().unwrap().expect("a current generation");
    let got = store.inputs(g).unwrap();
    let want_contacts = sorted(sim.contacts_json().iter().map(|v| Contact::from_json(v).unwrap()).collect(), |c| c.id);
    let got_contacts = sorted(got.contacts, |c| c.id);
    assert_eq!(got_contacts.len(), want_contacts.len(), "contact count");
    for (a, b) in got_contacts.iter().zip(&want_contacts) {
        assert_eq!(a, b, "contact {} differs", b.id);
    }
    let want_users = sorted(sim.users_json().iter().map(|v| User::from_json(v).unwrap()).collect(), |u| u.id);
    assert_eq!(sorted(got.users, |u| u.id), want_users, "users");
    if sim.config().scim_enabled {
        let want_scim =
            sorted(sim.scim_users_json().iter().map(|v| ScimUser::from_json(v).unwrap()).collect(), |u| u.id);
        assert_eq!(sorted(got.scim, |u| u.id), want_scim, "SCIM users");
    }
    let want_accounts =
        sorted(sim.accounts_json().iter().map(|v| Account::from_json(v).unwrap()).collect(), |a| a.id.clone());
    assert_eq!(sorted(got.accounts, |a| a.id.clone()), want_accounts, "accounts");
}

/// Obtains OAuth tokens from the simulator and writes a config file that uses them.
pub async fn oauth_config(r: &RunningSim, sim: &Sim, dir: &Path) -> std::path::PathBuf {
    let code = sim.issue_code();
    let http = reqwest::Client::new();
    let tokens = idgraph_crawler::auth::exchange_code(
        &http,
        &format!("{}/oauth2/token", r.url()),
        "sim-client",
        &idgraph_crawler::Secret::new("sim-secret"),
        &code,
        "http://127.0.0.1/cb",
    )
    .await
    .unwrap();
    let token_file = dir.join("tokens.json");
    tokens.write(&token_file).unwrap();
    write_oauth_config(r, dir, &token_file)
}

/// Writes an idgraph.toml whose [oauth] section uses the simulator's client and `token_file`.
pub fn write_oauth_config(r: &RunningSim, dir: &Path, token_file: &Path) -> std::path::PathBuf {
    let cfg = dir.join("idgraph.toml");
    std::fs::write(
        &cfg,
        format!(
            "[oauth]\nclient_id = \"sim-client\"\nclient_secret = \"sim-secret\"\ntoken_file = \"{}\"\ntoken_url = \"{}/oauth2/token\"\n",
            token_file.display(),
            r.url()
        ),
    )
    .unwrap();
    // It holds the client secret: only its owner may read it (idgraph refuses it otherwise).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    cfg
}

/// `idgraph serve` as a child process, and its address.
pub struct Server {
    pub child: tokio::process::Child,
    pub url: String,
}

/// Starts `idgraph serve` on port 0 against the simulator and waits until it is ready.
pub async fn serve(r: &RunningSim, data_dir: &Path, extra: &[&str]) -> Server {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let listen = if extra.contains(&"--listen") { &[][..] } else { &["--listen", "127.0.0.1:0"][..] };
    let mut child = idgraph()
        .args(["--log-format", "json", "serve"])
        .args(listen)
        .args(["--drift-url", &r.url(), "--scim-url", &r.scim_url()])
        .args(["--token", TOKEN, "--data-dir"])
        .arg(data_dir)
        .args(if extra.contains(&"--rate-limit") { &[][..] } else { &["--rate-limit", "2000/s"][..] })
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .expect("the server says where it listens")
            .unwrap()
            .expect("the server exited early");
        if line.contains("serving GraphQL") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("http://{addr}");
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
            if r.status() == 200 {
                return Server { child, url };
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the server never became ready");
}

/// Posts a GraphQL query; returns the whole response body.
pub async fn gql(url: &str, token: Option<&str>, query: &str, variables: serde_json::Value) -> serde_json::Value {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/graphql"))
        .json(&serde_json::json!({"query": query, "variables": variables}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// The data of a query that must succeed.
pub async fn data(url: &str, token: &str, query: &str) -> serde_json::Value {
    let v = gql(url, Some(token), query, serde_json::Value::Null).await;
    assert!(v.get("errors").is_none(), "{query}: {v}");
    v["data"].clone()
}

/// Waits until the server is idle and its last run was `want` (a crawl, an agents refresh).
pub async fn wait_idle(url: &str, token: &str, want: &str) -> serde_json::Value {
    for _ in 0..300 {
        let d = data(url, token, "{ indexStatus { generation crawling lastResult lastError orphans } }").await;
        let st = &d["indexStatus"];
        if st["crawling"] == false && st["lastResult"].as_str().is_some_and(|r| r.contains(want)) {
            return st.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no {want} finished");
}

/// A free port on loopback (for a simulator that must know where to send webhooks before the
/// server starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server's Prometheus text.
pub async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap()
}

/// A metric's value in Prometheus text (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until every contact announced by webhooks was read from Drift (the confirmer's queue is
/// empty and at least `reads` reads were made).
pub async fn wait_confirmed(url: &str, reads: f64) {
    for _ in 0..600 {
        let m = metrics(url).await;
        if metric(&m, "idgraph_webhook_queue_depth") == 0.0 && metric(&m, "idgraph_webhooks_confirmed_total") >= reads {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("announced contacts were not read from Drift in time: {}", metrics(url).await);
}

/// Writes a configuration file (0600: it holds tokens): `data_dir`, the top-level keys `top`, the
/// `[[org]]`s.
pub fn write_config(path: &Path, data_dir: &Path, top: &str, orgs: &[String]) {
    let text = format!("data_dir = \"{}\"\n{top}\n\n{}", data_dir.display(), orgs.concat());
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Starts `idgraph serve --config` and returns it with its address once it listens.
pub async fn serve_config(config: &Path) -> Server {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = idgraph()
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the server says where it listens")
            .unwrap()
            .expect("the server exited early");
        if line.contains("serving GraphQL") {
            let v: Value = serde_json::from_str(&line).unwrap();
            break v["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, url: format!("http://{addr}") }
}

/// A query to one org, by the header or the path.
pub async fn org_gql(url: &str, org: Option<&str>, by_path: bool, token: &str, query: &str) -> (u16, Value) {
    let http = reqwest::Client::new();
    let target = match (org, by_path) {
        (Some(o), true) => format!("{url}/orgs/{o}/graphql"),
        _ => format!("{url}/graphql"),
    };
    let mut req = http.post(target).bearer_auth(token).json(&json!({"query": query}));
    if let (Some(o), false) = (org, by_path) {
        req = req.header("x-idgraph-org", o);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

// Many orgs (tests/orgs.rs, tests/gateway.rs).

pub const LEAVER: &str = "lee.leaver@corp.example";

/// A simulated org with the leaver as an agent who owns `owns` contacts.
pub async fn org_with_leaver(seed: u64, owns: usize) -> (Sim, RunningSim, u64, Vec<u64>) {
    let (sim, r) = sim(SimConfig { seed, contacts: 300, agents: 8, rate_limit: None, ..SimConfig::default() }).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/Users", r.scim_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"userName": LEAVER, "displayName": "Lee Leaver"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let leaver: u64 = created["id"].as_str().unwrap().parse().unwrap();
    let ids: Vec<u64> = sim.contacts_json().iter().filter_map(|c| c["id"].as_u64()).take(owns).collect();
    for id in &ids {
        let s = http
            .patch(format!("{}/contacts/{id}", r.url()))
            .bearer_auth(TOKEN)
            .json(&json!({"attributes": {"ownerId": leaver}}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(s.is_success(), "PATCH contact {id}: {s}");
    }
    (sim, r, leaver, ids)
}

pub fn org_section(name: &str, r: &RunningSim, token: &str) -> String {
    format!(
        "[[org]]\nname = \"{name}\"\ndrift_url = \"{}\"\nscim_url = \"{}\"\ntoken = \"{token}\"\nrate_limit = \"2000/s\"\nfull_every = \"1h\"\nagents_every = \"1h\"\nrefresh_share = 0.0\n\n",
        r.url(),
        r.scim_url()
    )
}

pub async fn token(data_dir: &Path, name: &str, role: &str, org: Option<&str>) -> String {
    let mut c = idgraph();
    c.args(["token", "create", name, "--role", role, "--data-dir"]).arg(data_dir);
    if let Some(o) = org {
        c.args(["--org", o]);
    }
    let out = c.output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Waits until the org's last run was `want` and it is idle.
pub async fn wait_org(url: &str, org: &str, token: &str, want: &str) {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (_, v) = org_gql(url, Some(org), false, token, "{ indexStatus { crawling lastResult lastError } }").await;
        let st = &v["data"]["indexStatus"];
        if st["crawling"] == false && st["lastResult"].as_str().is_some_and(|r| r.contains(want)) {
            return;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("org {org}: no {want} finished: {last}");
}
