//! Webhooks confirmed: a delivery names a contact; the contact is read from Drift
//! (`GET /contacts/{id}`) and only what Drift answers is recorded.
//!
//! Drift's webhooks carry a static token and no signature, and arrive in any order, twice, or
//! not at all. Reading the record makes the order and the sender irrelevant: whatever was
//! announced, in whatever order, the index ends at Drift's record, with Drift's own time, and a
//! forged delivery costs one read and records nothing Drift does not say. The queue is
//! deduplicated by contact (a contact announced five times while it waits is read once), bounded
//! (`QUEUE_MAX`; past it a delivery is refused with 503), kept in the store (one key a contact)
//! so that a restart reads what was announced before it, and drained ahead of the refresher,
//! under the crawler's one budget. It runs during a crawl too: what it applies is mirrored into
//! the staging generation (see `idgraph_graph::Store::commit_in_place`).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use idgraph_crawler::Crawler;
use idgraph_graph::{now_ms, Event, Graph, Update, Via};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::app::observe::ConfirmObserver;

/// Contacts waiting to be read, at most.
pub const QUEUE_MAX: usize = 100_000;
/// Reads in flight at once (the budget paces them).
const BATCH: usize = 8;
/// A contact whose read keeps failing is given up after this many tries (the refresher's cycle
/// comes to it again).
const MAX_TRIES: u32 = 5;
/// Where the queue lives in the store's app state: one key a contact.
const PREFIX: &str = "confirm/";

fn state_key(id: u64) -> String {
    format!("{PREFIX}{id:020}")
}

/// What the confirmer has done since it started.
#[derive(Debug, Default)]
pub struct ConfirmStats {
    pub announced: AtomicU64,
    pub duplicates: AtomicU64,
    pub reads: AtomicU64,
    /// Reads that changed the index (a contact added, moved or removed, or its record updated).
    pub applied: AtomicU64,
    pub failed_reads: AtomicU64,
}

#[derive(Default)]
struct Queue {
    order: VecDeque<(u64, u32)>,
    /// Queued and not yet taken. A contact being read is not in it, so an announcement that
    /// comes during its read queues it again (the change may be newer than the read).
    waiting: HashSet<u64>,
}

pub struct Confirmer {
    graph: Arc<Graph>,
    crawler: Crawler,
    queue: Mutex<Queue>,
    wake: Notify,
    observer: Arc<dyn ConfirmObserver>,
    pub stats: ConfirmStats,
}

/// What one announcement did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Announcement {
    pub queued: usize,
    pub already_queued: usize,
    pub queue_len: usize,
}

impl Confirmer {
    /// Loads the queue kept in the store and starts draining it (call inside a Tokio runtime).
    pub fn start(graph: Arc<Graph>, crawler: Crawler, observer: Arc<dyn ConfirmObserver>) -> Result<Arc<Confirmer>> {
        let mut q = Queue::default();
        for (k, _) in graph.states_under(PREFIX)? {
            if let Some(id) = k.strip_prefix(PREFIX).and_then(|s| s.parse::<u64>().ok()) {
                if q.waiting.insert(id) {
                    q.order.push_back((id, 0));
                }
            }
        }
        if !q.order.is_empty() {
            tracing::info!(contacts = q.order.len(), "announced contacts still to read from Drift");
        }
        let me = Arc::new(Confirmer {
            graph,
            crawler,
            queue: Mutex::new(q),
            wake: Notify::new(),
            observer,
            stats: Default::default(),
        });
        let c = me.clone();
        tokio::spawn(async move { c.run().await });
        Ok(me)
    }

    /// How many contacts wait to be read.
    pub fn queue_len(&self) -> usize {
        self.queue.lock().order.len()
    }

