//! The in-memory identity graph, derived from stored records, and its queries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use idgraph_model::{normalize_email, Account, Contact, ScimUser, User};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// In [`Index::email_first`]: ask `contact_emails`.
const ASK_TREE: u64 = u64::MAX;

/// The key of a normalised email in [`Index::email_first`].
fn email_hash(normalized: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(normalized)
}

/// What idgraph knows of an agent's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AgentStatus {
    Active,
    /// SCIM says `active: false`.
    Deactivated,
    /// Gone from REST and SCIM; idgraph keeps a tombstone.
    Departed,
    /// An owner id never seen as an agent.
    Unknown,
    Bot,
}

impl AgentStatus {
    /// The status as GraphQL and the CLI spell it (`DEACTIVATED`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            AgentStatus::Active => "ACTIVE",
            AgentStatus::Deactivated => "DEACTIVATED",
            AgentStatus::Departed => "DEPARTED",
            AgentStatus::Unknown => "UNKNOWN",
            AgentStatus::Bot => "BOT",
        }
    }

    /// Whether things owned by an agent in this status are orphans.
    pub fn orphans(self) -> Option<OrphanReason> {
        match self {
            AgentStatus::Active | AgentStatus::Bot => None,
            AgentStatus::Deactivated => Some(OrphanReason::OwnerDeactivated),
            AgentStatus::Departed => Some(OrphanReason::OwnerDeparted),
            AgentStatus::Unknown => Some(OrphanReason::OwnerUnknown),
        }
    }
}

#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OrphanReason {
    OwnerDeactivated,
    OwnerDeparted,
    OwnerUnknown,
}

/// idgraph's own memory of an agent, kept across generations: it is what still names an agent
/// after Drift has forgotten it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMemory {
    pub id: u64,
    pub name: Option<String>,
    pub email: Option<String>,
    pub bot: bool,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub deactivated_at_ms: Option<i64>,
    pub departed_at_ms: Option<i64>,
    /// The last role Drift's `/users` gave, kept once the agent is gone.
    #[serde(default)]
    pub role: Option<String>,
}

/// An agent as queries return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: u64,
    pub name: Option<String>,
    pub email: Option<String>,
    pub status: AgentStatus,
    pub role: Option<String>,
    pub first_seen_ms: Option<i64>,
    pub deactivated_at_ms: Option<i64>,
    pub departed_at_ms: Option<i64>,
    /// Seen in REST `/users` and in SCIM in the last crawl.
    pub in_rest: bool,
    pub in_scim: bool,
    /// When Drift last confirmed the agent (the last crawl or agents refresh that saw it).
    #[serde(default)]
    pub verified_at_ms: Option<i64>,
}

/// A contact as queries return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactView {
    pub id: u64,
    pub email: Option<String>,
    pub name: Option<String>,
    pub owner_id: Option<u64>,
    pub external_id: Option<String>,
    pub updated_at_ms: i64,
    /// When Drift last confirmed this contact as it is (a crawl, a re-read, a webhook); 0: never.
    #[serde(default)]
    pub verified_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub id: String,
    pub name: Option<String>,
    pub domain: Option<String>,
    pub owner_id: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum Node {
    Contact(ContactView),
    Agent(AgentView),
    Account(AccountView),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// agent -> contact or account
    Owns,
    /// contact -> agent: the same email, the same person
    SamePerson,
}

/// The key orphans are kept in: by reason, then when the owner went (deactivated or departed),
/// then owner, then contact. Pages are keyset pages over it.
pub type OrphanKey = (OrphanReason, i64, u64, u64);

/// One row of who-owns-whom.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnershipRow {
    pub agent: AgentView,
    pub contacts: usize,
    pub accounts: usize,
}

/// An orphan as queries return it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanView {
    pub contact: ContactView,
    pub reason: OrphanReason,
    pub owner: AgentView,
    pub key: OrphanKey,
}

/// How fresh the index is (see [`Index::freshness`]); an age is `None` when some contact was
/// never verified at that rank.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freshness {
    pub p50_age_ms: Option<i64>,
    pub p99_age_ms: Option<i64>,
    pub max_age_ms: Option<i64>,
    pub unverified_orphans: usize,
}

/// The identity graph of one generation.
#[derive(Debug, Default, Clone)]
pub struct Index {
    pub generation: u64,
    graph: StableDiGraph<Node, Edge>,
    contacts: FxHashMap<u64, NodeIndex>,
    agents: FxHashMap<u64, NodeIndex>,
    accounts: HashMap<String, NodeIndex>,
    /// Normalised email -> contact ids (sorted), for lookups and prefix search.
    contact_emails: BTreeMap<String, Vec<u64>>,
    /// Exact email lookups in one probe instead of a walk down `contact_emails` (batch lookups
    /// of 1,000 emails): the hash of a normalised email -> the lowest id with it, or
    /// [`ASK_TREE`] (two emails share the hash, or the email went away): then `contact_emails`
    /// answers. Every email in `contact_emails` has an entry; a found id is checked.
    email_first: FxHashMap<u64, u64>,
    /// Normalised email -> every agent that ever had it (a rehire reuses a leaver's email);
    /// [`Index::agent_by_email`] picks one by rule.
    agent_emails: HashMap<String, Vec<u64>>,
    /// Agent id -> its contacts, sorted by id: stable pages.
    owned: HashMap<u64, BTreeSet<u64>>,
    owned_accounts: HashMap<u64, BTreeSet<String>>,
    /// Orphans in key order, each with its contact's place (an export of the orphans reads them
    /// without a hash probe each).
    orphans: BTreeMap<OrphanKey, NodeIndex>,
    /// Orphans by reason, kept with the set so that counts cost nothing.
    orphan_by_reason: [usize; 3],
    orphan_accounts: BTreeSet<(OrphanReason, u64, String)>,
    unowned: BTreeSet<u64>,
    /// Agents by the number of things they own, most first.
    ranking: Vec<(usize, u64)>,
    /// A contact came or went since the ranking was made (a re-read that only confirms one
    /// does not, and its batch skips the re-ranking: the writer holds the lock for less).
    rank_stale: bool,
    pub memory: HashMap<u64, AgentMemory>,
    /// Every contact's place, by id: made once for a snapshot when an export first asks, and kept
    /// with it (an export of a million contacts then reads the contacts in order, without a sort
    /// and a hash probe a row); a contact added or removed forgets it.
    contact_order: OnceLock<Arc<[ContactSlot]>>,
}

