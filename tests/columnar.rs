//! Columnar exports read back by independent readers: each export (contacts, orphans, agents,
//! accounts) as Arrow IPC is read by pyarrow and as Parquet by DuckDB's `read_parquet` and by
//! pyarrow, and equals the NDJSON export row for row (typed: ids as integers, times as UTC
//! timestamps, statuses as dictionaries); `columns=` selects in every format; the batch lookup
//! answers keys in the order given, a key with no contact as the key alone.
//!
//! Needs Python with pyarrow and duckdb (`.ci/run` installs them and sets
//! IDGRAPH_COLUMNAR_TEST=required).

mod common;

use std::path::Path;

use common::*;
use drift_sim::SimConfig;
use serde_json::{json, Value};

const ADMIN: &str = "columnar-admin";

fn python_ready() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import pyarrow, duckdb"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether pyarrow and DuckDB are here to read the exports; where they are required (CI), their
/// absence fails the test rather than skipping it.
fn readers_here() -> bool {
    let required = std::env::var("IDGRAPH_COLUMNAR_TEST").is_ok_and(|v| v == "required");
    if !python_ready() {
        assert!(!required, "pyarrow and duckdb are missing: pip install pyarrow duckdb");
        eprintln!("skipping: no pyarrow or duckdb here (CI installs them)");
        return false;
    }
    true
}

/// Reads a file with Python and prints its rows as JSON (times as RFC 3339 seconds, like the
/// NDJSON export), plus the column types.
const READER: &str = r#"
import json, sys, datetime
import pyarrow as pa, pyarrow.ipc as ipc, pyarrow.parquet as pq, duckdb
kind, path = sys.argv[1], sys.argv[2]
if kind == "arrow":
    t = ipc.open_stream(open(path, "rb")).read_all()
elif kind == "url":
    # As the README reads a large export: pyarrow reads the response as it arrives.
    import os, urllib.request
    req = urllib.request.Request(path, headers={"authorization": "Bearer " + os.environ["TOKEN"]})
    with urllib.request.urlopen(req) as r:
        t = ipc.open_stream(r).read_all()
elif kind == "parquet":
    t = pq.read_table(path)
else:
    t = duckdb.sql(f"select * from read_parquet('{path}')").arrow()
    if hasattr(t, "read_all"):
        t = t.read_all()
def cell(v):
    if isinstance(v, datetime.datetime):
        return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return v
rows = [{k: cell(v) for k, v in r.items()} for r in t.to_pylist()]
types = {f.name: str(f.type) for f in t.schema}
print(json.dumps({"rows": rows, "types": types}))
"#;

