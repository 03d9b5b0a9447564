//! Many orgs in one `serve`, as an MSP or an enterprise of several Drift workspaces runs it:
//! one person who was an agent in two orgs, deprovisioned through SCIM in both, found in both by
//! `person(email:)` and `idgraph audit --person`; an auditor of one org refused on the other; an
//! org with a revoked token failing alone; an org added by a reload while another is queried.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use drift_sim::SimConfig;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_across_two_orgs_and_each_org_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let (_a, ra, leaver_a, owned_a) = org_with_leaver(11, 5).await;
    let (_b, rb, leaver_b, owned_b) = org_with_leaver(22, 7).await;
    // A third org whose token Drift refuses: it fails alone.
    let (_c, rc) = sim(SimConfig { seed: 33, contacts: 50, agents: 3, ..SimConfig::default() }).await;
    let config = dir.path().join("idgraph.toml");
    let mut orgs =
        vec![org_section("acme", &ra, TOKEN), org_section("beta", &rb, TOKEN), org_section("broken", &rc, "revoked")];
    write_config(&config, &data_dir, "listen = \"127.0.0.1:0\"", &orgs);
    let admin = token(&data_dir, "ops", "admin", None).await;
    let acme_auditor = token(&data_dir, "acme-auditor", "auditor", Some("acme")).await;

    let server = serve_config(&config).await;
    let url = server.url.clone();
    wait_org(&url, "acme", &admin, "full reindex").await;
    wait_org(&url, "beta", &admin, "full reindex").await;
    // Each org's metrics are its pipeline's: its router shows its own crawl.
    let m = reqwest::Client::new().get(format!("{url}/orgs/acme/metrics")).bearer_auth(&admin).send().await.unwrap();
    let m = m.text().await.unwrap();
    assert!(metric(&m, "idgraph_crawls_succeeded_total") >= 1.0, "{m}");

    // The revoked token: that org says why it fails; the others serve.
    let (_, v) = org_gql(&url, None, false, &admin, "{ orgs { name ready failing contacts } }").await;
    let list = v["data"]["orgs"].as_array().unwrap_or_else(|| panic!("{v}"));
    let by = |n: &str| list.iter().find(|o| o["name"] == n).cloned().unwrap_or_else(|| panic!("{n} in {v}"));
    assert_eq!(by("acme")["ready"], true);
    assert!(by("acme")["failing"].is_null(), "{v}");
    assert_eq!(by("beta")["contacts"], 300);
    let failing = by("broken")["failing"].as_str().unwrap_or_default().to_lowercase();
    assert!(failing.contains("401") || failing.contains("unauthori") || failing.contains("token"), "{v}");

    // The leaver goes: deprovisioned through SCIM in both orgs, then each org refreshes its agents.
    let http = reqwest::Client::new();
    for (r, id) in [(&ra, leaver_a), (&rb, leaver_b)] {
        let s = http.delete(format!("{}/Users/{id}", r.scim_url())).bearer_auth(TOKEN).send().await.unwrap().status();
        assert!(s.is_success(), "{s}");
    }
    for org in ["acme", "beta"] {
        let (s, v) = org_gql(&url, Some(org), true, &admin, "mutation { reindex(scope: AGENTS) { crawling } }").await;
        assert_eq!(s, 200, "{v}");
        wait_org(&url, org, &admin, "agents").await;
    }

    // person(email:) on /graphql, naming no org: both orgs, case-insensitive.
    let q = format!(
        "{{ person(email: \"{}\") {{ email unavailable agents {{ org id status contacts orphans orphanReason owned(first: 100) {{ id }} }} }} }}",
        LEAVER.to_uppercase()
    );
    let (s, v) = org_gql(&url, None, false, &admin, &q).await;
    assert_eq!(s, 200, "{v}");
    let agents = v["data"]["person"]["agents"].as_array().unwrap_or_else(|| panic!("{v}")).clone();
    assert_eq!(agents.len(), 2, "{v}");
    for (org, id, owned) in [("acme", leaver_a, &owned_a), ("beta", leaver_b, &owned_b)] {
        let a = agents.iter().find(|a| a["org"] == org).unwrap_or_else(|| panic!("{org} in {v}"));
        assert_eq!(a["id"], id.to_string());
        assert_eq!(a["orphans"], owned.len(), "{v}");
        assert_ne!(a["status"], "ACTIVE", "{v}");
        let mut got: Vec<u64> =
            a["owned"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().parse().unwrap()).collect();
        got.sort();
        let mut want = owned.clone();
        want.sort();
        assert_eq!(got, want, "{org}'s orphans of the leaver");
    }
    // Offboarding cases open per org, and person groups them: one case in each org.
    let cq = format!("{{ person(email: \"{LEAVER}\") {{ agents {{ org cases {{ id agent {{ id }} }} }} }} }}");
    let mut grouped = Value::Null;
    for _ in 0..100 {
        let (_, v) = org_gql(&url, None, false, &admin, &cq).await;
        let agents = v["data"]["person"]["agents"].as_array().cloned().unwrap_or_default();
        if agents.len() == 2 && agents.iter().all(|a| a["cases"].as_array().is_some_and(|c| c.len() == 1)) {
            grouped = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!grouped.is_null(), "a case in each org, grouped under the person");

    // Without an org, the fields of one org are refused, naming what to do.
    let (_, v) = org_gql(&url, None, false, &admin, "{ indexStatus { contacts } }").await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "ORG_REQUIRED", "{v}");

    // The cross-org leaver audit from the command line.
    let out = idgraph()
        .args(["audit", "--person", LEAVER, "--format", "csv", "--server", &url, "--token", &admin])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().filter(|l| l.starts_with("acme,")).count(), owned_a.len(), "{csv}");
    assert_eq!(csv.lines().filter(|l| l.starts_with("beta,")).count(), owned_b.len(), "{csv}");

    // Org A's auditor: reads A, is refused on B (by path and by header), sees only A in person.
    let orphans = "{ orphans(first: 1) { totalCount } }";
    let (s, v) = org_gql(&url, Some("acme"), true, &acme_auditor, orphans).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["data"]["orphans"]["totalCount"].as_u64().unwrap() >= owned_a.len() as u64, "{v}");
    for by_path in [true, false] {
        let (s, v) = org_gql(&url, Some("beta"), by_path, &acme_auditor, orphans).await;
        assert_eq!(s, 403, "{v}");
        assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN", "{v}");
    }
    let (_, v) = org_gql(&url, None, false, &acme_auditor, &q).await;
    let orgs_seen: Vec<&str> =
        v["data"]["person"]["agents"].as_array().unwrap().iter().filter_map(|a| a["org"].as_str()).collect();
    assert_eq!(orgs_seen, ["acme"], "{v}");
    // The org's routes beside GraphQL: its export (Arrow) and its audit page, by path and header.
    let r = http
        .get(format!("{url}/orgs/acme/export/orphans?format=arrow"))
        .bearer_auth(&acme_auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.apache.arrow.stream");
    let r = http
        .get(format!("{url}/export/orphans"))
        .header("x-idgraph-org", "beta")
        .bearer_auth(&acme_auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "beta's export for acme's auditor");
    let r = http.get(format!("{url}/export/orphans")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 400, "an export naming no org on a server of several");
    let page = http.get(format!("{url}/orgs/acme/audit")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"), "the org's audit page");

    // And the server's own tokens are not an org admin's.
    let (_, v) = org_gql(&url, Some("acme"), true, &acme_auditor, "{ serviceTokens { name } }").await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN", "{v}");
    let (s, _) = http
        .get(format!("{url}/orgs/nowhere/graphql?query=%7B__typename%7D"))
        .bearer_auth(&admin)
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(s, 404);

    // A reload adds an org while another is being queried: no query fails.
    let (_g, rg) = sim(SimConfig { seed: 44, contacts: 120, agents: 4, ..SimConfig::default() }).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let email = _a.contacts_json()[10]["attributes"]["email"]
        .as_str()
        .or(_a.contacts_json()[10]["email"].as_str())
        .unwrap()
        .to_string();
    let load = {
        let (url, admin, failures, done, stop) =
            (url.clone(), admin.clone(), failures.clone(), done.clone(), stop.clone());
        tokio::spawn(async move {
            let q = format!("{{ contact(email: \"{email}\") {{ id owner {{ id }} }} }}");
            while !stop.load(Ordering::Relaxed) {
                let (s, v) = org_gql(&url, Some("acme"), false, &admin, &q).await;
                if s != 200 || v.get("errors").is_some() || v["data"]["contact"].is_null() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    orgs.push(org_section("gamma", &rg, TOKEN));
    write_config(&config, &data_dir, "listen = \"127.0.0.1:0\"", &orgs);
    let (s, v) = org_gql(&url, None, false, &admin, "mutation { reloadConfig }").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["data"]["reloadConfig"].as_str().is_some_and(|r| r.contains("added: gamma")), "{v}");
    wait_org(&url, "gamma", &admin, "full reindex").await;
    // And SIGHUP does the same: nothing changed, nothing restarted.
    let pid = server.child.id().unwrap();
    let _ = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(done.load(Ordering::Relaxed) > 10, "the load ran");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "queries failed during the reload");
    let (_, v) = org_gql(&url, Some("gamma"), true, &admin, "{ indexStatus { org contacts } }").await;
    assert_eq!(v["data"]["indexStatus"]["org"], "gamma", "{v}");
    assert_eq!(v["data"]["indexStatus"]["contacts"], 120, "{v}");
    // Each org's store is its own directory.
    for o in ["acme", "beta", "gamma"] {
        assert!(data_dir.join("orgs").join(o).is_dir(), "{o}'s store");
    }
}
