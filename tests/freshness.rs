//! Freshness at work: the refresher brings the index back to Drift after changes nobody was told
//! about, and verifies a leaver's orphans first.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use drift_sim::{Churn, Profile, SimConfig};
use serde_json::Value;

const READ: &str = "read-secret";
const ADMIN: &str = "admin-secret";

fn owner(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The rows of one export, as idgraph streams them.
async fn export(url: &str, table: &str) -> Vec<Value> {
    let text = reqwest::Client::new()
        .get(format!("{url}/export/{table}"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every contact's owner, as idgraph serves it.
async fn served(url: &str) -> BTreeMap<u64, Option<u64>> {
    export(url, "contacts").await.iter().map(|v| (v["contact_id"].as_u64().unwrap(), owner(&v["owner_id"]))).collect()
}

async fn served_orphans(url: &str) -> BTreeSet<u64> {
    export(url, "orphans").await.iter().map(|v| v["contact_id"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_churn_the_index_equals_drift_within_two_cycles_without_a_crawl() {
    let (sim, r) = sim(SimConfig { contacts: 400, agents: 15, profile: Profile::Drift, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(
        &r,
        dir.path(),
        &[
            "--read-token",
            READ,
            "--admin-token",
            ADMIN,
            "--agents-every",
            "2s",
            "--full-every",
            "6h",
            "--refresh-share",
            "0.5",
        ],
    )
    .await;
    let url = srv.url.clone();
    let status = data(&url, READ, "{ indexStatus { generation freshness { projectedCycleSeconds } } }").await;
    let cycle = status["indexStatus"]["freshness"]["projectedCycleSeconds"].as_f64().unwrap();
    assert!(cycle > 0.0 && cycle < 30.0, "projected cycle {cycle}s");
    // The org changes for a while, as in Drift's UI: nobody tells idgraph.
    let churn: Churn = "owner=4/s,delete=1/s,create=1/s,deprovision=30/min".parse().unwrap();
    sim.start_churn(Churn { duration: Some(Duration::from_secs(4)), seed: 3, ..churn });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stopped = Instant::now();
    let c = sim.churn_counts();
    assert!(c.owners_changed > 0 && c.deleted > 0 && c.created > 0 && c.deprovisioned > 0, "{c:?}");
    // Within two projected cycles (and the agents refresh), idgraph equals the org exactly.
    let deadline = stopped + Duration::from_secs_f64(2.0 * cycle + 5.0);
    let truth = || {
        let contacts: BTreeMap<u64, Option<u64>> = sim
            .contacts_json()
            .iter()
            .map(|c| idgraph_model::Contact::from_json(c).unwrap())
            .map(|c| (c.id, c.owner_id))
            .collect();
        let active: BTreeSet<u64> =
            sim.users_json().iter().filter(|u| u["bot"] != true).filter_map(|u| u["id"].as_u64()).collect();
        let bots: BTreeSet<u64> =
            sim.users_json().iter().filter(|u| u["bot"] == true).filter_map(|u| u["id"].as_u64()).collect();
        let orphans: BTreeSet<u64> = contacts
            .iter()
            .filter(|(_, o)| o.is_some_and(|o| !active.contains(&o) && !bots.contains(&o)))
            .map(|(id, _)| *id)
            .collect();
        (contacts, orphans)
    };
    loop {
        let (contacts, orphans) = truth();
        let (got, got_orphans) = (served(&url).await, served_orphans(&url).await);
        if got == contacts && got_orphans == orphans {
            break;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = contacts.keys().filter(|k| !got.contains_key(k)).take(5).collect();
            let extra: Vec<_> = got.keys().filter(|k| !contacts.contains_key(k)).take(5).collect();
            let moved: Vec<_> = contacts.iter().filter(|(k, o)| got.get(k).is_some_and(|g| g != *o)).take(5).collect();
            panic!(
                "not equal {:.1}s after the churn (cycle {cycle:.1}s): missing {missing:?}, extra {extra:?}, moved {moved:?}, orphans {} vs {}",
                stopped.elapsed().as_secs_f64(),
                got_orphans.len(),
                orphans.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let st = data(&url, READ, "{ indexStatus { generation } }").await;
    assert_eq!(st["indexStatus"]["generation"], 1, "no full crawl in between");
    let ch = data(&url, READ, "{ changes(kinds: [CONTACT_REMOVED, CONTACT_MOVED, CONTACT_ADDED], first: 100) { totalCount edges { node { via } } } }").await;
    assert!(
        ch["changes"]["edges"].as_array().unwrap().iter().any(|e| e["node"]["via"] == "REREAD"),
        "the re-reads are in the history: {ch}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leavers_orphans_are_verified_before_other_contacts_are_reread() {
    let (sim, r) = sim(SimConfig { contacts: 600, agents: 10, profile: Profile::Drift, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(
        &r,
        dir.path(),
        &[
            "--read-token",
            READ,
            "--admin-token",
            ADMIN,
            "--agents-every",
            "1h",
            "--rate-limit",
            "40/s",
            "--refresh-share",
            "0.5",
        ],
    )
    .await;
    let url = srv.url.clone();
    let top = data(&url, READ, "{ whoOwnsWhom(first: 1) { edges { node { agent { id } contacts } } } }").await;
    let leaver: u64 = top["whoOwnsWhom"]["edges"][0]["node"]["agent"]["id"].as_str().unwrap().parse().unwrap();
    let owned: BTreeSet<u64> = sim
        .contacts_json()
        .iter()
        .map(|c| idgraph_model::Contact::from_json(c).unwrap())
        .filter(|c| c.owner_id == Some(leaver))
        .map(|c| c.id)
        .collect();
    assert!(owned.len() > 30, "a leaver with many contacts ({})", owned.len());
    reqwest::Client::new()
        .delete(format!("{}/scim/v2/Users/{leaver}", r.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    data(&url, ADMIN, "mutation { reindex(scope: AGENTS) { crawling } }").await;
    let started = Instant::now();
    let mut progress = String::new();
    let (departed, verified_all) = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the leaver's orphans were not all verified in time: {progress}"
        );
        let d = data(&url, READ, &format!("{{ agent(id: \"{leaver}\") {{ status departedAt }} }}")).await;
        if d["agent"]["status"] != "DEPARTED" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let departed = chrono::DateTime::parse_from_rfc3339(d["agent"]["departedAt"].as_str().unwrap()).unwrap();
        let text = reqwest::Client::new()
            .get(format!("{url}/export/contacts"))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let after = |v: &Value| {
            v["verified_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t >= departed)
        };
        let mine: Vec<&Value> = rows.iter().filter(|v| owned.contains(&v["contact_id"].as_u64().unwrap())).collect();
        let leaver_done = mine.iter().all(|v| after(v));
        let others_now =
            rows.iter().filter(|v| !owned.contains(&v["contact_id"].as_u64().unwrap()) && after(v)).count();
        progress = format!(
            "{} of {} of the leaver's contacts verified since {departed}, {others_now} others; first: {:?}",
            mine.iter().filter(|v| after(v)).count(),
            mine.len(),
            mine.first().map(|v| v["verified_at"].clone())
        );
        if leaver_done {
            let others =
                rows.iter().filter(|v| !owned.contains(&v["contact_id"].as_u64().unwrap()) && after(v)).count();
            break (departed, others);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // At most the reads chosen before the refresher saw the departure: the batch in flight when
    // the agents refresh decided it, and one chosen while its write landed (batches of 10 at this
    // budget). Everything after that is the leaver's, 280 contacts.
    assert!(
        verified_all <= 20,
        "{verified_all} other contacts were re-read before the leaver's orphans (departed {departed})"
    );
    let st = data(&url, READ, "{ indexStatus { freshness { unverifiedOrphans } } }").await;
    assert_eq!(st["indexStatus"]["freshness"]["unverifiedOrphans"], 0, "{st}");
    let audit = data(&url, READ, "{ auditReport(all: true) }").await;
    let report = &audit["auditReport"]["report"];
    assert_eq!(report["orphans_not_yet_verified"], 0, "{report}");
    assert!(report["orphans_verified_after_departure"].as_u64().unwrap() >= owned.len() as u64);
}
