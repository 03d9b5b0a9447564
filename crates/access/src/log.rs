//! The access trail: every request that reads contact data or changes something, appended to a
//! hash chain. Each entry is one line of JSON carrying its sequence number and the hash of the
//! entry before it (`prev`), then its own `hash`: the SHA-256 of the line's bytes before
//! `,"hash"`. Changing one byte of an entry breaks its hash; removing an entry breaks the next
//! one's `seq` and `prev`. `verify` walks the chain and names the first entry that does not hold.
//!
//! Entries are written by one thread, fed through a bounded queue: a request never waits for the
//! disk, and an entry that finds the queue full is counted as dropped (`dropped()`, shown in
//! `/metrics` and `indexStatus`), never lost silently. Files are one a day
//! (`access/YYYY-MM-DD.ndjson`); days older than the retention are removed, and the last removed
//! entry's sequence number and hash are kept in `access/anchor.json`, so the chain still starts
//! somewhere checkable. Each line is also written to the configured sink (a file or stdout) for a
//! SIEM.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Entries waiting for the writer, at most; past it they are counted as dropped.
pub const QUEUE: usize = 65_536;
/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const ANCHOR: &str = "anchor.json";
const HASH_KEY: &str = ",\"hash\":\"";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {why}")]
    Bad { path: PathBuf, why: String },
}

/// What happened, as the server saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub time: DateTime<Utc>,
    /// The principal's name (`anonymous` for a server without sign-in, `-` when unknown).
    pub principal: String,
    /// person, jwt, service_token, anonymous, or none (a refused request).
    pub kind: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The method and path, e.g. `POST /graphql`.
    pub route: String,
    /// The GraphQL operation's name, if any.
    #[serde(default)]
    pub operation: Option<String>,
    /// The GraphQL root fields asked (or the export's table).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Rows returned or exported.
    pub rows: u64,
    /// ok, error, unauthenticated, forbidden, ...
    pub outcome: String,
    /// The client's address (from `X-Forwarded-For` only behind a trusted proxy).
    #[serde(default)]
    pub client: Option<String>,
    /// Why, for a refusal or an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An entry as stored: the entry with its place in the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    #[serde(flatten)]
    pub entry: Entry,
    pub prev: String,
    #[serde(default)]
    pub hash: String,
}

/// Where entries are streamed besides the chain's own files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    File(PathBuf),
}

impl Sink {
    /// `-` is stdout; anything else a file path.
    pub fn parse(s: &str) -> Sink {
        if s == "-" {
            Sink::Stdout
        } else {
            Sink::File(PathBuf::from(s))
        }
    }
}

/// What the writer is sent.
enum Msg {
    Entry(Box<Entry>),
    Close,
}

pub struct AccessLog {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    queued: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    dir: PathBuf,
}