fn read(kind: &str, path: &Path) -> Value {
    let out = std::process::Command::new("python3")
        .args(["-c", READER, kind])
        .arg(path)
        .env("TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{kind} {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new().get(url).bearer_auth(ADMIN).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn ndjson(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_export_in_every_format_reads_back_row_for_row() {
    if !readers_here() {
        return;
    }
    let (_sim, r) = sim(SimConfig { contacts: 3000, agents: 20, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing re-reads or refreshes by itself: every format is read from the same index.
    let srv = serve(&r, dir.path(), &["--admin-token", ADMIN, "--refresh-share", "0", "--agents-every", "1h"]).await;
    // Some orphans: an agent deprovisioned, seen by an agents refresh.
    reqwest::Client::new().delete(format!("{}/scim/v2/Users/20003", r.url())).bearer_auth(TOKEN).send().await.unwrap();
    gql(&srv.url, Some(ADMIN), "mutation { reindex(scope: AGENTS) { generation } }", Value::Null).await;
    wait_idle(&srv.url, ADMIN, "agents").await;
    let work = tempfile::tempdir().unwrap();
    for table in ["contacts", "orphans", "agents", "accounts"] {
        let (s, body) = get(&format!("{}/export/{table}", srv.url)).await;
        assert_eq!(s, 200);
        let want = ndjson(&body);
        assert!(!want.is_empty(), "{table} has rows");
        for (kind, format) in [("arrow", "arrow"), ("parquet", "parquet"), ("duckdb", "parquet")] {
            let (s, body) = get(&format!("{}/export/{table}?format={format}", srv.url)).await;
            assert_eq!(s, 200, "{table} {format}");
            let path = work.path().join(format!("{table}.{format}"));
            std::fs::write(&path, &body).unwrap();
            let got = read(kind, &path);
            let rows = got["rows"].as_array().unwrap();
            assert_eq!(rows.len(), want.len(), "{table} via {kind}: every row");
            for (i, (g, w)) in rows.iter().zip(&want).enumerate() {
                for (k, wv) in w.as_object().unwrap() {
                    assert_eq!(&g[k], wv, "{table} via {kind}, row {i}, column {k}");
                }
            }
            let types = &got["types"];
            let id_col = if table == "agents" {
                "agent_id"
            } else if table == "accounts" {
                "owner_id"
            } else {
                "contact_id"
            };
            assert!(types[id_col].as_str().unwrap().contains("int"), "{table} via {kind}: ids are integers: {types}");
            if table != "accounts" {
                let t = if table == "agents" { "first_seen_at" } else { "verified_at" };
                let t = if table == "orphans" { "contact_verified_at" } else { t };
                assert!(types[t].as_str().unwrap().contains("timestamp"), "{table} via {kind}: times: {types}");
            }
            let status = if table == "agents" { "status" } else { "owner_status" };
            if kind != "duckdb" {
                assert!(types[status].as_str().unwrap().contains("dictionary"), "{table}: statuses: {types}");
            }
        }
    }
    // columns= in every format.
    let (_, body) = get(&format!("{}/export/contacts?columns=contact_id,owner_status", srv.url)).await;
    let rows = ndjson(&body);
    assert_eq!(rows[0].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["contact_id", "owner_status"]);
    let (_, body) = get(&format!("{}/export/orphans?format=csv&columns=contact_email,reason", srv.url)).await;
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.lines().next(), Some("contact_email,reason"));
    assert!(text.lines().nth(1).unwrap().split(',').count() == 2);
    let (_, body) = get(&format!("{}/export/agents?format=parquet&columns=agent_id,status", srv.url)).await;
    let path = work.path().join("cols.parquet");
    std::fs::write(&path, body).unwrap();
    let got = read("duckdb", &path);
    assert_eq!(got["types"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["agent_id", "status"]);
    let (s, body) = get(&format!("{}/export/contacts?columns=nope", srv.url)).await;
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&body).contains("contact_email"), "the refusal lists the columns");

    // The batch lookup: input order, misses as the key alone, in NDJSON, CSV and Arrow.
    let contacts = ndjson(&get(&format!("{}/export/contacts", srv.url)).await.1);
    let emails: Vec<Value> = vec![
        contacts[5]["contact_email"].clone(),
        json!("nobody@nowhere.example"),
        contacts[1]["contact_email"].clone(),
    ];
    let post = |fmt: &'static str, body: Value| {
        let url = srv.url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/lookup/contacts?by=email&format={fmt}"))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    let (s, body) = post("ndjson", json!(emails)).await;
    assert_eq!(s, 200);
    let rows = ndjson(&body);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["contact_id"], contacts[5]["contact_id"]);
    assert_eq!(rows[1]["key"], "nobody@nowhere.example");
    assert_eq!(rows[1]["contact_id"], Value::Null);
    assert_eq!(rows[2]["owner_id"], contacts[1]["owner_id"]);
    let (_, body) = post("arrow", json!(emails)).await;
    let path = work.path().join("lookup.arrow");
    std::fs::write(&path, body).unwrap();
    let got = read("arrow", &path);
    assert_eq!(got["rows"].as_array().unwrap().len(), 3);
    assert_eq!(got["rows"][1]["key"], "nobody@nowhere.example");
    assert_eq!(got["rows"][2]["contact_id"], contacts[1]["contact_id"]);
    let (_, body) = post("csv", json!(emails)).await;
    assert_eq!(String::from_utf8(body).unwrap().lines().count(), 4, "a header and three rows");
    let ids: Vec<Value> = vec![contacts[0]["contact_id"].clone(), json!(999_999_999)];
    let r = reqwest::Client::new()
        .post(format!("{}/lookup/contacts?by=id&columns=key,owner_email", srv.url))
        .bearer_auth(ADMIN)
        .json(&ids)
        .send()
        .await
        .unwrap();
    let rows = ndjson(&r.bytes().await.unwrap());
    assert_eq!(rows[0]["owner_email"], contacts[0]["owner_email"]);
    assert_eq!(rows[1].as_object().unwrap().len(), 2);
    let too_many: Vec<String> = (0..100_001).map(|i| format!("k{i}")).collect();
    let (s, _) = post("ndjson", json!(too_many)).await;
    assert_eq!(s, 400, "at most 100,000 keys");
}

/// An org larger than a record batch: the contacts are built on two threads and streamed batch
/// by batch, buffer by buffer; pyarrow reads them from the response as it arrives (as the README
/// does) and gets the NDJSON export's rows, in id order, with one owner dictionary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_export_of_many_batches_reads_back_from_the_response() {
    if !readers_here() {
        return;
    }
    let contacts = idgraph_columnar::BATCH_ROWS + 4_464;
    let (_sim, r) = sim(SimConfig { contacts, agents: 50, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(&r, dir.path(), &["--admin-token", ADMIN, "--refresh-share", "0", "--agents-every", "1h"]).await;
    let (s, body) =
        get(&format!("{}/export/contacts?columns=contact_id,contact_email,owner_email,owner_status", srv.url)).await;
    assert_eq!(s, 200);
    let want = ndjson(&body);
    assert_eq!(want.len(), contacts);
    let url =
        format!("{}/export/contacts?format=arrow&columns=contact_id,contact_email,owner_email,owner_status", srv.url);
    let got = read("url", Path::new(&url));
    let rows = got["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len(), "every row");
    for (i, (g, w)) in rows.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "row {i}");
    }
    assert!(got["types"]["owner_email"].as_str().unwrap().contains("dictionary"), "{}", got["types"]);
}
