//! `idgraph export`: contacts, orphans, agents or accounts as NDJSON or CSV, from a server's
//! `/export/...` or from a data directory.

use anyhow::{Context, Result};
use clap::Args;
use idgraph_graph::export::{Export, Format, Table};

use super::common::{data_dir, open_graph_to_read, transport_cause, write_out};
use super::{ServerArgs, StoreArgs};

#[derive(Args)]
pub struct ExportArgs {
    /// contacts, orphans, agents or accounts.
    pub what: String,
    /// ndjson or csv.
    #[arg(long, default_value = "ndjson")]
    pub format: String,
    #[command(flatten)]
    pub remote: ServerArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn export(a: ExportArgs) -> Result<()> {
    let table: Table = a.what.parse().map_err(anyhow::Error::msg)?;
    let format: Format = a.format.parse().map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    if let Some(server) = &a.remote.server {
        let url = format!("{}/export/{}?format={}", server.trim_end_matches('/'), a.what, a.format);
        let mut req = reqwest::Client::new().get(&url);
        if let Some(t) = &a.remote.token {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(|e| anyhow::anyhow!("cannot reach {url}: {}", transport_cause(&e)))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!("{url} answered {status}: {body}");
        }
        while let Some(chunk) = resp.chunk().await.context("the export was cut off")? {
            if !write_out(&mut out, &chunk)? {
                return Ok(());
            }
        }
        return Ok(());
    }
    let dir = data_dir(&a.store)?;
    let hint = format!("idgraph export {} --server {{server}} --token READ_TOKEN", a.what);
    let graph = open_graph_to_read(&dir, &hint)?;
    if graph.info().is_none() {
        anyhow::bail!("no index in {} yet: run `idgraph crawl` first", dir.display());
    }
    for chunk in Export::new(graph.snapshot(), table, format) {
        if !write_out(&mut out, chunk.as_bytes())? {
            return Ok(());
        }
    }
    Ok(())
}