impl AccessLog {
    /// Opens the chain under `dir` (created 0700) and starts its writer.
    pub fn open(dir: &Path, retention_days: u32, sink: Option<Sink>) -> Result<AccessLog, LogError> {
        let io = |source| LogError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let (seq, prev) = head(dir)?;
        let sink: Option<Box<dyn Write + Send>> = match sink {
            None => None,
            Some(Sink::Stdout) => Some(Box::new(std::io::stdout())),
            Some(Sink::File(p)) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .map_err(|source| LogError::Io { path: p.clone(), source })?;
                Some(Box::new(f))
            }
        };
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let mut w = Writer {
            dir: dir.to_path_buf(),
            seq,
            prev,
            day: None,
            file: None,
            sink,
            retention_days,
            written: written.clone(),
            last_sync: Instant::now(),
            last_prune: None,
            line: Vec::with_capacity(1024),
        };
        w.prune();
        let writer = std::thread::Builder::new().name("access-log".into()).spawn(move || w.run(rx)).map_err(io)?;
        Ok(AccessLog {
            tx,
            dropped,
            written,
            queued: AtomicU64::new(0),
            writer: Mutex::new(Some(writer)),
            dir: dir.to_path_buf(),
        })
    }

    /// Queues an entry; never waits. A full queue counts it as dropped.
    pub fn record(&self, e: Entry) {
        match self.tx.try_send(Msg::Entry(Box::new(e))) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries that could not be queued since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Entries written since start.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes what is queued, syncs it and stops the writer (at shutdown).
    pub fn close(&self) {
        if let Some(h) = self.writer.lock().take() {
            // Waits for room: everything queued before it is written first.
            let _ = self.tx.send(Msg::Close);
            let _ = h.join();
        }
    }

    /// Waits (at most 5 s) until every entry queued before this call is written: `accessLog`
    /// reads the files, and a reader should see its own request's predecessors.
    pub fn settle(&self) {
        let target = self.queued.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.written() < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    dir: PathBuf,
    seq: u64,
    prev: String,
    day: Option<NaiveDate>,
    file: Option<BufWriter<File>>,
    sink: Option<Box<dyn Write + Send>>,
    retention_days: u32,
    written: Arc<AtomicU64>,
    last_sync: Instant,
    last_prune: Option<NaiveDate>,
    /// The line being written, reused.
    line: Vec<u8>,
}

impl Writer {
    /// Drains the queue every few milliseconds rather than waiting on it: a writer blocked in
    /// `recv` would have every request wake it (a futex call and a context switch each), which
    /// at tens of thousands of requests a second costs more than the writing.
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut closing = false;
        while !closing {
            let mut batch: Vec<Entry> = Vec::new();
            while batch.len() < 8192 {
                match rx.try_recv() {
                    Ok(Msg::Entry(e)) => batch.push(*e),
                    Ok(Msg::Close) | Err(TryRecvError::Disconnected) => {
                        closing = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            if batch.is_empty() && !closing {
                std::thread::sleep(Duration::from_millis(5));
            }
            let n = batch.len() as u64;
            for e in batch {
                if let Err(err) = self.append(e) {
                    tracing::error!(error = %err, "the access log could not be written");
                }
            }
            self.flush(false);
            self.written.fetch_add(n, Ordering::Relaxed);
            self.prune();
        }
        self.flush(true);
    }

    fn append(&mut self, e: Entry) -> Result<(), LogError> {
        let today = Utc::now().date_naive();
        if self.day != Some(today) || self.file.is_none() {
            self.flush(true);
            let path = self.dir.join(segment_name(today));
            let f = open_append(&path).map_err(|source| LogError::Io { path: path.clone(), source })?;
            self.file = Some(BufWriter::with_capacity(64 * 1024, f));
            self.day = Some(today);
        }
        let hash = chain_line(self.seq + 1, &e, &self.prev, &mut self.line);
        if let Some(f) = self.file.as_mut() {
            if let Err(source) = f.write_all(&self.line) {
                return Err(LogError::Io { path: self.dir.join(segment_name(today)), source });
            }
        }
        if let Some(s) = self.sink.as_mut() {
            if s.write_all(&self.line).is_err() {
                tracing::warn!("the access log's sink could not be written");
            }
        }
        self.seq += 1;
        self.prev = hash;
        Ok(())
    }

    fn flush(&mut self, sync: bool) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
            if sync || self.last_sync.elapsed() >= Duration::from_secs(1) {
                let _ = f.get_ref().sync_data();
                self.last_sync = Instant::now();
            }
        }
        if let Some(s) = self.sink.as_mut() {
            let _ = s.flush();
        }
    }

    /// Removes the days past the retention, once a day, after keeping the last removed entry as
    /// the chain's anchor.
    fn prune(&mut self) {
        let today = Utc::now().date_naive();
        if self.last_prune == Some(today) {
            return;
        }
        self.last_prune = Some(today);
        if let Err(e) = prune(&self.dir, today, self.retention_days) {
            tracing::error!(error = %e, "old access log files could not be removed");
        }
    }
}

/// An entry's line in the chain: the entry, `seq` and `prev`, then the hash of those bytes.
/// Written into `buf` (reused from line to line); the hash is returned.
fn chain_line(seq: u64, e: &Entry, prev: &str, buf: &mut Vec<u8>) -> String {
    /// The entry's fields in the stored order, `seq` first and `prev` last: the same JSON as
    /// `Stored` without its `hash`, written without serde's flatten (a map, much slower).
    #[derive(Serialize)]
    struct Line<'a> {
        seq: u64,
        time: &'a DateTime<Utc>,
        principal: &'a str,
        kind: &'a str,
        role: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        org: &'a Option<String>,
        route: &'a str,
        operation: &'a Option<String>,
        fields: &'a [String],
        rows: u64,
        outcome: &'a str,
        client: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: &'a Option<String>,
        prev: &'a str,
    }
    buf.clear();
    let line = Line {
        seq,
        time: &e.time,
        principal: &e.principal,
        kind: &e.kind,
        role: &e.role,
        org: &e.org,
        route: &e.route,
        operation: &e.operation,
        fields: &e.fields,
        rows: e.rows,
        outcome: &e.outcome,
        client: &e.client,
        detail: &e.detail,
        prev,
    };
    if serde_json::to_writer(&mut *buf, &line).is_err() {
        buf.clear();
        buf.push(b'{');
    }
    buf.pop(); // the closing brace
    let hash = hex::encode(Sha256::digest(&buf[..]));
    buf.extend_from_slice(HASH_KEY.as_bytes());
    buf.extend_from_slice(hash.as_bytes());
    buf.extend_from_slice(b"\"}\n");
    hash
}

