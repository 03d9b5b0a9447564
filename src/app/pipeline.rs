//! Crawl -> graph: streams a crawl into a staging generation, then switches to it.

use std::sync::Arc;

use anyhow::{Context, Result};
use std::collections::HashSet;

use idgraph_crawler::{Checkpoint, ClientStats, ContactsMode, CrawlError, CrawlEvent, CrawlSummary, Crawler, Source};
use idgraph_graph::{Change, Graph, ShrinkGuard, Staging};
use idgraph_model::Record;
use tokio::sync::mpsc;

use crate::app::observe::CrawlObserver;

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
    observer: &dyn CrawlObserver,
    guard: ShrinkGuard,
    incremental: bool,
) -> Result<ReindexReport> {
    let staging = graph.begin(true).context("cannot start a generation in the store")?;
    let (mut cp, known) = prepare(graph, &staging, incremental)?;
    let (tx, mut rx) = mpsc::channel(crawler.config().channel_pages.max(1));
    let task = {
        let crawler = crawler.clone();
        let cp = cp.clone();
        tokio::spawn(async move { crawler.run(cp, known, tx).await })
    };
    let stats = crawler.client().stats.clone();
    observer.crawling(true, &stats);
    let stored = store_pages(graph, &staging, &mut cp, &mut rx, observer, &stats).await;
    // A store that failed reads no more: the crawl's next send fails and it ends.
    drop(rx);
    let crawled = task.await.context("the crawl task failed")?;
    observer.crawling(false, &stats);
    let warnings = stored?;
    let url = crawler.config().drift_url.trim_end_matches('/').to_string();
    let summary = match crawled {
        Ok(s) => s,
        Err(e) => {
            let refused =
                matches!(e, CrawlError::Auth(_) | CrawlError::Unauthorized { .. } | CrawlError::Forbidden { .. });
            // A refused crawl read nothing; a resumed one keeps what earlier runs read.
            let stored_any = staging.resumed || (!refused && graph.checkpoint(&staging).ok().flatten().is_some());
            if !stored_any {
                // Nothing to resume: the staging generation holds nothing.
                let g = graph.clone();
                let _ = tokio::task::spawn_blocking(move || g.abandon(staging)).await;
            }
            let what = if refused {
                format!(
                    "Drift at {url} refused the credentials: check that the token is valid and not revoked, and that it has the scopes idgraph reads with (contact_read, user_read, conversation_read, account_read; SCIM needs a token of an Enterprise org)"
                )
            } else {
                format!("the crawl of {url} did not complete")
            };
            let kept = match (graph.ready(), stored_any) {
                (_, true) => "; what it read is kept and the next run resumes it".to_string(),
                (true, false) => "; nothing was stored, and the current index is still served".to_string(),
                (false, false) => "; nothing was stored, and there is no index yet".to_string(),
            };
            return Err(anyhow::Error::new(e).context(format!("{what}{kept}")));
        }
    };
    if !cp.is_done(Source::Contacts) {
        anyhow::bail!("the crawl ended without finishing contacts; the previous index stays");
    }
    let generation = staging.generation;
    let resumed = staging.resumed;
    let summary_json = serde_json::to_value(&summary)?;
    let scim = summary.scim_available || cp.scim_available == Some(true);
    let g = graph.clone();
    let changes = tokio::task::spawn_blocking(move || {
        let changes = g.commit(staging, summary_json, scim, guard);
        // The previous index was dropped by the switch: hand its pages back to the system now
        // rather than when the threads that allocated it next run (RSS after a 1M reindex).
        give_back_memory();
        changes
    })
    .await
    .context("the switch task failed")?
    .context("the new generation was refused")?;
    observer.finished(&format!("generation {generation} is live"));
    Ok(ReindexReport { generation, summary, changes, resumed, warnings })
}

/// Asks mimalloc (the binary's allocator) to return the calling thread's freed pages (mimalloc
/// collects per thread). Harmless under another allocator: mimalloc's own heaps are then empty.
pub(crate) fn give_back_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

// The number of `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (c_src/mimalloc/v3/include/mimalloc.h of
// libmimalloc-sys 0.1.49, pinned in Cargo.lock; the same in mimalloc 2); the crate exports no names for them.
const MI_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long an idle thread of a runtime's blocking pool (sled reads and writes, exports) is kept
/// (Tokio's default: 10 seconds). A thread that ends leaves its allocator heap's pages to be
/// reclaimed by others later, still holding the blocks it allocated that others free: a server that
/// started and ended such threads all day held more memory each hour; threads kept while the server
/// is busy do not.
pub const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(600);

