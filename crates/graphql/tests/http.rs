//! The HTTP surface in process: error codes a client can act on, introspection as standard
//! clients send it, batch lookups, exports from one snapshot, automatic persisted queries.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use idgraph_graph::{Graph, ShrinkGuard};
use idgraph_graphql::{router, ApiTokens, Metrics, NoOperations, ServerConfig};
use idgraph_model::{Contact, Record, Secret, User};
use proptest::strategy::Strategy;
use serde_json::{json, Value};
use tower::ServiceExt;

const READ: &str = "read-token";
const ADMIN: &str = "admin-token";

fn user(id: u64) -> Record {
    Record::User(User {
        id,
        email: Some(format!("agent{id}@example.com")),
        name: Some(format!("Agent {id}")),
        role: None,
        bot: false,
        created_at: 0,
        updated_at: 0,
    })
}

fn contact(id: u64, owner: u64) -> Record {
    Record::Contact(Contact {
        id,
        email: Some(format!("c{id}@example.com")),
        name: None,
        owner_id: Some(owner),
        external_id: None,
        created_at: 0,
        updated_at: 1,
        extra: Default::default(),
    })
}

/// A generation of `contacts` contacts owned by agents 1..=5, and by 99 (never an agent: orphans).
fn crawl(g: &Graph, contacts: u64) {
    let s = g.begin(false).unwrap();
    let mut recs: Vec<Record> = (1..=5).map(user).collect();
    recs.extend((1..=contacts).map(|i| contact(i, if i % 10 == 0 { 99 } else { 1 + i % 5 })));
    g.write(&s, &recs, None).unwrap();
    g.commit(s, Value::Null, false, ShrinkGuard::off()).unwrap();
}

fn app(g: Arc<Graph>) -> axum::Router {
    app_with(g, Arc::new(Metrics::default()))
}

fn app_with(g: Arc<Graph>, metrics: Arc<Metrics>) -> axum::Router {
    let tokens = ApiTokens { read: Some(Secret::new(READ)), admin: Some(Secret::new(ADMIN)) };
    router(g, Arc::new(NoOperations), metrics, ServerConfig { tokens, ..ServerConfig::default() })
}

struct Answer {
    status: StatusCode,
    ctype: String,
    body: Value,
    text: String,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer { status, ctype, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
}

fn post(token: Option<&str>, body: Value) -> Request<Body> {
    let mut b = Request::post("/graphql").header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

async fn query(app: &axum::Router, q: &str) -> Answer {
    send(app, post(Some(READ), json!({ "query": q }))).await
}

fn code(a: &Answer) -> &str {
    a.body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", a.text))
}

#[tokio::test]
async fn every_error_code_is_produced_by_its_case() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Graph::open(dir.path()).unwrap());

    // NOT_READY: no index yet, never zeros.
    {
        let a = app(g.clone());
        let r = query(&a, "{ orphans { totalCount } }").await;
        assert_eq!(code(&r), "NOT_READY", "{}", r.text);
        assert!(r.body["data"]["orphans"].is_null());
        let r = query(&a, "{ indexStatus { ready contacts } }").await;
        assert_eq!(r.body["data"]["indexStatus"], json!({"ready": false, "contacts": null}), "{}", r.text);
    }

