//! Many orgs in one server: the registry of per-org pipelines.
//!
//! Each org runs on a thread of its own with its own Tokio runtime: its store, graph, crawler
//! and budget, scheduler, refresher, webhook confirmer, reassignment jobs and cases. Nothing an
//! org does (a crawl, a retry storm, a hung Drift, a corrupt store) reaches another's threads,
//! and removing an org shuts its runtime down, which ends every task it started. The org's
//! stored index is served as soon as its store opens; its pipeline starts after its
//! credentials are checked, and an org whose check fails is still served, read-only, with the
//! reason in `orgs` and `indexStatus`.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use idgraph_crawler::Crawler;
use idgraph_graph::{Graph, ShrinkGuard};
use idgraph_graphql::{
    router, Directory, Metrics, Operations, OrgDirectory, OrgRouters, OrgView, ReassignOutcome, ReassignRequest,
    ScheduleStatus, Scope, ServerConfig, WebhookConfig,
};
use parking_lot::Mutex;

use crate::app::settings::Settings;

/// One org's settings as far as a reload compares them: a change restarts the org.
fn fingerprint(s: &Settings) -> String {
    use sha2::Digest;
    let secrets: Vec<String> = [&s.drift.token, &s.drift.scim_token, &s.server.webhook_token]
        .iter()
        .map(|t| t.as_ref().map(|t| hex::encode(sha2::Sha256::digest(t.expose().as_bytes()))).unwrap_or_default())
        .collect();
    format!(
        "{}|{:?}|{:?}|{:?}|{}|{:?}|{}|{}|{}",
        s.drift.drift_url,
        s.drift.scim_url,
        s.drift.budget,
        s.schedule.full,
        s.schedule.agents_every.as_millis(),
        s.schedule.refresh_share,
        s.drift.incremental,
        s.cache_mb,
        secrets.join(",")
    )
}

/// Operations of an org whose pipeline is not running (starting, or failed): its stored index
/// is served, nothing can be triggered, and the schedule's last error says why.
struct Idle(String);

impl Operations for Idle {
    fn schedule(&self) -> ScheduleStatus {
        ScheduleStatus { last_error: Some(self.0.clone()), ..ScheduleStatus::default() }
    }
    fn trigger(&self, _: Scope) -> bool {
        false
    }
    fn reassign(&self, _: ReassignRequest) -> BoxFuture<'static, Result<ReassignOutcome, String>> {
        let why = self.0.clone();
        Box::pin(async move { Err(format!("this org's pipeline is not running: {why}")) })
    }
}

struct Running {
    fingerprint: String,
    graph: Option<Arc<Graph>>,
    ops: Option<Arc<dyn Operations>>,
    error: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
}

/// The orgs of a server and their routers.
pub struct Registry {
    routers: Arc<OrgRouters>,
    orgs: Mutex<BTreeMap<String, Running>>,
    /// What every org's router shares (access, CORS, backups).
    template: ServerConfig,
    read_only: bool,
    force: bool,
    /// Reads the configuration again (a reload).
    load: Box<dyn Fn() -> Result<Vec<Settings>> + Send + Sync>,
    me: Weak<Registry>,
    reloading: tokio::sync::Mutex<()>,
}

struct WeakDirectory(Weak<Registry>);

impl OrgDirectory for WeakDirectory {
    fn orgs(&self) -> Vec<OrgView> {
        self.0.upgrade().map(|r| r.views()).unwrap_or_default()
    }
    fn reload(&self) -> BoxFuture<'static, Result<String, String>> {
        let me = self.0.clone();
        Box::pin(async move {
            let Some(r) = me.upgrade() else {
                return Err("the server is stopping".to_string());
            };
            r.reload().await.map(|d| d.to_string()).map_err(|e| format!("{e:#}"))
        })
    }
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        write!(
            f,
            "added: {}; removed: {}; restarted: {}",
            list(&self.added),
            list(&self.removed),
            list(&self.restarted)
        )
    }
}

