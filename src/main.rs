//! `idgraph`: an identity-graph indexer for Drift.
//!
//! The binary is thin: it parses arguments and configuration, and wires the crates together
//! (crawler -> graph -> GraphQL), with the reindex scheduler.

mod audit_cmd;
mod config;
mod pipeline;
mod progress;
mod scheduler;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use drift_sim::{DeprovisionPolicy, DuplicateEmail, Faults, Profile, RateLimit, Sim, SimConfig, WebhookConfig};
use idgraph_crawler::{Crawler, Secret, StoredTokens};
use idgraph_graph::{Graph, ShrinkGuard, StoreError};
use idgraph_graphql::Metrics;

use crate::config::DriftSettings;

// mimalloc gives memory back to the system after a reindex drops the previous index; the
// system allocator kept it (2.4 GB resident after a reindex of 1,000,000 contacts).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "idgraph", version, about = "Who owns whom in your Drift org: crawl, graph, GraphQL, audits.")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "IDGRAPH_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start a simulated Drift org, crawl it and serve GraphQL + GraphiQL: the first thing to run.
    Demo(serve::DemoArgs),
    /// Serve GraphQL from the stored index and keep it fresh on a schedule.
    Serve(serve::ServeArgs),
    /// Crawl a Drift org once into the data directory.
    Crawl(CrawlArgs),
    /// Offboarding audits: one agent, or every gone agent who still owns something.
    Audit(AuditArgs),
    /// Move a departed agent's contacts to active agents (dry run unless --apply).
    Reassign(ReassignArgs),
    /// Export contacts, orphans, agents or accounts as NDJSON or CSV (from a server or a data
    /// directory).
    Export(ExportArgs),
    /// Run the Drift simulator alone (REST, SCIM, OAuth), for any Drift client.
    Sim(SimArgs),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// OAuth 2.0 credentials.
    #[command(subcommand)]
    Auth(AuthCommand),
}

/// Where Drift is and how to reach it (shared by crawl, serve and reassign). No `Debug`: it holds
/// secrets.
#[derive(Args, Clone)]
pub struct DriftArgs {
    /// Drift's REST base URL.
    #[arg(long, env = "IDGRAPH_DRIFT_URL")]
    pub drift_url: Option<String>,
    /// Drift's SCIM base URL (Enterprise); `none` to skip SCIM.
    #[arg(long, env = "IDGRAPH_SCIM_URL")]
    pub scim_url: Option<String>,
    /// A Drift personal access token (or an OAuth token that never expires).
    #[arg(long, env = "DRIFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A separate token for SCIM.
    #[arg(long, env = "IDGRAPH_SCIM_TOKEN", hide_env_values = true)]
    pub scim_token: Option<String>,
    /// The request budget, e.g. `200/min`, `50/s`, `200/min@0.8` to use 80% of it.
    #[arg(long, env = "IDGRAPH_RATE_LIMIT")]
    pub rate_limit: Option<String>,
    /// A file of known emails (one a line; `ext:ID` for an external id), for orgs without a listing.
    #[arg(long, env = "IDGRAPH_KNOWN_IDS_FILE")]
    pub known_ids_file: Option<PathBuf>,
}

impl DriftArgs {
    pub fn settings(&self, file: &config::FileConfig) -> DriftSettings {
        let drift_url =
            self.drift_url.clone().or(file.drift_url.clone()).unwrap_or_else(|| "https://driftapi.com".into());
        let scim_url = self
            .scim_url
            .clone()
            .or(file.scim_url.clone())
            .unwrap_or_else(|| format!("{}/scim/v2", drift_url.trim_end_matches('/')));
        DriftSettings {
            scim_url: (scim_url != "none").then_some(scim_url),
            drift_url,
            token: self.token.clone().or(file.token.clone()),
            scim_token: self.scim_token.clone().or(file.scim_token.clone()),
            rate_limit: self.rate_limit.clone().or(file.rate_limit.clone()).unwrap_or_else(|| "200/min".into()),
            oauth: file.oauth.as_ref().map(|o| {
                (
                    o.client_id.clone(),
                    o.client_secret.clone(),
                    o.token_file.clone(),
                    o.token_url.clone().unwrap_or_else(|| "https://driftapi.com/oauth2/token".into()),
                )
            }),
            known_ids_file: self.known_ids_file.clone().or(file.known_ids_file.clone()),
        }
    }
}

