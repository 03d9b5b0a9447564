//! Persistence in sled: generations of crawled records, agent memory, history, seen events.
//!
//! Layout: one tree per generation (`gen-<n>`), keys prefixed by kind so that one sled batch can
//! write records and the crawl checkpoint together; a `meta` tree naming the current and the
//! staging generation; a `history` tree keyed by (generation, sequence); an `events` tree of the
//! webhook event ids already applied.
//!
//! A generation becomes current by one write of `meta/current`, after everything it needs is
//! flushed; a crash at any point leaves the previous current generation whole. Trees and history
//! entries of generations that never became current are removed at open.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use idgraph_model::{Account, Contact, Record, ScimUser, User};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::{decode, encode, FORMAT_VERSION};
use crate::index::{AgentMemory, Inputs};
use crate::{Change, StoreError};

const P_CONTACT: u8 = b'c';
const P_USER: u8 = b'u';
const P_SCIM: u8 = b's';
const P_ACCOUNT: u8 = b'a';
const P_MEMORY: u8 = b'm';
const K_CHECKPOINT: &[u8] = b"K";
const K_INFO: &[u8] = b"I";

const META_FORMAT: &[u8] = b"format";
const META_CURRENT: &[u8] = b"current";
const META_STAGING: &[u8] = b"staging";
const META_SEQ: &[u8] = b"seq";

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

/// The sled store.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    history: sled::Tree,
    events: sled::Tree,
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

fn history_key(generation: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&generation.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Decodes every value under a prefix on all cores: decoding dominates a cold start.
fn decode_parallel<T: serde::de::DeserializeOwned + Send>(t: &sled::Tree, prefix: u8) -> Result<Vec<T>, StoreError> {
    let raw: Vec<(sled::IVec, sled::IVec)> = t.scan_prefix([prefix]).collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let chunk = raw.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<T>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = raw
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|(k, v)| decode::<T>(k, v)).collect::<Result<Vec<T>, _>>()))
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

