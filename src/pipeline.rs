//! Crawl -> graph: streams a crawl into a staging generation, then switches to it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use idgraph_crawler::{Checkpoint, ContactsMode, CrawlEvent, CrawlSummary, Crawler, Source};
use idgraph_graph::{Change, Graph, ShrinkGuard};
use idgraph_graphql::Metrics;
use idgraph_model::Record;
use tokio::sync::mpsc;

use crate::progress::Progress;

/// What a full reindex did.
#[derive(Debug)]
pub struct ReindexReport {
    pub generation: u64,
    pub summary: CrawlSummary,
    pub changes: Vec<Change>,
    pub resumed: bool,
    pub warnings: Vec<String>,
}

/// How far back an incremental discovery re-reads conversations before the last high-water mark,
/// for conversations updated while the previous crawl ran.
const HIGH_WATER_MARGIN_MS: i64 = 3_600_000;

/// A full reindex: resumes an interrupted generation when there is one, crawls into it, and
/// switches. On failure the staging generation stays for the next run to resume, and the current
/// generation goes on being served.
pub async fn reindex(
    graph: &Arc<Graph>,
    crawler: &Crawler,
    metrics: &Arc<Metrics>,
    progress: &Progress,
    guard: ShrinkGuard,
    incremental: bool,
) -> Result<ReindexReport> {
    let staging = graph.begin(true).context("cannot start a generation in the store")?;
    let mut cp: Checkpoint =
        graph.checkpoint(&staging)?.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    let known = if staging.resumed {
        tracing::info!(generation = staging.generation, "resuming an interrupted crawl from its checkpoint");
        graph.staged_contact_ids(&staging)?
    } else {
        Default::default()
    };
    if !staging.resumed && incremental {
        // Discovery costs a request a contact: start from the last generation's contacts and read
        // conversations back to its high-water mark only.
        let prev: Option<CrawlSummary> = graph.info().and_then(|i| serde_json::from_value(i.crawl).ok());
        if let Some(p) = prev.filter(|p| p.mode == Some(ContactsMode::Discovery)) {
            if let Some(hw) = p.high_water_ms {
                let n = graph.carry_over_contacts(&staging)?;
                cp.since_ms = Some(hw - HIGH_WATER_MARGIN_MS);
                tracing::info!(carried = n, "incremental discovery from the previous high-water mark");
                graph.write(&staging, &[], Some(&serde_json::to_value(&cp)?))?;
            }
        }
    }
    let (tx, mut rx) = mpsc::channel(crawler.config().channel_pages.max(1));
    let task = {
        let crawler = crawler.clone();
        let cp = cp.clone();
        tokio::spawn(async move { crawler.run(cp, known, tx).await })
    };
    metrics.crawling.store(1, Ordering::Relaxed);
    let mut warnings = Vec::new();
    let stats = crawler.client().stats.clone();
    while let Some(ev) = rx.recv().await {
        metrics.crawl_queue_depth.store(rx.len() as i64, Ordering::Relaxed);
        match ev {
            CrawlEvent::Page { source, records, checkpoint } => {
                for u in &checkpoint {
                    cp.apply(u);
                }
                let cpv = serde_json::to_value(&cp)?;
                graph.write(&staging, &records, Some(&cpv)).context("cannot store crawled records")?;
                metrics.crawl_pages.fetch_add(1, Ordering::Relaxed);
                metrics.crawl_records.fetch_add(records.len() as u64, Ordering::Relaxed);
                progress.page(source, records.len(), &stats);
            }
            CrawlEvent::BadRecord { source, error } => {
                tracing::warn!(?source, %error, "a record was skipped");
                progress.bad_record();
            }
            CrawlEvent::Warning(w) => {
                progress.warn(&w);
                warnings.push(w);
            }
        }
    }
    let crawled = task.await.context("the crawl task failed")?;
    metrics.crawling.store(0, Ordering::Relaxed);
    metrics.crawl_requests.store(stats.requests.load(Ordering::Relaxed), Ordering::Relaxed);
    metrics.crawl_rate_limited.store(stats.rate_limited.load(Ordering::Relaxed), Ordering::Relaxed);
    metrics.crawl_retries.store(stats.retries.load(Ordering::Relaxed), Ordering::Relaxed);
    let summary = crawled.with_context(|| {
        format!("the crawl did not complete; generation {} is kept and the next run resumes it", staging.generation)
    })?;
    if !cp.is_done(Source::Contacts) {
        anyhow::bail!("the crawl ended without finishing contacts; the previous index stays");
    }
    let generation = staging.generation;
    let resumed = staging.resumed;
    let summary_json = serde_json::to_value(&summary)?;
    let scim = summary.scim_available || cp.scim_available == Some(true);
    let g = graph.clone();
    let changes = tokio::task::spawn_blocking(move || g.commit(staging, summary_json, scim, guard))
        .await
        .context("the switch task failed")?
        .context("the new generation was refused")?;
    progress.finish(&format!("generation {generation} is live"));
    Ok(ReindexReport { generation, summary, changes, resumed, warnings })
}

/// An agents-only refresh: REST users and SCIM users, applied in place.
pub async fn refresh_agents(graph: &Arc<Graph>, crawler: &Crawler, guard: ShrinkGuard) -> Result<Vec<Change>> {
    let (tx, mut rx) = mpsc::channel(64);
    let task = {
        let crawler = crawler.clone();
        tokio::spawn(async move { crawler.run_agents(tx).await })
    };
    let (mut users, mut scim) = (Vec::new(), Vec::new());
    while let Some(ev) = rx.recv().await {
        if let CrawlEvent::Page { records, .. } = ev {
            for r in records {
                match r {
                    Record::User(u) => users.push(u),
                    Record::ScimUser(s) => scim.push(s),
                    _ => {}
                }
            }
        }
    }
    let summary = task.await.context("the agents refresh task failed")?.context("the agents refresh failed")?;
    let g = graph.clone();
    let scim = summary.scim_available.then_some(scim);
    tokio::task::spawn_blocking(move || g.refresh_agents(users, scim, guard))
        .await
        .context("the agents refresh task failed")?
        .context("the agents refresh was refused")
}
