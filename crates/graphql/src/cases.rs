//! Offboarding cases in GraphQL: typed objects over `idgraph_cases`, read and changed through
//! the app's [`Desk`](idgraph_cases::Desk).

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use idgraph_cases as cs;

use crate::schema::{coded, time};

/// A case's state.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum CaseState {
    Open,
    Decided,
    CarriedOut,
    SignedOff,
}

impl From<cs::CaseState> for CaseState {
    fn from(s: cs::CaseState) -> Self {
        match s {
            cs::CaseState::Open => CaseState::Open,
            cs::CaseState::Decided => CaseState::Decided,
            cs::CaseState::CarriedOut => CaseState::CarriedOut,
            cs::CaseState::SignedOff => CaseState::SignedOff,
        }
    }
}

impl From<CaseState> for cs::CaseState {
    fn from(s: CaseState) -> Self {
        match s {
            CaseState::Open => cs::CaseState::Open,
            CaseState::Decided => cs::CaseState::Decided,
            CaseState::CarriedOut => cs::CaseState::CarriedOut,
            CaseState::SignedOff => cs::CaseState::SignedOff,
        }
    }
}

/// A decision's kind.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum CaseDecisionKind {
    Reassign,
    Keep,
    AlreadyMoved,
}

/// Items by their decision (`UNDECIDED`: none yet).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum CaseDecisionFilter {
    Undecided,
    Reassign,
    Keep,
    AlreadyMoved,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum CaseItemKind {
    Contact,
    Account,
}

/// Which items a bulk decision is for; every field given must match.
#[derive(InputObject, Default)]
pub struct CaseItemFilter {
    /// Only items without a decision.
    undecided: Option<bool>,
    kind: Option<CaseItemKind>,
    /// Items of this email domain (contacts) or domain (accounts), e.g. by account.
    domain: Option<String>,
    /// Items by id (`123`) or key (`contact:123`, `account:acme`).
    ids: Option<Vec<String>>,
    /// Items in this group: UNDECIDED, TO_REASSIGN, MOVING, CONFIRMED, FAILED, KEEP, ALREADY_MOVED.
    group: Option<String>,
}

impl From<CaseItemFilter> for cs::Filter {
    fn from(f: CaseItemFilter) -> cs::Filter {
        cs::Filter {
            undecided: f.undecided.unwrap_or(false),
            kind: f.kind.map(|k| match k {
                CaseItemKind::Contact => cs::ItemKind::Contact,
                CaseItemKind::Account => cs::ItemKind::Account,
            }),
            domain: f.domain,
            ids: f.ids,
            group: f.group,
        }
    }
}

pub struct Case(pub Arc<cs::Case>);

#[derive(SimpleObject)]
pub struct CaseAgent {
    id: ID,
    email: Option<String>,
    name: Option<String>,
    /// Its status when the case opened.
    status: String,
}

#[derive(SimpleObject)]
pub struct CaseCount {
    group: String,
    count: usize,
}

#[derive(SimpleObject)]
pub struct CaseDecision {
    kind: CaseDecisionKind,
    /// The agent it goes to (REASSIGN) or went to (ALREADY_MOVED).
    to: Option<ID>,
    reason: Option<String>,
    by: String,
    at: Option<DateTime<Utc>>,
    /// The item's owner in Drift when decided, and when Drift last confirmed it then.
    drift_owner: Option<ID>,
    drift_verified_at: Option<DateTime<Utc>>,
    /// How idgraph learnt of an ALREADY_MOVED (REREAD, WEBHOOK, CRAWL, ...).
    via: Option<String>,
}

#[derive(SimpleObject)]
pub struct CaseItem {
    kind: CaseItemKind,
    id: ID,
    email: Option<String>,
    name: Option<String>,
    domain: Option<String>,
    verified_at: Option<DateTime<Utc>>,
    /// UNDECIDED, TO_REASSIGN, MOVING, CONFIRMED, FAILED, KEEP, ALREADY_MOVED.
    group: String,
    decision: Option<CaseDecision>,
    /// Why a reassignment failed (retryable with carryOut).
    failure: Option<String>,
}

