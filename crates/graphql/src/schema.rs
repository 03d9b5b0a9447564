//! The GraphQL schema. Field names listed in the serving issue are a contract: keep them.

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{
    Context, EmptySubscription, Enum, Error, ErrorExtensions, Guard, Object, Result, Schema, SimpleObject, ID,
};
use chrono::{DateTime, Utc};
use idgraph_graph::audit::{self, AgentAudit};
use idgraph_graph::{
    AccountView, AgentStatus as GStatus, AgentView, Change, ChangeFilter, ChangeKind as GKind, ContactView, Graph,
    OrphanKey, OrphanReason as GReason, OrphanView, OwnershipRow,
};

use crate::{Operations, ReassignRequest, Scope};

/// The most items one page may ask for.
pub const PAGE_MAX: i32 = 100;
const PAGE_DEFAULT: i32 = 20;
/// The deepest query accepted.
pub const DEPTH_MAX: usize = 12;
/// The deepest introspection query accepted: graphql-js's and GraphiQL's standard query nests
/// `ofType` nine times below `__schema.types.fields.type`.
pub const INTROSPECTION_DEPTH_MAX: usize = 20;
/// The most items one batch lookup may name.
pub const BATCH_MAX: usize = 1000;
/// The most complex query accepted (connections count `first` times their children).
pub const COMPLEXITY_MAX: usize = 20_000;

pub type AppSchema = Schema<Query, Mutation, EmptySubscription>;

/// What resolvers reach.
pub struct Ctx {
    pub graph: Arc<Graph>,
    pub ops: Arc<dyn Operations>,
    /// The org this schema answers for (`None`: the server's only one).
    pub org: Option<String>,
    /// Every org of the server, for `person` and `orgs` (`None`: this one alone).
    pub orgs: Option<Arc<dyn crate::OrgDirectory>>,
}

pub use idgraph_access::Role;

/// Set on a request that came with GET: it never carries admin rights (another page could
/// forge it), and a refusal says to send it with POST.
#[derive(Debug, Clone, Copy)]
pub struct SentWithGet;

/// Default deny: a field needs the role it names (`RoleGuard(Role::Auditor)`); every field
/// without a guard needs at least `viewer`, which every request that reaches GraphQL has. The
/// refusal names the role needed.
pub(crate) struct RoleGuard(pub Role);

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        let held = ctx.data_opt::<Role>().copied();
        if held.is_some_and(|r| r >= self.0) {
            return Ok(());
        }
        if ctx.data_opt::<SentWithGet>().is_some() && self.0 == Role::Admin {
            return Err(coded(
                "FORBIDDEN",
                "mutations and admin fields need POST: a GET request never carries admin rights",
            ));
        }
        let held = held.map_or("no role".to_string(), |r| format!("the {r} role"));
        Err(coded("FORBIDDEN", format!("this needs the {} role (the caller has {held})", self.0)))
    }
}

/// What the server's whole scope (every org) grants: the service tokens and the access log are
/// the server's, not one org's, so an admin of one org does not manage them.
pub(crate) struct ServerAdmin;

impl Guard for ServerAdmin {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        RoleGuard(Role::Admin).check(ctx).await?;
        let everywhere = ctx.data_opt::<idgraph_access::Principal>().is_some_and(|p| p.may(Role::Admin, None));
        if everywhere {
            Ok(())
        } else {
            Err(coded(
                "FORBIDDEN",
                "this needs the admin role in every org (the server's tokens and access log are not one org's)",
            ))
        }
    }
}

/// The schema (a GraphQL Federation v2 subgraph too: `_service { sdl }`, and `Agent` and
/// `Contact` as entities). One for the whole process: what a request reads (its org's graph and
/// operations) comes with the request as an `Arc<Ctx>`, so a server of a hundred orgs builds the
/// schema's registry once, not a hundred times.
pub fn build_schema() -> AppSchema {
    static SCHEMA: std::sync::OnceLock<AppSchema> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Schema::build(Query, Mutation, EmptySubscription)
                .limit_depth(DEPTH_MAX)
                .limit_complexity(COMPLEXITY_MAX)
                .enable_federation()
                .finish()
        })
        .clone()
}

/// The Federation v2 SDL, as `_service { sdl }` answers it.
pub fn federation_sdl() -> String {
    Schema::build(Query, Mutation, EmptySubscription)
        .enable_federation()
        .finish()
        .sdl_with_options(async_graphql::SDLExportOptions::new().federation().compose_directive())
}

/// The schema that answers introspection-only documents (see `server::introspection_only`): the
/// same types, a depth limit that the standard introspection query fits in. It never resolves
/// an ordinary field: requests reach it with `only_introspection()`.
pub fn build_introspection_schema() -> AppSchema {
    static SCHEMA: std::sync::OnceLock<AppSchema> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Schema::build(Query, Mutation, EmptySubscription)
                .limit_depth(INTROSPECTION_DEPTH_MAX)
                .limit_complexity(COMPLEXITY_MAX)
                .finish()
        })
        .clone()
}

/// An error with `extensions.code`, the part of an error a client can act on.
pub fn coded(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn bad_input(message: impl Into<String>) -> Error {
    coded("BAD_USER_INPUT", message)
}

fn internal(e: impl std::fmt::Display) -> Error {
    coded("INTERNAL", e.to_string())
}

/// The graph, once an index is loaded: before that every query that reads it answers
/// `NOT_READY` rather than zeros.
fn graph<'a>(c: &'a Context<'_>) -> Result<&'a Arc<Graph>> {
    let g = &ctx(c)?.graph;
    if !g.ready() {
        return Err(coded("NOT_READY", "no index is loaded yet: the first crawl is still running (see /readyz)"));
    }
    Ok(g)
}

/// The schema in SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    // With `@specifiedBy`, as introspection reports it: a client's printed schema matches.
    Schema::build(Query, Mutation, EmptySubscription)
        .finish()
        .sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by())
}

/// What resolvers reach, for a request that names its org (on a server with several, one that
/// names none answers only the fields that span orgs).
pub(crate) fn ctx<'a>(c: &'a Context<'_>) -> Result<&'a Ctx> {
    if c.data_opt::<crate::orgs::AcrossOrgs>().is_some() {
        return Err(coded(
            "ORG_REQUIRED",
            "this server holds several orgs: name one (/orgs/NAME/graphql, or the X-Idgraph-Org header); person and orgs answer across them",
        ));
    }
    c.data::<Arc<Ctx>>().map(|a| a.as_ref())
}

pub(crate) fn time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// What a page costs in the complexity budget: its items (as many as it may hold) times what
/// each selects. The one place the page bounds meet the budget.
fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    first.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX) as usize * child_complexity
}

/// The most items a page of `orphans` or `changes` may ask for: a flat selection of every orphan
/// with its owner fits in one request (within the complexity budget, which still bounds what
/// each item selects).
pub const LARGE_PAGE_MAX: i32 = 1000;

/// [`page_cost`] for the lists that take pages of up to [`LARGE_PAGE_MAX`].
fn large_page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    first.unwrap_or(PAGE_DEFAULT).clamp(1, LARGE_PAGE_MAX) as usize * child_complexity
}

fn large_page_size(first: Option<i32>) -> Result<usize> {
    match first.unwrap_or(PAGE_DEFAULT) {
        n if (0..=LARGE_PAGE_MAX).contains(&n) => Ok(n as usize),
        n => Err(bad_input(format!("first must be between 0 and {LARGE_PAGE_MAX}, not {n}"))),
    }
}

/// A keyset page over items sorted by id: those after `after`, at most `n`, with whether more
/// follow and the total.
fn keyset_page<T>(all: Vec<(u64, T)>, after: Option<u64>, n: usize) -> (bool, bool, usize, Vec<(String, T)>) {
    let total = all.len();
    let start = after.map_or(0, |a| all.partition_point(|(id, _)| *id <= a));
    let has_next = total > start + n;
    let edges = all.into_iter().skip(start).take(n).map(|(id, x)| (id.to_string(), x)).collect();
    (start > 0, has_next, total, edges)
}

fn page_size(first: Option<i32>) -> Result<usize> {
    match first.unwrap_or(PAGE_DEFAULT) {
        n if (0..=PAGE_MAX).contains(&n) => Ok(n as usize),
        n => Err(bad_input(format!("first must be between 0 and {PAGE_MAX}, not {n}"))),
    }
}

fn parse_id(id: &ID, what: &str) -> Result<u64> {
    id.parse::<u64>().map_err(|_| bad_input(format!("{what} id {:?} is not a Drift id", id.as_str())))
}

fn bad_cursor() -> Error {
    bad_input("after: not a cursor this list gave out")
}

/// Pages a list sorted by cursor: the items after `after`, `n` of them, as a connection.
fn page_of<N: async_graphql::OutputType, T>(
    all: Vec<(String, T)>,
    after: Option<&str>,
    n: usize,
    node: impl Fn(T) -> N,
) -> Conn<N> {
    let total = all.len();
    let start = after.map_or(0, |a| all.iter().position(|(k, _)| k.as_str() > a).unwrap_or(total));
    let has_next = total > start + n;
    let edges = all.into_iter().skip(start).take(n).map(|(k, t)| (k, node(t))).collect();
    connection(start > 0, has_next, total, edges)
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "AgentStatus")]
pub enum AgentStatus {
    Active,
    Deactivated,
    Departed,
    Unknown,
    Bot,
}

