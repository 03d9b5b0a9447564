//! The sources of a crawl, run concurrently under one budget.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use idgraph_model::{Account, Contact, Record, RecordError, ScimUser, User};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::auth::TokenSource;
use crate::budget::Budget;
use crate::client::{DriftClient, Reply};
use crate::{Checkpoint, CheckpointUpdate, ContactsMode, CrawlConfig, CrawlError, CrawlEvent, CrawlSummary, Source};

/// The most contact reads a crawl keeps in flight, however large the budget.
pub const MAX_IN_FLIGHT: usize = 256;
/// The most conversation pages whose contacts are read at once.
const MAX_PAGES_AHEAD: usize = 64;
/// Contact reads kept outstanding, in full pages per page read at once: listing goes on while
/// fewer are, so that a slow or retried listing page does not leave the budget idle.
const READS_AHEAD_PAGES: usize = 3;

/// Conversation pages whose contacts are being read, oldest first, each with its checkpoint.
/// Dropped early (the crawl failed or was cancelled), it stops the reads still going.
type PageRead = (tokio::task::JoinHandle<Result<Vec<Value>, CrawlError>>, Vec<CheckpointUpdate>);
struct ReadAhead(std::collections::VecDeque<PageRead>);

impl Drop for ReadAhead {
    fn drop(&mut self) {
        for (task, _) in &self.0 {
            task.abort();
        }
    }
}

/// The most SCIM users a crawl will page through before it calls the source broken.
const SCIM_USERS_MAX: usize = 1_000_000;

#[derive(Default)]
struct Counts {
    contacts: AtomicU64,
    users: AtomicU64,
    scim: AtomicU64,
    accounts: AtomicU64,
    bad: AtomicU64,
}

/// A crawler for one org.
#[derive(Debug, Clone)]
pub struct Crawler {
    cfg: CrawlConfig,
    rest: DriftClient,
    scim: Option<DriftClient>,
}

