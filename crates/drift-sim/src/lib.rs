//! A faithful simulator of Drift's REST, SCIM 2.0 and OAuth 2.0 APIs.
//!
//! idgraph is built, tested, benchmarked and demonstrated without internet access, so it carries
//! its own Drift. The simulator serves the shapes of `shared/drift-api.md` in two profiles (the
//! brief's `seed` API and Drift's documented `drift` API), enforces bearer auth with scopes, a leaky
//! bucket per token, and injects seeded faults (5xx, malformed and truncated bodies, dropped
//! connections, slow answers, 429 storms, expiring tokens). It sends webhooks out on changes.
//!
//! What it deliberately is not: a store (the org lives in memory and is generated from a seed), or
//! a client of anything but the configured webhook URLs. State changes only through the API, so
//! tests exercise the paths a real Drift org would.

// Handlers return `Result<_, Response>`: the error is the answer, built once per request.
#![allow(clippy::result_large_err)]

pub mod churn;
pub mod config;
pub mod data;
mod gate;
mod oauth;
mod rest;
mod scim;
mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::TcpListener;

pub use churn::{Churn, ChurnCounts};
pub use config::{DeprovisionPolicy, DuplicateEmail, Faults, Profile, RateLimit, SimConfig, WebhookConfig};
use data::Org;

/// The scopes Drift tokens carry, plus `scim` for the SCIM API.
pub const ALL_SCOPES: &[&str] = &[
    "contact_read",
    "contact_write",
    "user_read",
    "user_write",
    "conversation_read",
    "account_read",
    "all_contact_read",
    "scim",
];

#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub scopes: Vec<String>,
    pub expires_at: Option<Instant>,
}

/// Counters a test or benchmark reads to see what the simulator went through.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub server_errors: AtomicU64,
    pub malformed: AtomicU64,
    pub dropped: AtomicU64,
    pub auth_failures: AtomicU64,
    pub token_refreshes: AtomicU64,
    pub webhooks_sent: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub malformed: u64,
    pub dropped: u64,
    pub auth_failures: u64,
    pub token_refreshes: u64,
    pub webhooks_sent: u64,
}

pub(crate) struct FaultState {
    pub faults: Faults,
    pub rng: StdRng,
    pub storm_left: u32,
}

pub(crate) struct Bucket {
    pub level: f64,
    pub last: Instant,
}

pub(crate) struct State {
    pub cfg: SimConfig,
    pub org: RwLock<Org>,
    pub tokens: Mutex<HashMap<String, TokenInfo>>,
    pub refresh_tokens: Mutex<HashMap<String, ()>>,
    pub codes: Mutex<HashMap<String, String>>,
    pub buckets: Mutex<HashMap<String, Bucket>>,
    pub faults: Mutex<FaultState>,
    pub stats: Stats,
    pub webhooks: Option<webhooks::Outbox>,
    pub churn: Mutex<churn::ChurnCounts>,
}

/// A simulator: an org and the API around it. Cheap to clone; clones share the org.
#[derive(Clone)]
pub struct Sim {
    state: Arc<State>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("profile", &self.state.cfg.profile).finish_non_exhaustive()
    }
}

impl Sim {
    /// Generates the org and prepares the API. Webhooks need a Tokio runtime, so call this
    /// inside one when webhook URLs are configured.
    pub fn new(cfg: SimConfig) -> Sim {
        let org = Org::generate(&cfg);
        let mut tokens = HashMap::new();
        tokens.insert(
            cfg.token.clone(),
            TokenInfo { scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(), expires_at: None },
        );
        for (t, scopes) in &cfg.scoped_tokens {
            tokens.insert(t.clone(), TokenInfo { scopes: scopes.clone(), expires_at: None });
        }
        let webhooks = (!cfg.webhooks.urls.is_empty()).then(|| webhooks::Outbox::start(cfg.webhooks.clone(), cfg.seed));
        let faults =
            FaultState { rng: StdRng::seed_from_u64(cfg.faults.seed), faults: cfg.faults.clone(), storm_left: 0 };
        Sim {
            state: Arc::new(State {
                org: RwLock::new(org),
                tokens: Mutex::new(tokens),
                refresh_tokens: Mutex::new(HashMap::new()),
                codes: Mutex::new(HashMap::new()),
                buckets: Mutex::new(HashMap::new()),
                faults: Mutex::new(faults),
                stats: Stats::default(),
                webhooks,
                churn: Mutex::new(churn::ChurnCounts::default()),
                cfg,
            }),
        }
    }

