//! Freshness at scale: an org in the `drift` profile (no listing: a request a contact) churning as
//! real orgs do, crawled once, then kept fresh by the agents refresh and the refresher alone,
//! under a budget time-compressed from Drift's 200 a minute (200 a second: one simulated hour
//! takes a minute). At fixed intervals it compares idgraph's orphans with the simulator's truth.
//!
//!     cargo bench --bench freshness
//!     CONTACTS=20000 HOURS=3 cargo bench --bench freshness     # smaller, quicker
//!
//! Prints: orphan recall and precision (of those listed as verified), time from a departure to
//! its orphans being verified, data age p50/p99/max, requests by purpose, 429s, and the measured
//! refresh cycle over the projected one.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drift_sim::{Churn, Profile, Sim, SimConfig};
use idgraph::app::observe::Quiet;
use idgraph::app::pipeline;
use idgraph::app::refresher::Refresher;
use idgraph::app::scheduler::{FullSchedule, PipelineRunner, ScheduleConfig, Scheduler};
use idgraph_crawler::{CrawlConfig, Crawler, Credentials, Secret};
use idgraph_graph::{ChangeFilter, ChangeKind, Graph, ShrinkGuard};
use idgraph_model::Contact;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// The simulator's orphans: contacts whose owner is no active, non-bot agent.
fn truth(sim: &Sim) -> BTreeSet<u64> {
    let users = sim.users_json();
    let active: BTreeSet<u64> = users.iter().filter_map(|u| u["id"].as_u64()).collect();
    sim.contacts_json()
        .iter()
        .filter_map(|c| Contact::from_json(c).ok())
        .filter(|c| c.owner_id.is_some_and(|o| !active.contains(&o)))
        .map(|c| c.id)
        .collect()
}

/// Departures whose orphans were all verified since: when the last of them was.
fn watch_departures(graph: &Graph, verify_lag: &mut HashMap<u64, f64>) {
    let f = ChangeFilter { kinds: Some(vec!["AGENT_DEPARTED".into()]), ..ChangeFilter::default() };
    for d in graph.changes(&f, usize::MAX).unwrap() {
        if let ChangeKind::AgentDeparted { agent } = d.kind {
            if verify_lag.contains_key(&agent) {
                continue;
            }
            let ix = graph.read();
            let times: Vec<i64> = ix
                .owned_contact_ids(agent)
                .iter()
                .filter_map(|id| ix.contact_ref(*id))
                .map(|c| c.verified_at_ms)
                .collect();
            if times.iter().all(|t| *t >= d.at_ms) {
                let last = times.iter().copied().max().unwrap_or(d.at_ms);
                verify_lag.insert(agent, (last - d.at_ms) as f64 / 1000.0);
            }
        }
    }
}

