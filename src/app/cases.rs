//! Offboarding cases, kept and carried out. A follower of the change feed opens a case when an
//! agent is first seen deactivated or departed (an agents refresh, a crawl, or any other writer),
//! freezing what it holds in the index at that moment; marks an open case's contacts that Drift
//! shows moved since (`ALREADY_MOVED`) and a reactivated agent's case. Carrying out hands the
//! decided reassignments to a reassignment job (rate-limited, resumable, each move exactly once),
//! then reads each moved contact from Drift and marks it confirmed or failed. Cases are stored in
//! the store's `state` (`case/<id>`), where no reindex, refresh or prune changes them. People are
//! told on open, overdue and sign-off (webhooks, OCSF records), never blocking the pipeline.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use idgraph_cases::{AgentRef, Carry, Case, CaseState, Desk, Filter, Item, ItemKind, Verdict};
use idgraph_crawler::Crawler;
use idgraph_graph::reassign::{JobState, MoveStatus};
use idgraph_graph::{now_ms, AgentStatus, ChangeFilter, ChangeKind, Graph};
use parking_lot::Mutex;

use crate::app::reassign::Jobs;

const PREFIX: &str = "case/";
const CURSOR: &str = "cases/cursor";
/// Moved contacts read back from Drift at once.
const CONFIRM_BATCH: usize = 20;

fn case_key(id: u64) -> String {
    format!("{PREFIX}{id:020}")
}

/// Where people are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    pub url: String,
    /// `slack` (an incoming-webhook body) or `json`.
    pub format: String,
}

/// Settings of cases.
#[derive(Debug, Clone)]
pub struct CaseConfig {
    pub allowance: Duration,
    pub notify: Vec<NotifyTarget>,
    /// OCSF records: a file path (NDJSON) or an http(s) URL.
    pub ocsf: Option<String>,
    pub org: Option<String>,
}

impl Default for CaseConfig {
    fn default() -> Self {
        CaseConfig { allowance: Duration::from_secs(7 * 86400), notify: Vec::new(), ocsf: None, org: None }
    }
}

pub struct Cases {
    graph: Arc<Graph>,
    jobs: Option<Arc<Jobs>>,
    crawler: Option<Crawler>,
    cfg: CaseConfig,
    cases: Mutex<BTreeMap<u64, Arc<Case>>>,
    http: reqwest::Client,
    ocsf_file: Mutex<Option<std::fs::File>>,
    /// Notifications delivered, and given up after their retries.
    pub notified: AtomicU64,
    pub notify_failed: AtomicU64,
    me: std::sync::Weak<Cases>,
}

