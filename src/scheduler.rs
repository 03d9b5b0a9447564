//! The reindex scheduler: an agents-only refresh every few minutes, a full reindex every few hours
//! (or on a cron expression), manual triggers, never two runs at once. It also carries out
//! reassignments, under the crawler's rate budget.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use idgraph_crawler::Crawler;
use idgraph_graph::reassign::{self, Move};
use idgraph_graph::{now_ms, Event, Graph, ShrinkGuard, Update, Via};
use idgraph_graphql::{Metrics, Operations, ReassignOutcome, ReassignRequest, ScheduleStatus, Scope};
use idgraph_model::Contact;
use parking_lot::Mutex;
use rand::Rng;
use reqwest::Method;
use tokio::sync::mpsc;

use crate::pipeline;
use crate::progress::Progress;

/// When full reindexes run.
#[derive(Debug, Clone)]
pub enum FullSchedule {
    Every(Duration),
    Cron(Box<cron::Schedule>),
}

impl FromStr for FullSchedule {
    type Err = String;
    /// `6h`, `30m`, or a cron expression with seconds (`0 0 */6 * * *`).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(d) = humantime::parse_duration(s.trim()) {
            if d < Duration::from_secs(10) {
                return Err("a full reindex interval must be at least 10s".into());
            }
            return Ok(FullSchedule::Every(d));
        }
        cron::Schedule::from_str(s)
            .map(|c| FullSchedule::Cron(Box::new(c)))
            .map_err(|e| format!("{s:?} is neither a duration (6h) nor a cron expression: {e}"))
    }
}

