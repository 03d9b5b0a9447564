//! `idgraph`: an identity-graph indexer for Drift. Parses the command line and dispatches to the
//! library (`idgraph::cli`).

use anyhow::{Context, Result};
use clap::Parser;

// mimalloc gives memory back to the system after a reindex drops the previous index; the
// system allocator kept it (2.4 GB resident after a reindex of 1,000,000 contacts).
#[cfg(not(any(feature = "system-alloc", feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "system-alloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    commit_memory_as_used();
    // Everything idgraph writes (the store, backups, token files) holds personal data or secrets:
    // only its owner may read it, whatever umask it was started with.
    #[cfg(unix)]
    // SAFETY: umask takes a mode and cannot fail; called before any thread starts.
    unsafe {
        libc::umask(0o077);
    }
    raise_file_limit();
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(idgraph::app::pipeline::BLOCKING_KEEP_ALIVE)
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(idgraph::cli::run(cli.command))
}

/// A server holds a descriptor a connection: raise the soft limit on open files to the hard one
/// (often 1,024 soft against 500,000 or more hard), so that the connection cap, not the limit,
/// decides.
fn raise_file_limit() {
    #[cfg(unix)]
    {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
                l.rlim_cur = l.rlim_max.min(65_536);
                libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            }
        }
    }
}

#[cfg(not(any(feature = "system-alloc", feature = "jemalloc")))]
const EAGER_COMMIT: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// mimalloc commits its arenas eagerly on Linux, and its first arena is reserved before `main`
/// runs, so the option must be in the environment when the process starts: a server sets it and
/// executes itself again (same pid, same arguments) once. With it, a hundred orgs of 10,000
/// contacts are 1.2 GB resident instead of 2.6 GB (`benches/orgs.rs`). Only `serve`: the other
/// commands are short-lived.
fn commit_memory_as_used() {
    #[cfg(all(unix, not(any(feature = "system-alloc", feature = "jemalloc"))))]
    if std::env::var_os(EAGER_COMMIT).is_none() && std::env::args_os().any(|a| a == "serve") {
        use std::os::unix::process::CommandExt;
        if let Ok(exe) = std::env::current_exe() {
            let err = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env(EAGER_COMMIT, "0")
                // A page freed into by other threads is not taken back by the freeing thread, and a
                // full page is given up at once: its free space goes to whichever thread allocates
                // next, rather than waiting for its own thread (mimalloc 3's options, read when a
                // thread's heap starts: hence here).
                .env("MIMALLOC_PAGE_RECLAIM_ON_FREE", "-1")
                .env("MIMALLOC_PAGE_FULL_RETAIN", "0")
                .exec();
            // Only on failure does `exec` return: serve as we are.
            eprintln!("warning: could not restart with {EAGER_COMMIT}=0 ({err}); serving with mimalloc's defaults");
        }
    }
}
