//! Reassignment plans: a departed agent's contacts handed to one or several active agents.
//!
//! A plan is computed from the current index, so it is idempotent: contacts already moved no
//! longer belong to the leaver and are not planned again.

use serde::{Deserialize, Serialize};

use crate::index::{AgentStatus, Index};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub contact_id: u64,
    pub from: u64,
    pub to: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("agent {0} is not in the index")]
    UnknownAgent(u64),
    #[error("target agent {0} is {status}, not ACTIVE: contacts can only go to an active agent", status = .1.name())]
    InactiveTarget(u64, AgentStatus),
    #[error("no target agents given")]
    NoTargets,
    #[error("the target {0} is the agent whose contacts are being moved")]
    SelfTarget(u64),
    #[error("agent {0} is ACTIVE: moving an active agent's contacts needs --force (force: true)")]
    ActiveSource(u64),
}

/// What a reassignment did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub dry_run: bool,
    pub moves: Vec<Move>,
    pub applied: usize,
    pub already_done: usize,
    pub failed: Vec<(u64, String)>,
    /// The job that carries the plan out (not for a dry run).
    #[serde(default)]
    pub job: Option<u64>,
}

/// Where a reassignment job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    /// Every move is done, already done or failed.
    Done,
    /// Stopped before the end, with the reason (a target no longer active, ...).
    Stopped,
}

/// Where one move of a job is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveStatus {
    Pending,
    /// Its `PATCH` may have reached Drift (sent, no answer recorded): read again before it is
    /// retried or reported.
    InDoubt,
    Done,
    /// The contact had left the source before its turn (moved by someone else, or an earlier run).
    AlreadyDone,
    Failed(String),
}

/// One move of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMove {
    pub contact_id: u64,
    pub to: u64,
    pub status: MoveStatus,
    /// Attempts made (a move whose answer was lost is tried again, a bounded number of times).
    #[serde(default)]
    pub attempts: u32,
}

/// A reassignment carried out in the background, kept in the store so that it survives restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub from: u64,
    pub targets: Vec<u64>,
    pub force: bool,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub state: JobState,
    pub reason: Option<String>,
    pub moves: Vec<JobMove>,
}

/// A job's moves counted by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub planned: usize,
    pub pending: usize,
    pub in_doubt: usize,
    pub done: usize,
    pub already_done: usize,
    pub failed: usize,
}

impl Job {
    pub fn counts(&self) -> JobCounts {
        let mut c = JobCounts { planned: self.moves.len(), ..JobCounts::default() };
        for m in &self.moves {
            match m.status {
                MoveStatus::Pending => c.pending += 1,
                MoveStatus::InDoubt => c.in_doubt += 1,
                MoveStatus::Done => c.done += 1,
                MoveStatus::AlreadyDone => c.already_done += 1,
                MoveStatus::Failed(_) => c.failed += 1,
            }
        }
        c
    }

    /// The failed moves with their reasons.
    pub fn failures(&self) -> impl Iterator<Item = (u64, &str)> {
        self.moves.iter().filter_map(|m| match &m.status {
            MoveStatus::Failed(e) => Some((m.contact_id, e.as_str())),
            _ => None,
        })
    }
}

/// Whether a job may go on: the source and every target as they stand now. `None`: it may;
/// otherwise the reason it stops.
pub fn job_blocker(ix: &Index, job: &Job) -> Option<String> {
    if let Err(e) = check_source(ix, job.from, job.force) {
        return Some(e.to_string());
    }
    for t in &job.targets {
        match ix.agent(*t) {
            None => return Some(PlanError::UnknownAgent(*t).to_string()),
            Some(a) if a.status != AgentStatus::Active => {
                return Some(PlanError::InactiveTarget(*t, a.status).to_string());
            }
            Some(_) => {}
        }
    }
    None
}

/// Refuses to move an active agent's contacts unless `force`: it is rarely what is meant.
pub fn check_source(ix: &Index, from: u64, force: bool) -> Result<(), PlanError> {
    match ix.agent(from) {
        None => Err(PlanError::UnknownAgent(from)),
        Some(a) if a.status == AgentStatus::Active && !force => Err(PlanError::ActiveSource(from)),
        Some(_) => Ok(()),
    }
}

/// Spreads `from`'s contacts over `targets` in contact-id order, round robin. With `only`, just
/// those contacts (still owned by `from`).
pub fn plan(ix: &Index, from: u64, targets: &[u64], only: Option<&[u64]>) -> Result<Vec<Move>, PlanError> {
    if targets.is_empty() {
        return Err(PlanError::NoTargets);
    }
    if ix.agent(from).is_none() {
        return Err(PlanError::UnknownAgent(from));
    }
    for t in targets {
        if *t == from {
            return Err(PlanError::SelfTarget(*t));
        }
        let a = ix.agent(*t).ok_or(PlanError::UnknownAgent(*t))?;
        if a.status != AgentStatus::Active {
            return Err(PlanError::InactiveTarget(*t, a.status));
        }
    }
    let mut ids = ix.owned_contact_ids(from);
    if let Some(only) = only {
        ids.retain(|id| only.contains(id));
    }
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(i, contact_id)| Move { contact_id, from, to: targets[i % targets.len()] })
        .collect())
}
