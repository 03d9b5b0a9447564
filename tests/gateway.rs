//! Orgs spread over two `serve` processes behind an existing reverse proxy (nginx, from Debian),
//! whose routing `idgraph gateway-config` writes from the processes' configuration files; and
//! idgraph as a GraphQL Federation v2 subgraph in a company's supergraph, served by Hive Gateway
//! (from npm), joining an HR subgraph's `Employee` to the contacts they own in Drift.
//!
//! Needs nginx and the npm packages of tests/browser (`.ci/run` installs both and sets
//! IDGRAPH_GATEWAY_TEST=required, so CI never skips it); elsewhere the test says what is
//! missing and passes without running.

mod common;

use std::time::Duration;

use common::*;
use drift_sim::SimConfig;
use serde_json::Value;

const ADMIN: &str = "gateway-test-admin-token";

fn missing() -> Option<String> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().any(|p| std::path::Path::new(p).exists());
    let gateway =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/.bin/hive-gateway").exists();
    let why = match (nginx, gateway) {
        (true, true) => return None,
        (false, _) => "nginx is not installed (apt-get install nginx)",
        (_, false) => "Hive Gateway is not installed (cd tests/browser && npm ci)",
    };
    if std::env::var("IDGRAPH_GATEWAY_TEST").as_deref() == Ok("required") {
        panic!("IDGRAPH_GATEWAY_TEST=required, but {why}");
    }
    Some(why.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgs_over_two_processes_behind_the_proxy_and_a_federated_join() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Ada is an agent of gamma who owns six contacts; the other orgs are plain.
    let (_g, rg, ada, owned) = org_with_leaver(51, 6).await;
    let mut sims = Vec::new();
    let mut sizes = std::collections::BTreeMap::new();
    for (name, seed, n) in [("acme", 52, 110), ("beta", 53, 120), ("delta", 54, 140)] {
        let (s, r) = sim(SimConfig { seed, contacts: n, agents: 4, ..SimConfig::default() }).await;
        sizes.insert(name, n);
        sims.push((name, s, r));
    }
    sizes.insert("gamma", 300);
    let section = |name: &str| {
        let r = if name == "gamma" { &rg } else { &sims.iter().find(|s| s.0 == name).unwrap().2 };
        org_section(name, r, TOKEN)
    };
    // Process 1 holds acme and beta; process 2 gamma and delta.
    let mut configs = Vec::new();
    let mut servers = Vec::new();
    for (i, orgs) in [["acme", "beta"], ["gamma", "delta"]].iter().enumerate() {
        let config = dir.path().join(format!("p{i}.toml"));
        let top = format!(
            "listen = \"127.0.0.1:{}\"\nadmin_token = \"{ADMIN}\"\ntrusted_proxies = [\"127.0.0.1\"]",
            free_port()
        );
        write_config(&config, &dir.path().join(format!("data{i}")), &top, &orgs.map(section));
        servers.push(serve_config(&config).await);
        configs.push(config);
    }
    for (i, orgs) in [["acme", "beta"], ["gamma", "delta"]].iter().enumerate() {
        for o in orgs {
            wait_org(&servers[i].url, o, ADMIN, "full reindex").await;
        }
    }

    // The proxy's routing, written from the two configuration files, run by nginx.
    let port = free_port();
    let out = idgraph()
        .args(["gateway-config", "--listen", &format!("127.0.0.1:{port}")])
        .args(&configs)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, &out.stdout).unwrap();
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap();
    let _proxy = tokio::process::Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off; master_process off;"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let gw = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{gw}/healthz")).await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every org through the one URL, by path and by header, lands on the process that holds it.
    for (org, n) in &sizes {
        for by_path in [true, false] {
            let (s, v) = org_gql(&gw, Some(org), by_path, ADMIN, "{ indexStatus { org contacts } }").await;
            assert_eq!(s, 200, "{org}: {v}");
            assert_eq!(v["data"]["indexStatus"]["org"], *org, "{v}");
            assert_eq!(v["data"]["indexStatus"]["contacts"], *n, "{org}: {v}");
        }
    }
    // The process that does not hold an org says so: the proxy, not luck, routed the above.
    let (s, _) = org_gql(&servers[0].url, Some("gamma"), true, ADMIN, "{ indexStatus { org } }").await;
    assert_eq!(s, 404);

    // The company's supergraph: HR's Employee joined to idgraph's Agent by email, through the
    // proxy to the process holding gamma.
    let work = dir.path().join("federation");
    std::fs::create_dir_all(&work).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/gateway.mjs");
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(&script)
            .arg(format!("{gw}/orgs/gamma/graphql"))
            .arg(ADMIN)
            .arg(LEAVER)
            .arg(&work)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the federation run finished")
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let answer = &v["answer"];
    assert!(answer.get("errors").is_none(), "{answer}");
    let employees = answer["data"]["employees"].as_array().unwrap();
    let agent = &employees[0]["agent"];
    assert_eq!(agent["id"], ada.to_string(), "{answer}");
    assert_eq!(agent["contactCount"], owned.len(), "{answer}");
    let mut got: Vec<u64> = agent["ownedContacts"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().parse().unwrap())
        .collect();
    got.sort();
    let mut want = owned.clone();
    want.sort();
    assert_eq!(got, want, "the employee's contacts, from Drift through idgraph");
    let supergraph = std::fs::read_to_string(v["supergraph"].as_str().unwrap()).unwrap();
    assert!(supergraph.contains("join__graph"), "a composed supergraph");
}
