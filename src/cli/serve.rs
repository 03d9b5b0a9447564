//! `idgraph serve` and `idgraph demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use drift_sim::{Profile, RateLimit, Sim, SimConfig, WebhookConfig as SimWebhooks};
use idgraph_crawler::{BudgetConfig, CrawlConfig, Crawler, Credentials, Secret};
use idgraph_graph::ShrinkGuard;
use idgraph_graphql::{router, Metrics, ServerConfig, WebhookConfig};
use rand::Rng;

use super::common::{forget_server, note_server, open_graph, open_graph_to_read};
use super::progress::Progress;
use super::{DriftArgs, StoreArgs};
use crate::app::pipeline;
use crate::app::scheduler::{FullSchedule, ScheduleConfig};
use crate::app::settings::{duration, Env, Flags, Settings};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to serve on (default 127.0.0.1:8080) [env: IDGRAPH_LISTEN].
    #[arg(long)]
    pub listen: Option<String>,
    #[command(flatten)]
    pub drift: DriftArgs,
    /// Bearer token for GraphQL queries [env: IDGRAPH_READ_TOKEN].
    #[arg(long)]
    pub read_token: Option<String>,
    /// Bearer token for GraphQL queries and mutations (reindex, reassignContacts)
    /// [env: IDGRAPH_ADMIN_TOKEN].
    #[arg(long)]
    pub admin_token: Option<String>,
    /// The verification token Drift sends with webhooks; webhooks are off without it
    /// [env: IDGRAPH_WEBHOOK_TOKEN].
    #[arg(long)]
    pub webhook_token: Option<String>,
    /// Full reindex schedule: a duration (`6h`) or a cron expression with seconds
    /// [env: IDGRAPH_FULL_EVERY].
    #[arg(long)]
    pub full_every: Option<String>,
    /// Agents-only refresh interval (default 5m) [env: IDGRAPH_AGENTS_EVERY].
    #[arg(long)]
    pub agents_every: Option<String>,
    /// How often the index is derived again from the store while serving, as a restart would
    /// (default `off`; it does not lower resident memory) [env: IDGRAPH_REBUILD_EVERY].
    #[arg(long)]
    pub rebuild_every: Option<String>,
    /// The share of the rate budget the refresher spends re-reading known contacts between full
    /// crawls (default 0.5; 0 turns it off) [env: IDGRAPH_REFRESH_SHARE].
    #[arg(long)]
    pub refresh_share: Option<f64>,
    /// Allow browser pages from this origin (CORS is off without it). Repeatable
    /// [env: IDGRAPH_CORS_ORIGINS, comma-separated].
    #[arg(long = "cors-origin", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Where backups asked of this server (`idgraph backup --server ... --to NAME`) are written,
    /// each into a new directory by a plain name; without it the server refuses them
    /// [env: IDGRAPH_BACKUP_DIR].
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// Serve GraphQL without tokens (anyone who can reach the port can read and reindex).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Keep no access log (for measuring what it costs; never for a server people use).
    #[arg(long)]
    pub no_access_log: bool,
    /// Serve the stored index as it is: no Drift credentials needed, never crawls or refreshes.
    #[arg(long)]
    pub read_only: bool,
    /// Serve and crawl this data directory even though it holds another org (the Drift URL given
    /// differs from the one it was crawled from).
    #[arg(long)]
    pub force: bool,
}

impl ServeArgs {
    fn flags(&self) -> Flags {
        Flags {
            listen: self.listen.clone(),
            read_token: self.read_token.clone(),
            admin_token: self.admin_token.clone(),
            webhook_token: self.webhook_token.clone(),
            full_every: self.full_every.clone(),
            agents_every: self.agents_every.clone(),
            rebuild_every: self.rebuild_every.clone(),
            refresh_share: self.refresh_share,
            cors_origins: self.cors_origins.clone(),
            backup_dir: self.backup_dir.clone(),
            ..self.drift.flags(self.store.flags())
        }
    }
}

