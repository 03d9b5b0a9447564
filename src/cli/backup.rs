//! `idgraph backup` and `idgraph restore`: a consistent, checked copy of the current generation
//! and the history, taken offline or through a running server; a restore checks the copy before
//! anything is replaced, and keeps what it replaces.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::common::{data_dir, open_graph_to_read, transport_cause};
use super::StoreArgs;

#[derive(Args)]
pub struct BackupArgs {
    /// Offline: a new (or empty) directory to write the copy into. With --server: a plain name
    /// (letters, digits, '.', '_', '-'), written under the server's backup_dir.
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
        let name = a.to.to_str().filter(|n| idgraph_graph::backup_name_ok(n)).with_context(|| {
            format!(
                "{}: a backup through a server is named by a plain name (letters, digits, '.', '_', '-'), which the server writes under its backup_dir; to write a path of your own, back up offline with --data-dir",
                a.to.display()
            )
        })?;
        let url = format!("{}/admin/backup", server.trim_end_matches('/'));
        let mut req = reqwest::Client::new().post(&url).json(&serde_json::json!({ "to": name }));
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
    let graph = open_graph_to_read(&dir, &hint)?;
    let started = std::time::Instant::now();
    let to = std::path::absolute(&a.to).with_context(|| format!("cannot resolve {}", a.to.display()))?;
    let r = graph.backup_to(&to).with_context(|| format!("cannot back up into {}", to.display()))?;
    println!("{}", r.summary(&to, started.elapsed()));
    Ok(())
}

/// A time as a name can carry it: `20261204T181502Z`.
fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

pub async fn restore(a: RestoreArgs) -> Result<()> {
    let dir = data_dir(&a.store)?;
    let from = &a.from;
    if !from.exists() {
        anyhow::bail!("{} does not exist: nothing was restored", from.display());
    }
    if !idgraph_graph::Store::exists_at(from) {
        anyhow::bail!("{} is not an idgraph backup (it holds no store): nothing was restored", from.display());
    }
    // The backup is copied beside the data directory first (it is only read: nothing is written
    // into it, and a symbolic link in it is refused), checked there, and only then swapped in by
    // two renames: a failure at any point leaves the data directory as it was.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let incoming = dir.with_extension(format!("restoring-{}", stamp()));
    let copied = idgraph_graph::Store::copy_files(from, &incoming)
        .with_context(|| format!("cannot copy the backup {} into {}", from.display(), incoming.display()));
    let checked = copied.and_then(|_| {
        let store = idgraph_graph::Store::open(&incoming)
            .with_context(|| format!("{} is not a backup idgraph can open", from.display()))?;
        let r = store.check()?;
        let g = r.generation.with_context(|| format!("{} holds no generation", from.display()))?;
        if !r.problems.is_empty() {
            anyhow::bail!("the backup fails its check, nothing was replaced: {}", r.problems.join("; "));
        }
        Ok((g, r))
    });
    let (g, r) = match checked {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&incoming);
            return Err(e);
        }
    };
    println!(
        "the backup holds generation {g} ({} values, {} history entries) and passes its check",
        r.values, r.history
    );
    if idgraph_graph::Store::exists_at(&dir) {
        // A server holding the store would keep writing into the directory moved aside.
        if let Err(idgraph_graph::StoreError::Locked(_)) = idgraph_graph::Store::open(&dir) {
            let _ = std::fs::remove_dir_all(&incoming);
            anyhow::bail!(
                "the data directory {} is in use by a running server ({}): stop the server, then run restore again",
                dir.display(),
                super::common::server_url(&dir)
            );
        }
    }
    let aside = dir.with_extension(format!("before-restore-{}", stamp()));
    let moved_aside = dir.exists();
    if moved_aside {
        std::fs::rename(&dir, &aside).with_context(|| format!("cannot move {} aside", dir.display()))?;
    }
    if let Err(e) = std::fs::rename(&incoming, &dir) {
        if moved_aside {
            let _ = std::fs::rename(&aside, &dir);
        }
        let _ = std::fs::remove_dir_all(&incoming);
        return Err(e).with_context(|| format!("cannot move the restored store into {}", dir.display()));
    }
    if moved_aside {
        println!("the data directory it replaces is kept at {}", aside.display());
    }
    println!("restored into {}", dir.display());
    Ok(())
}
