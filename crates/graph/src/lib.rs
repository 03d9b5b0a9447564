//! The identity graph of a Drift org: who owns whom, identities, orphans and history.
//!
//! Built with petgraph from crawled records, persisted in sled. The crawled records are the
//! ground truth; the graph and every index are derived from them and rebuilt at start. A reindex
//! writes a new generation and switches to it atomically, and every switch records what changed.
//!
//! This crate knows nothing of HTTP, GraphQL or the crawler: it takes [`Record`]s and opaque
//! checkpoints, and answers queries.

pub mod audit;
mod codec;
pub mod export;
pub mod index;
pub mod reassign;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use idgraph_model::{Contact, Record, ScimUser, User};
use parking_lot::{RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use index::{
    AccountView, AgentMemory, AgentStatus, AgentView, ContactSlot, ContactView, Freshness, Index, OrphanKey,
    OrphanReason, OrphanView, OwnershipRow,
};
pub use store::{backup_name_ok, BackupReport, CheckReport, GenInfo, InPlaceWrite, Override, Store};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {0} is in use by another process (is `idgraph serve` running? ask it over HTTP instead)")]
    Locked(String),
    #[error("the store was written in format {found}, this idgraph reads format {expected}: reindex into a new data directory")]
    Version { found: u8, expected: u8 },
    #[error("stored data failed its check: {0}")]
    Corrupt(String),
    #[error("cannot encode a value: {0}")]
    Encode(String),
    #[error("sled: {0}")]
    Sled(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0} does not exist")]
    Missing(String),
    #[error("{0} is not an idgraph store (no sled database in it)")]
    NotAStore(String),
    #[error("{0} is not empty: back up into a new directory (or an empty one)")]
    NotEmpty(String),
    #[error("{path} holds a symbolic link ({link}): refused")]
    Link { path: String, link: String },
    #[error("refusing to switch: {0}")]
    Shrink(String),
    #[error("no index yet: run a crawl first")]
    Empty,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e.to_string())
    }
}

/// How a change came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Via {
    Crawl,
    AgentsRefresh,
    Webhook,
    Reassignment,
    /// The refresher read the record again.
    Reread,
    /// The current generation failed its check at start and the previous one is served: what
    /// the damaged one had recorded is undone in the feed, so that the feed replays to the index
    /// served (and the next crawl's changes are not told twice).
    Rollback,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A generation became current (the first one records only this, not a million additions).
    Generation {
        contacts: u64,
        agents: u64,
        accounts: u64,
        initial: bool,
    },
    AgentAppeared {
        agent: u64,
        name: Option<String>,
        email: Option<String>,
    },
    AgentDeactivated {
        agent: u64,
    },
    AgentDeparted {
        agent: u64,
    },
    AgentReactivated {
        agent: u64,
    },
    ContactAdded {
        contact: u64,
        owner: Option<u64>,
    },
    ContactRemoved {
        contact: u64,
        owner: Option<u64>,
    },
    ContactMoved {
        contact: u64,
        from: Option<u64>,
        to: Option<u64>,
    },
}

impl ChangeKind {
    /// The kind's name in the change feed (`CONTACT_MOVED`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::Generation { .. } => "GENERATION",
            ChangeKind::AgentAppeared { .. } => "AGENT_APPEARED",
            ChangeKind::AgentDeactivated { .. } => "AGENT_DEACTIVATED",
            ChangeKind::AgentDeparted { .. } => "AGENT_DEPARTED",
            ChangeKind::AgentReactivated { .. } => "AGENT_REACTIVATED",
            ChangeKind::ContactAdded { .. } => "CONTACT_ADDED",
            ChangeKind::ContactRemoved { .. } => "CONTACT_REMOVED",
            ChangeKind::ContactMoved { .. } => "CONTACT_MOVED",
        }
    }

    pub fn concerns(&self, agent: u64) -> bool {
        match self {
            ChangeKind::Generation { .. } => false,
            ChangeKind::AgentAppeared { agent: a, .. }
            | ChangeKind::AgentDeactivated { agent: a }
            | ChangeKind::AgentDeparted { agent: a }
            | ChangeKind::AgentReactivated { agent: a } => *a == agent,
            ChangeKind::ContactAdded { owner, .. } | ChangeKind::ContactRemoved { owner, .. } => *owner == Some(agent),
            ChangeKind::ContactMoved { from, to, .. } => *from == Some(agent) || *to == Some(agent),
        }
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub seq: u64,
    pub generation: u64,
    pub at_ms: i64,
    pub via: Via,
    pub kind: ChangeKind,
}

