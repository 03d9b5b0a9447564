//! The reindex scheduler: an agents-only refresh every few minutes, a full reindex every few hours
//! (or on a cron expression), manual triggers, never two runs at once. What a run does is a
//! [`Runner`]'s business (the real one crawls Drift through the pipeline); the scheduler only
//! decides when, on tokio's clock, so its tests run on a paused one.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures::future::BoxFuture;
use idgraph_crawler::Crawler;
use idgraph_graph::{now_ms, Graph, ShrinkGuard};
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::app::observe::{CrawlObserver, RunKind, RunObserver};
use crate::app::pipeline;

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
        // The usual 5 fields (minute hour day month weekday) are read with the seconds at 0.
        let expr = if s.split_whitespace().count() == 5 { format!("0 {}", s.trim()) } else { s.to_string() };
        cron::Schedule::from_str(&expr).map(|c| FullSchedule::Cron(Box::new(c))).map_err(|e| {
            format!(
                "{s:?} is neither a duration (6h) nor a cron expression (5 fields, `0 */6 * * *`, or 6 with seconds first): {e}"
            )
        })
    }
}

impl FullSchedule {
    /// How long from now until the next full reindex.
    fn next_delay(&self, jitter: f64) -> Duration {
        match self {
            FullSchedule::Every(d) => jittered(*d, jitter),
            FullSchedule::Cron(c) => c
                .upcoming(chrono::Utc)
                .next()
                .map(|t| Duration::from_millis((t.timestamp_millis() - now_ms()).max(0) as u64))
                .unwrap_or(Duration::from_secs(6 * 3600)),
        }
    }
}

fn jittered(d: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return d;
    }
    let j = rand::rng().random_range(-jitter..=jitter);
    Duration::from_secs_f64((d.as_secs_f64() * (1.0 + j)).max(1.0))
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub full: FullSchedule,
    pub agents_every: Duration,
    /// How often the served index is built again from the store (`None`: never): see
    /// [`Graph::rebuild_index`](idgraph_graph::Graph::rebuild_index).
    pub rebuild_every: Option<Duration>,
    /// Spread of each interval, as a fraction (0.1 = ±10%), so that many servers do not crawl
    /// in step.
    pub jitter: f64,
}

/// What the scheduler runs.
pub trait Runner: Send + Sync + 'static {
    /// Runs a full reindex or an agents refresh; the message says what it did.
    fn run(&self, kind: RunKind) -> BoxFuture<'static, Result<String>>;
    /// Whether an index is served: until the first crawl succeeds, a failed one is retried soon
    /// (with backoff) rather than at the next scheduled run.
    fn ready(&self) -> bool {
        true
    }
}

/// `1 change`, `2 changes`.
pub fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The first retry of a failed first crawl, and the longest wait between retries.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// How long to wait before retrying a first crawl that failed `failures` times in a row.
fn retry_after(failures: u32) -> Duration {
    FIRST_RETRY.saturating_mul(1u32 << failures.min(10)).min(LONGEST_RETRY)
}

/// The real runs: the pipeline against Drift.
pub struct PipelineRunner {
    pub graph: Arc<Graph>,
    pub crawler: Crawler,
    pub observer: Arc<dyn CrawlObserver>,
    pub guard: ShrinkGuard,
    pub incremental: bool,
}

impl Runner for PipelineRunner {
    fn ready(&self) -> bool {
        self.graph.ready()
    }

    fn run(&self, kind: RunKind) -> BoxFuture<'static, Result<String>> {
        let (graph, crawler, observer) = (self.graph.clone(), self.crawler.clone(), self.observer.clone());
        let (guard, incremental) = (self.guard, self.incremental);
        Box::pin(async move {
            match kind {
                RunKind::Full => {
                    let r = pipeline::reindex(&graph, &crawler, observer.as_ref(), guard, incremental).await?;
                    Ok(format!(
                        "full reindex: generation {} ({} contacts, {} requests, {})",
                        r.generation,
                        r.summary.contacts,
                        r.summary.requests,
                        plural(r.changes.len(), "change")
                    ))
                }
                RunKind::Agents => {
                    let c = pipeline::refresh_agents(&graph, &crawler, guard).await?;
                    Ok(format!("agents refresh: {}", plural(c.len(), "change")))
                }
            }
        })
    }
}

