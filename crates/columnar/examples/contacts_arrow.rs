//! The whole contact list of a generated org (1,000,000 contacts, 10,000 agents; `CONTACTS`
//! changes it) as Arrow, in process, stage by stage: the record batches alone, then written as an
//! Arrow IPC stream and as Parquet. Medians of five.
//!
//!     cargo run --release -p idgraph-columnar --example contacts_arrow

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use idgraph_columnar::{write, Columnar, TableBatches};
use idgraph_graph::export::Table;
use idgraph_graph::index::{remember, Inputs};
use idgraph_graph::Index;
use idgraph_model::{Contact, User};

fn median(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut ts = Vec::new();
    let mut n = 0;
    for _ in 0..5 {
        let t = Instant::now();
        n = f();
        ts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ts.sort_by(f64::total_cmp);
    (ts[2], n)
}

fn main() {
    let n: u64 = std::env::var("CONTACTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let agents = 10_000u64;
    let users: Vec<User> = (0..agents)
        .map(|i| User {
            id: 20_001 + i,
            email: Some(format!("agent.{i}@example-org.com")),
            name: Some(format!("Agent {i}")),
            role: Some("agent".into()),
            bot: false,
            created_at: 0,
            updated_at: 0,
        })
        .collect();
    let mut memory = HashMap::new();
    remember(&mut memory, &users, &[], 1);
    let contacts: Vec<Contact> = (0..n)
        .map(|i| Contact {
            id: 1_000_001 + i,
            email: Some(format!("contact.{i}@company{}.example", i % 5000)),
            name: Some(format!("Contact {i}")),
            owner_id: (i % 25 != 0).then_some(20_001 + (i * 7919) % agents),
            external_id: None,
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000 + i as i64,
            extra: Default::default(),
        })
        .collect();
    let ix = Arc::new(Index::build(
        1,
        Inputs { contacts, users, scim: vec![], accounts: vec![], memory, contact_verified: vec![] },
    ));
    println!("org: {n} contacts, {agents} agents");
    let t = std::time::Instant::now();
    let made = ix.contacts_in_order().len();
    println!("the contacts' order, made once an index: {:.0} ms ({made})", t.elapsed().as_secs_f64() * 1e3);
    let (ms, rows) = median(|| ix.contact_ids_sorted().len());
    println!("sorted ids (from the order kept with the index): {ms:.0} ms ({rows})");
    let ids = ix.contact_ids_sorted();
    let (ms, rows) = median(|| {
        ids.iter()
            .filter_map(|id| ix.contact_and_owner(*id))
            .map(|(c, o)| c.id as usize + o.map_or(0, |o| o.id as usize))
            .sum::<usize>()
    });
    println!("contact and owner by id: {ms:.0} ms ({rows})");
    let (ms, rows) = median(|| {
        TableBatches::new(ix.clone(), Table::Contacts, None)
            .map(|b| b.map(|b| b.map_or(0, |b| b.num_rows())).sum())
            .unwrap_or(0)
    });
    println!("record batches: {ms:.0} ms ({rows} rows)");
    if std::env::var_os("BATCHES_ONLY").is_some() {
        return;
    }
    let threads: usize = std::env::var("THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let (ms, rows) = median(|| {
        TableBatches::new(ix.clone(), Table::Contacts, None)
            .and_then(|b| b.in_parallel(threads))
            .map(|b| b.map(|b| b.map_or(0, |b| b.num_rows())).sum())
            .unwrap_or(0)
    });
    println!("record batches on {threads} threads: {ms:.0} ms ({rows} rows)");
    for (name, format) in [("Arrow IPC stream", Columnar::Arrow), ("Parquet", Columnar::Parquet)] {
        let (ms, bytes) = median(|| {
            let mut out = Vec::new();
            match TableBatches::new(ix.clone(), Table::Contacts, None).and_then(|b| b.in_parallel(threads)) {
                Ok(b) => {
                    let schema = b.schema();
                    if let Err(e) = write(format, schema, b, &mut out) {
                        eprintln!("{e}");
                    }
                }
                Err(e) => eprintln!("{e}"),
            }
            out.len()
        });
        println!("batches built on {threads} threads written as {name}: {ms:.0} ms ({:.1} MB)", bytes as f64 / 1e6);
    }
}