/// Which changes a reader of the change feed wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeFilter {
    /// Only changes after this sequence number (a cursor).
    pub after_seq: Option<u64>,
    /// Only changes recorded in this generation or a later one (in-place ones included).
    pub since_generation: Option<u64>,
    /// Only these kinds, by [`ChangeKind::name`].
    pub kinds: Option<Vec<String>>,
    /// Only changes that concern this agent.
    pub agent: Option<u64>,
}

impl ChangeFilter {
    pub fn matches(&self, c: &Change) -> bool {
        self.after_seq.is_none_or(|a| c.seq > a)
            && self.since_generation.is_none_or(|g| c.generation >= g)
            && self.kinds.as_ref().is_none_or(|k| k.iter().any(|k| k == c.kind.name()))
            && self.agent.is_none_or(|a| c.kind.concerns(a))
    }
}

/// An incremental update (a webhook, a reassignment).
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Upsert(Contact),
    Delete { id: u64, at_ms: i64 },
    SetOwner { id: u64, owner: Option<u64>, at_ms: i64 },
}

/// An update with the id that makes applying it idempotent.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `None` for an update that is its own proof against repeats: a re-read says what Drift
    /// holds, so applying it twice changes nothing twice. Only ids are remembered (for a week).
    pub id: Option<String>,
    pub update: Update,
    pub via: Via,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyReport {
    pub applied: usize,
    pub duplicates: usize,
    pub stale: usize,
    pub unknown: usize,
}

/// How far a reindex may shrink the index before it is refused (a broken crawl must never
/// silently replace a good index).
#[derive(Debug, Clone, Copy)]
pub struct ShrinkGuard {
    /// The largest fraction of contacts a new generation may lose.
    pub max_contact_loss: f64,
    /// The largest fraction of known agents that one refresh may mark departed.
    pub max_departures: f64,
}

impl Default for ShrinkGuard {
    fn default() -> Self {
        ShrinkGuard { max_contact_loss: 0.5, max_departures: 0.5 }
    }
}

impl ShrinkGuard {
    pub fn off() -> Self {
        ShrinkGuard { max_contact_loss: 1.0, max_departures: 1.0 }
    }
}

/// A generation being written.
#[derive(Debug)]
pub struct Staging {
    pub generation: u64,
    /// Whether this continues an interrupted crawl.
    pub resumed: bool,
    pub started_at_ms: i64,
}

/// The graph: the store and the index derived from its current generation. Readers never wait
/// for a crawl: a new generation is built aside and swapped in.
#[derive(Debug)]
pub struct Graph {
    store: Store,
    /// A private copy of a store that could not be written (see [`Graph::open_read_only`]),
    /// removed with the graph.
    _copy: Option<tempfile::TempDir>,
    /// The index behind an `Arc`, so that a reader can keep a whole snapshot (an export) while
    /// writers go on: a writer then changes a copy (copy on write).
    index: RwLock<Arc<Index>>,
    info: RwLock<Option<GenInfo>>,
    events_since_prune: std::sync::atomic::AtomicU64,
    /// Serialises writers (in-place changes and switches): each decides against the index,
    /// commits to the store, then shows its change, with no other writer in between.
    writer: parking_lot::Mutex<()>,
    /// The last freshness figures and when they were computed (they read every contact).
    freshness: parking_lot::Mutex<Option<(i64, Freshness)>>,
    /// Set when the current generation failed its check at open and an older one is served.
    fallback: parking_lot::Mutex<Option<Fallback>>,
}

/// The generation served instead of a damaged current one.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

/// Loads a generation's index, checking its values and counts.
fn load(store: &Store, g: u64) -> Result<(Index, GenInfo), StoreError> {
    let info = store.info(g)?.ok_or_else(|| StoreError::Corrupt(format!("generation {g} has no info")))?;
    let inputs = store.index_inputs(g)?;
    if inputs.contacts.len() as u64 != info.contacts {
        return Err(StoreError::Corrupt(format!(
            "generation {g} holds {} contacts, its info says {}",
            inputs.contacts.len(),
            info.contacts
        )));
    }
    Ok((Index::build(g, inputs), info))
}

/// How long applied event ids are remembered, and how often old ones are forgotten.
const EVENTS_KEEP_MS: i64 = 7 * 86_400_000;
const EVENTS_PRUNE_EVERY: u64 = 10_000;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