fn segment_name(day: NaiveDate) -> String {
    format!("{}.ndjson", day.format("%Y-%m-%d"))
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// The day files under `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(NaiveDate, PathBuf)>, LogError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LogError::Io { path: dir.into(), source }),
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(day) = name.strip_suffix(".ndjson").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) {
            v.push((day, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Anchor {
    seq: u64,
    hash: String,
}

fn anchor(dir: &Path) -> Result<Option<Anchor>, LogError> {
    let path = dir.join(ANCHOR);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| LogError::Bad { path, why: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LogError::Io { path, source }),
    }
}

/// The last entry's sequence number and hash, where the writer goes on. A line cut short by a
/// crash (no newline) is removed first: it was never a whole entry.
fn head(dir: &Path) -> Result<(u64, String), LogError> {
    let segs = segments(dir)?;
    for (_, path) in segs.iter().rev() {
        let io = |source| LogError::Io { path: path.clone(), source };
        let mut f = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let tail = len.min(1 << 20);
        f.seek(SeekFrom::Start(len - tail)).map_err(io)?;
        let mut buf = Vec::with_capacity(tail as usize);
        f.read_to_end(&mut buf).map_err(io)?;
        let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < buf.len() {
            let keep = len - (buf.len() - whole) as u64;
            tracing::warn!(file = %path.display(), "the access log's last line was cut short by a crash: removed");
            f.set_len(keep).map_err(io)?;
        }
        let text = String::from_utf8_lossy(&buf[..whole]);
        if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
            let s: Stored = serde_json::from_str(last).map_err(|e| LogError::Bad {
                path: path.clone(),
                why: format!("its last entry is not an access log entry ({e}): run `idgraph access-log verify`"),
            })?;
            return Ok((s.seq, s.hash));
        }
    }
    Ok(anchor(dir)?.map_or((0, GENESIS.to_string()), |a| (a.seq, a.hash)))
}

fn prune(dir: &Path, today: NaiveDate, retention_days: u32) -> Result<(), LogError> {
    let keep_from = today - chrono::Days::new(u64::from(retention_days));
    let old: Vec<(NaiveDate, PathBuf)> = segments(dir)?.into_iter().filter(|(d, _)| *d < keep_from).collect();
    let Some((_, newest_old)) = old.last() else { return Ok(()) };
    // The anchor first: a crash between the two leaves an anchor that the files still cover.
    let text =
        std::fs::read_to_string(newest_old).map_err(|source| LogError::Io { path: newest_old.clone(), source })?;
    if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
        let s: Stored = serde_json::from_str(last)
            .map_err(|e| LogError::Bad { path: newest_old.clone(), why: format!("its last entry: {e}") })?;
        let a = Anchor { seq: s.seq, hash: s.hash };
        let tmp = dir.join("anchor.json.new");
        let body = serde_json::to_vec(&a).map_err(|e| LogError::Bad { path: tmp.clone(), why: e.to_string() })?;
        let write = || -> std::io::Result<()> {
            let mut f = crate::tokens::open_private(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(ANCHOR))
        };
        write().map_err(|source| LogError::Io { path: dir.join(ANCHOR), source })?;
    }
    for (_, p) in &old {
        std::fs::remove_file(p).map_err(|source| LogError::Io { path: p.clone(), source })?;
        tracing::info!(file = %p.display(), "access log file past the retention removed");
    }
    Ok(())
}

