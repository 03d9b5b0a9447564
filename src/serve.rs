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
use idgraph_graphql::{router, ApiTokens, Metrics, ServerConfig, WebhookConfig};
use rand::Rng;

use crate::config::{self, FileConfig};
use crate::scheduler::{FullSchedule, ScheduleConfig, Scheduler, SchedulerOps};
use crate::{open_graph, pipeline, progress, DriftArgs};

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML configuration file (see README); flags and IDGRAPH_* variables override it.
    #[arg(long, env = "IDGRAPH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve on.
    #[arg(long, env = "IDGRAPH_LISTEN")]
    listen: Option<String>,
    #[arg(long, env = "IDGRAPH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    drift: DriftArgs,
    /// Bearer token for GraphQL queries.
    #[arg(long, env = "IDGRAPH_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// Bearer token for GraphQL queries and mutations (reindex, reassignContacts).
    #[arg(long, env = "IDGRAPH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The verification token Drift sends with webhooks; webhooks are off without it.
    #[arg(long, env = "IDGRAPH_WEBHOOK_TOKEN", hide_env_values = true)]
    webhook_token: Option<String>,
    /// Full reindex schedule: a duration (`6h`) or a cron expression with seconds.
    #[arg(long, env = "IDGRAPH_FULL_EVERY")]
    full_every: Option<String>,
    /// Agents-only refresh interval.
    #[arg(long, env = "IDGRAPH_AGENTS_EVERY")]
    agents_every: Option<String>,
    /// Allow browser pages from this origin (CORS is off without it). Repeatable.
    #[arg(long = "cors-origin", env = "IDGRAPH_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// Serve GraphQL without tokens (anyone who can reach the port can read and reindex).
    #[arg(long)]
    insecure_no_auth: bool,
}

pub async fn serve(a: ServeArgs) -> Result<()> {
    let file = FileConfig::load(a.config.as_deref())?;
    let settings = a.drift.settings(&file);
    let tokens = ApiTokens {
        read: a.read_token.clone().or(file.read_token.clone()),
        admin: a.admin_token.clone().or(file.admin_token.clone()),
    };
    if tokens.open() && !a.insecure_no_auth {
        anyhow::bail!("set --read-token and --admin-token (or IDGRAPH_READ_TOKEN / IDGRAPH_ADMIN_TOKEN), or pass --insecure-no-auth");
    }
    let listen = a.listen.clone().or(file.listen.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
    let data_dir = a.data_dir.clone().or(file.data_dir.clone()).unwrap_or_else(|| PathBuf::from("idgraph-data"));
    let schedule = ScheduleConfig {
        full: a
            .full_every
            .clone()
            .or(file.full_every.clone())
            .unwrap_or_else(|| "6h".into())
            .parse()
            .map_err(anyhow::Error::msg)?,
        agents_every: config::duration(
            &a.agents_every.clone().or(file.agents_every.clone()).unwrap_or_else(|| "5m".into()),
        )?,
        jitter: 0.1,
        guard: ShrinkGuard::default(),
        incremental: file.incremental.unwrap_or(true),
    };
    let crawler = Crawler::new(settings.crawl_config()?)?;
    let webhook = a.webhook_token.clone().or(file.webhook_token.clone()).map(WebhookConfig::new);
    let cors =
        if a.cors_origins.is_empty() { file.cors_origins.clone().unwrap_or_default() } else { a.cors_origins.clone() };
    let server_cfg = ServerConfig { tokens, cors_origins: cors, webhook, ..ServerConfig::default() };
    run_server(&listen, &data_dir, crawler, schedule, server_cfg, None).await
}

/// Opens the index, starts the scheduler and serves until Ctrl-C. With `listener`, serves on it.
async fn run_server(
    listen: &str,
    data_dir: &std::path::Path,
    crawler: Crawler,
    schedule: ScheduleConfig,
    server_cfg: ServerConfig,
    listener: Option<tokio::net::TcpListener>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let graph = Arc::new(open_graph(data_dir, "stop the other idgraph first: one server holds a data directory")?);
    let first_crawl = graph.info().is_none();
    match graph.info() {
        Some(i) => tracing::info!(
            generation = i.generation,
            contacts = i.contacts,
            load_ms = started.elapsed().as_millis() as u64,
            "serving the stored index"
        ),
        None => tracing::info!("no index yet: crawling first (/readyz says 503 until it is done)"),
    }
    let metrics = Arc::new(Metrics::default());
    let sched = Scheduler::start(graph.clone(), crawler, metrics.clone(), schedule, first_crawl);
    let app = router(graph, Arc::new(SchedulerOps(sched)), metrics, server_cfg);
    let listener = match listener {
        Some(l) => l,
        None => tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?,
    };
    tracing::info!(addr = %listener.local_addr()?, "serving GraphQL at /graphql and GraphiQL at /");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
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
    let running = sim.spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("cannot start the simulator")?;
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
    let per_s = cfg.budget.per_second();
    let crawler = Crawler::new(cfg)?;

    // The first crawl, with a progress bar, before serving.
    {
        let graph = Arc::new(open_graph(&data_dir, "")?);
        let progress = progress::Progress::new(Some(a.contacts as u64), per_s);
        eprintln!("Crawling it at {DEMO_RATE} (the real Drift allows about 200/min) …");
        let r =
            pipeline::reindex(&graph, &crawler, &Arc::new(Metrics::default()), &progress, ShrinkGuard::default(), true)
                .await?;
        eprintln!(
            "Indexed {} contacts, {} agents, {} accounts in {:.1}s ({} requests).",
            r.summary.contacts,
            r.summary.users,
            r.summary.accounts,
            r.summary.elapsed_ms as f64 / 1000.0,
            r.summary.requests
        );
    }
    let url = format!("http://{addr}");
    eprintln!(
        r#"
idgraph demo is up.

  GraphiQL   {url}/            (open it in a browser)
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
        sim = running.url(),
        tok = DEMO_DRIFT_TOKEN,
    );
    if !a.no_churn {
        let every = config::duration(&a.churn_every)?;
        tokio::spawn(churn(running.url(), every));
    }
    let schedule = ScheduleConfig {
        full: FullSchedule::Every(Duration::from_secs(180)),
        agents_every: Duration::from_secs(20),
        jitter: 0.0,
        guard: ShrinkGuard::default(),
        incremental: true,
    };
    let server_cfg = ServerConfig { webhook: Some(WebhookConfig::new(DEMO_WEBHOOK_TOKEN)), ..ServerConfig::default() };
    let result = run_server("", &data_dir, crawler, schedule, server_cfg, Some(listener)).await;
    running.stop().await;
    drop(tmp);
    result
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
