//! Persistence in sled: generations of crawled records, agent memory, history, seen events.
//!
//! Layout: one tree per generation (`gen-<n>`), keys prefixed by kind so that one sled batch can
//! write records and the crawl checkpoint together; a `meta` tree naming the current and the
//! staging generation and the last change sequence number; a `history` tree keyed by sequence
//! number (the change feed); a `history_gens` tree giving the first sequence number of each
//! generation; an `events` tree of the webhook event ids already applied.
//!
//! A generation becomes current by one transaction that writes its history and `meta/current`,
//! after everything it needs is flushed; a crash at any point leaves the previous current
//! generation whole. Trees of generations that never became current are removed at open.
//!
//! Every in-place change (webhooks, agents refreshes, re-reads, reassignments) is one
//! [`InPlaceWrite`]: its event ids, records, info and history land in one sled transaction, or
//! not at all.

use std::collections::{HashMap, HashSet};
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use idgraph_model::{Account, Contact, Record, ScimUser, User};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::{decode, encode, FORMAT_VERSION};
use crate::index::{AgentMemory, Inputs};
use crate::{Change, ChangeFilter, ChangeKind, StoreError, Via};

/// A page of contacts as crawled: one value per page keeps bulk writes cheap.
const P_SEGMENT: u8 = b'g';
/// An in-place change to one contact (webhooks, reassignment), applied over the segments.
const P_CONTACT: u8 = b'c';
const K_SEGSEQ: &[u8] = b"S";
/// When a segment was crawled: every contact in it was verified then.
const P_SEGTIME: u8 = b'v';
/// When one contact was last verified in place (a re-read, a webhook), or carried over.
const P_VERIFIED: u8 = b'V';
const P_USER: u8 = b'u';
const P_SCIM: u8 = b's';
const P_ACCOUNT: u8 = b'a';
const P_MEMORY: u8 = b'm';
const K_CHECKPOINT: &[u8] = b"K";
const K_INFO: &[u8] = b"I";

/// sled's page cache. Lookups never read sled (the index is in memory; only the history and the
/// change feed do): the cache serves in-place writes and the history. sled counts pages by their
/// size on disk, and the resident memory it takes is well above that: at 128 MB, a served
/// 1,000,000-contact store took 210 MB more than at 32 MB, and climbed by about 100 MB over 40,000
/// owner changes (each loads a random leaf) where 32 MB stayed flat
/// (`DURATION=300 WARMUP=60 CHANGES_PER_S=200 bash benches/soak.sh`).
pub const CACHE_BYTES: u64 = 32 << 20;
const META_FORMAT: &[u8] = b"format";
const META_CURRENT: &[u8] = b"current";
/// The generation served before the current one, kept until the next switch: what a server falls
/// back to when the current one fails its check.
const META_PREVIOUS: &[u8] = b"previous";
const META_STAGING: &[u8] = b"staging";
const META_SEQ: &[u8] = b"seq";
/// Set once the history is keyed by sequence number alone (older stores keyed it by generation
/// first and are re-keyed at open).
const META_HISTORY_BY_SEQ: &[u8] = b"history_by_seq";

/// What is known of a generation once it is complete.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenInfo {
    pub generation: u64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub contacts: u64,
    pub users: u64,
    pub scim_users: u64,
    pub accounts: u64,
    pub scim_available: bool,
    /// The crawl's own report, opaque to the graph.
    #[serde(default)]
    pub crawl: Value,
    /// When agents were last refreshed (an agents-only refresh updates the generation in place).
    #[serde(default)]
    pub agents_refreshed_at_ms: i64,
}

/// An in-place change to a contact, stored over the crawled segments. Each applies only when it
/// is not older than what it would replace, so a carried-over change never rolls back a newer
/// crawl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Override {
    Put(Contact),
    Owner { owner: Option<u64>, at_ms: i64 },
    Deleted { at_ms: i64 },
}

impl Override {
    /// Folds a new change over an older one for the same contact.
    fn merge(old: Option<Override>, new: Override) -> Override {
        match (old, new) {
            (Some(Override::Put(mut c)), Override::Owner { owner, at_ms }) => {
                if at_ms >= c.updated_at {
                    c.owner_id = owner;
                    c.updated_at = at_ms;
                }
                Override::Put(c)
            }
            (Some(d @ Override::Deleted { .. }), Override::Owner { .. }) => d,
            (_, new) => new,
        }
    }
}

/// A contact without its extra attributes: serde skips them without building them.
#[derive(Deserialize)]
struct LeanContact {
    id: u64,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    owner_id: Option<u64>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    created_at: i64,
    #[serde(default)]
    updated_at: i64,
}

impl LeanContact {
    fn into_contact(self) -> Contact {
        Contact {
            id: self.id,
            email: self.email,
            name: self.name,
            owner_id: self.owner_id,
            external_id: self.external_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            extra: Default::default(),
        }
    }
}

/// When contacts were verified: each segment's crawl time, and per contact in-place times.
#[derive(Debug, Default)]
struct Verified {
    segments: HashMap<u64, i64>,
    contacts: HashMap<u64, i64>,
}

/// Applies segments (in order) and overrides: the contacts of a generation, one per id, with
/// when each was last verified (the later of its segment's crawl and any in-place check).
fn assemble(
    segments: Vec<(u64, Vec<Contact>)>,
    overrides: Vec<(u64, Override)>,
    verified: &Verified,
) -> (Vec<Contact>, Vec<i64>) {
    let n: usize = segments.iter().map(|s| s.1.len()).sum();
    let mut out: Vec<Option<Contact>> = Vec::with_capacity(n);
    let mut times: Vec<i64> = Vec::with_capacity(n);
    let mut pos: HashMap<u64, usize> = HashMap::with_capacity(n);
    for (seq, seg) in segments {
        let at = verified.segments.get(&seq).copied().unwrap_or(0);
        for c in seg {
            match pos.get(&c.id) {
                Some(p) => {
                    out[*p] = Some(c);
                    times[*p] = times[*p].max(at);
                }
                None => {
                    pos.insert(c.id, out.len());
                    out.push(Some(c));
                    times.push(at);
                }
            }
        }
    }
    for (id, o) in overrides {
        let slot = pos.get(&id).copied();
        let current = slot.and_then(|p| out[p].as_ref()).map(|c| c.updated_at);
        match o {
            Override::Put(c) => {
                if current.is_none_or(|t| c.updated_at >= t) {
                    match slot {
                        Some(p) => out[p] = Some(c),
                        None => {
                            pos.insert(id, out.len());
                            out.push(Some(c));
                            times.push(0);
                        }
                    }
                }
            }
            Override::Owner { owner, at_ms } => {
                if let Some(c) = slot.and_then(|p| out[p].as_mut()) {
                    if at_ms >= c.updated_at {
                        c.owner_id = owner;
                        c.updated_at = at_ms;
                    }
                }
            }
            Override::Deleted { at_ms } => {
                if let (Some(p), Some(t)) = (slot, current) {
                    if at_ms >= t {
                        out[p] = None;
                    }
                }
            }
        }
    }
    for (id, at) in &verified.contacts {
        if let Some(p) = pos.get(id) {
            times[*p] = times[*p].max(*at);
        }
    }
    out.into_iter().zip(times).filter_map(|(c, t)| Some((c?, t))).unzip()
}

/// The sled store.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    history: sled::Tree,
    history_gens: sled::Tree,
    events: sled::Tree,
    /// The same ids keyed by time then id (`event_time_key`), for forgetting the old ones.
    events_at: sled::Tree,
    /// State apps keep beside the index (the refresher's), by key.
    state: sled::Tree,
}