    crawl(&g, 100);
    let a = app(g.clone());
    // UNAUTHENTICATED: no token, or one the server does not know (RFC 6750's invalid_token).
    // FORBIDDEN: a role too low (the read token, an auditor, on a mutation).
    let r = send(&a, post(None, json!({"query": "{ indexStatus { generation } }"}))).await;
    assert_eq!((r.status, code(&r)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));
    let r = send(&a, post(Some("nope"), json!({"query": "{ indexStatus { generation } }"}))).await;
    assert_eq!((r.status, code(&r)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));
    let r = query(&a, "mutation { reindex { generation } }").await;
    assert_eq!(code(&r), "FORBIDDEN", "{}", r.text);
    // BAD_USER_INPUT: first over 100 says so (not "too complex"), a bad id, a bad cursor.
    let r = query(&a, "{ orphans(first: 1000000) { totalCount } }").await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{}", r.text);
    assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("first"), "{}", r.text);
    let r = query(&a, "{ contact(id: \"abc\") { id } }").await;
    assert_eq!(code(&r), "BAD_USER_INPUT");
    let r = query(&a, "{ changes(after: \"x\") { totalCount } }").await;
    assert_eq!(code(&r), "BAD_USER_INPUT");
    // Parse and validation failures; HTTP status as GraphQL over HTTP asks.
    let r = query(&a, "{ indexStatus {").await;
    assert_eq!((r.status, code(&r)), (StatusCode::OK, "GRAPHQL_PARSE_FAILED"));
    assert!(r.body.get("data").is_none(), "a request error has no data: {}", r.text);
    let mut req = post(Some(READ), json!({"query": "{ nope }"}));
    req.headers_mut().insert("accept", "application/graphql-response+json".parse().unwrap());
    let r = send(&a, req).await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "GRAPHQL_VALIDATION_FAILED"));
    assert!(r.ctype.starts_with("application/graphql-response+json"), "{}", r.ctype);
    // Hostile nesting of ordinary fields stays refused.
    let deep = format!(
        "{{ {}indexStatus {{ generation }}{} }}",
        "agent(id: \"1\") { history { nodes { ".repeat(5),
        " } } }".repeat(5)
    );
    assert_eq!(code(&query(&a, &deep).await), "GRAPHQL_VALIDATION_FAILED");
    // A body that is not JSON gets a sentence, not a debug string.
    let req = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {READ}"))
        .body(Body::from("{not json"))
        .unwrap();
    let r = send(&a, req).await;
    assert_eq!((r.status, code(&r)), (StatusCode::BAD_REQUEST, "BAD_REQUEST"));
    let msg = r.body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.starts_with("the request body is not a GraphQL request in JSON"), "{msg}");
    assert!(!msg.contains("Error(") && !msg.contains("kind:"), "{msg}");
    // INTERNAL: stored data that fails its check.
    drop(a);
    let seq = g.last_change_seq().unwrap();
    drop(g);
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("history").unwrap().insert((seq + 1).to_be_bytes(), b"\x01garbage".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let g = Arc::new(Graph::open(dir.path()).unwrap());
    let r = query(&app(g), "{ changes(first: 100) { edges { cursor } } }").await;
    assert_eq!(code(&r), "INTERNAL", "{}", r.text);
}

/// graphql-js `getIntrospectionQuery({ descriptions: true, specifiedByUrl: true,
/// directiveIsRepeatable: true, schemaDescription: true, inputValueDeprecation: true })`, as
/// GraphiQL 3 sends it.
const INTROSPECTION: &str = include_str!("introspection_query.graphql");

#[tokio::test]
async fn the_standard_introspection_query_passes_and_hostile_introspection_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Graph::open(dir.path()).unwrap());
    crawl(&g, 10);
    let a = app(g);
    let r = send(&a, post(Some(READ), json!({"query": INTROSPECTION, "operationName": "IntrospectionQuery"}))).await;
    assert!(r.body.get("errors").is_none(), "{}", &r.text[..r.text.len().min(500)]);
    let types = r.body["data"]["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Query"));
    let hostile = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
    let r = query(&a, hostile).await;
    assert_eq!(code(&r), "GRAPHQL_VALIDATION_FAILED", "{}", r.text);
    // An introspection document cannot smuggle ordinary fields past the depth limit.
    let r = query(&a, "{ __schema { queryType { name } } orphans { totalCount } }").await;
    assert!(r.body.get("errors").is_none(), "{}", r.text);
}