#[derive(Args)]
struct CrawlArgs {
    #[command(flatten)]
    drift: DriftArgs,
    /// A TOML configuration file.
    #[arg(long, env = "IDGRAPH_CONFIG")]
    config: Option<PathBuf>,
    /// Where the index lives.
    #[arg(long, env = "IDGRAPH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Switch even if the new generation is much smaller than the current one.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct AuditArgs {
    /// The agent to audit: a Drift user id or an email.
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    agent: Option<String>,
    /// Audit every gone or deactivated agent who still owns something.
    #[arg(long)]
    all: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: audit_cmd::Format,
    /// Ask a running server instead of reading the data directory.
    #[arg(long, env = "IDGRAPH_SERVER")]
    server: Option<String>,
    /// The server's read token.
    #[arg(long, env = "IDGRAPH_READ_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, env = "IDGRAPH_DATA_DIR", default_value = "idgraph-data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct ReassignArgs {
    /// The agent whose contacts move: an id or an email.
    #[arg(long)]
    from: String,
    /// The active agents who receive them (ids or emails), spread evenly.
    #[arg(long, value_delimiter = ',', required = true)]
    to: Vec<String>,
    /// Carry out the plan (without it, only show what would change).
    #[arg(long)]
    apply: bool,
    /// Ask a running server (with its admin token) instead of using the data directory.
    #[arg(long, env = "IDGRAPH_SERVER")]
    server: Option<String>,
    #[arg(long, env = "IDGRAPH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[command(flatten)]
    drift: DriftArgs,
    #[arg(long, env = "IDGRAPH_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "IDGRAPH_DATA_DIR", default_value = "idgraph-data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct ExportArgs {
    /// contacts, orphans, agents or accounts.
    what: String,
    /// ndjson or csv.
    #[arg(long, default_value = "ndjson")]
    format: String,
    /// Ask a running server (`GET /export/...`) instead of reading the data directory.
    #[arg(long, env = "IDGRAPH_SERVER")]
    server: Option<String>,
    /// The server's read token.
    #[arg(long, env = "IDGRAPH_READ_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, env = "IDGRAPH_DATA_DIR", default_value = "idgraph-data")]
    data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct SimArgs {
    #[arg(long, default_value_t = 18080)]
    pub port: u16,
    /// Address to bind (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The personal access token it accepts, with every scope, REST and SCIM.
    #[arg(long, default_value = "sim-token")]
    pub token: String,
    #[arg(long, default_value_t = 10_000)]
    pub contacts: usize,
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `seed` (the brief's API, with a contact listing) or `drift` (Drift's documented API).
    #[arg(long, default_value = "seed")]
    pub profile: Profile,
    /// A per-token budget such as `200/min` or `50/s`; none by default.
    #[arg(long)]
    pub rate_limit: Option<RateLimit>,
    /// Send Retry-After and X-RateLimit-* headers (Drift documents none).
    #[arg(long)]
    pub rate_headers: bool,
    /// What SCIM deprovisioning does: `delete` (as Drift) or `deactivate`.
    #[arg(long, default_value = "delete")]
    pub deprovision: DeprovisionPolicy,
    /// Answer 409 to POST /contacts with an existing email (Drift's docs) instead of updating.
    #[arg(long)]
    pub duplicate_email_conflict: bool,
    /// Refuse SCIM as an org without the Enterprise plan.
    #[arg(long)]
    pub no_scim: bool,
    /// Every fault at the crawler's test rates (5% 5xx, 1% malformed, 1% truncated, 1% dropped,
    /// slow answers, 429 storms).
    #[arg(long)]
    pub faults: bool,
    #[arg(long)]
    pub error_rate: Option<f64>,
    #[arg(long)]
    pub malformed_rate: Option<f64>,
    #[arg(long)]
    pub truncated_rate: Option<f64>,
    #[arg(long)]
    pub drop_rate: Option<f64>,
    #[arg(long)]
    pub slow_rate: Option<f64>,
    #[arg(long)]
    pub slow_ms: Option<u64>,
    #[arg(long)]
    pub storm_rate: Option<f64>,
    #[arg(long)]
    pub storm_len: Option<u32>,
    /// Seed of the fault generator, to replay a run.
    #[arg(long, default_value_t = 1)]
    pub fault_seed: u64,
    /// OAuth access token lifetime (e.g. `30s`, `2h`); `0s` = never expires.
    #[arg(long, default_value = "2h")]
    pub access_token_ttl: String,
    #[arg(long, default_value = "sim-client")]
    pub client_id: String,
    #[arg(long, default_value = "sim-secret")]
    pub client_secret: String,
    /// Send webhooks to this URL (repeatable).
    #[arg(long)]
    pub webhook_url: Vec<String>,
    #[arg(long, default_value = "sim-verification-token")]
    pub webhook_token: String,
    #[arg(long, default_value_t = 0.0)]
    pub webhook_duplicate_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    pub webhook_reorder_rate: f64,
}

impl SimArgs {
    pub fn sim_config(&self) -> Result<SimConfig> {
        let mut faults = if self.faults {
            Faults::all(self.fault_seed)
        } else {
            Faults { seed: self.fault_seed, ..Faults::default() }
        };
        let set = |dst: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut faults.error_rate, self.error_rate);
        set(&mut faults.malformed_rate, self.malformed_rate);
        set(&mut faults.truncated_rate, self.truncated_rate);
        set(&mut faults.drop_rate, self.drop_rate);
        set(&mut faults.slow_rate, self.slow_rate);
        set(&mut faults.storm_rate, self.storm_rate);
        if let Some(v) = self.slow_ms {
            faults.slow_ms = v;
        }
        if let Some(v) = self.storm_len {
            faults.storm_len = v;
        }
        let ttl = config::duration(&self.access_token_ttl)?;
        Ok(SimConfig {
            seed: self.seed,
            contacts: self.contacts,
            agents: self.agents,
            profile: self.profile,
            token: self.token.clone(),
            rate_limit: self.rate_limit,
            rate_headers: self.rate_headers,
            deprovision: self.deprovision,
            duplicate_email: if self.duplicate_email_conflict {
                DuplicateEmail::Conflict
            } else {
                DuplicateEmail::Update
            },
            scim_enabled: !self.no_scim,
            faults,
            oauth_client_id: self.client_id.clone(),
            oauth_client_secret: self.client_secret.clone(),
            access_token_ttl: (!ttl.is_zero()).then_some(ttl),
            webhooks: WebhookConfig {
                urls: self.webhook_url.clone(),
                verification_token: self.webhook_token.clone(),
                duplicate_rate: self.webhook_duplicate_rate,
                reorder_rate: self.webhook_reorder_rate,
            },
            ..SimConfig::default()
        })
    }
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Run the OAuth authorization-code flow with a loopback redirect and store the tokens (0600).
    Login(LoginArgs),
}