static INDEX_COPIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// In-place changes (in this process, every org's) that copied the whole index because a reader
/// held a snapshot of it.
pub fn index_copies() -> u64 {
    INDEX_COPIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts (and logs) a change about to copy the index: a reader holds a snapshot of it.
fn note_copy(ix: &Arc<Index>, what: &str) {
    let readers = Arc::strong_count(ix) - 1;
    if readers > 0 {
        let n = INDEX_COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::info!(
            readers,
            copies = n,
            contacts = ix.contact_count(),
            "{what} copies the index: a reader holds a snapshot of it"
        );
    }
}

impl Graph {
    /// The agent memory and every remembered agent's status, read under one guard.
    fn memory_and_statuses(&self) -> (HashMap<u64, AgentMemory>, HashMap<u64, AgentStatus>) {
        let ix = self.read();
        let statuses = ix.memory.keys().filter_map(|id| Some((*id, ix.agent(*id)?.status))).collect();
        (ix.memory.clone(), statuses)
    }

    /// Opens a store only to read it. A store this process cannot write (a copy handed to
    /// auditors, owned by another user, on read-only media) is copied into a private temporary
    /// directory first and opened there (sled writes as it opens): the original is never touched.
    pub fn open_read_only(path: &Path) -> Result<Graph, StoreError> {
        let (store, copy) = Store::open_read_only(path)?;
        if copy.is_some() {
            tracing::info!(path = %path.display(), "the store is not writable: reading a private copy of it");
        }
        let mut g = Graph::with_store(store)?;
        g._copy = copy;
        Ok(g)
    }

    /// Opens the store and loads the current generation, checking it against its info.
    pub fn open(path: &Path) -> Result<Graph, StoreError> {
        Graph::with_store(Store::open(path)?)
    }

    /// [`Graph::open`] with sled's page cache at `cache_bytes` (a server's `cache_mb`).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Graph, StoreError> {
        Graph::with_store(Store::open_with_cache(path, cache_bytes)?)
    }

    fn with_store(store: Store) -> Result<Graph, StoreError> {
        let (index, info, fallback) = match store.current()? {
            Some(g) => match load(&store, g) {
                Ok((ix, info)) => (ix, Some(info), None),
                Err(e) => {
                    let reason = format!("generation {g} fails its check: {e}");
                    match store.previous()?.map(|p| (p, load(&store, p))) {
                        Some((p, Ok((ix, info)))) => {
                            tracing::error!(
                                %reason,
                                serving = p,
                                "the current generation is damaged: serving the previous one until a crawl replaces it"
                            );
                            let undone = store.roll_back_feed(g, p)?;
                            if undone > 0 {
                                tracing::warn!(undone, "the damaged generation's changes are undone in the change feed");
                            }
                            (ix, Some(info), Some(Fallback { from: g, to: p, reason }))
                        }
                        _ => {
                            return Err(StoreError::Corrupt(format!(
                                "{reason}; no earlier generation is intact: restore a backup (`idgraph restore --from DIR`) or crawl into a fresh data directory"
                            )))
                        }
                    }
                }
            },
            None => (Index::default(), None, None),
        };
        Ok(Graph {
            store,
            _copy: None,
            index: RwLock::new(Arc::new(index)),
            info: RwLock::new(info),
            events_since_prune: Default::default(),
            writer: parking_lot::Mutex::new(()),
            freshness: parking_lot::Mutex::new(None),
            fallback: parking_lot::Mutex::new(fallback),
        })
    }

    /// Whether the graph serves an older generation because the current one failed its check.
    pub fn fallback(&self) -> Option<Fallback> {
        self.fallback.lock().clone()
    }

    /// Writes everything to disk (a server stopping).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current index, for reading. Hold the guard briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, Arc<Index>> {
        self.index.read()
    }

    /// The current index as a snapshot that later changes do not touch (for long reads such as
    /// exports). Cheap to take; a writer that changes the index meanwhile copies it.
    pub fn snapshot(&self) -> Arc<Index> {
        self.index.read().clone()
    }

    /// Whether an index is loaded (a first crawl has finished).
    pub fn ready(&self) -> bool {
        self.info.read().is_some()
    }

    /// How fresh the index is, computed at most every few seconds (it reads every contact).
    pub fn freshness(&self) -> Freshness {
        const EVERY_MS: i64 = 5_000;
        let now = now_ms();
        if let Some((at, f)) = *self.freshness.lock() {
            if now - at < EVERY_MS {
                return f;
            }
        }
        let f = self.read().freshness(now);
        *self.freshness.lock() = Some((now, f));
        f
    }

    /// A consistent copy of the current generation and the history into a new store at `dir`,
    /// checked after writing. In-place writers and switches wait while it runs; readers do not.
    /// The generation copied is the one served: after a fallback, the intact previous one, not
    /// the damaged current one.
    pub fn backup_to(&self, dir: &Path) -> Result<BackupReport, StoreError> {
        let _writer = self.writer.lock();
        let served = self.info().map(|i| i.generation).ok_or(StoreError::Empty)?;
        self.store.backup_to(dir, served)
    }

    /// State an app keeps beside the index (the refresher's position and queues), by key.
    pub fn load_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.store.load_state(key)
    }

    pub fn save_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.store.save_state(key, value)
    }

    /// Stores several keys of app state and removes others in one flushed batch.
    pub fn update_states(&self, puts: &[(String, Value)], removes: &[String]) -> Result<(), StoreError> {
        self.store.update_states(puts, removes)
    }

    /// Every key of app state under `prefix`, with its value.
    pub fn put_state<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), StoreError> {
        self.store.put_state(key, v)
    }

    pub fn states_under(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        self.store.states_under(prefix)
    }

    /// The sequence number of the newest recorded change.
    pub fn last_change_seq(&self) -> Result<u64, StoreError> {
        self.store.last_seq()
    }

    pub fn info(&self) -> Option<GenInfo> {
        self.info.read().clone()
    }

    /// Starts (or, with `resume`, continues) a generation.
    pub fn begin(&self, resume: bool) -> Result<Staging, StoreError> {
        // Under the writer's lock: an in-place write mirrors itself into the staging generation
        // it sees, so none may start between its look and its write.
        let _writer = self.writer.lock();
        let (generation, resumed) = self.store.begin(resume)?;
        Ok(Staging { generation, resumed, started_at_ms: now_ms() })
    }

    pub fn write(&self, s: &Staging, records: &[Record], checkpoint: Option<&Value>) -> Result<(), StoreError> {
        self.store.write_records(s.generation, records, checkpoint)
    }

    pub fn checkpoint(&self, s: &Staging) -> Result<Option<Value>, StoreError> {
        self.store.checkpoint(s.generation)
    }

    pub fn staged_contact_ids(&self, s: &Staging) -> Result<HashSet<u64>, StoreError> {
        self.store.contact_ids(s.generation)
    }

    /// Seeds a staging generation with the current generation's contacts.
    pub fn carry_over_contacts(&self, s: &Staging) -> Result<u64, StoreError> {
        match self.store.current()? {
            Some(g) => self.store.copy_contacts(g, s.generation),
            None => Ok(0),
        }
    }

    pub fn abandon(&self, s: Staging) -> Result<(), StoreError> {
        let _writer = self.writer.lock();
        self.store.abandon(s.generation)
    }

    /// Builds the staged generation, checks it, records what changed and switches to it.
    pub fn commit(
        &self,
        s: Staging,
        crawl: Value,
        scim_available: bool,
        guard: ShrinkGuard,
    ) -> Result<Vec<Change>, StoreError> {
        // The writer's lock from the first read of the staged records to the switch: every
        // in-place change committed before it is in the staged generation (mirrored there), none
        // comes after it until the switch, and the diff is taken against exactly the index the
        // switch replaces. Readers go on meanwhile.
        let _writer = self.writer.lock();
        let now = now_ms();
        let mut inputs = self.store.index_inputs(s.generation)?;
        let (mut memory, before) = self.memory_and_statuses();
        let scim = if scim_available { inputs.scim.clone() } else { Vec::new() };
        let statuses = index::remember(&mut memory, &inputs.users, &scim, now);
        let old_contacts = self.info().map_or(0, |i| i.contacts);
        let new_contacts = inputs.contacts.len() as u64;
        let shrink =
            if old_contacts > 0 && (new_contacts as f64) < (old_contacts as f64) * (1.0 - guard.max_contact_loss) {
                Err(StoreError::Shrink(format!(
                    "the new generation has {new_contacts} contacts, the current one {old_contacts}"
                )))
            } else {
                check_departures(&before, &statuses, guard)
            };
        if let Err(e) = shrink {
            // A refused generation is dropped: resuming it would only be refused again.
            self.store.abandon(s.generation)?;
            return Err(e);
        }
        let info = GenInfo {
            generation: s.generation,
            started_at_ms: s.started_at_ms,
            finished_at_ms: now,
            contacts: new_contacts,
            users: inputs.users.len() as u64,
            scim_users: inputs.scim.len() as u64,
            accounts: inputs.accounts.len() as u64,
            scim_available,
            crawl,
            agents_refreshed_at_ms: now,
        };
        if !scim_available {
            inputs.scim.clear();
        }
        inputs.memory = memory.clone();
        // Tombstones for what the new generation does not hold: older news of a contact removed
        // (a read in flight when it went) must not bring it back after the switch.
        let held: HashSet<u64> = inputs.contacts.iter().map(|c| c.id).collect();
        let removed: Vec<u64> = self.read().contact_ids_sorted().into_iter().filter(|id| !held.contains(id)).collect();
        self.store.carry_tombstones(
            self.info().map(|i| i.generation),
            s.generation,
            &held,
            &removed,
            now,
            now - EVENTS_KEEP_MS,
        )?;
        drop(held);
        let new_index = Index::build(s.generation, inputs);
        let initial = self.info().is_none();
        let mut kinds = Vec::new();
        let (c, a, acc) = new_index.counts();
        kinds.push(ChangeKind::Generation { contacts: c as u64, agents: a as u64, accounts: acc as u64, initial });
        kinds.extend(agent_changes(&before, &statuses, &memory));
        if !initial {
            kinds.extend(contact_changes(&self.read().owner_map(), &new_index.owner_map()));
        }
        let kinds: Vec<(ChangeKind, Via)> = kinds.into_iter().map(|k| (k, Via::Crawl)).collect();
        let served = self.info().map(|i| i.generation);
        let changes = self.store.switch(s.generation, served, &memory, &info, &kinds)?;
        *self.fallback.lock() = None;
        let old = {
            let mut ix = self.index.write();
            *self.info.write() = Some(info);
            std::mem::replace(&mut *ix, Arc::new(new_index))
        };
        // The old index is dropped here, outside the lock.
        drop(old);
        Ok(changes)
    }

    /// Builds the served index again from the store and serves it instead: the same contents
    /// (the store is the ground truth, and every in-place change is written there before the
    /// index shows it), derived as at start, without a restart. It does not lower resident
    /// memory (the soak in docs/benchmarks.md measured it). Writers wait while it runs (seconds
    /// at a million contacts), readers do not; both indexes are held meanwhile. Returns the
    /// generation rebuilt (`None`: none is served yet).
    pub fn rebuild_index(&self) -> Result<Option<u64>, StoreError> {
        let _writer = self.writer.lock();
        let Some(served) = self.info() else { return Ok(None) };
        let (index, info) = load(&self.store, served.generation)?;
        let old = {
            let mut ix = self.index.write();
            *self.info.write() = Some(info);
            std::mem::replace(&mut *ix, Arc::new(index))
        };
        // The old index is dropped here, outside the lock (or by its last reader).
        drop(old);
        Ok(Some(served.generation))
    }

    /// An agents-only refresh: new users and SCIM users applied to the current generation in place.
    /// `scim` is `None` when SCIM was not available.
    pub fn refresh_agents(
        &self,
        users: Vec<User>,
        scim: Option<Vec<ScimUser>>,
        guard: ShrinkGuard,
    ) -> Result<Vec<Change>, StoreError> {
        let _writer = self.writer.lock();
        let Some(mut info) = self.info() else {
            return Err(StoreError::Empty);
        };
        let now = now_ms();
        let (mut memory, before) = self.memory_and_statuses();
        // Without SCIM this refresh says nothing about deactivation: keep the stored SCIM view.
        let scim_now = match &scim {
            Some(s) => s.clone(),
            None if info.scim_available => self.store.inputs(info.generation)?.scim,
            None => Vec::new(),
        };
        let statuses = index::remember(&mut memory, &users, &scim_now, now);
        check_departures(&before, &statuses, guard)?;
        info.users = users.len() as u64;
        if let Some(s) = &scim {
            info.scim_users = s.len() as u64;
        }
        info.agents_refreshed_at_ms = now;
        let mut w = InPlaceWrite {
            changes: agent_changes(&before, &statuses, &memory).into_iter().map(|k| (k, Via::AgentsRefresh)).collect(),
            at_ms: now,
            ..InPlaceWrite::default()
        };
        self.store.agents_write(info.generation, &users, scim.as_deref(), &memory, &mut w)?;
        w.info = Some(info.clone());
        let changes = self.store.commit_in_place(info.generation, &w)?;
        let mut ix = self.index.write();
        note_copy(&ix, "an agents refresh");
        Arc::make_mut(&mut ix).apply_agents(&users, &scim_now, memory);
        *self.info.write() = Some(info);
        Ok(changes)
    }

    /// Applies incremental updates: each at most once (by event id), none rolling a contact back.
    /// The whole batch (event ids, contacts, info, history) is committed to the store in one
    /// transaction before the index shows any of it; when the write fails, nothing changes and
    /// the events stay unseen, so a redelivery applies them.
    pub fn apply(&self, events: Vec<Event>) -> Result<ApplyReport, StoreError> {
        let _writer = self.writer.lock();
        let Some(mut info) = self.info() else {
            return Err(StoreError::Empty);
        };
        let now = now_ms();
        let mut report = ApplyReport::default();
        let mut w = InPlaceWrite { at_ms: now, ..InPlaceWrite::default() };
        let mut batch_ids = HashSet::new();
        let mut batch_deleted: HashMap<u64, i64> = HashMap::new();
        // Each applied update's contact as it is after it (`None`: deleted), in order.
        let mut effects: Vec<(u64, Option<ContactView>)> = Vec::new();
        let contacts = {
            let ix = self.read();
            // What each contact looks like after the updates decided so far in this batch.
            let mut overlay: HashMap<u64, Option<ContactView>> = HashMap::new();
            let mut count = ix.contact_count() as i64;
            for ev in events {
                if let Some(eid) = ev.id {
                    if !batch_ids.insert(eid.clone()) || self.store.seen(&eid)? {
                        report.duplicates += 1;
                        continue;
                    }
                    w.event_ids.push(eid);
                }
                let id = ev.update.contact_id();
                let before = match overlay.get(&id) {
                    Some(c) => c.clone(),
                    None => ix.contact(id),
                };
                // A contact removed is remembered (its tombstone): older news of it is stale.
                if let (Update::Upsert(c), None) = (&ev.update, &before) {
                    let gone = match (batch_deleted.get(&id), overlay.contains_key(&id)) {
                        (Some(at), _) => Some(*at),
                        (None, true) => None,
                        (None, false) => self.store.deleted_at(info.generation, id)?,
                    };
                    if gone.is_some_and(|at| at >= c.updated_at) {
                        report.stale += 1;
                        continue;
                    }
                }
                let Some((after, kind, write)) = decide(&ev.update, before.as_ref(), now) else {
                    match (&ev.update, &before) {
                        (Update::Upsert(_), _) | (_, Some(_)) => report.stale += 1,
                        _ => report.unknown += 1,
                    }
                    continue;
                };
                report.applied += 1;
                count += after.is_some() as i64 - before.is_some() as i64;
                w.changes.extend(kind.map(|k| (k, ev.via)));
                w.overrides.extend(write.map(|o| (id, o)));
                if after.is_some() {
                    w.verified.push(id);
                }
                if let Update::Delete { at_ms, .. } = &ev.update {
                    batch_deleted.insert(id, *at_ms);
                }
                overlay.insert(id, after.clone());
                effects.push((id, after));
            }
            count.max(0) as u64
        };
        info.contacts = contacts;
        w.info = Some(info.clone());
        self.store.commit_in_place(info.generation, &w)?;
        {
            let mut guard = self.index.write();
            note_copy(&guard, "an in-place change");
            let ix = Arc::make_mut(&mut guard);
            for (id, after) in effects {
                ix.put_contact(id, after);
            }
            ix.finish_batch();
            *self.info.write() = Some(info);
        }
        self.prune_seen_events(w.event_ids.len() as u64, now)?;
        Ok(report)
    }

    /// Keeps the table of applied event ids bounded: every `EVENTS_PRUNE_EVERY` events, ids older
    /// than `EVENTS_KEEP_MS` are forgotten (Drift redelivers within minutes, not weeks).
    fn prune_seen_events(&self, added: u64, now: i64) -> Result<(), StoreError> {
        let before = self.events_since_prune.fetch_add(added, std::sync::atomic::Ordering::Relaxed);
        if before / EVENTS_PRUNE_EVERY != (before + added) / EVENTS_PRUNE_EVERY {
            let n = self.store.prune_events(now - EVENTS_KEEP_MS)?;
            tracing::debug!(pruned = n, "forgot old webhook event ids");
        }
        Ok(())
    }

    /// The change feed: changes passing `filter`, oldest first.
    pub fn changes(&self, filter: &ChangeFilter, first: usize) -> Result<Vec<Change>, StoreError> {
        self.store.changes(filter, first)
    }

    /// How many changes pass `filter` (its cursor ignored).
    pub fn count_changes(&self, filter: &ChangeFilter) -> Result<usize, StoreError> {
        self.store.count_changes(filter)
    }

    /// Every recorded change, newest first, until `visit` returns false.
    pub fn for_each_change_rev(&self, visit: impl FnMut(Change) -> bool) -> Result<(), StoreError> {
        self.store.for_each_change_rev(visit)
    }

    pub fn agent_history(&self, agent: u64) -> Result<Vec<Change>, StoreError> {
        self.store.changes_of_agent(agent)
    }
}