impl From<GStatus> for AgentStatus {
    fn from(s: GStatus) -> Self {
        match s {
            GStatus::Active => AgentStatus::Active,
            GStatus::Deactivated => AgentStatus::Deactivated,
            GStatus::Departed => AgentStatus::Departed,
            GStatus::Unknown => AgentStatus::Unknown,
            GStatus::Bot => AgentStatus::Bot,
        }
    }
}

// The names are a contract (OWNER_DEACTIVATED, ...).
#[allow(clippy::enum_variant_names)]
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "OrphanReason")]
pub enum OrphanReason {
    OwnerDeactivated,
    OwnerDeparted,
    OwnerUnknown,
}

impl From<GReason> for OrphanReason {
    fn from(r: GReason) -> Self {
        match r {
            GReason::OwnerDeactivated => OrphanReason::OwnerDeactivated,
            GReason::OwnerDeparted => OrphanReason::OwnerDeparted,
            GReason::OwnerUnknown => OrphanReason::OwnerUnknown,
        }
    }
}

impl From<OrphanReason> for GReason {
    fn from(r: OrphanReason) -> Self {
        match r {
            OrphanReason::OwnerDeactivated => GReason::OwnerDeactivated,
            OrphanReason::OwnerDeparted => GReason::OwnerDeparted,
            OrphanReason::OwnerUnknown => GReason::OwnerUnknown,
        }
    }
}

/// A rendering of an audit report, as `idgraph audit --format` prints it.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AuditFormat {
    /// The text table a terminal shows.
    Table,
    /// The orphans, one row each (the columns of `/export/orphans`).
    Csv,
    /// `{kind, digest, report}`, pretty-printed.
    Json,
    Markdown,
}

impl From<AuditFormat> for audit::render::Format {
    fn from(f: AuditFormat) -> Self {
        match f {
            AuditFormat::Table => audit::render::Format::Table,
            AuditFormat::Csv => audit::render::Format::Csv,
            AuditFormat::Json => audit::render::Format::Json,
            AuditFormat::Markdown => audit::render::Format::Markdown,
        }
    }
}

fn report_error(e: audit::ReportError) -> Error {
    match e {
        audit::ReportError::NoAgent(_) | audit::ReportError::NothingAsked => bad_input(e.to_string()),
        other => internal(other),
    }
}

/// What a change recorded.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ChangeKind {
    Generation,
    AgentAppeared,
    AgentDeactivated,
    AgentDeparted,
    AgentReactivated,
    ContactAdded,
    ContactRemoved,
    ContactMoved,
}

impl ChangeKind {
    fn of(k: &GKind) -> ChangeKind {
        match k {
            GKind::Generation { .. } => ChangeKind::Generation,
            GKind::AgentAppeared { .. } => ChangeKind::AgentAppeared,
            GKind::AgentDeactivated { .. } => ChangeKind::AgentDeactivated,
            GKind::AgentDeparted { .. } => ChangeKind::AgentDeparted,
            GKind::AgentReactivated { .. } => ChangeKind::AgentReactivated,
            GKind::ContactAdded { .. } => ChangeKind::ContactAdded,
            GKind::ContactRemoved { .. } => ChangeKind::ContactRemoved,
            GKind::ContactMoved { .. } => ChangeKind::ContactMoved,
        }
    }

    /// The name the graph's history uses (`CONTACT_MOVED`, ...): the GraphQL name.
    fn graph_name(self) -> &'static str {
        match self {
            ChangeKind::Generation => "GENERATION",
            ChangeKind::AgentAppeared => "AGENT_APPEARED",
            ChangeKind::AgentDeactivated => "AGENT_DEACTIVATED",
            ChangeKind::AgentDeparted => "AGENT_DEPARTED",
            ChangeKind::AgentReactivated => "AGENT_REACTIVATED",
            ChangeKind::ContactAdded => "CONTACT_ADDED",
            ChangeKind::ContactRemoved => "CONTACT_REMOVED",
            ChangeKind::ContactMoved => "CONTACT_MOVED",
        }
    }
}

/// The total of a change feed, counted only when asked for (it reads the history).
pub struct ChangeTotal {
    filter: ChangeFilter,
}

#[Object]
impl ChangeTotal {
    /// How many changes pass the filters (the cursor aside).
    async fn total_count(&self, c: &Context<'_>) -> Result<usize> {
        ctx(c)?.graph.count_changes(&self.filter).map_err(internal)
    }
}

/// A page of the change feed, from `filter`'s cursor on.
fn change_page(g: &Graph, filter: ChangeFilter, n: usize) -> Result<Connection<String, ChangeObj, ChangeTotal>> {
    let mut rows = g.changes(&filter, n + 1).map_err(internal)?;
    let has_next = rows.len() > n;
    rows.truncate(n);
    let mut conn = Connection::with_additional_fields(filter.after_seq.is_some(), has_next, ChangeTotal { filter });
    conn.edges.extend(rows.into_iter().map(|ch| Edge::new(ch.seq.to_string(), ChangeObj(ch))));
    Ok(conn)
}

fn parse_seq(after: Option<String>) -> Result<Option<u64>> {
    after.map(|a| a.parse::<u64>().map_err(|_| bad_cursor())).transpose()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum ReindexScope {
    #[default]
    Full,
    Agents,
}

#[derive(SimpleObject, Debug, Clone, Default)]
pub struct TotalCount {
    /// How many items the whole list holds.
    total_count: usize,
}

pub type Conn<N> = Connection<String, N, TotalCount>;

fn connection<N: async_graphql::OutputType>(
    has_prev: bool,
    has_next: bool,
    total: usize,
    edges: Vec<(String, N)>,
) -> Conn<N> {
    let mut c = Connection::with_additional_fields(has_prev, has_next, TotalCount { total_count: total });
    c.edges.extend(edges.into_iter().map(|(cur, n)| Edge::new(cur, n)));
    c
}

/// A Drift contact (an end user).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Contact {
    id: ID,
    email: Option<String>,
    name: Option<String>,
    external_id: Option<String>,
    /// The owner's Drift user id, as the contact carries it.
    owner_id: Option<ID>,
    updated_at: Option<DateTime<Utc>>,
    /// The last time Drift confirmed this contact as it is (a crawl, a re-read, a webhook).
    verified_at: Option<DateTime<Utc>>,
    #[graphql(skip)]
    key: u64,
}

impl From<ContactView> for Contact {
    fn from(c: ContactView) -> Contact {
        Contact {
            id: ID(c.id.to_string()),
            owner_id: c.owner_id.map(|o| ID(o.to_string())),
            updated_at: time(c.updated_at_ms),
            verified_at: Some(c.verified_at_ms).filter(|t| *t > 0).and_then(time),
            key: c.id,
            email: c.email,
            name: c.name,
            external_id: c.external_id,
        }
    }
}

#[async_graphql::ComplexObject]
impl Contact {
    /// The agent who owns this contact (also a departed or unknown one).
    async fn owner(&self, c: &Context<'_>) -> Result<Option<Agent>> {
        Ok(ctx(c)?.graph.read().owner_of(self.key).cloned().map(Agent::from))
    }
    /// The owner's status; null when the contact has no owner.
    async fn owner_status(&self, c: &Context<'_>) -> Result<Option<AgentStatus>> {
        Ok(ctx(c)?.graph.read().owner_of(self.key).map(|a| a.status.into()))
    }
    /// The agent with the same email: the same person, on the other side.
    async fn same_person_agent(&self, c: &Context<'_>) -> Result<Option<Agent>> {
        Ok(ctx(c)?.graph.read().same_person(self.key).map(Agent::from))
    }
}

/// A Drift user: an agent or a bot, also one Drift has forgotten.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Agent {
    id: ID,
    email: Option<String>,
    name: Option<String>,
    status: AgentStatus,
    role: Option<String>,
    first_seen_at: Option<DateTime<Utc>>,
    deactivated_at: Option<DateTime<Utc>>,
    /// When idgraph first saw the agent gone from REST and SCIM.
    departed_at: Option<DateTime<Utc>>,
    /// Seen in REST `/users` in the last crawl.
    in_rest: bool,
    /// Seen in SCIM Users in the last crawl.
    in_scim: bool,
    /// The last time Drift confirmed the agent (the last crawl or agents refresh that saw it).
    verified_at: Option<DateTime<Utc>>,
    #[graphql(skip)]
    key: u64,
}

impl From<AgentView> for Agent {
    fn from(a: AgentView) -> Agent {
        Agent {
            id: ID(a.id.to_string()),
            status: a.status.into(),
            first_seen_at: a.first_seen_ms.and_then(time),
            deactivated_at: a.deactivated_at_ms.and_then(time),
            departed_at: a.departed_at_ms.and_then(time),
            in_rest: a.in_rest,
            in_scim: a.in_scim,
            verified_at: a.verified_at_ms.and_then(time),
            key: a.id,
            email: a.email,
            name: a.name,
            role: a.role,
        }
    }
}