impl FullSchedule {
    fn next_after(&self, now_ms: i64, jitter: f64) -> i64 {
        match self {
            FullSchedule::Every(d) => {
                let base = d.as_millis() as f64;
                let j = rand::rng().random_range(-jitter..=jitter);
                now_ms + (base * (1.0 + j)) as i64
            }
            FullSchedule::Cron(c) => {
                c.upcoming(chrono::Utc).next().map(|t| t.timestamp_millis()).unwrap_or(now_ms + 6 * 3_600_000)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub full: FullSchedule,
    pub agents_every: Duration,
    /// Spread of each interval, as a fraction (0.1 = ±10%), so that many servers do not crawl
    /// in step.
    pub jitter: f64,
    pub guard: ShrinkGuard,
    pub incremental: bool,
}

pub struct Scheduler {
    graph: Arc<Graph>,
    crawler: Crawler,
    metrics: Arc<Metrics>,
    cfg: ScheduleConfig,
    status: Mutex<ScheduleStatus>,
    trigger_tx: mpsc::Sender<Scope>,
    /// Serialises runs and reassignments: never two at once.
    run_lock: tokio::sync::Mutex<()>,
}

impl Scheduler {
    /// Starts the loop. `full_now` runs a full reindex first (no index yet).
    pub fn start(
        graph: Arc<Graph>,
        crawler: Crawler,
        metrics: Arc<Metrics>,
        cfg: ScheduleConfig,
        full_now: bool,
    ) -> Arc<Scheduler> {
        let (trigger_tx, trigger_rx) = mpsc::channel(2);
        let s = Arc::new(Scheduler {
            graph,
            crawler,
            metrics,
            cfg,
            status: Mutex::new(ScheduleStatus::default()),
            trigger_tx,
            run_lock: tokio::sync::Mutex::new(()),
        });
        let me = s.clone();
        tokio::spawn(async move { me.run_loop(trigger_rx, full_now).await });
        s
    }

    async fn run_loop(self: Arc<Self>, mut triggers: mpsc::Receiver<Scope>, full_now: bool) {
        let now = now_ms();
        let mut next_full = if full_now { now } else { self.cfg.full.next_after(now, self.cfg.jitter) };
        let mut next_agents = now + self.agents_interval_ms();
        loop {
            self.set_next(next_full, next_agents);
            let due = next_full.min(next_agents);
            let wait = Duration::from_millis((due - now_ms()).max(0) as u64);
            let scope = tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    if now_ms() >= next_full { Scope::Full } else { Scope::Agents }
                }
                t = triggers.recv() => match t {
                    Some(s) => s,
                    None => return,
                },
            };
            self.run(scope).await;
            let now = now_ms();
            // A full reindex refreshes agents too.
            next_agents = now + self.agents_interval_ms();
            if scope == Scope::Full {
                next_full = self.cfg.full.next_after(now, self.cfg.jitter);
            }
        }
    }

    fn agents_interval_ms(&self) -> i64 {
        let base = self.cfg.agents_every.as_millis() as f64;
        let j = rand::rng().random_range(-self.cfg.jitter..=self.cfg.jitter);
        (base * (1.0 + j)).max(1000.0) as i64
    }

    fn set_next(&self, full: i64, agents: i64) {
        let mut st = self.status.lock();
        st.next_crawl_at_ms = Some(full);
        st.next_agents_at_ms = Some(agents);
        self.metrics.next_crawl_s.store(full / 1000, Ordering::Relaxed);
        self.metrics.next_agents_refresh_s.store(agents / 1000, Ordering::Relaxed);
    }

    async fn run(&self, scope: Scope) {
        let _guard = self.run_lock.lock().await;
        {
            let mut st = self.status.lock();
            st.crawling = true;
            st.crawling_scope = Some(scope);
        }
        let result = match scope {
            Scope::Full => pipeline::reindex(
                &self.graph,
                &self.crawler,
                &self.metrics,
                &Progress::quiet(),
                self.cfg.guard,
                self.cfg.incremental,
            )
            .await
            .map(|r| {
                format!(
                    "full reindex: generation {} ({} contacts, {} requests, {} changes)",
                    r.generation,
                    r.summary.contacts,
                    r.summary.requests,
                    r.changes.len()
                )
            }),
            Scope::Agents => pipeline::refresh_agents(&self.graph, &self.crawler, self.cfg.guard)
                .await
                .map(|c| format!("agents refresh: {} changes", c.len())),
        };
        let mut st = self.status.lock();
        st.crawling = false;
        st.crawling_scope = None;
        st.last_finished_at_ms = Some(now_ms());
        match result {
            Ok(msg) => {
                tracing::info!("{msg}");
                st.last_result = Some(msg);
                st.last_error = None;
                match scope {
                    Scope::Full => {
                        self.metrics.crawls_ok.fetch_add(1, Ordering::Relaxed);
                        self.metrics.last_crawl_success_s.store(now_ms() / 1000, Ordering::Relaxed);
                    }
                    Scope::Agents => {
                        self.metrics.agent_refreshes_ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::error!(error = %msg, ?scope, "scheduled run failed; the current index is still served");
                st.last_error = Some(msg);
                match scope {
                    Scope::Full => self.metrics.crawls_failed.fetch_add(1, Ordering::Relaxed),
                    Scope::Agents => self.metrics.agent_refreshes_failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    }

    /// Carries out (or plans) a reassignment. Moves go one by one through Drift's
    /// `PATCH /contacts/{id}`, each reflected in the graph (and its history) as soon as Drift
    /// accepts it, so a crash loses nothing and a rerun redoes nothing.
    pub async fn reassign(&self, req: ReassignRequest) -> Result<ReassignOutcome> {
        let moves = reassign::plan(&self.graph.read(), req.from_agent, &req.to_agents, None)?;
        if req.dry_run {
            return Ok(ReassignOutcome { dry_run: true, moves, ..Default::default() });
        }
        let _guard = self.run_lock.lock().await;
        execute_moves(&self.graph, &self.crawler, moves).await
    }
}

/// Applies moves through Drift and into the graph.
pub async fn execute_moves(graph: &Arc<Graph>, crawler: &Crawler, moves: Vec<Move>) -> Result<ReassignOutcome> {
    let mut out = ReassignOutcome { dry_run: false, ..Default::default() };
    let base = crawler.config().drift_url.trim_end_matches('/').to_string();
    for m in &moves {
        // The graph may have moved on (a webhook, a concurrent run): skip what is done already.
        if graph.read().contact(m.contact_id).and_then(|c| c.owner_id) != Some(m.from) {
            out.already_done += 1;
            continue;
        }
        let body = serde_json::json!({"attributes": {"ownerId": m.to}});
        let url = format!("{base}/contacts/{}", m.contact_id);
        let reply = match crawler.client().request(Method::PATCH, &url, Some(&body)).await {
            Ok(r) => r,
            Err(e) => {
                out.failed.push((m.contact_id, e.to_string()));
                continue;
            }
        };
        if reply.status.as_u16() == 404 {
            out.failed.push((m.contact_id, "the contact no longer exists in Drift".into()));
            continue;
        }
        let at_ms = reply
            .body
            .get("data")
            .and_then(|d| Contact::from_json(d).ok())
            .map(|c| c.updated_at)
            .filter(|t| *t > 0)
            .unwrap_or_else(now_ms);
        let ev = Event {
            id: format!("reassign:{}:{}:{}", m.contact_id, m.to, at_ms),
            update: Update::SetOwner { id: m.contact_id, owner: Some(m.to), at_ms },
            via: Via::Reassignment,
        };
        let g = graph.clone();
        tokio::task::spawn_blocking(move || g.apply(vec![ev]))
            .await
            .context("the graph update task failed")?
            .context("the graph could not record the move")?;
        out.applied += 1;
    }
    out.moves = moves;
    Ok(out)
}

/// The scheduler as the GraphQL server sees it.
pub struct SchedulerOps(pub Arc<Scheduler>);

impl Operations for SchedulerOps {
    fn schedule(&self) -> ScheduleStatus {
        self.0.status.lock().clone()
    }

    fn trigger(&self, scope: Scope) -> bool {
        if self.0.status.lock().crawling_scope == Some(scope) {
            return false;
        }
        self.0.trigger_tx.try_send(scope).is_ok()
    }

    fn reassign(&self, req: ReassignRequest) -> BoxFuture<'static, Result<ReassignOutcome, String>> {
        let me = self.0.clone();
        Box::pin(async move { me.reassign(req).await.map_err(|e| format!("{e:#}")) })
    }
}
