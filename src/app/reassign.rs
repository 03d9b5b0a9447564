//! Reassignment as a job: a plan of moves through Drift's `PATCH /contacts/{id}`, kept in the
//! store and carried out in the background under the crawl budget, so that it outlives the
//! request that asked for it (Drift's 200 requests a minute make a leaver's book minutes to hours
//! of work) and a restart.
//!
//! Before each batch the job takes the scheduler's turn (no reindex or agents refresh runs while
//! it holds it) and checks the source and every target against the index as it stands then: a
//! target gone inactive meanwhile stops the job with the reason, never receives a contact. A move
//! is marked in doubt (stored) before its `PATCH` leaves; once Drift answers, the move is recorded
//! in the graph (with its event id) and marked done. A move still in doubt after a crash or a lost
//! answer is read again from Drift before it is retried or reported, so a move that reached Drift
//! is recorded once and never sent twice.

use std::sync::Arc;

use anyhow::{Context, Result};
use idgraph_crawler::Crawler;
use idgraph_graph::reassign::{self, Job, JobMove, JobState, MoveStatus};
use idgraph_graph::{now_ms, Event, Graph, Update, Via};
use idgraph_model::Contact;
use parking_lot::Mutex;
use reqwest::Method;
use tokio::sync::Notify;

use crate::app::scheduler::Scheduler;

/// Moves sent between two checks of the source and targets (and two writes of the job).
const BATCH: usize = 10;
/// Tries of one move whose answer was lost, at most.
const MAX_TRIES: u32 = 3;
const PREFIX: &str = "reassign/";

fn job_key(id: u64) -> String {
    format!("{PREFIX}{id:020}")
}

/// The reassignment jobs of one store, run one at a time in the order they were asked for.
pub struct Jobs {
    graph: Arc<Graph>,
    crawler: Crawler,
    /// Whose turn it is to write (a server's scheduler); `None` when this process is alone with
    /// the store (the CLI).
    scheduler: Option<Arc<Scheduler>>,
    jobs: Mutex<Vec<Job>>,
    wake: Notify,
}

impl Jobs {
    /// Loads the stored jobs; unfinished ones are resumed by [`Jobs::run`].
    pub fn open(graph: Arc<Graph>, crawler: Crawler, scheduler: Option<Arc<Scheduler>>) -> Result<Arc<Jobs>> {
        let mut jobs = Vec::new();
        for (_, v) in graph.states_under(PREFIX)? {
            match serde_json::from_value::<Job>(v) {
                Ok(j) => jobs.push(j),
                Err(e) => tracing::warn!(error = %e, "a stored reassignment job could not be read; it is skipped"),
            }
        }
        jobs.sort_by_key(|j| j.id);
        Ok(Arc::new(Jobs { graph, crawler, scheduler, jobs: Mutex::new(jobs), wake: Notify::new() }))
    }

