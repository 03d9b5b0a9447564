//! Crash safety of in-place writers: a child applies a stream of webhook deliveries (with
//! duplicates and out of order), agents refreshes and reassignment moves, acknowledging each
//! step after it returns; it is killed with SIGKILL at random moments, 50 times, and each restart
//! redelivers from the first step not acknowledged. At the end the graph and its history equal a
//! clean run's: nothing lost, nothing doubled.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use idgraph_graph::{AgentStatus, ChangeFilter, Event, Graph, ShrinkGuard, Update, Via};
use idgraph_model::{Contact, Record, User};
use rand::{Rng, SeedableRng};
use serde_json::Value;

const CHILD_ENV: &str = "IDGRAPH_CRASH_INPLACE_DIR";
const STEPS: usize = 1500;
const CONTACTS: u64 = 300;

fn user(id: u64) -> User {
    User { id, email: Some(format!("a{id}@x.io")), name: None, role: None, bot: false, created_at: 0, updated_at: 0 }
}

fn contact(id: u64, owner: u64, at: i64) -> Contact {
    Contact {
        id,
        email: Some(format!("c{id}@x.io")),
        name: None,
        owner_id: Some(owner),
        external_id: None,
        created_at: 1,
        updated_at: at,
        extra: Default::default(),
    }
}

/// One step of the stream.
enum Step {
    Deliveries(Vec<Event>),
    Agents(Vec<User>),
}

/// The same stream every time (seeded): deliveries of owner changes, upserts and deletes, some
/// repeated and some late; now and then an agents refresh that drops or brings back agent 5;
/// reassignment moves as the scheduler records them.
fn stream() -> Vec<Step> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut out = Vec::with_capacity(STEPS);
    let mut recent: Vec<Event> = Vec::new();
    for k in 0..STEPS {
        if k % 25 == 24 {
            let n = if (k / 25) % 2 == 0 { 4 } else { 5 };
            out.push(Step::Agents((1..=n).map(user).collect()));
            continue;
        }
        let mut evs = Vec::new();
        for j in 0..4 {
            let id = rng.random_range(1..=CONTACTS + 20);
            let at = (k * 10 + j) as i64 + rng.random_range(-30..5);
            let update = match rng.random_range(0..10) {
                0 => Update::Delete { id, at_ms: at },
                1..=3 => Update::Upsert(contact(id, rng.random_range(1..=6), at)),
                _ => Update::SetOwner { id, owner: Some(rng.random_range(1..=6)), at_ms: at },
            };
            let via = if j == 3 { Via::Reassignment } else { Via::Webhook };
            evs.push(Event { id: Some(format!("e{k}-{j}")), update, via });
        }
        // Drift redelivers: an earlier delivery comes again now and then.
        if let Some(old) = recent.get(rng.random_range(0..recent.len().max(1))) {
            if rng.random_bool(0.3) {
                evs.push(old.clone());
            }
        }
        recent.extend(evs.iter().cloned());
        if recent.len() > 40 {
            recent.drain(..20);
        }
        out.push(Step::Deliveries(evs));
    }
    out
}

fn setup(dir: &Path) {
    let g = Graph::open(dir).unwrap();
    let s = g.begin(false).unwrap();
    let mut recs: Vec<Record> = (1..=5).map(|i| Record::User(user(i))).collect();
    recs.extend((1..=CONTACTS).map(|i| Record::Contact(contact(i, 1 + i % 5, 0))));
    g.write(&s, &recs, None).unwrap();
    g.commit(s, Value::Null, false, ShrinkGuard::off()).unwrap();
}

/// Applies the stream from `from` on, writing each acknowledged step's number to `ack`.
fn apply_from(g: &Graph, from: usize, mut ack: Option<&mut std::fs::File>) {
    for (k, step) in stream().into_iter().enumerate().skip(from) {
        match step {
            Step::Deliveries(evs) => {
                g.apply(evs).expect("apply");
            }
            Step::Agents(users) => {
                g.refresh_agents(users, None, ShrinkGuard::off()).expect("refresh");
            }
        }
        if let Some(f) = ack.as_deref_mut() {
            // One write of the whole line: a kill cannot leave half a number for the next
            // child's line to be glued to.
            f.write_all(format!("{k}\n").as_bytes()).unwrap();
            f.sync_data().unwrap();
        }
    }
}

fn acked(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("ack"))
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .filter(|k| *k < STEPS)
        .max()
        .map_or(0, |k| k + 1)
}

#[test]
fn crash_inplace_child() {
    // Only does something when started by `killed_in_place_writers_lose_and_double_nothing`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let dir = Path::new(&dir);
        let g = Graph::open(&dir.join("db")).expect("the child opens the store");
        let from = acked(dir);
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("ack")).unwrap();
        apply_from(&g, from, Some(&mut f));
    }
}

/// What must come out the same: every contact's owner, every agent's status, and the history
/// without its clock.
type State = (Vec<(u64, Option<u64>)>, Vec<(u64, AgentStatus)>, Vec<String>);

fn state(g: &Graph) -> State {
    let ix = g.read();
    let mut owners: Vec<(u64, Option<u64>)> = ix.owner_map().into_iter().collect();
    owners.sort();
    let agents = ix.agents().into_iter().map(|a| (a.id, a.status)).collect();
    let history = g
        .changes(&ChangeFilter::default(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|c| format!("{} {:?} {:?}", c.generation, c.via, c.kind))
        .collect();
    (owners, agents, history)
}

#[test]
fn killed_in_place_writers_lose_and_double_nothing() {
    let clean = tempfile::tempdir().unwrap();
    setup(clean.path());
    let want = {
        let g = Graph::open(clean.path()).unwrap();
        apply_from(&g, 0, None);
        state(&g)
    };

    let dir = tempfile::tempdir().unwrap();
    setup(&dir.path().join("db"));
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut progress = Vec::new();
    for round in 0..50 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_inplace_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(30..250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let g = Graph::open(&dir.path().join("db"))
            .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        let (contacts, _, _) = g.read().counts();
        assert_eq!(contacts as u64, g.info().unwrap().contacts, "round {round}: index and info agree");
        progress.push(acked(dir.path()));
    }
    // The last run, to the end.
    let status = Command::new(&exe)
        .args(["--exact", "crash_inplace_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(progress.iter().filter(|p| **p > 0 && **p < STEPS).count() >= 3, "kills landed mid-stream: {progress:?}");
    let g = Graph::open(&dir.path().join("db")).unwrap();
    let got = state(&g);
    assert_eq!(got.0, want.0, "every contact's owner equals a clean run's");
    assert_eq!(got.1, want.1, "every agent's status equals a clean run's");
    assert_eq!(got.2.len(), want.2.len(), "no change lost or doubled");
    assert_eq!(got.2, want.2, "the history equals a clean run's");
}
