//! The app layer: what runs inside `idgraph` whatever the front end.
//!
//! - `access`: the server's `Access` (tokens, sign-in, JWTs, the access log) from the settings.
//! - `cases`: offboarding cases opened from the change feed, carried out, checked, told.
//! - `settings`: defaults < TOML < environment < flags, resolved once.
//! - `pipeline`: crawl → staging generation → switch; agents refresh in place.
//! - `scheduler`: when runs happen (on tokio's clock), never two at once.
//! - `reassign`: reassignment jobs: moves through Drift in the background, each recorded in the
//!   graph as Drift answers, kept in the store across restarts.
//! - `confirm`: what a webhook announces, read from Drift before it is recorded.
//! - `refresher`: re-reads what is known, by priority, at a share of the budget.
//! - `identity`: the org a data directory holds (its URLs), refused when another is given.
//! - `observe`: how the pipeline and scheduler report, to whoever listens.
//! - `http`: metrics and `Operations` for the GraphQL crate.
//! - `orgs`: many orgs in one server: a registry of per-org pipelines, each on its own runtime,
//!   and their routers (with `http`, the only modules that know the GraphQL crate).

pub mod access;
pub mod cases;
pub mod confirm;
pub mod http;
pub mod identity;
pub mod observe;
pub mod orgs;
pub mod pipeline;
pub mod reassign;
pub mod refresher;
pub mod scheduler;
pub mod settings;