/// What changed for contacts between two generations' owner maps.
fn contact_changes(old: &HashMap<u64, Option<u64>>, new: &HashMap<u64, Option<u64>>) -> Vec<ChangeKind> {
    let mut kinds = Vec::new();
    for (id, owner) in new {
        match old.get(id) {
            None => kinds.push(ChangeKind::ContactAdded { contact: *id, owner: *owner }),
            Some(o) if o != owner => kinds.push(ChangeKind::ContactMoved { contact: *id, from: *o, to: *owner }),
            _ => {}
        }
    }
    for (id, owner) in old {
        if !new.contains_key(id) {
            kinds.push(ChangeKind::ContactRemoved { contact: *id, owner: *owner });
        }
    }
    kinds
}

impl Update {
    pub fn contact_id(&self) -> u64 {
        match self {
            Update::Upsert(c) => c.id,
            Update::Delete { id, .. } | Update::SetOwner { id, .. } => *id,
        }
    }
}

/// Whether two versions of a contact differ at most in when Drift last confirmed them (compared
/// without a copy: most re-reads ask).
fn same_but_verified(a: &ContactView, b: &ContactView) -> bool {
    let ContactView { id, email, name, owner_id, external_id, updated_at_ms, verified_at_ms: _ } = a;
    *id == b.id
        && *email == b.email
        && *name == b.name
        && *owner_id == b.owner_id
        && *external_id == b.external_id
        && *updated_at_ms == b.updated_at_ms
}