#[derive(Args)]
struct LoginArgs {
    #[arg(long, env = "IDGRAPH_OAUTH_CLIENT_ID")]
    client_id: String,
    #[arg(long, env = "IDGRAPH_OAUTH_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    #[arg(long, default_value = "https://dev.drift.com/authorize")]
    authorize_url: String,
    #[arg(long, default_value = "https://driftapi.com/oauth2/token")]
    token_url: String,
    /// Where to store the tokens (written with mode 0600).
    #[arg(long, default_value = "idgraph-data/oauth-tokens.json")]
    token_file: PathBuf,
    /// The loopback port for the redirect (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Give up waiting for the browser after this long.
    #[arg(long, default_value = "5m")]
    timeout: String,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=warn,hyper=warn"));
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org).
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Demo(a) => serve::demo(a).await,
            Command::Serve(a) => serve::serve(a).await,
            Command::Crawl(a) => crawl(a).await,
            Command::Audit(a) => audit(a).await,
            Command::Reassign(a) => reassign(a).await,
            Command::Export(a) => export(a).await,
            Command::Sim(a) => sim(a).await,
            Command::Schema => {
                write_out(&mut std::io::stdout().lock(), idgraph_graphql::sdl().as_bytes())?;
                Ok(())
            }
            Command::Auth(AuthCommand::Login(a)) => login(a).await,
        }
    })
}

