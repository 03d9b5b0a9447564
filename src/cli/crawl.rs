//! `idgraph crawl`: one crawl into the data directory.

use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use idgraph_crawler::Crawler;
use idgraph_graph::ShrinkGuard;

use super::common::open_graph;
use super::progress::Progress;
use super::{DriftArgs, StoreArgs};
use crate::app::pipeline;
use crate::app::settings::{Env, Settings};

#[derive(Args)]
pub struct CrawlArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub drift: DriftArgs,
    /// Switch even if the new generation is much smaller than the current one.
    #[arg(long)]
    pub force: bool,
}

pub async fn crawl(a: CrawlArgs) -> Result<()> {
    let settings = Settings::load(&a.drift.flags(a.store.flags()), &Env::from_process())?;
    let cfg = settings.drift.crawl_config()?;
    let per_s = cfg.budget.per_second();
    let crawler = Crawler::new(cfg)?;
    let graph = Arc::new(open_graph(
        &settings.data_dir,
        "stop the server, or trigger `mutation { reindex }` at {server}",
        true,
    )?);
    let progress = Progress::new(graph.info().map(|i| i.contacts), per_s);
    let guard = if a.force { ShrinkGuard::off() } else { ShrinkGuard::default() };
    let report = pipeline::reindex(&graph, &crawler, &progress, guard, settings.drift.incremental).await?;
    let s = &report.summary;
    eprintln!(
        "generation {} is live: {} contacts, {} users, {} SCIM users, {} accounts; {} requests ({} answered 429, {} retried), {} bad records skipped, {} warnings, {:.1}s{}",
        report.generation,
        s.contacts,
        s.users,
        s.scim_users,
        s.accounts,
        s.requests,
        s.rate_limited,
        s.retries,
        s.bad_records,
        report.warnings.len(),
        s.elapsed_ms as f64 / 1000.0,
        if report.resumed { " (resumed)" } else { "" }
    );
    Ok(())
}