/// The scheduler's state, for `indexStatus` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub running: Option<RunKind>,
    pub next_full_at_ms: Option<i64>,
    pub next_agents_at_ms: Option<i64>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_finished_at_ms: Option<i64>,
    /// Runs done so far, successful or not.
    pub runs: u64,
}

pub struct Scheduler {
    runner: Arc<dyn Runner>,
    observer: Arc<dyn RunObserver>,
    cfg: ScheduleConfig,
    status: Mutex<Status>,
    queued: Mutex<HashSet<RunKind>>,
    trigger_tx: mpsc::Sender<RunKind>,
    /// Held by every run, and by whatever else must not overlap one (reassignments).
    exclusive: tokio::sync::Mutex<()>,
}

impl Scheduler {
    /// Starts the loop. `full_now` runs a full reindex first (no index yet).
    pub fn start(
        runner: Arc<dyn Runner>,
        observer: Arc<dyn RunObserver>,
        cfg: ScheduleConfig,
        full_now: bool,
    ) -> Arc<Scheduler> {
        let (trigger_tx, trigger_rx) = mpsc::channel(4);
        let s = Arc::new(Scheduler {
            runner,
            observer,
            cfg,
            status: Mutex::new(Status::default()),
            queued: Mutex::new(HashSet::new()),
            trigger_tx,
            exclusive: tokio::sync::Mutex::new(()),
        });
        let me = s.clone();
        tokio::spawn(async move { me.run_loop(trigger_rx, full_now).await });
        s
    }

    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    /// Asks for a run. A trigger while one of that kind is already queued is refused (false): it
    /// is queued once, and runs after the current run ends.
    pub fn trigger(&self, kind: RunKind) -> bool {
        if !self.queued.lock().insert(kind) {
            return false;
        }
        if self.trigger_tx.try_send(kind).is_err() {
            self.queued.lock().remove(&kind);
            return false;
        }
        true
    }