/// One in-place change to the current generation, written in one transaction: the event ids
/// that caused it, contact overrides, other records, the generation's info and the history
/// entries it adds (their sequence numbers are given out inside the transaction).
#[derive(Debug, Default)]
pub struct InPlaceWrite {
    pub event_ids: Vec<String>,
    pub overrides: Vec<(u64, Override)>,
    /// Encoded records to put into the generation's tree.
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys to remove from the generation's tree.
    pub removes: Vec<Vec<u8>>,
    pub info: Option<GenInfo>,
    pub changes: Vec<(ChangeKind, Via)>,
    /// Contacts Drift confirmed by this write (at `at_ms`).
    pub verified: Vec<u64>,
    pub at_ms: i64,
    /// Records to put into and keys to remove from the staging generation, when a crawl is
    /// under way (an agents refresh's users and SCIM users: newer than what the crawl read
    /// before it). Contact overrides and verified times are mirrored there without being named.
    pub staging_puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub staging_removes: Vec<Vec<u8>>,
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// Gives out `kinds.len()` sequence numbers and inserts the history entries, inside a transaction.
fn tx_history(
    meta: &TransactionalTree,
    history: &TransactionalTree,
    kinds: &[(ChangeKind, Via)],
    generation: u64,
    at_ms: i64,
) -> Result<Vec<Change>, ConflictableTransactionError<StoreError>> {
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    let last = meta.get(META_SEQ)?.and_then(|v| u64_of(&v)).unwrap_or(0);
    let mut out = Vec::with_capacity(kinds.len());
    for (i, (kind, via)) in kinds.iter().enumerate() {
        let c = Change { seq: last + 1 + i as u64, generation, at_ms, via: *via, kind: kind.clone() };
        history.insert(&seq_key(c.seq), encode(&c).map_err(abort)?)?;
        out.push(c);
    }
    meta.insert(META_SEQ, &(last + kinds.len() as u64).to_be_bytes())?;
    Ok(out)
}

fn gen_tree_name(g: u64) -> String {
    format!("gen-{g:020}")
}

fn key(prefix: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn account_key(id: &str) -> Vec<u8> {
    let mut k = vec![P_ACCOUNT];
    k.extend_from_slice(id.as_bytes());
    k
}

fn u64_of(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// An event id's key in `events_at`: its time (big-endian, so keys sort by time), then the id.
fn event_time_key(at_ms: i64, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.len());
    k.extend_from_slice(&(at_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// Decodes every value under a prefix on all cores: decoding dominates a cold start.
fn decode_parallel<T: serde::de::DeserializeOwned + Send>(
    t: &sled::Tree,
    prefix: u8,
) -> Result<Vec<(u64, T)>, StoreError> {
    let raw: Vec<(sled::IVec, sled::IVec)> = t.scan_prefix([prefix]).collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let chunk = raw.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<(u64, T)>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            raw.chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|(k, v)| Ok((u64_of(&k[1..]).unwrap_or(0), decode::<T>(k, v)?)))
                            .collect::<Result<Vec<(u64, T)>, StoreError>>()
                    })
                })
                .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(StoreError::Corrupt("a decoding thread panicked".into()))))
            .collect()
    });
    let mut out = Vec::with_capacity(raw.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// sled's own file, whose presence says a directory holds a store.
const DB_FILE: &str = "db";

/// Whether this process may create files in `dir` (sled must, to open a store).
pub(crate) fn writable(dir: &Path) -> bool {
    tempfile::Builder::new().prefix(".idgraph-probe").tempfile_in(dir).is_ok()
}

/// Copies a store's files into a private (0700) temporary directory, under `store/`.
pub(crate) fn private_copy(from: &Path) -> Result<tempfile::TempDir, StoreError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    let tmp = tempfile::Builder::new().prefix("idgraph-read-only-").tempdir().map_err(io(&std::env::temp_dir()))?;
    Store::copy_files(from, &tmp.path().join("store"))?;
    Ok(tmp)
}

