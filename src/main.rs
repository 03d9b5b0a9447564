//! `idgraph`: an identity-graph indexer for Drift. Parses the command line and dispatches to the
//! library (`idgraph::cli`).

use anyhow::{Context, Result};
use clap::Parser;

// mimalloc gives memory back to the system after a reindex drops the previous index; the
// system allocator kept it (2.4 GB resident after a reindex of 1,000,000 contacts).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let cli = idgraph::cli::Cli::parse();
    idgraph::cli::init_logging(cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(idgraph::cli::run(cli.command))
}
