//! `idgraph backup` and `idgraph restore`: a consistent, checked copy of the current generation
//! and the history, taken offline or through a running server; a restore checks the copy before
//! anything is replaced, and keeps what it replaces.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::common::{data_dir, open_graph, transport_cause};
use super::StoreArgs;

#[derive(Args)]
pub struct BackupArgs {
    /// A new (or empty) directory to write the copy into.
    #[arg(long)]
    pub to: PathBuf,
    /// Ask a running server to write the copy (on its machine) instead of reading the data
    /// directory; needs its admin token.
    #[arg(long, env = "IDGRAPH_SERVER")]
    pub server: Option<String>,
    #[arg(long, env = "IDGRAPH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup to restore.
    #[arg(long)]
    pub from: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn backup(a: BackupArgs) -> Result<()> {
    if let Some(server) = &a.server {
        let url = format!("{}/admin/backup", server.trim_end_matches('/'));
        let mut req = reqwest::Client::new().post(&url).json(&serde_json::json!({ "to": a.to }));
        if let Some(t) = &a.admin_token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| anyhow::anyhow!("cannot reach {url}: {}", transport_cause(&e)))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.with_context(|| format!("{url} did not answer JSON"))?;
        if !status.is_success() {
            anyhow::bail!("the server refused ({status}): {}", body["errors"][0]["message"].as_str().unwrap_or("?"));
        }
        println!("{}", body["message"].as_str().unwrap_or_default());
        return Ok(());
    }
    let dir = data_dir(&a.store)?;
    let hint = format!("idgraph backup --to {} --server {{server}} --admin-token ADMIN_TOKEN", a.to.display());
    let graph = open_graph(&dir, &hint, false)?;
    let started = std::time::Instant::now();
    let r = graph.backup_to(&a.to).with_context(|| format!("cannot back up into {}", a.to.display()))?;
    println!("{}", r.summary(&a.to, started.elapsed()));
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

pub async fn restore(a: RestoreArgs) -> Result<()> {
    let dir = data_dir(&a.store)?;
    {
        let store = idgraph_graph::Store::open(&a.from)
            .with_context(|| format!("{} is not a backup idgraph can open", a.from.display()))?;
        let r = store.check()?;
        let g = r.generation.with_context(|| format!("{} holds no generation", a.from.display()))?;
        if !r.problems.is_empty() {
            anyhow::bail!("the backup fails its check, nothing was replaced: {}", r.problems.join("; "));
        }
        println!(
            "the backup holds generation {g} ({} values, {} history entries) and passes its check",
            r.values, r.history
        );
    }
    if dir.join("db").exists() {
        // Refuses while a server holds it.
        drop(open_graph(&dir, "stop the server first", false)?);
        let aside = dir.with_extension(format!("before-restore-{}", idgraph_graph::now_ms()));
        std::fs::rename(&dir, &aside).with_context(|| format!("cannot move {} aside", dir.display()))?;
        println!("the data directory it replaces is kept at {}", aside.display());
    }
    copy_dir(&a.from, &dir).with_context(|| format!("cannot copy the backup into {}", dir.display()))?;
    let r = idgraph_graph::Store::open(&dir)?.check()?;
    if !r.problems.is_empty() {
        anyhow::bail!("the restored store fails its check: {}", r.problems.join("; "));
    }
    println!("restored into {}", dir.display());
    Ok(())
}
