//! The command line as a person uses it in a shell: pipes that close early, logs in files, exports.

mod common;

use std::process::Stdio;

use common::*;
use drift_sim::SimConfig;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_logs_and_exports_behave_in_a_shell() {
    let (_sim, r) = sim(SimConfig { contacts: 3000, agents: 30, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = crawl(&r, dir.path(), &["--token", TOKEN]).await;
    assert!(ok, "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes in a log that is not a terminal: {log:.300}");

    // `idgraph audit --all --format json | head -c 10`: the reader goes away; no panic, exit 0.
    for args in [&["audit", "--all", "--format", "json"][..], &["export", "contacts", "--format", "csv"][..]] {
        let mut child = idgraph()
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 10];
        out.read_exact(&mut first).await.unwrap();
        drop(out);
        let done = child.wait_with_output().await.unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{args:?} after the pipe closed: {:?} {err}", done.status);
        assert!(!err.contains("panicked"), "{err}");
    }

    // A columnar export that cannot be written whole (a full disk) fails, and says so: never a
    // shorter file and success.
    for format in ["arrow", "parquet"] {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = idgraph()
            .args(["export", "contacts", "--format", format, "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::from(full))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{format} to a full disk succeeded: {err}");
        assert!(err.contains("cannot write the export"), "{format}: {err}");
    }

    // The orphans export from the data directory has the audit CSV's columns.
    let out =
        idgraph().args(["export", "orphans", "--format", "csv", "--data-dir"]).arg(dir.path()).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "contact_id,contact_email,contact_name,owner_id,owner_email,owner_name,owner_status,reason,owner_gone_at,contact_verified_at"
    );
    let audit =
        idgraph().args(["audit", "--all", "--format", "csv", "--data-dir"]).arg(dir.path()).output().await.unwrap();
    let audit = String::from_utf8(audit.stdout).unwrap();
    let mut a: Vec<&str> = audit.lines().filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit())).collect();
    let mut e: Vec<&str> = text.lines().skip(1).collect();
    a.sort();
    e.sort();
    assert_eq!(e, a, "the export's orphan rows are the audit's");
}

const READ: &str = "read-secret";
const ADMIN: &str = "admin-secret";

