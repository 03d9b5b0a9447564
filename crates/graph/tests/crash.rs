//! Crash safety: a writer (a child process) is killed with SIGKILL at random moments, again and
//! again; every restart must find one whole generation that passes its checks.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use idgraph_graph::{ChangeFilter, Event, Graph, ShrinkGuard, Update, Via};
use idgraph_model::{Contact, Record, ScimUser, User};
use rand::Rng;
use serde_json::json;

const CHILD_ENV: &str = "IDGRAPH_CRASH_WRITER_DIR";

fn contact(id: u64, owner: u64, at: i64) -> Contact {
    Contact {
        id,
        email: Some(format!("c{id}@x.io")),
        name: Some(format!("C {id}")),
        owner_id: Some(owner),
        external_id: None,
        created_at: 1,
        updated_at: at,
        extra: Default::default(),
    }
}

/// The writer: generation after generation, with in-place updates between them, forever.
fn writer(dir: &Path) {
    let g = Graph::open(dir).expect("the writer opens the store");
    loop {
        let s = g.begin(true).expect("begin");
        let n = 1000 + (s.generation % 7) * 150;
        let users: Vec<Record> = (0..20)
            .map(|i| {
                Record::User(User {
                    id: 100 + i,
                    email: Some(format!("a{i}@x.io")),
                    name: None,
                    role: None,
                    bot: false,
                    created_at: 0,
                    updated_at: 0,
                })
            })
            .collect();
        g.write(&s, &users, Some(&json!({"users": true}))).expect("write users");
        let scim: Vec<Record> = (0..20)
            .map(|i| {
                Record::ScimUser(ScimUser {
                    id: 100 + i,
                    user_name: format!("a{i}@x.io"),
                    display_name: None,
                    active: i % 5 != 0,
                    emails: vec![],
                })
            })
            .collect();
        g.write(&s, &scim, None).expect("write scim");
        for page in 0..n / 100 {
            let recs: Vec<Record> = (0..100)
                .map(|k| Record::Contact(contact(page * 100 + k + 1, 100 + (k % 25), s.generation as i64)))
                .collect();
            g.write(&s, &recs, Some(&json!({"page": page}))).expect("write contacts");
        }
        g.commit(s, json!({}), true, ShrinkGuard::off()).expect("commit");
        let evs: Vec<Event> = (0..50)
            .map(|k| Event {
                id: Some(format!("e-{}-{k}", g.info().map_or(0, |i| i.generation))),
                update: Update::SetOwner { id: k + 1, owner: Some(101), at_ms: i64::MAX / 2 },
                via: Via::Webhook,
            })
            .collect();
        g.apply(evs).expect("apply");
    }
}

#[test]
fn crash_writer_child() {
    // Only does something when started by `killed_writers_leave_one_whole_generation`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        writer(Path::new(&dir));
    }
}

#[test]
fn killed_writers_leave_one_whole_generation() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut generations_seen = Vec::new();
    for round in 0..50 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_writer_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(50..600)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let g = Graph::open(dir.path()).unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        if let Some(info) = g.info() {
            let (contacts, _, _) = g.read().counts();
            assert_eq!(contacts as u64, info.contacts, "round {round}: index and info agree");
            let expected = (1000 + (info.generation % 7) * 150) / 100 * 100;
            assert_eq!(info.contacts, expected, "round {round}: generation {} is whole", info.generation);
            assert!(
                g.changes(&ChangeFilter { since_generation: Some(info.generation + 1), ..ChangeFilter::default() }, 10)
                    .unwrap()
                    .is_empty(),
                "no history beyond the current generation"
            );
            generations_seen.push(info.generation);
        }
    }
    assert!(generations_seen.windows(2).all(|w| w[0] <= w[1]), "generations never go back: {generations_seen:?}");
    assert!(generations_seen.last().copied().unwrap_or(0) >= 3, "the writer made progress: {generations_seen:?}");
}