#[tokio::test]
async fn batch_lookups_answer_in_input_order_with_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Graph::open(dir.path()).unwrap());
    crawl(&g, 2000);
    let a = app(g);
    let mut emails: Vec<String> = (1..=999).rev().map(|i| format!("c{i}@example.com")).collect();
    emails.insert(500, "nobody@example.com".into());
    let r = send(
        &a,
        post(
            Some(READ),
            json!({"query": "query($e: [String!]!) { contactsByEmails(emails: $e) { id owner { id } } }", "variables": {"e": emails}}),
        ),
    )
    .await;
    let got = r.body["data"]["contactsByEmails"].as_array().unwrap_or_else(|| panic!("{}", r.text));
    assert_eq!(got.len(), 1000);
    assert!(got[500].is_null());
    assert_eq!(got[0]["id"], "999");
    assert_eq!(got[999]["id"], "1");
    let ids: Vec<String> = vec!["7".into(), "123456".into(), "3".into()];
    let r = send(
        &a,
        post(
            Some(READ),
            json!({"query": "query($i: [ID!]!) { contactsByIds(ids: $i) { id } }", "variables": {"i": ids}}),
        ),
    )
    .await;
    assert_eq!(r.body["data"]["contactsByIds"], json!([{"id": "7"}, null, {"id": "3"}]));
    let many: Vec<String> = (0..1001).map(|i| format!("x{i}@e.com")).collect();
    let r = send(
        &a,
        post(
            Some(READ),
            json!({"query": "query($e: [String!]!) { contactsByEmails(emails: $e) { id } }", "variables": {"e": many}}),
        ),
    )
    .await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{}", r.text);
}

#[tokio::test]
async fn persisted_queries_and_connections() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Graph::open(dir.path()).unwrap());
    crawl(&g, 300);
    let a = app(g);
    let q =
        "{ agents(status: [ACTIVE], first: 2) { totalCount edges { cursor node { id } } pageInfo { hasNextPage } } }";
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(q.as_bytes()))
    };
    let ext = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    let r = send(&a, post(Some(READ), json!({"extensions": ext}))).await;
    assert_eq!(code(&r), "PERSISTED_QUERY_NOT_FOUND");
    let r = send(&a, post(Some(READ), json!({"query": q, "extensions": ext}))).await;
    assert_eq!(r.body["data"]["agents"]["totalCount"], 5, "{}", r.text);
    let r2 = send(&a, post(Some(READ), json!({"extensions": ext}))).await;
    assert_eq!(r2.body, r.body, "the hash alone now runs the query");
    // Every list pages: orphan accounts, search, history.
    let r =
        query(&a, "{ searchContacts(prefix: \"c1\", first: 5) { totalCount edges { cursor node { email } } } }").await;
    // c1, c10..c19, c100..c199
    assert_eq!(r.body["data"]["searchContacts"]["totalCount"], 1 + 10 + 100, "{}", r.text);
    let cursor = r.body["data"]["searchContacts"]["edges"][4]["cursor"].as_str().unwrap().to_string();
    let r2 = send(&a, post(Some(READ), json!({"query": "query($a: String) { searchContacts(prefix: \"c1\", first: 5, after: $a) { edges { node { email } } } }", "variables": {"a": cursor}}))).await;
    let first: Vec<&Value> = r.body["data"]["searchContacts"]["edges"].as_array().unwrap().iter().collect();
    let next: Vec<&Value> = r2.body["data"]["searchContacts"]["edges"].as_array().unwrap().iter().collect();
    assert_eq!(next.len(), 5);
    assert!(first.iter().all(|f| !next.contains(f)), "pages do not overlap");
}

