//! Offboarding cases. When an agent goes (deactivated or departed), a case freezes what it held
//! at that moment (each contact and account, with when Drift last confirmed it) in its own
//! record, which no reindex, refresh or prune changes. Every item gets a decision (`REASSIGN` to
//! an active agent, `KEEP` with a reason, or `ALREADY_MOVED` when Drift shows it moved since),
//! reassignments are carried out and each checked in Drift, and a principal with the auditor role
//! who made none of the decisions signs it off. Every event (opened, each decision, each batch of
//! moves and its confirmation, sign-off) is chained by hash, so an exported case checks itself
//! (`bundle`).
//!
//! This crate is pure: the app layer freezes the holdings from the index, stores cases, carries
//! out moves through Drift and tells people; the GraphQL crate shows them.

pub mod bundle;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash before a case's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The default time allowed to close a case.
pub const DEFAULT_ALLOWANCE_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaseState {
    /// Some item has no decision yet.
    Open,
    /// Every item has one; some reassignment is not yet confirmed in Drift.
    Decided,
    /// Every reassignment confirmed by a read of Drift (or none to make).
    CarriedOut,
    SignedOff,
}

impl CaseState {
    /// As the command line says it: `open`, `decided`, `carried-out`, `signed-off`.
    pub fn cli_name(self) -> &'static str {
        match self {
            CaseState::Open => "open",
            CaseState::Decided => "decided",
            CaseState::CarriedOut => "carried-out",
            CaseState::SignedOff => "signed-off",
        }
    }

    pub fn from_cli(s: &str) -> Option<CaseState> {
        [CaseState::Open, CaseState::Decided, CaseState::CarriedOut, CaseState::SignedOff]
            .into_iter()
            .find(|c| c.cli_name() == s.to_ascii_lowercase().replace('_', "-"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemKind {
    Contact,
    Account,
}

/// The leaver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    pub id: u64,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Its status when the case opened (`DEACTIVATED`, `DEPARTED`, ...).
    pub status: String,
}

/// What was decided for an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Reassign {
        to: u64,
    },
    Keep,
    /// Moved in Drift since the case opened, to `to` (as Drift says; `via` how idgraph learnt it).
    AlreadyMoved {
        to: Option<u64>,
        via: String,
    },
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Reassign { .. } => "REASSIGN",
            Verdict::Keep => "KEEP",
            Verdict::AlreadyMoved { .. } => "ALREADY_MOVED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub by: String,
    pub at_ms: i64,
    pub reason: Option<String>,
    /// The item's owner in Drift (as idgraph knew it) when decided.
    pub drift_owner: Option<u64>,
    /// When Drift last confirmed the item then.
    pub drift_verified_at_ms: Option<i64>,
    /// The event that made it.
    pub event: u64,
}

/// How far a reassignment has gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "state", content = "why", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Carry {
    /// Nothing to do yet (no REASSIGN, or not asked to carry out).
    #[default]
    NotYet,
    /// Handed to a reassignment job.
    Pending,
    /// Drift accepted the move; not yet read back.
    Moved,
    /// Read back from Drift: owned by the decided agent.
    Confirmed,
    /// Refused, gone, or read back otherwise: retryable.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub kind: ItemKind,
    /// The contact's id, or the account's.
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The email's domain (contacts) or the account's domain.
    pub domain: Option<String>,
    /// When Drift last confirmed it, as frozen at opening.
    pub verified_at_ms: Option<i64>,
    pub decision: Option<Decision>,
    #[serde(default)]
    pub carry: Carry,
}

impl Item {
    pub fn key(&self) -> String {
        format!("{}:{}", if self.kind == ItemKind::Contact { "contact" } else { "account" }, self.id)
    }

    pub fn contact_id(&self) -> Option<u64> {
        (self.kind == ItemKind::Contact).then(|| self.id.parse().ok()).flatten()
    }

    /// The contact and the agent it is to go to, for a contact decided REASSIGN.
    pub fn reassignment(&self) -> Option<(u64, u64)> {
        match (&self.decision, self.contact_id()) {
            (Some(Decision { verdict: Verdict::Reassign { to }, .. }), Some(c)) => Some((c, *to)),
            _ => None,
        }
    }

