//! The production files are real: the systemd unit passes `systemd-analyze verify` with the
//! binary built here, without a warning, and runs `serve` as the docs say.

use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        assert!(
            std::env::var("IDGRAPH_DEPLOY_TEST").as_deref() != Ok("required"),
            "systemd-analyze is required in CI (Debian's systemd package)"
        );
        eprintln!("skipped: systemd-analyze is not installed here (Debian's systemd package has it)");
        return;
    }
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/idgraph.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/idgraph --log-format json serve"), "{unit}");
    for key in [
        "DynamicUser=yes",
        "StateDirectory=idgraph",
        "LoadCredential=drift-token:",
        "UMask=0077",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(key), "the unit has {key}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idgraph.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/idgraph", env!("CARGO_BIN_EXE_idgraph"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