impl Store {
    /// Opens (or creates) the store at `path`, refusing one written in another format and
    /// clearing what an interrupted switch left behind.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db =
            sled::Config::new().path(path).cache_capacity(128 << 20).mode(sled::Mode::HighThroughput).open().map_err(
                |e| match e {
                    sled::Error::Io(io)
                        if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
                    {
                        StoreError::Locked(path.display().to_string())
                    }
                    other => StoreError::Sled(other.to_string()),
                },
            )?;
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
        let store = Store { history: db.open_tree("history")?, events: db.open_tree("events")?, meta, db };
        store.clean()?;
        Ok(store)
    }

    /// Drops generation trees that are neither current nor staging, and history written for a
    /// generation that never became current.
    fn clean(&self) -> Result<(), StoreError> {
        let current = self.current()?;
        let staging = self.staging()?;
        for name in self.db.tree_names() {
            let Ok(name) = std::str::from_utf8(&name) else {
                continue;
            };
            let Some(g) = name.strip_prefix("gen-").and_then(|g| g.parse::<u64>().ok()) else {
                continue;
            };
            if Some(g) != current && Some(g) != staging {
                self.db.drop_tree(name)?;
            }
        }
        let from = history_key(current.unwrap_or(0) + 1, 0);
        let stale: Vec<_> = self.history.range(from..).keys().collect::<Result<_, _>>()?;
        for k in stale {
            self.history.remove(k)?;
        }
        Ok(())
    }

    pub fn current(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.meta.get(META_CURRENT)?.and_then(|v| u64_of(&v)))
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
        let t = self.tree(generation)?;
        let mut inputs = Inputs { contacts: decode_parallel(&t, P_CONTACT)?, ..Inputs::default() };
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

    pub fn memory(&self, generation: u64) -> Result<HashMap<u64, AgentMemory>, StoreError> {
        let t = self.tree(generation)?;
        let mut m = HashMap::new();
        for kv in t.scan_prefix([P_MEMORY]) {
            let (k, v) = kv?;
            let a: AgentMemory = decode(&k, &v)?;
            m.insert(a.id, a);
        }
        Ok(m)
    }

    pub fn contact(&self, generation: u64, id: u64) -> Result<Option<Contact>, StoreError> {
        let k = key(P_CONTACT, id);
        self.tree(generation)?.get(k)?.map(|v| decode(&k, &v)).transpose()
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
        let mut batch = sled::Batch::default();
        for r in records {
            match r {
                Record::Contact(c) => batch.insert(&key(P_CONTACT, c.id), encode(c)?),
                Record::User(u) => batch.insert(&key(P_USER, u.id), encode(u)?),
                Record::ScimUser(s) => batch.insert(&key(P_SCIM, s.id), encode(s)?),
                Record::Account(a) => batch.insert(account_key(&a.id), encode(a)?),
            }
        }
        if let Some(cp) = checkpoint {
            batch.insert(K_CHECKPOINT, encode(cp)?);
        }
        self.tree(generation)?.apply_batch(batch)?;
        Ok(())
    }

    pub fn checkpoint(&self, generation: u64) -> Result<Option<Value>, StoreError> {
        let t = self.tree(generation)?;
        t.get(K_CHECKPOINT)?.map(|v| decode(K_CHECKPOINT, &v)).transpose()
    }

    pub fn contact_ids(&self, generation: u64) -> Result<HashSet<u64>, StoreError> {
        let t = self.tree(generation)?;
        let mut ids = HashSet::new();
        for k in t.scan_prefix([P_CONTACT]).keys() {
            if let Some(id) = u64_of(&k?[1..]) {
                ids.insert(id);
            }
        }
        Ok(ids)
    }

    /// Copies the contacts of one generation into another (incremental discovery starts from the
    /// previous generation's contacts).
    pub fn copy_contacts(&self, from: u64, to: u64) -> Result<u64, StoreError> {
        let (src, dst) = (self.tree(from)?, self.tree(to)?);
        let mut n = 0;
        let mut batch = sled::Batch::default();
        for kv in src.scan_prefix([P_CONTACT]) {
            let (k, v) = kv?;
            batch.insert(k, v);
            n += 1;
            if n % 10_000 == 0 {
                dst.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        dst.apply_batch(batch)?;
        Ok(n)
    }

    /// Replaces the agents of a generation (an agents-only refresh), with their memory, atomically.
    pub fn replace_agents(
        &self,
        generation: u64,
        users: &[User],
        scim: Option<&[ScimUser]>,
        memory: &HashMap<u64, AgentMemory>,
        info: &GenInfo,
    ) -> Result<(), StoreError> {
        let t = self.tree(generation)?;
        let mut batch = sled::Batch::default();
        let mut prefixes = vec![P_USER, P_MEMORY];
        if scim.is_some() {
            prefixes.push(P_SCIM);
        }
        for p in prefixes {
            for k in t.scan_prefix([p]).keys() {
                batch.remove(k?);
            }
        }
        for u in users {
            batch.insert(&key(P_USER, u.id), encode(u)?);
        }
        for s in scim.unwrap_or_default() {
            batch.insert(&key(P_SCIM, s.id), encode(s)?);
        }
        for m in memory.values() {
            batch.insert(&key(P_MEMORY, m.id), encode(m)?);
        }
        batch.insert(K_INFO, encode(info)?);
        t.apply_batch(batch)?;
        t.flush()?;
        Ok(())
    }

    /// Makes a staging generation current: memory and info into its tree, history, then the
    /// switch, each flushed before the next.
    pub fn switch(
        &self,
        generation: u64,
        memory: &HashMap<u64, AgentMemory>,
        info: &GenInfo,
        changes: &[Change],
    ) -> Result<(), StoreError> {
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
        self.append_history(changes)?;
        let previous = self.current()?;
        let mut mb = sled::Batch::default();
        mb.insert(META_CURRENT, &generation.to_be_bytes());
        mb.remove(META_STAGING);
        self.meta.apply_batch(mb)?;
        self.meta.flush()?;
        if let Some(p) = previous.filter(|p| *p != generation) {
            self.db.drop_tree(gen_tree_name(p))?;
        }
        Ok(())
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

    pub fn next_seq(&self, n: u64) -> Result<u64, StoreError> {
        let prev = self.meta.fetch_and_update(META_SEQ, |old| {
            let cur = old.and_then(u64_of).unwrap_or(0);
            Some((cur + n).to_be_bytes().to_vec())
        })?;
        Ok(prev.and_then(|v| u64_of(&v)).unwrap_or(0) + 1)
    }

    pub fn append_history(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for c in changes {
            batch.insert(&history_key(c.generation, c.seq), encode(c)?);
        }
        self.history.apply_batch(batch)?;
        self.history.flush()?;
        Ok(())
    }

    /// Changes recorded after generation `since` (exclusive), after sequence `after_seq`.
    pub fn changes(&self, since: u64, after_seq: Option<u64>, first: usize) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        for kv in self.history.range(history_key(since.saturating_add(1), 0)..) {
            let (k, v) = kv?;
            let c: Change = decode(&k, &v)?;
            if after_seq.is_some_and(|a| c.seq <= a) {
                continue;
            }
            out.push(c);
            if out.len() >= first {
                break;
            }
        }
        Ok(out)
    }

    /// Every recorded change that concerns `agent`, oldest first.
    pub fn changes_of_agent(&self, agent: u64) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        for kv in self.history.iter() {
            let (k, v) = kv?;
            let c: Change = decode(&k, &v)?;
            if c.kind.concerns(agent) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Records a webhook event id; returns false when it was already applied.
    pub fn first_time(&self, event_id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let prev = self.events.insert(event_id.as_bytes(), &at_ms.to_be_bytes())?;
        Ok(prev.is_none())
    }

    /// Forgets event ids older than `before_ms`, keeping the table bounded.
    pub fn prune_events(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.events.iter() {
            let (k, v) = kv?;
            if u64_of(&v).map(|x| x as i64).is_some_and(|t| t < before_ms) {
                self.events.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn events_len(&self) -> usize {
        self.events.len()
    }

    /// Writes contacts into a generation in place (webhooks, reassignment).
    pub fn put_contacts(
        &self,
        generation: u64,
        upserts: &[Contact],
        deletes: &[u64],
        info: &GenInfo,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(K_INFO, encode(info)?);
        for c in upserts {
            batch.insert(&key(P_CONTACT, c.id), encode(c)?);
        }
        for id in deletes {
            batch.remove(&key(P_CONTACT, *id));
        }
        let t = self.tree(generation)?;
        t.apply_batch(batch)?;
        t.flush()?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
