//! The commands, as functions the binary dispatches to. Each turns its flags into
//! [`Settings`](crate::app::settings::Settings) once, then works with typed values.

pub mod access;
pub mod audit;
pub mod backup;
pub mod case;
pub mod check;
pub mod common;
pub mod crawl;
pub mod export;
pub mod gateway;
pub mod login;
pub mod progress;
pub mod reassign;
pub mod serve;
pub mod sim;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::app::settings::Flags;

#[derive(Parser)]
#[command(name = "idgraph", version, about = "Who owns whom in your Drift org: crawl, graph, GraphQL, audits.")]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "IDGRAPH_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start a simulated Drift org, crawl it and serve GraphQL + GraphiQL: the first thing to run.
    Demo(serve::DemoArgs),
    /// Serve GraphQL from the stored index and keep it fresh on a schedule.
    Serve(serve::ServeArgs),
    /// Crawl a Drift org once into the data directory.
    Crawl(crawl::CrawlArgs),
    /// Offboarding audits: one agent, or every gone agent who still owns something.
    Audit(audit::AuditArgs),
    /// Move a departed agent's contacts to active agents (dry run unless --apply).
    Reassign(reassign::ReassignArgs),
    /// Export contacts, orphans, agents or accounts as NDJSON or CSV (from a server or a data
    /// directory).
    Export(export::ExportArgs),
    /// Write a consistent, checked copy of the index (offline, or through a running server).
    Backup(backup::BackupArgs),
    /// Replace the data directory with a backup, after checking it (the old one is kept aside).
    Restore(backup::RestoreArgs),
    /// Read every value of the stored index and say what is wrong (exit non-zero if anything).
    Check(check::CheckArgs),
    /// Run the Drift simulator alone (REST, SCIM, OAuth), for any Drift client.
    Sim(sim::SimArgs),
    /// Print the GraphQL schema (SDL).
    Schema {
        /// The GraphQL Federation v2 subgraph SDL (what `_service { sdl }` answers).
        #[arg(long)]
        federation: bool,
    },
    /// Write the reverse proxy's routing (nginx) for orgs spread over several `serve`
    /// processes, from each process's configuration file.
    GatewayConfig(gateway::GatewayArgs),
    /// OAuth 2.0 credentials.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Offboarding cases: list, open, export a bundle, verify one.
    #[command(subcommand)]
    Case(case::CaseCommand),
    /// Named service tokens for scripts and CI (create, list, revoke).
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// The access log (who read what): check its hash chain.
    #[command(subcommand, name = "access-log")]
    AccessLog(access::AccessLogCommand),
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Run the OAuth authorization-code flow with a loopback redirect and store the tokens (0600).
    Login(login::LoginArgs),
}

/// Runs one command.
pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Demo(a) => serve::demo(a).await,
        Command::Serve(a) => serve::serve(a).await,
        Command::Crawl(a) => crawl::crawl(a).await,
        Command::Audit(a) => audit::audit(a).await,
        Command::Reassign(a) => reassign::reassign(a).await,
        Command::Export(a) => export::export(a).await,
        Command::Sim(a) => sim::sim(a).await,
        Command::Check(a) => check::check(a).await,
        Command::Backup(a) => backup::backup(a).await,
        Command::Restore(a) => backup::restore(a).await,
        Command::Schema { federation: false } => common::print_out(&crate::app::http::sdl()),
        Command::Schema { federation: true } => common::print_out(&idgraph_graphql::federation_sdl()),
        Command::GatewayConfig(a) => gateway::gateway_config(a),
        Command::Auth(AuthCommand::Login(a)) => login::login(a).await,
        Command::Token(c) => access::token(c).await,
        Command::Case(c) => case::case(c).await,
        Command::AccessLog(c) => access::access_log(c).await,
    }
}

/// Logs go to stderr; colour only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>).
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=warn,hyper=warn"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// A running server to ask (with a bearer token), or else a data directory: the token and case
/// commands.
#[derive(Args)]
pub struct ServerOrStore {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A running server to ask instead of the data directory.
    #[arg(long)]
    pub server: Option<String>,
    /// A bearer token for --server (a service token or a JWT) [env: IDGRAPH_TOKEN].
    #[arg(long, env = "IDGRAPH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The configuration file and the data directory: every command that touches a data directory
/// takes both. The environment (`IDGRAPH_CONFIG`, `IDGRAPH_DATA_DIR`) is read by the settings.
#[derive(Args, Clone, Default)]
pub struct StoreArgs {
    /// A TOML configuration file (see README) [env: IDGRAPH_CONFIG].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the index lives (default `idgraph-data`) [env: IDGRAPH_DATA_DIR].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The org, when the configuration names several (`[[org]]`); its store is
    /// `DATA_DIR/orgs/NAME`. For `token create`: the org the role holds in (without it: every org).
    #[arg(long)]
    pub org: Option<String>,
}

/// Where Drift is and how to reach it (crawl, serve, reassign). No `Debug`: it holds secrets.
#[derive(Args, Clone, Default)]
pub struct DriftArgs {
    /// Drift's REST base URL [env: IDGRAPH_DRIFT_URL].
    #[arg(long)]
    pub drift_url: Option<String>,
    /// Drift's SCIM base URL (Enterprise); `none` to skip SCIM [env: IDGRAPH_SCIM_URL].
    #[arg(long)]
    pub scim_url: Option<String>,
    /// A Drift personal access token (or an OAuth token that never expires) [env: DRIFT_TOKEN].
    #[arg(long)]
    pub token: Option<String>,
    /// A separate token for SCIM [env: IDGRAPH_SCIM_TOKEN].
    #[arg(long)]
    pub scim_token: Option<String>,
    /// The request budget, e.g. `200/min`, `50/s`, `200/min@0.8` to use 80% of it
    /// [env: IDGRAPH_RATE_LIMIT].
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// A file of known emails (one a line; `ext:ID` for an external id), for orgs without a
    /// listing [env: IDGRAPH_KNOWN_IDS_FILE].
    #[arg(long)]
    pub known_ids_file: Option<PathBuf>,
}

/// A running server to ask instead of the data directory, with its read token.
#[derive(Args, Clone, Default)]
pub struct ServerArgs {
    /// Ask a running server instead of reading the data directory.
    #[arg(long, env = "IDGRAPH_SERVER")]
    pub server: Option<String>,
    /// The server's read token.
    #[arg(long, env = "IDGRAPH_READ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl StoreArgs {
    pub fn flags(&self) -> Flags {
        Flags {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            org: self.org.clone(),
            ..Flags::default()
        }
    }
}

impl DriftArgs {
    /// These flags over `base`.
    pub fn flags(&self, base: Flags) -> Flags {
        Flags {
            drift_url: self.drift_url.clone(),
            scim_url: self.scim_url.clone(),
            token: self.token.clone(),
            scim_token: self.scim_token.clone(),
            rate_limit: self.rate_limit.clone(),
            known_ids_file: self.known_ids_file.clone(),
            ..base
        }
    }
}