pub async fn serve(a: ServeArgs) -> Result<()> {
    // A server runs for weeks: freed pages go back to the system as they are freed, not when
    // the thread that held them next asks for memory (see `benches/soak.sh`).
    pipeline::purge_freed_memory_at_once();
    let settings = Settings::load(&a.flags(), &Env::from_process())?;
    if !settings.orgs.is_empty() {
        return serve_orgs(a, settings).await;
    }
    let flagged: Vec<&str> = [
        ("--token", a.drift.token.is_some()),
        ("--scim-token", a.drift.scim_token.is_some()),
        ("--read-token", a.read_token.is_some()),
        ("--admin-token", a.admin_token.is_some()),
        ("--webhook-token", a.webhook_token.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, given)| given.then_some(f))
    .collect();
    if !flagged.is_empty() {
        tracing::warn!(
            flags = %flagged.join(", "),
            "secrets given as flags can be read by every local user (ps, /proc/PID/cmdline): give them as files (token_file, read_token_file, ...; IDGRAPH_*_FILE) or in the environment"
        );
    }
    let srv = &settings.server;
    let schedule = ScheduleConfig {
        full: settings.schedule.full.clone(),
        agents_every: settings.schedule.agents_every,
        rebuild_every: settings.schedule.rebuild_every,
        jitter: 0.1,
    };
    idgraph_graphql::check_cors_origins(&srv.cors_origins).map_err(anyhow::Error::msg)?;
    let webhook = srv.webhook_token.as_ref().map(|t| WebhookConfig::new(t.expose()));
    let hold = "stop the other idgraph first: one server holds a data directory";
    if !a.read_only {
        // Credentials first: a server that cannot crawl creates no data directory.
        settings.drift.crawl_config()?;
    }
    crate::app::access::check_not_open(srv, &settings.data_dir, a.insecure_no_auth)?;
    let graph = Arc::new(if a.read_only {
        open_graph_to_read(&settings.data_dir, hold)?
    } else {
        super::common::open_graph_with_cache(&settings.data_dir, hold, true, settings.cache_mb << 20)?
    });
    let access = crate::app::access::build(srv, &settings.data_dir, a.insecure_no_auth, !a.no_access_log)?;
    let server_cfg = ServerConfig {
        access: Some(access.clone()),
        cors_origins: srv.cors_origins.clone(),
        webhook,
        backup_dir: srv.backup_dir.clone(),
        ..ServerConfig::default()
    };

    let listener =
        tokio::net::TcpListener::bind(&srv.listen).await.with_context(|| format!("cannot listen on {}", srv.listen))?;
    if a.read_only {
        if graph.info().is_none() {
            anyhow::bail!("--read-only serves a stored index, and {} holds none yet", settings.data_dir.display());
        }
        crate::app::access::watch(access.clone());
        let r = serve_read_only(graph, &settings.data_dir, server_cfg, listener).await;
        close_access_log(&access);
        return r;
    }
    let mut drift = settings.drift.clone();
    crate::app::identity::reconcile(&graph, &mut drift, a.force)?;
    let crawler = Crawler::new(drift.crawl_config()?)?;
    crate::app::identity::check_token_org(&graph, &crawler, a.force).await?;
    let run = Run {
        graph,
        data_dir: settings.data_dir.clone(),
        crawler,
        schedule,
        incremental: drift.incremental,
        refresh_share: settings.schedule.refresh_share,
        server_cfg,
        cases: settings.cases.clone(),
    };
    crate::app::access::watch(access.clone());
    let r = run_server(run, listener).await;
    close_access_log(&access);
    r
}

/// A server of several orgs (`[[org]]`): each org's pipeline on its own runtime, its routes
/// under `/orgs/NAME/` (and on `/graphql` with `X-Idgraph-Org`); SIGHUP reads the configuration
/// again. `--org` serves that org alone.
async fn serve_orgs(a: ServeArgs, base: Settings) -> Result<()> {
    let srv = &base.server;
    idgraph_graphql::check_cors_origins(&srv.cors_origins).map_err(anyhow::Error::msg)?;
    crate::app::access::check_not_open(srv, &base.base_dir, a.insecure_no_auth)?;
    std::fs::create_dir_all(&base.base_dir)
        .with_context(|| format!("cannot create the data directory {}", base.base_dir.display()))?;
    let access = crate::app::access::build(srv, &base.base_dir, a.insecure_no_auth, !a.no_access_log)?;
    let template = ServerConfig {
        access: Some(access.clone()),
        cors_origins: srv.cors_origins.clone(),
        backup_dir: srv.backup_dir.clone(),
        ..ServerConfig::default()
    };
    let only = a.store.org.clone();
    let flags = Flags { org: None, ..a.flags() };
    let load = move || -> Result<Vec<Settings>> {
        let all = Settings::load_orgs(&flags, &Env::from_process())?;
        Ok(all.into_iter().filter(|s| only.is_none() || s.org == only).collect())
    };
    let first = load()?;
    if first.is_empty() {
        anyhow::bail!("no org to serve");
    }
    let listener =
        tokio::net::TcpListener::bind(&srv.listen).await.with_context(|| format!("cannot listen on {}", srv.listen))?;
    let registry = crate::app::orgs::Registry::new(template, a.read_only, a.force, load);
    let names: Vec<String> = first.iter().filter_map(|s| s.org.clone()).collect();
    registry.apply(first).await;
    tracing::info!(orgs = %names.join(", "), "serving several orgs: /orgs/NAME/graphql, or /graphql with X-Idgraph-Org");
    crate::app::access::watch(access.clone());
    #[cfg(unix)]
    {
        let r = registry.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                if let Err(e) = r.reload().await {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: the configuration was not reloaded; the orgs serve as before");
                }
            }
        });
    }
    let app = idgraph_graphql::front(registry.routers());
    let r = registry.clone();
    let result = serve_until_stopped(app, listener, &base.base_dir, async move {
        r.stop_all().await;
        Ok(())
    })
    .await;
    close_access_log(&access);
    result
}

