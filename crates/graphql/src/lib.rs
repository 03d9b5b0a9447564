//! The GraphQL schema and the axum router: GraphQL, GraphiQL, webhooks, health and metrics.
//!
//! This is the only crate that knows async-graphql. It reads the graph, and reaches the crawler
//! and scheduler (which live in the binary) only through the [`Operations`] trait.

mod cases;
mod cost;
mod graphiql;
mod introspection;
pub mod metrics;
mod orgs;
mod plan;
mod schema;
mod server;
mod signin;
mod webhooks;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use metrics::Metrics;
pub use orgs::{front, OrgRouters, ORG_HEADER};
pub use schema::{build_introspection_schema, build_schema, federation_sdl, sdl, AppSchema, Ctx};
pub use server::{
    check_cors_origins, router, serve_connections, ApiTokens, AppState, ConnLimits, Directory, ServerConfig,
};
pub use signin::PeerAddr;
pub use webhooks::WebhookConfig;

/// What a reindex covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    Full,
    Agents,
}

/// The scheduler's state, for `indexStatus` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    pub crawling: bool,
    pub crawling_scope: Option<Scope>,
    pub next_crawl_at_ms: Option<i64>,
    pub next_agents_at_ms: Option<i64>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_finished_at_ms: Option<i64>,
}

/// A reassignment asked for through GraphQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReassignRequest {
    pub from_agent: u64,
    pub to_agents: Vec<u64>,
    pub dry_run: bool,
    /// Move an ACTIVE agent's contacts too.
    pub force: bool,
}

pub use idgraph_graph::reassign::{Job as ReassignJob, Outcome as ReassignOutcome};

/// The binary's side: the scheduler and the writes to Drift.
pub trait Operations: Send + Sync + 'static {
    fn schedule(&self) -> ScheduleStatus;
    /// Asks for a run; false when one of that scope is already running or queued.
    fn trigger(&self, scope: Scope) -> bool;
    fn reassign(&self, req: ReassignRequest) -> BoxFuture<'static, Result<ReassignOutcome, String>>;
    /// How long the refresher needs to re-read `contacts` contacts once at its share of the
    /// budget; `None` when it is off.
    fn projected_cycle_seconds(&self, _contacts: usize) -> Option<f64> {
        None
    }
    /// How long the refresher's last complete cycle took; `None` before the first or when off.
    fn last_cycle_seconds(&self) -> Option<f64> {
        None
    }
    /// Asks the allocator to hand freed memory back to the system, on the calling thread, after
    /// work that freed much of it (a backup). The binary knows its allocator; by default nothing.
    fn give_back_memory(&self) {}
    /// A webhook announced changes to these contacts: queue them to be read from Drift (before
    /// anything is recorded). Blocks for a durable write. `Err` when they cannot be queued (the
    /// queue is full, or this server does not read Drift): the delivery is refused with 503.
    fn announce(&self, _contact_ids: &[u64]) -> Result<Announced, String> {
        Err("this server does not read Drift: webhooks cannot be confirmed".to_string())
    }
    /// A reassignment job by id.
    fn reassignment(&self, _id: u64) -> Option<ReassignJob> {
        None
    }
    /// The offboarding cases, where this server keeps them.
    fn cases(&self) -> Option<std::sync::Arc<dyn idgraph_cases::Desk>> {
        None
    }
}

/// What [`Operations::announce`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Announced {
    /// Contacts newly queued.
    pub queued: usize,
    /// Contacts waiting already (the delivery adds nothing).
    pub already_queued: usize,
    /// Contacts waiting now.
    pub queue_len: usize,
}

/// Operations for a read-only server (an audit, a test): nothing can be triggered.
#[derive(Debug, Default)]
pub struct NoOperations;

impl Operations for NoOperations {
    fn schedule(&self) -> ScheduleStatus {
        ScheduleStatus::default()
    }
    fn trigger(&self, _: Scope) -> bool {
        false
    }
    fn reassign(&self, _: ReassignRequest) -> BoxFuture<'static, Result<ReassignOutcome, String>> {
        Box::pin(async { Err("this server cannot write to Drift".to_string()) })
    }
}

/// One org a server holds, as the cross-org fields (`person`, `orgs`) and the router see it.
#[derive(Clone)]
pub struct OrgView {
    pub name: String,
    /// The org's graph; `None` while it cannot be opened (`error` says why).
    pub graph: Option<std::sync::Arc<idgraph_graph::Graph>>,
    pub ops: Option<std::sync::Arc<dyn Operations>>,
    /// Why the org is failing (its store cannot be opened, its last crawl failed), if it is.
    pub error: Option<String>,
}

/// The orgs a server holds, as they are now (a reload adds and removes them).
pub trait OrgDirectory: Send + Sync + 'static {
    fn orgs(&self) -> Vec<OrgView>;
    /// Reads the configuration again: orgs added are started, orgs removed stopped, the others
    /// untouched. Says what changed.
    fn reload(&self) -> BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("this server does not reload its configuration".to_string()) })
    }
}
