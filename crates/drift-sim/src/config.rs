//! Simulator settings. Every setting has a default that behaves like Drift as the brief describes it.

use std::time::Duration;

/// Which of the two known descriptions of Drift's API to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The brief's API: a cursor listing of contacts and top-level contact fields.
    #[default]
    Seed,
    /// Drift's documented API: no contact listing (400 `CONTACT-10`), fields inside `attributes`,
    /// `ownerId` as a custom attribute.
    Drift,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "seed" => Ok(Profile::Seed),
            "drift" => Ok(Profile::Drift),
            other => Err(format!("unknown profile {other:?} (expected seed or drift)")),
        }
    }
}

/// What SCIM deprovisioning (DELETE, or `active=false`) does to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeprovisionPolicy {
    /// As Drift: the user vanishes from SCIM and REST; 404 after.
    #[default]
    Delete,
    /// As some identity providers: the user stays, with `active: false`.
    Deactivate,
}

impl std::str::FromStr for DeprovisionPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "delete" => Ok(DeprovisionPolicy::Delete),
            "deactivate" => Ok(DeprovisionPolicy::Deactivate),
            other => Err(format!("unknown deprovision policy {other:?} (expected delete or deactivate)")),
        }
    }
}

/// What `POST /contacts` does with an email that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateEmail {
    /// The brief: silently update the existing contact.
    #[default]
    Update,
    /// Drift's docs: 409 unless an `externalId` is given.
    Conflict,
}

/// A request budget: `requests` per `per`, as a leaky bucket per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
    /// How many requests may arrive at once before the bucket overflows.
    pub burst: u32,
}

impl RateLimit {
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests) / self.per.as_secs_f64()
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;
    /// Parses `200/min`, `50/s`, `1000/20s`, `3600/h`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (requests, per) = idgraph_model::parse_rate(s)?;
        let burst = (requests / 20).max(5).min(requests.max(1));
        Ok(RateLimit { requests, per, burst })
    }
}

/// Injected faults. Each is a probability per request (0.0 = off), drawn from a seeded generator
/// so that a failing run can be replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    pub seed: u64,
    /// 500, 502 or 503 before the request is handled.
    pub error_rate: f64,
    /// A 200 whose JSON body is malformed.
    pub malformed_rate: f64,
    /// A 200 whose JSON body is cut short.
    pub truncated_rate: f64,
    /// The connection drops in the middle of the response body.
    pub drop_rate: f64,
    /// A slow response, delayed by `slow_ms`.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// The probability that a request starts a 429 storm of `storm_len` requests.
    pub storm_rate: f64,
    pub storm_len: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 1,
            error_rate: 0.0,
            malformed_rate: 0.0,
            truncated_rate: 0.0,
            drop_rate: 0.0,
            slow_rate: 0.0,
            slow_ms: 200,
            storm_rate: 0.0,
            storm_len: 20,
        }
    }
}

impl Faults {
    /// Every fault on, at the rates the crawler's exactness target names.
    pub fn all(seed: u64) -> Faults {
        Faults {
            seed,
            error_rate: 0.05,
            malformed_rate: 0.01,
            truncated_rate: 0.01,
            drop_rate: 0.01,
            slow_rate: 0.01,
            slow_ms: 50,
            storm_rate: 0.002,
            storm_len: 15,
        }
    }
}

/// Outgoing webhooks.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    pub verification_token: String,
    /// The probability that an event is sent twice.
    pub duplicate_rate: f64,
    /// The probability that an event swaps places with the next one.
    pub reorder_rate: f64,
}

/// Everything the simulator needs to start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub contacts: usize,
    pub agents: usize,
    /// Accounts; `None` means three per agent.
    pub accounts: Option<usize>,
    pub profile: Profile,
    /// A personal access token with every scope, REST and SCIM, that never expires.
    pub token: String,
    /// Extra personal access tokens with chosen scopes: `(token, scopes)`.
    pub scoped_tokens: Vec<(String, Vec<String>)>,
    pub rate_limit: Option<RateLimit>,
    /// Send `Retry-After` and `X-RateLimit-*` headers (Drift documents none).
    pub rate_headers: bool,
    pub deprovision: DeprovisionPolicy,
    pub duplicate_email: DuplicateEmail,
    /// SCIM needs the Enterprise plan; off answers 403 as a non-Enterprise org does.
    pub scim_enabled: bool,
    pub faults: Faults,
    pub oauth_client_id: String,
    pub oauth_client_secret: String,
    /// How long an OAuth access token lives; `None` = never expires (`expires_in: 0`).
    pub access_token_ttl: Option<Duration>,
    /// Whether a refresh hands out a new refresh token and retires the old one.
    pub rotate_refresh_tokens: bool,
    pub webhooks: WebhookConfig,
    pub org_id: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            contacts: 1000,
            agents: 20,
            accounts: None,
            profile: Profile::Seed,
            token: "sim-token".into(),
            scoped_tokens: Vec::new(),
            rate_limit: None,
            rate_headers: false,
            deprovision: DeprovisionPolicy::Delete,
            duplicate_email: DuplicateEmail::Update,
            scim_enabled: true,
            faults: Faults::default(),
            oauth_client_id: "sim-client".into(),
            oauth_client_secret: "sim-secret".into(),
            access_token_ttl: Some(Duration::from_secs(7200)),
            rotate_refresh_tokens: true,
            webhooks: WebhookConfig::default(),
            org_id: 1_000_001,
        }
    }
}