#[tokio::test]
async fn exports_stream_what_graphql_answers_from_one_generation() {
    use idgraph_graph::export::{Export, Format, Table};
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Graph::open(dir.path()).unwrap());
    crawl(&g, 5000);
    let a = app(g.clone());
    // The orphans export equals the orphans GraphQL pages through.
    let mut via_graphql = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let r = send(&a, post(Some(READ), json!({"query": "query($a: String) { orphans(first: 100, after: $a) { pageInfo { hasNextPage endCursor } edges { node { contact { id email } owner { id } reason } } } }", "variables": {"a": after}}))).await;
        let o = &r.body["data"]["orphans"];
        for e in o["edges"].as_array().unwrap() {
            let n = &e["node"];
            via_graphql.push((
                n["contact"]["id"].as_str().unwrap().parse::<u64>().unwrap(),
                n["owner"]["id"].as_str().unwrap().to_string(),
                n["reason"].as_str().unwrap().to_string(),
            ));
        }
        if o["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = o["pageInfo"]["endCursor"].as_str().map(String::from);
    }
    assert_eq!(via_graphql.len(), 500);
    let req = Request::get("/export/orphans?format=ndjson")
        .header("authorization", format!("Bearer {READ}"))
        .body(Body::empty())
        .unwrap();
    let r = send(&a, req).await;
    assert_eq!(r.status, StatusCode::OK);
    let exported: Vec<(u64, String, String)> = r
        .text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["contact_id"].as_u64().unwrap(), v["owner_id"].to_string(), v["reason"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(exported, via_graphql);
    let req = Request::get("/export/contacts")
        .header("authorization", format!("Bearer {READ}"))
        .header("accept", "text/csv")
        .body(Body::empty())
        .unwrap();
    let r = send(&a, req).await;
    assert!(r.text.starts_with("contact_id,contact_email,"), "{}", &r.text[..80]);
    assert_eq!(r.text.lines().count(), 5001);
    let req = Request::get("/export/orphans").body(Body::empty()).unwrap();
    assert_eq!(send(&a, req).await.status, StatusCode::UNAUTHORIZED);
    for (table, columns) in [("agents", 13), ("accounts", 6), ("contacts", 9), ("orphans", 10)] {
        let req = Request::get(format!("/export/{table}"))
            .header("authorization", format!("Bearer {READ}"))
            .body(Body::empty())
            .unwrap();
        let r = send(&a, req).await;
        assert_eq!(r.status, StatusCode::OK, "{table}");
        for line in r.text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{table}: {e}: {line}"));
            assert_eq!(v.as_object().unwrap().len(), columns, "{table}: {line}");
        }
        let req = Request::get(format!("/export/{table}?format=csv"))
            .header("authorization", format!("Bearer {READ}"))
            .body(Body::empty())
            .unwrap();
        let r = send(&a, req).await;
        let header = r.text.lines().next().unwrap().split(',').count();
        assert_eq!(header, columns, "{table} CSV header");
        assert!(r.text.lines().skip(1).all(|l| l.split(',').count() >= columns), "{table} CSV rows");
    }
    let resp = a.clone().oneshot(Request::get("/favicon.ico").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GraphiQL's favicon request is no 404");

    // An export running across a reindex returns one generation's rows.
    let mut export = Export::new(g.snapshot(), Table::Contacts, Format::Ndjson);
    let first_chunk = export.next().unwrap();
    crawl(&g, 3000);
    assert_eq!(g.read().contact_count(), 3000);
    let rest: String = export.collect();
    assert_eq!(first_chunk.lines().count() + rest.lines().count(), 5000, "the old generation, whole");
}

/// An org with every kind of value a planned answer writes: a departed owner (agent 5 is gone in
/// the second crawl), an unknown one (99), no owner, no email, emails and names that need
/// escaping or normalising, external ids.
fn varied_org(g: &Graph) {
    let contacts: Vec<Record> = (1..=60u64)
        .map(|i| {
            let mut c = match contact(i, 0) {
                Record::Contact(c) => c,
                _ => unreachable!(),
            };
            c.email = match i % 7 {
                0 => None,
                1 => Some(format!("Q\"uo\\te{i}@Example.COM")),
                2 => Some(format!("ünï{i}@example.com")),
                _ => c.email,
            };
            c.name = (i % 3 == 0).then(|| format!("Name \"{i}\"\n\t\u{1}é"));
            c.owner_id = match (i % 11, i % 10) {
                (0, _) => None,
                (_, 0) => Some(99),
                _ => Some(1 + i % 5),
            };
            c.external_id = (i % 4 == 0).then(|| format!("ext-{i}"));
            c.updated_at = i as i64 * 1_000_003;
            Record::Contact(c)
        })
        .collect();
    for users in [5u64, 4] {
        let s = g.begin(false).unwrap();
        let mut recs: Vec<Record> = (1..=users).map(user).collect();
        recs.extend(contacts.iter().cloned());
        g.write(&s, &recs, None).unwrap();
        g.commit(s, Value::Null, false, ShrinkGuard::off()).unwrap();
    }
}