impl From<&cs::Item> for CaseItem {
    fn from(it: &cs::Item) -> CaseItem {
        CaseItem {
            kind: if it.kind == cs::ItemKind::Contact { CaseItemKind::Contact } else { CaseItemKind::Account },
            id: ID(it.id.clone()),
            email: it.email.clone(),
            name: it.name.clone(),
            domain: it.domain.clone(),
            verified_at: it.verified_at_ms.and_then(time),
            group: it.group().to_string(),
            decision: it.decision.as_ref().map(|d| {
                let (kind, to, via) = match &d.verdict {
                    cs::Verdict::Reassign { to } => (CaseDecisionKind::Reassign, Some(*to), None),
                    cs::Verdict::Keep => (CaseDecisionKind::Keep, None, None),
                    cs::Verdict::AlreadyMoved { to, via } => (CaseDecisionKind::AlreadyMoved, *to, Some(via.clone())),
                };
                CaseDecision {
                    kind,
                    to: to.map(|t| ID(t.to_string())),
                    reason: d.reason.clone(),
                    by: d.by.clone(),
                    at: time(d.at_ms),
                    drift_owner: d.drift_owner.map(|o| ID(o.to_string())),
                    drift_verified_at: d.drift_verified_at_ms.and_then(time),
                    via,
                }
            }),
            failure: match &it.carry {
                cs::Carry::Failed(why) => Some(why.clone()),
                _ => None,
            },
        }
    }
}

#[derive(SimpleObject)]
pub struct CaseEvent {
    seq: u64,
    at: Option<DateTime<Utc>>,
    kind: String,
    by: String,
    /// What the event recorded, as JSON text.
    detail: String,
    prev: String,
    hash: String,
}

#[Object]
impl Case {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The org the case belongs to (null: the server's only org).
    async fn org(&self) -> Option<&str> {
        self.0.org.as_deref()
    }
    async fn agent(&self) -> CaseAgent {
        let a = &self.0.agent;
        CaseAgent { id: ID(a.id.to_string()), email: a.email.clone(), name: a.name.clone(), status: a.status.clone() }
    }
    async fn state(&self) -> CaseState {
        self.0.state.into()
    }
    async fn opened_at(&self) -> Option<DateTime<Utc>> {
        time(self.0.opened_at_ms)
    }
    async fn opened_by(&self) -> &str {
        &self.0.opened_by
    }
    async fn due_at(&self) -> Option<DateTime<Utc>> {
        time(self.0.due_at_ms)
    }
    async fn overdue(&self) -> bool {
        self.0.overdue(chrono::Utc::now().timestamp_millis())
    }
    /// Set when the agent was reactivated after the case opened.
    async fn reactivated_at(&self) -> Option<DateTime<Utc>> {
        self.0.reactivated_at_ms.and_then(time)
    }
    async fn signed_off_by(&self) -> Option<&str> {
        self.0.signed_off.as_ref().map(|s| s.by.as_str())
    }
    async fn signed_off_at(&self) -> Option<DateTime<Utc>> {
        self.0.signed_off.as_ref().and_then(|s| time(s.at_ms))
    }
    /// Everyone who made a decision (they may not sign it off).
    async fn decided_by(&self) -> Vec<String> {
        self.0.deciders().into_iter().collect()
    }
    async fn total_items(&self) -> usize {
        self.0.items.len()
    }
    /// Items by group.
    async fn counts(&self) -> Vec<CaseCount> {
        self.0.counts().into_iter().map(|(g, n)| CaseCount { group: g.to_string(), count: n }).collect()
    }
    /// The reassignment jobs that carried it out (see `reassignment(id:)`).
    async fn jobs(&self) -> Vec<ID> {
        self.0.jobs.iter().map(|j| ID(j.to_string())).collect()
    }
    async fn notify_failures(&self) -> &[String] {
        &self.0.notify_failures
    }
    /// The items as frozen when the case opened, with their decisions; pages of up to 1,000.
    #[graphql(complexity = "first.unwrap_or(100).clamp(1, 1000) as usize * child_complexity")]
    async fn items(
        &self,
        first: Option<i32>,
        after: Option<String>,
        decision: Option<CaseDecisionFilter>,
        group: Option<String>,
    ) -> Result<Connection<String, CaseItem>> {
        let n = first.unwrap_or(100);
        if !(1..=1000).contains(&n) {
            return Err(coded("BAD_USER_INPUT", "first must be between 1 and 1000"));
        }
        let start = match after {
            Some(a) => a.parse::<usize>().map_err(|_| coded("BAD_USER_INPUT", "after is an item's cursor"))? + 1,
            None => 0,
        };
        let keep = |it: &cs::Item| {
            let d = it.decision.as_ref().map(|d| d.verdict.name());
            let by_decision = match decision {
                None => true,
                Some(CaseDecisionFilter::Undecided) => d.is_none(),
                Some(CaseDecisionFilter::Reassign) => d == Some("REASSIGN"),
                Some(CaseDecisionFilter::Keep) => d == Some("KEEP"),
                Some(CaseDecisionFilter::AlreadyMoved) => d == Some("ALREADY_MOVED"),
            };
            by_decision && group.as_ref().is_none_or(|g| it.group() == g)
        };
        let mut edges = Vec::new();
        let mut more = false;
        for (i, it) in self.0.items.iter().enumerate().skip(start) {
            if !keep(it) {
                continue;
            }
            if edges.len() == n as usize {
                more = true;
                break;
            }
            edges.push(Edge::new(i.to_string(), CaseItem::from(it)));
        }
        let mut c = Connection::new(start > 0, more);
        c.edges = edges;
        Ok(c)
    }
    /// The case's chain of events, oldest first.
    #[graphql(complexity = "first.unwrap_or(100).clamp(1, 1000) as usize * child_complexity")]
    async fn events(&self, first: Option<i32>, after: Option<String>) -> Result<Connection<String, CaseEvent>> {
        let n = first.unwrap_or(100).clamp(1, 1000) as usize;
        let start = after.and_then(|a| a.parse::<usize>().ok()).unwrap_or(0);
        let all = &self.0.events;
        let mut c = Connection::new(start > 0, all.len() > start + n);
        c.edges = all
            .iter()
            .filter(|e| e.seq as usize > start)
            .take(n)
            .map(|e| {
                let detail = e.detail.to_string();
                Edge::new(
                    e.seq.to_string(),
                    CaseEvent {
                        seq: e.seq,
                        at: time(e.at_ms),
                        kind: e.kind.clone(),
                        by: e.by.clone(),
                        detail,
                        prev: e.prev.clone(),
                        hash: e.hash.clone(),
                    },
                )
            })
            .collect();
        Ok(c)
    }
}

/// What `decide` did.
#[derive(SimpleObject)]
pub struct Decided {
    decided: usize,
    case: Case,
}

pub(crate) fn desk(c: &Context<'_>) -> Result<Arc<dyn cs::Desk>> {
    let ops = &crate::schema::ctx(c)?.ops;
    ops.cases().ok_or_else(|| coded("BAD_USER_INPUT", "this server keeps no offboarding cases"))
}

pub(crate) fn by(c: &Context<'_>) -> Result<String> {
    Ok(c.data::<idgraph_access::Principal>()?.name.clone())
}

fn refused(e: String) -> async_graphql::Error {
    let code = if e.contains("separation of duties") || e.contains("needs the auditor role") {
        "FORBIDDEN"
    } else {
        "BAD_USER_INPUT"
    };
    coded(code, e)
}

/// Runs a desk call off the async threads (a case of 100,000 items is stored whole).
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| coded("INTERNAL", e.to_string()))?.map_err(refused)
}