    /// The axum router serving every API, at `/` and under `/v1`.
    pub fn router(&self) -> Router {
        let api = rest::routes().merge(scim::routes()).merge(oauth::api_routes());
        let api = api.layer(axum::middleware::from_fn_with_state(self.state.clone(), gate::gate));
        Router::new()
            .merge(api.clone())
            .nest("/v1", api)
            .merge(oauth::open_routes())
            .fallback(unknown_route)
            .method_not_allowed_fallback(wrong_method)
            .with_state(self.state.clone())
    }

    /// Serves on a bound listener until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await
    }

    /// Binds `addr` (port 0 for any), serves in the background and returns the bound address.
    pub async fn spawn(&self, addr: SocketAddr) -> std::io::Result<RunningSim> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let me = self.clone();
        let task = tokio::spawn(async move {
            let _ = me
                .serve(listener, async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(RunningSim { addr: local, stop: Some(tx), task: Some(task) })
    }

    pub fn config(&self) -> &SimConfig {
        &self.state.cfg
    }

    /// Replaces the fault settings (and reseeds their generator) while running.
    pub fn set_faults(&self, faults: Faults) {
        let mut f = self.state.faults.lock();
        f.rng = StdRng::seed_from_u64(faults.seed);
        f.faults = faults;
        f.storm_left = 0;
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.state.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: l(&s.requests),
            rate_limited: l(&s.rate_limited),
            server_errors: l(&s.server_errors),
            malformed: l(&s.malformed),
            dropped: l(&s.dropped),
            auth_failures: l(&s.auth_failures),
            token_refreshes: l(&s.token_refreshes),
            webhooks_sent: l(&s.webhooks_sent),
        }
    }

    /// Issues an OAuth authorization code, as the authorize page would after a user consents.
    pub fn issue_code(&self) -> String {
        oauth::new_code(&self.state, "")
    }

    /// The org as the API would serve it, for tests that check a crawl against it.
    pub fn contacts_json(&self) -> Vec<serde_json::Value> {
        let org = self.state.org.read();
        org.contacts.values().map(|c| c.to_json(self.state.cfg.profile)).collect()
    }

    pub fn users_json(&self) -> Vec<serde_json::Value> {
        let org = self.state.org.read();
        org.users.values().map(|u| u.to_rest_json(self.state.cfg.org_id)).collect()
    }

    pub fn scim_users_json(&self) -> Vec<serde_json::Value> {
        let org = self.state.org.read();
        org.users.values().map(|u| u.to_scim_json()).collect()
    }

    pub fn accounts_json(&self) -> Vec<serde_json::Value> {
        let org = self.state.org.read();
        org.accounts.iter().map(|a| a.to_json()).collect()
    }
}

/// An unknown route answers as Drift does: its error envelope (SCIM's under `/scim`).
async fn unknown_route(uri: axum::http::Uri) -> axum::response::Response {
    let msg = format!("no route {}", uri.path());
    if uri.path().contains("/scim") {
        gate::scim_error(axum::http::StatusCode::NOT_FOUND, None, &msg)
    } else {
        gate::drift_error(axum::http::StatusCode::NOT_FOUND, "not_found", &msg)
    }
}

/// A known route asked with a method it does not take: 405, in the same envelopes.
async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> axum::response::Response {
    let msg = format!("{method} is not allowed on {}", uri.path());
    if uri.path().contains("/scim") {
        gate::scim_error(axum::http::StatusCode::METHOD_NOT_ALLOWED, None, &msg)
    } else {
        gate::drift_error(axum::http::StatusCode::METHOD_NOT_ALLOWED, "validation_error", &msg)
    }
}

/// A simulator serving in the background; stops when dropped.
#[derive(Debug)]
pub struct RunningSim {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSim {
    /// The REST base URL, e.g. `http://127.0.0.1:18080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The SCIM base URL as the brief gives it.
    pub fn scim_url(&self) -> String {
        format!("http://{}/scim/v2", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