const CONTACT_FIELDS: [&str; 10] =
    ["__typename", "id", "email", "name", "externalId", "ownerId", "updatedAt", "verifiedAt", "ownerStatus", "owner"];
const AGENT_FIELDS: [&str; 12] = [
    "__typename",
    "id",
    "email",
    "name",
    "status",
    "role",
    "firstSeenAt",
    "deactivatedAt",
    "departedAt",
    "inRest",
    "inScim",
    "verifiedAt",
];

/// A selection of `fields`, some aliased.
fn selection(fields: &[&str], aliases: &[bool], owner: &str) -> String {
    let mut out = String::from("{");
    for (i, f) in fields.iter().enumerate() {
        if aliases.get(i).copied().unwrap_or(false) {
            out.push_str(&format!(" a{i}: "));
        } else {
            out.push(' ');
        }
        out.push_str(f);
        if *f == "owner" {
            out.push(' ');
            out.push_str(owner);
        }
    }
    out.push_str(" }");
    out
}

/// Sends the same request to a fresh server twice: the first answer is async-graphql's, the
/// second a planned one when the document has a plan. Returns both bodies and how many were planned.
async fn twice(g: &Arc<Graph>, body: &Value) -> (String, String, u64) {
    let metrics = Arc::new(Metrics::default());
    let a = app_with(g.clone(), metrics.clone());
    let first = send(&a, post(Some(READ), body.clone())).await;
    let second = send(&a, post(Some(READ), body.clone())).await;
    (first.text, second.text, metrics.graphql_planned.load(std::sync::atomic::Ordering::Relaxed))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

    /// A planned answer is byte for byte async-graphql's, for any selection of the planned fields,
    /// aliases, lookups by literal or variable, known and unknown keys.
    #[test]
    fn planned_answers_equal_async_graphqls(
        lookup in 0usize..4,
        by_variable in proptest::bool::ANY,
        fields in proptest::sample::subsequence(CONTACT_FIELDS.to_vec(), 1..=CONTACT_FIELDS.len()).prop_shuffle(),
        owner in proptest::sample::subsequence(AGENT_FIELDS.to_vec(), 1..=AGENT_FIELDS.len()).prop_shuffle(),
        aliases in proptest::collection::vec(proptest::bool::ANY, 10),
        keys in proptest::collection::vec(0u64..70, 1..12),
    ) {
        use proptest::prelude::*;
        static ORG: std::sync::OnceLock<(tempfile::TempDir, Arc<Graph>)> = std::sync::OnceLock::new();
        let (_, g) = ORG.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let g = Arc::new(Graph::open(dir.path()).unwrap());
            varied_org(&g);
            (dir, g)
        });
        let email = |i: u64| match i % 7 {
            1 => format!("q\"uo\\te{i}@example.com"),
            2 => format!("ÜNÏ{i}@example.com"),
            _ => format!("c{i}@example.com"),
        };
        let sel = selection(&fields, &aliases, &selection(&owner, &aliases[5..], ""));
        let (field, arg, ty, keys): (&str, &str, &str, Vec<String>) = match lookup {
            0 => ("contact", "email", "String!", vec![email(keys[0])]),
            1 => ("contact", "id", "ID", vec![keys[0].to_string()]),
            2 => ("contactsByEmails", "emails", "[String!]!", keys.iter().map(|k| email(*k)).collect()),
            _ => ("contactsByIds", "ids", "[ID!]", keys.iter().map(|k| k.to_string()).collect()),
        };
        let value = if lookup < 2 { json!(keys[0]) } else { json!(keys) };
        let body = if by_variable {
            json!({"query": format!("query Q($k: {ty}) {{ r: {field}({arg}: $k) {sel} }}"), "variables": {"k": value}})
        } else {
            json!({"query": format!("{{ {field}({arg}: {value}) {sel} }}")})
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (first, second, planned) = rt.block_on(twice(g, &body));
        prop_assert!(!first.contains("\"errors\""), "{first}");
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(planned, 1, "the second request was planned: {}", body);
    }
}