async fn run(args: &[&str]) -> (bool, String, String) {
    let out = idgraph().args(args).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassign_through_a_server_hints_and_errors_a_person_can_act_on() {
    let (_sim, r) = sim(SimConfig { contacts: 2000, agents: 20, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let srv = serve(&r, &data_dir, &["--read-token", READ, "--admin-token", ADMIN, "--agents-every", "1h"]).await;
    let url = srv.url.clone();
    let top = data(&url, READ, "{ whoOwnsWhom(first: 3) { edges { node { agent { id email status } } } } }").await;
    let rows = top["whoOwnsWhom"]["edges"].as_array().unwrap();
    let agent = |i: usize| {
        (
            rows[i]["node"]["agent"]["id"].as_str().unwrap().to_string(),
            rows[i]["node"]["agent"]["email"].as_str().unwrap().to_string(),
        )
    };
    let ((leaver, leaver_email), (_, to1), (_, to2)) = (agent(0), agent(1), agent(2));

    // An ACTIVE source is refused without --force, by email, through the server.
    let (ok, _, err) =
        run(&["reassign", "--server", &url, "--admin-token", ADMIN, "--from", &leaver_email, "--to", &to1]).await;
    assert!(!ok && err.contains("--force"), "{err}");

    // Deprovision the leaver; an agents refresh shows it.
    let http = reqwest::Client::new();
    http.delete(format!("{}/scim/v2/Users/{leaver}", r.url())).bearer_auth(TOKEN).send().await.unwrap();
    data(&url, ADMIN, "mutation { reindex(scope: AGENTS) { crawling } }").await;
    for _ in 0..300 {
        let d = data(&url, READ, &format!("{{ agent(id: \"{leaver}\") {{ status }} }}")).await;
        if d["agent"]["status"] == "DEPARTED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let to = format!("{to1},{to2}");
    let (ok, out, err) =
        run(&["reassign", "--server", &url, "--admin-token", ADMIN, "--from", &leaver_email, "--to", &to]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("dry run: "), "{out}");
    let line = out.lines().nth(1).unwrap();
    assert!(line.contains('@') && line.contains(&to1) || line.contains(&to2), "emails beside ids: {line}");
    let (ok, out, err) =
        run(&["reassign", "--server", &url, "--admin-token", ADMIN, "--from", &leaver, "--to", &to, "--apply"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("moved ") && err.contains("applying"), "{out}\n{err}");
    let (ok, out, err) =
        run(&["reassign", "--server", &url, "--admin-token", ADMIN, "--from", &leaver, "--to", &to, "--apply"]).await;
    assert!(ok, "a rerun with nothing to do succeeds: {err}");
    assert_eq!(out.trim(), "nothing left to move");

    // The hint names the server's real address, not a default port.
    let (ok, _, err) = run(&["audit", "--all", "--data-dir", data_dir.to_str().unwrap()]).await;
    assert!(!ok && err.contains(&url), "{err}");
    drop(srv);

    // A transport error names its cause.
    let (ok, _, err) = run(&["audit", "--all", "--server", "http://127.0.0.1:9", "--token", READ]).await;
    assert!(!ok && err.to_lowercase().contains("refused"), "{err}");

    // Read-only commands never create a data directory.
    let nowhere = dir.path().join("nowhere");
    for cmd in [&["audit", "--all"][..], &["export", "contacts"][..], &["reassign", "--from", "1", "--to", "2"][..]] {
        let mut args = cmd.to_vec();
        args.extend(["--data-dir", nowhere.to_str().unwrap()]);
        let (ok, _, err) = run(&args).await;
        assert!(!ok && err.contains("no index"), "{cmd:?}: {err}");
        assert!(!nowhere.exists(), "{cmd:?} created {}", nowhere.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_reassign_read_data_dir_from_the_config_file() {
    let (_sim, r) = sim(SimConfig { contacts: 500, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("from-config");
    let cfg = dir.path().join("idgraph.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n", data_dir.display())).unwrap();
    let out = idgraph()
        .args(["crawl", "--drift-url", &r.url(), "--scim-url", &r.scim_url(), "--token", TOKEN, "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(data_dir.join("db").exists(), "the crawl used the file's data_dir");
    let audit = idgraph()
        .args(["audit", "--all", "--format", "json", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    let reassign = idgraph()
        .args(["reassign", "--from", "999999", "--to", "1", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&reassign.stderr);
    assert!(err.contains("no agent \"999999\""), "reassign opened the file's data_dir: {err}");
    assert!(!dir.path().join("idgraph-data").exists(), "nothing used the default directory");
}

/// Runs a command under a pseudo-terminal (`script`), as a person at a terminal does.
async fn on_a_terminal(cmd: &str, no_color: bool) -> String {
    let mut c = tokio::process::Command::new("script");
    c.args(["-qec", cmd, "/dev/null"]).env_remove("NO_COLOR").stdin(Stdio::null());
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let out = c.output().await.unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_only_on_a_terminal_and_never_with_no_color() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping: no `script` (util-linux) to make a terminal");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_idgraph");
    let dir = tempfile::tempdir().unwrap();
    // A server logs at once; on a terminal each line's level is coloured.
    let cmd = format!(
        "timeout 2 {bin} serve --insecure-no-auth --listen 127.0.0.1:0 --drift-url http://127.0.0.1:9 --token t --data-dir {} 2>&1; true",
        dir.path().display()
    );
    // Colour is SGR: ESC [ digits m.
    let sgr = |s: &str| {
        s.split('\u{1b}').skip(1).any(|r| {
            r.starts_with('[') && r[1..].trim_start_matches(|c: char| c.is_ascii_digit() || c == ';').starts_with('m')
        })
    };
    let coloured = on_a_terminal(&cmd, false).await;
    assert!(coloured.contains("INFO") && sgr(&coloured), "a terminal gets colour: {coloured:?}");
    let plain = on_a_terminal(&cmd, true).await;
    assert!(plain.contains("INFO") && !sgr(&plain), "NO_COLOR is honoured: {plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_counts_agents_once_and_prints_whole_lines() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = idgraph()
        .args(["demo", "--port", "0", "--contacts", "2000", "--agents", "30", "--no-churn"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(120), lines.next_line())
            .await
            .expect("the demo comes up")
            .unwrap()
            .expect("the demo exited early");
        seen.push(line.clone());
        if line.contains("idgraph demo is up") {
            break;
        }
    }
    let indexed = seen.iter().find(|l| l.starts_with("Indexed ")).unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(indexed.starts_with("Indexed 2000 contacts, 30 agents,"), "{indexed}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_every_value_and_names_a_corrupt_one() {
    let (_sim, r) = sim(SimConfig { contacts: 800, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = crawl(&r, dir.path(), &["--token", TOKEN]).await;
    assert!(ok, "{log}");
    let (ok, out, err) = run(&["check", "--data-dir", dir.path().to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("generation 1") && out.contains("ok:"), "{out}");
    // Overwrite bytes inside one stored value of the current generation.
    {
        let db = sled::open(dir.path()).unwrap();
        let name = db.tree_names().into_iter().find(|n| n.starts_with(b"gen-")).unwrap();
        let t = db.open_tree(name).unwrap();
        let (k, v) = t.scan_prefix(b"u").next().unwrap().unwrap();
        let mut bad = v.to_vec();
        let last = bad.len() - 2;
        bad[last] ^= 0x55;
        t.insert(k, bad).unwrap();
        db.flush().unwrap();
    }
    let (ok, out, err) = run(&["check", "--data-dir", dir.path().to_str().unwrap()]).await;
    assert!(!ok, "a corrupt value fails the check: {out}");
    assert!(out.contains("checksum"), "it says what is wrong: {out}{err}");
    assert!(err.contains("1 problems found") || err.contains("problems found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_knows_its_org_and_serves_read_only() {
    let (_sim, r) = sim(SimConfig { contacts: 600, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, log) = crawl(&r, dir.path(), &["--token", TOKEN]).await;
    assert!(ok, "{log}");
    // Another org's URL is refused, before a request is made.
    let (ok, _, err) = run(&["crawl", "--drift-url", "http://127.0.0.1:9", "--token", TOKEN, "--data-dir", d]).await;
    assert!(!ok && err.contains(&r.url()) && err.contains("--force"), "{err}");
    // No URL given: the stored one is used.
    let (ok, _, err) = run(&["crawl", "--token", TOKEN, "--data-dir", d]).await;
    assert!(ok, "the stored URL was used: {err}");
    assert!(err.contains("generation 2 is live"), "{err}");
    // Read-only: no credentials, no crawl, the stored index served.
    let (mut child, addr, _) = serve_read_only(d).await;
    let v = gql(
        &format!("http://{addr}"),
        None,
        "{ indexStatus { generation contacts crawling } }",
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(v["data"]["indexStatus"]["contacts"], 600, "{v}");
    assert_eq!(v["data"]["indexStatus"]["generation"], 2);
    let m = gql(&format!("http://{addr}"), None, "mutation { reindex { crawling } }", serde_json::Value::Null).await;
    assert!(m["errors"].is_array(), "a read-only server never crawls: {m}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_orgs_token_at_the_same_url_is_refused() {
    let (_sim, r) = sim(SimConfig { contacts: 300, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, log) = crawl(&r, dir.path(), &["--token", TOKEN]).await;
    assert!(ok, "{log}");
    // Every org shares Drift's URL: at the same address now answers another org.
    let url = r.url();
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    r.stop().await;
    let other = drift_sim::Sim::new(SimConfig {
        token: TOKEN.into(),
        org_id: 2_000_002,
        contacts: 300,
        agents: 5,
        ..SimConfig::default()
    });
    let _r2 = other.spawn(addr).await.expect("the same address again");
    let (ok, _, err) = run(&["crawl", "--token", TOKEN, "--data-dir", d]).await;
    assert!(!ok, "another org's token is refused");
    assert!(err.contains("1000001") && err.contains("2000002") && err.contains("--force"), "{err}");
    let (ok, _, err) = run(&["crawl", "--token", TOKEN, "--data-dir", d, "--force"]).await;
    assert!(ok && err.contains("generation 2 is live"), "--force replaces it: {err}");
    let (ok, _, err) = run(&["crawl", "--token", TOKEN, "--data-dir", d]).await;
    assert!(ok, "the directory now holds the new org: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_and_a_checked_restore() {
    let (_sim, r) = sim(SimConfig { contacts: 700, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let copy = backups.join("nightly");
    let srv =
        serve(&r, &data, &["--read-token", READ, "--admin-token", ADMIN, "--backup-dir", backups.to_str().unwrap()])
            .await;
    let to = copy.to_str().unwrap();
    let (ok, _, err) = run(&["backup", "--to", "nightly", "--server", &srv.url, "--admin-token", READ]).await;
    assert!(!ok && err.contains("admin"), "a read token cannot back up: {err}");
    let (ok, out, err) = run(&["backup", "--to", "nightly", "--server", &srv.url, "--admin-token", ADMIN]).await;
    assert!(ok && out.contains("passed its check") && out.contains(to), "the absolute path written: {out}{err}");
    drop(srv);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (ok, out, _) = run(&["check", "--data-dir", to]).await;
    assert!(ok && out.contains("ok:"), "{out}");

    // A corrupt backup is refused and nothing is replaced.
    let bad = dir.path().join("bad");
    let (ok, _, err) = run(&["backup", "--to", bad.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]).await;
    assert!(ok, "an offline backup: {err}");
    {
        let db = sled::open(&bad).unwrap();
        let name = db.tree_names().into_iter().find(|n| n.starts_with(b"gen-")).unwrap();
        let t = db.open_tree(name).unwrap();
        let (k, v) = t.scan_prefix(b"u").next().unwrap().unwrap();
        let mut v = v.to_vec();
        let i = v.len() - 2;
        v[i] ^= 0x55;
        t.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let (ok, _, err) = run(&["restore", "--from", bad.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]).await;
    assert!(!ok && err.contains("fails its check"), "{err}");
    assert!(data.join("db").exists(), "the data directory is untouched");

    let (ok, out, err) = run(&["restore", "--from", to, "--data-dir", data.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("kept at"), "what it replaced is kept: {out}");
    let (ok, out, _) = run(&["check", "--data-dir", data.to_str().unwrap()]).await;
    assert!(ok && out.contains("generation 1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_generation_falls_back_to_the_previous_one_loudly() {
    let (_sim, r) = sim(SimConfig { contacts: 500, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for _ in 0..2 {
        let (ok, log) = crawl(&r, dir.path(), &["--token", TOKEN]).await;
        assert!(ok, "{log}");
    }
    // Damage a stored contact page of generation 2 (the current one).
    {
        let db = sled::open(dir.path()).unwrap();
        let t = db.open_tree("gen-00000000000000000002").unwrap();
        let (k, v) = t.scan_prefix(b"g").next().unwrap().unwrap();
        let mut v = v.to_vec();
        let i = v.len() / 2;
        v[i] ^= 0x55;
        t.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let (mut child, addr, log) = serve_read_only(d).await;
    let said = log.iter().any(|l| l.contains("serving the previous one"));
    assert!(said, "the log says it fell back");
    let v = gql(
        &format!("http://{addr}"),
        None,
        "{ indexStatus { generation contacts fallback } }",
        serde_json::Value::Null,
    )
    .await;
    let st = &v["data"]["indexStatus"];
    assert_eq!((st["generation"].as_u64(), st["contacts"].as_u64()), (Some(1), Some(500)), "{v}");
    assert!(st["fallback"].as_str().is_some_and(|f| f.contains("generation 2") && f.contains("checksum")), "{v}");
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("idgraph_fallback 1"), "the metric says so");
    child.kill().await.unwrap();
    // With no intact generation left, it says what to do.
    {
        let db = sled::open(dir.path()).unwrap();
        let t = db.open_tree("gen-00000000000000000001").unwrap();
        let (k, v) = t.scan_prefix(b"g").next().unwrap().unwrap();
        let mut v = v.to_vec();
        let i = v.len() / 2;
        v[i] ^= 0x55;
        t.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let (ok, _, err) =
        run(&["serve", "--read-only", "--insecure-no-auth", "--listen", "127.0.0.1:0", "--data-dir", d]).await;
    assert!(!ok && err.contains("idgraph restore") && err.contains("fresh data directory"), "{err}");
}

/// `idgraph serve --read-only` on a data directory: the child, its address, and what it logged
/// until it served.
async fn serve_read_only(d: &str) -> (tokio::process::Child, String, Vec<String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let args = ["--log-format", "json", "serve", "--read-only", "--insecure-no-auth", "--listen", "127.0.0.1:0"];
    let mut child = idgraph().args(args).args(["--data-dir", d]).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("serves");
        if line.contains("serving GraphQL") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let addr = v["fields"]["addr"].as_str().unwrap().to_string();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (child, addr, log);
        }
        log.push(line);
    }
}
