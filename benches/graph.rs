//! The identity graph's targets on a generated org of 1,000,000 contacts and 10,000 agents:
//! build, persist, cold start and resident memory (printed), then owner lookups and orphan pages
//! (criterion). `IDGRAPH_BENCH_CONTACTS` changes the size.
//!
//!     cargo bench --bench graph

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use idgraph_graph::index::{remember, Inputs};
use idgraph_graph::{Graph, Index, ShrinkGuard};
use idgraph_model::{Account, Contact, Record, User};

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

fn users(n: u64) -> Vec<User> {
    (0..n)
        .map(|i| User {
            id: 20_001 + i,
            email: Some(format!("agent.{i}@example-org.com")),
            name: Some(format!("Agent {i}")),
            role: Some("agent".into()),
            bot: i % 50 == 49,
            created_at: 0,
            updated_at: 0,
        })
        .collect()
}

fn contacts(n: u64, agents: u64) -> Vec<Contact> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            // xorshift: a few agents own most contacts (u^3 skew).
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 1_000_000) as f64 / 1e6;
            let owner = if i % 25 == 0 { None } else { Some(20_001 + ((agents as f64) * u * u * u) as u64) };
            Contact {
                id: 1_000_001 + i,
                email: Some(format!("contact.{i}@company{}.example", i % 5000)),
                name: Some(format!("Contact {i}")),
                owner_id: owner,
                external_id: None,
                created_at: 1_700_000_000_000,
                updated_at: 1_700_000_000_000 + i as i64,
                extra: Default::default(),
            }
        })
        .collect()
}

fn main() {
    let n: u64 = std::env::var("IDGRAPH_BENCH_CONTACTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let agents = 10_000u64;
    println!("org: {n} contacts, {agents} agents");
    let all_users = users(agents);
    // One agent in ten has left: present in the memory of an earlier crawl, gone now.
    let mut memory = HashMap::new();
    remember(&mut memory, &all_users, &[], 1);
    let active: Vec<User> = all_users.iter().filter(|u| u.id % 10 != 3).cloned().collect();
    remember(&mut memory, &active, &[], 2);
    let accounts: Vec<Account> = (0..agents * 3)
        .map(|i| Account {
            id: format!("acct-{i}"),
            name: None,
            domain: None,
            owner_id: Some(20_001 + i % agents),
            deleted: false,
            updated_at: 0,
        })
        .collect();

    let cs = contacts(n, agents);
    let rss0 = rss_mb();
    let t = Instant::now();
    let ix = Index::build(
        1,
        Inputs {
            contacts: cs,
            users: active.clone(),
            scim: vec![],
            accounts: accounts.clone(),
            memory: memory.clone(),
            contact_verified: vec![],
        },
    );
    let build_s = t.elapsed().as_secs_f64();
    let rss1 = rss_mb();
    println!("build the graph from records in memory: {build_s:.2} s (target < 2 s)");
    println!("resident memory of the loaded graph: {:.0} MB (process RSS {rss1:.0} MB; target < 1500 MB)", rss1 - rss0);
    println!("orphans: {}", ix.orphan_total());

    // Persist a generation, then start cold from it.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let g = Graph::open(dir.path()).expect("open");
        let s = g.begin(false).expect("begin");
        let t = Instant::now();
        let recs: Vec<Record> = active.iter().cloned().map(Record::User).collect();
        g.write(&s, &recs, None).expect("write users");
        let recs: Vec<Record> = accounts.iter().cloned().map(Record::Account).collect();
        g.write(&s, &recs, None).expect("write accounts");
        for chunk in contacts(n, agents).chunks(100) {
            let recs: Vec<Record> = chunk.iter().cloned().map(Record::Contact).collect();
            g.write(&s, &recs, Some(&serde_json::json!({"cursor": chunk[0].id}))).expect("write");
        }
        let write_s = t.elapsed().as_secs_f64();
        let t2 = Instant::now();
        g.commit(s, serde_json::json!({}), true, ShrinkGuard::off()).expect("commit");
        let switch_s = t2.elapsed().as_secs_f64();
        println!(
            "persist a generation (pages of 100, as crawled): {:.2} s (write {n} records {write_s:.2} s + check, build and switch {switch_s:.2} s; target < 10 s)",
            write_s + switch_s
        );
    }
    let t = Instant::now();
    let g = Graph::open(dir.path()).expect("reopen");
    let cold_s = t.elapsed().as_secs_f64();
    println!(
        "cold start from sled to serving: {cold_s:.2} s (target < 3 s), generation {}",
        g.info().map_or(0, |i| i.generation)
    );
    drop(g);

    let mut c = Criterion::default().configure_from_args().sample_size(50);
    let ids: Vec<u64> = (0..1024u64).map(|i| 1_000_001 + (i * 7919) % n).collect();
    let mut k = 0usize;
    c.bench_function("owner of a contact (by id)", |b| {
        b.iter(|| {
            k = (k + 1) & 1023;
            black_box(ix.owner_of(ids[k]).map(|a| a.id))
        })
    });
    let emails: Vec<String> = (0..1024u64)
        .map(|i| format!("contact.{}@company{}.example", (i * 7919) % n, ((i * 7919) % n) % 5000))
        .collect();
    c.bench_function("owner of a contact (by email)", |b| {
        b.iter(|| {
            k = (k + 1) & 1023;
            black_box(ix.contacts_by_email(&emails[k]).first().and_then(|c| ix.owner_of(c.id)).map(|a| a.id))
        })
    });
    let first = ix.orphans(None, None, None, 100);
    let deep = ix.orphans(None, None, None, ix.orphan_total() / 2);
    let mid = deep.last().map(|o| o.key);
    c.bench_function("a page of 100 orphans (first page)", |b| {
        b.iter(|| black_box(ix.orphans(None, None, None, 100).len()))
    });
    c.bench_function("a page of 100 orphans (from the middle)", |b| {
        b.iter(|| black_box(ix.orphans(None, None, mid, 100).len()))
    });
    c.bench_function("orphan count", |b| b.iter(|| black_box(ix.orphan_count(None, None))));
    assert_eq!(first.len(), 100);
    c.final_summary();
}