#[async_graphql::ComplexObject]
impl Agent {
    async fn contact_count(&self, c: &Context<'_>) -> Result<usize> {
        Ok(ctx(c)?.graph.read().contact_count_of(self.key))
    }
    async fn account_count(&self, c: &Context<'_>) -> Result<usize> {
        Ok(ctx(c)?.graph.read().account_count_of(self.key))
    }
    /// The contacts this agent owns, by contact id.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn owned_contacts(
        &self,
        c: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<Contact>> {
        let n = page_size(first)?;
        let after = after.map(|a| a.parse::<u64>().map_err(|_| bad_cursor())).transpose()?;
        let (page, total) = ctx(c)?.graph.read().owned_contacts(self.key, after, n + 1);
        let has_next = page.len() > n;
        let edges = page.into_iter().take(n).map(|x| (x.id.to_string(), Contact::from(x))).collect();
        Ok(connection(after.is_some(), has_next, total, edges))
    }
    /// The accounts this agent owns, by account id.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn owned_accounts(
        &self,
        c: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<Account>> {
        let n = page_size(first)?;
        let (page, total) = ctx(c)?.graph.read().owned_accounts(self.key, after.as_deref(), n + 1);
        let has_next = page.len() > n;
        let edges = page.into_iter().take(n).map(|x| (x.id.clone(), Account::from(x))).collect();
        Ok(connection(after.is_some(), has_next, total, edges))
    }
    /// Everything recorded about this agent, oldest first, paged by sequence number.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn history(
        &self,
        c: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, ChangeObj, ChangeTotal>> {
        let n = page_size(first)?;
        let filter = ChangeFilter { after_seq: parse_seq(after)?, agent: Some(self.key), ..ChangeFilter::default() };
        change_page(&ctx(c)?.graph, filter, n)
    }
}

/// A Drift account (a company).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Account {
    id: ID,
    name: Option<String>,
    domain: Option<String>,
    #[graphql(skip)]
    owner_key: Option<u64>,
}

impl From<AccountView> for Account {
    fn from(a: AccountView) -> Account {
        Account { id: ID(a.id), name: a.name, domain: a.domain, owner_key: a.owner_id }
    }
}

#[async_graphql::ComplexObject]
impl Account {
    /// The last time Drift confirmed the account: the crawl of the generation served.
    async fn verified_at(&self, c: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        Ok(ctx(c)?.graph.info().and_then(|i| time(i.finished_at_ms)))
    }
    async fn owner(&self, c: &Context<'_>) -> Result<Option<Agent>> {
        Ok(self.owner_key.and_then(|o| ctx(c).ok()?.graph.read().agent(o)).map(Agent::from))
    }
}

/// A contact whose owner is not active.
#[derive(SimpleObject)]
pub struct Orphan {
    contact: Contact,
    reason: OrphanReason,
    owner: Agent,
}

impl From<OrphanView> for Orphan {
    fn from(o: OrphanView) -> Orphan {
        Orphan { contact: o.contact.into(), reason: o.reason.into(), owner: o.owner.into() }
    }
}

/// An account whose owner is not active.
#[derive(SimpleObject)]
pub struct OrphanAccount {
    account: AccountObjFlat,
    reason: OrphanReason,
    owner_id: ID,
    owner_email: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "AccountSummary")]
pub struct AccountObjFlat {
    id: ID,
    name: Option<String>,
    domain: Option<String>,
}

/// One agent and how much it owns.
#[derive(SimpleObject)]
pub struct Ownership {
    agent: Agent,
    /// Contacts owned.
    contacts: usize,
    /// Accounts owned.
    accounts: usize,
}

impl From<OwnershipRow> for Ownership {
    fn from(r: OwnershipRow) -> Ownership {
        Ownership { agent: r.agent.into(), contacts: r.contacts, accounts: r.accounts }
    }
}

/// A recorded change.
pub struct ChangeObj(pub Change);

#[Object(name = "Change")]
impl ChangeObj {
    async fn seq(&self) -> u64 {
        self.0.seq
    }
    async fn generation(&self) -> u64 {
        self.0.generation
    }
    async fn at(&self) -> Option<DateTime<Utc>> {
        time(self.0.at_ms)
    }
    /// How it was recorded and confirmed: CRAWL, AGENTS_REFRESH, WEBHOOK (announced by a webhook,
    /// then read from Drift), REASSIGNMENT (Drift's answer to the move), REREAD (the refresher) or
    /// ROLLBACK (a damaged generation's changes undone when the previous one is served).
    async fn via(&self) -> String {
        match self.0.via {
            idgraph_graph::Via::Crawl => "CRAWL",
            idgraph_graph::Via::AgentsRefresh => "AGENTS_REFRESH",
            idgraph_graph::Via::Webhook => "WEBHOOK",
            idgraph_graph::Via::Reassignment => "REASSIGNMENT",
            idgraph_graph::Via::Reread => "REREAD",
            idgraph_graph::Via::Rollback => "ROLLBACK",
        }
        .to_string()
    }
    async fn kind(&self) -> ChangeKind {
        ChangeKind::of(&self.0.kind)
    }
    async fn agent_id(&self) -> Option<ID> {
        match &self.0.kind {
            GKind::AgentAppeared { agent, .. }
            | GKind::AgentDeactivated { agent }
            | GKind::AgentDeparted { agent }
            | GKind::AgentReactivated { agent } => Some(ID(agent.to_string())),
            _ => None,
        }
    }
    async fn contact_id(&self) -> Option<ID> {
        match &self.0.kind {
            GKind::ContactAdded { contact, .. }
            | GKind::ContactRemoved { contact, .. }
            | GKind::ContactMoved { contact, .. } => Some(ID(contact.to_string())),
            _ => None,
        }
    }
    /// The owner before (moves and removals).
    async fn from_owner_id(&self) -> Option<ID> {
        match &self.0.kind {
            GKind::ContactMoved { from, .. } => from.map(|x| ID(x.to_string())),
            GKind::ContactRemoved { owner, .. } => owner.map(|x| ID(x.to_string())),
            _ => None,
        }
    }
    /// The owner after (moves and additions).
    async fn to_owner_id(&self) -> Option<ID> {
        match &self.0.kind {
            GKind::ContactMoved { to, .. } => to.map(|x| ID(x.to_string())),
            GKind::ContactAdded { owner, .. } => owner.map(|x| ID(x.to_string())),
            _ => None,
        }
    }
}

/// How old what idgraph holds is: age = now - verifiedAt, over all contacts.
#[derive(SimpleObject, Default, Clone, Copy)]
pub struct Freshness {
    /// Half the contacts were verified more recently than this; null when some were never.
    p50_age_seconds: Option<i64>,
    p99_age_seconds: Option<i64>,
    max_age_seconds: Option<i64>,
    /// What re-reading every contact once takes at the refresher's share of the budget (orphans
    /// are checked in their own, faster round within it).
    projected_cycle_seconds: Option<f64>,
    /// How long the refresher's last complete cycle over the org took; null before the first.
    last_cycle_seconds: Option<f64>,
    /// Orphans not verified since their owner went.
    unverified_orphans: usize,
}

/// The index being served and the schedule that keeps it fresh.
#[derive(SimpleObject, Default)]
pub struct IndexStatus {
    /// Set when the current generation failed its check at start and an older one is served
    /// (a crawl then replaces it); says which and why.
    fallback: Option<String>,
    /// Null before the first index is loaded.
    freshness: Option<Freshness>,
    /// The org served (null on a server of one org).
    org: Option<String>,
    /// Whether an index is loaded; before the first crawl finishes the counts are null.
    ready: bool,
    generation: u64,
    contacts: Option<usize>,
    agents: Option<usize>,
    accounts: Option<usize>,
    orphans: Option<usize>,
    /// The sequence number of the newest change: where `changes` ends now.
    last_change_seq: u64,
    last_crawl_at: Option<DateTime<Utc>>,
    agents_refreshed_at: Option<DateTime<Utc>>,
    next_crawl_at: Option<DateTime<Utc>>,
    next_agents_refresh_at: Option<DateTime<Utc>>,
    crawling: bool,
    last_result: Option<String>,
    last_error: Option<String>,
    scim_available: bool,
    /// Access log entries that could not be written since the server started (the queue was
    /// full): never dropped silently.
    access_log_dropped: u64,
}

fn index_status(c: &Ctx) -> IndexStatus {
    let ix = c.graph.read();
    let (contacts, agents, accounts) = ix.counts();
    let orphans = ix.orphan_total();
    drop(ix);
    let info = c.graph.info();
    let s = c.ops.schedule();
    let ready = info.is_some();
    let freshness = ready.then(|| {
        let f = c.graph.freshness();
        Freshness {
            p50_age_seconds: f.p50_age_ms.map(|a| a / 1000),
            p99_age_seconds: f.p99_age_ms.map(|a| a / 1000),
            max_age_seconds: f.max_age_ms.map(|a| a / 1000),
            projected_cycle_seconds: c.ops.projected_cycle_seconds(contacts),
            last_cycle_seconds: c.ops.last_cycle_seconds(),
            unverified_orphans: f.unverified_orphans,
        }
    });
    IndexStatus {
        org: c.org.clone(),
        fallback: c.graph.fallback().map(|f| format!("serving generation {}: {}", f.to, f.reason)),
        freshness,
        ready,
        generation: info.as_ref().map_or(0, |i| i.generation),
        contacts: ready.then_some(contacts),
        agents: ready.then_some(agents),
        accounts: ready.then_some(accounts),
        orphans: ready.then_some(orphans),
        last_change_seq: c.graph.last_change_seq().unwrap_or(0),
        last_crawl_at: info.as_ref().and_then(|i| time(i.finished_at_ms)),
        agents_refreshed_at: info.as_ref().and_then(|i| time(i.agents_refreshed_at_ms)),
        next_crawl_at: s.next_crawl_at_ms.and_then(time),
        next_agents_refresh_at: s.next_agents_at_ms.and_then(time),
        crawling: s.crawling,
        last_result: s.last_result,
        last_error: s.last_error,
        scim_available: info.is_some_and(|i| i.scim_available),
        access_log_dropped: 0,
    }
}

