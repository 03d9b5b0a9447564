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
    #[error("target agent {0} is {1:?}, not ACTIVE: contacts can only go to an active agent")]
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