/// Writes the access log's last entries and syncs them (at a graceful stop).
fn close_access_log(access: &idgraph_access::Access) {
    if let Some(l) = &access.log {
        l.close();
    }
}

/// Serves a stored index with no scheduler, refresher or Drift credentials.
async fn serve_read_only(
    graph: Arc<idgraph_graph::Graph>,
    data_dir: &std::path::Path,
    server_cfg: ServerConfig,
    listener: tokio::net::TcpListener,
) -> Result<()> {
    let info = graph.info();
    tracing::info!(
        generation = info.as_ref().map(|i| i.generation),
        "serving the stored index read-only: it will not be refreshed"
    );
    let app = router(graph.clone(), Arc::new(idgraph_graphql::NoOperations), Arc::new(Metrics::default()), server_cfg);
    serve_until_stopped(
        app,
        listener,
        data_dir,
        async move { graph.flush().map(|_| ()).context("cannot flush the store") },
    )
    .await
}

/// How long requests in flight may take to finish once a stop is asked for.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves on SIGTERM (what systemd and container runtimes send) or SIGINT (Ctrl-C).
async fn stop_asked() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

/// Serves until SIGTERM or SIGINT, noting the address in the data directory meanwhile; then
/// stops accepting, lets requests in flight finish (within `DRAIN`), flushes the store and
/// returns, so the process exits 0. A crawl under way stops at its last stored page: every page
/// is stored with its checkpoint, and the next run resumes from it.
async fn serve_until_stopped(
    app: axum::Router,
    listener: tokio::net::TcpListener,
    data_dir: &std::path::Path,
    flush: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, "serving GraphQL at /graphql, GraphiQL at / and the audit view at /audit");
    note_server(data_dir, &format!("http://{addr}"));
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server =
        idgraph_graphql::serve_connections(listener, app, idgraph_graphql::ConnLimits::default(), async move {
            let why = stop_asked().await;
            tracing::info!(signal = why, "stopping: no new connections; requests in flight may finish");
            let _ = stopping_tx.send(());
        });
    let served = tokio::select! {
        r = server => r.map_err(anyhow::Error::from),
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!(after = ?DRAIN, "requests still in flight: stopping without them");
            Ok(())
        }
    };
    forget_server(data_dir);
    flush.await?;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// What a server runs with.
struct Run {
    graph: Arc<idgraph_graph::Graph>,
    data_dir: PathBuf,
    crawler: Crawler,
    schedule: ScheduleConfig,
    incremental: bool,
    refresh_share: f64,
    server_cfg: ServerConfig,
    cases: crate::app::cases::CaseConfig,
}

/// Opens the index, starts the scheduler and serves until Ctrl-C.
async fn run_server(run: Run, listener: tokio::net::TcpListener) -> Result<()> {
    let graph = run.graph.clone();
    // No index yet, or a damaged current generation and an older one served: crawl at once.
    match graph.info() {
        Some(i) => tracing::info!(generation = i.generation, contacts = i.contacts, "serving the stored index"),
        None => tracing::info!("no index yet: crawling first (/readyz says 503 until it is done)"),
    }
    let metrics = Arc::new(Metrics::default());
    let ops = crate::app::orgs::Pipeline {
        graph: graph.clone(),
        crawler: run.crawler,
        schedule: run.schedule,
        incremental: run.incremental,
        refresh_share: run.refresh_share,
        cases: run.cases,
        metrics: metrics.clone(),
    }
    .start()?;
    let app = router(graph, Arc::new(ops), metrics, run.server_cfg);
    let g = run.graph.clone();
    serve_until_stopped(
        app,
        listener,
        &run.data_dir,
        async move { g.flush().map(|_| ()).context("cannot flush the store") },
    )
    .await
}