impl Store {
    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// The directory and the files of a store that others than its owner may read or enter
    /// (with their modes): personal data should be 0700 and 0600.
    #[cfg(unix)]
    pub fn wide_modes(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            if let Ok(m) = std::fs::symlink_metadata(&d) {
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    out.push((d.clone(), mode));
                }
            }
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let Ok(t) = e.file_type() else { continue };
                if t.is_dir() {
                    todo.push(e.path());
                } else if let Ok(m) = e.metadata() {
                    let mode = m.permissions().mode() & 0o777;
                    if t.is_file() && mode & 0o077 != 0 {
                        out.push((e.path(), mode));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Whether `dir` holds a store.
    pub fn exists_at(dir: &Path) -> bool {
        dir.join(DB_FILE).is_file()
    }

    /// Copies a store's files from `from` into `to`, which must not exist yet (created 0700,
    /// files 0600). Only plain files and directories are copied: a symbolic link anywhere is
    /// refused, so a copy never reads or writes outside the two directories. `from` is only read.
    pub fn copy_files(from: &Path, to: &Path) -> Result<(), StoreError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        let meta = std::fs::symlink_metadata(from).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::Missing(from.display().to_string()),
            _ => StoreError::Io { path: from.display().to_string(), source: e },
        })?;
        if meta.file_type().is_symlink() {
            return Err(StoreError::Link { path: from.display().to_string(), link: from.display().to_string() });
        }
        private_dir(to).map_err(io(to))?;
        for entry in std::fs::read_dir(from).map_err(io(from))? {
            let entry = entry.map_err(io(from))?;
            let (src, dst) = (entry.path(), to.join(entry.file_name()));
            let kind = entry.file_type().map_err(io(&src))?;
            if kind.is_dir() {
                Store::copy_files(&src, &dst)?;
            } else if kind.is_file() {
                let mut out = private_file(&dst).map_err(io(&dst))?;
                let mut input = std::fs::File::open(&src).map_err(io(&src))?;
                std::io::copy(&mut input, &mut out).map_err(io(&dst))?;
                out.sync_all().map_err(io(&dst))?;
            } else {
                return Err(StoreError::Link { path: from.display().to_string(), link: src.display().to_string() });
            }
        }
        Ok(())
    }

    /// Opens a store only to read it: from a private copy when this process cannot write it
    /// (sled writes as it opens), so the original is left byte for byte as it was. The copy, if
    /// one was made, is removed when the returned directory is dropped.
    pub fn open_read_only(path: &Path) -> Result<(Store, Option<tempfile::TempDir>), StoreError> {
        if !Store::exists_at(path) {
            return Err(if path.exists() {
                StoreError::NotAStore(path.display().to_string())
            } else {
                StoreError::Missing(path.display().to_string())
            });
        }
        if writable(path) {
            return Ok((Store::open(path)?, None));
        }
        let copy = private_copy(path)?;
        let store = Store::open(&copy.path().join("store"))?;
        Ok((store, Some(copy)))
    }

    /// Opens (or creates) the store at `path`, refusing one written in another format and
    /// clearing what an interrupted switch left behind.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, CACHE_BYTES)
    }

    /// [`Store::open`] with sled's page cache at `cache_bytes` (see [`CACHE_BYTES`] for what it
    /// costs in memory).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
                {
                    StoreError::Locked(path.display().to_string())
                }
                sled::Error::Io(io) => StoreError::Io { path: path.display().to_string(), source: io },
                other => StoreError::Sled(format!("{}: {other}", path.display())),
            })?;
        let meta = db.open_tree("meta")?;
        match meta.get(META_FORMAT)? {
            None => {
                meta.insert(META_FORMAT, &[FORMAT_VERSION])?;
            }
            Some(v) if v.as_ref() == [FORMAT_VERSION] => {}
            Some(v) => {
                return Err(StoreError::Version { found: v.first().copied().unwrap_or(0), expected: FORMAT_VERSION });
            }
        }
        let store = Store {
            history: db.open_tree("history")?,
            history_gens: db.open_tree("history_gens")?,
            events: db.open_tree("events")?,
            events_at: db.open_tree("events_at")?,
            state: db.open_tree("state")?,
            meta,
            db,
        };
        store.rekey_history()?;
        store.index_events_by_time()?;
        store.clean()?;
        Ok(store)
    }

    /// Stores written before the change feed keyed history by (generation, sequence): re-key it
    /// by sequence alone, in one batch, and note the first sequence of each generation.
    fn rekey_history(&self) -> Result<(), StoreError> {
        if self.meta.get(META_HISTORY_BY_SEQ)?.is_some() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut gens = sled::Batch::default();
        let mut first_of: HashMap<u64, u64> = HashMap::new();
        for kv in self.history.iter() {
            let (k, v) = kv?;
            if k.len() == 16 {
                let c: Change = decode(&k, &v)?;
                batch.remove(k);
                batch.insert(&seq_key(c.seq), v);
                let f = first_of.entry(c.generation).or_insert(c.seq);
                *f = (*f).min(c.seq);
            }
        }
        for (g, seq) in first_of {
            gens.insert(&g.to_be_bytes(), &seq.to_be_bytes());
        }
        self.history.apply_batch(batch)?;
        self.history_gens.apply_batch(gens)?;
        self.history.flush()?;
        self.meta.insert(META_HISTORY_BY_SEQ, &[1u8])?;
        self.meta.flush()?;
        Ok(())
    }

    /// Drops generation trees that are neither current nor staging, and history written for a
    /// generation that never became current.
    fn clean(&self) -> Result<(), StoreError> {
        let current = self.current()?;
        let staging = self.staging()?;
        let previous = self.previous()?;
        for name in self.db.tree_names() {
            let Ok(name) = std::str::from_utf8(&name) else {
                continue;
            };
            let Some(g) = name.strip_prefix("gen-").and_then(|g| g.parse::<u64>().ok()) else {
                continue;
            };
            if Some(g) != current && Some(g) != staging && Some(g) != previous {
                self.db.drop_tree(name)?;
            }
        }
        Ok(())
    }

    pub fn current(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.meta.get(META_CURRENT)?.and_then(|v| u64_of(&v)))
    }

    pub fn previous(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.meta.get(META_PREVIOUS)?.and_then(|v| u64_of(&v)))
    }

    pub fn staging(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.meta.get(META_STAGING)?.and_then(|v| u64_of(&v)))
    }

    pub(crate) fn tree(&self, generation: u64) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(gen_tree_name(generation))?)
    }

    pub fn info(&self, generation: u64) -> Result<Option<GenInfo>, StoreError> {
        let t = self.tree(generation)?;
        t.get(K_INFO)?.map(|v| decode(K_INFO, &v)).transpose()
    }

    /// Reads a generation's records and memory, checking each value.
    pub fn inputs(&self, generation: u64) -> Result<Inputs, StoreError> {
        self.read_inputs(generation, false)
    }

    /// As [`Store::inputs`], without the contacts' extra attributes, which the index does not
    /// hold: decoding them is most of a cold start.
    pub fn index_inputs(&self, generation: u64) -> Result<Inputs, StoreError> {
        self.read_inputs(generation, true)
    }

    fn read_inputs(&self, generation: u64, lean: bool) -> Result<Inputs, StoreError> {
        let t = self.tree(generation)?;
        let (contacts, contact_verified) = if lean { self.lean_contacts_of(&t)? } else { self.contacts_of(&t)? };
        let mut inputs = Inputs { contacts, contact_verified, ..Inputs::default() };
        for kv in t.scan_prefix([P_USER]) {
            let (k, v) = kv?;
            inputs.users.push(decode::<User>(&k, &v)?);
        }
        for kv in t.scan_prefix([P_SCIM]) {
            let (k, v) = kv?;
            inputs.scim.push(decode::<ScimUser>(&k, &v)?);
        }
        for kv in t.scan_prefix([P_ACCOUNT]) {
            let (k, v) = kv?;
            inputs.accounts.push(decode::<Account>(&k, &v)?);
        }
        for kv in t.scan_prefix([P_MEMORY]) {
            let (k, v) = kv?;
            let m: AgentMemory = decode(&k, &v)?;
            inputs.memory.insert(m.id, m);
        }
        Ok(inputs)
    }

    fn contacts_of(&self, t: &sled::Tree) -> Result<(Vec<Contact>, Vec<i64>), StoreError> {
        let segments: Vec<(u64, Vec<Contact>)> = decode_parallel(t, P_SEGMENT)?;
        Ok(assemble(segments, self.overrides_of(t)?, &self.verified_of(t)?))
    }

    fn lean_contacts_of(&self, t: &sled::Tree) -> Result<(Vec<Contact>, Vec<i64>), StoreError> {
        let segments: Vec<(u64, Vec<LeanContact>)> = decode_parallel(t, P_SEGMENT)?;
        let segments =
            segments.into_iter().map(|(k, s)| (k, s.into_iter().map(LeanContact::into_contact).collect())).collect();
        Ok(assemble(segments, self.overrides_of(t)?, &self.verified_of(t)?))
    }

    fn verified_of(&self, t: &sled::Tree) -> Result<Verified, StoreError> {
        let mut v = Verified::default();
        for (prefix, map) in [(P_SEGTIME, &mut v.segments), (P_VERIFIED, &mut v.contacts)] {
            for kv in t.scan_prefix([prefix]) {
                let (k, val) = kv?;
                let id =
                    u64_of(&k[1..]).ok_or_else(|| StoreError::Corrupt("a verification key is not an id".into()))?;
                map.insert(id, decode::<i64>(&k, &val)?);
            }
        }
        Ok(v)
    }

    fn overrides_of(&self, t: &sled::Tree) -> Result<Vec<(u64, Override)>, StoreError> {
        let mut overrides = Vec::new();
        for kv in t.scan_prefix([P_CONTACT]) {
            let (k, v) = kv?;
            let id = u64_of(&k[1..]).ok_or_else(|| StoreError::Corrupt("a contact key is not an id".into()))?;
            overrides.push((id, decode::<Override>(&k, &v)?));
        }
        Ok(overrides)
    }

    /// Starts a new staging generation, or returns the interrupted one to resume.
    pub fn begin(&self, resume: bool) -> Result<(u64, bool), StoreError> {
        if let Some(s) = self.staging()? {
            if resume {
                return Ok((s, true));
            }
            self.db.drop_tree(gen_tree_name(s))?;
        }
        let next = self.current()?.max(self.staging()?).unwrap_or(0) + 1;
        self.db.drop_tree(gen_tree_name(next))?;
        self.meta.insert(META_STAGING, &next.to_be_bytes())?;
        self.meta.flush()?;
        Ok((next, false))
    }

    /// Writes records and the checkpoint that follows them in one atomic batch.
    pub fn write_records(
        &self,
        generation: u64,
        records: &[Record],
        checkpoint: Option<&Value>,
    ) -> Result<(), StoreError> {
        self.write_segment(generation, records, checkpoint, Some(crate::now_ms()))
    }

    /// Writes records (contacts as one segment, crawled at `crawled_at_ms` when known) and the
    /// checkpoint in one batch.
    fn write_segment(
        &self,
        generation: u64,
        records: &[Record],
        checkpoint: Option<&Value>,
        crawled_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let t = self.tree(generation)?;
        let mut batch = sled::Batch::default();
        let contacts: Vec<&Contact> = records
            .iter()
            .filter_map(|r| match r {
                Record::Contact(c) => Some(c),
                _ => None,
            })
            .collect();
        if !contacts.is_empty() {
            let seq = t.get(K_SEGSEQ)?.and_then(|v| u64_of(&v)).unwrap_or(0) + 1;
            batch.insert(&key(P_SEGMENT, seq), encode(&contacts)?);
            batch.insert(K_SEGSEQ, &seq.to_be_bytes());
            if let Some(at) = crawled_at_ms {
                batch.insert(&key(P_SEGTIME, seq), encode(&at)?);
            }
        }
        for r in records {
            match r {
                Record::Contact(_) => {}
                Record::User(u) => batch.insert(&key(P_USER, u.id), encode(u)?),
                Record::ScimUser(s) => batch.insert(&key(P_SCIM, s.id), encode(s)?),
                Record::Account(a) => batch.insert(account_key(&a.id), encode(a)?),
            }
        }
        if let Some(cp) = checkpoint {
            batch.insert(K_CHECKPOINT, encode(cp)?);
        }
        t.apply_batch(batch)?;
        Ok(())
    }

    pub fn checkpoint(&self, generation: u64) -> Result<Option<Value>, StoreError> {
        let t = self.tree(generation)?;
        t.get(K_CHECKPOINT)?.map(|v| decode(K_CHECKPOINT, &v)).transpose()
    }

    pub fn contact_ids(&self, generation: u64) -> Result<HashSet<u64>, StoreError> {
        let t = self.tree(generation)?;
        Ok(self.contacts_of(&t)?.0.into_iter().map(|c| c.id).collect())
    }

    /// Copies the contacts of one generation into another, as one segment (incremental
    /// discovery starts from the previous generation's contacts; what it fetches again lands in
    /// later segments and wins). Returns the number of contacts.
    pub fn copy_contacts(&self, from: u64, to: u64) -> Result<u64, StoreError> {
        let (contacts, times) = self.contacts_of(&self.tree(from)?)?;
        let n = contacts.len() as u64;
        // Carried over, not crawled again: each keeps when it was last verified.
        let t = self.tree(to)?;
        for chunk in contacts.iter().zip(&times).collect::<Vec<_>>().chunks(10_000) {
            let mut batch = sled::Batch::default();
            for (c, at) in chunk {
                batch.insert(&key(P_VERIFIED, c.id), encode(*at)?);
            }
            t.apply_batch(batch)?;
        }
        let records: Vec<Record> = contacts.into_iter().map(Record::Contact).collect();
        for chunk in records.chunks(10_000) {
            self.write_segment(to, chunk, None, None)?;
        }
        Ok(n)
    }

    /// Tombstones into a staging generation before it becomes current, for contacts it does not
    /// hold (`held`): the current generation's recent ones (removed in place since `since_ms`),
    /// and one at `removed_at_ms` for each contact the crawl no longer found (`removed`). They
    /// add no contact; they make older news of a removed contact stale (a read in flight when it
    /// went, applied after the switch).
    pub fn carry_tombstones(
        &self,
        from: Option<u64>,
        to: u64,
        held: &HashSet<u64>,
        removed: &[u64],
        removed_at_ms: i64,
        since_ms: i64,
    ) -> Result<usize, StoreError> {
        let t = self.tree(to)?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let mut put = |batch: &mut sled::Batch, id: u64, at_ms: i64| -> Result<(), StoreError> {
            if held.contains(&id) {
                return Ok(());
            }
            // An override the generation holds for a contact it does not hold is an owner change
            // with nothing to apply to (a move mirrored from a crawl that then found the contact
            // gone), or an earlier tombstone: the later tombstone wins.
            let k = key(P_CONTACT, id);
            let at_ms = match t.get(k)?.map(|v| decode::<Override>(&k, &v)).transpose()? {
                Some(Override::Deleted { at_ms: before }) => before.max(at_ms),
                _ => at_ms,
            };
            batch.insert(&k, encode(&Override::Deleted { at_ms })?);
            n += 1;
            Ok(())
        };
        if let Some(from) = from {
            for kv in self.tree(from)?.scan_prefix([P_CONTACT]) {
                let (k, v) = kv?;
                if let (Some(id), Override::Deleted { at_ms }) = (u64_of(&k[1..]), decode::<Override>(&k, &v)?) {
                    if at_ms >= since_ms {
                        put(&mut batch, id, at_ms)?;
                    }
                }
            }
        }
        for id in removed {
            put(&mut batch, *id, removed_at_ms)?;
        }
        t.apply_batch(batch)?;
        Ok(n)
    }

    /// Undoes, in the change feed, what generation `damaged` recorded (its switch and its
    /// in-place changes), newest first, as changes of the generation `served` via `ROLLBACK`;
    /// once per damaged generation (a restart while it is still the current one adds nothing).
    /// Returns how many entries it wrote.
    pub fn roll_back_feed(&self, damaged: u64, served: u64) -> Result<usize, StoreError> {
        let key = format!("rolled-back/{damaged}");
        if self.meta.get(key.as_bytes())?.is_some() {
            return Ok(0);
        }
        let first = self.history_gens.get(damaged.to_be_bytes())?.and_then(|v| u64_of(&v));
        let mut undo = Vec::new();
        if let Some(first) = first {
            for kv in self.history.range(seq_key(first)..).rev() {
                let (k, v) = kv?;
                let c: Change = decode(&k, &v)?;
                if c.generation != damaged {
                    continue;
                }
                let inverse = match c.kind {
                    ChangeKind::ContactAdded { contact, owner } => Some(ChangeKind::ContactRemoved { contact, owner }),
                    ChangeKind::ContactRemoved { contact, owner } => Some(ChangeKind::ContactAdded { contact, owner }),
                    ChangeKind::ContactMoved { contact, from, to } => {
                        Some(ChangeKind::ContactMoved { contact, from: to, to: from })
                    }
                    ChangeKind::AgentDeactivated { agent } | ChangeKind::AgentDeparted { agent } => {
                        Some(ChangeKind::AgentReactivated { agent })
                    }
                    _ => None,
                };
                undo.extend(inverse.map(|k| (k, Via::Rollback)));
            }
        }
        let at = crate::now_ms();
        let n = undo.len();
        [&self.meta, &self.history]
            .transaction(|trees| {
                let (meta, history) = (&trees[0], &trees[1]);
                tx_history(meta, history, &undo, served, at)?;
                meta.insert(key.as_bytes(), &[1u8])?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.meta.flush()?;
        Ok(n)
    }

    /// When a contact was removed in place in a generation (its tombstone), if it was.
    pub fn deleted_at(&self, generation: u64, id: u64) -> Result<Option<i64>, StoreError> {
        let k = key(P_CONTACT, id);
        Ok(match self.tree(generation)?.get(k)?.map(|v| decode::<Override>(&k, &v)).transpose()? {
            Some(Override::Deleted { at_ms }) => Some(at_ms),
            _ => None,
        })
    }

    /// What an agents-only refresh writes into a generation: every stored user, SCIM user (when
    /// `scim` is given) and memory record replaced by the new ones; and, while a crawl is under
    /// way, its users and SCIM users into the staging generation too, so that the switch does not
    /// bring back what the crawl read before the refresh.
    pub fn agents_write(
        &self,
        generation: u64,
        users: &[User],
        scim: Option<&[ScimUser]>,
        memory: &HashMap<u64, AgentMemory>,
        w: &mut InPlaceWrite,
    ) -> Result<(), StoreError> {
        if let Some(st) = self.staging()?.filter(|s| *s != generation) {
            let t = self.tree(st)?;
            let mut prefixes = vec![P_USER];
            if scim.is_some() {
                prefixes.push(P_SCIM);
            }
            for p in prefixes {
                for k in t.scan_prefix([p]).keys() {
                    w.staging_removes.push(k?.to_vec());
                }
            }
            for u in users {
                w.staging_puts.push((key(P_USER, u.id).to_vec(), encode(u)?));
            }
            for s in scim.unwrap_or_default() {
                w.staging_puts.push((key(P_SCIM, s.id).to_vec(), encode(s)?));
            }
        }
        let t = self.tree(generation)?;
        let mut prefixes = vec![P_USER, P_MEMORY];
        if scim.is_some() {
            prefixes.push(P_SCIM);
        }
        for p in prefixes {
            for k in t.scan_prefix([p]).keys() {
                w.removes.push(k?.to_vec());
            }
        }
        for u in users {
            w.puts.push((key(P_USER, u.id).to_vec(), encode(u)?));
        }
        for s in scim.unwrap_or_default() {
            w.puts.push((key(P_SCIM, s.id).to_vec(), encode(s)?));
        }
        for m in memory.values() {
            w.puts.push((key(P_MEMORY, m.id).to_vec(), encode(m)?));
        }
        Ok(())
    }

    /// Makes a staging generation current: memory and info into its tree (flushed), then its
    /// history and the switch in one transaction. Returns the history entries with their
    /// sequence numbers.
    pub fn switch(
        &self,
        generation: u64,
        served: Option<u64>,
        memory: &HashMap<u64, AgentMemory>,
        info: &GenInfo,
        changes: &[(ChangeKind, Via)],
    ) -> Result<Vec<Change>, StoreError> {
        let t = self.tree(generation)?;
        let mut batch = sled::Batch::default();
        for k in t.scan_prefix([P_MEMORY]).keys() {
            batch.remove(k?);
        }
        for m in memory.values() {
            batch.insert(&key(P_MEMORY, m.id), encode(m)?);
        }
        batch.insert(K_INFO, encode(info)?);
        batch.remove(K_CHECKPOINT);
        t.apply_batch(batch)?;
        t.flush()?;
        // The generation served until now is kept as the previous one (the one to fall back to);
        // a current generation that failed its check and was not served is not.
        let previous = served.filter(|p| *p != generation);
        // The history of the switch and the switch itself: one transaction.
        let changes = [&self.meta, &self.history, &self.history_gens]
            .transaction(|trees| {
                let (meta, history, gens) = (&trees[0], &trees[1], &trees[2]);
                let out = tx_history(meta, history, changes, generation, info.finished_at_ms)?;
                let first = meta.get(META_SEQ)?.and_then(|v| u64_of(&v)).unwrap_or(0) + 1 - out.len() as u64;
                gens.insert(&generation.to_be_bytes(), &first.to_be_bytes())?;
                meta.insert(META_CURRENT, &generation.to_be_bytes())?;
                match previous {
                    Some(p) => meta.insert(META_PREVIOUS, &p.to_be_bytes())?,
                    None => meta.remove(META_PREVIOUS)?,
                };
                meta.remove(META_STAGING)?;
                meta.flush();
                Ok(out)
            })
            .map_err(tx_err)?;
        self.clean()?;
        Ok(changes)
    }

    /// Gives up a staging generation.
    pub fn abandon(&self, generation: u64) -> Result<(), StoreError> {
        if self.staging()? == Some(generation) {
            self.meta.remove(META_STAGING)?;
            self.meta.flush()?;
        }
        self.db.drop_tree(gen_tree_name(generation))?;
        Ok(())
    }

    pub fn load_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.state.get(key.as_bytes())?.map(|v| decode(key.as_bytes(), &v)).transpose()
    }

    /// Stores an app's state, flushed.
    pub fn save_state(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.state.insert(key.as_bytes(), encode(value)?)?;
        self.state.flush()?;
        Ok(())
    }

    /// Stores several keys of app state and removes others in one batch, flushed.
    pub fn update_states(&self, puts: &[(String, Value)], removes: &[String]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in puts {
            batch.insert(k.as_bytes(), encode(v)?);
        }
        for k in removes {
            batch.remove(k.as_bytes());
        }
        self.state.apply_batch(batch)?;
        self.state.flush()?;
        Ok(())
    }

    /// Stores one value of app state, encoded straight from `v` (a large one, an offboarding
    /// case, is never built as a JSON tree first), flushed before it returns.
    pub fn put_state<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), StoreError> {
        self.state.insert(key.as_bytes(), encode(v)?)?;
        self.state.flush()?;
        Ok(())
    }

    /// Every key of app state under `prefix`, with its value, in key order.
    pub fn states_under(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.state.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k).into_owned(), decode(&k, &v)?));
        }
        Ok(out)
    }

    /// The sequence number of the newest change (0: none yet).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.meta.get(META_SEQ)?.and_then(|v| u64_of(&v)).unwrap_or(0))
    }

    /// Where a scan for `filter` starts: after its cursor and at the first change of its
    /// generation.
    fn scan_from(&self, filter: &ChangeFilter) -> Result<u64, StoreError> {
        let mut from = filter.after_seq.map_or(1, |a| a.saturating_add(1));
        if let Some(g) = filter.since_generation.filter(|g| *g > 0) {
            let first = self
                .history_gens
                .range(g.to_be_bytes()..)
                .next()
                .transpose()?
                .and_then(|(_, v)| u64_of(&v))
                .unwrap_or(u64::MAX);
            from = from.max(first);
        }
        Ok(from)
    }

    /// Changes that pass `filter`, oldest first, at most `first` of them.
    pub fn changes(&self, filter: &ChangeFilter, first: usize) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        if first == 0 {
            return Ok(out);
        }
        for kv in self.history.range(seq_key(self.scan_from(filter)?)..) {
            let (k, v) = kv?;
            let c: Change = decode(&k, &v)?;
            if filter.matches(&c) {
                out.push(c);
                if out.len() >= first {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every recorded change, newest first, until `visit` returns false.
    pub fn for_each_change_rev(&self, mut visit: impl FnMut(Change) -> bool) -> Result<(), StoreError> {
        for kv in self.history.iter().rev() {
            let (k, v) = kv?;
            if !visit(decode(&k, &v)?) {
                break;
            }
        }
        Ok(())
    }

    /// How many changes pass `filter`, ignoring its cursor.
    pub fn count_changes(&self, filter: &ChangeFilter) -> Result<usize, StoreError> {
        let whole = ChangeFilter { after_seq: None, ..filter.clone() };
        if whole.kinds.is_none() && whole.agent.is_none() && whole.since_generation.unwrap_or(0) == 0 {
            return Ok(self.history.len());
        }
        let mut n = 0;
        for kv in self.history.range(seq_key(self.scan_from(&whole)?)..) {
            let (k, v) = kv?;
            if whole.matches(&decode::<Change>(&k, &v)?) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every recorded change that concerns `agent`, oldest first.
    pub fn changes_of_agent(&self, agent: u64) -> Result<Vec<Change>, StoreError> {
        self.changes(&ChangeFilter { agent: Some(agent), ..ChangeFilter::default() }, usize::MAX)
    }

    /// Whether an event id was applied already.
    pub fn seen(&self, event_id: &str) -> Result<bool, StoreError> {
        Ok(self.events.contains_key(event_id.as_bytes())?)
    }

    /// How many event ids are remembered (the table `prune_events` keeps bounded).
    pub fn events_remembered(&self) -> usize {
        self.events.len()
    }

    /// Stores written before event ids were also kept by time hold them by id alone: index them
    /// by time once, so that forgetting old ids reads only what it forgets.
    fn index_events_by_time(&self) -> Result<(), StoreError> {
        if self.events.is_empty() || !self.events_at.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for kv in self.events.iter() {
            let (id, at) = kv?;
            batch.insert(event_time_key(u64_of(&at).unwrap_or(0) as i64, &id), &[]);
        }
        self.events_at.apply_batch(batch)?;
        Ok(())
    }

    /// Forgets event ids older than `before_ms`, keeping the table bounded. It reads the ids by
    /// time, so its cost is what it forgets, not what the table holds.
    pub fn prune_events(&self, before_ms: i64) -> Result<usize, StoreError> {
        let end = (before_ms.max(0) as u64).to_be_bytes();
        let mut n = 0;
        let mut batch = sled::Batch::default();
        let mut index = sled::Batch::default();
        for kv in self.events_at.range(..end.as_slice()) {
            let (k, _) = kv?;
            batch.remove(&k[8..]);
            index.remove(k);
            n += 1;
        }
        self.events.apply_batch(batch)?;
        self.events_at.apply_batch(index)?;
        Ok(n)
    }

    /// Commits one in-place change to a generation in one transaction (flushed before it
    /// returns): event ids, folded contact overrides, records, info and history. Returns the
    /// history entries with their sequence numbers.
    ///
    /// While a crawl is under way, the contact overrides and verified times go into its staging
    /// generation as well, in the same transaction: a change applied in place during a crawl is
    /// in the generation that replaces this one (where it wins over the crawl's reading of the
    /// record only when it is not older), so a switch never rolls it back. The caller holds the
    /// graph's writer lock, under which staging generations begin and end.
    pub fn commit_in_place(&self, generation: u64, w: &InPlaceWrite) -> Result<Vec<Change>, StoreError> {
        let t = self.tree(generation)?;
        let staging = match self.staging()?.filter(|s| *s != generation) {
            Some(s) => Some(self.tree(s)?),
            None => None,
        };
        let mut encoded_info = None;
        if let Some(info) = &w.info {
            encoded_info = Some(encode(info)?);
        }
        let encoded_at = encode(&w.at_ms)?;
        let mut trees = vec![&self.meta, &self.history, &self.events, &self.events_at, &t];
        trees.extend(staging.as_ref());
        trees
            .as_slice()
            .transaction(|trees| {
                let (meta, history, events, events_at, gen) = (&trees[0], &trees[1], &trees[2], &trees[3], &trees[4]);
                let staged = trees.get(5);
                for id in &w.event_ids {
                    events.insert(id.as_bytes(), &w.at_ms.to_be_bytes())?;
                    events_at.insert(event_time_key(w.at_ms, id.as_bytes()), &[])?;
                }
                let fold = |tree: &TransactionalTree| -> Result<HashMap<u64, Override>, ConflictableTransactionError<StoreError>> {
                    let mut folded: HashMap<u64, Override> = HashMap::new();
                    for (id, o) in &w.overrides {
                        let old = match folded.remove(id) {
                            Some(o) => Some(o),
                            None => {
                                let k = key(P_CONTACT, *id);
                                tree.get(k)?.map(|v| decode::<Override>(&k, &v)).transpose().map_err(abort)?
                            }
                        };
                        folded.insert(*id, Override::merge(old, o.clone()));
                    }
                    Ok(folded)
                };
                for (id, o) in &fold(gen)? {
                    gen.insert(&key(P_CONTACT, *id), encode(o).map_err(abort)?)?;
                }
                if let Some(st) = staged {
                    for (id, o) in &fold(st)? {
                        st.insert(&key(P_CONTACT, *id), encode(o).map_err(abort)?)?;
                    }
                    for id in &w.verified {
                        st.insert(&key(P_VERIFIED, *id), encoded_at.as_slice())?;
                    }
                    for k in &w.staging_removes {
                        st.remove(k.as_slice())?;
                    }
                    for (k, v) in &w.staging_puts {
                        st.insert(k.as_slice(), v.as_slice())?;
                    }
                }
                for k in &w.removes {
                    gen.remove(k.as_slice())?;
                }
                for (k, v) in &w.puts {
                    gen.insert(k.as_slice(), v.as_slice())?;
                }
                if let Some(i) = &encoded_info {
                    gen.insert(K_INFO, i.as_slice())?;
                }
                for id in &w.verified {
                    gen.insert(&key(P_VERIFIED, *id), encoded_at.as_slice())?;
                }
                let out = tx_history(meta, history, &w.changes, generation, w.at_ms)?;
                meta.flush();
                Ok(out)
            })
            .map_err(tx_err)
    }
}

/// A server-side backup's name under its `backup_dir`: letters, digits, `.`, `_` and `-`, not
/// starting with a dot, at most 128 bytes. No separator, `..` or empty name reaches the file
/// system.
pub fn backup_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Creates a directory only its owner may enter (0700), failing when it exists.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    b.mode(0o700);
    b.create(dir)
}

/// Creates a file only its owner may read (0600), failing when it exists; never follows a link.
pub(crate) fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path)
}

/// What a backup wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupReport {
    pub generation: u64,
    pub values: usize,
    pub history: usize,
}