/// Opens the graph, turning a locked store into advice.
pub fn open_graph(dir: &std::path::Path, hint: &str) -> Result<Graph> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    match Graph::open(dir) {
        Ok(g) => Ok(g),
        Err(StoreError::Locked(p)) => {
            anyhow::bail!("the index at {p} is held by a running server; ask it instead: {hint}")
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the index at {}", dir.display())),
    }
}

async fn crawl(a: CrawlArgs) -> Result<()> {
    let file = config::FileConfig::load(a.config.as_deref())?;
    let settings = a.drift.settings(&file);
    let data_dir = a.data_dir.or(file.data_dir.clone()).unwrap_or_else(|| PathBuf::from("idgraph-data"));
    let cfg = settings.crawl_config()?;
    let per_s = cfg.budget.per_second();
    let crawler = Crawler::new(cfg)?;
    let graph = Arc::new(open_graph(&data_dir, "stop the server or trigger `mutation { reindex }` there")?);
    let metrics = Arc::new(Metrics::default());
    let expected = graph.info().map(|i| i.contacts);
    let progress = progress::Progress::new(expected, per_s);
    let guard = if a.force { ShrinkGuard::off() } else { ShrinkGuard::default() };
    let report =
        pipeline::reindex(&graph, &crawler, &metrics, &progress, guard, file.incremental.unwrap_or(true)).await?;
    let s = &report.summary;
    eprintln!(
        "generation {} is live: {} contacts, {} users, {} SCIM users, {} accounts; {} requests ({} answered 429, {} retried), {} bad records skipped, {} warnings, {:.1}s{}",
        report.generation,
        s.contacts,
        s.users,
        s.scim_users,
        s.accounts,
        s.requests,
        s.rate_limited,
        s.retries,
        s.bad_records,
        report.warnings.len(),
        s.elapsed_ms as f64 / 1000.0,
        if report.resumed { " (resumed)" } else { "" }
    );
    Ok(())
}