#[derive(Args)]
pub struct DemoArgs {
    /// The port for GraphQL and GraphiQL (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[arg(long, default_value_t = 30_000)]
    contacts: usize,
    #[arg(long, default_value_t = 300)]
    agents: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// `seed` (with a contact listing) or `drift` (discovery through conversations: slower).
    #[arg(long, default_value = "seed")]
    profile: Profile,
    /// Keep the index here (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How often the demo org changes (an agent is deprovisioned every 6 ticks).
    #[arg(long, default_value = "10s")]
    churn_every: String,
    /// Do not change the org while the demo runs.
    #[arg(long)]
    no_churn: bool,
}

const DEMO_DRIFT_TOKEN: &str = "demo-drift-token";
const DEMO_WEBHOOK_TOKEN: &str = "demo-webhook-token";
/// The demo's budget: the real Drift allows about 200 a minute; the demo's simulated org allows
/// more so that the first crawl takes seconds, not minutes.
const DEMO_RATE: &str = "100/s";

pub async fn demo(a: DemoArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{} (is something else there? try --port 8081)", a.port))?;
    let addr = listener.local_addr()?;
    let running = demo_org(&a, addr).await?;
    let (tmp, data_dir) = match &a.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::tempdir().context("cannot make a temporary data directory")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let mut cfg = CrawlConfig::new(running.url(), Credentials::Token(Secret::new(DEMO_DRIFT_TOKEN)));
    cfg.scim_url = Some(running.scim_url());
    cfg.budget = DEMO_RATE.parse::<BudgetConfig>().map_err(anyhow::Error::msg)?;
    let crawler = Crawler::new(cfg)?;
    std::fs::create_dir_all(&data_dir).context("cannot create the demo's data directory")?;
    first_crawl(&data_dir, &crawler, a.contacts).await?;
    print_banner(&format!("http://{addr}"), &running.url());
    if !a.no_churn {
        let every = duration(&a.churn_every)?;
        tokio::spawn(churn(running.url(), every));
    }
    let schedule = ScheduleConfig {
        full: FullSchedule::Every(Duration::from_secs(180)),
        agents_every: Duration::from_secs(20),
        rebuild_every: None,
        jitter: 0.0,
    };
    let server_cfg = ServerConfig { webhook: Some(WebhookConfig::new(DEMO_WEBHOOK_TOKEN)), ..ServerConfig::default() };
    let graph = Arc::new(open_graph(&data_dir, "", true)?);
    let run = Run {
        graph,
        data_dir: data_dir.clone(),
        crawler,
        schedule,
        incremental: true,
        refresh_share: crate::app::settings::defaults::REFRESH_SHARE,
        server_cfg,
        cases: crate::app::cases::CaseConfig::default(),
    };
    let result = run_server(run, listener).await;
    running.stop().await;
    drop(tmp);
    result
}

/// The simulated org, with its webhooks pointed at the demo's server at `addr`.
async fn demo_org(a: &DemoArgs, addr: SocketAddr) -> Result<drift_sim::RunningSim> {
    eprintln!("Generating a demo Drift org: {} contacts, {} agents …", a.contacts, a.agents);
    let sim = Sim::new(SimConfig {
        seed: a.seed,
        contacts: a.contacts,
        agents: a.agents,
        profile: a.profile,
        token: DEMO_DRIFT_TOKEN.into(),
        rate_limit: Some(DEMO_RATE.parse::<RateLimit>().map_err(anyhow::Error::msg)?),
        webhooks: SimWebhooks {
            urls: vec![format!("http://{addr}/webhooks/drift")],
            verification_token: DEMO_WEBHOOK_TOKEN.into(),
            duplicate_rate: 0.1,
            reorder_rate: 0.1,
        },
        ..SimConfig::default()
    });
    sim.spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("cannot start the simulator")
}