    /// The item's state for grouping: UNDECIDED, KEEP, ALREADY_MOVED, or the reassignment's.
    pub fn group(&self) -> &'static str {
        match (&self.decision, &self.carry) {
            (None, _) => "UNDECIDED",
            (Some(d), _) if !matches!(d.verdict, Verdict::Reassign { .. }) => d.verdict.name(),
            (_, Carry::NotYet) => "TO_REASSIGN",
            (_, Carry::Pending) | (_, Carry::Moved) => "MOVING",
            (_, Carry::Confirmed) => "CONFIRMED",
            (_, Carry::Failed(_)) => "FAILED",
        }
    }
}

/// One event of a case, chained: `hash` is the SHA-256 of the event's other fields (canonical
/// JSON), `prev` the hash of the event before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at_ms: i64,
    /// OPENED, DECIDED, ALREADY_MOVED, CARRY_OUT, MOVED, CONFIRMED, FAILED, REACTIVATED,
    /// SIGNED_OFF, NOTIFY_FAILED.
    pub kind: String,
    pub by: String,
    pub detail: serde_json::Value,
    pub prev: String,
    pub hash: String,
}

impl Event {
    /// The hash an event must carry.
    pub fn compute_hash(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            seq: u64,
            at_ms: i64,
            kind: &'a str,
            by: &'a str,
            detail: &'a serde_json::Value,
            prev: &'a str,
        }
        let b = Body {
            seq: self.seq,
            at_ms: self.at_ms,
            kind: &self.kind,
            by: &self.by,
            detail: &self.detail,
            prev: &self.prev,
        };
        hex::encode(Sha256::digest(serde_json::to_vec(&b).unwrap_or_default()))
    }
}

/// A sign-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignOff {
    pub by: String,
    pub at_ms: i64,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: u64,
    /// The org the case belongs to (`None`: the server's only org).
    #[serde(default)]
    pub org: Option<String>,
    pub agent: AgentRef,
    pub opened_at_ms: i64,
    pub opened_by: String,
    pub due_at_ms: i64,
    pub state: CaseState,
    /// Set when the agent was reactivated after the case opened.
    #[serde(default)]
    pub reactivated_at_ms: Option<i64>,
    #[serde(default)]
    pub signed_off: Option<SignOff>,
    /// The reassignment jobs that carried it out, newest last.
    #[serde(default)]
    pub jobs: Vec<u64>,
    pub items: Vec<Item>,
    pub events: Vec<Event>,
    /// Notifications that could not be delivered (after their retries).
    #[serde(default)]
    pub notify_failures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    #[error("case {0} is signed off: nothing in it changes any more")]
    SignedOff(u64),
    #[error("no item of case {0} matches the filter")]
    NoMatch(u64),
    #[error("{0}")]
    Refused(String),
}

/// Which items a bulk decision is for. Every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub undecided: bool,
    pub kind: Option<ItemKind>,
    /// Items of this email or account domain.
    pub domain: Option<String>,
    /// Items by key (`contact:123`) or by id.
    pub ids: Option<Vec<String>>,
    /// Items whose group (`UNDECIDED`, `FAILED`, ...) is this one.
    pub group: Option<String>,
}

impl Filter {
    pub fn matches(&self, it: &Item) -> bool {
        (!self.undecided || it.decision.is_none())
            && self.kind.is_none_or(|k| k == it.kind)
            && self.domain.as_ref().is_none_or(|d| it.domain.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(d)))
            && self.ids.as_ref().is_none_or(|ids| ids.iter().any(|i| *i == it.id || *i == it.key()))
            && self.group.as_ref().is_none_or(|g| it.group() == g)
    }
}

/// What idgraph knows of an item in Drift now: its owner and when Drift last confirmed it.
pub type DriftNow<'a> = &'a dyn Fn(&Item) -> (Option<u64>, Option<i64>);