impl Registry {
    pub fn new(
        template: ServerConfig,
        read_only: bool,
        force: bool,
        load: impl Fn() -> Result<Vec<Settings>> + Send + Sync + 'static,
    ) -> Arc<Registry> {
        Arc::new_cyclic(|me| Registry {
            routers: Arc::new(OrgRouters::new()),
            orgs: Mutex::new(BTreeMap::new()),
            template,
            read_only,
            force,
            load: Box::new(load),
            me: me.clone(),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    pub fn routers(&self) -> Arc<OrgRouters> {
        self.routers.clone()
    }

    fn views(&self) -> Vec<OrgView> {
        self.orgs
            .lock()
            .iter()
            .map(|(name, r)| OrgView {
                name: name.clone(),
                graph: r.graph.clone(),
                ops: r.ops.clone(),
                error: r.error.clone(),
            })
            .collect()
    }

    /// The org's router with these operations.
    fn install(
        &self,
        name: &str,
        graph: Arc<Graph>,
        ops: Arc<dyn Operations>,
        metrics: &Arc<Metrics>,
        settings: &Settings,
        error: Option<String>,
    ) {
        let cfg = ServerConfig {
            org: Some(name.to_string()),
            orgs: Some(Directory(Arc::new(WeakDirectory(self.me.clone())))),
            webhook: settings.server.webhook_token.as_ref().map(|t| WebhookConfig::new(t.expose())),
            ..self.template.clone()
        };
        let r = router(graph.clone(), ops.clone(), metrics.clone(), cfg);
        self.routers.insert(name, r, Some(graph.clone()));
        if let Some(run) = self.orgs.lock().get_mut(name) {
            run.graph = Some(graph);
            run.ops = Some(ops);
            run.error = error;
        }
    }

    fn fail(&self, name: &str, error: String) {
        tracing::warn!(org = name, error = %error, "org failing: its stored index (if any) is served read-only");
        if let Some(run) = self.orgs.lock().get_mut(name) {
            run.ops = Some(Arc::new(Idle(error.clone())));
            run.error = Some(error);
        }
    }

    /// Starts every org of `all` not running, stops every org running and not in `all`, and
    /// restarts those whose settings changed.
    pub async fn apply(&self, all: Vec<Settings>) -> Reloaded {
        let mut done = Reloaded::default();
        let wanted: BTreeMap<String, Settings> =
            all.into_iter().filter_map(|s| s.org.clone().map(|n| (n, s))).collect();
        let running: Vec<(String, String)> =
            self.orgs.lock().iter().map(|(n, r)| (n.clone(), r.fingerprint.clone())).collect();
        for (name, print) in &running {
            match wanted.get(name) {
                None => {
                    self.stop(name).await;
                    done.removed.push(name.clone());
                }
                Some(s) if fingerprint(s) != *print => {
                    self.stop(name).await;
                    done.restarted.push(name.clone());
                }
                Some(_) => {}
            }
        }
        for (name, s) in wanted {
            if !self.orgs.lock().contains_key(&name) {
                if !done.restarted.contains(&name) {
                    done.added.push(name.clone());
                }
                self.start(s);
            }
        }
        done
    }

    /// Reads the configuration again and applies it (SIGHUP, `reloadConfig`). A configuration
    /// that does not load changes nothing.
    pub async fn reload(&self) -> Result<Reloaded> {
        let _one = self.reloading.lock().await;
        let all = (self.load)().context("the configuration was not reloaded")?;
        if all.is_empty() {
            anyhow::bail!("the configuration names no orgs now: a server of several orgs keeps them until it has some");
        }
        let done = self.apply(all).await;
        tracing::info!(%done, "configuration reloaded");
        Ok(done)
    }

    async fn stop(&self, name: &str) {
        self.routers.remove(name);
        let run = self.orgs.lock().remove(name);
        if let Some(mut run) = run {
            if let Some(s) = run.stop.take() {
                let _ = s.send(());
            }
            if let Some(t) = run.thread.take() {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            tracing::info!(org = name, "org stopped");
        }
    }

    /// Stops every org (at the server's stop), flushing each store.
    pub async fn stop_all(&self) {
        let names: Vec<String> = self.orgs.lock().keys().cloned().collect();
        for n in names {
            self.stop(&n).await;
        }
    }

    fn start(&self, s: Settings) {
        let Some(name) = s.org.clone() else { return };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        self.orgs.lock().insert(
            name.clone(),
            Running {
                fingerprint: fingerprint(&s),
                graph: None,
                ops: Some(Arc::new(Idle("starting".into()))),
                error: Some("starting".into()),
                stop: Some(stop_tx),
                thread: None,
            },
        );
        let me = self.me.clone();
        let key = name.clone();
        let (read_only, force) = (self.read_only, self.force);
        let thread = std::thread::Builder::new().name(format!("org-{name}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_keep_alive(super::pipeline::BLOCKING_KEEP_ALIVE)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    if let Some(r) = me.upgrade() {
                        r.fail(&name, format!("cannot start the org's runtime: {e}"));
                    }
                    return;
                }
            };
            let graph = rt.block_on(run_org(me.clone(), name.clone(), s, read_only, force, stop_rx));
            rt.shutdown_timeout(Duration::from_secs(10));
            if let Some(g) = graph {
                if let Err(e) = g.flush() {
                    tracing::error!(org = %name, error = %e, "cannot flush the org's store");
                }
            }
        });
        match thread {
            Ok(t) => {
                if let Some(run) = self.orgs.lock().get_mut(&key) {
                    run.thread = Some(t);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot start an org's thread"),
        }
    }
}

/// One org's life on its own runtime: open its store and serve it, check its credentials,
/// start its pipeline, serve it with the pipeline, run until told to stop. Returns the graph
/// to flush.
async fn run_org(
    me: Weak<Registry>,
    name: String,
    s: Settings,
    read_only: bool,
    force: bool,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<Arc<Graph>> {
    let registry = me.upgrade()?;
    let dir = s.data_dir.clone();
    let cache = org_cache_bytes(&s);
    let opened = tokio::task::spawn_blocking(move || -> Result<Graph> {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Graph::open_with_cache(&dir, cache).with_context(|| format!("cannot open the org's store at {}", dir.display()))
    })
    .await;
    let graph = match opened {
        Ok(Ok(g)) => Arc::new(g),
        Ok(Err(e)) => {
            registry.fail(&name, format!("{e:#}"));
            drop(registry);
            let _ = stop.await;
            return None;
        }
        Err(e) => {
            registry.fail(&name, format!("cannot open the org's store: {e}"));
            return None;
        }
    };
    // One set of metrics for the org: its pipeline feeds them, its router shows them.
    let metrics = Arc::new(Metrics::default());
    registry.install(&name, graph.clone(), Arc::new(Idle("starting".into())), &metrics, &s, Some("starting".into()));
    let started =
        if read_only { Err(anyhow::anyhow!("served read-only")) } else { pipeline(&graph, &s, force, &metrics).await };
    match started {
        Ok(ops) => {
            registry.install(&name, graph.clone(), ops, &metrics, &s, None);
            tracing::info!(org = %name, "org serving, its pipeline running");
        }
        Err(e) => {
            let why = format!("{e:#}");
            registry.install(&name, graph.clone(), Arc::new(Idle(why.clone())), &metrics, &s, Some(why.clone()));
            tracing::warn!(org = %name, error = %why, "org served read-only: its pipeline did not start");
        }
    }
    drop(registry);
    let _ = stop.await;
    Some(graph)
}

/// sled's page cache for one org of many: `cache_mb` when it is set (in the org's section or at
/// the top level), else `ORG_CACHE_BYTES` (lookups never read sled; a small cache serves the
/// in-place writes, and a hundred orgs do not multiply the single-org default).
fn org_cache_bytes(s: &Settings) -> u64 {
    if s.cache_mb == idgraph_graph::store::CACHE_BYTES >> 20 {
        ORG_CACHE_BYTES
    } else {
        s.cache_mb << 20
    }
}

/// Each org's sled page cache unless `cache_mb` says otherwise.
pub const ORG_CACHE_BYTES: u64 = 8 << 20;

/// An org's pipeline: its credentials checked against its store, then the scheduler, refresher,
/// confirmer, reassignment jobs and cases, as `serve` runs them for one org.
async fn pipeline(
    graph: &Arc<Graph>,
    s: &Settings,
    force: bool,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn Operations>> {
    let mut drift = s.drift.clone();
    crate::app::identity::reconcile(graph, &mut drift, force)?;
    let crawler = Crawler::new(drift.crawl_config()?)?;
    crate::app::identity::check_token_org(graph, &crawler, force).await?;
    let run = Pipeline {
        graph: graph.clone(),
        crawler,
        schedule: crate::app::scheduler::ScheduleConfig {
            full: s.schedule.full.clone(),
            agents_every: s.schedule.agents_every,
            rebuild_every: s.schedule.rebuild_every,
            jitter: 0.1,
        },
        incremental: drift.incremental,
        refresh_share: s.schedule.refresh_share,
        cases: s.cases.clone(),
        metrics: metrics.clone(),
    };
    Ok(Arc::new(run.start()?))
}

/// Builds the org's index again from its store every `every` (see `Graph::rebuild_index`), on the
/// blocking pool, then gives the old index's memory back; ends when the org's graph is dropped.
async fn rebuild_now_and_then(graph: std::sync::Weak<Graph>, every: std::time::Duration, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(g) = graph.upgrade() else { return };
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let r = g.rebuild_index();
            crate::app::pipeline::give_back_memory();
            r
        })
        .await;
        match done {
            Ok(Ok(Some(generation))) => {
                metrics.index_rebuilds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    generation,
                    took_ms = started.elapsed().as_millis() as u64,
                    "the index was built again from the store"
                );
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the index could not be built again from the store; the one served is kept")
            }
            Err(e) => tracing::error!(error = %e, "the index rebuild task failed; the index served is kept"),
        }
    }
}

/// What one org's pipeline runs with.
pub struct Pipeline {
    pub graph: Arc<Graph>,
    pub crawler: Crawler,
    pub schedule: crate::app::scheduler::ScheduleConfig,
    pub incremental: bool,
    pub refresh_share: f64,
    pub cases: crate::app::cases::CaseConfig,
    pub metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Starts the scheduler (crawling at once when there is no index, or an older one is
    /// served), the refresher, the confirmer, the reassignment jobs and the cases. Call inside
    /// the runtime they are to run on.
    pub fn start(self) -> Result<crate::app::http::SchedulerOps> {
        use crate::app::observe::CrawlObserver;
        let graph = self.graph;
        let first_crawl = graph.info().is_none() || graph.fallback().is_some();
        if let Some(every) = self.schedule.rebuild_every {
            tokio::spawn(rebuild_now_and_then(Arc::downgrade(&graph), every, self.metrics.clone()));
        }
        let observer = Arc::new(crate::app::http::MetricsObserver(self.metrics));
        let runner = crate::app::scheduler::PipelineRunner {
            graph: graph.clone(),
            crawler: self.crawler.clone(),
            observer: observer.clone() as Arc<dyn CrawlObserver>,
            guard: ShrinkGuard::default(),
            incremental: self.incremental,
        };
        let scheduler =
            crate::app::scheduler::Scheduler::start(Arc::new(runner), observer.clone(), self.schedule, first_crawl);
        let refresher = (self.refresh_share > 0.0)
            .then(|| {
                crate::app::refresher::Refresher::start(
                    graph.clone(),
                    self.crawler.clone(),
                    scheduler.clone(),
                    self.refresh_share,
                )
            })
            .transpose()?;
        let confirmer = crate::app::confirm::Confirmer::start(graph.clone(), self.crawler.clone(), observer)?;
        let jobs = crate::app::reassign::Jobs::open(graph.clone(), self.crawler.clone(), Some(scheduler.clone()))?;
        jobs.spawn();
        let cases =
            crate::app::cases::Cases::open(graph.clone(), Some(jobs.clone()), Some(self.crawler.clone()), self.cases)?;
        cases.spawn();
        Ok(crate::app::http::SchedulerOps {
            scheduler,
            graph,
            crawler: self.crawler,
            refresher,
            confirmer,
            jobs,
            cases,
        })
    }
}