#[derive(SimpleObject)]
pub struct StatusEvent {
    status: String,
    at: Option<DateTime<Utc>>,
}

#[derive(SimpleObject)]
pub struct Reassignment {
    contact_id: ID,
    to_agent_id: Option<ID>,
    at: Option<DateTime<Utc>>,
    via: String,
}

#[derive(SimpleObject)]
pub struct Evidence {
    generation: u64,
    crawl_finished_at: Option<DateTime<Utc>>,
    agents_refreshed_at: Option<DateTime<Utc>>,
    generated_at: Option<DateTime<Utc>>,
    data_age_seconds: i64,
    scim_available: bool,
}

/// What an agent owned, what its departure orphaned and what was done about it.
pub struct OffboardingAudit(pub AgentAudit);

#[Object]
impl OffboardingAudit {
    async fn agent(&self) -> Agent {
        Agent::from(self.0.agent.clone())
    }
    /// First seen, deactivated, departed, reactivated: with dates.
    async fn timeline(&self) -> Vec<StatusEvent> {
        self.0.timeline.iter().map(|e| StatusEvent { status: e.status.clone(), at: time(e.at_ms) }).collect()
    }
    async fn contacts_now(&self) -> usize {
        self.0.contacts_now
    }
    async fn accounts_now(&self) -> usize {
        self.0.accounts_now
    }
    /// Contacts owned when the agent was deactivated or departed.
    async fn contacts_at_departure(&self) -> Option<usize> {
        self.0.contacts_at_departure
    }
    async fn orphan_reason(&self) -> Option<OrphanReason> {
        self.0.orphan_reason.map(Into::into)
    }
    /// The orphans its departure left: its contacts that still point at it.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn orphaned_contacts(&self, first: Option<i32>, after: Option<String>) -> Result<Conn<Contact>> {
        let n = page_size(first)?;
        let after = after.map(|a| a.parse::<u64>().map_err(|_| bad_cursor())).transpose()?;
        let all: Vec<(u64, &ContactView)> = self.0.orphaned_contacts.iter().map(|c| (c.id, c)).collect();
        let (has_prev, has_next, total, edges) = keyset_page(all, after, n);
        let edges = edges.into_iter().map(|(k, c)| (k, Contact::from(c.clone()))).collect();
        Ok(connection(has_prev, has_next, total, edges))
    }
    async fn orphaned_account_count(&self) -> usize {
        self.0.orphaned_accounts.len()
    }
    async fn reassigned_since(&self) -> Vec<Reassignment> {
        self.0
            .reassigned_since
            .iter()
            .map(|r| Reassignment {
                contact_id: ID(r.contact_id.to_string()),
                to_agent_id: r.to.map(|t| ID(t.to_string())),
                at: time(r.at_ms),
                via: r.via.clone(),
            })
            .collect()
    }
    async fn evidence(&self) -> Evidence {
        Evidence::from(&self.0.evidence)
    }
    /// SHA-256 of the audit's canonical JSON.
    async fn digest(&self) -> String {
        audit::digest(&self.0)
    }
}

impl From<&audit::Evidence> for Evidence {
    fn from(e: &audit::Evidence) -> Self {
        Evidence {
            generation: e.generation,
            crawl_finished_at: time(e.crawl_finished_at_ms),
            agents_refreshed_at: time(e.agents_refreshed_at_ms),
            generated_at: time(e.generated_at_ms),
            data_age_seconds: e.data_age_s,
            scim_available: e.scim_available,
        }
    }
}

/// One gone (departed, deactivated or unknown) agent who still owns something.
#[derive(SimpleObject)]
pub struct ExposureRow {
    agent: Agent,
    contacts: usize,
    accounts: usize,
    /// When it went (deactivated or departed).
    gone_at: Option<DateTime<Utc>>,
}

/// The org's offboarding audit, typed: every gone agent who still owns something (most exposed
/// first), the totals and the evidence. Its orphans are `orphans`; the whole report as one
/// document (with its digest) is `auditReport(all: true)`.
#[derive(SimpleObject)]
pub struct OrgAudit {
    rows: Vec<ExposureRow>,
    total_agents: usize,
    total_contacts: usize,
    total_accounts: usize,
    /// Contacts with no owner at all (not orphans).
    unowned_contacts: usize,
    /// Orphans Drift confirmed after their owner went, and those not yet re-read since.
    orphans_verified_after_departure: usize,
    orphans_not_yet_verified: usize,
    evidence: Evidence,
}

/// One point of `orphanTimeline`.
#[derive(SimpleObject)]
pub struct TimelinePoint {
    /// The end of the bucket.
    at: Option<DateTime<Utc>>,
    /// Orphaned contacts at that moment; null before the history begins.
    orphans: Option<usize>,
    /// Agents (gone today) who went during the bucket.
    departures: usize,
}

/// Orphaned contacts and departures over time, replayed from the history.
#[derive(SimpleObject)]
pub struct OrphanTimeline {
    bucket_seconds: i64,
    /// Oldest first; the last one is now.
    points: Vec<TimelinePoint>,
}

#[derive(SimpleObject)]
pub struct Move {
    contact_id: ID,
    from_agent_id: ID,
    to_agent_id: ID,
}

#[derive(SimpleObject)]
pub struct ReassignResult {
    dry_run: bool,
    planned: usize,
    /// Moves made by the time of the answer: 0 when a job was started (follow it with
    /// `reassignment(id:)`).
    applied: usize,
    already_done: usize,
    failed: usize,
    /// The first 1,000 moves of the plan.
    moves: Vec<Move>,
    errors: Vec<String>,
    /// The job that carries the plan out in the background (not for a dry run).
    job_id: Option<ID>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Moves are being made (or wait for the scheduler's turn).
    Running,
    /// Every move is done, was already done, or failed.
    Done,
    /// Stopped before the end; `reason` says why (a target no longer active, ...).
    Stopped,
}

/// A reassignment carried out in the background, under the rate budget; it survives restarts.
#[derive(SimpleObject)]
pub struct ReassignmentJob {
    id: ID,
    state: JobState,
    reason: Option<String>,
    from_agent_id: ID,
    to_agent_ids: Vec<ID>,
    planned: usize,
    /// Moved, and recorded as Drift answered.
    done: usize,
    /// The contact had left the source before its turn.
    already_done: usize,
    failed: usize,
    /// Sent, with no answer recorded yet: read again from Drift before a retry.
    in_doubt: usize,
    pending: usize,
    /// The first 100 failures, `contact ID: reason`.
    errors: Vec<String>,
    created_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<idgraph_graph::reassign::Job> for ReassignmentJob {
    fn from(j: idgraph_graph::reassign::Job) -> Self {
        let c = j.counts();
        ReassignmentJob {
            id: ID(j.id.to_string()),
            state: match j.state {
                idgraph_graph::reassign::JobState::Running => JobState::Running,
                idgraph_graph::reassign::JobState::Done => JobState::Done,
                idgraph_graph::reassign::JobState::Stopped => JobState::Stopped,
            },
            reason: j.reason.clone(),
            from_agent_id: ID(j.from.to_string()),
            to_agent_ids: j.targets.iter().map(|t| ID(t.to_string())).collect(),
            planned: c.planned,
            done: c.done,
            already_done: c.already_done,
            failed: c.failed,
            in_doubt: c.in_doubt,
            pending: c.pending,
            errors: j.failures().take(100).map(|(id, e)| format!("contact {id}: {e}")).collect(),
            created_at: time(j.created_at_ms),
            finished_at: j.finished_at_ms.and_then(time),
        }
    }
}

#[derive(SimpleObject)]
pub struct SearchResult {
    contacts: Vec<SearchContact>,
    agents: Vec<SearchAgent>,
}

#[derive(SimpleObject)]
pub struct SearchContact {
    id: ID,
    email: Option<String>,
    name: Option<String>,
}

#[derive(SimpleObject)]
pub struct SearchAgent {
    id: ID,
    email: Option<String>,
    name: Option<String>,
    status: AgentStatus,
}

fn orphan_cursor(k: &OrphanKey) -> String {
    format!("o1.{}.{}.{}.{}", k.0 as u8, k.1, k.2, k.3)
}

fn parse_orphan_cursor(s: &str) -> Option<OrphanKey> {
    let mut it = s.strip_prefix("o1.")?.split('.');
    let r = match it.next()?.parse::<u8>().ok()? {
        0 => GReason::OwnerDeactivated,
        1 => GReason::OwnerDeparted,
        2 => GReason::OwnerUnknown,
        _ => return None,
    };
    let gone = it.next()?.parse().ok()?;
    let owner = it.next()?.parse().ok()?;
    let contact = it.next()?.parse().ok()?;
    it.next().is_none().then_some((r, gone, owner, contact))
}

pub struct Query;

/// Cursors of searched contacts: the normalised email, then the id.
fn search_cursor(email: &str, id: u64) -> String {
    format!("{email}\u{1f}{id:020}")
}

#[Object]
impl Query {
    /// A contact by Drift id or by email (the lowest id when several share the email).
    async fn contact(&self, c: &Context<'_>, id: Option<ID>, email: Option<String>) -> Result<Option<Contact>> {
        let ix = graph(c)?.read();
        match (id, email) {
            (Some(id), _) => Ok(ix.contact(parse_id(&id, "contact")?).map(Contact::from)),
            (None, Some(e)) => Ok(ix.contact_by_email_ref(&e).cloned().map(Contact::from)),
            (None, None) => Err(bad_input("give id or email")),
        }
    }