impl BackupReport {
    /// What a person is told once the copy at `to` is written and checked.
    pub fn summary(&self, to: &Path, took: std::time::Duration) -> String {
        format!(
            "backed up generation {} ({} values, {} history entries) into {} in {:.1}s; it passed its check",
            self.generation,
            self.values,
            self.history,
            to.display(),
            took.as_secs_f64()
        )
    }
}

impl Store {
    /// Writes a copy of generation `g` (the served one), the history and what apps keep into a new store
    /// at `dir`, then opens it and checks every value. The caller keeps writers out meanwhile
    /// (`Graph::backup_to`), so the copy is one consistent state.
    pub fn backup_to(&self, dir: &Path, g: u64) -> Result<BackupReport, StoreError> {
        let io = |source| StoreError::Io { path: dir.display().to_string(), source };
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(StoreError::Link { path: dir.display().to_string(), link: dir.display().to_string() })
            }
            Ok(m) if !m.is_dir() || std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) => {
                return Err(StoreError::NotEmpty(dir.display().to_string()));
            }
            // An empty directory of the caller's: written into, left in place on failure.
            Ok(_) => return self.backup_into(dir, g),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        // A new directory, created exclusively (a link or a directory made meanwhile fails),
        // only its owner may enter; removed again if the backup fails.
        private_dir(dir).map_err(io)?;
        let r = self.backup_into(dir, g);
        if r.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        r
    }

    fn backup_into(&self, dir: &Path, g: u64) -> Result<BackupReport, StoreError> {
        {
            let db = sled::Config::new().path(dir).open()?;
            let copy = |from: &sled::Tree, name: &[u8]| -> Result<usize, StoreError> {
                let to = db.open_tree(name)?;
                let mut n = 0;
                let mut batch = sled::Batch::default();
                for kv in from.iter() {
                    let (k, v) = kv?;
                    batch.insert(k, v);
                    n += 1;
                    if n % 10_000 == 0 {
                        to.apply_batch(std::mem::take(&mut batch))?;
                    }
                }
                to.apply_batch(batch)?;
                Ok(n)
            };
            let values = copy(&self.tree(g)?, gen_tree_name(g).as_bytes())?;
            // After a fallback the history holds what the damaged generation recorded: the copy
            // keeps what leads to the generation it holds.
            // (and leaves out the rollback of those entries, which undoes what the copy does not
            // hold).
            let history = {
                let to = db.open_tree(b"history")?;
                let mut later = false;
                for kv in self.history.iter().rev() {
                    let (k, v) = kv?;
                    if decode::<Change>(&k, &v)?.generation > g {
                        later = true;
                        break;
                    }
                }
                let mut batch = sled::Batch::default();
                let mut n = 0;
                for kv in self.history.iter() {
                    let (k, v) = kv?;
                    let c = decode::<Change>(&k, &v)?;
                    if c.generation <= g && !(later && c.via == Via::Rollback) {
                        batch.insert(k, v);
                        n += 1;
                    }
                }
                to.apply_batch(batch)?;
                n
            };
            copy(&self.history_gens, b"history_gens")?;
            copy(&self.events, b"events")?;
            copy(&self.events_at, b"events_at")?;
            copy(&self.state, b"state")?;
            let meta = db.open_tree("meta")?;
            for k in [META_FORMAT, META_SEQ, META_HISTORY_BY_SEQ] {
                if let Some(v) = self.meta.get(k)? {
                    meta.insert(k, v)?;
                }
            }
            meta.insert(META_CURRENT, &g.to_be_bytes())?;
            db.flush()?;
            let _ = (values, history);
        }
        // sled's flusher can hold the directory's lock a moment after the last handle went (seen
        // on a loaded machine): wait for it, a bounded while.
        let mut copy = Store::open(dir);
        for _ in 0..100 {
            if !matches!(copy, Err(StoreError::Locked(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            copy = Store::open(dir);
        }
        let copy = copy?;
        let r = copy.check()?;
        if !r.problems.is_empty() {
            return Err(StoreError::Corrupt(format!("the backup failed its check: {}", r.problems.join("; "))));
        }
        Ok(BackupReport { generation: g, values: r.values, history: r.history })
    }
}

/// What `Store::check` found: how much it read and what is wrong (empty: nothing).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CheckReport {
    pub generation: Option<u64>,
    pub values: usize,
    pub history: usize,
    pub problems: Vec<String>,
}

impl Store {
    /// Reads every value of the current generation and of the history: each must pass its
    /// checksum and decode as its kind; the counts must agree with the generation's info; every
    /// agent must have idgraph's memory; the history must be in sequence order.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut r = CheckReport { generation: self.current()?, ..CheckReport::default() };
        let Some(g) = r.generation else {
            return Ok(r);
        };
        let t = self.tree(g)?;
        let seen = self.check_values(g, &t, &mut r)?;
        self.check_counts(g, &seen, &mut r)?;
        self.check_history(g, &mut r)?;
        Ok(r)
    }

    /// Every value of a generation decodes as its kind; returns what was counted.
    fn check_values(&self, g: u64, t: &sled::Tree, r: &mut CheckReport) -> Result<Seen, StoreError> {
        let problem = |r: &mut CheckReport, p: String| r.problems.push(p);
        let mut counts = HashMap::<u8, u64>::new();
        let mut memory = HashSet::new();
        let mut users = Vec::new();
        let mut presence = Presence::default();
        for kv in t.iter() {
            let (k, v) = kv?;
            r.values += 1;
            let Some(prefix) = k.first().copied() else { continue };
            let name = || format!("{:?}", String::from_utf8_lossy(&k));
            let ok = match prefix {
                P_SEGMENT => decode::<Vec<LeanContact>>(&k, &v).map(|s| {
                    // Later segments come later in key order, as `assemble` takes them.
                    for c in s {
                        presence.segments.push((c.id, c.updated_at));
                    }
                }),
                P_CONTACT => decode::<Override>(&k, &v).map(|o| {
                    if let Some(id) = u64_of(&k[1..]) {
                        presence.overrides.push((id, Overridden::of(&o)));
                    }
                }),
                P_SEGTIME | P_VERIFIED => decode::<i64>(&k, &v).map(|_| ()),
                P_USER => decode::<User>(&k, &v).map(|u| users.push(u.id)),
                P_SCIM => decode::<ScimUser>(&k, &v).map(|_| ()),
                P_ACCOUNT => decode::<Account>(&k, &v).map(|_| ()),
                P_MEMORY => decode::<AgentMemory>(&k, &v).map(|m| {
                    memory.insert(m.id);
                }),
                _ if k.as_ref() == K_INFO => decode::<GenInfo>(&k, &v).map(|_| ()),
                _ if k.as_ref() == K_CHECKPOINT => decode::<Value>(&k, &v).map(|_| ()),
                _ if k.as_ref() == K_SEGSEQ => {
                    if v.len() == 8 {
                        Ok(())
                    } else {
                        Err(StoreError::Corrupt("the segment counter is not 8 bytes".into()))
                    }
                }
                _ => Err(StoreError::Corrupt("a key of no known kind".into())),
            };
            if prefix == P_USER || prefix == P_SCIM || prefix == P_ACCOUNT {
                *counts.entry(prefix).or_default() += 1;
            }
            if let Err(e) = ok {
                problem(r, format!("generation {g}, key {}: {e}", name()));
            }
        }
        Ok(Seen { counts, memory, users, contacts: presence.count() })
    }

    /// The counts agree with the generation's info; every user has agent memory.
    fn check_counts(&self, g: u64, seen: &Seen, r: &mut CheckReport) -> Result<(), StoreError> {
        let problem = |r: &mut CheckReport, p: String| r.problems.push(p);
        let Seen { counts, memory, users, contacts } = seen;
        match self.info(g) {
            Ok(Some(info)) => {
                if *contacts != info.contacts {
                    problem(r, format!("generation {g} holds {contacts} contacts, its info says {}", info.contacts));
                }
                let c = |p: u8| counts.get(&p).copied().unwrap_or(0);
                if c(P_USER) != info.users {
                    problem(r, format!("generation {g} holds {} users, its info says {}", c(P_USER), info.users));
                }
                if info.scim_available && c(P_SCIM) != info.scim_users {
                    problem(
                        r,
                        format!("generation {g} holds {} SCIM users, its info says {}", c(P_SCIM), info.scim_users),
                    );
                }
                if c(P_ACCOUNT) != info.accounts {
                    problem(
                        r,
                        format!("generation {g} holds {} accounts, its info says {}", c(P_ACCOUNT), info.accounts),
                    );
                }
            }
            Ok(None) => problem(r, format!("generation {g} has no info")),
            Err(e) => problem(r, format!("generation {g}'s info: {e}")),
        }
        for u in users.iter().filter(|u| !memory.contains(*u)) {
            problem(r, format!("user {u} has no agent memory"));
        }
        Ok(())
    }

    /// The history decodes, in sequence order, nothing past the current generation or the counter.
    fn check_history(&self, g: u64, r: &mut CheckReport) -> Result<(), StoreError> {
        let problem = |r: &mut CheckReport, p: String| r.problems.push(p);
        let mut last = 0u64;
        for kv in self.history.iter() {
            let (k, v) = kv?;
            r.history += 1;
            match decode::<Change>(&k, &v) {
                Ok(c) => {
                    if u64_of(&k) != Some(c.seq) || c.seq <= last {
                        problem(r, format!("history entry {} is out of sequence (after {last})", c.seq));
                    }
                    if c.generation > g {
                        problem(
                            r,
                            format!(
                                "history entry {} belongs to generation {}, after the current {g}",
                                c.seq, c.generation
                            ),
                        );
                    }
                    last = c.seq;
                }
                Err(e) => problem(r, format!("history key {:?}: {e}", u64_of(&k))),
            }
        }
        if last > self.last_seq()? {
            problem(r, format!("the history reaches sequence {last}, the store's counter {}", self.last_seq()?));
        }
        Ok(())
    }
}