pub(crate) async fn list(
    c: &Context<'_>,
    state: Option<CaseState>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, Case>> {
    let d = desk(c)?;
    let n = first.unwrap_or(20).clamp(1, 100) as usize;
    let all = d.list(state.map(Into::into));
    let start = match after {
        Some(a) => all.iter().position(|x| x.id.to_string() == a).map_or(all.len(), |p| p + 1),
        None => 0,
    };
    let mut conn = Connection::new(start > 0, all.len() > start + n);
    conn.edges = all.into_iter().skip(start).take(n).map(|x| Edge::new(x.id.to_string(), Case(x))).collect();
    Ok(conn)
}

pub(crate) fn parse_case(id: &ID) -> Result<u64> {
    id.parse::<u64>().map_err(|_| coded("BAD_USER_INPUT", format!("{:?} is not a case id", id.as_str())))
}

pub(crate) async fn decide(
    c: &Context<'_>,
    case: ID,
    decision: CaseDecisionKind,
    to: Option<ID>,
    reason: Option<String>,
    filter: Option<CaseItemFilter>,
) -> Result<Decided> {
    let d = desk(c)?;
    let id = parse_case(&case)?;
    let verdict = match (decision, to) {
        (CaseDecisionKind::Reassign, Some(to)) => {
            cs::Verdict::Reassign { to: to.parse().map_err(|_| coded("BAD_USER_INPUT", "to is an agent's id"))? }
        }
        (CaseDecisionKind::Reassign, None) => {
            return Err(coded("BAD_USER_INPUT", "REASSIGN needs `to`: an active agent's id"))
        }
        (CaseDecisionKind::Keep, _) => cs::Verdict::Keep,
        (CaseDecisionKind::AlreadyMoved, _) => {
            return Err(coded("BAD_USER_INPUT", "ALREADY_MOVED is found by idgraph in Drift, not decided"))
        }
    };
    let by = by(c)?;
    let filter: cs::Filter = filter.unwrap_or_default().into();
    let (n, case) = blocking(move || d.decide(id, filter, verdict, reason, &by)).await?;
    Ok(Decided { decided: n, case: Case(case) })
}
