//! `idgraph sim`: the Drift simulator alone, for any Drift client.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use drift_sim::{Churn, DeprovisionPolicy, DuplicateEmail, Faults, Profile, RateLimit, Sim, SimConfig, WebhookConfig};

use crate::app::settings::duration;

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
    /// Change the org as real orgs change, without webhooks:
    /// `owner=600/h,delete=10/h,create=60/h,deprovision=1/h` (rates per s, min, h or d).
    #[arg(long)]
    pub churn: Option<Churn>,
    /// Stop the churn after this long (e.g. `60s`); default: never.
    #[arg(long)]
    pub churn_duration: Option<String>,
    /// Seed of the churn, to replay a run.
    #[arg(long, default_value_t = 1)]
    pub churn_seed: u64,
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
        let ttl = duration(&self.access_token_ttl)?;
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

pub async fn sim(a: SimArgs) -> Result<()> {
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
    if let Some(churn) = a.churn {
        let duration = a.churn_duration.as_deref().map(duration).transpose()?;
        sim.start_churn(Churn { duration, seed: a.churn_seed, ..churn });
        eprintln!(
            "  churn: owners {:.0}/h, deletions {:.0}/h, new contacts {:.0}/h, deprovisions {:.0}/h{} (seed {})",
            churn.owner_per_s * 3600.0,
            churn.delete_per_s * 3600.0,
            churn.create_per_s * 3600.0,
            churn.deprovision_per_s * 3600.0,
            duration.map(|d| format!(" for {}", humantime::format_duration(d))).unwrap_or_default(),
            a.churn_seed
        );
    }
    eprintln!("Ctrl-C to stop.");
    sim.serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    eprintln!("drift-sim stopped.");
    Ok(())
}