/// A contact's place in an index, as [`Index::contacts_in_order`] lists them; read with
/// [`Index::contact_and_owner_at`] of the same index (a snapshot's places are its own: read
/// against another index, a place names whatever that index keeps there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactSlot(NodeIndex);

/// The inputs of an index: one generation's records and memory.
#[derive(Debug, Default)]
pub struct Inputs {
    pub contacts: Vec<Contact>,
    pub users: Vec<User>,
    pub scim: Vec<ScimUser>,
    pub accounts: Vec<Account>,
    pub memory: HashMap<u64, AgentMemory>,
    /// When each contact (same order as `contacts`) was last verified; missing: never.
    pub contact_verified: Vec<i64>,
}

pub(crate) fn contact_view(c: &Contact, verified_at_ms: i64) -> ContactView {
    ContactView {
        verified_at_ms,
        id: c.id,
        email: c.email.clone(),
        name: c.name.clone(),
        owner_id: c.owner_id,
        external_id: c.external_id.clone(),
        updated_at_ms: c.updated_at,
    }
}

/// Merges REST users and SCIM users into agents: by id, then by normalised email/userName.
/// Returns `(id, rest, scim)` triples.
pub fn merge_agents<'a>(users: &'a [User], scim: &'a [ScimUser]) -> Vec<(u64, Option<&'a User>, Option<&'a ScimUser>)> {
    let mut by_id: BTreeMap<u64, (Option<&User>, Option<&ScimUser>)> = BTreeMap::new();
    let mut email_to_id: HashMap<String, u64> = HashMap::new();
    for u in users {
        by_id.entry(u.id).or_default().0 = Some(u);
        if let Some(e) = &u.email {
            email_to_id.insert(normalize_email(e), u.id);
        }
    }
    for s in scim {
        let id = if by_id.contains_key(&s.id) {
            s.id
        } else {
            std::iter::once(&s.user_name)
                .chain(s.emails.iter())
                .find_map(|e| email_to_id.get(&normalize_email(e)).copied())
                .unwrap_or(s.id)
        };
        by_id.entry(id).or_default().1 = Some(s);
    }
    by_id.into_iter().map(|(id, (r, s))| (id, r, s)).collect()
}

/// Updates the memory of agents from what one crawl saw; returns the new statuses.
pub fn remember(
    memory: &mut HashMap<u64, AgentMemory>,
    users: &[User],
    scim: &[ScimUser],
    now_ms: i64,
) -> HashMap<u64, AgentStatus> {
    let mut status = HashMap::new();
    for (id, rest, sc) in merge_agents(users, scim) {
        let name = rest.and_then(|u| u.name.clone()).or_else(|| sc.and_then(|s| s.display_name.clone()));
        let email =
            rest.and_then(|u| u.email.clone()).or_else(|| sc.map(|s| s.user_name.clone()).filter(|s| !s.is_empty()));
        let bot = rest.is_some_and(|u| u.bot);
        let m = memory.entry(id).or_insert_with(|| AgentMemory {
            id,
            name: None,
            email: None,
            bot,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            deactivated_at_ms: None,
            departed_at_ms: None,
            role: None,
        });
        if let Some(r) = rest.and_then(|u| u.role.clone()) {
            m.role = Some(r);
        }
        if name.is_some() {
            m.name = name;
        }
        if email.is_some() {
            m.email = email;
        }
        m.bot = bot;
        m.last_seen_ms = now_ms;
        m.departed_at_ms = None;
        let st = if bot {
            AgentStatus::Bot
        } else if sc.is_some_and(|s| !s.active) {
            m.deactivated_at_ms.get_or_insert(now_ms);
            AgentStatus::Deactivated
        } else {
            m.deactivated_at_ms = None;
            AgentStatus::Active
        };
        status.insert(id, st);
    }
    for (id, m) in memory.iter_mut() {
        if !status.contains_key(id) {
            m.departed_at_ms.get_or_insert(now_ms);
            status.insert(*id, AgentStatus::Departed);
        }
    }
    status
}

/// Which agents the last crawl saw: id -> (in REST, in SCIM, REST role).
type Presence = HashMap<u64, (bool, bool, Option<String>)>;

fn presence(users: &[User], scim: &[ScimUser]) -> Presence {
    merge_agents(users, scim)
        .into_iter()
        .map(|(id, rest, sc)| (id, (rest.is_some(), sc.is_some(), rest.and_then(|u| u.role.clone()))))
        .collect()
}

/// An agent as idgraph sees it: its memory and whether the last crawl saw it.
fn agent_view(m: &AgentMemory, present: &Presence) -> AgentView {
    let (in_rest, in_scim, role) = present.get(&m.id).cloned().unwrap_or((false, false, None));
    let status = if m.bot {
        AgentStatus::Bot
    } else if !in_rest && !in_scim {
        AgentStatus::Departed
    } else if m.deactivated_at_ms.is_some() {
        AgentStatus::Deactivated
    } else {
        AgentStatus::Active
    };
    AgentView {
        id: m.id,
        name: m.name.clone(),
        email: m.email.clone(),
        status,
        // A departed agent keeps the last role and confirmation Drift gave.
        role: role.or_else(|| m.role.clone()),
        first_seen_ms: Some(m.first_seen_ms),
        deactivated_at_ms: m.deactivated_at_ms,
        departed_at_ms: if status == AgentStatus::Departed { m.departed_at_ms } else { None },
        in_rest,
        in_scim,
        verified_at_ms: Some(m.last_seen_ms),
    }
}

