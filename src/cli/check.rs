//! `idgraph check`: reads every value of the current generation and the history and says what is
//! wrong; exit non-zero when anything is.

use anyhow::Result;
use clap::Args;

use super::common::data_dir;
use super::StoreArgs;

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn check(a: CheckArgs) -> Result<()> {
    let dir = data_dir(&a.store)?;
    if !idgraph_graph::Store::exists_at(&dir) {
        anyhow::bail!("no index in {}: nothing to check", dir.display());
    }
    // Only read: a store this process cannot write is checked from a private copy.
    let (store, _copy) = match idgraph_graph::Store::open_read_only(&dir) {
        Ok(s) => s,
        Err(idgraph_graph::StoreError::Locked(p)) => {
            anyhow::bail!("the index at {p} is in use by a running server: stop it to check the store offline")
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("the store at {} does not open", dir.display()))),
    };
    #[cfg(unix)]
    for (path, mode) in idgraph_graph::Store::wide_modes(&dir) {
        let fix = if path.is_dir() { "chmod 700" } else { "chmod 600" };
        println!("warning: {} can be read by others (mode {mode:o}); it holds personal data: {fix} it", path.display());
    }
    let started = std::time::Instant::now();
    let r = store.check()?;
    let Some(g) = r.generation else {
        println!("{}: no generation yet (run `idgraph crawl`)", dir.display());
        return Ok(());
    };
    println!(
        "{}: generation {g}, {} values and {} history entries read in {:.1}s",
        dir.display(),
        r.values,
        r.history,
        started.elapsed().as_secs_f64()
    );
    if r.problems.is_empty() {
        println!("ok: every value passes its checksum and decodes; counts, agents and history agree");
        return Ok(());
    }
    for p in r.problems.iter().take(100) {
        println!("  {p}");
    }
    if r.problems.len() > 100 {
        println!("  … and {} more", r.problems.len() - 100);
    }
    anyhow::bail!("{} problems found in {}", r.problems.len(), dir.display())
}
