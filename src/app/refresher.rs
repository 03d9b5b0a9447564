//! The refresher: between full crawls, it spends a share of the rate budget re-reading what is
//! already known, so that the index does not drift away from Drift silently. By priority:
//!
//! 1. contacts of new conversations (a contact created since the last look);
//! 2. the contacts of an agent who has just become DEACTIVATED or DEPARTED (it follows the change
//!    feed), so that the orphans an offboarding creates are verified within minutes;
//! 3. the other orphans, least recently verified first: those not verified since their owner
//!    went, then (without a listing) every orphan again once its last check is older than the
//!    orphan period, `ORPHAN_FACTOR` times as often as the other contacts, within at most half the
//!    refresher's budget: orphans are what an audit names, so they are kept the freshest;
//! 4. everything else, in a cycle over the org: listing pages where the org has a listing,
//!    `GET /contacts/{id}` where it does not.
//!
//! Reads go out on a steady beat at the refresher's share of the budget, without waiting for the
//! previous answer, so a slow answer delays only itself (at most a batch in flight).
//!
//! A contact that answers 404 is removed (with history). Every read lands in place, through
//! `Graph::apply`, as `REREAD`. It pauses while a full reindex, an agents refresh or a
//! reassignment runs, and keeps its position and queues in the store, so a restart goes on where
//! it was.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use idgraph_crawler::{ContactsMode, CrawlSummary, Crawler};
use idgraph_graph::{now_ms, ChangeFilter, ChangeKind, Event, Graph, Index, Update, Via};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::app::scheduler::Scheduler;

/// Where the refresher keeps its state in the store.
const STATE_KEY: &str = "refresher";
/// Contacts read between two writes to the graph, at least (a quarter second's worth at large
/// budgets, at most `MAX_BATCH`): also the most reads in flight.
const BATCH: usize = 10;
const MAX_BATCH: usize = 256;
/// Orphans are re-read this many times as often as other contacts...
pub const ORPHAN_FACTOR: f64 = 8.0;
/// ...with at most this share of the refresher's budget.
pub const MAX_ORPHAN_SHARE: f64 = 0.5;
/// The queue of orphans due is rebuilt at most this often (it scans every orphan).
const ORPHAN_QUEUE_EVERY_MS: i64 = 1_000;
/// The queue holds at most this many (the least recently verified); the rest wait their turn.
const ORPHAN_QUEUE_MAX: usize = 20_000;
/// New conversations are looked at once every this many steps (a request a look).
const CONVERSATIONS_EVERY_STEPS: u64 = 5;
/// How far back the first look at conversations goes.
const CONVERSATIONS_LOOKBACK_MS: i64 = 3_600_000;

/// Why a contact was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    NewConversation,
    Leaver,
    Orphan,
    Cycle,
}

/// What the refresher has done since it started.
#[derive(Debug, Default)]
pub struct RefreshStats {
    pub reads: AtomicU64,
    pub new_conversation_reads: AtomicU64,
    pub leaver_reads: AtomicU64,
    pub orphan_reads: AtomicU64,
    pub cycle_reads: AtomicU64,
    pub removed: AtomicU64,
    pub cycles: AtomicU64,
    /// How long the last complete cycle took, in milliseconds (0: none yet).
    pub last_cycle_ms: AtomicU64,
    pub errors: AtomicU64,
}

/// What survives a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// The change feed is read up to here (for agents who went).
    feed_seq: u64,
    /// Conversations are read back to here.
    conversations_ms: Option<i64>,
    /// New contacts seen in conversations, still to read.
    named: VecDeque<u64>,
    /// Agents who went, with the last of their contacts read.
    leavers: VecDeque<(u64, u64)>,
    /// The cycle: the last contact read (by id), or the listing's cursor, and when it began.
    cycle_after: Option<u64>,
    listing_cursor: Option<String>,
    cycle_started_ms: i64,
}

pub struct Refresher {
    graph: Arc<Graph>,
    crawler: Crawler,
    scheduler: Arc<Scheduler>,
    /// Requests a second the refresher may spend: its share of the budget.
    per_s: f64,
    state: Mutex<State>,
    /// The contact ids of the cycle under way, sorted (built once a cycle).
    cycle_ids: Mutex<Option<Arc<Vec<u64>>>>,
    /// Orphans due for a check, least recently verified first, and when the queue was built.
    orphan_queue: Mutex<(i64, VecDeque<u64>)>,
    pub stats: RefreshStats,
}

