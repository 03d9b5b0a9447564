//! simulator -> crawl -> graph -> GraphQL, through `idgraph serve` as a user runs it.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use drift_sim::SimConfig;
use serde_json::{json, Value};

const READ: &str = "read-secret";
const ADMIN: &str = "admin-secret";
const HOOK: &str = "hook-secret";

fn owner_of(v: &Value) -> Option<u64> {
    match &v["ownerId"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovision_to_orphans_to_audit_to_reassignment() {
    let (sim, r) = sim(SimConfig { contacts: 3000, agents: 40, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let srv = serve(
        &r,
        &data_dir,
        &["--read-token", READ, "--admin-token", ADMIN, "--agents-every", "1h", "--full-every", "6h"],
    )
    .await;
    let url = srv.url.clone();

    // Tokens are required.
    let anon = gql(&url, None, "{ indexStatus { generation } }", Value::Null).await;
    assert!(anon["errors"][0]["message"].as_str().unwrap().contains("bearer token"));
    let st =
        data(&url, READ, "{ indexStatus { generation contacts agents accounts lastCrawlAt nextCrawlAt crawling } }")
            .await;
    assert_eq!(st["indexStatus"]["generation"], 1);
    assert_eq!(st["indexStatus"]["contacts"], 3000);
    assert!(st["indexStatus"]["nextCrawlAt"].is_string());

    // Who owns a contact, by email.
    let contacts = sim.contacts_json();
    let c0 = contacts.iter().find(|c| owner_of(c).is_some_and(|o| o > 20000)).unwrap();
    let q = format!(
        r#"{{ contact(email: "{}") {{ id owner {{ id email status }} ownerStatus }} }}"#,
        c0["email"].as_str().unwrap()
    );
    let d = data(&url, READ, &q).await;
    assert_eq!(d["contact"]["owner"]["id"], owner_of(c0).unwrap().to_string());
    assert_eq!(d["contact"]["ownerStatus"], "ACTIVE");

    // The top owner's contacts, page by page.
    let top = data(
        &url,
        READ,
        "{ whoOwnsWhom(first: 3) { totalCount edges { node { agent { id status } contacts accounts } } } }",
    )
    .await;
    let rows = top["whoOwnsWhom"]["edges"].as_array().unwrap();
    let counts: Vec<u64> = rows
        .iter()
        .map(|e| e["node"]["contacts"].as_u64().unwrap() + e["node"]["accounts"].as_u64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "most first: {counts:?}");
    let leaver: u64 = rows[0]["node"]["agent"]["id"].as_str().unwrap().parse().unwrap();
    let owned: BTreeSet<u64> =
        contacts.iter().filter(|c| owner_of(c) == Some(leaver)).map(|c| c["id"].as_u64().unwrap()).collect();
    let mut seen = BTreeSet::new();
    let mut after = Value::Null;
    loop {
        let v = gql(
            &url,
            Some(READ),
            "query($id: ID, $after: String) { agent(id: $id) { ownedContacts(first: 97, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { id } } } } }",
            json!({"id": leaver.to_string(), "after": after}),
        )
        .await;
        let conn = &v["data"]["agent"]["ownedContacts"];
        assert_eq!(conn["totalCount"].as_u64().unwrap() as usize, owned.len());
        for e in conn["edges"].as_array().unwrap() {
            assert!(seen.insert(e["node"]["id"].as_str().unwrap().parse::<u64>().unwrap()), "no repeats");
        }
        if conn["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, owned);

    // Owners never seen as agents are orphans already.
    let unknown = data(
        &url,
        READ,
        "{ orphans(reason: OWNER_UNKNOWN, first: 1) { totalCount edges { node { owner { status } } } } }",
    )
    .await;
    assert!(unknown["orphans"]["totalCount"].as_u64().unwrap() > 0);
    assert_eq!(unknown["orphans"]["edges"][0]["node"]["owner"]["status"], "UNKNOWN");

    // Deprovision the top owner through SCIM; an agents-only refresh shows it.
    let http = reqwest::Client::new();
    let del = http.delete(format!("{}/scim/v2/Users/{leaver}", r.url())).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(del.status(), 204);
    let denied = gql(&url, Some(READ), "mutation { reindex(scope: AGENTS) { generation } }", Value::Null).await;
    assert!(denied["errors"][0]["message"].as_str().unwrap().contains("admin"));
    data(&url, ADMIN, "mutation { reindex(scope: AGENTS) { crawling } }").await;
    wait_idle(&url, READ, "agents refresh").await;
    let q = format!(
        r#"{{ orphans(reason: OWNER_DEPARTED, first: 5) {{ totalCount edges {{ node {{ contact {{ id email }} reason owner {{ id email status }} }} }} }}
            agent(id: "{leaver}") {{ status departedAt email }} }}"#
    );
    let d = data(&url, READ, &q).await;
    assert_eq!(d["orphans"]["totalCount"].as_u64().unwrap() as usize, owned.len());
    assert_eq!(d["orphans"]["edges"][0]["node"]["reason"], "OWNER_DEPARTED");
    assert_eq!(d["orphans"]["edges"][0]["node"]["owner"]["status"], "DEPARTED");
    assert_eq!(d["agent"]["status"], "DEPARTED");
    assert!(d["agent"]["departedAt"].is_string());
    assert!(d["agent"]["email"].is_string(), "a departed agent keeps its name and email");
    let ch =
        data(&url, READ, "{ changes(sinceGeneration: 0, first: 100) { edges { node { kind agentId via } } } }").await;
    assert!(ch["changes"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["node"]["kind"] == "AGENT_DEPARTED" && e["node"]["agentId"].as_str() == Some(&*leaver.to_string())));

    // The audit, from the server, in every format.
    let audit = |fmt: &'static str| {
        let url = url.clone();
        async move {
            let out = idgraph()
                .args(["audit", "--agent", &leaver.to_string(), "--server", &url, "--token", READ, "--format", fmt])
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let csv = audit("csv").await;
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("contact_id,"));
    assert_eq!(lines.count(), owned.len());
    let js: Value = serde_json::from_str(&audit("json").await).unwrap();
    assert_eq!(js["kind"], "agent");
    assert_eq!(js["report"]["contacts_now"].as_u64().unwrap() as usize, owned.len());
    assert_eq!(js["digest"].as_str().unwrap().len(), 64);
    assert!(audit("markdown").await.starts_with("# Offboarding audit"));
    assert!(audit("table").await.contains("DEPARTED"));
    // The data directory is held by the server: the CLI says how to ask it instead.
    let out = idgraph().args(["audit", "--all", "--data-dir"]).arg(&data_dir).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"), "{}", String::from_utf8_lossy(&out.stderr));
    let org = idgraph()
        .args(["audit", "--all", "--server", &url, "--token", READ, "--format", "json"])
        .output()
        .await
        .unwrap();
    let org: Value = serde_json::from_slice(&org.stdout).unwrap();
    assert_eq!(org["report"]["rows"][0]["agent"]["id"], leaver);

    // Reassign: refused to an inactive target, dry run by default, then for real.
    let bad = gql(
        &url,
        Some(ADMIN),
        &format!(r#"mutation {{ reassignContacts(fromAgentId: "{leaver}", toAgentIds: ["{leaver}"]) {{ planned }} }}"#),
        Value::Null,
    )
    .await;
    assert!(bad["errors"].is_array());
    let targets = r#"["20005", "20006"]"#;
    let dry = data(&url, ADMIN, &format!(r#"mutation {{ reassignContacts(fromAgentId: "{leaver}", toAgentIds: {targets}) {{ dryRun planned applied }} }}"#)).await;
    assert_eq!(dry["reassignContacts"]["dryRun"], true);
    assert_eq!(dry["reassignContacts"]["planned"].as_u64().unwrap() as usize, owned.len());
    assert_eq!(dry["reassignContacts"]["applied"], 0);
    let real = data(
        &url,
        ADMIN,
        &format!(r#"mutation {{ reassignContacts(fromAgentId: "{leaver}", toAgentIds: {targets}, dryRun: false) {{ planned jobId }} }}"#),
    )
    .await;
    assert_eq!(real["reassignContacts"]["planned"].as_u64().unwrap() as usize, owned.len());
    let job = real["reassignContacts"]["jobId"].as_str().unwrap().to_string();
    let job = loop {
        let j = data(&url, ADMIN, &format!(r#"{{ reassignment(id: "{job}") {{ state done failed }} }}"#)).await;
        if j["reassignment"]["state"] != "RUNNING" {
            break j["reassignment"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["state"], "DONE");
    assert_eq!(job["done"].as_u64().unwrap() as usize, owned.len());
    assert_eq!(job["failed"], 0);
    let again = data(&url, ADMIN, &format!(r#"mutation {{ reassignContacts(fromAgentId: "{leaver}", toAgentIds: {targets}, dryRun: false) {{ planned applied }} }}"#)).await;
    assert_eq!(again["reassignContacts"]["planned"], 0, "a rerun changes nothing");
    let d = data(&url, READ, "{ orphans(reason: OWNER_DEPARTED) { totalCount } }").await;
    assert_eq!(d["orphans"]["totalCount"], 0);
    assert!(sim.contacts_json().iter().all(|c| owner_of(c) != Some(leaver)), "moved in Drift too");
    let a = data(&url, READ, &format!(r#"{{ offboardingAudit(agentId: "{leaver}") {{ contactsNow contactsAtDeparture reassignedSince {{ contactId }} digest }} }}"#)).await;
    assert_eq!(a["offboardingAudit"]["contactsNow"], 0);
    assert_eq!(a["offboardingAudit"]["contactsAtDeparture"].as_u64().unwrap() as usize, owned.len());
    assert_eq!(a["offboardingAudit"]["reassignedSince"].as_array().unwrap().len(), owned.len());

    // A full reindex: a new generation, and the departed agent is still remembered.
    data(&url, ADMIN, "mutation { reindex { crawling } }").await;
    let st = wait_idle(&url, READ, "full reindex").await;
    assert_eq!(st["generation"], 2);
    let d = data(
        &url,
        READ,
        &format!(r#"{{ agent(id: "{leaver}") {{ status email }} orphans(reason: OWNER_DEPARTED) {{ totalCount }} }}"#),
    )
    .await;
    assert_eq!(d["agent"]["status"], "DEPARTED");
    assert_eq!(d["orphans"]["totalCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_bounded_and_read_once_per_contact() {
    let (_sim, r) = sim(SimConfig { contacts: 300, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(&r, dir.path(), &["--read-token", READ, "--admin-token", ADMIN, "--webhook-token", HOOK]).await;
    let http = reqwest::Client::new();
    let hook = format!("{}/webhooks/drift", srv.url);
    let ev = |to: u64, ts: i64| {
        json!({"type": "contact_updated", "token": HOOK, "orgId": 1,
        "data": {"endUserId": 1000001, "timestamp": ts, "diff": [{"name": "attributes.ownerId", "previous": 1, "updated": to}]}})
    };
    let now = idgraph_graph::now_ms();
    let wrong = http.post(&hook).header("x-verification-token", "nope").json(&ev(20002, now)).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let huge = http.post(&hook).header("x-verification-token", HOOK).body(vec![b' '; 2 << 20]).send().await.unwrap();
    assert_eq!(huge.status(), 413);
    let future =
        http.post(&hook).header("x-verification-token", HOOK).json(&ev(20004, now + 3_600_000)).send().await.unwrap();
    assert_eq!(future.status(), 400, "a delivery dated an hour ahead is refused");
    for body in [ev(20004, now), ev(20004, now), ev(20003, now - 1)] {
        let resp = http.post(&hook).header("x-verification-token", HOOK).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 202);
    }
    for _ in 0..100 {
        let m = http.get(format!("{}/metrics", srv.url)).send().await.unwrap().text().await.unwrap();
        if m.contains("idgraph_webhook_queue_depth 0") && !m.contains("idgraph_webhooks_confirmed_total 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever the deliveries said, idgraph holds what Drift holds (nobody moved the contact).
    let d = data(&srv.url, READ, r#"{ contact(id: "1000001") { owner { id } } }"#).await;
    let drift: Value = http
        .get(format!("{}/contacts/1000001", r.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let drift_owner = idgraph_model::Contact::from_json(&drift["data"]).unwrap().owner_id.unwrap();
    assert_eq!(d["contact"]["owner"]["id"], drift_owner.to_string());
    let metrics = http.get(format!("{}/metrics", srv.url)).send().await.unwrap().text().await.unwrap();
    let confirmed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("idgraph_webhooks_confirmed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!((1..=3).contains(&confirmed), "three deliveries naming one contact: read at most three times: {metrics}");
    assert!(metrics.contains("idgraph_index_contacts 300"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_errors_and_the_server_lives() {
    let (_sim, r) = sim(SimConfig { contacts: 200, agents: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(&r, dir.path(), &["--read-token", READ, "--admin-token", ADMIN]).await;
    let http = reqwest::Client::new();
    let g = format!("{}/graphql", srv.url);
    let deep = format!(
        "{{ {}indexStatus {{ generation }}{} }}",
        "agent(id: \"1\") { ownedContacts { edges { node { owner { ".repeat(6),
        " } } } } }".repeat(6)
    );
    let wide = "{ whoOwnsWhom(first: 100) { edges { node { agent { ownedContacts(first: 100) { edges { node { owner { ownedContacts(first: 100) { totalCount } } } } } } } } } }";
    let nested_json = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for i in 0..300 {
        let resp = match i % 6 {
            0 => {
                http.post(&g)
                    .bearer_auth(READ)
                    .header("content-type", "application/json")
                    .body("{not json")
                    .send()
                    .await
            }
            1 => http.post(&g).bearer_auth(READ).json(&json!({"query": deep})).send().await,
            2 => http.post(&g).bearer_auth(READ).json(&json!({"query": wide})).send().await,
            3 => {
                http.post(&g)
                    .bearer_auth(READ)
                    .header("content-type", "application/json")
                    .body(vec![b'a'; 1 << 20])
                    .send()
                    .await
            }
            4 => {
                http.post(&g)
                    .bearer_auth("wrong")
                    .json(&json!({"query": "{ indexStatus { generation } }"}))
                    .send()
                    .await
            }
            _ => {
                http.post(&g)
                    .bearer_auth(READ)
                    .header("content-type", "application/json")
                    .body(nested_json.clone())
                    .send()
                    .await
            }
        }
        .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(status.is_client_error() || body.contains("\"errors\""), "request {i}: {status} {body:.200}");
    }
    let d = data(&srv.url, READ, "{ indexStatus { contacts } }").await;
    assert_eq!(d["indexStatus"]["contacts"], 200, "still serving");
    // first is bounded (orphans and changes take pages of up to 1,000, the other lists 100).
    let v = gql(&srv.url, Some(READ), "{ orphans(first: 1001) { totalCount } }", Value::Null).await;
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("first"));
    let v = gql(&srv.url, Some(READ), "{ agents(first: 101) { totalCount } }", Value::Null).await;
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("first"));
    // A GET never mutates.
    let v: Value = http
        .get(format!("{g}?query={}", urlencoding::encode("mutation { reindex { generation } }")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["errors"].is_array(), "{v}");
}

#[test]
fn schema_file_is_what_idgraph_schema_prints() {
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    assert_eq!(checked_in, idgraph_graphql::sdl(), "run `cargo run -- schema > schema.graphql`");
    for name in [
        "contact(id: ID, email: String): Contact",
        "agent(id: ID, email: String): Agent",
        "orphans(reason: OrphanReason, departedSince: DateTime, first: Int, after: String): OrphanConnection",
        "whoOwnsWhom(first: Int, after: String): OwnershipConnection",
        "offboardingAudit(agentId: ID, email: String): OffboardingAudit",
        "changes(sinceGeneration: Int, first: Int, after: String, kinds: [ChangeKind!], agentId: ID): ChangeConnection",
        "indexStatus: IndexStatus",
        "reindex(scope: ReindexScope = FULL): IndexStatus",
    ] {
        assert!(checked_in.lines().any(|l| l.trim() == name), "the contract names {name} exactly");
    }
}

/// The hostile corpus: bodies that are not requests, documents that do not parse or validate,
/// limits pushed, tokens missing or wrong, persisted-query tricks, and generated ones (valid
/// documents cut at random, random bytes). Each is `(token, content type, body)`.
fn hostile_corpus(seed: u64) -> Vec<(Option<&'static str>, &'static str, Vec<u8>)> {
    use rand::{Rng, SeedableRng};
    const J: &str = "application/json";
    let q = |s: &str| json!({ "query": s }).to_string().into_bytes();
    let deep = format!("{{ {}id{} }}", "agent(id: \"1\") { history { nodes { ".repeat(6), " } } }".repeat(6));
    let aliases: String = (0..5000).map(|i| format!("a{i}: indexStatus {{ generation }} ")).collect();
    // A fragment bomb (24 fragments, each spreading the next twice) and an alias flood of
    // whole-org audits: refused by their cost before they run.
    let mut bomb = String::from("{ ...F0 }\n");
    for i in 0..24 {
        bomb.push_str(&format!("fragment F{i} on Query {{ ...F{} ...F{} }}\n", i + 1, i + 1));
    }
    bomb.push_str("fragment F24 on Query { __typename }\n");
    let audits: String = (0..1000).map(|i| format!("a{i}: auditReport(all: true) ")).collect();
    let huge_variables = json!({"query": "query($e: [String!]!) { contactsByEmails(emails: $e) { id } }",
        "variables": {"e": vec!["x@y.example"; 5000]}})
    .to_string()
    .into_bytes();
    let mut out: Vec<(Option<&'static str>, &'static str, Vec<u8>)> = vec![
        (Some(READ), J, q(&bomb)),
        (Some(READ), J, q(&format!("{{ {audits} }}"))),
        (Some(READ), J, huge_variables),
        (Some(READ), J, b"{not json".to_vec()),
        (Some(READ), J, Vec::new()),
        (Some(READ), J, b"null".to_vec()),
        (Some(READ), J, b"[{\"query\": \"{ indexStatus { generation } }\"}]".to_vec()),
        (Some(READ), J, b"{\"query\": 5}".to_vec()),
        (Some(READ), J, b"{\"query\": \"{ indexStatus { generation } }\", \"variables\": 7}".to_vec()),
        (Some(READ), J, vec![0xff, 0xfe, 0x00, 0x7b]),
        (Some(READ), J, format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes()),
        (Some(READ), J, vec![b'a'; 1 << 20]),
        (Some(READ), "application/graphql", vec![0xc3, 0x28]),
        (Some(READ), J, q("{ indexStatus {")),
        (Some(READ), J, q(&"{".repeat(50_000))),
        (Some(READ), J, q("{ \"unterminated }")),
        (Some(READ), J, q("{ nope }")),
        (Some(READ), J, q(&deep)),
        (Some(READ), J, q("{ whoOwnsWhom(first: 100) { edges { node { agent { ownedContacts(first: 100) { edges { node { owner { ownedContacts(first: 100) { totalCount } } } } } } } } } }")),
        (Some(READ), J, q("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }")),
        (Some(READ), J, q("{ indexStatus @skip { generation } }")),
        (Some(READ), J, q("{ indexStatus @nope { generation } }")),
        (Some(READ), J, q(&format!("{{ {aliases} }}"))),
        (Some(READ), J, q("{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }")),
        (Some(READ), J, q("query($x: Int) { orphans(first: $y) { totalCount } }")),
        (Some(READ), J, json!({"query": "query($x: Int!) { orphans(first: $x) { totalCount } }", "variables": {"x": "many"}}).to_string().into_bytes()),
        (Some(READ), J, json!({"query": "query A { indexStatus { generation } } query B { indexStatus { generation } }"}).to_string().into_bytes()),
        (Some(READ), J, json!({"query": "{ indexStatus { generation } }", "operationName": "Nope"}).to_string().into_bytes()),
        (Some(READ), J, q("{ orphans(first: -1) { totalCount } }")),
        (Some(READ), J, q("{ orphans(first: 1000000) { totalCount } }")),
        (Some(READ), J, q("{ orphans(after: \"garbage\") { totalCount } }")),
        (Some(READ), J, q("{ contact(id: \"abc\") { id } }")),
        (Some(READ), J, q("{ contact { id } }")),
        (Some(READ), J, json!({"query": "query($e: [String!]!) { contactsByEmails(emails: $e) { id } }", "variables": {"e": vec!["x@y"; 1001]}}).to_string().into_bytes()),
        (Some(READ), J, q("{ changes(after: \"-5\") { totalCount } }")),
        (Some(READ), J, json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "00".repeat(32)}}}).to_string().into_bytes()),
        (Some(READ), J, json!({"query": "{ indexStatus { generation } }", "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab".repeat(32)}}}).to_string().into_bytes()),
        (Some(READ), J, q("mutation { reindex { crawling } }")),
        (Some("wrong"), J, q("{ indexStatus { generation } }")),
        (None, J, q("{ indexStatus { generation } }")),
    ];
    let valid = [
        "{ orphans(first: 5) { totalCount edges { node { contact { id email } owner { id status } } } } }",
        "query($e: String) { contact(email: $e) { id owner { email } } }",
        "{ whoOwnsWhom(first: 3) { edges { node { agent { email } contacts } } } }",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..60 {
        let doc = valid[i % valid.len()];
        // Cut inside the document: never a whole one (it would be a valid request).
        let cut = rng.random_range(1..doc.len() - 1);
        out.push((Some(READ), J, q(&doc[..cut])));
        let noise: Vec<u8> = (0..rng.random_range(1..2000)).map(|_| rng.random()).collect();
        out.push((Some(READ), J, noise));
    }
    out
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_corpus_gets_coded_errors_and_memory_stays_flat() {
    let (_sim, r) = sim(SimConfig { contacts: 2000, agents: 20, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(&r, dir.path(), &["--read-token", READ, "--admin-token", ADMIN, "--refresh-share", "0"]).await;
    let pid = srv.child.id().expect("the server runs");
    let http = reqwest::Client::new();
    let g = format!("{}/graphql", srv.url);
    let corpus = hostile_corpus(11);
    let mut rss = Vec::new();
    for round in 0..6 {
        for (i, (token, ctype, body)) in corpus.iter().enumerate() {
            let mut req = http.post(&g).header("content-type", *ctype).body(body.clone());
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("request {i} of round {round}: {e}"));
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("request {i}: {status} answered with something not JSON: {text:.200}"));
            let errors =
                v["errors"].as_array().unwrap_or_else(|| panic!("request {i}: {status} no errors: {text:.300}"));
            assert!(!errors.is_empty(), "request {i}: {text:.300}");
            for e in errors {
                assert!(e["extensions"]["code"].is_string(), "request {i}: an error without a code: {text:.300}");
                assert!(!e["message"].as_str().unwrap_or("").contains("Error {"), "a debug string: {text:.300}");
            }
        }
        rss.push(rss_kb(pid));
    }
    // The first round fills caches and pools; after it, memory stays where it is.
    let (first, last) = (rss[1], rss[rss.len() - 1]);
    assert!(last <= first + 24 * 1024, "RSS grew from {first} kB to {last} kB over rounds: {rss:?}");
    let d = data(&srv.url, READ, "{ indexStatus { contacts } }").await;
    assert_eq!(d["indexStatus"]["contacts"], 2000, "still serving");
}

/// A server can derive its index again from the store while serving (`--rebuild-every`, as a
/// restart would): a change applied in place survives every rebuild, and readers see the same org
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_index_keeps_every_change_applied_in_place() {
    let (_sim, r) = sim(SimConfig { contacts: 300, agents: 10, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--read-token", READ, "--admin-token", ADMIN, "--webhook-token", HOOK, "--rebuild-every", "1s"];
    let srv = serve(&r, dir.path(), &flags).await;
    let http = reqwest::Client::new();
    let owner = || async {
        let d = data(&srv.url, READ, r#"{ contact(id: "1000001") { owner { id } } indexStatus { contacts } }"#).await;
        assert_eq!(d["indexStatus"]["contacts"], 300, "{d}");
        d["contact"]["owner"]["id"].as_str().and_then(|s| s.parse::<u64>().ok())
    };
    let rebuilds = || async {
        let m = http.get(format!("{}/metrics", srv.url)).bearer_auth(ADMIN).send().await.unwrap().text().await.unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix("idgraph_index_rebuilds_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let before = owner().await;
    let users: Value =
        http.get(format!("{}/users", r.url())).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    let to = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["bot"] != true)
        .filter_map(|u| u["id"].as_u64())
        .find(|id| Some(*id) != before)
        .unwrap();
    // Drift moves the contact, and its webhook tells idgraph, which applies the move in place.
    let moved = http
        .patch(format!("{}/contacts/1000001", r.url()))
        .bearer_auth(TOKEN)
        .json(&json!({"attributes": {"ownerId": to}}))
        .send()
        .await
        .unwrap();
    assert!(moved.status().is_success());
    let ev = json!({"type": "contact_updated", "token": HOOK, "orgId": 1,
        "data": {"endUserId": 1000001, "timestamp": idgraph_graph::now_ms(),
                 "diff": [{"name": "attributes.ownerId", "previous": before, "updated": to}]}});
    let resp = http
        .post(format!("{}/webhooks/drift", srv.url))
        .header("x-verification-token", HOOK)
        .json(&ev)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let mut seen = false;
    for _ in 0..200 {
        if owner().await == Some(to) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the move reaches the index");
    // Two rebuilds after the move: each built from the store, which holds the move.
    let start = rebuilds().await.expect("/metrics counts rebuilds");
    for _ in 0..100 {
        if rebuilds().await.unwrap_or(0) >= start + 2 {
            break;
        }
        assert_eq!(owner().await, Some(to), "a rebuild rolled back a change applied in place");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rebuilds().await.unwrap_or(0) >= start + 2, "the index is rebuilt every second");
    assert_eq!(owner().await, Some(to), "a rebuild rolled back a change applied in place");
}
