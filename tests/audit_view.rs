//! The audit view as an auditor sees it: headless Chromium opens `/audit` (signing in with a read
//! token), sees the charts and the numbers of `auditReport`, watches them change when an agent is
//! deprovisioned, clicks the most exposed agent and sees its graph, downloads the Markdown; then
//! opens the HTML reports `idgraph audit --format html` wrote, from files, with the network cut.
//!
//! Needs Chromium and `npm ci` in tests/browser, like the GraphiQL test (`.ci/run` installs both
//! and sets IDGRAPH_BROWSER_TEST=required).

mod common;

use std::path::Path;

use common::*;
use drift_sim::SimConfig;
use serde_json::{json, Value};

const READ: &str = "read-secret";
const ADMIN: &str = "admin-secret";

fn browser_ready() -> Option<String> {
    let required = std::env::var("IDGRAPH_BROWSER_TEST").is_ok_and(|v| v == "required");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if Path::new(&chromium).exists() && dir.join("node_modules/playwright-core").exists() {
        return Some(chromium);
    }
    assert!(!required, "Chromium or playwright-core is missing: `apt-get install chromium`, `npm ci` in tests/browser");
    eprintln!("skipping: no Chromium or playwright-core here (CI requires them)");
    None
}

/// A number as the page prints it ("1,082").
fn shown(v: &Value) -> String {
    let n = v.as_u64().unwrap_or_else(|| panic!("a count: {v}"));
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The org's numbers as the page's cards must show them.
fn org_cards(report: &Value) -> Value {
    json!({
        "total-contacts": shown(&report["total_contacts"]),
        "total-accounts": shown(&report["total_accounts"]),
        "unowned-contacts": shown(&report["unowned_contacts"]),
        "total-agents": shown(&report["total_agents"]),
    })
}

fn assert_org_cards(seen: &Value, report: &Value, what: &str) {
    for (k, v) in org_cards(report).as_object().unwrap() {
        assert_eq!(&seen["cards"][k], v, "{what}: card {k}");
    }
    let rows = report["rows"].as_array().unwrap().len();
    assert_eq!(seen["bars"].as_u64().unwrap() as usize, rows.min(25), "{what}: one bar per gone owner, top 25");
    assert!(seen["barInk"].as_u64().unwrap() > 1000, "{what}: the bar chart is drawn");
    assert!(seen["timelineInk"].as_u64().unwrap() > 1000, "{what}: the timeline is drawn");
}

/// How many nodes an agent's page draws, from the numbers on its cards: each contact and account
/// while they are few; one node per status when contacts are many, and 30 accounts and one node for
/// the rest when accounts are.
fn expected_nodes(seen: &Value) -> u64 {
    let card = |k: &str| seen["cards"][k].as_str().unwrap().replace(',', "").parse::<u64>().unwrap();
    let (contacts, accounts, verified) = (card("contacts-now"), card("accounts-now"), card("verified-after"));
    let contact_nodes =
        if contacts <= 80 { contacts } else { u64::from(verified > 0) + u64::from(contacts > verified) };
    1 + contact_nodes + if accounts <= 40 { accounts } else { 31 }
}

async fn report_file(url: &str, args: &[&str], out: &Path) {
    let o = idgraph()
        .args(["audit", "--format", "html", "--server", url, "--token", READ])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(out, &o.stdout).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_view_shows_what_audit_report_says() {
    let Some(chromium) = browser_ready() else { return };
    let (sim, r) = sim(SimConfig { contacts: 1500, agents: 30, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(
        &r,
        &dir.path().join("data"),
        &["--read-token", READ, "--admin-token", ADMIN, "--agents-every", "1h", "--full-every", "6h"],
    )
    .await;
    let url = srv.url.clone();

    // Three agents leave; an agents refresh sees it.
    let http = reqwest::Client::new();
    // Agents who own contacts, most first (owner ids under 20000 are never agents).
    let mut owned = std::collections::BTreeMap::<u64, usize>::new();
    for c in sim.contacts_json() {
        if let Some(o) = c["ownerId"].as_u64().filter(|o| *o > 20000) {
            *owned.entry(o).or_default() += 1;
        }
    }
    let mut agents: Vec<(usize, u64)> = owned.into_iter().map(|(a, n)| (n, a)).collect();
    agents.sort_unstable_by(|x, y| y.cmp(x));
    let agents: Vec<u64> = agents.into_iter().map(|(_, a)| a).collect();
    for id in &agents[..3] {
        let del = http.delete(format!("{}/scim/v2/Users/{id}", r.url())).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(del.status(), 204);
    }
    data(&url, ADMIN, "mutation { reindex(scope: AGENTS) { crawling } }").await;
    wait_idle(&url, READ, "agents refresh").await;
    let before = data(&url, READ, "{ auditReport(all: true) auditTimeline }").await;

    let files = tempfile::tempdir().unwrap();
    let (org_html, agent_html) = (files.path().join("org.html"), files.path().join("agent.html"));
    report_file(&url, &["--all"], &org_html).await;
    let top = before["auditReport"]["report"]["rows"][0]["agent"]["id"].as_u64().unwrap().to_string();
    report_file(&url, &["--agent", &top], &agent_html).await;
    assert!(std::fs::metadata(&org_html).unwrap().len() < 5_000_000);

    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = tokio::process::Command::new("node")
        .arg(browser_dir.join("audit.mjs"))
        .args([&url, org_html.to_str().unwrap(), agent_html.to_str().unwrap(), READ])
        .arg(std::env::temp_dir())
        .env("CHROMIUM", &chromium)
        .env("LIVE_DELETE_URL", format!("{}/scim/v2/Users/{}", r.url(), agents[3]))
        .env("LIVE_SIM_TOKEN", TOKEN)
        .env("LIVE_ADMIN_TOKEN", ADMIN)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["ok"], true, "{}", v["error"]);
    assert_eq!(v["external"], json!([]), "every request stays on the server");
    assert!(v["requests"].as_array().unwrap().iter().all(|u| u.as_str().unwrap().starts_with(&url)));

    // The page said what auditReport said, then followed the departure.
    assert_org_cards(&v["live"]["before"], &before["auditReport"]["report"], "the page");
    assert_eq!(v["live"]["before"]["digest"].as_str().unwrap().len(), "sha256:".len() + 64, "the digest is shown");
    let after = data(&url, READ, "{ auditReport(all: true) }").await;
    assert_ne!(after["auditReport"]["report"]["total_agents"], before["auditReport"]["report"]["total_agents"]);
    assert_org_cards(&v["live"]["after"], &after["auditReport"]["report"], "the page after the change");

    // The download (taken before the change) is the CLI's Markdown.
    let md = v["markdown"].as_str().unwrap();
    assert!(md.starts_with("# Org offboarding audit"), "{md}");
    for row in before["auditReport"]["report"]["rows"].as_array().unwrap() {
        assert!(md.contains(&format!("| {} | {} |", row["agent"]["id"], row["agent"]["email"].as_str().unwrap_or(""))));
    }

    // Without Chart.js and Cytoscape.js the page draws plain bars, the same numbers.
    assert_eq!(v["fallback"]["charts"], "undefined undefined");
    let now = &after["auditReport"]["report"];
    for (k, want) in org_cards(now).as_object().unwrap() {
        assert_eq!(&v["fallback"]["cards"][k], want, "fallback card {k}");
    }
    assert_eq!(v["fallback"]["bars"].as_u64().unwrap() as usize, now["rows"].as_array().unwrap().len().min(25));

    // The agent page: its numbers and its graph.
    let clicked = v["clickedAgent"].as_str().unwrap();
    assert_eq!(v["agentHash"], format!("#/agent/{clicked}"));
    let q = json!({"a": clicked});
    let a = gql(&url, Some(READ), "query($a: String) { auditReport(agent: $a) }", q).await;
    let a = &a["data"]["auditReport"]["report"];
    assert_eq!(v["agent"]["cards"]["contacts-now"], shown(&a["contacts_now"]));
    assert_eq!(v["agent"]["cards"]["accounts-now"], shown(&a["accounts_now"]));
    assert_eq!(v["agent"]["nodes"], expected_nodes(&v["agent"]), "agent, contacts and accounts: {}", v["agent"]);
    assert_eq!(v["agent"]["graphDrawn"], true);

    // The report files, opened with the network cut: same numbers, drawn.
    assert_eq!(v["report"]["network"], json!([]));
    assert_org_cards(&v["report"], &before["auditReport"]["report"], "the HTML report");
    assert!(v["report"]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(v["agentReport"]["network"], json!([]));
    let t = gql(&url, Some(READ), "query($a: String) { auditReport(agent: $a) }", json!({"a": top})).await;
    let t = &t["data"]["auditReport"]["report"];
    assert_eq!(v["agentReport"]["cards"]["contacts-now"], shown(&t["contacts_now"]));
    assert_eq!(v["agentReport"]["nodes"], expected_nodes(&v["agentReport"]));
}