    /// Every contact with this email (Drift does not keep emails unique). A list, not a
    /// connection: one email is shared by a handful of contacts at most (capped at 100).
    async fn contacts_by_email(&self, c: &Context<'_>, email: String) -> Result<Vec<Contact>> {
        Ok(graph(c)?.read().contacts_by_email(&email).into_iter().take(PAGE_MAX as usize).map(Contact::from).collect())
    }

    /// Up to 1,000 contacts by email in one request, in the order given; null for an email no
    /// contact has (the lowest id when several share one).
    #[graphql(complexity = "emails.len().max(1) * child_complexity")]
    async fn contacts_by_emails(&self, c: &Context<'_>, emails: Vec<String>) -> Result<Vec<Option<Contact>>> {
        if emails.len() > BATCH_MAX {
            return Err(bad_input(format!("at most {BATCH_MAX} emails a request, not {}", emails.len())));
        }
        let ix = graph(c)?.read();
        Ok(emails.iter().map(|e| ix.contact_by_email_ref(e).cloned().map(Contact::from)).collect())
    }

    /// Up to 1,000 contacts by Drift id in one request, in the order given; null for an unknown id.
    #[graphql(complexity = "ids.len().max(1) * child_complexity")]
    async fn contacts_by_ids(&self, c: &Context<'_>, ids: Vec<ID>) -> Result<Vec<Option<Contact>>> {
        if ids.len() > BATCH_MAX {
            return Err(bad_input(format!("at most {BATCH_MAX} ids a request, not {}", ids.len())));
        }
        let ids = ids.iter().map(|i| parse_id(i, "contact")).collect::<Result<Vec<_>>>()?;
        let ix = graph(c)?.read();
        Ok(ids.into_iter().map(|id| ix.contact(id).map(Contact::from)).collect())
    }

    /// An agent by Drift user id or email, also a departed one. By email: the active agent with
    /// it; with none active, the one most recently seen (see `agents(email:)`).
    async fn agent(&self, c: &Context<'_>, id: Option<ID>, email: Option<String>) -> Result<Option<Agent>> {
        let ix = graph(c)?.read();
        match (id, email) {
            (Some(id), _) => Ok(ix.agent(parse_id(&id, "agent")?).map(Agent::from)),
            (None, Some(e)) => Ok(ix.agent_by_email(&e).map(Agent::from)),
            (None, None) => Err(bad_input("give id or email")),
        }
    }

    /// Every agent idgraph knows (also departed ones and unknown owners), by id; `status` keeps
    /// those in one of the given statuses; `email` those that ever had that email
    /// (case-insensitive): a leaver and the rehire who took the email over are two agents, and
    /// `agent(email:)` answers the active one (with none active, the most recently seen).
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn agents(
        &self,
        c: &Context<'_>,
        status: Option<Vec<AgentStatus>>,
        email: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<Agent>> {
        let n = page_size(first)?;
        let after = after.map(|a| a.parse::<u64>().map_err(|_| bad_cursor())).transpose()?;
        let ix = graph(c)?.read();
        let mut listed = match &email {
            Some(e) => ix.agents_by_email(e),
            None => ix.agents(),
        };
        drop(ix);
        listed.sort_by_key(|a| a.id);
        let all: Vec<(u64, AgentView)> = listed
            .into_iter()
            .filter(|a| status.as_ref().is_none_or(|s| s.contains(&a.status.into())))
            .map(|a| (a.id, a))
            .collect();
        let (has_prev, has_next, total, edges) = keyset_page(all, after, n);
        let edges = edges.into_iter().map(|(k, a)| (k, Agent::from(a))).collect();
        Ok(connection(has_prev, has_next, total, edges))
    }

    /// Contacts whose owner is not active, with the reason; `departedSince` keeps those whose
    /// owner went (deactivated or departed) at or after that time.
    #[graphql(guard = "RoleGuard(Role::Auditor)", complexity = "large_page_cost(first, child_complexity)")]
    async fn orphans(
        &self,
        c: &Context<'_>,
        reason: Option<OrphanReason>,
        departed_since: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Conn<Orphan>>> {
        let n = large_page_size(first)?;
        let after = after.map(|a| parse_orphan_cursor(&a).ok_or_else(bad_cursor)).transpose()?;
        let since = departed_since.map(|d| d.timestamp_millis());
        let reason = reason.map(GReason::from);
        let ix = graph(c)?.read();
        let page = ix.orphans(reason, since, after, n + 1);
        let total = ix.orphan_count(reason, since);
        drop(ix);
        let has_next = page.len() > n;
        let edges = page.into_iter().take(n).map(|o| (orphan_cursor(&o.key), Orphan::from(o))).collect();
        Ok(Some(connection(after.is_some(), has_next, total, edges)))
    }

    /// Accounts whose owner is not active, by reason, owner and account id.
    #[graphql(guard = "RoleGuard(Role::Auditor)", complexity = "page_cost(first, child_complexity)")]
    async fn orphan_accounts(
        &self,
        c: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<OrphanAccount>> {
        let n = page_size(first)?;
        let all: Vec<(String, _)> = graph(c)?
            .read()
            .orphan_accounts()
            .into_iter()
            .map(|(r, o, a)| (format!("{}.{:020}.{}", r as u8, o.id, a.id), (r, o, a)))
            .collect();
        Ok(page_of(all, after.as_deref(), n, |(r, o, a)| OrphanAccount {
            account: AccountObjFlat { id: ID(a.id), name: a.name, domain: a.domain },
            reason: r.into(),
            owner_id: ID(o.id.to_string()),
            owner_email: o.email,
        }))
    }

    /// Contacts without any owner (not orphans: nobody was ever assigned).
    #[graphql(guard = "RoleGuard(Role::Auditor)", complexity = "page_cost(first, child_complexity)")]
    async fn unowned_contacts(
        &self,
        c: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<Contact>> {
        let n = page_size(first)?;
        let after = after.map(|a| a.parse::<u64>().map_err(|_| bad_cursor())).transpose()?;
        let (page, total) = graph(c)?.read().unowned(after, n + 1);
        let has_next = page.len() > n;
        let edges = page.into_iter().take(n).map(|x| (x.id.to_string(), Contact::from(x))).collect();
        Ok(connection(after.is_some(), has_next, total, edges))
    }

    /// Agents by how much they own, most first.
    #[graphql(guard = "RoleGuard(Role::Auditor)", complexity = "page_cost(first, child_complexity)")]
    async fn who_owns_whom(
        &self,
        c: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Conn<Ownership>>> {
        let n = page_size(first)?;
        let offset = match after {
            Some(a) => a.parse::<usize>().map_err(|_| bad_cursor())? + 1,
            None => 0,
        };
        let (rows, total) = graph(c)?.read().who_owns_whom(offset, n);
        let has_next = offset + rows.len() < total;
        let edges = rows.into_iter().enumerate().map(|(i, r)| ((offset + i).to_string(), Ownership::from(r))).collect();
        Ok(Some(connection(offset > 0, has_next, total, edges)))
    }

    /// Contacts and agents whose email (or agent name) starts with `prefix`: the first `first` of
    /// each. For more, page `searchContacts` and `searchAgents`.
    async fn search(&self, c: &Context<'_>, prefix: String, first: Option<i32>) -> Result<SearchResult> {
        let n = page_size(first)?;
        let (contacts, agents) = graph(c)?.read().search(&prefix, n);
        Ok(SearchResult {
            contacts: contacts
                .into_iter()
                .map(|c| SearchContact { id: ID(c.id.to_string()), email: c.email, name: c.name })
                .collect(),
            agents: agents
                .into_iter()
                .map(|a| SearchAgent {
                    id: ID(a.id.to_string()),
                    email: a.email,
                    name: a.name,
                    status: a.status.into(),
                })
                .collect(),
        })
    }

    /// Contacts whose email starts with `prefix`, by email then id.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn search_contacts(
        &self,
        c: &Context<'_>,
        prefix: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<Contact>> {
        let n = page_size(first)?;
        let all: Vec<(String, ContactView)> =
            graph(c)?.read().search_contacts(&prefix).into_iter().map(|(e, c)| (search_cursor(&e, c.id), c)).collect();
        Ok(page_of(all, after.as_deref(), n, Contact::from))
    }

    /// Agents whose email or name (or a word of it) starts with `prefix`, by id.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn search_agents(
        &self,
        c: &Context<'_>,
        prefix: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<Agent>> {
        let n = page_size(first)?;
        let (_, agents) = graph(c)?.read().search(&prefix, usize::MAX);
        let all: Vec<(String, AgentView)> = agents.into_iter().map(|a| (format!("{:020}", a.id), a)).collect();
        Ok(page_of(all, after.as_deref(), n, Agent::from))
    }

    /// The offboarding audit of one agent, by id or email.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn offboarding_audit(
        &self,
        c: &Context<'_>,
        agent_id: Option<ID>,
        email: Option<String>,
    ) -> Result<Option<OffboardingAudit>> {
        let g = graph(c)?;
        let id = match (agent_id, email) {
            (Some(id), _) => parse_id(&id, "agent")?,
            (None, Some(e)) => match g.read().agent_by_email(&e) {
                Some(a) => a.id,
                None => return Ok(None),
            },
            (None, None) => return Err(bad_input("give agentId or email")),
        };
        let a = audit::agent_audit(g, id).map_err(internal)?;
        Ok(a.map(OffboardingAudit))
    }

    /// An audit report as one JSON document, `{kind, report, digest, truncated}`: one agent's
    /// (by id or email) or, with `all: true`, the org's. This is what `idgraph audit --server`
    /// renders. `orphanLimit` cuts the longest list (the org's `orphans`, an agent's
    /// `orphaned_contacts`) for a page that must stay light; `truncated` then says how many there
    /// are, and the digest stays the whole report's.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn audit_report(
        &self,
        c: &Context<'_>,
        agent: Option<String>,
        all: Option<bool>,
        orphan_limit: Option<i32>,
    ) -> Result<async_graphql::Json<serde_json::Value>> {
        let limit = orphan_limit.map(|n| n.max(0) as usize);
        let doc = audit::report_json(graph(c)?, agent.as_deref(), all.unwrap_or(false), limit).map_err(report_error)?;
        Ok(async_graphql::Json(doc))
    }

    /// The org audit without its list of orphans and without a digest, as one JSON document: every
    /// total, count and row as `auditReport(all: true)` has them, cheap at any size (what the
    /// audit page draws first). Typed: `orgAudit`.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn audit_summary(&self, c: &Context<'_>) -> Result<async_graphql::Json<serde_json::Value>> {
        let r = audit::org_summary(graph(c)?).map_err(internal)?;
        Ok(async_graphql::Json(serde_json::to_value(r).map_err(internal)?))
    }

    /// The org's offboarding audit as typed objects (codegen clients get types, not `any`): the
    /// gone agents still owning something, the totals and the evidence.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn org_audit(&self, c: &Context<'_>) -> Result<OrgAudit> {
        let r = audit::org_summary(graph(c)?).map_err(internal)?;
        Ok(OrgAudit {
            rows: r
                .rows
                .into_iter()
                .map(|x| ExposureRow {
                    gone_at: x.gone_at_ms.and_then(time),
                    agent: Agent::from(x.agent),
                    contacts: x.contacts,
                    accounts: x.accounts,
                })
                .collect(),
            total_agents: r.total_agents,
            total_contacts: r.total_contacts,
            total_accounts: r.total_accounts,
            unowned_contacts: r.unowned_contacts,
            orphans_verified_after_departure: r.orphans_verified_after_departure,
            orphans_not_yet_verified: r.orphans_not_yet_verified,
            evidence: Evidence::from(&r.evidence),
        })
    }

    /// `auditTimeline` as typed objects: at most `points` buckets (default 120, at most 1,000).
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn orphan_timeline(&self, c: &Context<'_>, points: Option<i32>) -> Result<OrphanTimeline> {
        let n = points.unwrap_or(120);
        if !(2..=1000).contains(&n) {
            return Err(bad_input("points must be between 2 and 1000"));
        }
        let t = audit::timeline::timeline(graph(c)?, n as usize).map_err(internal)?;
        Ok(OrphanTimeline {
            bucket_seconds: t.bucket_s,
            points: t
                .points
                .into_iter()
                .map(|p| TimelinePoint { at: time(p.at_ms), orphans: p.orphans, departures: p.departures })
                .collect(),
        })
    }

    /// An audit report rendered as `idgraph audit --format` prints it (the audit page's
    /// downloads): the same arguments as `auditReport`.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn audit_document(
        &self,
        c: &Context<'_>,
        agent: Option<String>,
        all: Option<bool>,
        format: AuditFormat,
    ) -> Result<String> {
        let doc = audit::report(graph(c)?, agent.as_deref(), all.unwrap_or(false)).map_err(report_error)?;
        audit::render::render(&doc, format.into()).map_err(internal)
    }

