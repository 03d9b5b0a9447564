//! The org's orphans and departures over time: today's index replayed backwards through the
//! history. What the audit page's timeline draws.
//!
//! Orphans at a moment are the contacts owned then by an agent who was gone then (departed,
//! deactivated, or never seen as an agent). Walking the history from the newest change to the
//! oldest, each change is undone on per-agent contact counts and statuses, so one pass gives every
//! point. Before the history begins nothing is known: those points say so (no orphan count).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{now_ms, ChangeKind, Graph, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// The end of the bucket.
    pub at_ms: i64,
    /// Orphaned contacts at that moment; `None` before the history begins.
    pub orphans: Option<usize>,
    /// Agents (gone today) who went during the bucket.
    pub departures: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub bucket_s: i64,
    /// Oldest first; the last one is now.
    pub points: Vec<TimelinePoint>,
}

const BUCKETS_S: [i64; 11] = [1, 5, 15, 60, 300, 900, 3_600, 6 * 3_600, 86_400, 7 * 86_400, 30 * 86_400];

/// Counts and statuses, undone change by change.
struct Replay {
    gone: HashMap<u64, bool>,
    count: HashMap<u64, i64>,
    orphans: i64,
}

impl Replay {
    fn shift(&mut self, owner: Option<u64>, by: i64) {
        let Some(a) = owner else { return };
        *self.count.entry(a).or_default() += by;
        // An owner never seen as an agent is an orphan's owner (reason UNKNOWN_OWNER).
        if *self.gone.entry(a).or_insert(true) {
            self.orphans += by;
        }
    }

    fn set_gone(&mut self, agent: u64, gone: bool) {
        let was = self.gone.insert(agent, gone).unwrap_or(true);
        if was != gone {
            let n = self.count.get(&agent).copied().unwrap_or(0);
            self.orphans += if gone { n } else { -n };
        }
    }

    /// Puts the state back to just before `kind` happened.
    fn undo(&mut self, kind: &ChangeKind, gone_before: bool) {
        match *kind {
            ChangeKind::ContactMoved { from, to, .. } => {
                self.shift(to, -1);
                self.shift(from, 1);
            }
            ChangeKind::ContactAdded { owner, .. } => self.shift(owner, -1),
            ChangeKind::ContactRemoved { owner, .. } => self.shift(owner, 1),
            ChangeKind::AgentAppeared { agent, .. }
            | ChangeKind::AgentDeactivated { agent }
            | ChangeKind::AgentDeparted { agent }
            | ChangeKind::AgentReactivated { agent } => self.set_gone(agent, gone_before),
            ChangeKind::Generation { .. } => {}
        }
    }
}

fn status_agent(kind: &ChangeKind) -> Option<(u64, bool)> {
    match *kind {
        ChangeKind::AgentAppeared { agent, .. } | ChangeKind::AgentReactivated { agent } => Some((agent, false)),
        ChangeKind::AgentDeactivated { agent } | ChangeKind::AgentDeparted { agent } => Some((agent, true)),
        _ => None,
    }
}

/// For each change (newest first), whether its agent was gone just before it.
fn statuses_before(changes: &[(i64, ChangeKind)]) -> Vec<bool> {
    let mut last: HashMap<u64, bool> = HashMap::new();
    let mut before = vec![false; changes.len()];
    for (i, (_, kind)) in changes.iter().enumerate().rev() {
        if let Some((agent, gone_after)) = status_agent(kind) {
            // The first event seen for an agent implies the state before it: a reactivation
            // follows a departure, a departure follows activity.
            before[i] = last.get(&agent).copied().unwrap_or(matches!(kind, ChangeKind::AgentReactivated { .. }));
            last.insert(agent, gone_after);
        }
    }
    before
}

/// The orphans at `now`, `now - bucket`, … (`n + 1` points, newest first), undoing `changes`
/// (newest first) from the state `replay` holds now.
fn series(mut replay: Replay, changes: &[(i64, ChangeKind)], now: i64, bucket: i64, n: i64) -> Vec<TimelinePoint> {
    let before = statuses_before(changes);
    let mut points: Vec<TimelinePoint> = Vec::with_capacity(n as usize + 1);
    let mut k = 0;
    for ((at, kind), gone_before) in changes.iter().zip(before) {
        while k <= n && now - k * bucket >= *at {
            let orphans = Some(replay.orphans.max(0) as usize);
            points.push(TimelinePoint { at_ms: now - k * bucket, orphans, departures: 0 });
            k += 1;
        }
        replay.undo(kind, gone_before);
    }
    while k <= n {
        points.push(TimelinePoint { at_ms: now - k * bucket, orphans: None, departures: 0 });
        k += 1;
    }
    points
}

