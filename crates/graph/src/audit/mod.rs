//! Offboarding audits: what a departed or deactivated agent owned, what it owns now, what its
//! departure orphaned and what has been reassigned since; and the same for a whole org, with
//! evidence (generation, crawl time, freshness) and a digest of the report.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod render;
pub mod timeline;

use crate::index::{AccountView, AgentStatus, AgentView, ContactView, OrphanReason};
use crate::{now_ms, Change, ChangeKind, Graph, StoreError};

/// One dated step of an agent's standing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub status: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub generation: u64,
    pub crawl_finished_at_ms: i64,
    pub agents_refreshed_at_ms: i64,
    pub generated_at_ms: i64,
    /// How old the freshest data is, in seconds.
    pub data_age_s: i64,
    pub scim_available: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reassignment {
    pub contact_id: u64,
    pub to: Option<u64>,
    pub at_ms: i64,
    pub via: String,
}

/// The audit of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentAudit {
    pub agent: AgentView,
    pub timeline: Vec<StatusEvent>,
    pub contacts_now: usize,
    pub accounts_now: usize,
    /// Contacts it owned when it went (deactivated or departed): those it still owns plus those
    /// moved away since.
    pub contacts_at_departure: Option<usize>,
    /// Its contacts that are orphans now.
    pub orphaned_contacts: Vec<ContactView>,
    pub orphaned_accounts: Vec<AccountView>,
    pub orphan_reason: Option<OrphanReason>,
    pub reassigned_since: Vec<Reassignment>,
    /// Of its orphaned contacts, those Drift confirmed after it went.
    #[serde(default)]
    pub orphans_verified_after_departure: usize,
    pub evidence: Evidence,
}

/// One row of the org audit: an agent that is gone or deactivated and still owns something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExposureRow {
    pub agent: AgentView,
    pub contacts: usize,
    pub accounts: usize,
    pub gone_at_ms: Option<i64>,
}

/// One orphaned contact, flat for CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrphanRow {
    pub contact_id: u64,
    pub contact_email: Option<String>,
    pub contact_name: Option<String>,
    pub owner_id: u64,
    pub owner_email: Option<String>,
    pub owner_name: Option<String>,
    pub owner_status: AgentStatus,
    pub reason: OrphanReason,
    pub owner_gone_at_ms: Option<i64>,
    /// When Drift last confirmed the contact (and so that it is still the leaver's).
    #[serde(default)]
    pub contact_verified_at_ms: Option<i64>,
}