/// What an update does to a contact as it stands (`None`: absent): the contact after it, the
/// change to record and the override to store; `None` when it does not apply (older than what is
/// known, or about a contact idgraph does not hold). The one place these rules live: the index
/// only takes the result (`Index::put_contact`).
fn decide(
    u: &Update,
    before: Option<&ContactView>,
    now: i64,
) -> Option<(Option<ContactView>, Option<ChangeKind>, Option<Override>)> {
    match u {
        Update::Upsert(c) => {
            if before.is_some_and(|b| b.updated_at_ms > c.updated_at) {
                return None;
            }
            let after = index::contact_view(c, now);
            // The version the index holds, confirmed (most re-reads): only the verified time is
            // new, and the store already has the record, so only that time is written.
            if before.is_some_and(|b| same_but_verified(b, &after)) {
                return Some((Some(after), None, None));
            }
            let kind = match before {
                None => Some(ChangeKind::ContactAdded { contact: c.id, owner: c.owner_id }),
                Some(b) if b.owner_id != c.owner_id => {
                    Some(ChangeKind::ContactMoved { contact: c.id, from: b.owner_id, to: c.owner_id })
                }
                _ => None,
            };
            Some((Some(after), kind, Some(Override::Put(c.clone()))))
        }
        Update::Delete { id, at_ms } => {
            let b = before.filter(|b| b.updated_at_ms <= *at_ms)?;
            Some((
                None,
                Some(ChangeKind::ContactRemoved { contact: *id, owner: b.owner_id }),
                Some(Override::Deleted { at_ms: *at_ms }),
            ))
        }
        Update::SetOwner { id, owner, at_ms } => {
            let b = before.filter(|b| b.updated_at_ms <= *at_ms)?;
            let kind = (b.owner_id != *owner).then_some(ChangeKind::ContactMoved {
                contact: *id,
                from: b.owner_id,
                to: *owner,
            });
            let after = ContactView { owner_id: *owner, updated_at_ms: *at_ms, verified_at_ms: now, ..b.clone() };
            Some((Some(after), kind, Some(Override::Owner { owner: *owner, at_ms: *at_ms })))
        }
    }
}