    /// Orphaned contacts and departures over time, replayed from the history: at most `points`
    /// buckets (default 120, at most 1,000) from the oldest record to now, as one JSON document
    /// `{bucket_s, points: [{at_ms, orphans, departures}]}`; `orphans` is null before the history
    /// begins. Typed: `orphanTimeline`.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn audit_timeline(
        &self,
        c: &Context<'_>,
        points: Option<i32>,
    ) -> Result<async_graphql::Json<serde_json::Value>> {
        let n = points.unwrap_or(120);
        if !(2..=1000).contains(&n) {
            return Err(bad_input("points must be between 2 and 1000"));
        }
        let t = audit::timeline::timeline(graph(c)?, n as usize).map_err(internal)?;
        Ok(async_graphql::Json(serde_json::to_value(t).map_err(internal)?))
    }

    /// The change feed: agents appearing, deactivated, departed or reactivated; contacts added,
    /// removed or moved; each generation switch. Oldest first, paged by `Change.seq` (the cursor),
    /// which only grows: poll with the last cursor you saw and you get every change once, in
    /// order, whatever recorded it (crawls, agents refreshes, webhooks, reassignments).
    /// `sinceGeneration` keeps changes recorded in that generation or later (in-place ones
    /// included); `kinds` and `agentId` narrow the feed.
    #[graphql(guard = "RoleGuard(Role::Auditor)", complexity = "large_page_cost(first, child_complexity)")]
    async fn changes(
        &self,
        c: &Context<'_>,
        since_generation: Option<i32>,
        first: Option<i32>,
        after: Option<String>,
        kinds: Option<Vec<ChangeKind>>,
        agent_id: Option<ID>,
    ) -> Result<Option<Connection<String, ChangeObj, ChangeTotal>>> {
        let n = large_page_size(first)?;
        let filter = ChangeFilter {
            after_seq: parse_seq(after)?,
            since_generation: since_generation.map(|g| g.max(0) as u64),
            kinds: kinds.map(|k| k.into_iter().map(|k| k.graph_name().to_string()).collect()),
            agent: agent_id.map(|a| parse_id(&a, "agent")).transpose()?,
        };
        Ok(Some(change_page(graph(c)?, filter, n)?))
    }

    /// A reassignment job started by `reassignContacts`: its progress, and why it stopped if it
    /// did. Needs the admin token.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn reassignment(&self, c: &Context<'_>, id: ID) -> Result<Option<ReassignmentJob>> {
        let cx = ctx(c)?;
        let id = parse_id(&id, "job")?;
        Ok(cx.ops.reassignment(id).map(ReassignmentJob::from))
    }

    /// Offboarding cases, overdue first, then newest first. Auditors.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn cases(
        &self,
        c: &Context<'_>,
        state: Option<crate::cases::CaseState>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, crate::cases::Case>> {
        crate::cases::list(c, state, first, after).await
    }

