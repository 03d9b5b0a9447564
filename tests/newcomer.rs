//! What a new user meets, run as they run it: restores that touch nothing but the data
//! directory, read-only copies that open, backups only where the server says, and messages that
//! say what to do.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use drift_sim::SimConfig;

const READ: &str = "read-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

async fn run(args: &[&str]) -> (bool, String, String) {
    let out = idgraph().args(args).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir` (by relative path) with its bytes, and every directory: what "left
/// byte for byte as it was" compares.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<String>>) {
        use sha2::Digest;
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                walk(root, &e.path(), out);
            } else {
                out.insert(rel, Some(hex::encode(sha2::Sha256::digest(std::fs::read(e.path()).unwrap()))));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A restore reads its source and nothing else: a directory that is not a backup is left as it
/// was (no `db`, `conf` or `blobs/` appear in it), a missing one is not created, a backup holding
/// a symbolic link is refused before the data directory is touched, and a restore while a server
/// holds the store says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_writes_only_into_the_data_directory() {
    let (_sim, r) = sim(SimConfig { contacts: 300, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, err) = crawl(&r, &data, &["--token", TOKEN]).await;
    assert!(ok, "{err}");
    let d = data.to_str().unwrap();

    let not_a_backup = dir.path().join("notes");
    std::fs::create_dir(&not_a_backup).unwrap();
    std::fs::write(not_a_backup.join("todo.txt"), "call the auditors").unwrap();
    let was = tree(&not_a_backup);
    let (ok, _, err) = run(&["restore", "--from", not_a_backup.to_str().unwrap(), "--data-dir", d]).await;
    assert!(!ok && err.contains("is not an idgraph backup"), "{err}");
    assert_eq!(tree(&not_a_backup), was, "the source is left byte for byte as it was");

    let missing = dir.path().join("no-such-backup");
    let (ok, _, err) = run(&["restore", "--from", missing.to_str().unwrap(), "--data-dir", d]).await;
    assert!(!ok && err.contains("does not exist"), "{err}");
    assert!(!missing.exists(), "a missing path is not created");

    // A real backup, then a symbolic link planted in it: refused, nothing replaced.
    let good = dir.path().join("good");
    let (ok, _, err) = run(&["backup", "--to", good.to_str().unwrap(), "--data-dir", d]).await;
    assert!(ok, "{err}");
    #[cfg(unix)]
    assert_eq!(mode(&good), 0o700, "a backup directory only its owner may enter");
    let linked = dir.path().join("linked");
    idgraph_graph::Store::copy_files(&good, &linked).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/passwd", linked.join("blobs-link")).unwrap();
    let was = tree(&good);
    let before = tree(&data);
    let (ok, _, err) = run(&["restore", "--from", linked.to_str().unwrap(), "--data-dir", d]).await;
    assert!(!ok && err.contains("symbolic link"), "{err}");
    assert_eq!(tree(&data), before, "the data directory is untouched");
    let siblings: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(
        !siblings
            .iter()
            .any(|n| n.to_string_lossy().contains("restoring") || n.to_string_lossy().contains("before-restore")),
        "no half-restored leftovers: {siblings:?}"
    );

    // While a server holds the store.
    let mut srv = serve(&r, &data, &["--read-token", READ, "--admin-token", ADMIN]).await;
    let (ok, _, err) = run(&["restore", "--from", good.to_str().unwrap(), "--data-dir", d]).await;
    assert!(
        !ok && err.contains("in use by a running server") && err.contains("stop the server, then run restore again"),
        "{err}"
    );
    srv.child.kill().await.unwrap();
    let _ = srv.child.wait().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let (ok, out, err) = run(&["restore", "--from", good.to_str().unwrap(), "--data-dir", d]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(tree(&good), was, "the backup is only read");
    let aside = out.lines().find_map(|l| l.strip_prefix("the data directory it replaces is kept at ")).unwrap();
    assert!(aside.contains("before-restore-20") && aside.ends_with('Z'), "a readable time in the name: {aside}");
}

/// A server writes backups only under its `backup_dir`, by a plain name, into a new directory
/// (0700), never through a link; a relative path is refused before it reaches the server; a name
/// taken says so; the absolute path written is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_backups_go_only_under_backup_dir() {
    let (_sim, r) = sim(SimConfig { contacts: 300, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let srv =
        serve(&r, &data, &["--read-token", READ, "--admin-token", ADMIN, "--backup-dir", backups.to_str().unwrap()])
            .await;
    let url = format!("{}/admin/backup", srv.url);
    let http = reqwest::Client::new();
    let post = |to: &str| http.post(&url).bearer_auth(ADMIN).json(&serde_json::json!({ "to": to })).send();
    for bad in ["..", "", "a/b", "../escape", ".hidden", "/tmp/x", "a\\b"] {
        let resp = post(bad).await.unwrap();
        assert_eq!(resp.status(), 400, "{bad:?}");
    }
    assert!(!dir.path().join("escape").exists());
    // A link planted under backup_dir is not followed.
    let target = dir.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&target, backups.join("linked")).unwrap();
        let resp = post("linked").await.unwrap();
        assert_eq!(resp.status(), 409);
        assert!(std::fs::read_dir(&target).unwrap().next().is_none(), "nothing written through the link");
    }
    // A name taken.
    std::fs::create_dir(backups.join("taken")).unwrap();
    std::fs::write(backups.join("taken").join("x"), "x").unwrap();
    let (ok, _, err) = run(&["backup", "--to", "taken", "--server", &srv.url, "--admin-token", ADMIN]).await;
    assert!(!ok && err.contains("is not empty"), "{err}");
    // A relative path is refused by the client, which says what to do.
    let (ok, _, err) = run(&["backup", "--to", "some/where", "--server", &srv.url, "--admin-token", ADMIN]).await;
    assert!(!ok && err.contains("plain name") && err.contains("backup_dir"), "{err}");
    let (ok, out, err) = run(&["backup", "--to", "nightly-1", "--server", &srv.url, "--admin-token", ADMIN]).await;
    assert!(ok, "{err}");
    let written = backups.join("nightly-1");
    assert!(out.contains(written.to_str().unwrap()), "the absolute path: {out}");
    #[cfg(unix)]
    assert_eq!(mode(&written), 0o700);
}

/// A store readable but not writable by the user (a copy handed to auditors) opens for `audit`,
/// `check`, `export` and `serve --read-only`, and is left byte for byte as it was.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_copy_opens_for_every_reading_command() {
    use std::os::unix::fs::PermissionsExt;
    let (_sim, r) = sim(SimConfig { contacts: 300, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, err) = crawl(&r, &data, &["--token", TOKEN]).await;
    assert!(ok, "{err}");
    let ro = dir.path().join("handed-over");
    idgraph_graph::Store::copy_files(&data, &ro).unwrap();
    // Readable by anyone, writable by no one (root ignores modes: the commands then run as
    // `nobody`, through setpriv, as another user would).
    let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    for (rel, _) in tree(&ro) {
        let p = ro.join(&rel);
        set(&p, if p.is_dir() { 0o555 } else { 0o444 });
    }
    set(&ro, 0o555);
    set(dir.path(), 0o755);
    let before = tree(&ro);
    let as_root = unsafe_is_root();
    // A copy of the binary that `nobody` may run, wherever the build tree lies (/root is 0700).
    let bin = dir.path().join("idgraph-bin");
    std::fs::copy(env!("CARGO_BIN_EXE_idgraph"), &bin).unwrap();
    set(&bin, 0o755);
    let cmd = |args: &[&str]| {
        let mut c = if as_root {
            let mut c = tokio::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
            c
        } else {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_idgraph"))
        };
        c.args(args).env_remove("DRIFT_TOKEN").env("TMPDIR", "/tmp").kill_on_drop(true);
        c
    };
    let d = ro.to_str().unwrap();
    for args in [
        vec!["audit", "--all", "--data-dir", d],
        vec!["check", "--data-dir", d],
        vec!["export", "contacts", "--data-dir", d],
    ] {
        let out = cmd(&args).output().await.unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut srv = cmd(&["serve", "--read-only", "--insecure-no-auth", "--listen", "127.0.0.1:0", "--data-dir", d])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(srv.stderr.take().unwrap()).lines();
    let mut served = false;
    while let Ok(Ok(Some(l))) = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await {
        if l.contains("serving GraphQL") {
            served = true;
            break;
        }
    }
    assert!(served, "serve --read-only started on a read-only copy");
    srv.kill().await.unwrap();
    assert_eq!(tree(&ro), before, "the copy is left byte for byte as it was");
    let _ = r;
}

fn unsafe_is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// A first crawl that cannot reach Drift says so (the URL it tried, no index yet) and is retried
/// within seconds: once Drift answers, the server becomes ready without waiting for the next full
/// run hours later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_crawl_is_retried_and_says_there_is_no_index_yet() {
    use tokio::io::AsyncBufReadExt;
    let port = free_port();
    let drift = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let mut child = idgraph()
        .args(["serve", "--listen", "127.0.0.1:0", "--insecure-no-auth", "--token", TOKEN, "--drift-url", &drift])
        .args(["--scim-url", &format!("{drift}/scim/v2"), "--rate-limit", "2000/s", "--data-dir"])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let mut addr = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !log.contains("no index yet: the first crawl is retried") {
        assert!(std::time::Instant::now() < deadline, "{log}");
        let Ok(Ok(Some(l))) = tokio::time::timeout(std::time::Duration::from_secs(120), lines.next_line()).await else {
            panic!("the server stopped: {log}")
        };
        if let Some(a) = l.split("serving GraphQL").nth(1).and_then(|_| l.split("addr=").nth(1)) {
            addr = a.split_whitespace().next().map(String::from);
        }
        log.push_str(&l);
        log.push('\n');
    }
    assert!(log.contains(&drift), "the URL it tried: {log}");
    assert!(log.contains("no index yet") && !log.contains("the current index is still served"), "{log}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // Drift comes up at that address: the retry finds it.
    let sim = drift_sim::Sim::new(SimConfig { token: TOKEN.into(), contacts: 200, agents: 5, ..SimConfig::default() });
    let _running = sim.spawn(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    let url = format!("http://{}", addr.expect("the address it serves on"));
    let ready = async {
        loop {
            if let Ok(r) = reqwest::get(format!("{url}/readyz")).await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), ready).await.expect("ready within minutes, not hours");
    child.kill().await.unwrap();
}

/// Credentials Drift refuses are named as such, with what to check, and a crawl that stored
/// nothing speaks of no generation; without credentials, no data directory is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_or_missing_credentials_say_what_to_check() {
    let (_sim, r) = sim(SimConfig { contacts: 100, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, err) = crawl(&r, &data, &["--token", "revoked-token"]).await;
    assert!(!ok);
    assert!(err.contains("refused the credentials") && err.contains("revoked") && err.contains("scopes"), "{err}");
    assert!(!err.contains("generation") && err.contains("nothing was stored"), "{err}");

    let fresh = dir.path().join("never");
    let (ok, err) = crawl(&r, &fresh, &[]).await;
    assert!(!ok && err.contains("no Drift credentials"), "{err}");
    assert!(!fresh.exists(), "crawl without credentials created {}", fresh.display());
    let out = idgraph()
        .args(["serve", "--insecure-no-auth", "--listen", "127.0.0.1:0", "--drift-url", &r.url(), "--data-dir"])
        .arg(&fresh)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no Drift credentials"));
    assert!(!fresh.exists(), "serve without credentials created {}", fresh.display());
}

/// A departed agent keeps its last role and when Drift last confirmed it; a mutation sent with
/// GET is told to use POST; a reassignment to an inactive agent reads in one casing; a dry run
/// lists every move with --all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_things_a_new_user_trips_over() {
    let (_sim, r) = sim(SimConfig { contacts: 400, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, err) = crawl(&r, &data, &["--token", TOKEN]).await;
    assert!(ok, "{err}");
    let http = reqwest::Client::new();
    let leaver = 20002u64;
    http.delete(format!("{}/scim/v2/Users/{leaver}", r.url())).bearer_auth(TOKEN).send().await.unwrap();
    let (ok, err) = crawl(&r, &data, &["--token", TOKEN]).await;
    assert!(ok, "{err}");
    // Dry runs: 50 moves shown by default, every one with --all; the inactive target refused in
    // one casing.
    let d = data.to_str().unwrap();
    let (ok, out, _) = run(&["reassign", "--from", &leaver.to_string(), "--to", "20003", "--data-dir", d]).await;
    assert!(ok && out.contains("--all lists every move"), "{out}");
    let (ok, out, _) =
        run(&["reassign", "--from", &leaver.to_string(), "--to", "20003", "--all", "--data-dir", d]).await;
    let listed = out.lines().filter(|l| l.trim_start().starts_with("contact ")).count();
    let total: usize =
        out.split("dry run: ").nth(1).and_then(|t| t.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(ok && total > 50 && listed == total, "{listed} of {total}: {out}");
    let (ok, _, err) =
        run(&["reassign", "--from", "20003", "--to", &leaver.to_string(), "--force", "--data-dir", d]).await;
    assert!(!ok && err.contains(&format!("target agent {leaver} is DEPARTED, not ACTIVE")), "{err}");

    let srv = serve(&r, &data, &["--read-token", READ, "--admin-token", ADMIN, "--refresh-share", "0"]).await;
    let q = format!(r#"{{ agent(id: "{leaver}") {{ status role verifiedAt }} }}"#);
    let a = common::data(&srv.url, READ, &q).await;
    assert_eq!(a["agent"]["status"], "DEPARTED");
    assert!(a["agent"]["role"].is_string() && a["agent"]["verifiedAt"].is_string(), "the last known values: {a}");
    let csv = http
        .get(format!("{}/export/agents?format=csv", srv.url))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = csv.lines().find(|l| l.starts_with(&format!("{leaver},"))).unwrap();
    assert!(!row.contains(",,,"), "the export keeps them too: {row}");
    let get = http
        .get(format!("{}/graphql", srv.url))
        .query(&[("query", "mutation { reindex { crawling } }")])
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let body = get.text().await.unwrap();
    assert!(body.contains("need POST"), "{body}");

    // The audits as typed objects agree with the JSON documents.
    let d = common::data(
        &srv.url,
        READ,
        "{ auditSummary orgAudit { totalAgents totalContacts unownedContacts rows { agent { id status } contacts goneAt } evidence { generation scimAvailable } } orphanTimeline(points: 10) { bucketSeconds points { orphans departures } } }",
    )
    .await;
    let (json, typed) = (&d["auditSummary"], &d["orgAudit"]);
    assert_eq!(typed["totalAgents"], json["total_agents"]);
    assert_eq!(typed["totalContacts"], json["total_contacts"]);
    assert_eq!(typed["unownedContacts"], json["unowned_contacts"]);
    assert_eq!(typed["rows"][0]["agent"]["id"], leaver.to_string());
    assert_eq!(typed["rows"][0]["agent"]["status"], "DEPARTED");
    assert_eq!(typed["evidence"]["generation"], json["evidence"]["generation"]);
    assert!(d["orphanTimeline"]["points"].as_array().is_some_and(|p| !p.is_empty()), "{d}");
}

/// `serve` stops on SIGTERM (what systemd and container runtimes send) as asked: exit 0, during a
/// crawl too, and the next start serves the same index and resumes the crawl.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_gracefully_on_sigterm() {
    let (_sim, r) = sim(SimConfig { contacts: 3000, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut srv = serve(&r, &data, &["--read-token", READ, "--admin-token", ADMIN, "--rate-limit", "30/s"]).await;
    let before = common::data(&srv.url, READ, "{ indexStatus { generation contacts } }").await;
    common::data(&srv.url, ADMIN, "mutation { reindex { crawling } }").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pid = srv.child.id().unwrap().to_string();
    let started = std::time::Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), srv.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit 0 on SIGTERM, not death by the signal: {status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "within the drain bound");
    assert!(!data.join("idgraph-server.json").exists(), "the address note is removed");
    let srv = serve(&r, &data, &["--read-token", READ, "--admin-token", ADMIN]).await;
    let after = common::data(&srv.url, READ, "{ indexStatus { generation contacts } }").await;
    assert_eq!(after, before, "the same index after the restart");
}

/// The README's audit sample is what the binary prints: the same lines, labels and layout (the
/// org, times and digest differ from run to run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_audit_sample_is_what_the_binary_prints() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let sample: Vec<&str> = readme
        .split("$ idgraph audit --agent ")
        .nth(1)
        .expect("the README shows an agent's audit")
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    let (_sim, r) = sim(SimConfig { contacts: 300, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = crawl(&r, dir.path(), &["--token", TOKEN]).await;
    assert!(ok, "{err}");
    reqwest::Client::new().delete(format!("{}/scim/v2/Users/20002", r.url())).bearer_auth(TOKEN).send().await.unwrap();
    let (ok, err) = crawl(&r, dir.path(), &["--token", TOKEN]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["audit", "--agent", "20002", "--data-dir", dir.path().to_str().unwrap()]).await;
    assert!(ok, "{err}");
    let label = |l: &str| l.trim_start().split("  ").next().unwrap_or("").split(':').next().unwrap_or("").to_string();
    let printed: Vec<String> = out.lines().take(sample.len()).map(label).collect();
    let shown: Vec<String> = sample.iter().map(|l| label(l)).collect();
    assert_eq!(printed, shown, "the README's sample:\n{}\nprinted:\n{out}", sample.join("\n"));
}
