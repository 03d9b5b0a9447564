//! `idgraph` as a library: the app (settings, the crawl → graph pipeline, the scheduler, the
//! adapter to the HTTP layer) and the command line's commands as functions. `main.rs` only parses
//! and dispatches.

pub mod app;
pub mod cli;
