//! The adapter between the app and the HTTP layer: the only module of the library that knows
//! the GraphQL crate. Metrics observe crawls and runs; the scheduler and reassignment are
//! offered to GraphQL as [`Operations`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::future::BoxFuture;
use idgraph_crawler::{ClientStats, Crawler, Source};
use idgraph_graph::{reassign, Graph};
use idgraph_graphql::{Announced, Metrics, Operations, ReassignOutcome, ReassignRequest, ScheduleStatus, Scope};

use crate::app::confirm::Confirmer;
use crate::app::observe::{ConfirmObserver, CrawlObserver, RunKind, RunObserver};
use crate::app::reassign::Jobs;
use crate::app::refresher::Refresher;
use crate::app::scheduler::Scheduler;

/// The GraphQL schema in SDL (`idgraph schema`).
pub fn sdl() -> String {
    idgraph_graphql::sdl()
}

/// The server's metrics, fed by crawls and scheduled runs.
pub struct MetricsObserver(pub Arc<Metrics>);

impl CrawlObserver for MetricsObserver {
    fn page(&self, _source: Source, records: usize, _stats: &ClientStats) {
        self.0.crawl_pages.fetch_add(1, Ordering::Relaxed);
        self.0.crawl_records.fetch_add(records as u64, Ordering::Relaxed);
    }

    fn crawling(&self, on: bool, stats: &ClientStats) {
        self.0.crawling.store(on as i64, Ordering::Relaxed);
        self.0.crawl_requests.store(stats.requests.load(Ordering::Relaxed), Ordering::Relaxed);
        self.0.crawl_rate_limited.store(stats.rate_limited.load(Ordering::Relaxed), Ordering::Relaxed);
        self.0.crawl_retries.store(stats.retries.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn queue_depth(&self, pages: usize) {
        self.0.crawl_queue_depth.store(pages as i64, Ordering::Relaxed);
    }
}

impl RunObserver for MetricsObserver {
    fn next_runs(&self, full_at_ms: i64, agents_at_ms: i64) {
        self.0.next_crawl_s.store(full_at_ms / 1000, Ordering::Relaxed);
        self.0.next_agents_refresh_s.store(agents_at_ms / 1000, Ordering::Relaxed);
    }

    fn run_finished(&self, kind: RunKind, ok: bool) {
        let m = &self.0;
        match (kind, ok) {
            (RunKind::Full, true) => {
                m.crawls_ok.fetch_add(1, Ordering::Relaxed);
                m.last_crawl_success_s.store(idgraph_graph::now_ms() / 1000, Ordering::Relaxed);
            }
            (RunKind::Full, false) => {
                m.crawls_failed.fetch_add(1, Ordering::Relaxed);
            }
            (RunKind::Agents, true) => {
                m.agent_refreshes_ok.fetch_add(1, Ordering::Relaxed);
            }
            (RunKind::Agents, false) => {
                m.agent_refreshes_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl ConfirmObserver for MetricsObserver {
    fn confirmed(&self, reads: usize, applied: usize, waiting: usize) {
        self.0.webhooks_confirmed.fetch_add(reads as u64, Ordering::Relaxed);
        self.0.webhooks_applied.fetch_add(applied as u64, Ordering::Relaxed);
        self.0.webhook_queue_depth.store(waiting as i64, Ordering::Relaxed);
    }
}

/// The scheduler and reassignment, as GraphQL reaches them.
pub struct SchedulerOps {
    pub scheduler: Arc<Scheduler>,
    pub graph: Arc<Graph>,
    pub crawler: Crawler,
    pub refresher: Option<Arc<Refresher>>,
    pub confirmer: Arc<Confirmer>,
    pub jobs: Arc<Jobs>,
    pub cases: Arc<crate::app::cases::Cases>,
}

fn scope(kind: RunKind) -> Scope {
    match kind {
        RunKind::Full => Scope::Full,
        RunKind::Agents => Scope::Agents,
    }
}

impl Operations for SchedulerOps {
    fn projected_cycle_seconds(&self, contacts: usize) -> Option<f64> {
        self.refresher.as_ref().map(|r| r.projected_cycle_seconds(contacts))
    }

    fn give_back_memory(&self) {
        crate::app::pipeline::give_back_memory();
    }

    fn last_cycle_seconds(&self) -> Option<f64> {
        self.refresher.as_ref().and_then(|r| r.last_cycle_seconds())
    }

    fn schedule(&self) -> ScheduleStatus {
        let s = self.scheduler.status();
        ScheduleStatus {
            crawling: s.running.is_some(),
            crawling_scope: s.running.map(scope),
            next_crawl_at_ms: s.next_full_at_ms,
            next_agents_at_ms: s.next_agents_at_ms,
            last_result: s.last_result,
            last_error: s.last_error,
            last_finished_at_ms: s.last_finished_at_ms,
        }
    }

    fn trigger(&self, scope: Scope) -> bool {
        self.scheduler.trigger(match scope {
            Scope::Full => RunKind::Full,
            Scope::Agents => RunKind::Agents,
        })
    }

    fn reassign(&self, req: ReassignRequest) -> BoxFuture<'static, Result<ReassignOutcome, String>> {
        let (graph, jobs) = (self.graph.clone(), self.jobs.clone());
        Box::pin(async move {
            if req.dry_run {
                let ix = graph.read();
                reassign::check_source(&ix, req.from_agent, req.force).map_err(|e| e.to_string())?;
                let moves = reassign::plan(&ix, req.from_agent, &req.to_agents, None).map_err(|e| e.to_string())?;
                return Ok(ReassignOutcome { dry_run: true, moves, ..Default::default() });
            }
            // Planned and stored now, carried out in the background: the answer names the job.
            let job = jobs.submit(req.from_agent, req.to_agents, req.force).map_err(|e| e.to_string())?;
            let moves = job
                .moves
                .iter()
                .map(|m| reassign::Move { contact_id: m.contact_id, from: job.from, to: m.to })
                .collect();
            Ok(ReassignOutcome { dry_run: false, moves, job: Some(job.id), ..Default::default() })
        })
    }

    fn reassignment(&self, id: u64) -> Option<reassign::Job> {
        self.jobs.get(id)
    }

    fn cases(&self) -> Option<Arc<dyn idgraph_cases::Desk>> {
        Some(self.cases.clone())
    }

    fn announce(&self, contact_ids: &[u64]) -> Result<Announced, String> {
        let a = self.confirmer.announce(contact_ids).map_err(|e| format!("{e:#}"))?;
        Ok(Announced { queued: a.queued, already_queued: a.already_queued, queue_len: a.queue_len })
    }
}