    /// Queues contacts to be read from Drift; durable when it returns. Refused when the queue is
    /// full.
    pub fn announce(&self, ids: &[u64]) -> Result<Announcement> {
        let mut a = Announcement::default();
        let fresh: Vec<u64> = {
            let q = self.queue.lock();
            let mut seen = HashSet::new();
            let fresh: Vec<u64> =
                ids.iter().copied().filter(|id| !q.waiting.contains(id) && seen.insert(*id)).collect();
            if q.order.len() + fresh.len() > QUEUE_MAX {
                anyhow::bail!("{} contacts already wait to be read from Drift: retry later", q.order.len());
            }
            fresh
        };
        a.already_queued = ids.len() - fresh.len();
        if !fresh.is_empty() {
            let puts: Vec<(String, serde_json::Value)> =
                fresh.iter().map(|id| (state_key(*id), serde_json::Value::from(now_ms()))).collect();
            self.graph.update_states(&puts, &[]).context("cannot keep the announcement")?;
            let mut q = self.queue.lock();
            for id in &fresh {
                if q.waiting.insert(*id) {
                    q.order.push_back((*id, 0));
                    a.queued += 1;
                }
            }
        }
        a.queue_len = self.queue_len();
        self.stats.announced.fetch_add(ids.len() as u64, Ordering::Relaxed);
        self.stats.duplicates.fetch_add(a.already_queued as u64, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(a)
    }

    async fn run(self: Arc<Self>) {
        loop {
            if !self.graph.ready() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let batch: Vec<(u64, u32)> = {
                let mut q = self.queue.lock();
                let n = q.order.len().min(BATCH);
                let batch: Vec<(u64, u32)> = q.order.drain(..n).collect();
                for (id, _) in &batch {
                    q.waiting.remove(id);
                }
                batch
            };
            if batch.is_empty() {
                // Woken by an announcement, or a look now and then in case one was missed.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                continue;
            }
            if let Err(e) = self.confirm(batch).await {
                tracing::warn!(error = %format!("{e:#}"), "announced contacts could not be confirmed; they are tried again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Reads a batch from Drift and applies what Drift says; failed reads go to the back of the
    /// queue (a bounded number of times).
    async fn confirm(&self, batch: Vec<(u64, u32)>) -> Result<()> {
        let reads: Vec<_> = batch
            .iter()
            .map(|(id, tries)| {
                let (crawler, id, tries) = (self.crawler.clone(), *id, *tries);
                tokio::spawn(async move { (id, tries, crawler.read_contact(id).await) })
            })
            .collect();
        let mut events = Vec::new();
        let mut applied = 0;
        let mut retry = Vec::new();
        let mut done = Vec::new();
        for r in reads {
            let (id, tries, answer) = r.await.context("a read task failed")?;
            self.stats.reads.fetch_add(1, Ordering::Relaxed);
            let update = match answer {
                Ok(Some(c)) => Update::Upsert(c),
                Ok(None) => Update::Delete { id, at_ms: now_ms() },
                Err(e) => {
                    self.stats.failed_reads.fetch_add(1, Ordering::Relaxed);
                    if tries + 1 < MAX_TRIES {
                        retry.push((id, tries + 1));
                    } else {
                        tracing::warn!(contact = id, error = %e, "an announced contact could not be read; the refresher's cycle will");
                        done.push(id);
                    }
                    continue;
                }
            };
            events.push(Event { id: None, update, via: Via::Webhook });
            done.push(id);
        }
        if !events.is_empty() {
            let g = self.graph.clone();
            let r = tokio::task::spawn_blocking(move || g.apply(events)).await.context("the apply task failed")?;
            match r {
                Ok(r) => {
                    applied = r.applied;
                    self.stats.applied.fetch_add(r.applied as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    // Nothing was recorded: read them all again.
                    let mut q = self.queue.lock();
                    for (id, tries) in &batch {
                        if q.waiting.insert(*id) {
                            q.order.push_back((*id, *tries));
                        }
                    }
                    return Err(e).context("the graph could not record what Drift said");
                }
            }
        }
        // Forget the keys of what was read, unless announced again meanwhile (then its key stays
        // for the next read).
        let removes: Vec<String> = {
            let mut q = self.queue.lock();
            for (id, tries) in &retry {
                if q.waiting.insert(*id) {
                    q.order.push_back((*id, *tries));
                }
            }
            done.iter().filter(|id| !q.waiting.contains(id)).map(|id| state_key(*id)).collect()
        };
        self.graph.update_states(&[], &removes)?;
        self.observer.confirmed(batch.len(), applied, self.queue_len());
        Ok(())
    }
}