impl Cases {
    /// Loads the stored cases. `jobs` and `crawler` are what carrying out needs (`None`: a
    /// server that cannot write to Drift).
    pub fn open(
        graph: Arc<Graph>,
        jobs: Option<Arc<Jobs>>,
        crawler: Option<Crawler>,
        cfg: CaseConfig,
    ) -> Result<Arc<Cases>> {
        let mut cases = BTreeMap::new();
        for (_, v) in graph.states_under(PREFIX)? {
            match serde_json::from_value::<Case>(v) {
                Ok(c) => {
                    cases.insert(c.id, Arc::new(c));
                }
                Err(e) => tracing::error!(error = %e, "a stored case could not be read; it is skipped"),
            }
        }
        let ocsf_file = match cfg.ocsf.as_deref() {
            Some(p) if !p.starts_with("http://") && !p.starts_with("https://") => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(PathBuf::from(p))
                    .with_context(|| format!("cannot open the OCSF file {p}"))?,
            ),
            _ => None,
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Arc::new_cyclic(|me| Cases {
            graph,
            jobs,
            crawler,
            cfg,
            cases: Mutex::new(cases),
            http,
            ocsf_file: Mutex::new(ocsf_file),
            notified: AtomicU64::new(0),
            notify_failed: AtomicU64::new(0),
            me: me.clone(),
        }))
    }

    /// Follows the change feed and carries cases out, for ever (call inside a Tokio runtime).
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.step().await {
                    tracing::warn!(error = %format!("{e:#}"), "cases: a step failed; it is tried again");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    /// One round: the feed, carrying out, overdue cases.
    pub async fn step(self: &Arc<Self>) -> Result<()> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.follow()).await.context("the follower failed")??;
        self.watch_jobs()?;
        self.confirm().await?;
        self.overdue()?;
        Ok(())
    }

    fn save(&self, c: &Case) -> Result<()> {
        self.graph.put_state(&case_key(c.id), c).context("cannot store the case")?;
        Ok(())
    }

    /// Changes a case and stores it, under the cases' lock.
    fn change<T>(&self, id: u64, f: impl FnOnce(&mut Case) -> Result<T, String>) -> Result<(T, Arc<Case>), String> {
        let mut all = self.cases.lock();
        let c = all.get_mut(&id).ok_or_else(|| format!("no case {id}"))?;
        let mut copy = (**c).clone();
        let out = f(&mut copy)?;
        self.save(&copy).map_err(|e| format!("{e:#}"))?;
        let new = Arc::new(copy);
        *c = new.clone();
        Ok((out, new))
    }

    /// Reads the change feed past the stored cursor.
    fn follow(&self) -> Result<()> {
        let last = self.graph.last_change_seq()?;
        let cursor = match self.graph.load_state(CURSOR)?.and_then(|v| v.as_u64()) {
            Some(c) => c,
            None => {
                // A new store, or cases turned on: what went before is not reopened.
                self.graph.save_state(CURSOR, &serde_json::json!(last))?;
                return Ok(());
            }
        };
        if cursor >= last {
            return Ok(());
        }
        let changes = self.graph.changes(&ChangeFilter { after_seq: Some(cursor), ..ChangeFilter::default() }, 1000)?;
        let mut by_contact: HashMap<u64, u64> = HashMap::new();
        for c in self.cases.lock().values().filter(|c| c.state != CaseState::SignedOff) {
            for it in &c.items {
                if let Some(id) = it.contact_id() {
                    by_contact.insert(id, c.id);
                }
            }
        }
        let mut to = cursor;
        for ch in &changes {
            to = ch.seq;
            let via = format!("{:?}", ch.via).to_uppercase();
            match &ch.kind {
                ChangeKind::AgentDeactivated { agent } | ChangeKind::AgentDeparted { agent }
                    if self.live_case_of(*agent).is_none() =>
                {
                    let why = format!("agent {} seen {} ({via})", agent, ch.kind.name().trim_start_matches("AGENT_"));
                    match self.open_for(*agent, "idgraph", &why) {
                        Ok(c) => {
                            tracing::info!(case = c.id, agent, items = c.items.len(), "an offboarding case opened")
                        }
                        Err(e) => tracing::warn!(agent, error = %e, "an offboarding case could not be opened"),
                    }
                }
                ChangeKind::AgentReactivated { agent } => {
                    if let Some(id) = self.live_case_of(*agent) {
                        let _ = self.change(id, |c| {
                            c.reactivated(ch.at_ms);
                            Ok(())
                        });
                    }
                }
                ChangeKind::ContactMoved { contact, to: new_owner, .. } => {
                    if let Some(&id) = by_contact.get(contact) {
                        let _ = self.change(id, |c| Ok(c.already_moved(*contact, *new_owner, &via, ch.at_ms)));
                    }
                }
                ChangeKind::ContactRemoved { contact, .. } => {
                    if let Some(&id) = by_contact.get(contact) {
                        let _ = self.change(id, |c| Ok(c.already_moved(*contact, None, &via, ch.at_ms)));
                    }
                }
                _ => {}
            }
        }
        self.graph.save_state(CURSOR, &serde_json::json!(to))?;
        Ok(())
    }

    fn live_case_of(&self, agent: u64) -> Option<u64> {
        self.cases
            .lock()
            .values()
            .filter(|c| c.agent.id == agent && c.state != CaseState::SignedOff && c.reactivated_at_ms.is_none())
            .map(|c| c.id)
            .next_back()
    }

    /// Opens a case for `agent`, freezing what it holds in the index now.
    pub fn open_for(&self, agent: u64, by: &str, why: &str) -> Result<Arc<Case>, String> {
        let (agent_ref, items) = {
            let ix = self.graph.read();
            let a = ix.agent(agent).ok_or_else(|| format!("no agent {agent} is known"))?;
            let (contacts, _) = ix.owned_contacts(agent, None, usize::MAX);
            let (accounts, _) = ix.owned_accounts(agent, None, usize::MAX);
            let mut items: Vec<Item> = contacts
                .into_iter()
                .map(|c| Item {
                    kind: ItemKind::Contact,
                    id: c.id.to_string(),
                    domain: c.email.as_deref().and_then(|e| e.rsplit_once('@')).map(|(_, d)| d.to_ascii_lowercase()),
                    email: c.email,
                    name: c.name,
                    verified_at_ms: (c.verified_at_ms > 0).then_some(c.verified_at_ms),
                    decision: None,
                    carry: Carry::NotYet,
                })
                .collect();
            items.extend(accounts.into_iter().map(|a| Item {
                kind: ItemKind::Account,
                id: a.id,
                email: None,
                name: a.name,
                domain: a.domain,
                verified_at_ms: None,
                decision: None,
                carry: Carry::NotYet,
            }));
            let r = AgentRef { id: a.id, email: a.email, name: a.name, status: a.status.name().to_string() };
            (r, items)
        };
        let case = {
            let mut all = self.cases.lock();
            let id = all.keys().next_back().copied().unwrap_or(0) + 1;
            let allowance = self.cfg.allowance.as_millis() as i64;
            let c = Case::open(id, self.cfg.org.clone(), agent_ref, items, by, why, now_ms(), allowance);
            self.save(&c).map_err(|e| format!("{e:#}"))?;
            let c = Arc::new(c);
            all.insert(id, c.clone());
            c
        };
        self.notify(&case, "opened");
        Ok(case)
    }

    /// Hands the decided reassignments not yet confirmed to a reassignment job.
    fn start_carry_out(&self, id: u64, by: &str) -> Result<Arc<Case>, String> {
        let jobs = self.jobs.as_ref().ok_or("this server cannot write to Drift: cases cannot be carried out here")?;
        let case = self.cases.lock().get(&id).cloned().ok_or_else(|| format!("no case {id}"))?;
        if case.state == CaseState::SignedOff {
            return Err(format!("case {id} is signed off"));
        }
        if case.reactivated_at_ms.is_some() {
            return Err(format!("the agent of case {id} was reactivated: nothing is moved away from an active agent"));
        }
        let moves = case.to_carry();
        if moves.is_empty() {
            return Err(format!("case {id} has no reassignment to carry out (decide items REASSIGN first)"));
        }
        let job = jobs.submit_moves(case.agent.id, moves.clone())?;
        self.change(id, |c| c.carrying_out(job.id, &moves, by, now_ms()).map_err(|e| e.to_string())).map(|(_, c)| c)
    }

    /// Items handed to jobs that have finished: moved, or failed with the job's reason.
    fn watch_jobs(&self) -> Result<()> {
        let Some(jobs) = &self.jobs else { return Ok(()) };
        let pending: Vec<(u64, Vec<u64>)> = self
            .cases
            .lock()
            .values()
            .filter(|c| c.items.iter().any(|i| i.carry == Carry::Pending))
            .map(|c| (c.id, c.jobs.clone()))
            .collect();
        for (id, job_ids) in pending {
            let mut results: Vec<(u64, Carry)> = Vec::new();
            let case = match self.cases.lock().get(&id).cloned() {
                Some(c) => c,
                None => continue,
            };
            let pending_items: HashMap<u64, u64> =
                case.items.iter().filter(|i| i.carry == Carry::Pending).filter_map(Item::reassignment).collect();
            let ix = self.graph.read().clone();
            let mut seen = std::collections::HashSet::new();
            // Moves are taken as they are made (their reads back then share the budget with the
            // job's next PATCHes); those not made are failed once their job has ended.
            for jid in job_ids.iter().rev() {
                let Some(job) = jobs.get(*jid) else { continue };
                let ended = job.state != JobState::Running;
                for m in &job.moves {
                    // The newest job that holds a contact governs it.
                    if pending_items.get(&m.contact_id) != Some(&m.to) || !seen.insert(m.contact_id) {
                        continue;
                    }
                    let carry = match &m.status {
                        MoveStatus::Done => Carry::Moved,
                        // Moved already: by an earlier job of this case (a crash between the job
                        // and the case's record of it), or by someone else.
                        MoveStatus::AlreadyDone if ix.contact(m.contact_id).and_then(|c| c.owner_id) == Some(m.to) => {
                            Carry::Moved
                        }
                        MoveStatus::AlreadyDone => {
                            Carry::Failed("no longer the leaver's contact when carried out".into())
                        }
                        MoveStatus::Failed(why) => Carry::Failed(why.clone()),
                        MoveStatus::Pending | MoveStatus::InDoubt if ended => {
                            Carry::Failed(job.reason.clone().unwrap_or_else(|| "the job stopped".into()))
                        }
                        MoveStatus::Pending | MoveStatus::InDoubt => continue,
                    };
                    results.push((m.contact_id, carry));
                }
            }
            if job_ids.last().is_some_and(|j| jobs.get(*j).is_none()) {
                for c in pending_items.keys() {
                    if !seen.contains(c) {
                        results.push((
                            *c,
                            Carry::Failed("its job was not stored (the server stopped): carry out again".into()),
                        ));
                    }
                }
            }
            if !results.is_empty() {
                self.change(id, |c| {
                    c.record_carry("MOVED", &results, now_ms());
                    Ok(())
                })
                .map_err(anyhow::Error::msg)?;
            }
        }
        Ok(())
    }

    /// Reads moved contacts back from Drift: confirmed when Drift shows the decided owner.
    /// Accounts (moved in Drift's UI) are confirmed when the index shows their new owner.
    async fn confirm(&self) -> Result<()> {
        let waiting: Vec<u64> = self
            .cases
            .lock()
            .values()
            .filter(|c| {
                c.state == CaseState::Decided
                    && c.items.iter().any(|i| i.kind == ItemKind::Account && i.carry != Carry::Confirmed)
            })
            .map(|c| c.id)
            .collect();
        if !waiting.is_empty() {
            // A snapshot only while it is read, never across the reads below: an in-place change
            // made while one is held copies the whole index.
            let ix = self.graph.read().clone();
            for id in waiting {
                let owner = |account: &str| ix.account(account).and_then(|a| a.owner_id);
                self.change(id, |c| Ok(c.confirm_accounts(&owner, now_ms()))).map_err(anyhow::Error::msg)?;
            }
        }
        let Some(crawler) = &self.crawler else { return Ok(()) };
        let todo: Vec<(u64, u64, u64)> = self
            .cases
            .lock()
            .values()
            .flat_map(|c| {
                c.items
                    .iter()
                    .filter(|i| i.carry == Carry::Moved)
                    .filter_map(Item::reassignment)
                    .map(move |(contact, to)| (c.id, contact, to))
            })
            .take(CONFIRM_BATCH * 10)
            .collect();
        for chunk in todo.chunks(CONFIRM_BATCH) {
            let reads =
                futures::future::join_all(chunk.iter().map(|(_, contact, _)| crawler.read_contact(*contact))).await;
            let mut by_case: BTreeMap<u64, Vec<(u64, Carry)>> = BTreeMap::new();
            for ((case, contact, to), read) in chunk.iter().zip(reads) {
                let carry = match read {
                    Ok(Some(c)) if c.owner_id == Some(*to) => Carry::Confirmed,
                    Ok(Some(c)) => Carry::Failed(format!(
                        "Drift shows it owned by {} after the move",
                        c.owner_id.map_or("nobody".to_string(), |o| o.to_string())
                    )),
                    Ok(None) => Carry::Failed("the contact no longer exists in Drift".into()),
                    Err(e) => {
                        tracing::debug!(contact, error = %e, "a moved contact could not be read back yet");
                        continue;
                    }
                };
                by_case.entry(*case).or_default().push((*contact, carry));
            }
            for (id, results) in by_case {
                self.change(id, |c| {
                    c.record_carry("CHECKED", &results, now_ms());
                    Ok(())
                })
                .map_err(anyhow::Error::msg)?;
            }
        }
        Ok(())
    }

    fn overdue(&self) -> Result<()> {
        let now = now_ms();
        let due: Vec<u64> = self
            .cases
            .lock()
            .values()
            .filter(|c| c.overdue(now) && !c.events.iter().any(|e| e.kind == "OVERDUE"))
            .map(|c| c.id)
            .collect();
        for id in due {
            let (_, c) = self
                .change(id, |c| {
                    c.mark_overdue(now);
                    Ok(())
                })
                .map_err(anyhow::Error::msg)?;
            self.notify(&c, "overdue");
        }
        Ok(())
    }

    /// Tells the configured webhooks and the OCSF sink, in the background.
    fn notify(&self, case: &Case, what: &str) {
        let text = format!(
            "idgraph: offboarding case {} for {} {}: {} items, state {}, due {}",
            case.id,
            case.agent.email.as_deref().unwrap_or("?"),
            what,
            case.items.len(),
            case.state.cli_name(),
            chrono::DateTime::from_timestamp_millis(case.due_at_ms).map(|t| t.to_rfc3339()).unwrap_or_default()
        );
        let generic = serde_json::json!({
            "event": format!("case.{what}"),
            "case": {
                "id": case.id, "org": case.org, "agent": case.agent, "state": case.state,
                "items": case.items.len(), "counts": case.counts(), "due_at_ms": case.due_at_ms,
                "signed_off": case.signed_off,
            },
            "at_ms": now_ms(),
        });
        let ocsf = ocsf_record(case, what);
        if let Some(f) = self.ocsf_file.lock().as_mut() {
            let _ = writeln!(f, "{ocsf}");
        }
        let mut targets: Vec<(String, serde_json::Value)> = self
            .cfg
            .notify
            .iter()
            .map(|t| {
                let body = if t.format == "slack" { serde_json::json!({ "text": text }) } else { generic.clone() };
                (t.url.clone(), body)
            })
            .collect();
        if let Some(url) = self.cfg.ocsf.as_deref().filter(|u| u.starts_with("http://") || u.starts_with("https://")) {
            targets.push((url.to_string(), ocsf));
        }
        for (url, body) in targets {
            let http = self.http.clone();
            let me = self.me.clone();
            let case_id = case.id;
            let what = what.to_string();
            tokio::spawn(async move {
                let mut wait = Duration::from_millis(500);
                for attempt in 1..=5 {
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            if let Some(me) = me.upgrade() {
                                me.notified.fetch_add(1, Ordering::Relaxed);
                            }
                            return;
                        }
                        Ok(r) => {
                            tracing::warn!(case = case_id, status = %r.status(), attempt, "a case notification was refused")
                        }
                        Err(e) => {
                            tracing::warn!(case = case_id, error = %e, attempt, "a case notification could not be sent")
                        }
                    }
                    if attempt < 5 {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
                if let Some(me) = me.upgrade() {
                    me.notify_failed.fetch_add(1, Ordering::Relaxed);
                    let _ = me.change(case_id, |c| {
                        c.notify_failed(&format!("{what} to {}", host_of(&url)), now_ms());
                        Ok(())
                    });
                }
            });
        }
    }
}