    /// Runs jobs as they come, for ever (a server: call inside a Tokio runtime).
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match me.next_running() {
                    Some(id) => {
                        if let Err(e) = me.run(id, &|_| {}).await {
                            tracing::warn!(job = id, error = %format!("{e:#}"), "a reassignment job paused on an error; it resumes shortly");
                            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        }
                    }
                    None => me.wake.notified().await,
                }
            }
        });
    }

    fn next_running(&self) -> Option<u64> {
        self.jobs.lock().iter().find(|j| j.state == JobState::Running).map(|j| j.id)
    }

    pub fn get(&self, id: u64) -> Option<Job> {
        self.jobs.lock().iter().find(|j| j.id == id).cloned()
    }

    /// Plans a reassignment against the index as it stands and stores it as a job (not started:
    /// [`Jobs::spawn`] or [`Jobs::run`] carries it out).
    pub fn submit(&self, from: u64, targets: Vec<u64>, force: bool) -> Result<Job, reassign::PlanError> {
        let moves = {
            let ix = self.graph.read();
            reassign::check_source(&ix, from, force)?;
            reassign::plan(&ix, from, &targets, None)?
        };
        let mut jobs = self.jobs.lock();
        let id = jobs.iter().map(|j| j.id).max().unwrap_or(0) + 1;
        let job = Job {
            id,
            from,
            targets,
            force,
            created_at_ms: now_ms(),
            finished_at_ms: None,
            state: if moves.is_empty() { JobState::Done } else { JobState::Running },
            reason: None,
            moves: moves
                .into_iter()
                .map(|m| JobMove { contact_id: m.contact_id, to: m.to, status: MoveStatus::Pending, attempts: 0 })
                .collect(),
        };
        jobs.push(job.clone());
        drop(jobs);
        self.wake.notify_one();
        Ok(job)
    }

    /// Stores a job of moves decided elsewhere (an offboarding case's): each contact to its own
    /// target, away from `from`, which must not be active. Carried out like any other job.
    pub fn submit_moves(&self, from: u64, moves: Vec<(u64, u64)>) -> Result<Job, String> {
        reassign::check_source(&self.graph.read(), from, false).map_err(|e| e.to_string())?;
        let mut targets: Vec<u64> = moves.iter().map(|(_, to)| *to).collect();
        targets.sort_unstable();
        targets.dedup();
        let mut jobs = self.jobs.lock();
        let id = jobs.iter().map(|j| j.id).max().unwrap_or(0) + 1;
        let job = Job {
            id,
            from,
            targets,
            force: false,
            created_at_ms: now_ms(),
            finished_at_ms: None,
            state: if moves.is_empty() { JobState::Done } else { JobState::Running },
            reason: None,
            moves: moves
                .into_iter()
                .map(|(contact_id, to)| JobMove { contact_id, to, status: MoveStatus::Pending, attempts: 0 })
                .collect(),
        };
        jobs.push(job.clone());
        drop(jobs);
        // Stored before the case says it is carried out by it.
        self.save(&job).map_err(|e| format!("{e:#}"))?;
        self.wake.notify_one();
        Ok(job)
    }

    /// Stores a job as it is now.
    fn save(&self, job: &Job) -> Result<()> {
        let v = serde_json::to_value(job)?;
        self.graph.update_states(&[(job_key(job.id), v)], &[]).context("cannot store the reassignment job")?;
        if let Some(j) = self.jobs.lock().iter_mut().find(|j| j.id == job.id) {
            *j = job.clone();
        }
        Ok(())
    }

    /// Carries a job out to its end (or until it stops); `progress` is told after each batch.
    pub async fn run(&self, id: u64, progress: &(dyn Fn(&Job) + Send + Sync)) -> Result<Job> {
        let mut job = self.get(id).with_context(|| format!("no reassignment job {id}"))?;
        self.save(&job)?;
        while job.state == JobState::Running {
            let batch: Vec<usize> = {
                let mut idx: Vec<usize> = job
                    .moves
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.status == MoveStatus::InDoubt)
                    .map(|(i, _)| i)
                    .collect();
                idx.extend(
                    job.moves.iter().enumerate().filter(|(_, m)| m.status == MoveStatus::Pending).map(|(i, _)| i),
                );
                idx.truncate(BATCH);
                idx
            };
            if batch.is_empty() {
                job.state = JobState::Done;
                job.finished_at_ms = Some(now_ms());
                self.save(&job)?;
                break;
            }
            // The scheduler's turn: no reindex or agents refresh changes an agent's status
            // while this batch is checked and sent.
            let _turn = match &self.scheduler {
                Some(s) => Some(s.exclusive().await),
                None => None,
            };
            if let Some(reason) = reassign::job_blocker(&self.graph.read(), &job) {
                let left = job.moves.iter().filter(|m| matches!(m.status, MoveStatus::Pending)).count();
                tracing::warn!(job = job.id, %reason, left, "a reassignment job stopped");
                job.state = JobState::Stopped;
                job.reason = Some(format!("{reason}; {left} moves were not made"));
                job.finished_at_ms = Some(now_ms());
                self.save(&job)?;
                break;
            }
            self.batch(&mut job, &batch).await?;
            progress(&job);
        }
        progress(&job);
        Ok(job)
    }

    /// One batch: moves in doubt are read first; the others are marked in doubt (stored), sent,
    /// and recorded as Drift answers.
    async fn batch(&self, job: &mut Job, batch: &[usize]) -> Result<()> {
        let mut send = Vec::new();
        for &i in batch {
            let m = job.moves[i].clone();
            if m.status == MoveStatus::InDoubt {
                // Did the PATCH reach Drift? Ask Drift before trying again.
                match self.crawler.read_contact(m.contact_id).await {
                    Ok(Some(c)) if c.owner_id == Some(m.to) => {
                        self.record(Update::Upsert(c), None, Via::Reassignment).await?;
                        job.moves[i].status = MoveStatus::Done;
                        continue;
                    }
                    Ok(Some(c)) => {
                        if m.attempts >= MAX_TRIES {
                            job.moves[i].status = MoveStatus::Failed(format!("not moved after {} tries", m.attempts));
                            continue;
                        }
                        // Not moved; record what Drift says (it may have left the source).
                        self.record(Update::Upsert(c), None, Via::Reread).await?;
                    }
                    Ok(None) => {
                        job.moves[i].status = MoveStatus::Failed("the contact no longer exists in Drift".into());
                        continue;
                    }
                    Err(e) => {
                        // Still in doubt; the next batch asks again.
                        tracing::warn!(contact = m.contact_id, error = %e, "a move in doubt could not be read");
                        continue;
                    }
                }
            }
            if self.graph.read().contact(m.contact_id).and_then(|c| c.owner_id) != Some(job.from) {
                job.moves[i].status = MoveStatus::AlreadyDone;
                continue;
            }
            job.moves[i].status = MoveStatus::InDoubt;
            job.moves[i].attempts += 1;
            send.push(i);
        }
        // Every PATCH about to leave is on record as in doubt before it leaves.
        self.save(job)?;
        let base = self.crawler.config().drift_url.trim_end_matches('/').to_string();
        let requests: Vec<_> = send
            .iter()
            .map(|&i| {
                let m = job.moves[i].clone();
                let crawler = self.crawler.clone();
                let url = format!("{base}/contacts/{}", m.contact_id);
                tokio::spawn(async move {
                    let body = serde_json::json!({"attributes": {"ownerId": m.to}});
                    (i, crawler.client().request(Method::PATCH, &url, Some(&body)).await)
                })
            })
            .collect();
        let mut moved = Vec::new();
        for r in requests {
            let (i, reply) = r.await.context("a move task failed")?;
            let m = job.moves[i].clone();
            match reply {
                Ok(reply) if reply.status.as_u16() == 404 => {
                    job.moves[i].status = MoveStatus::Failed("the contact no longer exists in Drift".into());
                }
                Ok(reply) if reply.status.is_success() => {
                    let at_ms = reply
                        .body
                        .get("data")
                        .and_then(|d| Contact::from_json(d).ok())
                        .map(|c| c.updated_at)
                        .filter(|t| *t > 0)
                        .unwrap_or_else(now_ms);
                    let update = Update::SetOwner { id: m.contact_id, owner: Some(m.to), at_ms };
                    let eid = format!("reassign:{}:{}:{}", m.contact_id, m.to, at_ms);
                    moved.push((i, Event { id: Some(eid), update, via: Via::Reassignment }));
                }
                Ok(reply) => {
                    // Refused (a 4xx): Drift says it did not move.
                    job.moves[i].status = MoveStatus::Failed(format!("Drift refused the move ({})", reply.status));
                }
                Err(e) => {
                    // Lost on the way: it stays in doubt and is read again before a retry.
                    tracing::warn!(contact = m.contact_id, error = %e, "a move's answer was lost; it is read again");
                }
            }
        }
        // The batch's moves Drift accepted, recorded in one write; until it lands they stay in
        // doubt (a crash here reads them again from Drift, and records them once).
        if !moved.is_empty() {
            let g = self.graph.clone();
            let events: Vec<Event> = moved.iter().map(|(_, e)| e.clone()).collect();
            tokio::task::spawn_blocking(move || g.apply(events))
                .await
                .context("the graph update task failed")?
                .context("the graph could not record the moves")?;
            for (i, _) in moved {
                job.moves[i].status = MoveStatus::Done;
            }
        }
        self.save(job)
    }

    async fn record(&self, update: Update, id: Option<String>, via: Via) -> Result<()> {
        let g = self.graph.clone();
        let ev = Event { id, update, via };
        tokio::task::spawn_blocking(move || g.apply(vec![ev]))
            .await
            .context("the graph update task failed")?
            .context("the graph could not record the move")?;
        Ok(())
    }
}