impl Index {
    /// Builds the graph from one generation's records. Memory must already reflect `users` and
    /// `scim` (see [`remember`]).
    pub fn build(generation: u64, inputs: Inputs) -> Index {
        let Inputs { contacts, users, scim, accounts, memory, contact_verified } = inputs;
        let mut ix = Index { generation, ..Index::default() };
        ix.contacts.reserve(contacts.len());
        let present = presence(&users, &scim);
        for m in memory.values() {
            ix.add_agent(agent_view(m, &present));
        }
        ix.memory = memory;
        ix.graph.reserve_nodes(contacts.len() + ix.agents.len() + accounts.len());
        ix.graph.reserve_edges(contacts.len() + accounts.len());
        for (i, c) in contacts.into_iter().enumerate() {
            // Moved, not cloned: a million contacts' strings are most of the build.
            ix.insert_contact(ContactView {
                verified_at_ms: contact_verified.get(i).copied().unwrap_or(0),
                id: c.id,
                email: c.email,
                name: c.name,
                owner_id: c.owner_id,
                external_id: c.external_id,
                updated_at_ms: c.updated_at,
            });
        }
        for a in &accounts {
            ix.insert_account(a);
        }
        ix.rerank();
        ix
    }

    /// Notes that agent `id` has `email` now (and no longer `old`, when it changed).
    fn index_agent_email(&mut self, id: u64, old: Option<&str>, new: Option<&str>) {
        let (old, new) = (old.map(normalize_email), new.map(normalize_email));
        if old == new && new.as_ref().is_some_and(|e| self.agent_emails.get(e).is_some_and(|v| v.contains(&id))) {
            return;
        }
        if let Some(o) = old.filter(|o| Some(o) != new.as_ref()) {
            if let Some(v) = self.agent_emails.get_mut(&o) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    self.agent_emails.remove(&o);
                }
            }
        }
        if let Some(e) = new {
            let v = self.agent_emails.entry(e).or_default();
            if let Err(pos) = v.binary_search(&id) {
                v.insert(pos, id);
            }
        }
    }

    /// The agent an email belongs to, by rule: the active one; with none active, the one most
    /// recently seen by Drift; ties to the higher id. The same answer whatever the order agents
    /// were loaded in, so after any restart.
    fn agent_id_by_email(&self, normalized: &str) -> Option<u64> {
        let ids = self.agent_emails.get(normalized)?;
        ids.iter()
            .copied()
            .filter_map(|id| Some((id, self.agent_ref(id)?)))
            .max_by_key(|(id, a)| {
                let seen = self.memory.get(id).map_or(i64::MIN, |m| m.last_seen_ms);
                (a.status == AgentStatus::Active, seen, *id)
            })
            .map(|(id, _)| id)
    }

    fn add_agent(&mut self, a: AgentView) -> NodeIndex {
        self.index_agent_email(a.id, None, a.email.as_deref());
        let id = a.id;
        let n = self.graph.add_node(Node::Agent(a));
        self.agents.insert(id, n);
        n
    }

    /// The agent node for an owner id, made as UNKNOWN when the id was never seen as an agent.
    fn owner_node(&mut self, id: u64) -> NodeIndex {
        if let Some(n) = self.agents.get(&id) {
            return *n;
        }
        self.add_agent(AgentView {
            id,
            name: None,
            email: None,
            status: AgentStatus::Unknown,
            role: None,
            first_seen_ms: None,
            deactivated_at_ms: None,
            departed_at_ms: None,
            in_rest: false,
            in_scim: false,
            verified_at_ms: None,
        })
    }

    pub fn agent_ref(&self, id: u64) -> Option<&AgentView> {
        match self.graph.node_weight(*self.agents.get(&id)?) {
            Some(Node::Agent(a)) => Some(a),
            _ => None,
        }
    }

    fn orphan_key(&self, owner: u64, contact: u64) -> Option<OrphanKey> {
        let a = self.agent_ref(owner)?;
        let reason = a.status.orphans()?;
        let gone = a.departed_at_ms.or(a.deactivated_at_ms).unwrap_or(0);
        Some((reason, gone, owner, contact))
    }

    /// The orphan key of a contact, when it is an orphan now.
    pub fn orphan_key_of(&self, contact: u64) -> Option<OrphanKey> {
        let owner = self.owner_of(contact)?.id;
        self.orphan_key(owner, contact)
    }

    fn orphan_insert(&mut self, k: OrphanKey, n: NodeIndex) {
        if self.orphans.insert(k, n).is_none() {
            self.orphan_by_reason[k.0 as usize] += 1;
        }
    }

    fn orphan_remove(&mut self, k: &OrphanKey) {
        if self.orphans.remove(k).is_some() {
            self.orphan_by_reason[k.0 as usize] -= 1;
        }
    }

    fn insert_contact(&mut self, c: ContactView) {
        self.rank_stale = true;
        self.contact_order.take();
        let id = c.id;
        let email = c.email.as_deref().map(normalize_email);
        let owner = c.owner_id;
        let n = self.graph.add_node(Node::Contact(c));
        self.contacts.insert(id, n);
        if let Some(e) = email {
            if let Some(agent) = self.agent_id_by_email(&e).and_then(|a| self.agents.get(&a)).copied() {
                self.graph.add_edge(n, agent, Edge::SamePerson);
            }
            let h = email_hash(&e);
            let ids = self.contact_emails.entry(e).or_default();
            if let Err(pos) = ids.binary_search(&id) {
                ids.insert(pos, id);
            }
            let first = ids[0];
            self.email_first.insert(h, first);
        }
        match owner {
            Some(o) => {
                let a = self.owner_node(o);
                self.graph.add_edge(a, n, Edge::Owns);
                self.owned.entry(o).or_default().insert(id);
                if let Some(k) = self.orphan_key(o, id) {
                    self.orphan_insert(k, n);
                }
            }
            None => {
                self.unowned.insert(id);
            }
        }
    }

    fn remove_contact(&mut self, id: u64) -> Option<ContactView> {
        self.rank_stale = true;
        self.contact_order.take();
        let n = self.contacts.remove(&id)?;
        let Some(Node::Contact(c)) = self.graph.remove_node(n) else {
            return None;
        };
        if let Some(e) = c.email.as_deref().map(normalize_email) {
            if let Some(ids) = self.contact_emails.get_mut(&e) {
                ids.retain(|x| *x != id);
                // Never removed: another email with the same hash may rely on the entry.
                let first = ids.first().copied().unwrap_or(ASK_TREE);
                if ids.is_empty() {
                    self.contact_emails.remove(&e);
                }
                self.email_first.insert(email_hash(&e), first);
            }
        }
        match c.owner_id {
            Some(o) => {
                if let Some(set) = self.owned.get_mut(&o) {
                    set.remove(&id);
                }
                if let Some(k) = self.orphan_key(o, id) {
                    self.orphan_remove(&k);
                }
            }
            None => {
                self.unowned.remove(&id);
            }
        }
        Some(c)
    }

    fn insert_account(&mut self, a: &Account) {
        if a.deleted {
            return;
        }
        let view =
            AccountView { id: a.id.clone(), name: a.name.clone(), domain: a.domain.clone(), owner_id: a.owner_id };
        let n = self.graph.add_node(Node::Account(view));
        self.accounts.insert(a.id.clone(), n);
        if let Some(o) = a.owner_id {
            let agent = self.owner_node(o);
            self.graph.add_edge(agent, n, Edge::Owns);
            self.owned_accounts.entry(o).or_default().insert(a.id.clone());
            if let Some(reason) = self.agent_ref(o).and_then(|x| x.status.orphans()) {
                self.orphan_accounts.insert((reason, o, a.id.clone()));
            }
        }
    }

    fn rerank(&mut self) {
        let mut ranking: Vec<(usize, u64)> = self
            .agents
            .keys()
            .map(|id| {
                let n =
                    self.owned.get(id).map_or(0, BTreeSet::len) + self.owned_accounts.get(id).map_or(0, BTreeSet::len);
                (n, *id)
            })
            .collect();
        ranking.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        self.ranking = ranking;
        self.rank_stale = false;
    }

    // ---- incremental updates ----

    /// Sets a contact to what it is now (`None`: gone), whatever it was.
    pub fn put_contact(&mut self, id: u64, now: Option<ContactView>) {
        // The same email and owner: nothing the graph's structure depends on changes, so the node
        // is updated where it is (a re-read that only confirms a contact is the common case).
        if let (Some(c), Some(n)) = (&now, self.contacts.get(&id)) {
            if let Some(Node::Contact(old)) = self.graph.node_weight_mut(*n) {
                if old.email == c.email && old.owner_id == c.owner_id {
                    // Only what differs is written: a re-read that confirms a contact changes its
                    // times alone, and the contact keeps its text where it was allocated (the
                    // refresher confirms tens of thousands a second; replacing every string would
                    // move the index, a little at a time, into whichever threads ran it).
                    if old.name != c.name {
                        old.name.clone_from(&c.name);
                    }
                    if old.external_id != c.external_id {
                        old.external_id.clone_from(&c.external_id);
                    }
                    old.updated_at_ms = c.updated_at_ms;
                    old.verified_at_ms = c.verified_at_ms;
                    return;
                }
            }
        }
        self.remove_contact(id);
        if let Some(c) = now {
            self.insert_contact(c);
        }
    }

    /// How old what the index holds is: ages (now - verifiedAt) over all contacts, and the
    /// orphans not verified since their owner went.
    pub fn freshness(&self, now_ms: i64) -> Freshness {
        let mut ages: Vec<i64> = Vec::with_capacity(self.contacts.len());
        for n in self.contacts.values() {
            if let Some(Node::Contact(c)) = self.graph.node_weight(*n) {
                ages.push(if c.verified_at_ms > 0 { (now_ms - c.verified_at_ms).max(0) } else { i64::MAX });
            }
        }
        let pct = |ages: &mut Vec<i64>, p: f64| -> Option<i64> {
            if ages.is_empty() {
                return None;
            }
            let k = (((ages.len() - 1) as f64) * p).round() as usize;
            Some(*ages.select_nth_unstable(k).1)
        };
        let p50 = pct(&mut ages, 0.5);
        let p99 = pct(&mut ages, 0.99);
        let max = ages.iter().copied().max();
        let unverified_orphans = self
            .orphans
            .keys()
            .filter(|k| {
                self.contact_ref(k.3).is_none_or(|c| k.0 != OrphanReason::OwnerUnknown && c.verified_at_ms < k.1)
            })
            .count();
        let never = |a: Option<i64>| a.filter(|a| *a != i64::MAX);
        Freshness { p50_age_ms: never(p50), p99_age_ms: never(p99), max_age_ms: never(max), unverified_orphans }
    }

    /// Re-derives agents' statuses after an agents-only refresh, updating the orphan sets of the
    /// agents whose status changed. Memory must already be updated (see [`remember`]).
    pub fn apply_agents(&mut self, users: &[User], scim: &[ScimUser], memory: HashMap<u64, AgentMemory>) {
        let present = presence(users, scim);
        for m in memory.values() {
            let new = agent_view(m, &present);
            let changed = self.agent_ref(m.id) != Some(&new);
            if !changed {
                continue;
            }
            // Take this agent's orphans out under the old status, then put them back under the new.
            let contacts: Vec<u64> = self.owned.get(&m.id).map(|s| s.iter().copied().collect()).unwrap_or_default();
            let accounts: Vec<String> =
                self.owned_accounts.get(&m.id).map(|s| s.iter().cloned().collect()).unwrap_or_default();
            for c in &contacts {
                if let Some(k) = self.orphan_key(m.id, *c) {
                    self.orphan_remove(&k);
                }
            }
            self.orphan_accounts.retain(|(_, o, _)| *o != m.id);
            let old_email = self.agent_ref(m.id).and_then(|a| a.email.clone());
            self.index_agent_email(m.id, old_email.as_deref(), new.email.as_deref());
            match self.agents.get(&m.id).copied() {
                Some(n) => {
                    if let Some(w) = self.graph.node_weight_mut(n) {
                        *w = Node::Agent(new);
                    }
                }
                None => {
                    self.add_agent(new);
                }
            }
            for c in &contacts {
                if let (Some(k), Some(n)) = (self.orphan_key(m.id, *c), self.contacts.get(c).copied()) {
                    self.orphan_insert(k, n);
                }
            }
            if let Some(reason) = self.agent_ref(m.id).and_then(|a| a.status.orphans()) {
                for a in accounts {
                    self.orphan_accounts.insert((reason, m.id, a));
                }
            }
        }
        self.memory = memory;
        self.rerank();
    }

    /// Call after a batch of incremental updates.
    pub fn finish_batch(&mut self) {
        if self.rank_stale {
            self.rerank();
        }
    }

    // ---- queries ----

    /// How many contacts the index holds (O(1): every GraphQL request's cost check asks).
    pub fn contact_count(&self) -> usize {
        self.contacts.len()
    }

    /// Contacts, agents (those seen as agents: not an unknown owner) and accounts; counting the
    /// agents walks them.
    pub fn counts(&self) -> (usize, usize, usize) {
        let agents = self
            .agents
            .values()
            .filter(|n| matches!(self.graph.node_weight(**n), Some(Node::Agent(a)) if a.status != AgentStatus::Unknown))
            .count();
        (self.contacts.len(), agents, self.accounts.len())
    }

    /// Contacts orphaned now.
    pub fn orphans_len(&self) -> usize {
        self.orphans.len()
    }

    pub fn contact_ref(&self, id: u64) -> Option<&ContactView> {
        self.contact_at(*self.contacts.get(&id)?)
    }

    /// The contact at a node of this index.
    fn contact_at(&self, n: NodeIndex) -> Option<&ContactView> {
        match self.graph.node_weight(n) {
            Some(Node::Contact(c)) => Some(c),
            _ => None,
        }
    }

    /// Orphans after `after` in key order, borrowed (exports): no copies.
    pub fn orphan_refs(&self, after: Option<OrphanKey>, first: usize) -> Vec<(OrphanKey, &ContactView, &AgentView)> {
        self.orphan_refs_between(after, None).take(first).collect()
    }

    /// The orphans' keys after `after` up to `upto` (both in key order; `None`: from the first,
    /// to the last), with their contacts and owners, borrowed (an export's chunk).
    pub fn orphan_refs_between(
        &self,
        after: Option<OrphanKey>,
        upto: Option<OrphanKey>,
    ) -> impl Iterator<Item = (OrphanKey, &ContactView, &AgentView)> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let range = (after.map_or(Unbounded, Excluded), upto.map_or(Unbounded, Included));
        self.orphans.range(range).filter_map(|(k, n)| Some((*k, self.contact_at(*n)?, self.agent_ref(k.2)?)))
    }

    /// Every `step`-th orphan key in order (the last of each run of `step`): where an export's
    /// chunks end, so that they can be encoded apart.
    pub fn orphan_key_marks(&self, step: usize) -> Vec<OrphanKey> {
        self.orphans.keys().skip(step.saturating_sub(1)).step_by(step.max(1)).copied().collect()
    }

    pub fn contact(&self, id: u64) -> Option<ContactView> {
        match self.graph.node_weight(*self.contacts.get(&id)?) {
            Some(Node::Contact(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// Contacts with this email (emails are not unique in Drift), lowest id first.
    pub fn contacts_by_email(&self, email: &str) -> Vec<ContactView> {
        self.contact_emails
            .get(&normalize_email(email))
            .map(|ids| ids.iter().filter_map(|id| self.contact(*id)).collect())
            .unwrap_or_default()
    }

    /// The contact with this email and the lowest id, borrowed (batch lookups).
    pub fn contact_by_email_ref(&self, email: &str) -> Option<&ContactView> {
        let e = normalize_email(email);
        match self.email_first.get(&email_hash(&e)) {
            None => return None,
            Some(&ASK_TREE) => {}
            Some(id) => {
                let same = |c: &&ContactView| c.email.as_deref().is_some_and(|x| x.trim().eq_ignore_ascii_case(&e));
                if let Some(c) = self.contact_ref(*id).filter(same) {
                    return Some(c);
                }
            }
        }
        self.contact_emails.get(&e)?.iter().find_map(|id| self.contact_ref(*id))
    }

    /// The owner of a contact, through the graph's ownership edge.
    pub fn owner_of(&self, contact_id: u64) -> Option<&AgentView> {
        self.owner_of_node(*self.contacts.get(&contact_id)?)
    }

    fn owner_of_node(&self, n: NodeIndex) -> Option<&AgentView> {
        self.graph.edges_directed(n, Direction::Incoming).find(|e| *e.weight() == Edge::Owns).and_then(|e| {
            match self.graph.node_weight(e.source()) {
                Some(Node::Agent(a)) => Some(a),
                _ => None,
            }
        })
    }

    /// A contact and its owner, borrowed, with one lookup of the id (exports).
    pub fn contact_and_owner(&self, id: u64) -> Option<(&ContactView, Option<&AgentView>)> {
        self.contact_and_owner_at(ContactSlot(*self.contacts.get(&id)?))
    }

    pub fn agent(&self, id: u64) -> Option<AgentView> {
        self.agent_ref(id).cloned()
    }

    /// The agent an email belongs to: the active agent with it; with none active, the most
    /// recently seen. [`Index::agents_by_email`] lists every agent that ever had it.
    pub fn agent_by_email(&self, email: &str) -> Option<AgentView> {
        self.agent(self.agent_id_by_email(&normalize_email(email))?)
    }

    /// Every agent that ever had this email (a leaver and the rehire who took it over), the one
    /// [`Index::agent_by_email`] answers first, then by id.
    pub fn agents_by_email(&self, email: &str) -> Vec<AgentView> {
        let e = normalize_email(email);
        let first = self.agent_id_by_email(&e);
        let mut out: Vec<AgentView> =
            self.agent_emails.get(&e).into_iter().flatten().filter_map(|id| self.agent(*id)).collect();
        out.sort_by_key(|a| (Some(a.id) != first, a.id));
        out
    }

    /// The agent that is the same person as a contact (same email), if any.
    pub fn same_person(&self, contact_id: u64) -> Option<AgentView> {
        let n = *self.contacts.get(&contact_id)?;
        self.graph.edges_directed(n, Direction::Outgoing).find(|e| *e.weight() == Edge::SamePerson).and_then(|e| {
            match self.graph.node_weight(e.target()) {
                Some(Node::Agent(a)) => Some(a.clone()),
                _ => None,
            }
        })
    }

    /// A page of an agent's contacts in id order after `after`; and the total.
    pub fn owned_contacts(&self, agent: u64, after: Option<u64>, first: usize) -> (Vec<ContactView>, usize) {
        let Some(set) = self.owned.get(&agent) else {
            return (Vec::new(), 0);
        };
        let iter: Box<dyn Iterator<Item = &u64>> = match after {
            Some(a) => Box::new(set.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))),
            None => Box::new(set.iter()),
        };
        (iter.take(first).filter_map(|id| self.contact(*id)).collect(), set.len())
    }

    pub fn owned_contact_ids(&self, agent: u64) -> Vec<u64> {
        self.owned.get(&agent).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    pub fn owned_accounts(&self, agent: u64, after: Option<&str>, first: usize) -> (Vec<AccountView>, usize) {
        let Some(set) = self.owned_accounts.get(&agent) else {
            return (Vec::new(), 0);
        };
        let iter: Box<dyn Iterator<Item = &String>> = match after {
            Some(a) => Box::new(set.range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))),
            None => Box::new(set.iter()),
        };
        let page = iter
            .take(first)
            .filter_map(|id| match self.graph.node_weight(*self.accounts.get(id)?) {
                Some(Node::Account(a)) => Some(a.clone()),
                _ => None,
            })
            .collect();
        (page, set.len())
    }

    pub fn account_count_of(&self, agent: u64) -> usize {
        self.owned_accounts.get(&agent).map_or(0, BTreeSet::len)
    }

    pub fn contact_count_of(&self, agent: u64) -> usize {
        self.owned.get(&agent).map_or(0, BTreeSet::len)
    }

    /// Agents by the number of things they own, most first: a page from `offset`, and the total.
    pub fn who_owns_whom(&self, offset: usize, first: usize) -> (Vec<OwnershipRow>, usize) {
        let rows = self
            .ranking
            .iter()
            .skip(offset)
            .take(first)
            .filter_map(|(_, id)| {
                Some(OwnershipRow {
                    agent: self.agent(*id)?,
                    contacts: self.contact_count_of(*id),
                    accounts: self.account_count_of(*id),
                })
            })
            .collect();
        (rows, self.ranking.len())
    }

    /// A keyset page of orphaned contacts, optionally of one reason and with owners gone since
    /// `since_ms`. Cost: O(log n + first), whatever the number of contacts.
    pub fn orphans(
        &self,
        reason: Option<OrphanReason>,
        since_ms: Option<i64>,
        after: Option<OrphanKey>,
        first: usize,
    ) -> Vec<OrphanView> {
        let mut page = Vec::new();
        for r in Self::reasons(reason) {
            if page.len() >= first {
                break;
            }
            let lo = (r, since_ms.unwrap_or(i64::MIN), 0, 0);
            let hi = (r, i64::MAX, u64::MAX, u64::MAX);
            let start = match after {
                Some(a) if a > hi => continue,
                Some(a) if a >= lo => std::ops::Bound::Excluded(a),
                _ => std::ops::Bound::Included(lo),
            };
            for k in self.orphans.range((start, std::ops::Bound::Included(hi))).map(|(k, _)| k).take(first - page.len())
            {
                let (Some(contact), Some(owner)) = (self.contact(k.3), self.agent(k.2)) else {
                    continue;
                };
                page.push(OrphanView { contact, reason: k.0, owner, key: *k });
            }
        }
        page
    }

    fn reasons(reason: Option<OrphanReason>) -> Vec<OrphanReason> {
        match reason {
            Some(r) => vec![r],
            None => vec![OrphanReason::OwnerDeactivated, OrphanReason::OwnerDeparted, OrphanReason::OwnerUnknown],
        }
    }

    /// How many orphans match: O(1) without `since_ms`, else counted over the matching range.
    pub fn orphan_count(&self, reason: Option<OrphanReason>, since_ms: Option<i64>) -> usize {
        Self::reasons(reason)
            .into_iter()
            .map(|r| match since_ms {
                None => self.orphan_by_reason[r as usize],
                Some(s) => self.orphans.range((r, s, 0, 0)..=(r, i64::MAX, u64::MAX, u64::MAX)).count(),
            })
            .sum()
    }

    pub fn orphan_total(&self) -> usize {
        self.orphans.len()
    }

    /// Orphaned accounts: `(reason, owner, account)`.
    pub fn orphan_accounts(&self) -> Vec<(OrphanReason, AgentView, AccountView)> {
        self.orphan_accounts
            .iter()
            .filter_map(|(r, o, a)| {
                let acc = match self.graph.node_weight(*self.accounts.get(a)?) {
                    Some(Node::Account(x)) => x.clone(),
                    _ => return None,
                };
                Some((*r, self.agent(*o)?, acc))
            })
            .collect()
    }

    /// Contacts without an owner (not orphans): a page after `after`, and the total.
    pub fn unowned(&self, after: Option<u64>, first: usize) -> (Vec<ContactView>, usize) {
        let iter: Box<dyn Iterator<Item = &u64>> = match after {
            Some(a) => Box::new(self.unowned.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))),
            None => Box::new(self.unowned.iter()),
        };
        (iter.take(first).filter_map(|id| self.contact(*id)).collect(), self.unowned.len())
    }

    /// Every agent, by id.
    pub fn agents(&self) -> Vec<AgentView> {
        let mut v: Vec<AgentView> = self.agents.keys().filter_map(|id| self.agent(*id)).collect();
        v.sort_by_key(|a| a.id);
        v
    }

    /// Contacts whose email starts with `prefix`, and agents whose email or name does.
    pub fn search(&self, prefix: &str, first: usize) -> (Vec<ContactView>, Vec<AgentView>) {
        let p = prefix.trim().to_ascii_lowercase();
        if p.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let contacts = self
            .contact_emails
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .flat_map(|(_, ids)| ids.iter())
            .take(first)
            .filter_map(|id| self.contact(*id))
            .collect();
        let mut agents: Vec<AgentView> = self
            .agents()
            .into_iter()
            .filter(|a| {
                a.email.as_deref().is_some_and(|e| e.to_ascii_lowercase().starts_with(&p))
                    || a.name.as_deref().is_some_and(|n| {
                        let n = n.to_ascii_lowercase();
                        n.starts_with(&p) || n.split_whitespace().any(|w| w.starts_with(&p))
                    })
            })
            .collect();
        agents.truncate(first);
        (contacts, agents)
    }

    /// Every contact whose normalised email starts with `prefix`, with that email, by email then
    /// id.
    pub fn search_contacts(&self, prefix: &str) -> Vec<(String, ContactView)> {
        let p = prefix.trim().to_ascii_lowercase();
        if p.is_empty() {
            return Vec::new();
        }
        self.contact_emails
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .flat_map(|(k, ids)| ids.iter().filter_map(|id| Some((k.clone(), self.contact(*id)?))))
            .collect()
    }

    /// Every contact id, sorted.
    pub fn contact_ids_sorted(&self) -> Vec<u64> {
        let order = self.contacts_in_order();
        order.iter().filter_map(|s| self.contact_at(s.0)).map(|c| c.id).collect()
    }

    /// Every contact's place, by id (made on the first call for this index, then shared).
    pub fn contacts_in_order(&self) -> Arc<[ContactSlot]> {
        self.contact_order
            .get_or_init(|| {
                let mut v: Vec<(u64, NodeIndex)> = self.contacts.iter().map(|(id, n)| (*id, *n)).collect();
                v.sort_unstable_by_key(|(id, _)| *id);
                v.into_iter().map(|(_, n)| ContactSlot(n)).collect()
            })
            .clone()
    }

    /// The contact at a place from [`Index::contacts_in_order`] of this index, and its owner.
    pub fn contact_and_owner_at(&self, slot: ContactSlot) -> Option<(&ContactView, Option<&AgentView>)> {
        Some((self.contact_at(slot.0)?, self.owner_of_node(slot.0)))
    }

    /// Every account id, sorted.
    pub fn account_ids_sorted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.accounts.keys().cloned().collect();
        v.sort_unstable();
        v
    }

    pub fn account(&self, id: &str) -> Option<AccountView> {
        match self.graph.node_weight(*self.accounts.get(id)?) {
            Some(Node::Account(a)) => Some(a.clone()),
            _ => None,
        }
    }

    /// Every contact's owner, for diffs between generations.
    pub fn owner_map(&self) -> HashMap<u64, Option<u64>> {
        self.contacts.keys().filter_map(|id| Some((*id, self.contact(*id)?.owner_id))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64, email: &str) -> User {
        User {
            id,
            email: Some(email.into()),
            name: Some(format!("U{id}")),
            role: None,
            bot: false,
            created_at: 0,
            updated_at: 0,
        }
    }
    fn contact(id: u64, owner: Option<u64>) -> Contact {
        Contact {
            id,
            email: Some(format!("c{id}@x.io")),
            name: None,
            owner_id: owner,
            external_id: None,
            created_at: 0,
            updated_at: 10,
            extra: Default::default(),
        }
    }

    /// Email lookups through the hash index agree with the ordered one, also when two emails
    /// share a hash (simulated by overwriting entries) and after contacts go.
    #[test]
    fn email_lookups_survive_shared_hashes_and_removals() {
        let mut contacts: Vec<Contact> = (1..=6).map(|i| contact(i, None)).collect();
        contacts[4].email = Some(" C1@X.io ".into()); // 5 shares 1's email
        let mut ix = Index::build(1, Inputs { contacts, ..Inputs::default() });
        let id = |ix: &Index, e: &str| ix.contact_by_email_ref(e).map(|c| c.id);
        assert_eq!((id(&ix, "c1@x.io"), id(&ix, "C2@x.IO"), id(&ix, "nobody@x.io")), (Some(1), Some(2), None));
        // A shared hash: 2's entry now names 3, or says to ask the ordered index.
        ix.email_first.insert(email_hash("c2@x.io"), 3);
        assert_eq!(id(&ix, "c2@x.io"), Some(2));
        ix.email_first.insert(email_hash("c2@x.io"), ASK_TREE);
        assert_eq!(id(&ix, "c2@x.io"), Some(2));
        // The lowest id goes: the next one answers; the last goes: nothing does.
        ix.put_contact(1, None);
        assert_eq!(id(&ix, "c1@x.io"), Some(5));
        ix.put_contact(5, None);
        assert_eq!(id(&ix, "c1@x.io"), None);
        assert_eq!(ix.email_first.get(&email_hash("c1@x.io")), Some(&ASK_TREE));
        let mut back = contact(9, None);
        back.email = Some("c1@x.io".into());
        ix.put_contact(9, Some(contact_view(&back, 0)));
        assert_eq!(id(&ix, "c1@x.io"), Some(9));
    }

    /// The contacts' order kept with an index, and the orphans' places, follow every change: an
    /// export after an in-place change lists what the index holds, in id order.
    #[test]
    fn kept_order_and_orphan_places_follow_changes() {
        let mut memory = HashMap::new();
        let users = vec![user(1, "a@x.io"), user(2, "b@x.io")];
        remember(&mut memory, &users, &[], 100);
        // 2 leaves: its contacts are orphans.
        let st = remember(&mut memory, &users[..1], &[], 200);
        assert_eq!(st[&2], AgentStatus::Departed);
        let contacts = vec![contact(30, Some(1)), contact(10, Some(2)), contact(20, None)];
        let mut ix = Index::build(
            1,
            Inputs {
                contacts,
                users: users[..1].to_vec(),
                scim: vec![],
                accounts: vec![],
                memory,
                contact_verified: vec![],
            },
        );
        let listed = |ix: &Index| {
            ix.contacts_in_order()
                .iter()
                .filter_map(|s| ix.contact_and_owner_at(*s))
                .map(|(c, o)| (c.id, c.name.clone(), o.map(|o| o.id)))
                .collect::<Vec<_>>()
        };
        let orphans = |ix: &Index| ix.orphan_refs_between(None, None).map(|(_, c, o)| (c.id, o.id)).collect::<Vec<_>>();
        assert_eq!(listed(&ix), vec![(10, None, Some(2)), (20, None, None), (30, None, Some(1))]);
        assert_eq!(orphans(&ix), vec![(10, 2)]);
        // A snapshot taken now keeps its order; the index changes on (a copy, as a writer makes).
        let snapshot = ix.clone();
        let mut renamed = contact_view(&contact(30, Some(1)), 0);
        renamed.name = Some("Renamed".into());
        ix.put_contact(30, Some(renamed)); // in place: the same email and owner
        ix.put_contact(5, Some(contact_view(&contact(5, Some(2)), 0))); // new, first by id
        ix.put_contact(20, None); // gone
        ix.put_contact(10, Some(contact_view(&contact(10, Some(1)), 0))); // moved to an active owner
        ix.finish_batch();
        assert_eq!(listed(&ix), vec![(5, None, Some(2)), (10, None, Some(1)), (30, Some("Renamed".into()), Some(1))]);
        assert_eq!(ix.contact_ids_sorted(), vec![5, 10, 30]);
        assert_eq!(orphans(&ix), vec![(5, 2)]);
        assert_eq!(listed(&snapshot), vec![(10, None, Some(2)), (20, None, None), (30, None, Some(1))]);
        assert_eq!(orphans(&snapshot), vec![(10, 2)]);
    }

    #[test]
    fn statuses_orphans_and_pages() {
        let mut memory = HashMap::new();
        let users = vec![user(1, "a@x.io"), user(2, "b@x.io"), user(3, "c@x.io")];
        remember(&mut memory, &users, &[], 100);
        // 3 leaves; 2 is deactivated in SCIM.
        let users2 = vec![user(1, "a@x.io"), user(2, "b@x.io")];
        let scim =
            vec![ScimUser { id: 2, user_name: "B@x.io".into(), display_name: None, active: false, emails: vec![] }];
        let st = remember(&mut memory, &users2, &scim, 200);
        assert_eq!(st[&3], AgentStatus::Departed);
        assert_eq!(st[&2], AgentStatus::Deactivated);
        let contacts = vec![
            contact(10, Some(1)),
            contact(11, Some(2)),
            contact(12, Some(3)),
            contact(13, Some(99)),
            contact(14, None),
        ];
        let ix = Index::build(
            1,
            Inputs { contacts, users: users2, scim, accounts: vec![], memory, contact_verified: vec![] },
        );
        assert_eq!(ix.owner_of(10).unwrap().status, AgentStatus::Active);
        assert_eq!(ix.owner_of(13).unwrap().status, AgentStatus::Unknown);
        assert_eq!(ix.agent(3).unwrap().departed_at_ms, Some(200));
        let all = ix.orphans(None, None, None, 10);
        assert_eq!(ix.orphan_count(None, None), 3);
        assert_eq!(all.iter().map(|o| o.contact.id).collect::<Vec<_>>(), vec![11, 12, 13]);
        let p1 = ix.orphans(None, None, None, 2);
        let p2 = ix.orphans(None, None, Some(p1[1].key), 2);
        assert_eq!(p2.iter().map(|o| o.contact.id).collect::<Vec<_>>(), vec![13]);
        let dep = ix.orphans(Some(OrphanReason::OwnerDeparted), None, None, 10);
        assert_eq!((dep.len(), ix.orphan_count(Some(OrphanReason::OwnerDeparted), None)), (1, 1));
        assert_eq!(ix.orphan_count(Some(OrphanReason::OwnerDeparted), Some(201)), 0);
        assert_eq!(ix.unowned(None, 10).1, 1);
        assert_eq!(ix.who_owns_whom(0, 1).0[0].contacts, 1);
    }
}