/// What `verify` found when the chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    /// The first entry checked (after the anchor).
    pub first: u64,
    pub last: u64,
    pub head: String,
}

/// The first entry that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry} ({file} line {line}): {why}")]
pub struct Broken {
    /// Its place in the chain (the sequence number it should carry).
    pub entry: u64,
    pub file: String,
    pub line: usize,
    pub why: String,
}

/// Walks the chain under `dir` and checks every entry's hash, sequence number and link. A last
/// line without its newline (being written now) is not checked.
pub fn verify(dir: &Path) -> Result<Result<Verified, Broken>, LogError> {
    let segs = segments(dir)?;
    let anchor = anchor(dir)?;
    let (mut seq, mut prev) = anchor.as_ref().map_or((0, GENESIS.to_string()), |a| (a.seq, a.hash.clone()));
    let first = seq + 1;
    let mut entries = 0;
    let n_segs = segs.len();
    for (i, (_, path)) in segs.iter().enumerate() {
        let file = path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        let f = File::open(path).map_err(|source| LogError::Io { path: path.clone(), source })?;
        let mut r = BufReader::new(f);
        let mut buf = Vec::new();
        let mut line_no = 0;
        loop {
            buf.clear();
            let n = r.read_until(b'\n', &mut buf).map_err(|source| LogError::Io { path: path.clone(), source })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let expect = seq + 1;
            let broken = |why: String| Broken { entry: expect, file: file.clone(), line: line_no, why };
            if buf.last() != Some(&b'\n') {
                if i + 1 == n_segs {
                    break; // being written
                }
                return Ok(Err(broken("the line is cut short".into())));
            }
            let text = match std::str::from_utf8(&buf[..buf.len() - 1]) {
                Ok(t) => t,
                Err(_) => return Ok(Err(broken("the line is not UTF-8 text: it was changed".into()))),
            };
            let Some(at) = text.rfind(HASH_KEY) else {
                return Ok(Err(broken("the line has no hash: it was changed".into())));
            };
            let stored: Stored = match serde_json::from_str(text) {
                Ok(s) => s,
                Err(e) => return Ok(Err(broken(format!("the line is not an entry ({e}): it was changed")))),
            };
            let computed = hex::encode(Sha256::digest(&text.as_bytes()[..at]));
            if computed != stored.hash {
                return Ok(Err(broken("its content does not match its hash: it was changed".into())));
            }
            if stored.seq != expect {
                let why = if stored.seq > expect {
                    format!(
                        "it is entry {} where entry {expect} was expected: an entry before it was removed",
                        stored.seq
                    )
                } else {
                    format!(
                        "it is entry {} again where entry {expect} was expected: an entry was repeated or moved",
                        stored.seq
                    )
                };
                return Ok(Err(broken(why)));
            }
            if stored.prev != prev {
                return Ok(Err(broken(
                    "its link to the entry before it does not match: an entry before it was changed or removed".into(),
                )));
            }
            seq = stored.seq;
            prev = stored.hash;
            entries += 1;
        }
    }
    Ok(Ok(Verified { entries, first, last: seq, head: prev }))
}

/// Which entries `read` returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Entries after this sequence number.
    pub after: Option<u64>,
    pub since: Option<DateTime<Utc>>,
    pub principal: Option<String>,
    pub first: usize,
}

