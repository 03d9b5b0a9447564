//! `idgraph export`: contacts, orphans, agents or accounts as NDJSON, CSV, Arrow IPC or Parquet,
//! from a server's `/export/...` or from a data directory.

use anyhow::{Context, Result};
use clap::Args;
use idgraph_graph::export::{Export, Format, Table};

use super::common::{data_dir, open_graph_to_read, transport_cause, write_out};
use super::{ServerArgs, StoreArgs};

#[derive(Args)]
pub struct ExportArgs {
    /// contacts, orphans, agents or accounts.
    pub what: String,
    /// ndjson, csv, arrow (an Arrow IPC stream) or parquet.
    #[arg(long, default_value = "ndjson")]
    pub format: String,
    /// Only these columns, comma-separated (every format).
    #[arg(long)]
    pub columns: Option<String>,
    #[command(flatten)]
    pub remote: ServerArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn export(a: ExportArgs) -> Result<()> {
    let table: Table = a.what.parse().map_err(anyhow::Error::msg)?;
    let columnar = match a.format.as_str() {
        "arrow" => Some(idgraph_columnar::Columnar::Arrow),
        "parquet" => Some(idgraph_columnar::Columnar::Parquet),
        _ => None,
    };
    let format: Option<Format> = match columnar {
        Some(_) => None,
        None => Some(a.format.parse().map_err(|e: String| anyhow::anyhow!("{e}, arrow or parquet"))?),
    };
    let asked: Option<Vec<String>> =
        a.columns.as_deref().map(|c| c.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    let keep = idgraph_graph::export::column_mask(table, asked.as_deref()).map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    if let Some(server) = &a.remote.server {
        let mut url = format!("{}/export/{}?format={}", server.trim_end_matches('/'), a.what, a.format);
        if let Some(c) = &a.columns {
            url.push_str(&format!("&columns={}", urlencoding::encode(c)));
        }
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
    if let Some(c) = columnar {
        let batches = idgraph_columnar::TableBatches::new(graph.snapshot(), table, asked.as_deref())?;
        let schema = batches.schema();
        drop(out);
        let stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        return idgraph_columnar::write(c, schema, batches, stdout).context("cannot write the export");
    }
    for chunk in Export::new(graph.snapshot(), table, format.unwrap_or(Format::Ndjson)).with_columns(keep) {
        if !write_out(&mut out, chunk.as_bytes())? {
            return Ok(());
        }
    }
    Ok(())
}