    /// One offboarding case. Auditors.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn case(&self, c: &Context<'_>, id: ID) -> Result<Option<crate::cases::Case>> {
        let d = crate::cases::desk(c)?;
        Ok(d.get(crate::cases::parse_case(&id)?).map(crate::cases::Case))
    }

    /// Who is asking: name, kind and role.
    async fn me(&self, c: &Context<'_>) -> Result<Me> {
        let p = c.data::<idgraph_access::Principal>()?;
        let role = c.data_opt::<Role>().copied();
        Ok(Me { name: p.name.clone(), kind: p.kind.name().to_string(), role: role.map(AccessRole::from) })
    }

    /// The access log: who read what and changed what, oldest first, from `since` or after the
    /// entry `after` (its `seq`), of one principal if given; at most 1,000 a page. Admins only.
    #[graphql(guard = "ServerAdmin")]
    async fn access_log(
        &self,
        c: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        principal: Option<String>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Connection<String, AccessEntry>> {
        let access = c.data::<Arc<idgraph_access::Access>>()?;
        let Some(log) = &access.log else {
            return Err(coded("BAD_USER_INPUT", "this server keeps no access log"));
        };
        let first = first.unwrap_or(100);
        if !(1..=1000).contains(&first) {
            return Err(bad_input("first must be between 1 and 1000"));
        }
        let after = after.map(|a| a.parse::<u64>()).transpose().map_err(|_| bad_input("after is an entry's seq"))?;
        // Entries queued before this request (its own predecessors) are on disk first.
        log.settle();
        let dir = log.dir().to_path_buf();
        let filter = idgraph_access::log::Filter { after, since, principal, first: first as usize };
        let (entries, more) =
            tokio::task::block_in_place(|| idgraph_access::log::read(&dir, &filter)).map_err(internal)?;
        let mut conn = Connection::new(after.is_some(), more);
        conn.edges.extend(entries.into_iter().map(|s| Edge::new(s.seq.to_string(), AccessEntry::from(s))));
        Ok(conn)
    }

    /// The service tokens (never the tokens themselves). Admins only.
    #[graphql(guard = "ServerAdmin")]
    async fn service_tokens(&self, c: &Context<'_>) -> Result<Vec<ServiceToken>> {
        let access = c.data::<Arc<idgraph_access::Access>>()?;
        Ok(access.tokens.list().into_iter().map(ServiceToken::from).collect())
    }

    /// One person across the orgs the caller may read, by email (case-insensitive): the agent
    /// they are (or were) in each org, their status and holdings there, and the contacts their
    /// leaving orphaned. On a server with several orgs it answers on `/graphql` without naming
    /// one.
    async fn person(&self, c: &Context<'_>, email: String) -> Result<Person> {
        let email = email.trim().to_lowercase();
        if email.is_empty() || email.len() > 320 {
            return Err(bad_input("give the person's email"));
        }
        let mut out = Person { email: email.clone(), agents: Vec::new(), unavailable: Vec::new() };
        for (o, auditor) in readable_orgs(c)? {
            // Cases are the auditors' (of that org).
            let cases = match (&o.ops, auditor) {
                (Some(ops), true) => ops.cases().map(|d| d.list(None)).unwrap_or_default(),
                _ => Vec::new(),
            };
            let Some(g) = o.graph.filter(|g| g.ready()) else {
                out.unavailable.push(o.name);
                continue;
            };
            let ix = g.read();
            for a in ix.agents_by_email(&email) {
                let contacts = ix.contact_count_of(a.id);
                let reason = a.status.orphans();
                out.agents.push(PersonAgent {
                    org: o.name.clone(),
                    id: ID(a.id.to_string()),
                    name: a.name.clone(),
                    email: a.email.clone(),
                    status: a.status.into(),
                    deactivated_at: a.deactivated_at_ms.and_then(time),
                    departed_at: a.departed_at_ms.and_then(time),
                    contacts,
                    accounts: ix.account_count_of(a.id),
                    orphans: if reason.is_some() { contacts } else { 0 },
                    orphan_reason: reason.map(Into::into),
                    cases: cases.iter().filter(|k| k.agent.id == a.id).cloned().map(crate::cases::Case).collect(),
                    graph: g.clone(),
                    key: a.id,
                });
            }
        }
        Ok(out)
    }

    /// The orgs this server holds that the caller may read: whether each has an index, and why
    /// it is failing if it is (one org failing never stops the others).
    async fn orgs(&self, c: &Context<'_>) -> Result<Vec<OrgStatus>> {
        Ok(readable_orgs(c)?
            .into_iter()
            .map(|(o, _)| {
                let schedule = o.ops.as_ref().map(|ops| ops.schedule()).unwrap_or_default();
                let info = o.graph.as_ref().and_then(|g| g.info());
                let counts = o.graph.as_ref().filter(|g| g.ready()).map(|g| {
                    let ix = g.read();
                    let (contacts, agents, _) = ix.counts();
                    (contacts, agents, ix.orphan_total())
                });
                OrgStatus {
                    name: o.name,
                    ready: counts.is_some(),
                    generation: info.as_ref().map_or(0, |i| i.generation),
                    contacts: counts.map(|c| c.0),
                    agents: counts.map(|c| c.1),
                    orphans: counts.map(|c| c.2),
                    last_crawl_at: info.as_ref().and_then(|i| time(i.finished_at_ms)),
                    crawling: schedule.crawling,
                    failing: o.error.or(schedule.last_error),
                }
            })
            .collect())
    }

    /// Federation: an agent by id.
    #[graphql(entity)]
    async fn find_agent_by_id(&self, c: &Context<'_>, id: ID) -> Result<Option<Agent>> {
        let id = parse_id(&id, "agent")?;
        Ok(graph(c)?.read().agent(id).map(Agent::from))
    }

    /// Federation: an agent by email (the one the email names by rule: see `agentByEmail`).
    #[graphql(entity)]
    async fn find_agent_by_email(&self, c: &Context<'_>, email: String) -> Result<Option<Agent>> {
        Ok(graph(c)?.read().agent_by_email(&email).map(Agent::from))
    }

    /// Federation: a contact by id.
    #[graphql(entity)]
    async fn find_contact_by_id(&self, c: &Context<'_>, id: ID) -> Result<Option<Contact>> {
        let id = parse_id(&id, "contact")?;
        Ok(graph(c)?.read().contact(id).map(Contact::from))
    }

    /// What is served and when it is refreshed. Answers before the first index is loaded too
    /// (`ready: false`, counts null).
    async fn index_status(&self, c: &Context<'_>) -> Result<Option<IndexStatus>> {
        let mut s = index_status(ctx(c)?);
        s.access_log_dropped =
            c.data_opt::<Arc<idgraph_access::Access>>().and_then(|a| a.log.as_ref()).map_or(0, |l| l.dropped());
        Ok(Some(s))
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Reads the server's configuration again (as SIGHUP does): orgs added are started, orgs
    /// removed are stopped, orgs whose settings changed are restarted, the others keep serving
    /// untouched. Says what changed. Admins of every org.
    #[graphql(guard = "ServerAdmin")]
    async fn reload_config(&self, c: &Context<'_>) -> Result<String> {
        let Some(dir) = c.data::<Arc<Ctx>>()?.orgs.clone() else {
            return Err(coded("BAD_USER_INPUT", "this server holds one org: restart it to change its configuration"));
        };
        dir.reload().await.map_err(|e| coded("BAD_USER_INPUT", e))
    }

    /// Opens an offboarding case by hand for an agent (by id or email), freezing what it holds
    /// now. Auditors.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn open_case(&self, c: &Context<'_>, agent: String) -> Result<crate::cases::Case> {
        let d = crate::cases::desk(c)?;
        let by = crate::cases::by(c)?;
        crate::cases::blocking(move || d.open_case(&agent, &by)).await.map(crate::cases::Case)
    }

    /// Decides the items `filter` matches (all items without a filter): REASSIGN to an active
    /// agent, or KEEP with a reason. A decision replaces an earlier one until sign-off; the
    /// case's chain keeps both. Auditors.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn decide(
        &self,
        c: &Context<'_>,
        case: ID,
        decision: crate::cases::CaseDecisionKind,
        to: Option<ID>,
        reason: Option<String>,
        filter: Option<crate::cases::CaseItemFilter>,
    ) -> Result<crate::cases::Decided> {
        crate::cases::decide(c, case, decision, to, reason, filter).await
    }

    /// Carries out the case's decided reassignments (and retries failed ones) through Drift, at
    /// the rate budget; each move is then read back from Drift. Auditors.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn carry_out(&self, c: &Context<'_>, case: ID) -> Result<crate::cases::Case> {
        let d = crate::cases::desk(c)?;
        let id = crate::cases::parse_case(&case)?;
        let by = crate::cases::by(c)?;
        crate::cases::blocking(move || d.carry_out(id, &by)).await.map(crate::cases::Case)
    }

    /// Signs a carried-out case off: an auditor who made none of its decisions. Auditors.
    #[graphql(guard = "RoleGuard(Role::Auditor)")]
    async fn sign_off(&self, c: &Context<'_>, case: ID, note: Option<String>) -> Result<crate::cases::Case> {
        let d = crate::cases::desk(c)?;
        let id = crate::cases::parse_case(&case)?;
        let by = crate::cases::by(c)?;
        let auditor = c.data_opt::<Role>().is_some_and(|r| *r >= Role::Auditor);
        crate::cases::blocking(move || d.sign_off(id, &by, auditor, note)).await.map(crate::cases::Case)
    }

    /// Creates a named service token and answers it: the only time it is shown. `expires`:
    /// 90d, 12h, 2w. Admins only.
    #[graphql(guard = "ServerAdmin")]
    async fn create_service_token(
        &self,
        c: &Context<'_>,
        name: String,
        role: AccessRole,
        org: Option<String>,
        expires: Option<String>,
    ) -> Result<CreatedToken> {
        let access = c.data::<Arc<idgraph_access::Access>>()?;
        let Some(dir) = access.tokens.path().and_then(|p| p.parent()).map(|p| p.to_path_buf()) else {
            return Err(bad_input("this server keeps no service tokens (it has no data directory)"));
        };
        let expires =
            expires.as_deref().map(idgraph_access::tokens::expiry).transpose().map_err(|e| bad_input(e.to_string()))?;
        let token = idgraph_access::tokens::create(&dir, &name, role.into(), org.as_deref(), expires)
            .map_err(|e| bad_input(e.to_string()))?;
        access.tokens.reload_if_changed().map_err(internal)?;
        Ok(CreatedToken { name, token })
    }

    /// Revokes a service token: refused from the next request on. Admins only.
    #[graphql(guard = "ServerAdmin")]
    async fn revoke_service_token(&self, c: &Context<'_>, name: String) -> Result<bool> {
        let access = c.data::<Arc<idgraph_access::Access>>()?;
        let Some(dir) = access.tokens.path().and_then(|p| p.parent()).map(|p| p.to_path_buf()) else {
            return Err(bad_input("this server keeps no service tokens"));
        };
        idgraph_access::tokens::revoke(&dir, &name).map_err(|e| bad_input(e.to_string()))?;
        access.tokens.reload_if_changed().map_err(internal)?;
        Ok(true)
    }

    /// Starts a reindex now (FULL) or an agents-only refresh (AGENTS). Needs the admin token.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn reindex(
        &self,
        c: &Context<'_>,
        #[graphql(default_with = "Some(ReindexScope::Full)")] scope: Option<ReindexScope>,
    ) -> Result<Option<IndexStatus>> {
        let cx = ctx(c)?;
        let s = match scope.unwrap_or_default() {
            ReindexScope::Full => Scope::Full,
            ReindexScope::Agents => Scope::Agents,
        };
        if !cx.ops.trigger(s) {
            return Err(coded("CONFLICT", "a run of that scope is already under way or queued"));
        }
        let mut st = index_status(cx);
        st.crawling = true;
        Ok(Some(st))
    }

    /// Moves an agent's contacts to one or several active agents, through Drift's
    /// `PATCH /contacts/{id}`. Dry run by default. Not a dry run: answers at once with the plan
    /// and a `jobId`; the moves are made in the background under the rate budget (follow them
    /// with `reassignment(id:)`), and the source and targets are checked again before each
    /// batch. Needs the admin token.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn reassign_contacts(
        &self,
        c: &Context<'_>,
        from_agent_id: ID,
        to_agent_ids: Vec<ID>,
        #[graphql(default = true)] dry_run: bool,
        #[graphql(default = false, desc = "Move an ACTIVE agent's contacts too (refused without it).")] force: bool,
    ) -> Result<ReassignResult> {
        let cx = ctx(c)?;
        let from = parse_id(&from_agent_id, "agent")?;
        let to = to_agent_ids.iter().map(|t| parse_id(t, "agent")).collect::<Result<Vec<_>>>()?;
        let req = ReassignRequest { from_agent: from, to_agents: to, dry_run, force };
        let out = cx.ops.reassign(req).await.map_err(bad_input)?;
        Ok(ReassignResult {
            dry_run: out.dry_run,
            planned: out.moves.len(),
            applied: out.applied,
            already_done: out.already_done,
            failed: out.failed.len(),
            moves: out
                .moves
                .iter()
                .take(1000)
                .map(|m| Move {
                    contact_id: ID(m.contact_id.to_string()),
                    from_agent_id: ID(m.from.to_string()),
                    to_agent_id: ID(m.to.to_string()),
                })
                .collect(),
            errors: out.failed.iter().take(100).map(|(id, e)| format!("contact {id}: {e}")).collect(),
            job_id: out.job.map(|j| ID(j.to_string())),
        })
    }
}

