//! What several commands share: opening a data directory, asking a running server, writing to a
//! pipe that may close.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use idgraph_graph::{Graph, StoreError};

/// The file a running server writes into its data directory, so that the hints of other
/// commands name its real address.
const SERVER_FILE: &str = "idgraph-server.json";

/// Notes where a server listens (removed when it stops).
pub fn note_server(data_dir: &Path, url: &str) {
    let _ = std::fs::write(data_dir.join(SERVER_FILE), serde_json::json!({ "url": url }).to_string());
}

pub fn forget_server(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(SERVER_FILE));
}

/// The address of the server holding `data_dir`, as it noted it (else the default).
pub fn server_url(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join(SERVER_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["url"].as_str().map(String::from))
        .unwrap_or_else(|| format!("http://{}", crate::app::settings::defaults::LISTEN))
}

/// Opens the graph of a data directory. A command that only reads (`create: false`) never
/// creates one: it says there is no index, and how to ask a running server instead. `hint`
/// is the command to ask a server, with `{server}` for its address.
pub fn open_graph(dir: &Path, hint: &str, create: bool) -> Result<Graph> {
    open_graph_with_cache(dir, hint, create, idgraph_graph::store::CACHE_BYTES)
}

/// [`open_graph`] with sled's page cache at `cache_bytes` (`serve`'s `cache_mb`).
pub fn open_graph_with_cache(dir: &Path, hint: &str, create: bool, cache_bytes: u64) -> Result<Graph> {
    let ask = hint.replace("{server}", &server_url(dir));
    if create {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    } else if !idgraph_graph::Store::exists_at(dir) {
        anyhow::bail!(
            "no index in {}: run `idgraph crawl` first, or, if `idgraph serve` or `idgraph demo` runs elsewhere, ask it: {ask}",
            dir.display()
        );
    }
    match Graph::open_with_cache(dir, cache_bytes) {
        Ok(g) => Ok(g),
        Err(StoreError::Locked(p)) => {
            anyhow::bail!("the index at {p} is in use by a running server: ask the server instead: {ask}")
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the index at {}", dir.display())),
    }
}

/// Opens the graph of a data directory only to read it (`audit`, `export`, `backup`,
/// `serve --read-only`): a store this process cannot write (a copy handed to auditors) is read
/// from a private copy, and the directory is never created or changed.
pub fn open_graph_to_read(dir: &Path, hint: &str) -> Result<Graph> {
    let ask = hint.replace("{server}", &server_url(dir));
    if !idgraph_graph::Store::exists_at(dir) && dir.exists() {
        anyhow::bail!(
            "no index in {}: run `idgraph crawl` first, or, if `idgraph serve` or `idgraph demo` runs elsewhere, ask it: {ask}",
            dir.display()
        );
    }
    match Graph::open_read_only(dir) {
        Ok(g) => Ok(g),
        Err(StoreError::Locked(p)) => {
            anyhow::bail!("the index at {p} is in use by a running server: ask the server instead: {ask}")
        }
        Err(StoreError::Missing(p)) => anyhow::bail!(
            "no index: the data directory {p} does not exist (run `idgraph crawl` first, or pass --data-dir)"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot open the index at {}", dir.display())),
    }
}

pub use idgraph_crawler::transport_cause;

/// Runs a GraphQL query against a server; the errors it answers become one message.
pub async fn remote_query(
    server: &str,
    token: Option<&str>,
    query: &str,
    variables: serde_json::Value,
) -> Result<serde_json::Value> {
    let url = format!("{}/graphql", server.trim_end_matches('/'));
    let mut req = reqwest::Client::new().post(&url).json(&serde_json::json!({"query": query, "variables": variables}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| anyhow::anyhow!("cannot reach {url}: {}", transport_cause(&e)))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.with_context(|| format!("{url} did not answer JSON ({status})"))?;
    if let Some(errs) = v.get("errors").and_then(|e| e.as_array()).filter(|e| !e.is_empty()) {
        let msgs: Vec<&str> = errs.iter().filter_map(|e| e.get("message").and_then(|m| m.as_str())).collect();
        anyhow::bail!("the server refused: {}", msgs.join("; "));
    }
    Ok(v.get("data").cloned().unwrap_or_default())
}

/// Writes to stdout; false when the reader went away (`| head`), which ends a command quietly.
pub fn write_out(out: &mut impl std::io::Write, chunk: &[u8]) -> Result<bool> {
    match out.write_all(chunk).and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

pub fn print_out(text: &str) -> Result<()> {
    write_out(&mut std::io::stdout().lock(), text.as_bytes()).map(|_| ())
}

/// The org's store the settings name, for commands that take only `StoreArgs` (with a config of
/// several orgs, `--org` names one).
pub fn data_dir(store: &super::StoreArgs) -> Result<PathBuf> {
    let s = crate::app::settings::Settings::load(&store.flags(), &crate::app::settings::Env::from_process())?;
    s.require_org()?;
    Ok(s.data_dir)
}

/// The data directory itself: the server's tokens and access log, whatever the org.
pub fn base_dir(store: &super::StoreArgs) -> Result<PathBuf> {
    let flags = crate::app::settings::Flags { org: None, ..store.flags() };
    Ok(crate::app::settings::Settings::load(&flags, &crate::app::settings::Env::from_process())?.base_dir)
}
