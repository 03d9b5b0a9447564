//! `idgraph`: an identity-graph indexer for Drift. Parses the command line and dispatches to the
//! library (`idgraph::cli`).

use anyhow::{Context, Result};
use clap::Parser;

// mimalloc gives memory back to the system after a reindex drops the previous index; the
// system allocator kept it (2.4 GB resident after a reindex of 1,000,000 contacts).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = idgraph::cli::Cli::parse();
    idgraph::cli::init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes on one line, as a person reads them: never a backtrace,
            // whatever RUST_BACKTRACE says (a user error is not a crash).
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: idgraph::cli::Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(idgraph::cli::run(cli.command))
}