/// A URL's host, for saying where a notification went (never its path: webhook URLs are
/// secrets).
fn host_of(url: &str) -> String {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_else(|| "?".into())
}

/// The OCSF record of a case event: class Entity Management (3004, category Identity & Access
/// Management): a case is an entity an admin console manages, created on open, updated when
/// overdue and when signed off.
pub fn ocsf_record(case: &Case, what: &str) -> serde_json::Value {
    let (activity_id, activity_name) = match what {
        "opened" => (1, "Create"),
        _ => (3, "Update"),
    };
    let by = match what {
        "signed off" => case.signed_off.as_ref().map_or("idgraph".to_string(), |s| s.by.clone()),
        _ => case.opened_by.clone(),
    };
    serde_json::json!({
        "class_uid": 3004,
        "class_name": "Entity Management",
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 3004 * 100 + activity_id,
        "type_name": format!("Entity Management: {activity_name}"),
        "time": now_ms(),
        "severity_id": if what == "overdue" { 3 } else { 1 },
        "severity": if what == "overdue" { "Medium" } else { "Informational" },
        "status_id": 1,
        "status": "Success",
        "message": format!("offboarding case {} {what}", case.id),
        "metadata": {
            "version": "1.3.0",
            "product": { "name": "idgraph", "vendor_name": "idgraph", "version": env!("CARGO_PKG_VERSION") },
            "uid": format!("case-{}-{}", case.id, case.events.len()),
        },
        "actor": { "user": { "name": by } },
        "entity": {
            "name": format!("offboarding case {}", case.id),
            "type": "Offboarding Case",
            "uid": case.id.to_string(),
            "data": {
                "agent": case.agent,
                "org": case.org,
                "state": case.state,
                "items": case.items.len(),
                "counts": case.counts(),
                "due_at_ms": case.due_at_ms,
            },
        },
    })
}

