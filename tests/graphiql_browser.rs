//! GraphiQL as a person sees it: headless Chromium loads the page (offline: every asset from
//! idgraph itself), runs the default query and the answer shows.
//!
//! Needs Chromium and `npm ci` in tests/browser (`.ci/run` does both and sets
//! IDGRAPH_BROWSER_TEST=required, which turns a missing browser into a failure).

mod common;

use std::path::Path;

use common::*;
use drift_sim::SimConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_runs_a_query_in_a_browser() {
    let required = std::env::var("IDGRAPH_BROWSER_TEST").is_ok_and(|v| v == "required");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = Path::new(&chromium).exists()
        && dir.join("node_modules/playwright-core").exists()
        && dir.join("node_modules/graphql").exists();
    if !ready {
        assert!(
            !required,
            "Chromium or playwright-core is missing: run `apt-get install chromium` and `npm ci` in tests/browser"
        );
        eprintln!("skipping: no Chromium or playwright-core here (CI requires them)");
        return;
    }
    let (_sim, r) = sim(SimConfig { contacts: 500, agents: 10, ..SimConfig::default() }).await;
    let data = tempfile::tempdir().unwrap();
    let srv = serve(&r, data.path(), &["--insecure-no-auth"]).await;
    let shot = std::env::temp_dir().join("idgraph-graphiql.png");
    let out = tokio::process::Command::new("node")
        .arg(dir.join("graphiql.mjs"))
        .arg(format!("{}/", srv.url))
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the browser check failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["failedRequests"], serde_json::json!([]), "every asset loads from idgraph itself");
    assert_eq!(v["docsHasQueryFields"], true, "the Docs explorer shows Query's fields: {v}");
    assert!(
        v["hints"].as_array().unwrap().iter().any(|h| h == "indexStatus"),
        "autocomplete suggests indexStatus: {v}"
    );

    // An independent client (graphql-js) fetches the schema by introspection: it is
    // schema.graphql.
    let out = tokio::process::Command::new("node")
        .arg(dir.join("sdl.mjs"))
        .arg(format!("{}/graphql", srv.url))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql"))
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "graphql-js's schema differs: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["same"], true);
}