fn base(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

impl Crawler {
    pub fn new(cfg: CrawlConfig) -> Result<Crawler, CrawlError> {
        if !(1..=100).contains(&cfg.page_size) {
            return Err(CrawlError::Config(format!("page size {} is not in 1..=100", cfg.page_size)));
        }
        url::Url::parse(&cfg.drift_url).map_err(|e| CrawlError::Config(format!("drift url: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("idgraph/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CrawlError::Config(format!("http client: {e}")))?;
        let budget = Arc::new(Budget::new(cfg.budget));
        let auth = Arc::new(TokenSource::new(cfg.credentials.clone(), http.clone())?);
        let rest = DriftClient::new(http.clone(), auth, budget.clone(), cfg.retry);
        let scim = match (&cfg.scim_url, &cfg.scim_credentials) {
            (None, _) => None,
            (Some(_), None) => Some(rest.clone()),
            (Some(_), Some(creds)) => {
                // A separate token has a budget of its own.
                let auth = Arc::new(TokenSource::new(creds.clone(), http.clone())?);
                Some(DriftClient::new(http, auth, Arc::new(Budget::new(cfg.budget)), cfg.retry))
            }
        };
        Ok(Crawler { cfg, rest, scim })
    }

    /// The REST client, for writes made under the same budget (reassignment).
    pub fn client(&self) -> &DriftClient {
        &self.rest
    }

    /// The Drift org the token belongs to, as `POST /app/token_info` tells it (`None`: not said).
    pub async fn org_id(&self) -> Result<Option<u64>, CrawlError> {
        self.rest.token_org(&self.url("/app/token_info")).await
    }

    pub fn config(&self) -> &CrawlConfig {
        &self.cfg
    }

    /// A full crawl: agents, SCIM users, accounts and contacts, concurrently. `resume` is the last
    /// stored checkpoint (default for a fresh crawl) and `known` the contact ids already stored
    /// by the interrupted run, so discovery does not fetch them again.
    pub async fn run(
        &self,
        resume: Checkpoint,
        known: HashSet<u64>,
        tx: mpsc::Sender<CrawlEvent>,
    ) -> Result<CrawlSummary, CrawlError> {
        self.run_sources(&[Source::Users, Source::Scim, Source::Accounts, Source::Contacts], resume, known, tx).await
    }

    /// An agents-only refresh: REST users and SCIM users (a few requests).
    pub async fn run_agents(&self, tx: mpsc::Sender<CrawlEvent>) -> Result<CrawlSummary, CrawlError> {
        self.run_sources(&[Source::Users, Source::Scim], Checkpoint::default(), HashSet::new(), tx).await
    }

    async fn run_sources(
        &self,
        sources: &[Source],
        resume: Checkpoint,
        known: HashSet<u64>,
        tx: mpsc::Sender<CrawlEvent>,
    ) -> Result<CrawlSummary, CrawlError> {
        let started = Instant::now();
        // The client's counters run for its whole life: a run reports what it added to them
        // (with requests others made on the same client meanwhile, such as the refresher's).
        let totals = |c: &Crawler| {
            let mut t = [&c.rest.stats.requests, &c.rest.stats.rate_limited, &c.rest.stats.retries]
                .map(|a| a.load(Ordering::Relaxed));
            if let Some(sc) = c.scim.as_ref().filter(|sc| !Arc::ptr_eq(&sc.stats, &c.rest.stats)) {
                t[0] += sc.stats.requests.load(Ordering::Relaxed);
                t[1] += sc.stats.rate_limited.load(Ordering::Relaxed);
                t[2] += sc.stats.retries.load(Ordering::Relaxed);
            }
            t
        };
        let before = totals(self);
        let counts = Arc::new(Counts::default());
        let want = |s: Source| sources.contains(&s) && !resume.is_done(s);
        let scim_available = Arc::new(Mutex::new(resume.scim_available.unwrap_or(false)));
        let high_water = Arc::new(Mutex::new(resume.high_water_ms));
        let mode = Arc::new(Mutex::new(resume.mode));
        let users = async {
            if want(Source::Users) {
                self.crawl_users(&tx, &counts).await?;
            }
            Ok::<_, CrawlError>(())
        };
        let scim = async {
            if want(Source::Scim) {
                let ok = self.crawl_scim(&tx, &counts).await?;
                *scim_available.lock() = ok;
            }
            Ok::<_, CrawlError>(())
        };
        let accounts = async {
            if want(Source::Accounts) {
                self.crawl_accounts(&tx, &counts).await?;
            }
            Ok::<_, CrawlError>(())
        };
        let contacts = async {
            if want(Source::Contacts) {
                let (m, hw) = self.crawl_contacts(&resume, known, &tx, &counts).await?;
                *mode.lock() = Some(m);
                if hw.is_some() {
                    *high_water.lock() = hw;
                }
            }
            Ok::<_, CrawlError>(())
        };
        tokio::try_join!(users, scim, accounts, contacts)?;
        let after = totals(self);
        let summary = CrawlSummary {
            contacts: counts.contacts.load(Ordering::Relaxed),
            users: counts.users.load(Ordering::Relaxed),
            scim_users: counts.scim.load(Ordering::Relaxed),
            accounts: counts.accounts.load(Ordering::Relaxed),
            bad_records: counts.bad.load(Ordering::Relaxed),
            requests: after[0] - before[0],
            rate_limited: after[1] - before[1],
            retries: after[2] - before[2],
            scim_available: *scim_available.lock(),
            mode: *mode.lock(),
            high_water_ms: *high_water.lock(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        Ok(summary)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", base(&self.cfg.drift_url))
    }

    /// Resolves a `next` link that may be absolute or relative to the REST base.
    fn resolve(&self, link: &str) -> String {
        match url::Url::parse(link) {
            Ok(u) => u.to_string(),
            Err(_) => match url::Url::parse(&base(&self.cfg.drift_url)).and_then(|b| b.join(link)) {
                Ok(u) => u.to_string(),
                Err(_) => self.url(link),
            },
        }
    }

    async fn send(tx: &mpsc::Sender<CrawlEvent>, ev: CrawlEvent) -> Result<(), CrawlError> {
        tx.send(ev).await.map_err(|_| CrawlError::Closed)
    }

    /// Sends a page of records with the checkpoint updates that follow it.
    async fn page(
        tx: &mpsc::Sender<CrawlEvent>,
        source: Source,
        records: Vec<Record>,
        checkpoint: Vec<CheckpointUpdate>,
    ) -> Result<(), CrawlError> {
        Self::send(tx, CrawlEvent::Page { source, records, checkpoint }).await
    }

    /// Parses each element of a page; a bad one is reported and skipped, the rest kept.
    async fn parse_page<T>(
        tx: &mpsc::Sender<CrawlEvent>,
        counts: &Counts,
        source: Source,
        items: &[Value],
        parse: impl Fn(&Value) -> Result<T, RecordError>,
    ) -> Result<Vec<T>, CrawlError> {
        let mut out = Vec::with_capacity(items.len());
        for v in items {
            match parse(v) {
                Ok(r) => out.push(r),
                Err(e) => {
                    counts.bad.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(?source, error = %e, "skipping a record that cannot be read");
                    Self::send(tx, CrawlEvent::BadRecord { source, error: e.to_string() }).await?;
                }
            }
        }
        Ok(out)
    }

    /// A reply whose body lacks the expected list is retried like a malformed body, then reported.
    async fn get_list(
        &self,
        client: &DriftClient,
        url: &str,
        extract: impl Fn(&Value) -> Option<Vec<Value>>,
    ) -> Result<(Reply, Vec<Value>), CrawlError> {
        let mut tries = 0;
        loop {
            let reply = client.get_first(url).await?;
            if reply.status.as_u16() == 404 {
                return Err(CrawlError::Http {
                    endpoint: crate::client::endpoint_of(url),
                    status: 404,
                    message: "not found".into(),
                });
            }
            if let Some(items) = extract(&reply.body) {
                return Ok((reply, items));
            }
            tries += 1;
            if tries >= 3 {
                return Err(CrawlError::Shape {
                    endpoint: crate::client::endpoint_of(url),
                    detail: "the body has no list where one was expected".into(),
                });
            }
        }
    }

    async fn crawl_users(&self, tx: &mpsc::Sender<CrawlEvent>, counts: &Counts) -> Result<(), CrawlError> {
        let data_list = |v: &Value| v.get("data").and_then(Value::as_array).cloned();
        let items = match self.get_list(&self.rest, &self.url("/users/list"), data_list).await {
            Ok((_, items)) => items,
            // The brief calls it `/users`.
            Err(CrawlError::Http { status: 404, .. }) => {
                self.get_list(&self.rest, &self.url("/users"), data_list).await?.1
            }
            Err(e) => return Err(e),
        };
        let users = Self::parse_page(tx, counts, Source::Users, &items, User::from_json).await?;
        counts.users.fetch_add(users.len() as u64, Ordering::Relaxed);
        let records = users.into_iter().map(Record::User).collect();
        Self::page(tx, Source::Users, records, vec![CheckpointUpdate::Done(Source::Users)]).await
    }

    /// Pages SCIM users from `startIndex=1` until `totalResults`, never trusting `itemsPerPage`.
    /// Returns false when SCIM is refused (not Enterprise): a REST-only crawl, with one warning.
    async fn crawl_scim(&self, tx: &mpsc::Sender<CrawlEvent>, counts: &Counts) -> Result<bool, CrawlError> {
        let (Some(client), Some(scim_url)) = (&self.scim, &self.cfg.scim_url) else {
            return Ok(false);
        };
        let scim_url = base(scim_url);
        let mut start = 1usize;
        let mut first = true;
        let mut pages = 0usize;
        loop {
            let url = format!("{scim_url}/Users?startIndex={start}&count=100");
            let resources = |v: &Value| {
                v.get("Resources").and_then(Value::as_array).cloned().or_else(|| {
                    // An empty ListResponse may omit Resources.
                    v.get("totalResults").map(|_| Vec::new())
                })
            };
            let (reply, items) = match self.get_list(client, &url, resources).await {
                Ok(x) => x,
                Err(
                    e @ (CrawlError::Unauthorized { .. }
                    | CrawlError::Forbidden { .. }
                    | CrawlError::Http { status: 403 | 404 | 401, .. }),
                ) if first => {
                    let msg = format!("SCIM is not available ({e}); crawling REST only: deactivations will show only once Drift deletes the user");
                    Self::send(tx, CrawlEvent::Warning(msg)).await?;
                    Self::page(
                        tx,
                        Source::Scim,
                        vec![],
                        vec![CheckpointUpdate::ScimAvailable(false), CheckpointUpdate::Done(Source::Scim)],
                    )
                    .await?;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            first = false;
            pages += 1;
            let total = reply.body.get("totalResults").and_then(Value::as_u64).unwrap_or(0) as usize;
            let received = items.len();
            let users = Self::parse_page(tx, counts, Source::Scim, &items, ScimUser::from_json).await?;
            counts.scim.fetch_add(users.len() as u64, Ordering::Relaxed);
            let done = received == 0 || start - 1 + received >= total;
            let mut checkpoint = vec![CheckpointUpdate::ScimAvailable(true)];
            if done {
                checkpoint.push(CheckpointUpdate::Done(Source::Scim));
            }
            Self::page(tx, Source::Scim, users.into_iter().map(Record::ScimUser).collect(), checkpoint).await?;
            if done {
                return Ok(true);
            }
            start += received;
            if start > SCIM_USERS_MAX || pages >= self.cfg.max_pages {
                return Err(CrawlError::Bound("SCIM Users".into()));
            }
        }
    }

    async fn crawl_accounts(&self, tx: &mpsc::Sender<CrawlEvent>, counts: &Counts) -> Result<(), CrawlError> {
        let mut url = self.url("/accounts?index=0&size=100");
        let mut pages = 0usize;
        let mut index = 0usize;
        loop {
            let accounts_of = |v: &Value| v.get("data")?.get("accounts")?.as_array().cloned();
            let (reply, items) = match self.get_list(&self.rest, &url, accounts_of).await {
                Ok(x) => x,
                Err(e @ (CrawlError::Forbidden { .. } | CrawlError::Http { status: 403 | 404, .. })) if pages == 0 => {
                    let msg = format!("accounts are not available ({e}); crawling without them");
                    Self::send(tx, CrawlEvent::Warning(msg)).await?;
                    break;
                }
                Err(e) => return Err(e),
            };
            pages += 1;
            let data = reply.body.get("data").cloned().unwrap_or(Value::Null);
            let total = data.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            let n = items.len();
            let accounts = Self::parse_page(tx, counts, Source::Accounts, &items, Account::from_json).await?;
            counts.accounts.fetch_add(accounts.len() as u64, Ordering::Relaxed);
            index += n;
            let next = data.get("next").and_then(Value::as_str).map(|l| self.resolve(l));
            let done = n == 0 || index >= total || next.is_none();
            Self::page(tx, Source::Accounts, accounts.into_iter().map(Record::Account).collect(), vec![]).await?;
            if done {
                break;
            }
            if pages >= self.cfg.max_pages {
                return Err(CrawlError::Bound("accounts".into()));
            }
            url = next.unwrap_or_else(|| self.url(&format!("/accounts?index={index}&size=100")));
        }
        Self::page(tx, Source::Accounts, vec![], vec![CheckpointUpdate::Done(Source::Accounts)]).await
    }

    async fn crawl_contacts(
        &self,
        resume: &Checkpoint,
        known: HashSet<u64>,
        tx: &mpsc::Sender<CrawlEvent>,
        counts: &Counts,
    ) -> Result<(ContactsMode, Option<i64>), CrawlError> {
        let mode = match resume.mode {
            Some(m) => m,
            None => self.probe_listing().await?,
        };
        match mode {
            ContactsMode::Listing => {
                self.list_contacts(resume.contacts_next.clone(), tx, counts).await?;
                Ok((mode, None))
            }
            ContactsMode::Discovery => {
                let hw = self.discover_contacts(resume, known, tx, counts).await?;
                Ok((mode, hw))
            }
        }
    }

    /// Asks for the cursor listing once: a list means it is offered, a 400 means Drift's documented
    /// API without one.
    async fn probe_listing(&self) -> Result<ContactsMode, CrawlError> {
        match self.rest.get(&self.url("/contacts?limit=1")).await {
            Ok(r) if r.body.get("data").is_some_and(Value::is_array) => Ok(ContactsMode::Listing),
            Ok(_) | Err(CrawlError::Http { status: 400 | 404 | 405, .. }) => {
                tracing::info!("the contact listing is refused: discovering contacts through conversations");
                Ok(ContactsMode::Discovery)
            }
            Err(e) => Err(e),
        }
    }

    async fn list_contacts(
        &self,
        mut cursor: Option<String>,
        tx: &mpsc::Sender<CrawlEvent>,
        counts: &Counts,
    ) -> Result<(), CrawlError> {
        let limit = self.cfg.page_size;
        for _ in 0..self.cfg.max_pages {
            let url = match &cursor {
                Some(c) => self.url(&format!("/contacts?limit={limit}&next={}", urlencoding::encode(c))),
                None => self.url(&format!("/contacts?limit={limit}")),
            };
            let (reply, items) =
                self.get_list(&self.rest, &url, |v| v.get("data").and_then(Value::as_array).cloned()).await?;
            let contacts = Self::parse_page(tx, counts, Source::Contacts, &items, Contact::from_json).await?;
            counts.contacts.fetch_add(contacts.len() as u64, Ordering::Relaxed);
            let next = reply.body.get("next").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
            let mut checkpoint = vec![CheckpointUpdate::Listing { next: next.clone() }];
            if next.is_none() {
                checkpoint.push(CheckpointUpdate::Done(Source::Contacts));
            }
            Self::page(tx, Source::Contacts, contacts.into_iter().map(Record::Contact).collect(), checkpoint).await?;
            match next {
                None => return Ok(()),
                Some(n) => cursor = Some(n),
            }
        }
        Err(CrawlError::Bound("contacts listing".into()))
    }

    /// Re-reads one contact (`GET /contacts/{id}`); `None` when Drift answers 404 (deleted).
    pub async fn read_contact(&self, id: u64) -> Result<Option<Contact>, CrawlError> {
        let r = self.rest.get(&self.url(&format!("/contacts/{id}"))).await?;
        if r.status.as_u16() == 404 {
            return Ok(None);
        }
        let shape = |detail: String| CrawlError::Shape { endpoint: "/contacts/{id}".into(), detail };
        let data = r.body.get("data").ok_or_else(|| shape("no data".into()))?;
        Contact::from_json(data).map(Some).map_err(|e| shape(e.to_string()))
    }

    /// One page of the contact listing from `cursor` (the start when `None`): its contacts (bad
    /// records skipped) and the next cursor (`None` at the end).
    pub async fn listing_page(&self, cursor: Option<&str>) -> Result<(Vec<Contact>, Option<String>), CrawlError> {
        let limit = self.cfg.page_size;
        let url = match cursor {
            Some(c) => self.url(&format!("/contacts?limit={limit}&next={}", urlencoding::encode(c))),
            None => self.url(&format!("/contacts?limit={limit}")),
        };
        let (reply, items) =
            self.get_list(&self.rest, &url, |v| v.get("data").and_then(Value::as_array).cloned()).await?;
        let contacts = items.iter().filter_map(|v| Contact::from_json(v).ok()).collect();
        let next = reply.body.get("next").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        Ok((contacts, next))
    }

    /// The contacts of conversations updated at or after `since_ms`, newest first (at most
    /// `max_pages` pages), and the newest conversation's time.
    pub async fn conversation_contacts(
        &self,
        since_ms: i64,
        max_pages: usize,
    ) -> Result<(Vec<u64>, Option<i64>), CrawlError> {
        let mut url = self.url(&format!("/conversations/list?limit={}", self.cfg.page_size));
        let (mut ids, mut newest) = (Vec::new(), None);
        for _ in 0..max_pages.max(1) {
            let (reply, items) =
                self.get_list(&self.rest, &url, |v| v.get("data").and_then(Value::as_array).cloned()).await?;
            let mut older = false;
            for conv in &items {
                let updated = conv.get("updatedAt").and_then(Value::as_i64).unwrap_or(0);
                newest = newest.max(Some(updated));
                if updated < since_ms {
                    older = true;
                    break;
                }
                ids.extend(conv.get("contactId").and_then(idgraph_model::id_from_value));
            }
            let next = reply.body.get("links").and_then(|l| l.get("next")).and_then(Value::as_str);
            match next.filter(|s| !s.is_empty() && !older && !items.is_empty()) {
                Some(n) => url = self.resolve(n),
                None => break,
            }
        }
        Ok((ids, newest))
    }

    /// Conversations newest first, then each contact id not yet known; then the known-ids file.
    ///
    /// The contacts of several conversation pages are read at once (`pages_ahead`, more with a
    /// larger budget), each page's reads spread over `in_flight` requests, so that a slow answer
    /// or a retry waiting its backoff holds up its own page, not the crawl. Pages are still handed
    /// on in order, each with its checkpoint, so a resume never skips one.
    async fn discover_contacts(
        &self,
        resume: &Checkpoint,
        mut known: HashSet<u64>,
        tx: &mpsc::Sender<CrawlEvent>,
        counts: &Counts,
    ) -> Result<Option<i64>, CrawlError> {
        let mut url = resume
            .conversations_next
            .clone()
            .unwrap_or_else(|| self.url(&format!("/conversations/list?limit={}", self.cfg.page_size)));
        let mut high_water = None;
        let mut pages = 0usize;
        let mut listed_all = false;
        let mut ahead = ReadAhead(std::collections::VecDeque::new());
        // Each read signals when it ends, so that a page waiting on a slow answer or a retry does
        // not keep the next pages from starting (they wait, read, to be handed on in order).
        // Pages are listed while fewer reads are outstanding than `pages_ahead` full pages hold:
        // reads, not pages, so that pages each waiting on one straggler do not hold it up.
        let ended = Arc::new(tokio::sync::Notify::new());
        let outstanding = Arc::new(AtomicUsize::new(0));
        loop {
            let limit = self.pages_ahead();
            let (reads_max, pages_max) = (limit * self.cfg.page_size * READS_AHEAD_PAGES, limit * 8);
            while !listed_all && outstanding.load(Ordering::Relaxed) < reads_max && ahead.0.len() < pages_max {
                let (reply, items) =
                    self.get_list(&self.rest, &url, |v| v.get("data").and_then(Value::as_array).cloned()).await?;
                pages += 1;
                let mut ids = Vec::new();
                let mut reached_since = false;
                for conv in &items {
                    let updated = conv.get("updatedAt").and_then(Value::as_i64).unwrap_or(0);
                    if high_water.is_none_or(|h| updated > h) {
                        high_water = Some(updated);
                    }
                    if resume.since_ms.or(self.cfg.since_ms).is_some_and(|s| updated < s) {
                        reached_since = true;
                        break;
                    }
                    if let Some(id) = conv.get("contactId").and_then(idgraph_model::id_from_value) {
                        if known.insert(id) {
                            ids.push(id);
                        }
                    }
                }
                let next = reply
                    .body
                    .get("links")
                    .and_then(|l| l.get("next"))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(|l| self.resolve(l));
                listed_all = next.is_none() || reached_since || items.is_empty();
                let checkpoint = vec![CheckpointUpdate::Conversations {
                    next: if listed_all { None } else { next.clone() },
                    high_water_ms: high_water,
                }];
                let (me, end, left) = (self.clone(), ended.clone(), outstanding.clone());
                left.fetch_add(ids.len(), Ordering::Relaxed);
                let task = tokio::spawn(async move { me.read_contacts(&ids, &left, &end).await });
                ahead.0.push_back((task, checkpoint));
                if !listed_all {
                    if pages >= self.cfg.max_pages {
                        return Err(CrawlError::Bound("conversations".into()));
                    }
                    url = next.unwrap_or_default();
                }
            }
            let front_done = ahead.0.front().map(|(t, _)| t.is_finished());
            let can_list = !listed_all && ahead.0.len() < pages_max;
            match front_done {
                None => break,
                Some(false) if can_list => {
                    // Wait for any read to end, then list more or hand on the first.
                    ended.notified().await;
                    continue;
                }
                _ => {}
            }
            let Some((read, checkpoint)) = ahead.0.pop_front() else { break };
            let values = read.await.map_err(|e| CrawlError::Config(format!("a contact read task failed: {e}")))??;
            let fetched = Self::parse_page(tx, counts, Source::Contacts, &values, Contact::from_json).await?;
            counts.contacts.fetch_add(fetched.len() as u64, Ordering::Relaxed);
            Self::page(tx, Source::Contacts, fetched.into_iter().map(Record::Contact).collect(), checkpoint).await?;
        }
        self.known_ids(&mut known, tx, counts).await?;
        Self::page(tx, Source::Contacts, vec![], vec![CheckpointUpdate::Done(Source::Contacts)]).await?;
        Ok(high_water)
    }

    /// How many conversation pages' contacts are read at once: one at Drift's documented 200 a
    /// minute, one more for every 100 requests a second of budget, at most `MAX_PAGES_AHEAD`.
    fn pages_ahead(&self) -> usize {
        ((self.cfg.budget.per_second() / 100.0).ceil() as usize).clamp(1, MAX_PAGES_AHEAD)
    }

    /// How many reads to keep in flight: enough to spend the budget at the service's current
    /// latency (twice the product, for slow answers and retries that hold a slot), never fewer
    /// than `concurrency`, never more than `MAX_IN_FLIGHT`.
    pub fn in_flight(&self) -> usize {
        let latency = self.rest.stats.latency().as_secs_f64();
        let wanted = (self.cfg.budget.per_second() * latency * 2.0).ceil() as usize;
        wanted.clamp(self.cfg.concurrency.max(1), MAX_IN_FLIGHT)
    }

    /// Reads contacts by id, `in_flight` at a time: their records as Drift sent them (a 404,
    /// deleted since, is skipped). Each read that ends takes one off `left` and says so to `ended`.
    async fn read_contacts(
        &self,
        ids: &[u64],
        left: &AtomicUsize,
        ended: &tokio::sync::Notify,
    ) -> Result<Vec<Value>, CrawlError> {
        let results: Vec<Result<Option<Value>, CrawlError>> = stream::iter(ids.iter().copied())
            .map(|id| async move {
                let r = self.rest.get(&self.url(&format!("/contacts/{id}"))).await;
                left.fetch_sub(1, Ordering::Relaxed);
                ended.notify_one();
                let r = r?;
                Ok(if r.status.as_u16() == 404 { None } else { r.body.get("data").cloned() })
            })
            .buffer_unordered(self.in_flight())
            .collect()
            .await;
        let mut values = Vec::with_capacity(results.len());
        for r in results {
            if let Some(v) = r? {
                values.push(v);
            }
        }
        Ok(values)
    }

    /// Looks up every email (and `ext:` external id) of the known-ids file.
    async fn known_ids(
        &self,
        known: &mut HashSet<u64>,
        tx: &mpsc::Sender<CrawlEvent>,
        counts: &Counts,
    ) -> Result<(), CrawlError> {
        let Some(path) = &self.cfg.known_ids_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| CrawlError::Config(format!("known ids file {}: {e}", path.display())))?;
        for chunk in
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect::<Vec<_>>().chunks(20)
        {
            let mut records = Vec::new();
            for line in chunk {
                let url = match line.strip_prefix("ext:") {
                    Some(x) => self.url(&format!("/contacts?idType=external&id={}", urlencoding::encode(x))),
                    None => self.url(&format!("/contacts?email={}", urlencoding::encode(line))),
                };
                let (_, items) =
                    self.get_list(&self.rest, &url, |v| v.get("data").and_then(Value::as_array).cloned()).await?;
                for c in Self::parse_page(tx, counts, Source::Contacts, &items, Contact::from_json).await? {
                    if known.insert(c.id) {
                        counts.contacts.fetch_add(1, Ordering::Relaxed);
                        records.push(Record::Contact(c));
                    }
                }
            }
            Self::page(tx, Source::Contacts, records, vec![]).await?;
        }
        Ok(())
    }
}