impl Desk for Cases {
    fn list(&self, state: Option<CaseState>) -> Vec<Arc<Case>> {
        let now = now_ms();
        let mut v: Vec<Arc<Case>> =
            self.cases.lock().values().filter(|c| state.is_none_or(|s| c.state == s)).cloned().collect();
        v.sort_by(|a, b| b.overdue(now).cmp(&a.overdue(now)).then(b.id.cmp(&a.id)));
        v
    }

    fn get(&self, id: u64) -> Option<Arc<Case>> {
        self.cases.lock().get(&id).cloned()
    }

    fn open_case(&self, agent: &str, by: &str) -> Result<Arc<Case>, String> {
        let id = {
            let ix = self.graph.read();
            match agent.parse::<u64>() {
                Ok(id) => ix.agent(id).map(|a| a.id),
                Err(_) => ix.agent_by_email(agent).map(|a| a.id),
            }
        }
        .ok_or_else(|| format!("no agent {agent:?} is known"))?;
        if let Some(c) = self.live_case_of(id) {
            return Err(format!("case {c} is open for this agent already"));
        }
        self.open_for(id, by, &format!("opened by {by}"))
    }

    fn decide(
        &self,
        id: u64,
        filter: Filter,
        verdict: Verdict,
        reason: Option<String>,
        by: &str,
    ) -> Result<(usize, Arc<Case>), String> {
        let ix = self.graph.read().clone();
        if let Verdict::Reassign { to } = verdict {
            match ix.agent(to) {
                Some(a) if a.status == AgentStatus::Active => {}
                Some(a) => return Err(format!("agent {to} is {}: reassign to an active agent", a.status.name())),
                None => return Err(format!("no agent {to} is known")),
            }
        }
        let now = now_ms();
        let drift = |it: &Item| match it.contact_id() {
            Some(c) => {
                ix.contact(c).map_or((None, None), |c| (c.owner_id, (c.verified_at_ms > 0).then_some(c.verified_at_ms)))
            }
            None => (None, None),
        };
        self.change(id, |c| c.decide(&filter, verdict, reason, by, now, &drift).map_err(|e| e.to_string()))
    }

    fn carry_out(&self, id: u64, by: &str) -> Result<Arc<Case>, String> {
        self.start_carry_out(id, by)
    }

    fn notifications(&self) -> (u64, u64) {
        (self.notified.load(Ordering::Relaxed), self.notify_failed.load(Ordering::Relaxed))
    }

    fn sign_off(&self, id: u64, by: &str, is_auditor: bool, note: Option<String>) -> Result<Arc<Case>, String> {
        let (_, c) = self.change(id, |c| c.sign_off(by, is_auditor, note, now_ms()).map_err(|e| e.to_string()))?;
        self.notify(&c, "signed off");
        Ok(c)
    }
}