/// Entries in chain order that pass `f`, at most `f.first`, and whether more follow.
pub fn read(dir: &Path, f: &Filter) -> Result<(Vec<Stored>, bool), LogError> {
    let since_day = f.since.map(|t| t.date_naive());
    let mut out = Vec::new();
    for (day, path) in segments(dir)? {
        if since_day.is_some_and(|d| day < d) {
            continue;
        }
        let file = File::open(&path).map_err(|source| LogError::Io { path: path.clone(), source })?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|source| LogError::Io { path: path.clone(), source })?;
            let Ok(s) = serde_json::from_str::<Stored>(&line) else { continue };
            if f.after.is_some_and(|a| s.seq <= a)
                || f.since.is_some_and(|t| s.entry.time < t)
                || f.principal.as_ref().is_some_and(|p| *p != s.entry.principal)
            {
                continue;
            }
            if out.len() == f.first {
                return Ok((out, true));
            }
            out.push(s);
        }
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(who: &str, route: &str) -> Entry {
        Entry {
            time: Utc::now(),
            principal: who.into(),
            kind: "service_token".into(),
            role: Some("auditor".into()),
            route: route.into(),
            fields: vec!["orphans".into()],
            rows: 3,
            outcome: "ok".into(),
            ..Entry::default()
        }
    }

    fn the_file(dir: &Path) -> PathBuf {
        segments(dir).unwrap().pop().unwrap().1
    }

    #[test]
    fn the_chain_holds_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let log = AccessLog::open(dir.path(), 400, None).unwrap();
        for i in 0..10 {
            log.record(entry(if i % 2 == 0 { "ci" } else { "alice" }, "POST /graphql"));
        }
        log.close();
        let log = AccessLog::open(dir.path(), 400, None).unwrap();
        log.record(entry("ci", "GET /export/orphans"));
        log.close();
        let v = verify(dir.path()).unwrap().unwrap();
        assert_eq!((v.entries, v.first, v.last), (11, 1, 11));
        let (page, more) =
            read(dir.path(), &Filter { principal: Some("ci".into()), first: 3, ..Filter::default() }).unwrap();
        assert_eq!(page.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 3, 5]);
        assert!(more);
        let (page, _) = read(dir.path(), &Filter { after: Some(9), first: 10, ..Filter::default() }).unwrap();
        assert_eq!(page.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![10, 11]);
    }

    #[test]
    fn a_changed_byte_or_a_removed_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = AccessLog::open(dir.path(), 400, None).unwrap();
        for _ in 0..5 {
            log.record(entry("ci", "POST /graphql"));
        }
        log.close();
        let path = the_file(dir.path());
        let good = std::fs::read_to_string(&path).unwrap();
        // One byte of entry 3 (its row count) changed.
        let lines: Vec<&str> = good.lines().collect();
        let mut changed = lines.clone();
        let l3 = lines[2].replace("\"rows\":3", "\"rows\":4");
        changed[2] = &l3;
        std::fs::write(&path, changed.join("\n") + "\n").unwrap();
        let b = verify(dir.path()).unwrap().unwrap_err();
        assert_eq!((b.entry, b.line), (3, 3), "{b}");
        assert!(b.why.contains("changed"), "{b}");
        // Entry 2 removed.
        let mut removed = lines.clone();
        removed.remove(1);
        std::fs::write(&path, removed.join("\n") + "\n").unwrap();
        let b = verify(dir.path()).unwrap().unwrap_err();
        assert_eq!(b.entry, 2, "{b}");
        assert!(b.why.contains("removed"), "{b}");
        // A line cut short at the end (a crash while writing) is not an error, and is removed
        // when the log opens again.
        std::fs::write(&path, good.clone() + "{\"seq\":6,\"ti").unwrap();
        assert_eq!(verify(dir.path()).unwrap().unwrap().last, 5);
        let log = AccessLog::open(dir.path(), 400, None).unwrap();
        log.record(entry("ci", "POST /graphql"));
        log.close();
        assert_eq!(verify(dir.path()).unwrap().unwrap().last, 6);
    }

    #[test]
    fn pruning_keeps_the_chain_checkable() {
        let dir = tempfile::tempdir().unwrap();
        let log = AccessLog::open(dir.path(), 400, None).unwrap();
        for _ in 0..4 {
            log.record(entry("ci", "POST /graphql"));
        }
        log.close();
        // Make today's file an old day's, then prune with a retention that drops it.
        let old = dir.path().join("2020-01-01.ndjson");
        std::fs::rename(the_file(dir.path()), &old).unwrap();
        let log = AccessLog::open(dir.path(), 400, None).unwrap();
        log.record(entry("ci", "POST /graphql"));
        log.close();
        assert!(!old.exists(), "a day past the retention is removed");
        let v = verify(dir.path()).unwrap().unwrap();
        assert_eq!((v.first, v.last, v.entries), (5, 5, 1));
    }
}