fn check_departures(
    before: &HashMap<u64, AgentStatus>,
    after: &HashMap<u64, AgentStatus>,
    guard: ShrinkGuard,
) -> Result<(), StoreError> {
    let known = before.values().filter(|s| **s != AgentStatus::Departed).count();
    let departing = after
        .iter()
        .filter(|(id, s)| **s == AgentStatus::Departed && before.get(id).is_some_and(|b| *b != AgentStatus::Departed))
        .count();
    if known >= 10 && (departing as f64) > (known as f64) * guard.max_departures {
        return Err(StoreError::Shrink(format!(
            "{departing} of {known} agents would be marked departed at once; check the crawl's credentials and scopes"
        )));
    }
    Ok(())
}

fn agent_changes(
    before: &HashMap<u64, AgentStatus>,
    after: &HashMap<u64, AgentStatus>,
    memory: &HashMap<u64, AgentMemory>,
) -> Vec<ChangeKind> {
    let mut out = Vec::new();
    let mut ids: Vec<&u64> = after.keys().collect();
    ids.sort();
    for id in ids {
        let new = after[id];
        let old = before.get(id).copied();
        let kind = match (old, new) {
            (None | Some(AgentStatus::Unknown), _) => {
                let m = memory.get(id);
                Some(ChangeKind::AgentAppeared {
                    agent: *id,
                    name: m.and_then(|m| m.name.clone()),
                    email: m.and_then(|m| m.email.clone()),
                })
            }
            (Some(o), n) if o == n => None,
            (_, AgentStatus::Deactivated) => Some(ChangeKind::AgentDeactivated { agent: *id }),
            (_, AgentStatus::Departed) => Some(ChangeKind::AgentDeparted { agent: *id }),
            (Some(AgentStatus::Deactivated | AgentStatus::Departed), AgentStatus::Active) => {
                Some(ChangeKind::AgentReactivated { agent: *id })
            }
            _ => None,
        };
        out.extend(kind);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: u64) -> Record {
        Record::Contact(Contact {
            id,
            email: None,
            name: None,
            owner_id: Some(1),
            external_id: None,
            created_at: 0,
            updated_at: 0,
            extra: Default::default(),
        })
    }

    /// Opens the store again after a drop. sled's flusher thread can hold the directory's lock a
    /// moment after the last handle goes (seen on a loaded machine): wait for it, a bounded while.
    fn reopen(dir: &Path) -> Graph {
        for _ in 0..100 {
            match Graph::open(dir) {
                Err(StoreError::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(20)),
                other => return other.unwrap(),
            }
        }
        Graph::open(dir).unwrap()
    }

    /// A store at `dir` whose current generation holds contact 10 (owned by 1).
    fn one_contact(dir: &Path) -> Graph {
        let g = Graph::open(dir).unwrap();
        let s = g.begin(true).unwrap();
        g.write(&s, &[contact(10)], None).unwrap();
        g.commit(s, Value::Null, false, ShrinkGuard::default()).unwrap();
        g
    }

    #[test]
    fn late_updates_never_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let g = one_contact(dir.path());
        let ev = |id: &str, update| Event { id: Some(id.into()), update, via: Via::Webhook };
        let r = g.apply(vec![ev("a", Update::SetOwner { id: 10, owner: Some(2), at_ms: 20 })]).unwrap();
        assert_eq!(r.applied, 1);
        let r = g.apply(vec![ev("b", Update::SetOwner { id: 10, owner: Some(1), at_ms: 15 })]).unwrap();
        assert_eq!(r.stale, 1, "an older change is ignored");
        assert_eq!(g.read().owner_of(10).unwrap().id, 2);
        let Record::Contact(mut stale) = contact(10) else { unreachable!() };
        stale.updated_at = 5;
        let r = g.apply(vec![ev("c", Update::Upsert(stale))]).unwrap();
        assert_eq!(r.stale, 1, "an older record is ignored");
        assert_eq!(g.read().owned_contacts(2, None, 10).1, 1);
        assert_eq!(g.read().owned_contacts(1, None, 10).1, 0);
    }

    #[test]
    fn re_reads_apply_every_time_and_leave_no_event_ids_behind() {
        let dir = tempfile::tempdir().unwrap();
        let g = one_contact(dir.path());
        let Record::Contact(mut c) = contact(10) else { unreachable!() };
        for owner in [2, 3] {
            c.owner_id = Some(owner);
            c.updated_at += 1;
            let reread = Event { id: None, update: Update::Upsert(c.clone()), via: Via::Reread };
            let r = g.apply(vec![reread.clone(), reread]).unwrap();
            assert_eq!((r.applied, r.duplicates), (2, 0), "a re-read is not a duplicate of another");
            assert_eq!(g.read().owner_of(10).unwrap().id, owner);
        }
        assert_eq!(g.store.events_remembered(), 0, "re-reads are not remembered as events");
        // A re-read that finds the contact as it is: only its verified time changes, and stays.
        let before = g.read().contact(10).unwrap().verified_at_ms;
        std::thread::sleep(std::time::Duration::from_millis(5));
        let r = g.apply(vec![Event { id: None, update: Update::Upsert(c.clone()), via: Via::Reread }]).unwrap();
        assert_eq!(r.applied, 1);
        let confirmed = g.read().contact(10).unwrap();
        assert!(confirmed.verified_at_ms > before, "a confirming re-read verifies");
        drop(g);
        let g = reopen(dir.path());
        assert_eq!(g.read().contact(10).unwrap(), confirmed, "as it was after a restart");
    }

    #[test]
    fn a_generation_that_shrinks_too_much_is_refused_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let g = Graph::open(dir.path()).unwrap();
        let s = g.begin(true).unwrap();
        g.write(&s, &(1..=100).map(contact).collect::<Vec<_>>(), None).unwrap();
        g.commit(s, Value::Null, false, ShrinkGuard::default()).unwrap();
        let s = g.begin(true).unwrap();
        g.write(&s, &(1..=10).map(contact).collect::<Vec<_>>(), None).unwrap();
        let err = g.commit(s, Value::Null, false, ShrinkGuard::default()).unwrap_err();
        assert!(matches!(err, StoreError::Shrink(_)), "{err}");
        assert_eq!(g.read().contact_count(), 100, "the good index is still served");
        let next = g.begin(true).unwrap();
        assert!(!next.resumed, "the refused generation is not resumed");
        drop(g);
        assert_eq!(reopen(dir.path()).info().unwrap().contacts, 100);
    }
}
