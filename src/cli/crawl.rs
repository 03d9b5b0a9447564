//! `idgraph crawl`: one crawl into the data directory.

use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use idgraph_crawler::Crawler;
use idgraph_graph::ShrinkGuard;

use super::common::open_graph;
use super::progress::Progress;
use super::{DriftArgs, StoreArgs};
use crate::app::pipeline;
use crate::app::settings::{Env, Settings};

#[derive(Args)]
pub struct CrawlArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub drift: DriftArgs,
    /// Switch even if the new generation is much smaller than the current one, or crawl into a
    /// data directory that holds another org (a different Drift URL).
    #[arg(long)]
    pub force: bool,
    /// Do not crawl: print how long a first crawl and a refresh cycle take for an org of
    /// `--contacts` contacts at the budget (`--rate-limit`) and `--refresh-share`.
    #[arg(long, requires = "contacts")]
    pub estimate: bool,
    /// The org's size, for --estimate.
    #[arg(long)]
    pub contacts: Option<u64>,
    /// The org has a contact listing (pages of 100), for --estimate; without it, a request a
    /// contact, as Drift documents.
    #[arg(long)]
    pub listing: bool,
    /// The refresher's share of the budget, for --estimate.
    #[arg(long, default_value_t = crate::app::settings::defaults::REFRESH_SHARE)]
    pub refresh_share: f64,
}

/// What a crawl and a refresh cycle cost, in requests and time.
pub fn estimate(contacts: u64, per_s: f64, share: f64, listing: bool) -> String {
    // Discovery reads conversations (100 a page) and then each contact; a listing, 100 a page.
    let first = if listing { contacts.div_ceil(100) } else { contacts + contacts.div_ceil(100) };
    let cycle = if listing { contacts.div_ceil(100) } else { contacts };
    let t = |requests: u64, rate: f64| readable((requests as f64 / rate).ceil() as u64);
    let refresh = if share <= 0.0 {
        "  no refresher (a share of 0): contacts are read again only by full crawls\n".to_string()
    } else {
        format!(
            "  refresh cycle at {:.0}% of the budget: {cycle} requests, {} (every contact re-read once)\n",
            share * 100.0,
            t(cycle, per_s * share)
        )
    };
    format!(
        "{contacts} contacts, {}, budget {:.2} requests/s ({:.0}/min)\n  first crawl: {first} requests, {}\n{refresh}",
        if listing {
            "with a contact listing (100 a request)"
        } else {
            "no listing (a request a contact, as Drift documents)"
        },
        per_s,
        per_s * 60.0,
        t(first, per_s),
    )
}

/// A duration as a person says it: `3 days 12 h 10 min`, `50 min`, `40 s`.
pub fn readable(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d} day{}", if d == 1 { "" } else { "s" }));
    }
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if s > 0 && d == 0 && h == 0 {
        parts.push(format!("{s} s"));
    }
    if parts.is_empty() {
        parts.push("0 s".into());
    }
    parts.join(" ")
}

pub async fn crawl(a: CrawlArgs) -> Result<()> {
    let settings = Settings::load(&a.drift.flags(a.store.flags()), &Env::from_process())?;
    settings.require_org()?;
    if a.estimate {
        let contacts = a.contacts.unwrap_or(0);
        print!("{}", estimate(contacts, settings.drift.budget.per_second(), a.refresh_share, a.listing));
        return Ok(());
    }
    // Credentials first: a command that cannot crawl creates no data directory.
    settings.drift.crawl_config()?;
    let graph = Arc::new(open_graph(
        &settings.data_dir,
        "stop the server, or trigger `mutation { reindex }` at {server}",
        true,
    )?);
    let mut drift = settings.drift.clone();
    crate::app::identity::reconcile(&graph, &mut drift, a.force)?;
    let cfg = drift.crawl_config()?;
    let per_s = cfg.budget.per_second();
    eprintln!(
        "crawling {} at {:.2} requests/s ({:.0}/min; --rate-limit to change)",
        cfg.drift_url,
        per_s,
        per_s * 60.0
    );
    let crawler = Crawler::new(cfg)?;
    crate::app::identity::check_token_org(&graph, &crawler, a.force).await?;
    let progress = Progress::new(graph.info().map(|i| i.contacts), per_s);
    let guard = if a.force { ShrinkGuard::off() } else { ShrinkGuard::default() };
    let report = pipeline::reindex(&graph, &crawler, &progress, guard, drift.incremental).await?;
    let s = &report.summary;
    eprintln!(
        "generation {} is live: {} contacts, {} users, {} SCIM users, {} accounts; {} requests ({} answered 429, {} retried), {} bad records skipped, {} warnings, {:.1}s{}",
        report.generation,
        s.contacts,
        s.users,
        s.scim_users,
        s.accounts,
        s.requests,
        s.rate_limited,
        s.retries,
        s.bad_records,
        report.warnings.len(),
        s.elapsed_ms as f64 / 1000.0,
        if report.resumed { " (resumed)" } else { "" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{estimate, readable};

    #[test]
    fn estimates_follow_the_budget() {
        // The figures: 1,000,000 contacts at 200/min without a listing is about 83 hours.
        let e = estimate(1_000_000, 200.0 / 60.0, 0.5, false);
        assert!(e.contains("first crawl: 1010000 requests, 3 days 12 h 10 min"), "{e}");
        assert!(e.contains("refresh cycle at 50% of the budget: 1000000 requests, 6 days 22 h 40 min"), "{e}");
        let l = estimate(1_000_000, 200.0 / 60.0, 0.5, true);
        assert!(l.contains("first crawl: 10000 requests, 50 min"), "{l}");
        let off = estimate(1000, 200.0 / 60.0, 0.0, false);
        assert!(off.contains("no refresher (a share of 0)") && !off.contains("never"), "{off}");
        assert_eq!(readable(86_400), "1 day");
        assert_eq!(readable(40), "40 s");
    }
}