/// Runs a GraphQL query against a server.
async fn remote_query(
    server: &str,
    token: Option<&str>,
    query: &str,
    variables: serde_json::Value,
) -> Result<serde_json::Value> {
    let url = format!("{}/graphql", server.trim_end_matches('/'));
    let mut req = reqwest::Client::new().post(&url).json(&serde_json::json!({"query": query, "variables": variables}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.with_context(|| format!("{url} did not answer JSON ({status})"))?;
    if let Some(errs) = v.get("errors").and_then(|e| e.as_array()).filter(|e| !e.is_empty()) {
        let msgs: Vec<&str> = errs.iter().filter_map(|e| e.get("message").and_then(|m| m.as_str())).collect();
        anyhow::bail!("the server refused: {}", msgs.join("; "));
    }
    Ok(v.get("data").cloned().unwrap_or_default())
}

async fn audit(a: AuditArgs) -> Result<()> {
    use idgraph_graph::audit as au;
    let doc = match &a.server {
        Some(server) => {
            let q = "query($agent: String, $all: Boolean) { auditReport(agent: $agent, all: $all) }";
            let d = remote_query(server, a.token.as_deref(), q, serde_json::json!({"agent": a.agent, "all": a.all}))
                .await?;
            let r = d.get("auditReport").cloned().unwrap_or_default();
            audit_cmd::Doc {
                kind: r.get("kind").and_then(|k| k.as_str()).unwrap_or("org").to_string(),
                digest: r.get("digest").and_then(|k| k.as_str()).unwrap_or_default().to_string(),
                report: r.get("report").cloned().unwrap_or_default(),
            }
        }
        None => {
            let hint = format!(
                "idgraph audit {} --server http://127.0.0.1:8080 --token READ_TOKEN",
                a.agent.as_ref().map(|x| format!("--agent {x}")).unwrap_or_else(|| "--all".into())
            );
            let graph = open_graph(&a.data_dir, &hint)?;
            if graph.info().is_none() {
                anyhow::bail!("no index in {} yet: run `idgraph crawl` first", a.data_dir.display());
            }
            if a.all {
                let r = au::org_audit(&graph)?;
                audit_cmd::Doc { kind: "org".into(), digest: au::digest(&r), report: serde_json::to_value(r)? }
            } else {
                let key = a.agent.clone().unwrap_or_default();
                let agent = au::find_agent(&graph, &key).with_context(|| format!("no agent {key:?} in the index"))?;
                let r = au::agent_audit(&graph, agent.id)?.context("the agent vanished from the index")?;
                audit_cmd::Doc { kind: "agent".into(), digest: au::digest(&r), report: serde_json::to_value(r)? }
            }
        }
    };
    // `| head` closes the pipe early: that ends the report quietly, not with a panic.
    write_out(&mut std::io::stdout().lock(), audit_cmd::render(&doc, a.format)?.as_bytes())?;
    Ok(())
}

/// Writes to stdout; a reader that went away (`| head`) ends the export quietly.
fn write_out(out: &mut impl std::io::Write, chunk: &[u8]) -> Result<bool> {
    match out.write_all(chunk) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write the export"),
    }
}

async fn export(a: ExportArgs) -> Result<()> {
    use idgraph_graph::export::{Export, Format, Table};
    let table: Table = a.what.parse().map_err(anyhow::Error::msg)?;
    let format: Format = a.format.parse().map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    if let Some(server) = &a.server {
        let url = format!("{}/export/{}?format={}", server.trim_end_matches('/'), a.what, a.format);
        let mut req = reqwest::Client::new().get(&url);
        if let Some(t) = &a.token {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!("{url} answered {status}: {body}");
        }
        while let Some(chunk) = resp.chunk().await.context("the export was cut off")? {
            if !write_out(&mut out, &chunk)? {
                return Ok(());
            }
        }
        return Ok(());
    }
    if !a.data_dir.join("db").exists() {
        anyhow::bail!("no index in {} yet: run `idgraph crawl` first", a.data_dir.display());
    }
    let hint = format!("idgraph export {} --server http://127.0.0.1:8080 --token READ_TOKEN", a.what);
    let graph = open_graph(&a.data_dir, &hint)?;
    if graph.info().is_none() {
        anyhow::bail!("no index in {} yet: run `idgraph crawl` first", a.data_dir.display());
    }
    for chunk in Export::new(graph.snapshot(), table, format) {
        if !write_out(&mut out, chunk.as_bytes())? {
            return Ok(());
        }
    }
    Ok(())
}

fn resolve_agent(graph: &Graph, key: &str) -> Result<u64> {
    idgraph_graph::audit::find_agent(graph, key).map(|a| a.id).with_context(|| format!("no agent {key:?} in the index"))
}

async fn reassign(a: ReassignArgs) -> Result<()> {
    if let Some(server) = &a.server {
        let q = "mutation($from: ID!, $to: [ID!]!, $dry: Boolean!) { reassignContacts(fromAgentId: $from, toAgentIds: $to, dryRun: $dry) { dryRun planned applied alreadyDone failed errors moves { contactId fromAgentId toAgentId } } }";
        let d = remote_query(
            server,
            a.admin_token.as_deref(),
            q,
            serde_json::json!({"from": a.from, "to": a.to, "dry": !a.apply}),
        )
        .await?;
        println!("{}", serde_json::to_string_pretty(&d["reassignContacts"])?);
        return Ok(());
    }
    let graph = Arc::new(open_graph(
        &a.data_dir,
        "idgraph reassign --server http://127.0.0.1:8080 --admin-token ADMIN_TOKEN ...",
    )?);
    let from = resolve_agent(&graph, &a.from)?;
    let to = a.to.iter().map(|t| resolve_agent(&graph, t)).collect::<Result<Vec<_>>>()?;
    let moves = idgraph_graph::reassign::plan(&graph.read(), from, &to, None)?;
    if !a.apply {
        println!("dry run: {} contacts would move (pass --apply to carry it out)", moves.len());
        for m in moves.iter().take(50) {
            println!("  contact {} : {} -> {}", m.contact_id, m.from, m.to);
        }
        if moves.len() > 50 {
            println!("  … and {} more", moves.len() - 50);
        }
        return Ok(());
    }
    let file = config::FileConfig::load(a.config.as_deref())?;
    let crawler = Crawler::new(a.drift.settings(&file).crawl_config()?)?;
    let out = scheduler::execute_moves(&graph, &crawler, moves).await?;
    println!("moved {} contacts ({} already done, {} failed)", out.applied, out.already_done, out.failed.len());
    for (id, e) in out.failed.iter().take(20) {
        println!("  contact {id}: {e}");
    }
    if !out.failed.is_empty() {
        anyhow::bail!("{} moves failed; rerun to retry them (done moves are not repeated)", out.failed.len());
    }
    Ok(())
}

async fn sim(a: SimArgs) -> Result<()> {
    let cfg = a.sim_config()?;
    let started = std::time::Instant::now();
    let sim = Sim::new(cfg.clone());
    let addr: SocketAddr = format!("{}:{}", a.host, a.port).parse().context("bad --host/--port")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot bind {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!(
        "drift-sim: {} contacts, {} agents (seed {}) generated in {:.2}s, profile {:?}",
        cfg.contacts,
        cfg.agents,
        cfg.seed,
        started.elapsed().as_secs_f64(),
        cfg.profile
    );
    eprintln!("  REST   http://{local}        (also under /v1)");
    eprintln!("  SCIM   http://{local}/scim/v2  and  http://{local}/scim");
    eprintln!(
        "  OAuth  http://{local}/oauth2/authorize  http://{local}/oauth2/token  (client {} / {})",
        cfg.oauth_client_id, cfg.oauth_client_secret
    );
    eprintln!("  token  {}   (every scope; `Authorization: Bearer {}`)", cfg.token, cfg.token);
    eprintln!(
        "  rate limit {}; deprovision {:?}; faults {}",
        cfg.rate_limit.map(|r| format!("{}/{}s", r.requests, r.per.as_secs())).unwrap_or_else(|| "none".into()),
        cfg.deprovision,
        if cfg.faults == (Faults { seed: cfg.faults.seed, ..Faults::default() }) {
            "off".to_string()
        } else {
            format!("{:?}", cfg.faults)
        }
    );
    eprintln!("  try: curl -H 'Authorization: Bearer {}' 'http://{local}/contacts?limit=2'", cfg.token);
    eprintln!("Ctrl-C to stop.");
    sim.serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    eprintln!("drift-sim stopped.");
    Ok(())
}

async fn login(a: LoginArgs) -> Result<()> {
    use axum::extract::Query;
    use axum::routing::get;
    let timeout = config::duration(&a.timeout)?;
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", a.port)).await.context("cannot bind the loopback redirect")?;
    let port = listener.local_addr()?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let state: String = {
        use rand::distr::Alphanumeric;
        use rand::Rng;
        rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect()
    };
    let url = format!(
        "{}?response_type=code&client_id={}&redirect_uri={}&state={}",
        a.authorize_url,
        urlencoding::encode(&a.client_id),
        urlencoding::encode(&redirect),
        state
    );
    println!("Open this URL in a browser and approve idgraph:\n\n  {url}\n\nWaiting for the redirect to {redirect} …");
    let (tx, rx) = tokio::sync::oneshot::channel::<(String, String)>();
    let tx = Arc::new(parking_lot::Mutex::new(Some(tx)));
    let app = axum::Router::new().route(
        "/callback",
        get(move |Query(q): Query<std::collections::HashMap<String, String>>| {
            let tx = tx.clone();
            async move {
                if let (Some(code), Some(st)) = (q.get("code"), q.get("state")) {
                    if let Some(tx) = tx.lock().take() {
                        let _ = tx.send((code.clone(), st.clone()));
                    }
                    "idgraph is authorized; you can close this tab."
                } else {
                    "missing code or state"
                }
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (code, got_state) = tokio::time::timeout(timeout, rx)
        .await
        .context("timed out waiting for the browser")?
        .context("the redirect listener stopped")?;
    server.abort();
    if got_state != state {
        anyhow::bail!("the redirect's state does not match: refusing the code");
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let tokens: StoredTokens = idgraph_crawler::auth::exchange_code(
        &http,
        &a.token_url,
        &a.client_id,
        &Secret::new(a.client_secret.clone()),
        &code,
        &redirect,
    )
    .await?;
    tokens.write(&a.token_file)?;
    println!(
        "Stored the tokens in {} (mode 0600). Point idgraph at them with an [oauth] section:\n\n[oauth]\nclient_id = \"{}\"\nclient_secret = \"…\"\ntoken_file = \"{}\"\ntoken_url = \"{}\"",
        a.token_file.display(),
        a.client_id,
        a.token_file.display(),
        a.token_url
    );
    Ok(())
}
