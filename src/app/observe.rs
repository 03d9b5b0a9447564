//! How the pipeline and the scheduler report what they do, without knowing who listens: the
//! terminal's progress bar (`cli::progress`) and the server's metrics (`app::http`) each
//! implement these.

use idgraph_crawler::{ClientStats, Source};

/// What a crawl reports as it goes.
pub trait CrawlObserver: Send + Sync {
    /// A page of `records` from `source` was stored.
    fn page(&self, _source: Source, _records: usize, _stats: &ClientStats) {}
    /// A record was skipped (its error is logged).
    fn bad_record(&self) {}
    fn warning(&self, _message: &str) {}
    /// The crawl started (`true`) or ended (`false`), with the client's figures at the end.
    fn crawling(&self, _on: bool, _stats: &ClientStats) {}
    /// Pages waiting to be stored.
    fn queue_depth(&self, _pages: usize) {}
    /// The new generation is live.
    fn finished(&self, _message: &str) {}
}

/// A crawl nobody watches (scheduled runs log their result at the end).
pub struct Quiet;

impl CrawlObserver for Quiet {}

/// What a scheduled run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunKind {
    Full,
    Agents,
}

/// What the scheduler reports.
pub trait RunObserver: Send + Sync {
    /// When the next runs are due (wall-clock milliseconds).
    fn next_runs(&self, _full_at_ms: i64, _agents_at_ms: i64) {}
    fn run_finished(&self, _kind: RunKind, _ok: bool) {}
}

impl RunObserver for Quiet {}

/// What the confirmer of webhooks reports (`app::confirm`).
pub trait ConfirmObserver: Send + Sync {
    /// A batch of announced contacts was read from Drift: `reads` answers, `applied` of them
    /// changed the index; `waiting` contacts are left in the queue.
    fn confirmed(&self, _reads: usize, _applied: usize, _waiting: usize) {}
}

impl ConfirmObserver for Quiet {}