#[tokio::test]
async fn documents_outside_the_plan_take_the_ordinary_way_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Graph::open(dir.path()).unwrap());
    varied_org(&g);
    let g = &g;
    let emails: Vec<String> = (0..1001).map(|i| format!("c{i}@example.com")).collect();
    let q = |q: &str, vars: Value| json!({"query": q, "variables": vars});
    let cases = [
        // Shapes a plan does not take: fragments, directives, a repeated key, other fields.
        (q("{ contact(id: \"3\") { ...F } } fragment F on Contact { id email }", json!({})), false),
        (q("query($x: Boolean!) { contact(id: \"3\") { id @include(if: $x) email } }", json!({"x": true})), false),
        (q("{ contact(id: \"3\") { id id email } }", json!({})), false),
        (q("{ contact(id: \"3\") { id samePersonAgent { id } owner { contactCount } } }", json!({})), false),
        (q("{ contact(id: \"3\") { id } agent(id: \"1\") { id } }", json!({})), false),
        // Requests the plan hands back: too many, not a number, null, too complex.
        (q("query($e: [String!]!) { contactsByEmails(emails: $e) { id } }", json!({"e": emails})), true),
        (q("query($i: [ID!]!) { contactsByIds(ids: $i) { id } }", json!({"i": ["1", "abc"]})), true),
        (q("query($e: String) { contact(email: $e) { id } }", json!({"e": null})), true),
        (
            q(
                "query($e: [String!]!) { a: contactsByEmails(emails: $e) { id } contactsByEmails(emails: $e) { __typename id email name externalId ownerId updatedAt verifiedAt ownerStatus owner { id email name status role firstSeenAt deactivatedAt departedAt inRest inScim verifiedAt } } }",
                json!({"e": emails[..1000]}),
            ),
            true,
        ),
    ];
    for (body, error) in cases {
        let (first, second, planned) = twice(g, &body).await;
        let short = |s: &str| s.chars().take(300).collect::<String>();
        let (b, a) = (short(&body.to_string()), short(&second));
        assert_eq!(planned, 0, "{b}: {a}");
        assert!(first == second, "{b}");
        let v: Value = serde_json::from_str(&second).unwrap();
        assert_eq!(v.get("errors").is_some(), error, "{b}: {a}");
        if error {
            assert!(v["errors"][0]["extensions"]["code"].is_string(), "{second}");
        }
    }
    // A planned document whose next request is one the plan hands back: the ordinary error.
    let metrics = Arc::new(Metrics::default());
    let a = app_with(g.clone(), metrics.clone());
    let doc = "query($e: [String!]!) { contactsByEmails(emails: $e) { id owner { status } } }";
    let ok = send(&a, post(Some(READ), q(doc, json!({"e": ["c3@example.com"]})))).await;
    assert!(ok.body["data"]["contactsByEmails"][0]["id"] == "3", "{}", ok.text);
    let r = send(&a, post(Some(READ), q(doc, json!({"e": emails})))).await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{}", r.text);
    let r = send(&a, post(Some(READ), q(doc, json!({"e": ["c4@example.com", "nobody@x"]})))).await;
    assert_eq!(r.body["data"]["contactsByEmails"][1], Value::Null, "{}", r.text);
    assert_eq!(metrics.graphql_planned.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_not_cut_short_by_the_queries_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Graph::open(&dir.path().join("data")).unwrap());
    crawl(&g, 5_000);
    let tokens = ApiTokens { read: Some(Secret::new(READ)), admin: Some(Secret::new(ADMIN)) };
    // Queries time out after a millisecond here; a backup takes longer than that.
    let cfg = ServerConfig {
        tokens,
        request_timeout: std::time::Duration::from_millis(1),
        backup_dir: Some(dir.path().to_path_buf()),
        ..ServerConfig::default()
    };
    let app = router(g.clone(), Arc::new(NoOperations), Arc::new(Metrics::default()), cfg);
    let req = Request::post("/admin/backup")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(json!({ "to": "backup" }).to_string()))
        .unwrap();
    let a = send(&app, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.body["message"].as_str().unwrap_or("").contains("passed its check"), "{}", a.text);
}