impl Case {
    /// A case for `agent`, with its holdings frozen as given.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        id: u64,
        org: Option<String>,
        agent: AgentRef,
        items: Vec<Item>,
        by: &str,
        why: &str,
        now_ms: i64,
        allowance_ms: i64,
    ) -> Case {
        let mut c = Case {
            id,
            org,
            agent,
            opened_at_ms: now_ms,
            opened_by: by.to_string(),
            due_at_ms: now_ms + allowance_ms,
            state: CaseState::Open,
            reactivated_at_ms: None,
            signed_off: None,
            jobs: Vec::new(),
            items,
            events: Vec::new(),
            notify_failures: Vec::new(),
        };
        let contacts = c.items.iter().filter(|i| i.kind == ItemKind::Contact).count();
        let detail = serde_json::json!({
            "agent": c.agent,
            "why": why,
            "contacts": contacts,
            "accounts": c.items.len() - contacts,
            "items": c.items.iter().map(|i| serde_json::json!([i.key(), i.verified_at_ms])).collect::<Vec<_>>(),
            "due_at_ms": c.due_at_ms,
        });
        c.push("OPENED", by, now_ms, detail);
        c.recompute();
        c
    }

    fn push(&mut self, kind: &str, by: &str, at_ms: i64, detail: serde_json::Value) -> u64 {
        let seq = self.events.len() as u64 + 1;
        let prev = self.events.last().map_or(GENESIS.to_string(), |e| e.hash.clone());
        let mut e = Event { seq, at_ms, kind: kind.into(), by: by.into(), detail, prev, hash: String::new() };
        e.hash = e.compute_hash();
        self.events.push(e);
        seq
    }

    fn recompute(&mut self) {
        self.state = if self.signed_off.is_some() {
            CaseState::SignedOff
        } else if self.items.iter().any(|i| i.decision.is_none()) {
            CaseState::Open
        } else if self.items.iter().any(|i| {
            matches!(i.decision.as_ref().map(|d| &d.verdict), Some(Verdict::Reassign { .. }))
                && i.carry != Carry::Confirmed
        }) {
            CaseState::Decided
        } else {
            CaseState::CarriedOut
        };
    }

    pub fn overdue(&self, now_ms: i64) -> bool {
        self.state != CaseState::SignedOff && now_ms > self.due_at_ms
    }

    /// Decides every item `filter` matches (a decision replaces an earlier one; the chain keeps
    /// both). Confirmed reassignments are not decided again. Returns how many items it decided.
    pub fn decide(
        &mut self,
        filter: &Filter,
        verdict: Verdict,
        reason: Option<String>,
        by: &str,
        now_ms: i64,
        drift: DriftNow<'_>,
    ) -> Result<usize, CaseError> {
        if self.signed_off.is_some() {
            return Err(CaseError::SignedOff(self.id));
        }
        if verdict == Verdict::Keep && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(CaseError::Refused("KEEP needs a reason (a dead lead, a shared inbox, ...)".into()));
        }
        let seq = self.events.len() as u64 + 1;
        let mut keys = Vec::new();
        let mut states = Vec::new();
        for it in self.items.iter_mut().filter(|it| filter.matches(it)) {
            if it.carry == Carry::Confirmed || matches!(it.carry, Carry::Pending | Carry::Moved) {
                continue;
            }
            // (An account's REASSIGN is done in Drift's UI: Drift documents no way to change an
            // account's owner. It is not carried out here.)
            let (owner, verified) = drift(it);
            it.decision = Some(Decision {
                verdict: verdict.clone(),
                by: by.to_string(),
                at_ms: now_ms,
                reason: reason.clone(),
                drift_owner: owner,
                drift_verified_at_ms: verified,
                event: seq,
            });
            it.carry = Carry::NotYet;
            keys.push(it.key());
            states.push(serde_json::json!([it.key(), owner, verified]));
        }
        if keys.is_empty() {
            return Err(CaseError::NoMatch(self.id));
        }
        let n = keys.len();
        let mut detail = serde_json::json!({ "decision": verdict, "reason": reason, "items": keys, "drift": states });
        if let Verdict::Reassign { to } = verdict {
            detail["to"] = serde_json::json!(to);
        }
        self.push("DECIDED", by, now_ms, detail);
        self.recompute();
        Ok(n)
    }

    /// Records that Drift shows a contact moved to `to` since the case opened (found by the
    /// refresher, a crawl or a webhook's read), unless this case's own carrying out moved it.
    pub fn already_moved(&mut self, contact: u64, to: Option<u64>, via: &str, now_ms: i64) -> bool {
        if self.signed_off.is_some() {
            return false;
        }
        let key = format!("contact:{contact}");
        let Some(it) = self.items.iter_mut().find(|i| i.key() == key) else { return false };
        if let Some(Decision { verdict: Verdict::Reassign { to: want }, .. }) = &it.decision {
            if Some(*want) == to {
                // Where it was decided to go: this case's own move seen coming back (or someone
                // did it first; carrying out then finds it done and confirms it).
                return false;
            }
        }
        if matches!(&it.decision, Some(Decision { verdict: Verdict::AlreadyMoved { to: t, .. }, .. }) if *t == to) {
            return false;
        }
        if to == Some(self.agent.id) {
            return false;
        }
        let seq = self.events.len() as u64 + 1;
        it.decision = Some(Decision {
            verdict: Verdict::AlreadyMoved { to, via: via.to_string() },
            by: "drift".into(),
            at_ms: now_ms,
            reason: Some(format!("moved in Drift since the case opened (seen by {via})")),
            drift_owner: to,
            drift_verified_at_ms: Some(now_ms),
            event: seq,
        });
        it.carry = Carry::NotYet;
        self.push("ALREADY_MOVED", "drift", now_ms, serde_json::json!({ "items": [key], "to": to, "via": via }));
        self.recompute();
        true
    }

    /// The reassignments still to make: contact, target (failed ones again).
    pub fn to_carry(&self) -> Vec<(u64, u64)> {
        self.items
            .iter()
            .filter(|i| matches!(i.carry, Carry::NotYet | Carry::Failed(_)))
            .filter_map(Item::reassignment)
            .collect()
    }

    /// Marks the moves handed to reassignment job `job`.
    pub fn carrying_out(&mut self, job: u64, moves: &[(u64, u64)], by: &str, now_ms: i64) -> Result<(), CaseError> {
        if self.signed_off.is_some() {
            return Err(CaseError::SignedOff(self.id));
        }
        let set: BTreeSet<String> = moves.iter().map(|(c, _)| format!("contact:{c}")).collect();
        for it in self.items.iter_mut().filter(|i| set.contains(&i.key())) {
            it.carry = Carry::Pending;
        }
        self.jobs.push(job);
        self.push("CARRY_OUT", by, now_ms, serde_json::json!({ "job": job, "moves": moves }));
        self.recompute();
        Ok(())
    }

    /// Accounts decided REASSIGN that the index now shows owned by their target (Drift has no
    /// API to move an account: it is done in Drift's UI, and a crawl shows it): confirmed.
    pub fn confirm_accounts(&mut self, owner_of: &dyn Fn(&str) -> Option<u64>, now_ms: i64) -> bool {
        let mut done = Vec::new();
        for it in self.items.iter_mut().filter(|i| i.kind == ItemKind::Account && i.carry != Carry::Confirmed) {
            if let Some(Decision { verdict: Verdict::Reassign { to }, .. }) = &it.decision {
                if owner_of(&it.id) == Some(*to) {
                    it.carry = Carry::Confirmed;
                    done.push(serde_json::json!([it.key(), Carry::Confirmed]));
                }
            }
        }
        if done.is_empty() {
            return false;
        }
        self.push("CHECKED", "idgraph", now_ms, serde_json::json!({ "items": done }));
        self.recompute();
        true
    }

    /// Records what carrying out found, item by item (`Moved` from a job's answer, `Confirmed`
    /// or `Failed` from a read of Drift), as one event of `kind`.
    pub fn record_carry(&mut self, kind: &str, results: &[(u64, Carry)], now_ms: i64) {
        if results.is_empty() {
            return;
        }
        let mut detail = Vec::new();
        for (contact, carry) in results {
            let key = format!("contact:{contact}");
            if let Some(it) = self.items.iter_mut().find(|i| i.key() == key) {
                it.carry = carry.clone();
                detail.push(serde_json::json!([key, carry]));
            }
        }
        self.push(kind, "idgraph", now_ms, serde_json::json!({ "items": detail }));
        self.recompute();
    }

    /// Marks the agent reactivated after the case opened.
    pub fn reactivated(&mut self, now_ms: i64) {
        if self.signed_off.is_none() && self.reactivated_at_ms.is_none() {
            self.reactivated_at_ms = Some(now_ms);
            self.push("REACTIVATED", "drift", now_ms, serde_json::json!({ "agent": self.agent.id }));
        }
    }

    /// Everyone who made a decision in this case, replaced ones included.
    pub fn deciders(&self) -> BTreeSet<String> {
        self.events.iter().filter(|e| e.kind == "DECIDED").map(|e| e.by.clone()).collect()
    }

    /// Signs the case off: only when carried out, only by an auditor who made none of its
    /// decisions (separation of duties).
    pub fn sign_off(&mut self, by: &str, is_auditor: bool, note: Option<String>, now_ms: i64) -> Result<(), CaseError> {
        if self.signed_off.is_some() {
            return Err(CaseError::SignedOff(self.id));
        }
        if !is_auditor {
            return Err(CaseError::Refused("signing off needs the auditor role".into()));
        }
        if self.state != CaseState::CarriedOut {
            return Err(CaseError::Refused(format!(
                "case {} is {}, not carried out: every item needs a decision and every reassignment a confirmation first",
                self.id,
                self.state.cli_name()
            )));
        }
        if self.deciders().contains(by) {
            return Err(CaseError::Refused(format!(
                "{by} made decisions in case {}: someone who made none of them signs it off (separation of duties)",
                self.id
            )));
        }
        self.signed_off = Some(SignOff { by: by.to_string(), at_ms: now_ms, note: note.clone() });
        let counts = self.counts();
        self.push("SIGNED_OFF", by, now_ms, serde_json::json!({ "note": note, "counts": counts }));
        self.recompute();
        Ok(())
    }

    /// Items by group.
    pub fn counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut m = std::collections::BTreeMap::new();
        for it in &self.items {
            *m.entry(it.group()).or_insert(0) += 1;
        }
        m
    }

    /// Records that the case passed its due date unsigned (once).
    pub fn mark_overdue(&mut self, now_ms: i64) {
        if !self.events.iter().any(|e| e.kind == "OVERDUE") {
            self.push("OVERDUE", "idgraph", now_ms, serde_json::json!({ "due_at_ms": self.due_at_ms }));
        }
    }

    /// Records a notification that failed after its retries.
    pub fn notify_failed(&mut self, what: &str, now_ms: i64) {
        self.notify_failures.push(what.to_string());
        self.push("NOTIFY_FAILED", "idgraph", now_ms, serde_json::json!({ "what": what }));
    }
}