fn main() {
    let contacts: usize = env("CONTACTS", 100_000);
    let agents: usize = env("AGENTS", 1_000);
    let rate: f64 = env("RATE", 200.0);
    let speedup: f64 = env("SPEEDUP", 60.0);
    let hours: f64 = env("HOURS", 6.0);
    let share: f64 = env("SHARE", 0.5);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let sim = Sim::new(SimConfig {
            contacts,
            agents,
            profile: Profile::Drift,
            token: "bench".into(),
            rate_limit: Some(format!("{}/s", rate as u64).parse().unwrap()),
            ..SimConfig::default()
        });
        let running = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut cfg = CrawlConfig::new(running.url(), Credentials::Token(Secret::new("bench")));
        cfg.scim_url = Some(running.scim_url());
        cfg.budget = format!("{}/s", rate as u64).parse().unwrap();
        let crawler = Crawler::new(cfg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let graph = Arc::new(Graph::open(dir.path()).unwrap());
        println!("org: {contacts} contacts, {agents} agents, drift profile; budget {rate}/s = 200/min x{speedup}");
        let t = Instant::now();
        pipeline::reindex(&graph, &crawler, &Quiet, ShrinkGuard::default(), true).await.unwrap();
        let crawl_s = t.elapsed().as_secs_f64();
        let crawl_requests = crawler.client().stats.requests.load(Ordering::Relaxed);
        println!(
            "first crawl: {crawl_s:.0} s ({crawl_requests} requests; {:.1} simulated hours)",
            crawl_s * speedup / 3600.0
        );

        // A real org's week, compressed: per simulated hour.
        let per_h = |n: f64| format!("{}/h", n * speedup);
        let churn: Churn = format!(
            "owner={},delete={},create={},deprovision={}",
            per_h(env("OWNER_PER_H", 300.0)),
            per_h(env("DELETE_PER_H", 20.0)),
            per_h(env("CREATE_PER_H", 60.0)),
            per_h(env("DEPROVISION_PER_H", 2.0)),
        )
        .parse()
        .unwrap();
        let churn_for = Duration::from_secs_f64(hours * 3600.0 / speedup * 0.75);
        sim.start_churn(Churn { duration: Some(churn_for), seed: 11, ..churn });
        let runner = PipelineRunner {
            graph: graph.clone(),
            crawler: crawler.clone(),
            observer: Arc::new(Quiet),
            guard: ShrinkGuard::off(),
            incremental: true,
        };
        let schedule = ScheduleConfig {
            full: FullSchedule::Every(Duration::from_secs(1_000_000)),
            agents_every: Duration::from_secs_f64(300.0 / speedup),
            rebuild_every: None,
            jitter: 0.0,
        };
        let scheduler = Scheduler::start(Arc::new(runner), Arc::new(Quiet), schedule, false);
        let refresher = Refresher::start(graph.clone(), crawler.clone(), scheduler.clone(), share).unwrap();
        let projected = refresher.projected_cycle_seconds(contacts);
        println!(
            "refresher: {:.0}% of the budget; projected cycle {projected:.0} s ({:.1} simulated hours); churn for the first {:.1} simulated hours, then none",
            share * 100.0,
            projected * speedup / 3600.0,
            hours * 0.75
        );
        println!("\n  sim h   orphans  idgraph  recall  verified  precision  age p50/p99/max (sim min)  reads  429s");
        let started = Instant::now();
        let requests0 = crawler.client().stats.requests.load(Ordering::Relaxed);
        let sample = Duration::from_secs_f64(1800.0 / speedup);
        let mut verify_lag: HashMap<u64, f64> = HashMap::new();
        let mut cycle_times: Vec<(f64, f64)> = Vec::new();
        let mut last_cycles = 0;
        let mut worst_precision: f64 = 1.0;
        // Over every check: (orphans listed as verified, of them orphans in Drift too).
        let mut pooled = (0usize, 0usize);
        let mut last_recall = 0.0;
        let mut next_sample = Instant::now() + sample;
        while started.elapsed().as_secs_f64() * speedup < hours * 3600.0 {
            // Departures are watched a few times a simulated minute: orphans are checked again
            // every orphan period, so the moment all of a leaver's were first verified must be
            // caught when it happens, not at the next half-hour sample.
            tokio::time::sleep(Duration::from_millis(250)).await;
            watch_departures(&graph, &mut verify_lag);
            if Instant::now() < next_sample {
                continue;
            }
            next_sample += sample;
            let truth = truth(&sim);
            let (listed, verified): (BTreeSet<u64>, BTreeSet<u64>) = {
                let ix = graph.read();
                let all = ix.orphan_refs(None, usize::MAX);
                let listed = all.iter().map(|(_, c, _)| c.id).collect();
                let verified = all.iter().filter(|(k, c, _)| c.verified_at_ms >= k.1).map(|(_, c, _)| c.id).collect();
                (listed, verified)
            };
            let recall = if truth.is_empty() { 1.0 } else { truth.intersection(&listed).count() as f64 / truth.len() as f64 };
            let right = verified.intersection(&truth).count();
            let precision = if verified.is_empty() { 1.0 } else { right as f64 / verified.len() as f64 };
            worst_precision = worst_precision.min(precision);
            pooled = (pooled.0 + verified.len(), pooled.1 + right);
            last_recall = recall;
            let cycles = refresher.stats.cycles.load(Ordering::Relaxed);
            if cycles > last_cycles {
                // The refresher times its own cycles; the projection is the one of now (it moves
                // with the number of orphans).
                let took = refresher.last_cycle_seconds().unwrap_or(0.0);
                cycle_times.push((took, refresher.projected_cycle_seconds(graph.read().counts().0)));
                last_cycles = cycles;
            }
            let f = graph.freshness();
            let m = |ms: Option<i64>| ms.map_or("never".to_string(), |a| format!("{:.0}", a as f64 / 1000.0 * speedup / 60.0));
            println!(
                "  {:>5.1} {:>9} {:>8} {:>6.1}% {:>9} {:>9.2}%  {:>8}/{}/{}  {:>12} {:>5}",
                started.elapsed().as_secs_f64() * speedup / 3600.0,
                truth.len(),
                listed.len(),
                recall * 100.0,
                verified.len(),
                precision * 100.0,
                m(f.p50_age_ms),
                m(f.p99_age_ms),
                m(f.max_age_ms),
                refresher.stats.reads.load(Ordering::Relaxed),
                crawler.client().stats.rate_limited.load(Ordering::Relaxed),
            );
        }
        let s = &refresher.stats;
        let requests = crawler.client().stats.requests.load(Ordering::Relaxed) - requests0;
        let limited = crawler.client().stats.rate_limited.load(Ordering::Relaxed);
        let lags: Vec<f64> = verify_lag.values().map(|l| l * speedup / 60.0).collect();
        println!("\nrequests after the first crawl: {requests} ({} answered 429, {:.2}%)", limited, 100.0 * limited as f64 / requests.max(1) as f64);
        println!(
            "  refresher reads: {} new-conversation, {} leavers, {} orphans, {} cycle; {} contacts removed (404)",
            s.new_conversation_reads.load(Ordering::Relaxed),
            s.leaver_reads.load(Ordering::Relaxed),
            s.orphan_reads.load(Ordering::Relaxed),
            s.cycle_reads.load(Ordering::Relaxed),
            s.removed.load(Ordering::Relaxed)
        );
        println!(
            "departure -> every orphan verified: {} departures, mean {:.1} simulated min, worst {:.1} (agents refresh every 5 simulated min)",
            lags.len(),
            lags.iter().sum::<f64>() / lags.len().max(1) as f64,
            lags.iter().copied().fold(0.0, f64::max)
        );
        if cycle_times.is_empty() {
            println!("no full refresh cycle completed in the run (projected {projected:.0} s)");
        }
        for (i, (took, proj)) in cycle_times.iter().enumerate() {
            println!("cycle {}: measured {took:.0} s vs projected {proj:.0} s: {:.2}x", i + 1, took / proj);
        }
        println!(
            "orphans listed as verified: worst precision {:.2}%, over all checks {:.3}% ({} of {} right); recall at the end {:.1}%",
            worst_precision * 100.0,
            100.0 * pooled.1 as f64 / pooled.0.max(1) as f64,
            pooled.1,
            pooled.0,
            last_recall * 100.0
        );
        running.stop().await;
    });
}