impl OrphanRow {
    /// Whether Drift confirmed the contact after its owner went: evidence, not hearsay.
    pub fn verified_after_departure(&self) -> bool {
        verified_after(self.contact_verified_at_ms, self.owner_gone_at_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgAudit {
    pub rows: Vec<ExposureRow>,
    pub total_agents: usize,
    pub total_contacts: usize,
    pub total_accounts: usize,
    pub unowned_contacts: usize,
    /// Orphans Drift confirmed after their owner went, and those not (yet) re-read since.
    #[serde(default)]
    pub orphans_verified_after_departure: usize,
    #[serde(default)]
    pub orphans_not_yet_verified: usize,
    pub orphans: Vec<OrphanRow>,
    pub evidence: Evidence,
}

/// The SHA-256 of a report's canonical JSON: a reviewer recomputes it to see it was not edited.
pub fn digest<T: Serialize>(report: &T) -> String {
    // Streamed into the hash: an org's report at 1,000,000 contacts is tens of megabytes of JSON.
    struct Hasher(Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hasher(Sha256::new());
    // Serialising plain structs to a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut h, report);
    hex::encode(h.0.finalize())
}

fn evidence(graph: &Graph) -> Result<Evidence, StoreError> {
    let info = graph.info().ok_or(StoreError::Empty)?;
    let now = now_ms();
    let freshest = info.finished_at_ms.max(info.agents_refreshed_at_ms);
    Ok(Evidence {
        generation: info.generation,
        crawl_finished_at_ms: info.finished_at_ms,
        agents_refreshed_at_ms: info.agents_refreshed_at_ms,
        generated_at_ms: now,
        data_age_s: (now - freshest).max(0) / 1000,
        scim_available: info.scim_available,
    })
}

fn status_name(s: AgentStatus) -> String {
    crate::export::status_name(s).to_string()
}

/// Finds an agent by id or email, also one Drift no longer knows.
pub fn find_agent(graph: &Graph, id_or_email: &str) -> Option<AgentView> {
    let ix = graph.read();
    match id_or_email.trim().parse::<u64>() {
        Ok(id) => ix.agent(id),
        Err(_) => ix.agent_by_email(id_or_email),
    }
}

pub fn agent_audit(graph: &Graph, agent_id: u64) -> Result<Option<AgentAudit>, StoreError> {
    let evidence = evidence(graph)?;
    let history = graph.agent_history(agent_id)?;
    let ix = graph.read();
    let Some(agent) = ix.agent(agent_id) else {
        return Ok(None);
    };
    let mut timeline = Vec::new();
    if let Some(t) = agent.first_seen_ms {
        timeline.push(StatusEvent { status: "FIRST_SEEN".into(), at_ms: t });
    }
    for c in &history {
        let s = match c.kind {
            ChangeKind::AgentDeactivated { .. } => "DEACTIVATED",
            ChangeKind::AgentDeparted { .. } => "DEPARTED",
            ChangeKind::AgentReactivated { .. } => "REACTIVATED",
            _ => continue,
        };
        timeline.push(StatusEvent { status: s.into(), at_ms: c.at_ms });
    }
    // Memory carries the dates even where history began later than the agent's departure.
    for (s, t) in [("DEACTIVATED", agent.deactivated_at_ms), ("DEPARTED", agent.departed_at_ms)] {
        if let Some(t) = t {
            if !timeline.iter().any(|e| e.status == s) {
                timeline.push(StatusEvent { status: s.into(), at_ms: t });
            }
        }
    }
    timeline.sort_by_key(|e| e.at_ms);
    let gone_at = agent.departed_at_ms.or(agent.deactivated_at_ms);
    let reassigned_since: Vec<Reassignment> = history
        .iter()
        .filter(|c| gone_at.is_some_and(|g| c.at_ms >= g))
        .filter_map(|c: &Change| match c.kind {
            ChangeKind::ContactMoved { contact, from: Some(f), to } if f == agent_id => {
                Some(Reassignment { contact_id: contact, to, at_ms: c.at_ms, via: format!("{:?}", c.via) })
            }
            _ => None,
        })
        .collect();
    let contacts_now = ix.contact_count_of(agent_id);
    let reason = agent.status.orphans();
    let orphaned_contacts = if reason.is_some() {
        ix.owned_contact_ids(agent_id).into_iter().filter_map(|id| ix.contact(id)).collect()
    } else {
        Vec::new()
    };
    let orphaned_accounts = if reason.is_some() { ix.owned_accounts(agent_id, None, usize::MAX).0 } else { Vec::new() };
    let mut audit = AgentAudit {
        contacts_at_departure: gone_at.map(|_| contacts_now + reassigned_since.len()),
        accounts_now: ix.account_count_of(agent_id),
        timeline,
        contacts_now,
        orphaned_contacts,
        orphaned_accounts,
        orphan_reason: reason,
        reassigned_since,
        orphans_verified_after_departure: 0,
        agent,
        evidence,
    };
    audit.orphans_verified_after_departure =
        render::agent_rows(&audit).iter().filter(|r| r.verified_after_departure()).count();
    Ok(Some(audit))
}

pub fn org_audit(graph: &Graph) -> Result<OrgAudit, StoreError> {
    org_audit_with(graph, true)
}

/// The org audit without its list of orphans (`orphans` empty, no digest): every total, count and
/// row as the whole report has them, cheap at any size. What the audit page draws first.
pub fn org_summary(graph: &Graph) -> Result<OrgAudit, StoreError> {
    org_audit_with(graph, false)
}

fn org_audit_with(graph: &Graph, with_orphans: bool) -> Result<OrgAudit, StoreError> {
    let evidence = evidence(graph)?;
    let ix = graph.read();
    let mut rows: Vec<ExposureRow> = ix
        .agents()
        .into_iter()
        .filter(|a| matches!(a.status, AgentStatus::Departed | AgentStatus::Deactivated | AgentStatus::Unknown))
        .map(|a| ExposureRow {
            contacts: ix.contact_count_of(a.id),
            accounts: ix.account_count_of(a.id),
            gone_at_ms: a.departed_at_ms.or(a.deactivated_at_ms),
            agent: a,
        })
        .filter(|r| r.contacts + r.accounts > 0)
        .collect();
    rows.sort_by(|a, b| (b.contacts + b.accounts).cmp(&(a.contacts + a.accounts)).then(a.agent.id.cmp(&b.agent.id)));
    // Borrowed from the index: the counts need no copies, the list copies each row once.
    let refs = ix.orphan_refs(None, usize::MAX);
    let gone = |o: &AgentView| o.departed_at_ms.or(o.deactivated_at_ms);
    let verified = refs.iter().filter(|(_, c, o)| verified_after(verified_ms(c), gone(o))).count();
    let orphans: Vec<OrphanRow> = if with_orphans {
        refs.iter()
            .map(|(k, c, o)| OrphanRow {
                contact_id: c.id,
                contact_email: c.email.clone(),
                contact_name: c.name.clone(),
                owner_id: o.id,
                owner_email: o.email.clone(),
                owner_name: o.name.clone(),
                owner_status: o.status,
                reason: k.0,
                owner_gone_at_ms: gone(o),
                contact_verified_at_ms: verified_ms(c),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(OrgAudit {
        total_agents: rows.len(),
        total_contacts: rows.iter().map(|r| r.contacts).sum(),
        total_accounts: rows.iter().map(|r| r.accounts).sum(),
        unowned_contacts: ix.unowned(None, 0).1,
        orphans_verified_after_departure: verified,
        orphans_not_yet_verified: refs.len() - verified,
        rows,
        orphans,
        evidence,
    })
}

fn verified_ms(c: &ContactView) -> Option<i64> {
    Some(c.verified_at_ms).filter(|t| *t > 0)
}

/// Whether Drift confirmed a contact (last at `verified`) after its owner went (at `gone`).
fn verified_after(verified: Option<i64>, gone: Option<i64>) -> bool {
    match (verified, gone) {
        (Some(v), Some(g)) => v >= g,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

pub fn status_label(s: AgentStatus) -> String {
    status_name(s)
}

/// An audit report as one document, `{kind, report, digest}`: what the CLI renders and
/// GraphQL's `auditReport` answers, assembled here once for both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportDoc {
    /// `org` or `agent`.
    pub kind: String,
    pub digest: String,
    pub report: serde_json::Value,
}

impl ReportDoc {
    /// The document as JSON, its longest list (the org's `orphans`, an agent's
    /// `orphaned_contacts`) cut to `limit` entries for a page or a file that must stay small. The
    /// digest stays the whole report's; `truncated` says what was cut (null when nothing was).
    pub fn into_json(self, limit: Option<usize>) -> serde_json::Value {
        let mut report = self.report;
        let field = list_field(&self.kind);
        let mut total = 0;
        if let (Some(limit), Some(list)) = (limit, report.get_mut(field).and_then(|v| v.as_array_mut())) {
            total = list.len();
            list.truncate(limit);
        }
        doc_json(&self.kind, self.digest, report, total, limit)
    }
}

/// The list a page or file cuts: the org's orphans, an agent's orphaned contacts.
fn list_field(kind: &str) -> &'static str {
    if kind == "agent" {
        "orphaned_contacts"
    } else {
        "orphans"
    }
}

/// `{kind, digest, report, truncated}`; `truncated` says what was cut from a list of `total`
/// (null when nothing was).
fn doc_json(
    kind: &str,
    digest: String,
    report: serde_json::Value,
    total: usize,
    limit: Option<usize>,
) -> serde_json::Value {
    let truncated = match limit.filter(|l| *l < total) {
        Some(shown) => serde_json::json!({"field": list_field(kind), "total": total, "shown": shown}),
        None => serde_json::Value::Null,
    };
    serde_json::json!({"kind": kind, "digest": digest, "report": report, "truncated": truncated})
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no agent {0:?} in the index")]
    NoAgent(String),
    #[error("give an agent (an id or email), or ask for the whole org")]
    NothingAsked,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode the report: {0}")]
    Encode(String),
    #[error("{0} has an unexpected shape")]
    Shape(String),
}

/// The org's audit (`all`), or one agent's by id or email.
pub fn report(graph: &Graph, agent: Option<&str>, all: bool) -> Result<ReportDoc, ReportError> {
    let enc = |e: serde_json::Error| ReportError::Encode(e.to_string());
    match build(graph, agent, all)? {
        Report::Org(r) => {
            Ok(ReportDoc { kind: "org".into(), digest: digest(&r), report: serde_json::to_value(r).map_err(enc)? })
        }
        Report::Agent(r) => {
            Ok(ReportDoc { kind: "agent".into(), digest: digest(&r), report: serde_json::to_value(r).map_err(enc)? })
        }
    }
}

/// `report(…).into_json(limit)` without building the whole report as JSON first: the digest is
/// the whole report's, the longest list is cut before it is encoded. What a page asks for.
pub fn report_json(
    graph: &Graph,
    agent: Option<&str>,
    all: bool,
    limit: Option<usize>,
) -> Result<serde_json::Value, ReportError> {
    let enc = |e: serde_json::Error| ReportError::Encode(e.to_string());
    let (kind, digest, total, report) = match build(graph, agent, all)? {
        Report::Org(mut r) => {
            let (d, n) = (digest(&r), r.orphans.len());
            r.orphans.truncate(limit.unwrap_or(usize::MAX));
            ("org", d, n, serde_json::to_value(r).map_err(enc)?)
        }
        Report::Agent(mut r) => {
            let (d, n) = (digest(&r), r.orphaned_contacts.len());
            r.orphaned_contacts.truncate(limit.unwrap_or(usize::MAX));
            ("agent", d, n, serde_json::to_value(r).map_err(enc)?)
        }
    };
    Ok(doc_json(kind, digest, report, total, limit))
}

enum Report {
    Org(OrgAudit),
    Agent(AgentAudit),
}

fn build(graph: &Graph, agent: Option<&str>, all: bool) -> Result<Report, ReportError> {
    if all {
        return Ok(Report::Org(org_audit(graph)?));
    }
    let key = agent.ok_or(ReportError::NothingAsked)?;
    let a = find_agent(graph, key).ok_or_else(|| ReportError::NoAgent(key.to_string()))?;
    let r = agent_audit(graph, a.id)?.ok_or_else(|| ReportError::NoAgent(key.to_string()))?;
    Ok(Report::Agent(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_digest_is_the_digest_of_the_bytes() {
        let v = serde_json::json!({"a": [1, 2, 3], "b": "x"});
        let bytes = serde_json::to_vec(&v).unwrap();
        assert_eq!(digest(&v), hex::encode(Sha256::digest(&bytes)));
    }
}