/// Tells mimalloc to give freed pages back at once, not when their thread next allocates: a
/// server's threads idle between requests, and a server of many orgs runs a thread (and a
/// blocking pool) per org (with arenas committed as used, see `main`: 1.06 GB resident for a
/// hundred orgs of 10,000 contacts instead of 1.24 GB, `benches/orgs.rs`).
pub fn purge_freed_memory_at_once() {
    // SAFETY: `mi_option_set` takes two integers and may be called at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_PURGE_DELAY, 0) }
}

/// The checkpoint to crawl from and the contacts already stored: an interrupted crawl resumes;
/// an incremental discovery (a request a contact) starts from the last generation's contacts and
/// reads conversations back to its high-water mark only.
fn prepare(graph: &Graph, staging: &Staging, incremental: bool) -> Result<(Checkpoint, HashSet<u64>)> {
    let mut cp: Checkpoint =
        graph.checkpoint(staging)?.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    if staging.resumed {
        tracing::info!(generation = staging.generation, "resuming an interrupted crawl from its checkpoint");
        return Ok((cp, graph.staged_contact_ids(staging)?));
    }
    if incremental {
        let prev: Option<CrawlSummary> = graph.info().and_then(|i| serde_json::from_value(i.crawl).ok());
        if let Some(hw) = prev.filter(|p| p.mode == Some(ContactsMode::Discovery)).and_then(|p| p.high_water_ms) {
            let n = graph.carry_over_contacts(staging)?;
            cp.since_ms = Some(hw - HIGH_WATER_MARGIN_MS);
            tracing::info!(carried = n, "incremental discovery from the previous high-water mark");
            graph.write(staging, &[], Some(&serde_json::to_value(&cp)?))?;
        }
    }
    Ok((cp, HashSet::new()))
}

/// Stores each page with the checkpoint that holds once it is stored, until the crawl ends;
/// returns the crawl's warnings.
async fn store_pages(
    graph: &Graph,
    staging: &Staging,
    cp: &mut Checkpoint,
    rx: &mut mpsc::Receiver<CrawlEvent>,
    observer: &dyn CrawlObserver,
    stats: &ClientStats,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    while let Some(ev) = rx.recv().await {
        observer.queue_depth(rx.len());
        match ev {
            CrawlEvent::Page { source, records, checkpoint } => {
                for u in &checkpoint {
                    cp.apply(u);
                }
                let cpv = serde_json::to_value(&*cp)?;
                graph.write(staging, &records, Some(&cpv)).context("cannot store crawled records")?;
                observer.page(source, records.len(), stats);
            }
            CrawlEvent::BadRecord { source, error } => {
                tracing::warn!(?source, %error, "a record was skipped");
                observer.bad_record();
            }
            CrawlEvent::Warning(w) => {
                observer.warning(&w);
                warnings.push(w);
            }
        }
    }
    Ok(warnings)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use drift_sim::{Sim, SimConfig};
    use idgraph_crawler::{CrawlConfig, Crawler, Credentials, Secret};
    use idgraph_graph::{Graph, ShrinkGuard};

    use super::*;
    use crate::app::observe::Quiet;

    fn crawler(url: &str, scim: &str, token: &str) -> Crawler {
        let mut cfg = CrawlConfig::new(url, Credentials::Token(Secret::new(token)));
        cfg.scim_url = Some(scim.to_string());
        cfg.budget = "2000/s".parse().unwrap();
        Crawler::new(cfg).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crawl_switches_and_a_failed_one_keeps_the_served_generation() {
        let sim = Sim::new(SimConfig { contacts: 1500, agents: 20, token: "t".into(), ..SimConfig::default() });
        let r = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let graph = Arc::new(Graph::open(dir.path()).unwrap());
        let good = crawler(&r.url(), &r.scim_url(), "t");
        let report = reindex(&graph, &good, &Quiet, ShrinkGuard::default(), true).await.unwrap();
        assert_eq!((report.generation, report.summary.contacts), (1, 1500));
        assert_eq!(graph.read().contact_count(), 1500);

        // A crawl that cannot complete (Drift refuses the token) is an error, and generation 1
        // goes on being served, whole.
        let bad = crawler(&r.url(), &r.scim_url(), "wrong");
        let err = reindex(&graph, &bad, &Quiet, ShrinkGuard::default(), true).await.unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("refused the credentials") && err.contains("scopes") && err.contains("revoked"), "{err}");
        assert!(err.contains("current index is still served") && !err.contains("generation"), "{err}");
        assert_eq!(graph.info().unwrap().generation, 1);
        assert_eq!(graph.read().contact_count(), 1500);

        // An agents refresh applies in place.
        let changes = refresh_agents(&graph, &good, ShrinkGuard::default()).await.unwrap();
        assert!(changes.is_empty(), "nothing changed in the org: {changes:?}");
        r.stop().await;
    }
}
