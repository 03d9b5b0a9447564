//! The change feed as a syncing client sees it: polling with its last cursor while crawls,
//! webhooks and agents refreshes interleave and the process restarts, it gets every change
//! exactly once, in order; `sinceGeneration` includes the changes recorded in place.

use std::path::Path;
use std::sync::Arc;

use idgraph_graph::{Change, ChangeFilter, Event, Graph, ShrinkGuard, Update, Via};
use idgraph_model::{Contact, Record, User};
use proptest::prelude::*;
use serde_json::Value;

fn user(id: u64) -> User {
    User {
        id,
        email: Some(format!("a{id}@example.com")),
        name: None,
        role: None,
        bot: false,
        created_at: 0,
        updated_at: 0,
    }
}

fn contact(id: u64, owner: u64, at: i64) -> Contact {
    Contact {
        id,
        email: Some(format!("c{id}@example.com")),
        name: None,
        owner_id: Some(owner),
        external_id: None,
        created_at: 0,
        updated_at: at,
        extra: Default::default(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A full crawl: contacts 1..=n, owners shifted by `shift`, agents 1..=agents.
    Crawl {
        n: u64,
        shift: u64,
        agents: u64,
    },
    /// Webhook deliveries: (contact, new owner, timestamp, delivered twice).
    Webhooks(Vec<(u64, u64, i64, bool)>),
    /// An agents refresh with agents 1..=n.
    Agents(u64),
    Restart,
    Poll(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (20u64..60, 0u64..5, 3u64..6).prop_map(|(n, shift, agents)| Op::Crawl { n, shift, agents }),
        prop::collection::vec((1u64..70, 1u64..6, 1i64..1_000_000, any::<bool>()), 1..12).prop_map(Op::Webhooks),
        (2u64..6).prop_map(Op::Agents),
        Just(Op::Restart),
        (1usize..30).prop_map(Op::Poll),
    ]
}

fn crawl(g: &Graph, n: u64, shift: u64, agents: u64) {
    let s = g.begin(false).unwrap();
    let mut recs: Vec<Record> = (1..=agents).map(|a| Record::User(user(a))).collect();
    recs.extend((1..=n).map(|i| Record::Contact(contact(i, 1 + (i + shift) % 5, 0))));
    g.write(&s, &recs, None).unwrap();
    g.commit(s, Value::Null, false, ShrinkGuard::off()).unwrap();
}

struct Client {
    cursor: Option<u64>,
    seen: Vec<Change>,
}

impl Client {
    fn poll(&mut self, g: &Graph, first: usize) -> usize {
        let page = g.changes(&ChangeFilter { after_seq: self.cursor, ..ChangeFilter::default() }, first).unwrap();
        if let Some(last) = page.last() {
            self.cursor = Some(last.seq);
        }
        let n = page.len();
        self.seen.extend(page);
        n
    }

    fn drain(&mut self, g: &Graph) {
        while self.poll(g, 7) > 0 {}
    }
}

fn run(dir: &Path, ops: &[Op]) {
    let mut g = Graph::open(dir).unwrap();
    crawl(&g, 30, 0, 5);
    let mut client = Client { cursor: None, seen: Vec::new() };
    let mut delivery = 0u64;
    for op in ops {
        match op {
            Op::Crawl { n, shift, agents } => crawl(&g, *n, *shift, *agents),
            Op::Webhooks(ws) => {
                let mut evs = Vec::new();
                for (c, owner, at, twice) in ws {
                    delivery += 1;
                    let ev = Event {
                        id: Some(format!("d{delivery}")),
                        update: Update::SetOwner { id: *c, owner: Some(*owner), at_ms: *at },
                        via: Via::Webhook,
                    };
                    if *twice {
                        evs.push(ev.clone());
                    }
                    evs.push(ev);
                }
                g.apply(evs).unwrap();
            }
            Op::Agents(n) => {
                g.refresh_agents((1..=*n).map(user).collect(), None, ShrinkGuard::off()).unwrap();
            }
            Op::Restart => {
                drop(g);
                g = reopen(dir);
            }
            Op::Poll(k) => {
                client.poll(&g, *k);
            }
        }
    }
    client.drain(&g);
    let all = g.changes(&ChangeFilter::default(), usize::MAX).unwrap();
    assert_eq!(client.seen, all, "the client saw every change once, in order");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "sequence numbers only grow");
    assert_eq!(all.last().map(|c| c.seq).unwrap_or(0), g.last_change_seq().unwrap());
    let generation = g.info().unwrap().generation;
    for since in 1..=generation {
        let f = ChangeFilter { since_generation: Some(since), ..ChangeFilter::default() };
        let want: Vec<&Change> = all.iter().filter(|c| c.generation >= since).collect();
        let got = g.changes(&f, usize::MAX).unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "sinceGeneration {since} includes in-place changes");
        assert_eq!(g.count_changes(&f).unwrap(), want.len(), "totalCount is right");
    }
}

/// Opens the store again after a drop. sled's flusher thread can hold the directory's lock a
/// moment after the last handle goes (seen on a loaded machine): wait for it, a bounded while.
fn reopen(dir: &std::path::Path) -> Graph {
    for _ in 0..100 {
        match Graph::open(dir) {
            Err(idgraph_graph::StoreError::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(20)),
            other => return other.unwrap(),
        }
    }
    Graph::open(dir).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn a_polling_client_sees_every_change_once_in_order(ops in prop::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), &ops);
    }
}

/// Writers in other threads while the client polls: no change is skipped because a writer that
/// took a lower sequence number finished later.
#[test]
fn polling_during_concurrent_writers_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Graph::open(dir.path()).unwrap());
    crawl(&g, 200, 0, 5);
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let g = g.clone();
            std::thread::spawn(move || {
                for k in 0..60u64 {
                    let ev = Event {
                        id: Some(format!("w{w}-{k}")),
                        update: Update::SetOwner {
                            id: 1 + (k * 3 + w) % 200,
                            owner: Some(1 + k % 5),
                            at_ms: 10 + k as i64,
                        },
                        via: Via::Webhook,
                    };
                    g.apply(vec![ev]).unwrap();
                    if k % 20 == 0 {
                        g.refresh_agents((1..=5 - (k % 2)).map(user).collect(), None, ShrinkGuard::off()).unwrap();
                    }
                }
            })
        })
        .collect();
    let mut client = Client { cursor: None, seen: Vec::new() };
    while writers.iter().any(|w| !w.is_finished()) {
        client.poll(&g, 5);
    }
    for w in writers {
        w.join().unwrap();
    }
    client.drain(&g);
    assert_eq!(client.seen, g.changes(&ChangeFilter::default(), usize::MAX).unwrap());
}
