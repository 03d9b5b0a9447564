//! Drift REST and SCIM clients that yield records: auth, one shared rate budget, retries,
//! paging and resumable checkpoints.
//!
//! The crawler knows nothing of graphs or storage. It sends pages of [`Record`]s through a bounded
//! channel together with the checkpoint that follows them; whoever stores the records stores the
//! checkpoint in the same write, so a killed crawl resumes exactly where its last stored page ended.

pub mod auth;
pub mod budget;
pub mod client;
mod crawl;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use auth::{Credentials, OAuthConfig, Secret, StoredTokens, TokenSource};
pub use budget::{Budget, BudgetConfig};
pub use client::{transport_cause, ClientStats, DriftClient, RetryPolicy};
pub use crawl::Crawler;
pub use idgraph_model::Record;

/// Why a crawl or a request failed. Messages name endpoints by path only: never a token, never an
/// email.
#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{endpoint}: refused with HTTP {status}: {message}")]
    Unauthorized { endpoint: String, status: u16, message: String },
    #[error("{endpoint}: the token lacks a scope: {message}")]
    Forbidden { endpoint: String, message: String },
    #[error("{endpoint}: HTTP {status}: {message}")]
    Http { endpoint: String, status: u16, message: String },
    #[error("{endpoint}: gave up after {attempts} attempts; last: {last}")]
    Exhausted { endpoint: String, attempts: u32, last: String },
    #[error("{endpoint}: still rate limited after {times} tries")]
    RateLimited { endpoint: String, times: u32 },
    #[error("{endpoint}: unexpected response shape: {detail}")]
    Shape { endpoint: String, detail: String },
    #[error("{0}: the bound was reached before the source ended")]
    Bound(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the consumer of the crawl stopped")]
    Closed,
}

/// The parts of an org the crawler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    Users,
    Scim,
    Accounts,
    Contacts,
}

/// How contacts were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContactsMode {
    /// The brief's cursor listing.
    Listing,
    /// Drift's documented API: conversations, then each new contact by id.
    Discovery,
}

/// Where a crawl is; stored with the records that precede it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub mode: Option<ContactsMode>,
    /// The listing cursor for the next page.
    pub contacts_next: Option<String>,
    /// The next conversations page (a URL) in discovery mode.
    pub conversations_next: Option<String>,
    /// The newest conversation `updatedAt` seen by this crawl (epoch ms).
    pub high_water_ms: Option<i64>,
    pub done: Vec<Source>,
    /// Whether SCIM answered (false: a REST-only crawl).
    pub scim_available: Option<bool>,
    /// Incremental discovery: read conversations back to this time only (epoch ms).
    #[serde(default)]
    pub since_ms: Option<i64>,
}

impl Checkpoint {
    pub fn is_done(&self, s: Source) -> bool {
        self.done.contains(&s)
    }
    pub fn apply(&mut self, u: &CheckpointUpdate) {
        match u {
            CheckpointUpdate::Listing { next } => {
                self.mode = Some(ContactsMode::Listing);
                self.contacts_next = next.clone();
            }
            CheckpointUpdate::Conversations { next, high_water_ms } => {
                self.mode = Some(ContactsMode::Discovery);
                self.conversations_next = next.clone();
                if let Some(h) = high_water_ms {
                    self.high_water_ms = Some(self.high_water_ms.map_or(*h, |x| x.max(*h)));
                }
            }
            CheckpointUpdate::Done(s) => {
                if !self.done.contains(s) {
                    self.done.push(*s);
                }
            }
            CheckpointUpdate::ScimAvailable(b) => self.scim_available = Some(*b),
        }
    }
}

/// A change to the checkpoint that becomes true once the records sent with it are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CheckpointUpdate {
    Listing { next: Option<String> },
    Conversations { next: Option<String>, high_water_ms: Option<i64> },
    Done(Source),
    ScimAvailable(bool),
}

/// What a crawl sends to its consumer.
#[derive(Debug)]
pub enum CrawlEvent {
    /// A page of records, and the checkpoint that holds once they are stored.
    Page {
        source: Source,
        records: Vec<Record>,
        checkpoint: Vec<CheckpointUpdate>,
    },
    /// One record that could not be read; the rest of its page was kept.
    BadRecord {
        source: Source,
        error: String,
    },
    Warning(String),
}

/// Everything a crawl needs.
#[derive(Debug, Clone)]
pub struct CrawlConfig {
    /// REST base, e.g. `https://driftapi.com`.
    pub drift_url: String,
    /// SCIM base, e.g. `https://driftapi.com/scim/v2`; `None` skips SCIM.
    pub scim_url: Option<String>,
    pub credentials: Credentials,
    /// A separate SCIM token; `None` uses the REST credentials (and so the same budget).
    pub scim_credentials: Option<Credentials>,
    pub budget: BudgetConfig,
    pub retry: RetryPolicy,
    /// Contacts per page, 1..=100.
    pub page_size: usize,
    pub request_timeout: Duration,
    /// Contact lookups in flight at once in discovery mode.
    pub concurrency: usize,
    /// Pages waiting for the consumer before the crawl waits.
    pub channel_pages: usize,
    /// A file of known emails or external ids (one a line; `ext:` marks an external id).
    pub known_ids_file: Option<PathBuf>,
    /// Incremental discovery: stop reading conversations older than this (epoch ms).
    pub since_ms: Option<i64>,
    /// An upper bound on the pages of any one source.
    pub max_pages: usize,
}

impl CrawlConfig {
    pub fn new(drift_url: impl Into<String>, credentials: Credentials) -> CrawlConfig {
        CrawlConfig {
            drift_url: drift_url.into(),
            scim_url: None,
            credentials,
            scim_credentials: None,
            budget: BudgetConfig::default(),
            retry: RetryPolicy::default(),
            page_size: 100,
            request_timeout: Duration::from_secs(30),
            concurrency: 4,
            channel_pages: 8,
            known_ids_file: None,
            since_ms: None,
            max_pages: 1_000_000,
        }
    }
}

/// What a finished crawl reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CrawlSummary {
    pub contacts: u64,
    pub users: u64,
    pub scim_users: u64,
    pub accounts: u64,
    pub bad_records: u64,
    pub requests: u64,
    pub rate_limited: u64,
    pub retries: u64,
    pub scim_available: bool,
    pub mode: Option<ContactsMode>,
    pub high_water_ms: Option<i64>,
    pub elapsed_ms: u64,
}
