//! The orphans export is the audit CSV: the same rows and cells, for owners of every kind.

use idgraph_graph::audit::render::{render, Format as AuditFormat};
use idgraph_graph::audit::report;
use idgraph_graph::export::{columns, csv_cell, Export, Format, Table};
use idgraph_graph::{Graph, ShrinkGuard};
use idgraph_model::{Contact, Record, User};
use serde_json::Value;

fn user(id: u64) -> Record {
    Record::User(User {
        id,
        email: Some(format!("agent{id}@example.com")),
        name: Some(format!("Agent, {id}")),
        role: None,
        bot: false,
        created_at: 0,
        updated_at: 0,
    })
}

fn contact(id: u64, owner: u64) -> Record {
    // Names a CSV must quote or defuse, and one NDJSON must escape.
    let name = match id % 4 {
        0 => "=SUM(A1)".to_string(),
        1 => format!("Say \"hi\" {id}"),
        2 => format!("Tab\t{id}"),
        _ => format!("Plain {id}"),
    };
    Record::Contact(Contact {
        id,
        email: Some(format!("c{id}@example.com")),
        name: Some(name),
        owner_id: Some(owner),
        external_id: None,
        created_at: 0,
        updated_at: 1_700_000_000_000 + id as i64,
        extra: Default::default(),
    })
}

/// Agents 1..=6 crawled, then a crawl without 3, 4 and 5 (departed); `contacts` contacts
/// interleaved over owners 1..=6 and 99 (never an agent), so that consecutive orphans change owner
/// and reason.
fn org(g: &Graph, contacts: u64) {
    for agents in [vec![1, 2, 3, 4, 5, 6], vec![1, 2, 6]] {
        let s = g.begin(false).unwrap();
        let mut recs: Vec<Record> = agents.into_iter().map(user).collect();
        recs.extend((1..=contacts).map(|i| contact(i, if i % 7 == 0 { 99 } else { 1 + i % 6 })));
        g.write(&s, &recs, None).unwrap();
        g.commit(s, Value::Null, false, ShrinkGuard::off()).unwrap();
    }
}

#[test]
fn the_orphans_export_is_the_audit_csv_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::open(dir.path()).unwrap();
    org(&g, 700);
    let csv: String = Export::new(g.snapshot(), Table::Orphans, Format::Csv).collect();
    let audit = render(&report(&g, None, true).unwrap(), AuditFormat::Csv).unwrap();
    let sorted = |s: &str| {
        let mut rows: Vec<String> = s.lines().skip(1).map(String::from).collect();
        rows.sort();
        rows
    };
    assert_eq!(csv.lines().next(), audit.lines().next(), "the header");
    assert_eq!(sorted(&csv), sorted(&audit));
    // 3 departed agents' and the unknown owner's contacts, over both reasons.
    assert_eq!(sorted(&csv).len(), 100 + 3 * 100);
    assert!(csv.contains("OWNER_DEPARTED") && csv.contains("OWNER_UNKNOWN"));
    // NDJSON has the same rows, cell by cell, in the same order as CSV.
    let ndjson: String = Export::new(g.snapshot(), Table::Orphans, Format::Ndjson).collect();
    let from_json: Vec<String> = ndjson
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let cell = |c: &&str| match &v[*c] {
                Value::Null => String::new(),
                Value::String(s) => csv_cell(s),
                other => other.to_string(),
            };
            columns(Table::Orphans).iter().map(cell).collect::<Vec<_>>().join(",")
        })
        .collect();
    let csv_rows: Vec<String> = csv.lines().skip(1).map(String::from).collect();
    assert_eq!(from_json, csv_rows);
}

/// Chunks dealt out to several parts and taken back in turn are the export, byte for byte.
#[test]
fn an_export_split_into_parts_is_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::open(dir.path()).unwrap();
    org(&g, 9_001);
    for table in [Table::Contacts, Table::Orphans, Table::Agents, Table::Accounts] {
        for format in [Format::Csv, Format::Ndjson] {
            let whole: String = Export::new(g.snapshot(), table, format).collect();
            for parts in [1, 2, 3] {
                let mut parts: Vec<Export> = Export::new(g.snapshot(), table, format).split(parts);
                let mut dealt = String::new();
                'turns: loop {
                    for p in parts.iter_mut() {
                        match p.next() {
                            Some(chunk) => dealt.push_str(&chunk),
                            None => break 'turns,
                        }
                    }
                }
                assert!(parts.iter_mut().all(|p| p.next().is_none()), "{table:?} {format:?}: chunks left over");
                assert_eq!(dealt, whole, "{table:?} {format:?} in {} parts", parts.len());
            }
        }
    }
    let orphans: String = Export::new(g.snapshot(), Table::Orphans, Format::Ndjson).collect();
    assert_eq!(orphans.lines().count(), 9_001 / 7 + 3 * (9_001 - 9_001 / 7) / 6);
}
