//! Prometheus metrics in the text exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS_S: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0];

/// Counters and gauges, written by the server and by the binary's crawler and scheduler.
#[derive(Debug, Default)]
pub struct Metrics {
    pub graphql_requests: AtomicU64,
    pub graphql_errors: AtomicU64,
    /// GraphQL requests answered by a plan (see `plan`), without async-graphql.
    pub graphql_planned: AtomicU64,
    pub unauthorized: AtomicU64,
    latency_buckets: [AtomicU64; 10],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    pub webhooks_received: AtomicU64,
    pub webhooks_rejected: AtomicU64,
    pub webhooks_duplicates: AtomicU64,
    pub webhooks_applied: AtomicU64,
    /// Announced contacts read from Drift.
    pub webhooks_confirmed: AtomicU64,
    pub webhook_queue_depth: AtomicI64,
    pub crawl_requests: AtomicU64,
    pub crawl_rate_limited: AtomicU64,
    pub crawl_retries: AtomicU64,
    pub crawl_records: AtomicU64,
    pub crawl_pages: AtomicU64,
    pub crawl_queue_depth: AtomicI64,
    pub crawling: AtomicI64,
    pub crawls_ok: AtomicU64,
    pub crawls_failed: AtomicU64,
    pub agent_refreshes_ok: AtomicU64,
    pub agent_refreshes_failed: AtomicU64,
    /// Indexes built again from the store (`rebuild_every`).
    pub index_rebuilds: AtomicU64,
    pub last_crawl_success_s: AtomicI64,
    pub next_crawl_s: AtomicI64,
    pub next_agents_refresh_s: AtomicI64,
}

impl Metrics {
    pub fn observe_query(&self, d: Duration) {
        // One bucket per request (the first that holds it); `render` adds them up, so that a
        // fast request touches three counters, not twelve.
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS_S.iter().position(|b| s <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Renders every metric, plus the index gauges given.
    pub fn render(&self, generation: u64, contacts: usize, agents: usize, orphans: usize) -> String {
        let mut out = String::with_capacity(4096);
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("idgraph_graphql_requests_total", "GraphQL requests served.", l(&self.graphql_requests));
        counter("idgraph_graphql_errors_total", "GraphQL responses with errors.", l(&self.graphql_errors));
        counter(
            "idgraph_graphql_planned_total",
            "GraphQL requests answered by a cached plan, without async-graphql.",
            l(&self.graphql_planned),
        );
        counter("idgraph_unauthorized_total", "Requests refused for a missing or wrong token.", l(&self.unauthorized));
        counter("idgraph_webhooks_received_total", "Webhook deliveries accepted.", l(&self.webhooks_received));
        counter("idgraph_webhooks_rejected_total", "Webhook deliveries refused.", l(&self.webhooks_rejected));
        counter(
            "idgraph_webhooks_duplicates_total",
            "Webhook deliveries naming a contact already waiting to be read.",
            l(&self.webhooks_duplicates),
        );
        counter(
            "idgraph_webhooks_confirmed_total",
            "Contacts named by webhooks and read from Drift.",
            l(&self.webhooks_confirmed),
        );
        counter(
            "idgraph_webhooks_applied_total",
            "Reads of announced contacts that changed the index.",
            l(&self.webhooks_applied),
        );
        counter("idgraph_crawl_requests_total", "Requests made to Drift.", l(&self.crawl_requests));
        counter("idgraph_crawl_rate_limited_total", "429 answers from Drift.", l(&self.crawl_rate_limited));
        counter("idgraph_crawl_retries_total", "Requests to Drift retried.", l(&self.crawl_retries));
        counter("idgraph_crawl_records_total", "Records crawled.", l(&self.crawl_records));
        counter("idgraph_crawl_pages_total", "Pages crawled.", l(&self.crawl_pages));
        counter("idgraph_crawls_succeeded_total", "Full reindexes that switched.", l(&self.crawls_ok));
        counter("idgraph_crawls_failed_total", "Full reindexes that failed.", l(&self.crawls_failed));
        counter(
            "idgraph_agent_refreshes_succeeded_total",
            "Agents-only refreshes applied.",
            l(&self.agent_refreshes_ok),
        );
        counter(
            "idgraph_agent_refreshes_failed_total",
            "Agents-only refreshes that failed.",
            l(&self.agent_refreshes_failed),
        );
        counter(
            "idgraph_index_rebuilds_total",
            "Times the served index was built again from the store (rebuild_every).",
            l(&self.index_rebuilds),
        );
        let mut gauge = |name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "idgraph_webhook_queue_depth",
            "Contacts named by webhooks waiting to be read from Drift.",
            g(&self.webhook_queue_depth),
        );
        gauge("idgraph_crawl_queue_depth", "Crawled pages waiting to be stored.", g(&self.crawl_queue_depth));
        gauge("idgraph_crawling", "1 while a crawl runs.", g(&self.crawling));
        gauge(
            "idgraph_last_crawl_success_timestamp_seconds",
            "When the last reindex switched.",
            g(&self.last_crawl_success_s),
        );
        gauge("idgraph_next_crawl_timestamp_seconds", "When the next full reindex is due.", g(&self.next_crawl_s));
        gauge(
            "idgraph_next_agents_refresh_timestamp_seconds",
            "When the next agents refresh is due.",
            g(&self.next_agents_refresh_s),
        );
        gauge("idgraph_index_generation", "The generation being served.", generation as i64);
        gauge("idgraph_index_contacts", "Contacts in the index.", contacts as i64);
        gauge("idgraph_index_agents", "Agents in the index.", agents as i64);
        gauge("idgraph_index_orphans", "Orphaned contacts.", orphans as i64);
        let _ = writeln!(
            out,
            "# HELP idgraph_graphql_duration_seconds GraphQL request latency.\n# TYPE idgraph_graphql_duration_seconds histogram"
        );
        let mut below = 0;
        for (i, b) in BUCKETS_S.iter().enumerate() {
            below += l(&self.latency_buckets[i]);
            let _ = writeln!(out, "idgraph_graphql_duration_seconds_bucket{{le=\"{b}\"}} {below}");
        }
        let count = l(&self.latency_count);
        let _ = writeln!(out, "idgraph_graphql_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "idgraph_graphql_duration_seconds_sum {}", l(&self.latency_sum_us) as f64 / 1e6);
        let _ = writeln!(out, "idgraph_graphql_duration_seconds_count {count}");
        out
    }
}
