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

    // The orphans export from the data directory has the audit CSV's columns.
    let out =
        idgraph().args(["export", "orphans", "--format", "csv", "--data-dir"]).arg(dir.path()).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "contact_id,contact_email,contact_name,owner_id,owner_email,owner_name,owner_status,reason,owner_gone_at"
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
