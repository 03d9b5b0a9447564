//! Crawl progress: bars on a terminal, structured log lines otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idgraph_crawler::{ClientStats, Source};

use crate::app::observe::CrawlObserver;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;

/// Progress of one crawl. `Progress::quiet()` reports nothing (scheduled runs log at the end).
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    contacts: AtomicU64,
    agents: AtomicU64,
    accounts: AtomicU64,
    pages: AtomicU64,
    bad: AtomicU64,
    /// Expected contacts (from the previous generation), for an ETA.
    expected: Option<u64>,
    budget_per_s: f64,
    last_log: Mutex<Instant>,
    log: bool,
}

impl Progress {
    pub fn new(expected_contacts: Option<u64>, budget_per_s: f64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress { bar, inner: Arc::new(Inner::new(expected_contacts, budget_per_s, true)) }
    }
}

impl CrawlObserver for Progress {
    fn page(&self, source: Source, records: usize, stats: &ClientStats) {
        let i = &self.inner;
        i.pages.fetch_add(1, Ordering::Relaxed);
        let counter = match source {
            Source::Contacts => &i.contacts,
            Source::Users => &i.agents,
            // SCIM users are the same agents, seen again: not counted twice.
            Source::Scim => return,
            Source::Accounts => &i.accounts,
        };
        counter.fetch_add(records as u64, Ordering::Relaxed);
        let requests = stats.requests.load(Ordering::Relaxed);
        let limited = stats.rate_limited.load(Ordering::Relaxed);
        let el = i.started.elapsed().as_secs_f64().max(0.001);
        let per_min = requests as f64 / el * 60.0;
        let contacts = i.contacts.load(Ordering::Relaxed);
        let eta = i.expected.filter(|e| *e > contacts).map(|e| {
            // At the budget: one request a page of 100.
            let left_requests = (e - contacts) as f64 / 100.0;
            Duration::from_secs_f64(left_requests / i.budget_per_s)
        });
        let msg = format!(
            "contacts {contacts} · agents {} · accounts {} · pages {} · {:.0} req/min · 429s {limited}{}",
            i.agents.load(Ordering::Relaxed),
            i.accounts.load(Ordering::Relaxed),
            i.pages.load(Ordering::Relaxed),
            per_min,
            eta.map(|d| format!(" · ETA {}", humantime::format_duration(Duration::from_secs(d.as_secs()))))
                .unwrap_or_default()
        );
        if let Some(b) = &self.bar {
            b.set_message(msg);
        } else if i.log {
            let mut last = i.last_log.lock();
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                tracing::info!(
                    contacts,
                    pages = i.pages.load(Ordering::Relaxed),
                    requests,
                    rate_limited = limited,
                    "crawling"
                );
            }
        }
    }

    fn bad_record(&self) {
        self.inner.bad.fetch_add(1, Ordering::Relaxed);
    }

    fn warning(&self, w: &str) {
        match &self.bar {
            Some(b) => b.println(format!("warning: {w}")),
            None => tracing::warn!("{w}"),
        }
    }

    fn finished(&self, msg: &str) {
        // The bar's line is cleared and the message printed on a line of its own, so that what
        // the caller prints next starts on the next line.
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            eprintln!("{msg}");
        }
    }
}

impl Inner {
    fn new(expected: Option<u64>, budget_per_s: f64, log: bool) -> Inner {
        Inner {
            started: Instant::now(),
            contacts: AtomicU64::new(0),
            agents: AtomicU64::new(0),
            accounts: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            expected,
            budget_per_s: budget_per_s.max(0.001),
            last_log: Mutex::new(Instant::now()),
            log,
        }
    }
}