    /// Waits until no run is under way, and keeps runs from starting while the guard lives.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.exclusive.lock().await
    }

    /// Whether a run or a reassignment holds the writer's turn now: background work (the
    /// refresher) waits while it does.
    pub fn busy(&self) -> bool {
        self.status().running.is_some() || self.exclusive.try_lock().is_err()
    }

    async fn run_loop(self: Arc<Self>, mut triggers: mpsc::Receiver<RunKind>, full_now: bool) {
        let now = Instant::now();
        let mut next_full = if full_now { now } else { now + self.cfg.full.next_delay(self.cfg.jitter) };
        let mut next_agents = now + jittered(self.cfg.agents_every, self.cfg.jitter);
        let mut failures = 0u32;
        loop {
            self.set_next(next_full, next_agents);
            let due = next_full.min(next_agents);
            let kind = tokio::select! {
                biased;
                t = triggers.recv() => match t {
                    Some(k) => k,
                    None => return,
                },
                _ = tokio::time::sleep_until(due) => {
                    if Instant::now() >= next_full { RunKind::Full } else { RunKind::Agents }
                }
            };
            self.queued.lock().remove(&kind);
            // With no index yet, there is nothing to refresh agents in: crawl instead.
            let kind = if self.runner.ready() { kind } else { RunKind::Full };
            let ok = self.run(kind).await;
            let now = Instant::now();
            // A full reindex refreshes agents too.
            next_agents = now + jittered(self.cfg.agents_every, self.cfg.jitter);
            if kind == RunKind::Full {
                if ok || self.runner.ready() {
                    failures = 0;
                    next_full = now + self.cfg.full.next_delay(self.cfg.jitter);
                } else {
                    // A first crawl that failed: no index is served, so try again soon.
                    let wait = retry_after(failures);
                    failures += 1;
                    tracing::warn!(retry_in = %humantime::format_duration(wait), "no index yet: the first crawl is retried");
                    next_full = now + wait;
                    next_agents = next_full + Duration::from_secs(1);
                }
            }
        }
    }

    fn set_next(&self, full: Instant, agents: Instant) {
        let wall = |t: Instant| now_ms() + t.saturating_duration_since(Instant::now()).as_millis() as i64;
        let (f, a) = (wall(full), wall(agents));
        {
            let mut st = self.status.lock();
            st.next_full_at_ms = Some(f);
            st.next_agents_at_ms = Some(a);
        }
        self.observer.next_runs(f, a);
    }

    /// Runs one; whether it succeeded.
    async fn run(&self, kind: RunKind) -> bool {
        let _exclusive = self.exclusive.lock().await;
        self.status.lock().running = Some(kind);
        let result = self.runner.run(kind).await;
        let mut st = self.status.lock();
        st.running = None;
        st.runs += 1;
        st.last_finished_at_ms = Some(now_ms());
        match result {
            Ok(msg) => {
                tracing::info!("{msg}");
                st.last_result = Some(msg);
                st.last_error = None;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if self.runner.ready() {
                    tracing::error!(error = %msg, ?kind, "scheduled run failed; the current index is still served");
                } else {
                    tracing::error!(error = %msg, ?kind, "the crawl failed: no index yet (/readyz answers 503 until one succeeds)");
                }
                st.last_error = Some(msg);
            }
        }
        let ok = st.last_error.is_none();
        drop(st);
        self.observer.run_finished(kind, ok);
        ok
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::app::observe::Quiet;

    /// A runner that takes `takes` of tokio's time, records what ran when, and how many ran at
    /// once; it fails while `fail` is set.
    #[derive(Default)]
    struct Fake {
        takes: Duration,
        ran: Mutex<Vec<(RunKind, Duration)>>,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
        /// No index yet (until a run succeeds).
        unready: std::sync::atomic::AtomicBool,
        /// Runs that fail before one succeeds.
        fail_first: AtomicUsize,
        started: Mutex<Option<Instant>>,
    }

    impl Runner for Arc<Fake> {
        fn ready(&self) -> bool {
            !self.unready.load(Ordering::SeqCst)
        }

        fn run(&self, kind: RunKind) -> BoxFuture<'static, Result<String>> {
            let me = self.clone();
            Box::pin(async move {
                let at = me.started.lock().map(|s| s.elapsed()).unwrap_or_default();
                me.ran.lock().push((kind, at));
                let n = me.running.fetch_add(1, Ordering::SeqCst) + 1;
                me.most_at_once.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(me.takes).await;
                me.running.fetch_sub(1, Ordering::SeqCst);
                if me.fail.load(Ordering::SeqCst) {
                    anyhow::bail!("Drift said no");
                }
                if me.fail_first.load(Ordering::SeqCst) > 0 {
                    me.fail_first.fetch_sub(1, Ordering::SeqCst);
                    anyhow::bail!("cannot reach http://127.0.0.1:9/: connection refused");
                }
                me.unready.store(false, Ordering::SeqCst);
                Ok(format!("{kind:?} done"))
            })
        }
    }

    fn cfg() -> ScheduleConfig {
        ScheduleConfig {
            full: FullSchedule::Every(Duration::from_secs(3600)),
            agents_every: Duration::from_secs(300),
            rebuild_every: None,
            jitter: 0.0,
        }
    }

    fn start(fake: &Arc<Fake>, full_now: bool) -> Arc<Scheduler> {
        *fake.started.lock() = Some(Instant::now());
        Scheduler::start(Arc::new(fake.clone()), Arc::new(Quiet), cfg(), full_now)
    }

    #[test]
    fn cron_takes_five_fields_or_six() {
        let five: FullSchedule = "0 */6 * * *".parse().unwrap();
        let six: FullSchedule = "0 0 */6 * * *".parse().unwrap();
        match (five, six) {
            (FullSchedule::Cron(a), FullSchedule::Cron(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("both are cron expressions"),
        }
        let err = "every tuesday".parse::<FullSchedule>().unwrap_err();
        assert!(err.contains("5 fields"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn schedules_fire_when_due() {
        let fake = Arc::new(Fake { takes: Duration::from_secs(10), ..Fake::default() });
        let _s = start(&fake, true);
        tokio::time::sleep(Duration::from_secs(3600 + 700)).await;
        let ran: Vec<(RunKind, u64)> = fake.ran.lock().iter().map(|(k, t)| (*k, t.as_secs())).collect();
        // A full run at once (no index), agents every 5 minutes after each run ends, the next
        // full run an hour after the first ended.
        assert_eq!(ran[0], (RunKind::Full, 0));
        assert_eq!(ran[1], (RunKind::Agents, 310));
        assert_eq!(ran[2], (RunKind::Agents, 620));
        assert!(ran.contains(&(RunKind::Full, 3610)), "{ran:?}");
        assert_eq!(ran.iter().filter(|(k, _)| *k == RunKind::Full).count(), 2, "{ran:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn runs_never_overlap_and_a_trigger_during_a_run_is_queued_once() {
        let fake = Arc::new(Fake { takes: Duration::from_secs(600), ..Fake::default() });
        let s = start(&fake, true);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(s.status().running, Some(RunKind::Full));
        assert!(s.trigger(RunKind::Full), "queued behind the running one");
        assert!(!s.trigger(RunKind::Full), "already queued: refused");
        assert!(s.trigger(RunKind::Agents));
        tokio::time::sleep(Duration::from_secs(2000)).await;
        let ran: Vec<RunKind> = fake.ran.lock().iter().map(|(k, _)| *k).collect();
        assert_eq!(&ran[..3], &[RunKind::Full, RunKind::Full, RunKind::Agents], "{ran:?}");
        assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 1, "never two runs at once");
        assert!(s.trigger(RunKind::Full), "once run, it can be asked for again");
    }

    /// A first crawl that fails (Drift unreachable) is retried within seconds, then minutes,
    /// not at the next full run hours later; agents runs wait for an index.
    #[tokio::test(start_paused = true)]
    async fn a_failed_first_crawl_is_retried_with_backoff() {
        let fake = Arc::new(Fake { takes: Duration::from_secs(1), ..Fake::default() });
        fake.unready.store(true, Ordering::SeqCst);
        fake.fail_first.store(4, Ordering::SeqCst);
        let s = start(&fake, true);
        tokio::time::sleep(Duration::from_secs(120)).await;
        let ran: Vec<(RunKind, u64)> = fake.ran.lock().iter().map(|(k, t)| (*k, t.as_secs())).collect();
        // Ends at 1, 7, 18, 39; retries 5, 10, 20, 40 s after each end.
        assert_eq!(
            ran,
            vec![(RunKind::Full, 0), (RunKind::Full, 6), (RunKind::Full, 17), (RunKind::Full, 38), (RunKind::Full, 79)]
        );
        assert!(s.status().last_error.is_none(), "the fifth try succeeded");
        assert!(fake.ready());
        assert_eq!(retry_after(20), LONGEST_RETRY, "at most minutes apart");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_run_is_reported_and_the_next_one_clears_it() {
        let fake = Arc::new(Fake { takes: Duration::from_secs(1), ..Fake::default() });
        fake.fail.store(true, Ordering::SeqCst);
        let s = start(&fake, true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let st = s.status();
        assert_eq!(st.last_error.as_deref(), Some("Drift said no"));
        assert_eq!(st.runs, 1);
        fake.fail.store(false, Ordering::SeqCst);
        assert!(s.trigger(RunKind::Agents));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let st = s.status();
        assert_eq!((st.last_error, st.last_result.as_deref()), (None, Some("Agents done")));
    }
}