/// The first crawl, with a progress bar, before serving.
async fn first_crawl(data_dir: &std::path::Path, crawler: &Crawler, contacts: usize) -> Result<()> {
    let graph = Arc::new(open_graph(data_dir, "", true)?);
    let progress = Progress::new(Some(contacts as u64), crawler.config().budget.per_second());
    eprintln!("Crawling it at {DEMO_RATE} (the real Drift allows about 200/min) …");
    let r = pipeline::reindex(&graph, crawler, &progress, ShrinkGuard::default(), true).await?;
    eprintln!(
        "Indexed {} contacts, {} agents, {} accounts in {:.1}s ({} requests).",
        r.summary.contacts,
        r.summary.users,
        r.summary.accounts,
        r.summary.elapsed_ms as f64 / 1000.0,
        r.summary.requests
    );
    Ok(())
}

fn print_banner(url: &str, sim: &str) {
    eprintln!(
        r#"
idgraph demo is up, on loopback only and without sign-in: every caller may query and run
mutations (a real server signs people in through the company's identity provider and takes
service tokens: see the README).

  GraphiQL   {url}/            (open it in a browser)
  audit      {url}/audit       (the offboarding audit: charts, each leaver's graph, downloads)
  GraphQL    {url}/graphql
  metrics    {url}/metrics

Three queries to try (in GraphiQL, or with curl):

  curl -s {url}/graphql -H 'content-type: application/json' \
    -d '{{"query":"{{ indexStatus {{ generation contacts agents orphans nextCrawlAt }} }}"}}'

  curl -s {url}/graphql -H 'content-type: application/json' \
    -d '{{"query":"{{ orphans(first: 5) {{ totalCount edges {{ node {{ contact {{ id email }} reason owner {{ id email status departedAt }} }} }} }} }}"}}'

  curl -s {url}/graphql -H 'content-type: application/json' \
    -d '{{"query":"{{ whoOwnsWhom(first: 5) {{ edges {{ node {{ agent {{ id email status }} contacts accounts }} }} }} }}"}}'

The simulated Drift org, for any other Drift client:
  REST  {sim}        SCIM  {sim}/scim/v2        token  {tok}

While the demo runs the org changes: contacts are created and reassigned, and an agent is
deprovisioned through SCIM every minute or so. Agents are refreshed every 20s and the full index
every 3 minutes, so orphans and history (`changes`) appear live. Ctrl-C to stop.
"#,
        tok = DEMO_DRIFT_TOKEN,
    );
}

/// Changes the demo org through its API, as people would: new contacts, reassignments, and now
/// and then a deprovisioning through SCIM.
async fn churn(sim_url: String, every: Duration) {
    let http = reqwest::Client::new();
    let auth = format!("Bearer {DEMO_DRIFT_TOKEN}");
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(every).await;
        tick += 1;
        let users: serde_json::Value =
            match http.get(format!("{sim_url}/users/list")).header("authorization", &auth).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => continue,
            };
        let humans: Vec<u64> = users["data"]
            .as_array()
            .map(|a| a.iter().filter(|u| u["bot"] != true).filter_map(|u| u["id"].as_u64()).collect())
            .unwrap_or_default();
        if humans.len() < 3 {
            continue;
        }
        let (owner, other, victim) = {
            let mut rng = rand::rng();
            (
                humans[rng.random_range(0..humans.len())],
                humans[rng.random_range(0..humans.len())],
                humans[rng.random_range(3..humans.len())],
            )
        };
        // A new lead starts a chat (so discovery finds it too), is given an owner, then moved.
        let email = format!("demo.lead.{tick}@newco.example");
        let created: serde_json::Value = match http
            .post(format!("{sim_url}/conversations/new"))
            .header("authorization", &auth)
            .json(&serde_json::json!({"email": email, "message": {"body": "Hi, can I get a demo?"}}))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => continue,
        };
        if let Some(id) = created["data"]["contactId"].as_u64() {
            for to in [owner, other] {
                let _ = http
                    .patch(format!("{sim_url}/contacts/{id}"))
                    .header("authorization", &auth)
                    .json(&serde_json::json!({"attributes": {"ownerId": to}}))
                    .send()
                    .await;
            }
        }
        if tick % 6 == 0 {
            let r =
                http.delete(format!("{sim_url}/scim/v2/Users/{victim}")).header("authorization", &auth).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                tracing::info!(agent = victim, "demo: deprovisioned an agent through SCIM");
            }
        }
    }
}