/// What `check_values` counted.
struct Seen {
    counts: HashMap<u8, u64>,
    memory: HashSet<u64>,
    users: Vec<u64>,
    /// How many contacts `assemble` would give.
    contacts: u64,
}

/// What an override does to whether its contact is there.
#[derive(Debug, Clone, Copy)]
enum Overridden {
    Put,
    Owner,
    Deleted { at_ms: i64 },
}

impl Overridden {
    fn of(o: &Override) -> Overridden {
        match o {
            Override::Put(_) => Overridden::Put,
            Override::Owner { .. } => Overridden::Owner,
            Override::Deleted { at_ms } => Overridden::Deleted { at_ms: *at_ms },
        }
    }
}

/// How many contacts a generation holds, counted as `assemble` decides it without building them
/// (a check at 1,000,000 contacts would otherwise hold them all in memory at once): each id of
/// the segments with its last version's time, then each id's one override.
#[derive(Debug, Default)]
struct Presence {
    /// Every version in segment order (16 bytes each: less than a map of them).
    segments: Vec<(u64, i64)>,
    overrides: Vec<(u64, Overridden)>,
}

impl Presence {
    fn count(mut self) -> u64 {
        // Stable: an id's versions stay in segment order, and the last is the one kept.
        self.segments.sort_by_key(|v| v.0);
        let mut last: Vec<(u64, i64)> = Vec::with_capacity(self.segments.len());
        for v in self.segments {
            match last.last_mut() {
                Some(l) if l.0 == v.0 => *l = v,
                _ => last.push(v),
            }
        }
        let updated = |id: u64| last.binary_search_by_key(&id, |v| v.0).ok().map(|i| last[i].1);
        let mut n = last.len() as u64;
        for (id, o) in &self.overrides {
            match (o, updated(*id)) {
                (Overridden::Put, None) => n += 1,
                (Overridden::Deleted { at_ms }, Some(updated)) if *at_ms >= updated => n -= 1,
                _ => {}
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, owner: u64, at: i64) -> Contact {
        Contact {
            id,
            email: None,
            name: None,
            owner_id: Some(owner),
            external_id: None,
            created_at: 0,
            updated_at: at,
            extra: Default::default(),
        }
    }

    #[test]
    fn later_segments_win_and_overrides_never_roll_back() {
        let segments = vec![(1, vec![c(1, 10, 5), c(2, 10, 5), c(3, 10, 5)]), (2, vec![c(2, 20, 9)])];
        let overrides = vec![
            (1, Override::Owner { owner: Some(30), at_ms: 6 }),
            (2, Override::Owner { owner: Some(40), at_ms: 7 }), // older than the re-crawled record
            (3, Override::Deleted { at_ms: 8 }),
            (4, Override::Put(c(4, 50, 1))),
        ];
        let verified =
            Verified { segments: HashMap::from([(1, 100), (2, 200)]), contacts: HashMap::from([(1, 150), (4, 300)]) };
        let (got, times) = assemble(segments, overrides, &verified);
        let mut got: Vec<(Contact, i64)> = got.into_iter().zip(times).collect();
        got.sort_by_key(|(c, _)| c.id);
        let verified: Vec<(u64, i64)> = got.iter().map(|(c, t)| (c.id, *t)).collect();
        assert_eq!(verified, vec![(1, 150), (2, 200), (4, 300)], "the later of segment and in-place checks");
        let mut got: Vec<Contact> = got.into_iter().map(|(c, _)| c).collect();
        got.sort_by_key(|c| c.id);
        let owners: Vec<(u64, Option<u64>)> = got.iter().map(|c| (c.id, c.owner_id)).collect();
        assert_eq!(owners, vec![(1, Some(30)), (2, Some(20)), (4, Some(50))]);
    }

    #[test]
    fn seen_event_ids_are_forgotten_when_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let write = |ids: &[&str], at_ms| InPlaceWrite {
            event_ids: ids.iter().map(|s| s.to_string()).collect(),
            at_ms,
            ..InPlaceWrite::default()
        };
        store.commit_in_place(1, &write(&["old", "older"], 1_000)).unwrap();
        store.commit_in_place(1, &write(&["new"], 9_000)).unwrap();
        assert!(store.seen("old").unwrap() && store.seen("new").unwrap());
        assert_eq!(store.prune_events(1_000).unwrap(), 0, "nothing is older than 1,000");
        assert_eq!(store.prune_events(5_000).unwrap(), 2);
        assert!(!store.seen("old").unwrap() && !store.seen("older").unwrap());
        assert!(store.seen("new").unwrap(), "a recent id is kept");
        assert_eq!(store.prune_events(9_600).unwrap(), 1);
        assert!(!store.seen("new").unwrap());
    }

    #[test]
    fn event_ids_of_an_older_store_are_indexed_by_time_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            // What a store written before the time index holds: ids by id alone.
            store.events.insert("old", &1_000i64.to_be_bytes()).unwrap();
            store.events.insert("new", &9_000i64.to_be_bytes()).unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.prune_events(5_000).unwrap(), 1);
        assert!(!store.seen("old").unwrap() && store.seen("new").unwrap());
    }

    #[test]
    fn owner_changes_fold_into_a_put() {
        let folded = Override::merge(Some(Override::Put(c(1, 10, 5))), Override::Owner { owner: Some(11), at_ms: 6 });
        assert_eq!(folded, Override::Put(c(1, 11, 6)));
        let kept = Override::merge(Some(Override::Deleted { at_ms: 9 }), Override::Owner { owner: Some(11), at_ms: 6 });
        assert_eq!(kept, Override::Deleted { at_ms: 9 });
    }

    proptest::proptest! {
        /// The check's count of a generation's contacts is the number `assemble` gives, for any
        /// segments (ids repeated across them, times out of order) and one override per id.
        #[test]
        fn the_checks_count_is_assembles(
            segments in proptest::collection::vec(proptest::collection::vec((0u64..40, 0i64..20), 0..30), 0..6),
            overrides in proptest::collection::btree_map(0u64..50, (0u8..3, 0i64..20), 0..30),
        ) {
            let segments: Vec<(u64, Vec<Contact>)> = segments
                .into_iter()
                .enumerate()
                .map(|(seq, s)| (seq as u64, s.into_iter().map(|(id, at)| c(id, 1, at)).collect()))
                .collect();
            let overrides: Vec<(u64, Override)> = overrides
                .into_iter()
                .map(|(id, (kind, at))| {
                    let o = match kind {
                        0 => Override::Put(c(id, 2, at)),
                        1 => Override::Owner { owner: Some(3), at_ms: at },
                        _ => Override::Deleted { at_ms: at },
                    };
                    (id, o)
                })
                .collect();
            let mut presence = Presence::default();
            for (_, seg) in &segments {
                presence.segments.extend(seg.iter().map(|c| (c.id, c.updated_at)));
            }
            presence.overrides = overrides.iter().map(|(id, o)| (*id, Overridden::of(o))).collect();
            let assembled = assemble(segments, overrides, &Verified::default()).0.len() as u64;
            proptest::prop_assert_eq!(presence.count(), assembled);
        }
    }
}