/// Orphans and departures in at most `max_points` buckets (a minute to a month each, the
/// smallest that fits) from the oldest recorded change or departure to now.
pub fn timeline(graph: &Graph, max_points: usize) -> Result<Timeline, StoreError> {
    let now = now_ms();
    let ix = graph.read();
    let agents = ix.agents();
    let mut replay = Replay {
        gone: agents.iter().map(|a| (a.id, a.status.orphans().is_some())).collect(),
        count: agents.iter().map(|a| (a.id, ix.contact_count_of(a.id) as i64)).collect(),
        orphans: 0,
    };
    replay.orphans = replay.gone.iter().filter(|(_, g)| **g).map(|(a, _)| replay.count[a]).sum();
    let departures: Vec<i64> = agents
        .iter()
        .filter(|a| a.status.orphans().is_some())
        .filter_map(|a| a.departed_at_ms.or(a.deactivated_at_ms))
        .collect();
    drop(ix);
    let mut changes = Vec::new();
    graph.for_each_change_rev(|c| {
        if c.at_ms <= now {
            changes.push((c.at_ms, c.kind));
        }
        true
    })?;
    let start = changes.last().map(|c| c.0).into_iter().chain(departures.iter().copied()).min().unwrap_or(now);
    let max_points = max_points.max(2) as i64;
    let bucket_s = BUCKETS_S.iter().copied().find(|b| (now - start) / (b * 1000) < max_points).unwrap_or(BUCKETS_S[10]);
    let bucket = bucket_s * 1000;
    let n = ((now - start) / bucket).min(max_points - 1);
    let mut points = series(replay, &changes, now, bucket, n);
    for d in departures {
        if let Some(p) = points.get_mut(((now - d).max(0) / bucket) as usize) {
            p.departures += 1;
        }
    }
    points.reverse();
    Ok(Timeline { bucket_s, points })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undoing_the_history_gives_the_orphans_of_each_moment() {
        // Now: agent 1 active with 3 contacts, agent 2 departed with 2, owner 77 never an agent
        // with 1.
        let replay = Replay {
            gone: HashMap::from([(1, false), (2, true), (77, true)]),
            count: HashMap::from([(1, 3), (2, 2), (77, 1)]),
            orphans: 3,
        };
        let g = ChangeKind::Generation { contacts: 4, agents: 2, accounts: 0, initial: true };
        let oldest_first = [
            (1_000, g),
            (2_000, ChangeKind::ContactAdded { contact: 9, owner: Some(2) }),
            (5_000, ChangeKind::AgentDeparted { agent: 2 }),
            (7_000, ChangeKind::ContactMoved { contact: 9, from: Some(2), to: Some(1) }),
            (7_500, ChangeKind::ContactAdded { contact: 10, owner: Some(77) }),
        ];
        let changes: Vec<_> = oldest_first.into_iter().rev().collect();
        let points = series(replay, &changes, 8_000, 1_000, 8);
        let orphans: Vec<Option<usize>> = points.iter().rev().map(|p| p.orphans).collect();
        // t = 0: before the history; 1000..4000: agent 2 still active; 5000, 6000: it left owning
        // 3; 7000: one moved away; 8000: a contact of an owner never seen as an agent arrived.
        assert_eq!(orphans, [None, Some(0), Some(0), Some(0), Some(0), Some(3), Some(3), Some(2), Some(2 + 1)]);
    }

    #[test]
    fn a_reactivation_undone_makes_the_agent_gone_again() {
        let changes = [
            (3_000, ChangeKind::AgentReactivated { agent: 1 }),
            (2_000, ChangeKind::AgentDeactivated { agent: 1 }),
            (1_000, ChangeKind::Generation { contacts: 5, agents: 1, accounts: 0, initial: true }),
        ];
        let replay = Replay { gone: HashMap::from([(1, false)]), count: HashMap::from([(1, 5)]), orphans: 0 };
        let points = series(replay, &changes, 3_000, 1_000, 2);
        let orphans: Vec<Option<usize>> = points.iter().rev().map(|p| p.orphans).collect();
        assert_eq!(orphans, [Some(0), Some(5), Some(0)]);
    }
}