impl Refresher {
    /// Starts the refresher at `share` of the crawler's budget (call inside a Tokio runtime).
    pub fn start(graph: Arc<Graph>, crawler: Crawler, scheduler: Arc<Scheduler>, share: f64) -> Result<Arc<Refresher>> {
        let state = match graph.load_state(STATE_KEY)? {
            Some(v) => serde_json::from_value(v).unwrap_or_default(),
            None => State { feed_seq: graph.last_change_seq()?, cycle_started_ms: now_ms(), ..State::default() },
        };
        let per_s = crawler.config().budget.per_second() * share.clamp(0.0, 1.0);
        let me = Arc::new(Refresher {
            graph,
            crawler,
            scheduler,
            per_s,
            state: Mutex::new(state),
            cycle_ids: Mutex::new(None),
            orphan_queue: Mutex::new((i64::MIN, VecDeque::new())),
            stats: Default::default(),
        });
        let r = me.clone();
        tokio::spawn(async move { r.run().await });
        Ok(me)
    }

    /// Whether the org has a contact listing (read pages of 100) or not (a request a contact).
    fn listing(&self) -> bool {
        let mode =
            self.graph.info().and_then(|i| serde_json::from_value::<CrawlSummary>(i.crawl).ok()).and_then(|c| c.mode);
        mode == Some(ContactsMode::Listing)
    }

    /// Without a listing, the share of the refresher's budget that goes to checking orphans again
    /// (with one, the cycle reads a hundred contacts a request and orphans get no round of their
    /// own).
    fn orphan_share(&self, contacts: usize, orphans: usize) -> f64 {
        if contacts == 0 {
            return 0.0;
        }
        (ORPHAN_FACTOR * orphans as f64 / contacts as f64).min(MAX_ORPHAN_SHARE)
    }

    /// How often each orphan is checked again, in milliseconds.
    fn orphan_period_ms(&self, contacts: usize, orphans: usize) -> i64 {
        let share = self.orphan_share(contacts, orphans).max(1e-9);
        (orphans as f64 / (self.per_s.max(1e-9) * share) * 1000.0) as i64
    }

    /// What re-reading every contact once takes at this share of the budget: the orphans in
    /// their own, faster round, the other contacts in the cycle, with what the orphans leave.
    pub fn projected_cycle_seconds(&self, contacts: usize) -> f64 {
        if self.listing() {
            return contacts.div_ceil(100) as f64 / self.per_s.max(1e-9);
        }
        let orphans = self.graph.read().orphan_total().min(contacts);
        let share = self.orphan_share(contacts, orphans);
        (contacts - if share > 0.0 { orphans } else { 0 }) as f64 / (self.per_s.max(1e-9) * (1.0 - share))
    }