/// A role, as GraphQL names it.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AccessRole {
    Viewer,
    Auditor,
    Admin,
}

impl From<Role> for AccessRole {
    fn from(r: Role) -> AccessRole {
        match r {
            Role::Viewer => AccessRole::Viewer,
            Role::Auditor => AccessRole::Auditor,
            Role::Admin => AccessRole::Admin,
        }
    }
}

impl From<AccessRole> for Role {
    fn from(r: AccessRole) -> Role {
        match r {
            AccessRole::Viewer => Role::Viewer,
            AccessRole::Auditor => Role::Auditor,
            AccessRole::Admin => Role::Admin,
        }
    }
}

/// The caller.
#[derive(SimpleObject)]
pub struct Me {
    name: String,
    /// person, jwt, service_token or anonymous.
    kind: String,
    role: Option<AccessRole>,
}

/// One entry of the access log.
#[derive(SimpleObject)]
pub struct AccessEntry {
    seq: u64,
    time: DateTime<Utc>,
    principal: String,
    kind: String,
    role: Option<String>,
    org: Option<String>,
    route: String,
    operation: Option<String>,
    fields: Vec<String>,
    rows: u64,
    outcome: String,
    client: Option<String>,
    detail: Option<String>,
    /// The entry's hash in the chain (`idgraph access-log verify` checks them).
    hash: String,
}

impl From<idgraph_access::log::Stored> for AccessEntry {
    fn from(s: idgraph_access::log::Stored) -> AccessEntry {
        let e = s.entry;
        AccessEntry {
            seq: s.seq,
            time: e.time,
            principal: e.principal,
            kind: e.kind,
            role: e.role,
            org: e.org,
            route: e.route,
            operation: e.operation,
            fields: e.fields,
            rows: e.rows,
            outcome: e.outcome,
            client: e.client,
            detail: e.detail,
            hash: s.hash,
        }
    }
}

/// A service token as stored: never the token.
#[derive(SimpleObject)]
pub struct ServiceToken {
    name: String,
    role: AccessRole,
    /// The org the role holds in; null: every org.
    org: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

impl From<idgraph_access::tokens::TokenRecord> for ServiceToken {
    fn from(r: idgraph_access::tokens::TokenRecord) -> ServiceToken {
        ServiceToken {
            name: r.name,
            role: r.role.into(),
            org: r.org,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// A token just created: shown this once.
#[derive(SimpleObject)]
pub struct CreatedToken {
    name: String,
    token: String,
}

/// The orgs a request may read across: every org of the server (or its only one) where the
/// caller holds at least viewer, each with whether the caller is an auditor there.
fn readable_orgs(c: &Context<'_>) -> Result<Vec<(crate::OrgView, bool)>> {
    let p = c.data::<idgraph_access::Principal>()?;
    let me = c.data::<Arc<Ctx>>()?;
    Ok(match &me.orgs {
        Some(d) => d
            .orgs()
            .into_iter()
            .filter(|o| p.may(Role::Viewer, Some(&o.name)))
            .map(|o| {
                let auditor = p.may(Role::Auditor, Some(&o.name));
                (o, auditor)
            })
            .collect(),
        None => vec![(
            crate::OrgView {
                name: me.org.clone().unwrap_or_else(|| "default".into()),
                graph: Some(me.graph.clone()),
                ops: Some(me.ops.clone()),
                error: None,
            },
            p.may(Role::Auditor, me.org.as_deref()),
        )],
    })
}

/// One person across orgs.
#[derive(SimpleObject)]
pub struct Person {
    /// The email asked, as compared (lower case).
    email: String,
    /// The agent the person is (or was) in each org the caller may read, by org name then id.
    agents: Vec<PersonAgent>,
    /// Orgs the caller may read whose index is not loaded now (their first crawl, or failing):
    /// the answer may lack the person there.
    unavailable: Vec<String>,
}

/// A person as an agent in one org.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct PersonAgent {
    org: String,
    id: ID,
    name: Option<String>,
    email: Option<String>,
    status: AgentStatus,
    deactivated_at: Option<DateTime<Utc>>,
    departed_at: Option<DateTime<Utc>>,
    /// Contacts they own there.
    contacts: usize,
    accounts: usize,
    /// Contacts their leaving orphaned there (all they own when they are not active).
    orphans: usize,
    orphan_reason: Option<OrphanReason>,
    /// The offboarding cases of this agent in this org (for the org's auditors; empty for others).
    cases: Vec<crate::cases::Case>,
    #[graphql(skip)]
    graph: Arc<Graph>,
    #[graphql(skip)]
    key: u64,
}

#[async_graphql::ComplexObject]
impl PersonAgent {
    /// The contacts they own in this org, in id order, after the id `after`; at most 1,000.
    #[graphql(complexity = "first.unwrap_or(100).clamp(1, 1000) as usize * child_complexity")]
    async fn owned(&self, first: Option<i32>, after: Option<ID>) -> Result<Vec<PersonContact>> {
        let first = first.unwrap_or(100);
        if !(1..=1000).contains(&first) {
            return Err(bad_input("first must be between 1 and 1000"));
        }
        let after = after.as_ref().map(|a| parse_id(a, "contact")).transpose()?;
        let (rows, _) = self.graph.read().owned_contacts(self.key, after, first as usize);
        Ok(rows
            .into_iter()
            .map(|c| PersonContact {
                id: ID(c.id.to_string()),
                email: c.email,
                name: c.name,
                updated_at: time(c.updated_at_ms),
            })
            .collect())
    }
}

/// A contact a person owns in one org.
#[derive(SimpleObject)]
pub struct PersonContact {
    id: ID,
    email: Option<String>,
    name: Option<String>,
    updated_at: Option<DateTime<Utc>>,
}

/// One org of the server, as `orgs` lists it.
#[derive(SimpleObject)]
pub struct OrgStatus {
    name: String,
    ready: bool,
    generation: u64,
    contacts: Option<usize>,
    agents: Option<usize>,
    orphans: Option<usize>,
    last_crawl_at: Option<DateTime<Utc>>,
    crawling: bool,
    /// Why the org is failing (its store cannot be opened, its last crawl failed), if it is.
    failing: Option<String>,
}
