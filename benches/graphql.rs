//! Server time of the GraphQL requests a client makes, in process (no HTTP, no client): one
//! `contact(email)`, `contactsByEmails` with 1,000 emails, the standard introspection query, and
//! an export of every orphan, on a generated org (`IDGRAPH_BENCH_CONTACTS`, default 100,000).
//! The HTTP round trip beside `/healthz` is measured by `bash benches/client.sh`.
//!
//!     cargo bench --bench graphql

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::Criterion;
use idgraph_graph::{Graph, ShrinkGuard};
use idgraph_graphql::{router, Metrics, NoOperations, ServerConfig};
use idgraph_model::{Contact, Record, User};
use tower::ServiceExt;

// As in the binary: the server's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn org(dir: &std::path::Path, n: u64) -> Graph {
    let g = Graph::open(dir).unwrap();
    let s = g.begin(false).unwrap();
    let agents = 1000u64;
    let users: Vec<Record> = (0..agents)
        .map(|i| {
            Record::User(User {
                id: 1 + i,
                email: Some(format!("agent.{i}@example-org.com")),
                name: Some(format!("Agent {i}")),
                role: None,
                bot: false,
                created_at: 0,
                updated_at: 0,
            })
        })
        .collect();
    g.write(&s, &users, None).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let recs: Vec<Record> = chunk
            .iter()
            .map(|i| {
                Record::Contact(Contact {
                    id: 1_000_000 + i,
                    email: Some(format!("contact.{i}@company{}.example", i % 5000)),
                    name: None,
                    // One contact in five is owned by an id that is no agent: orphans.
                    owner_id: Some(if i % 5 == 0 { 900_000 + i % 50 } else { 1 + i % agents }),
                    external_id: None,
                    created_at: 0,
                    updated_at: 1,
                    extra: Default::default(),
                })
            })
            .collect();
        g.write(&s, &recs, None).unwrap();
    }
    g.commit(s, serde_json::Value::Null, false, ShrinkGuard::off()).unwrap();
    g
}

fn post(body: String) -> Request<Body> {
    Request::post("/graphql").header("content-type", "application/json").body(Body::from(body)).unwrap()
}

fn main() {
    let n: u64 = std::env::var("IDGRAPH_BENCH_CONTACTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(org(dir.path(), n));
    let app = rt.block_on(async {
        router(g.clone(), Arc::new(NoOperations), Arc::new(Metrics::default()), ServerConfig::default())
    });
    let call = |body: String| {
        let app = app.clone();
        rt.block_on(async move {
            let resp = app.oneshot(post(body)).await.unwrap();
            axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()
        })
    };
    let one =
        serde_json::json!({"query": "{ contact(email: \"contact.77@company77.example\") { owner { email status } } }"})
            .to_string();
    let emails: Vec<String> =
        (0..1000u64).map(|i| format!("contact.{}@company{}.example", i * 7, (i * 7) % 5000)).collect();
    let batch = serde_json::json!({
        "query": "query($e: [String!]!) { contactsByEmails(emails: $e) { id owner { email status } } }",
        "variables": {"e": emails}
    })
    .to_string();
    let answer = call(batch.clone());
    assert!(answer.len() > 50_000 && !String::from_utf8_lossy(&answer).contains("errors"), "the batch answers");
    let intro =
        serde_json::json!({"query": include_str!("../crates/graphql/tests/introspection_query.graphql")}).to_string();

    let mut c = Criterion::default().configure_from_args();
    c.bench_function(&format!("contact(email) server time, {n} contacts"), |b| b.iter(|| black_box(call(one.clone()))));
    c.bench_function(&format!("contactsByEmails 1,000 emails server time, {n} contacts"), |b| {
        b.iter(|| black_box(call(batch.clone())))
    });
    c.bench_function("introspection query server time", |b| b.iter(|| black_box(call(intro.clone()))));
    let orphans = g.read().orphan_total();
    c.bench_function(&format!("export {orphans} orphans as NDJSON, in process"), |b| {
        b.iter(|| {
            let e = idgraph_graph::export::Export::new(
                g.snapshot(),
                idgraph_graph::export::Table::Orphans,
                idgraph_graph::export::Format::Ndjson,
            );
            black_box(e.map(|s| s.len()).sum::<usize>())
        })
    });
    c.final_summary();
}