    /// How long the last complete cycle took.
    pub fn last_cycle_seconds(&self) -> Option<f64> {
        let ms = self.stats.last_cycle_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| ms as f64 / 1000.0)
    }

    async fn run(self: Arc<Self>) {
        let gap = Duration::from_secs_f64(1.0 / self.per_s.max(1e-6));
        // Requests start on a steady beat: the time a request takes is not added to the gap, so
        // the refresher spends its share, no more, no less.
        let mut pace = tokio::time::interval(gap);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut steps = 0u64;
        loop {
            // Full reindexes, agents refreshes and reassignments come first: wait while one runs
            // (they are short or asked for by a person, and what they change decides what to read).
            while self.scheduler.busy() || !self.graph.ready() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            steps += 1;
            if let Err(e) = self.step(&mut pace, steps).await {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %format!("{e:#}"), "the refresher's step failed; it goes on");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// One step: new conversations (every few steps) and leavers noted, a batch read on the
    /// beat, applied, state saved.
    async fn step(&self, pace: &mut tokio::time::Interval, steps: u64) -> Result<()> {
        self.follow_feed()?;
        if steps % CONVERSATIONS_EVERY_STEPS == 1 && self.state.lock().named.is_empty() {
            pace.tick().await;
            self.look_at_conversations().await?;
        }
        let size = ((self.per_s / 4.0) as usize).clamp(BATCH, MAX_BATCH);
        let batch = {
            let ix = self.graph.read();
            self.next_batch(&ix, size)
        };
        let mut events = Vec::new();
        if batch.is_empty() && self.listing() {
            pace.tick().await;
            events = self.listing_step().await?;
        }
        // Each read leaves on the beat; none waits for the one before it.
        let mut reads = Vec::with_capacity(batch.len());
        for (id, purpose) in batch {
            pace.tick().await;
            let crawler = self.crawler.clone();
            reads.push(tokio::spawn(async move { (id, purpose, crawler.read_contact(id).await) }));
        }
        for read in reads {
            let (id, purpose, answer) = read.await.context("a re-read task failed")?;
            let at = now_ms();
            let update = match answer {
                Ok(Some(c)) => Update::Upsert(c),
                Ok(None) => {
                    self.stats.removed.fetch_add(1, Ordering::Relaxed);
                    Update::Delete { id, at_ms: at }
                }
                Err(e) => {
                    // Retried already by the crawler; the contact comes round again.
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(contact = id, error = %e, "a re-read failed");
                    continue;
                }
            };
            self.count(purpose);
            events.push(Event { id: None, update, via: Via::Reread });
        }
        if events.is_empty() {
            // Nothing to read (an empty org): wait a beat rather than spin.
            pace.tick().await;
            return Ok(());
        }
        {
            let g = self.graph.clone();
            tokio::task::spawn_blocking(move || g.apply(events)).await.context("the apply task failed")??;
        }
        let state = serde_json::to_value(&*self.state.lock())?;
        self.graph.save_state(STATE_KEY, &state)?;
        Ok(())
    }

    fn count(&self, p: Purpose) {
        let s = &self.stats;
        s.reads.fetch_add(1, Ordering::Relaxed);
        match p {
            Purpose::NewConversation => &s.new_conversation_reads,
            Purpose::Leaver => &s.leaver_reads,
            Purpose::Orphan => &s.orphan_reads,
            Purpose::Cycle => &s.cycle_reads,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Agents who went since the last look, from the change feed, join the leavers' queue.
    fn follow_feed(&self) -> Result<()> {
        let mut st = self.state.lock();
        let kinds = vec!["AGENT_DEACTIVATED".to_string(), "AGENT_DEPARTED".to_string()];
        // Where the feed ends before looking: a change committed while we look is seen next time.
        let end = self.graph.last_change_seq()?;
        loop {
            let f =
                ChangeFilter { after_seq: Some(st.feed_seq), kinds: Some(kinds.clone()), ..ChangeFilter::default() };
            let page = self.graph.changes(&f, 1000)?;
            let Some(last) = page.last() else { break };
            st.feed_seq = last.seq;
            for c in &page {
                if let ChangeKind::AgentDeactivated { agent } | ChangeKind::AgentDeparted { agent } = c.kind {
                    if !st.leavers.iter().any(|(a, _)| *a == agent) {
                        st.leavers.push_back((agent, 0));
                    }
                }
            }
        }
        st.feed_seq = st.feed_seq.max(end);
        Ok(())
    }

    /// New conversations since the last look name contacts idgraph may not know yet.
    async fn look_at_conversations(&self) -> Result<()> {
        let since = self.state.lock().conversations_ms.unwrap_or_else(|| now_ms() - CONVERSATIONS_LOOKBACK_MS);
        let (ids, newest) = self.crawler.conversation_contacts(since, 5).await?;
        let known: HashSet<u64> = {
            let ix = self.graph.read();
            ids.iter().copied().filter(|id| ix.contact_ref(*id).is_some()).collect()
        };
        let mut st = self.state.lock();
        for id in ids {
            if !known.contains(&id) && !st.named.contains(&id) {
                st.named.push_back(id);
            }
        }
        // Conversations updated in the same millisecond as the newest are read again next time.
        if let Some(n) = newest {
            st.conversations_ms = Some(st.conversations_ms.unwrap_or(n).max(n));
        }
        Ok(())
    }

    /// The next contacts to read, by priority.
    fn next_batch(&self, ix: &Index, n: usize) -> Vec<(u64, Purpose)> {
        let mut st = self.state.lock();
        let mut out: Vec<(u64, Purpose)> = Vec::with_capacity(n);
        while out.len() < n {
            let Some(id) = st.named.pop_front() else { break };
            out.push((id, Purpose::NewConversation));
        }
        while out.len() < n {
            let Some((agent, after)) = st.leavers.front().copied() else { break };
            let left: Vec<u64> =
                ix.owned_contact_ids(agent).into_iter().filter(|c| *c > after).take(n - out.len()).collect();
            match left.last() {
                Some(last) => {
                    if let Some(front) = st.leavers.front_mut() {
                        front.1 = *last;
                    }
                    out.extend(left.into_iter().map(|c| (c, Purpose::Leaver)));
                }
                None => {
                    st.leavers.pop_front();
                }
            }
        }
        let listing = self.listing();
        // Orphans not verified since their owner went come first; the others take at most their
        // share of the batch while the cycle has contacts left, the whole of it when it has none.
        let taken: HashSet<u64> = out.iter().map(|(id, _)| *id).collect();
        out.extend(
            self.orphans_due(ix, listing, n - out.len(), &taken, true).into_iter().map(|c| (c, Purpose::Orphan)),
        );
        let taken: HashSet<u64> = out.iter().map(|(id, _)| *id).collect();
        let quota = if listing { n - out.len() } else { (n - out.len()).div_ceil(2) };
        out.extend(self.orphans_due(ix, listing, quota, &taken, false).into_iter().map(|c| (c, Purpose::Orphan)));
        if out.len() < n && !listing {
            out.extend(self.cycle(&mut st, ix, n - out.len()).into_iter().map(|c| (c, Purpose::Cycle)));
        }
        if out.len() < n {
            let taken: HashSet<u64> = out.iter().map(|(id, _)| *id).collect();
            out.extend(
                self.orphans_due(ix, listing, n - out.len(), &taken, false).into_iter().map(|c| (c, Purpose::Orphan)),
            );
        }
        out
    }

    /// Up to `n` orphans due for a check from a queue rebuilt at most every second: first those
    /// not verified since their owner went (`urgent`: only those), then (without a listing) those
    /// whose last check is older than the orphan period, least recently verified first.
    fn orphans_due(&self, ix: &Index, listing: bool, n: usize, taken: &HashSet<u64>, urgent: bool) -> Vec<u64> {
        let now = now_ms();
        let (contacts, orphans) = (ix.contact_count(), ix.orphan_total());
        let period = if listing { None } else { Some(self.orphan_period_ms(contacts, orphans)) };
        let due =
            |gone: i64, verified: i64| verified < gone || period.is_some_and(|p| verified < now.saturating_sub(p));
        let mut q = self.orphan_queue.lock();
        if q.1.is_empty() && now.saturating_sub(q.0) >= ORPHAN_QUEUE_EVERY_MS {
            q.0 = now;
            let mut found: Vec<(bool, i64, u64)> = ix
                .orphan_refs(None, usize::MAX)
                .into_iter()
                .filter(|(key, c, _)| due(key.1, c.verified_at_ms))
                .map(|(key, c, _)| (c.verified_at_ms >= key.1, c.verified_at_ms, c.id))
                .collect();
            found.sort_unstable();
            found.truncate(ORPHAN_QUEUE_MAX);
            q.1 = found.into_iter().map(|(_, _, id)| id).collect();
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(&id) = q.1.front() else { break };
            let key = ix.orphan_key_of(id);
            if urgent && key.zip(ix.contact_ref(id)).is_some_and(|(k, c)| c.verified_at_ms >= k.1) {
                break;
            }
            q.1.pop_front();
            // Still an orphan, still due (a webhook or the cycle may have read it meanwhile)?
            let still = key.zip(ix.contact_ref(id)).is_some_and(|(k, c)| due(k.1, c.verified_at_ms));
            if still && !taken.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// The next contacts of the cycle over the org, by id, skipping those verified since it began.
    fn cycle(&self, st: &mut State, ix: &Index, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        let ids = self.cycle_ids.lock().get_or_insert_with(|| Arc::new(ix.contact_ids_sorted())).clone();
        let mut start = st.cycle_after.map_or(0, |a| ids.partition_point(|id| *id <= a));
        while out.len() < n {
            let Some(id) = ids.get(start).copied() else {
                // A cycle ends; the next begins.
                self.stats.cycles.fetch_add(1, Ordering::Relaxed);
                let took = (now_ms() - st.cycle_started_ms).max(1) as u64;
                self.stats.last_cycle_ms.store(took, Ordering::Relaxed);
                st.cycle_after = None;
                st.cycle_started_ms = now_ms();
                *self.cycle_ids.lock() = None;
                break;
            };
            start += 1;
            st.cycle_after = Some(id);
            if ix.contact_ref(id).is_some_and(|c| c.verified_at_ms < st.cycle_started_ms) {
                out.push(id);
            }
        }
        out
    }

    /// A cycle step where the org has a listing: one page of 100 contacts.
    async fn listing_step(&self) -> Result<Vec<Event>> {
        let cursor = self.state.lock().listing_cursor.clone();
        let (contacts, next) = self.crawler.listing_page(cursor.as_deref()).await?;
        let at = now_ms();
        {
            let mut st = self.state.lock();
            if next.is_none() {
                self.stats.cycles.fetch_add(1, Ordering::Relaxed);
                self.stats.last_cycle_ms.store((at - st.cycle_started_ms).max(1) as u64, Ordering::Relaxed);
                st.cycle_started_ms = at;
            }
            st.listing_cursor = next;
        }
        Ok(contacts
            .into_iter()
            .map(|c| {
                self.count(Purpose::Cycle);
                Event { id: None, update: Update::Upsert(c), via: Via::Reread }
            })
            .collect())
    }
}