/// What the server's pages and GraphQL ask of the cases (the app layer answers). Every method
/// that changes a case stores it before it answers.
pub trait Desk: Send + Sync {
    /// Cases, newest first; overdue ones before the others.
    fn list(&self, state: Option<CaseState>) -> Vec<std::sync::Arc<Case>>;
    fn get(&self, id: u64) -> Option<std::sync::Arc<Case>>;
    /// Opens a case by hand for an agent (by id or email).
    fn open_case(&self, agent: &str, by: &str) -> Result<std::sync::Arc<Case>, String>;
    /// A decision for the items `filter` matches; how many, and the case.
    fn decide(
        &self,
        id: u64,
        filter: Filter,
        verdict: Verdict,
        reason: Option<String>,
        by: &str,
    ) -> Result<(usize, std::sync::Arc<Case>), String>;
    /// Starts carrying out the decided reassignments (failed ones again).
    fn carry_out(&self, id: u64, by: &str) -> Result<std::sync::Arc<Case>, String>;
    fn sign_off(
        &self,
        id: u64,
        by: &str,
        is_auditor: bool,
        note: Option<String>,
    ) -> Result<std::sync::Arc<Case>, String>;
    /// Notifications delivered, and given up after their retries.
    fn notifications(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// Where a chain of events first does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry} ({kind}): {why}")]
pub struct Broken {
    pub entry: u64,
    pub kind: String,
    pub why: String,
}

/// Checks a case's events: each hash, each link, the sequence numbers.
pub fn verify_events(events: &[Event]) -> Result<(), Broken> {
    let mut prev = GENESIS.to_string();
    for (i, e) in events.iter().enumerate() {
        let expect = i as u64 + 1;
        let broken = |why: &str| Broken { entry: expect, kind: e.kind.clone(), why: why.into() };
        if e.seq != expect {
            return Err(broken("its number is not the next one: an entry before it was removed or moved"));
        }
        if e.prev != prev {
            return Err(broken("its link to the entry before does not match: an entry before it was changed"));
        }
        if e.compute_hash() != e.hash {
            return Err(broken("its content does not match its hash: it was changed"));
        }
        prev = e.hash.clone();
    }
    Ok(())
}

/// Checks that a case's items say what its chain says: each item's decision is the one the last
/// event about it made, and it was frozen at opening.
pub fn verify_items(case: &Case) -> Result<(), Broken> {
    verify_events(&case.events)?;
    let opened = case.events.first().ok_or(Broken { entry: 1, kind: "OPENED".into(), why: "no events".into() })?;
    let frozen: BTreeSet<String> = opened.detail["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v[0].as_str().map(str::to_string))
        .collect();
    let mut last: std::collections::HashMap<String, &Event> = std::collections::HashMap::new();
    for e in &case.events {
        if e.kind == "DECIDED" || e.kind == "ALREADY_MOVED" {
            for k in e.detail["items"].as_array().into_iter().flatten().filter_map(|v| v.as_str()) {
                last.insert(k.to_string(), e);
            }
        }
    }
    if frozen.len() != case.items.len() {
        return Err(Broken {
            entry: 1,
            kind: "OPENED".into(),
            why: format!("it froze {} items; the case lists {}", frozen.len(), case.items.len()),
        });
    }
    for it in &case.items {
        let key = it.key();
        if !frozen.contains(&key) {
            return Err(Broken {
                entry: 1,
                kind: "OPENED".into(),
                why: format!("item {key} was not frozen at opening"),
            });
        }
        match (&it.decision, last.get(&key)) {
            (None, None) => {}
            (Some(d), Some(e)) => {
                let verdict_ok = match e.kind.as_str() {
                    "DECIDED" => {
                        e.detail["decision"] == serde_json::to_value(&d.verdict).unwrap_or_default()
                            && e.detail["reason"] == serde_json::to_value(&d.reason).unwrap_or_default()
                    }
                    _ => d.verdict.name() == "ALREADY_MOVED",
                };
                if !verdict_ok || d.event != e.seq || d.by != e.by {
                    return Err(Broken {
                        entry: e.seq,
                        kind: e.kind.clone(),
                        why: format!("item {key}'s decision in the case does not match this entry"),
                    });
                }
            }
            (Some(d), None) => {
                return Err(Broken {
                    entry: d.event,
                    kind: "DECIDED".into(),
                    why: format!("item {key} has a decision no entry made"),
                })
            }
            (None, Some(e)) => {
                return Err(Broken {
                    entry: e.seq,
                    kind: e.kind.clone(),
                    why: format!("item {key} lost the decision this entry made"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(n: usize) -> Case {
        let items = (0..n)
            .map(|i| Item {
                kind: if i % 10 == 9 { ItemKind::Account } else { ItemKind::Contact },
                id: (100 + i).to_string(),
                email: Some(format!("c{i}@{}.example", if i % 2 == 0 { "acme" } else { "initech" })),
                name: None,
                domain: Some(if i % 2 == 0 { "acme.example" } else { "initech.example" }.into()),
                verified_at_ms: Some(1_000),
                decision: None,
                carry: Carry::NotYet,
            })
            .collect();
        let agent = AgentRef { id: 7, email: Some("leaver@x.example".into()), name: None, status: "DEPARTED".into() };
        Case::open(1, None, agent, items, "system", "agent DEPARTED", 10_000, DEFAULT_ALLOWANCE_MS)
    }

    fn drift(_: &Item) -> (Option<u64>, Option<i64>) {
        (Some(7), Some(2_000))
    }

    #[test]
    fn a_case_goes_from_open_to_signed_off_with_separation_of_duties() {
        let mut c = case(20);
        assert_eq!(c.state, CaseState::Open);
        let n = c
            .decide(
                &Filter { kind: Some(ItemKind::Contact), ..Filter::default() },
                Verdict::Reassign { to: 9 },
                None,
                "alice",
                11_000,
                &drift,
            )
            .unwrap();
        assert_eq!(n, 18);
        assert!(
            c.decide(&Filter { undecided: true, ..Filter::default() }, Verdict::Keep, None, "alice", 11_500, &drift)
                .is_err(),
            "KEEP needs a reason"
        );
        c.decide(
            &Filter { undecided: true, ..Filter::default() },
            Verdict::Keep,
            Some("shared inbox".into()),
            "alice",
            12_000,
            &drift,
        )
        .unwrap();
        assert_eq!(c.state, CaseState::Decided);
        let moves = c.to_carry();
        assert_eq!(moves.len(), 18);
        c.carrying_out(5, &moves, "alice", 13_000).unwrap();
        assert!(c.sign_off("bob", true, None, 13_500).is_err(), "not carried out yet");
        let done: Vec<(u64, Carry)> = moves.iter().map(|(id, _)| (*id, Carry::Confirmed)).collect();
        c.record_carry("CONFIRMED", &done, 14_000);
        assert_eq!(c.state, CaseState::CarriedOut);
        let e = c.sign_off("alice", true, None, 15_000).unwrap_err();
        assert!(e.to_string().contains("separation of duties"), "{e}");
        assert!(c.sign_off("vic", false, None, 15_000).is_err(), "a viewer cannot");
        c.sign_off("bob", true, Some("checked".into()), 15_000).unwrap();
        assert_eq!(c.state, CaseState::SignedOff);
        assert!(c.decide(&Filter::default(), Verdict::Keep, Some("x".into()), "bob", 16_000, &drift).is_err());
        verify_items(&c).unwrap();
    }

    #[test]
    fn bulk_filters_and_replaced_decisions() {
        let mut c = case(10);
        let n = c
            .decide(
                &Filter { domain: Some("acme.example".into()), ..Filter::default() },
                Verdict::Reassign { to: 9 },
                None,
                "a",
                1,
                &drift,
            )
            .unwrap();
        assert_eq!(n, 5);
        let n = c
            .decide(
                &Filter { ids: Some(vec!["contact:100".into(), "101".into()]), ..Filter::default() },
                Verdict::Keep,
                Some("dead lead".into()),
                "b",
                2,
                &drift,
            )
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(c.items[0].decision.as_ref().unwrap().verdict, Verdict::Keep, "replaced");
        assert_eq!(c.events.iter().filter(|e| e.kind == "DECIDED").count(), 2, "the chain keeps both");
        assert_eq!(c.deciders().len(), 2);
        verify_items(&c).unwrap();
    }

    #[test]
    fn already_moved_and_tampering_are_found() {
        let mut c = case(4);
        assert!(c.already_moved(101, Some(55), "REREAD", 3));
        assert!(!c.already_moved(101, Some(55), "REREAD", 4), "once");
        assert_eq!(c.items[1].group(), "ALREADY_MOVED");
        verify_items(&c).unwrap();
        let mut t = c.clone();
        t.events[1].detail["to"] = serde_json::json!(56);
        let b = verify_events(&t.events).unwrap_err();
        assert_eq!(b.entry, 2);
        let mut t = c.clone();
        t.items[1].decision.as_mut().unwrap().by = "mallory".into();
        assert_eq!(verify_items(&t).unwrap_err().entry, 2);
        let mut t = c.clone();
        t.events.remove(0);
        assert_eq!(verify_events(&t.events).unwrap_err().entry, 1);
    }
}
