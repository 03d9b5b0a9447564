//! The HTTP surface: GraphQL, GraphiQL, webhooks, health and metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idgraph_graph::Graph;
use idgraph_model::Secret;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::plan::{Cached, Documents, Plan};
use crate::schema::{build_introspection_schema, build_schema, AppSchema, Role};
use crate::webhooks::{self, WebhookConfig};
use crate::{graphiql, signin, Metrics, Operations};
use idgraph_access::{Access, Principal};

/// Bearer tokens for GraphQL. With neither set, every caller is admin (the demo's mode).
#[derive(Clone, Default, Debug)]
pub struct ApiTokens {
    pub read: Option<Secret>,
    pub admin: Option<Secret>,
}

impl ApiTokens {
    pub fn open(&self) -> bool {
        self.read.is_none() && self.admin.is_none()
    }
}

/// Compares a secret with what a caller gave, in constant time over fixed-length digests: the
/// time taken says nothing of either's length or content.
pub(crate) fn secrets_equal(expected: &str, given: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(expected.as_bytes()), Sha256::digest(given.as_bytes()));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The configured read and admin tokens, used when `access` is not given.
    pub tokens: ApiTokens,
    /// Who may do what, and the access log (built from `tokens` when `None`).
    pub access: Option<Arc<Access>>,
    pub body_max_bytes: usize,
    pub request_timeout: Duration,
    /// Origins allowed by CORS; empty = CORS off.
    pub cors_origins: Vec<String>,
    pub webhook: Option<WebhookConfig>,
    /// Where `POST /admin/backup` writes, each backup by a plain name; `None`: refused.
    pub backup_dir: Option<std::path::PathBuf>,
    /// The org this router serves on a server with several (roles are read for it); `None`: the
    /// server's only org.
    pub org: Option<String>,
    /// Every org of the server, for the fields that span them (`person`, `orgs`).
    pub orgs: Option<Directory>,
}

/// The orgs a server holds, as the cross-org fields read them.
#[derive(Clone)]
pub struct Directory(pub Arc<dyn crate::OrgDirectory>);

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Directory")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tokens: ApiTokens::default(),
            access: None,
            body_max_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(15),
            cors_origins: Vec::new(),
            webhook: None,
            backup_dir: None,
            org: None,
            orgs: None,
        }
    }
}

pub struct AppState {
    pub schema: AppSchema,
    /// What this router's requests read: its org's graph and operations.
    pub ctx: Arc<crate::schema::Ctx>,
    pub ops: Arc<dyn Operations>,
    /// Answers documents that select only introspection (see `introspection`).
    pub introspection_schema: AppSchema,
    /// Parsed documents by their text: a repeated query is not parsed again; automatic persisted
    /// queries find theirs here by SHA-256.
    pub(crate) documents: Documents,
    pub graph: Arc<Graph>,
    pub metrics: Arc<Metrics>,
    pub access: Arc<Access>,
    pub webhook: Option<WebhookConfig>,
    pub backup_dir: Option<std::path::PathBuf>,
    pub body_max_bytes: usize,
    /// Heavy documents (whole-org reads, large introspection) running at once, at most.
    pub heavy: tokio::sync::Semaphore,
    /// The org this router serves (`None`: the server's only one).
    pub org: Option<String>,
}

/// The whole HTTP surface. Call inside a Tokio runtime (the webhook applier is spawned here).
pub fn router(graph: Arc<Graph>, ops: Arc<dyn Operations>, metrics: Arc<Metrics>, cfg: ServerConfig) -> Router {
    let access = cfg
        .access
        .clone()
        .unwrap_or_else(|| Arc::new(Access::with_tokens(cfg.tokens.read.clone(), cfg.tokens.admin.clone())));
    let state = Arc::new(AppState {
        schema: build_schema(),
        ctx: Arc::new(crate::schema::Ctx {
            graph: graph.clone(),
            ops: ops.clone(),
            org: cfg.org.clone(),
            orgs: cfg.orgs.as_ref().map(|d| d.0.clone()),
        }),
        ops,
        introspection_schema: build_introspection_schema(),
        documents: Documents::new(DOCUMENT_CACHE_ENTRIES),
        graph,
        metrics,
        access: access.clone(),
        webhook: cfg.webhook.clone(),
        backup_dir: cfg.backup_dir.clone(),
        heavy: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1),
        ),
        body_max_bytes: cfg.body_max_bytes,
        org: cfg.org.clone(),
    });
    let app = Router::new()
        .route("/", get(graphiql::page))
        .route("/audit", get(graphiql::audit))
        .route("/auth/login", get(crate::signin::login))
        .route("/auth/callback", get(crate::signin::callback))
        .route("/auth/logout", post(crate::signin::logout))
        .route("/auth/me", get(crate::signin::me))
        .route("/favicon.ico", get(favicon))
        .route("/assets/{name}", get(graphiql::asset))
        .route("/graphql", get(graphql).post(graphql).layer(DefaultBodyLimit::disable()))
        .route("/webhooks/drift", post(webhooks::receive).layer(DefaultBodyLimit::disable()))
        .route("/export/{table}", get(export))
        .route("/lookup/contacts", post(lookup).layer(DefaultBodyLimit::disable()))
        .route("/cases/{id}/bundle", get(case_bundle))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state.clone())
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, cfg.request_timeout));
    // A backup takes as long as the store is large (about 10 s a million contacts beside a busy
    // server): it has a bound of its own, not the queries' few seconds.
    let backups = Router::new()
        .route("/admin/backup", post(backup))
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, BACKUP_TIMEOUT));
    let mut app = app.merge(backups);
    if access.open {
        // Without tokens every caller is admin: only this machine's own pages and tools may ask.
        app = app.layer(axum::middleware::from_fn(open_mode_guard));
    }
    if !cfg.cors_origins.is_empty() {
        let allow = if cfg.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(cfg.cors_origins.iter().filter_map(|o| o.parse::<HeaderValue>().ok()))
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    app.layer(axum::middleware::map_response(security_headers))
}

/// Checks the CORS origins a server is given: `*`, or each an origin (`https://host[:port]`).
pub fn check_cors_origins(origins: &[String]) -> Result<(), String> {
    for o in origins {
        if o == "*" {
            continue;
        }
        let ok = url::Url::parse(o)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/" && !o.ends_with('/')
            })
            .is_some()
            && o.parse::<HeaderValue>().is_ok();
        if !ok {
            return Err(format!("--cors-origin {o:?} is not an origin: give scheme, host and port only, such as https://intranet.example or http://127.0.0.1:3000 (or * for any)"));
        }
    }
    Ok(())
}

/// The headers every answer carries: pages are not framed, sniffed or fed from elsewhere.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    r
}

/// Whether a `Host` header names this machine in a way no other site can: an IP address, or
/// `localhost`. A DNS name could be an attacker's, pointed at 127.0.0.1 (DNS rebinding).
fn host_is_local(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !n.ends_with(':') => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Without tokens (`--insecure-no-auth`, the demo), every caller may run mutations: a request must
/// name this machine as its `Host` (no DNS rebinding), come from a page of this server if it says
/// where it comes from (`Origin`), and send JSON when it POSTs (a cross-site form or `text/plain`
/// POST cannot). Drift's webhooks keep their own verification.
async fn open_mode_guard(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    const JSON: &str = "application/json";
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !host_is_local(host) {
        return early(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "without tokens this server answers only requests addressed to an IP address or localhost",
            JSON,
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let same = url::Url::parse(origin).ok().and_then(|u| {
            let h = u.host_str()?.to_string();
            Some(match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h,
            })
        });
        if same.as_deref() != Some(host) {
            return early(StatusCode::FORBIDDEN, "FORBIDDEN", "a request from another site's page is refused", JSON);
        }
    }
    if req.method() == Method::POST && req.uri().path() != "/webhooks/drift" {
        let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ctype.to_ascii_lowercase().starts_with("application/json") {
            return early(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "BAD_REQUEST",
                "POST a JSON body (content-type: application/json)",
                JSON,
            );
        }
    }
    next.run(req).await
}

/// How a GraphQL request came (the body or the query string), before it is parsed.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default)]
    extensions: Option<serde_json::Value>,
}

/// The GET form: every value a string, variables and extensions as JSON text.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

pub(crate) fn early(status: StatusCode, code: &str, message: &str, media: &'static str) -> Response {
    let body = json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    let mut r = (status, [(header::CONTENT_TYPE, media)], body.to_string()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// The media type of the answer: `application/graphql-response+json` when the client accepts
/// it (GraphQL over HTTP), `application/json` otherwise.
fn response_media(headers: &HeaderMap) -> &'static str {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/graphql-response+json") {
        GRAPHQL_RESPONSE_JSON
    } else {
        "application/json"
    }
}

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";

fn wire_request(method: &Method, headers: &HeaderMap, uri: &Uri, body: &Bytes) -> Result<WireRequest, String> {
    if method == Method::GET {
        let p: GetParams = serde_urlencoded_query(uri.query().unwrap_or(""))?;
        let json_of = |what: &str, v: Option<String>| -> Result<Option<serde_json::Value>, String> {
            v.filter(|s| !s.is_empty())
                .map(|s| serde_json::from_str(&s).map_err(|e| format!("the {what} parameter is not JSON: {e}")))
                .transpose()
        };
        return Ok(WireRequest {
            query: p.query,
            operation_name: p.operation_name,
            variables: json_of("variables", p.variables)?,
            extensions: json_of("extensions", p.extensions)?,
        });
    }
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ctype.starts_with("application/graphql") && !ctype.contains("json") {
        let q = std::str::from_utf8(body).map_err(|_| "the request body is not UTF-8 text".to_string())?;
        return Ok(WireRequest { query: Some(q.to_string()), ..WireRequest::default() });
    }
    serde_json::from_slice(body).map_err(|e| {
        format!("the request body is not a GraphQL request in JSON ({e}); send {{\"query\": \"...\", \"variables\": {{...}}}}")
    })
}

fn serde_urlencoded_query(q: &str) -> Result<GetParams, String> {
    let mut p = GetParams::default();
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "query" => p.query = v,
            "operationName" => p.operation_name = v,
            "variables" => p.variables = v,
            "extensions" => p.extensions = v,
            _ => {}
        }
    }
    Ok(p)
}

/// The hash an automatic persisted query names (`extensions.persistedQuery.sha256Hash`).
fn persisted_hash(ext: Option<&serde_json::Value>) -> Option<String> {
    ext?.get("persistedQuery")?.get("sha256Hash")?.as_str().map(|s| s.to_ascii_lowercase())
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

async fn graphql(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    // The request taken whole, not through extractors that copy its headers.
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let media = response_media(headers);
    let route = if *method == Method::GET { "GET /graphql" } else { "POST /graphql" };
    // Who asks comes first: a body is read only for a caller the server accepts.
    let caller = match signin::authenticate(&st, method, headers, &parts.extensions, route, media).await {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let body = match read_body(body, st.body_max_bytes).await {
        Ok(b) => b,
        Err(msg) => return early(StatusCode::PAYLOAD_TOO_LARGE, "BAD_REQUEST", &msg, media),
    };
    // A GET can be forged by another page: it never carries admin rights.
    let get = *method == Method::GET;
    let role = if get { caller.role.min(Role::Auditor) } else { caller.role };
    let wire = match wire_request(method, headers, uri, &body) {
        Ok(w) => w,
        Err(msg) => return early(StatusCode::BAD_REQUEST, "BAD_REQUEST", &msg, media),
    };
    let across = parts.extensions.get::<crate::orgs::AcrossOrgs>().is_some();
    let started = Instant::now();
    let (answered, trail) = execute(&st, wire, role, get, across, &caller.principal).await;
    st.metrics.observe_query(started.elapsed());
    st.metrics.graphql_requests.fetch_add(1, Ordering::Relaxed);
    match answered {
        Answered::Planned(body, rows) => {
            st.metrics.graphql_planned.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = trail {
                signin::record(&st, &caller, route, t.operation, t.fields, rows, "ok", None);
            }
            (StatusCode::OK, [(header::CONTENT_TYPE, media)], body).into_response()
        }
        Answered::Graphql(resp) => {
            if !resp.errors.is_empty() {
                st.metrics.graphql_errors.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(t) = trail {
                let rows = resp.data.as_ref().map_or(0, rows_of);
                let first = resp.errors.first();
                let code = first.and_then(|e| e.extensions.as_ref()).and_then(|x| x.get("code")).and_then(|c| {
                    if let async_graphql::Value::String(s) = c {
                        Some(s.to_ascii_lowercase())
                    } else {
                        None
                    }
                });
                let outcome = match (&code, resp.data.is_some()) {
                    (None, _) => "ok".to_string(),
                    (Some(c), true) if c == "forbidden" => "forbidden".to_string(),
                    (Some(c), _) => format!("error:{c}"),
                };
                signin::record(
                    &st,
                    &caller,
                    route,
                    t.operation,
                    t.fields,
                    rows,
                    &outcome,
                    first.map(|e| e.message.clone()),
                );
            }
            respond(resp, media)
        }
    }
}

/// What the access log says of a GraphQL request: its operation and root fields. `None` for a
/// document that only introspects (it reads no contact data).
#[derive(Default)]
struct Trail {
    operation: Option<String>,
    fields: Vec<String>,
}

/// The access log's view of a request: computed once per document (for the operation first
/// asked of it); nothing when the server keeps no access log.
fn trail_of(st: &AppState, cached: &Cached, operation: Option<&str>) -> Option<Trail> {
    st.access.log.as_ref()?;
    let (op0, t) = cached.trail.get_or_init(|| (operation.map(str::to_string), root_fields(&cached.doc, operation)));
    let (name, fields) = if op0.as_deref() == operation { t.clone()? } else { root_fields(&cached.doc, operation)? };
    Some(Trail { operation: operation.map(str::to_string).or(name), fields })
}

/// Rows an answer returned: per root field, a list's items, a connection's edges, or one object.
fn rows_of(data: &async_graphql::Value) -> u64 {
    use async_graphql::Value as V;
    let V::Object(roots) = data else { return 0 };
    roots
        .values()
        .map(|v| match v {
            V::List(l) => l.iter().filter(|x| !matches!(x, V::Null)).count() as u64,
            V::Object(o) => match o.get("edges").or_else(|| o.get("nodes")) {
                Some(V::List(l)) => l.len() as u64,
                _ => 1,
            },
            V::Null => 0,
            _ => 1,
        })
        .sum()
}

/// The root fields the operation selects (fragments spread at the root included, by name).
fn root_fields(
    doc: &async_graphql::parser::types::ExecutableDocument,
    operation: Option<&str>,
) -> Option<(Option<String>, Vec<String>)> {
    use async_graphql::parser::types::{DocumentOperations, Selection};
    let (name, op) = match (&doc.operations, operation) {
        (DocumentOperations::Single(op), _) => (None, op),
        (DocumentOperations::Multiple(ops), Some(n)) => (Some(n.to_string()), ops.get(n)?),
        (DocumentOperations::Multiple(ops), None) => {
            let (n, op) = ops.iter().next()?;
            (Some(n.to_string()), op)
        }
    };
    let mut fields = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![&op.node.selection_set.node];
    while let Some(set) = stack.pop() {
        for sel in &set.items {
            match &sel.node {
                Selection::Field(f) => {
                    let n = f.node.name.node.to_string();
                    if !n.starts_with("__") && !fields.contains(&n) {
                        fields.push(n);
                    }
                }
                Selection::InlineFragment(i) => stack.push(&i.node.selection_set.node),
                Selection::FragmentSpread(s) => {
                    // Each fragment once: a document may spread one fragment many times over
                    // (a fragment bomb is 2^24 spreads).
                    let name = &s.node.fragment_name.node;
                    if seen.insert(name.clone()) {
                        if let Some(fr) = doc.fragments.get(name) {
                            stack.push(&fr.node.selection_set.node);
                        }
                    }
                }
            }
        }
    }
    Some((name, fields))
}

/// Reads a request body of at most `max` bytes. A longer one is refused, but read on (up to a
/// bound) so that the client, still sending, gets the answer instead of a reset connection.
pub(crate) async fn read_body(body: axum::body::Body, max: usize) -> Result<Bytes, String> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= max {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    }
    if seen > max {
        return Err(format!("the request body is larger than {max} bytes"));
    }
    Ok(Bytes::from(buf))
}

/// How much of an oversized body is read and dropped before the connection is given up.
const DRAIN_MAX_BYTES: usize = 4 << 20;

/// A GraphQL answer, with every error coded.
struct Answer {
    data: Option<async_graphql::Value>,
    errors: Vec<async_graphql::ServerError>,
    /// Failed before execution (parse, validation, unknown persisted query): no `data`.
    request_error: bool,
}

fn request_failure(code: &'static str, message: String) -> Answer {
    let mut e = async_graphql::ServerError::new(message, None);
    e.extensions.get_or_insert_with(Default::default).set("code", code);
    Answer { data: None, errors: vec![e], request_error: true }
}

/// The cached document a request names (by its text, or by its hash for an automatic persisted
/// query), parsed and cached on first sight.
fn document(st: &AppState, query: &str, hash: Option<&str>) -> Result<Arc<Cached>, Answer> {
    // An ordinary request never hashes: documents are cached under their text, and under their
    // hash too when a client names one.
    let key = match (hash, query.is_empty()) {
        (Some(h), true) => h,
        (Some(h), false) if sha256_hex(query) != h => {
            return Err(request_failure("BAD_USER_INPUT", "provided sha256Hash does not match query".into()));
        }
        (_, false) => query,
        (None, true) => return Err(request_failure("BAD_REQUEST", "the request has no query".into())),
    };
    if let Some(d) = st.documents.get(key) {
        return Ok(d);
    }
    if query.is_empty() {
        return Err(request_failure("PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound".into()));
    }
    let doc = async_graphql::parser::parse_query(query)
        .map_err(|e| request_failure("GRAPHQL_PARSE_FAILED", format!("the query does not parse: {e}")))?;
    let cached =
        Arc::new(Cached { doc, plan: Default::default(), cost: Default::default(), trail: Default::default() });
    if query.len() <= CACHED_QUERY_MAX_BYTES {
        if let Some(h) = hash {
            st.documents.put(h.to_string(), cached.clone());
        }
        st.documents.put(query.to_string(), cached.clone());
    }
    Ok(cached)
}

/// What a request is answered with: async-graphql's answer, or a planned one already written.
enum Answered {
    Graphql(Answer),
    /// The answer and the rows it holds.
    Planned(Vec<u8>, u64),
}

async fn execute(
    st: &AppState,
    wire: WireRequest,
    role: Role,
    get: bool,
    across: bool,
    principal: &Principal,
) -> (Answered, Option<Trail>) {
    if wire.variables.as_ref().is_some_and(|v| !v.is_null() && !v.is_object()) {
        let msg = "variables must be a JSON object of names and values";
        return (Answered::Graphql(request_failure("BAD_REQUEST", msg.into())), Some(Trail::default()));
    }
    let hash = persisted_hash(wire.extensions.as_ref());
    let query = wire.query.unwrap_or_default();
    let cached = match document(st, &query, hash.as_deref()) {
        Ok(c) => c,
        Err(a) => return (Answered::Graphql(a), Some(Trail::default())),
    };
    let operation = wire.operation_name;
    // The document's cost before anything else looks at it (validation expands fragments one
    // spread at a time); computed once per document, checked against the org's size now.
    let cost = cached.cost.get_or_init(|| crate::cost::cost(&cached.doc));
    let contacts = st.graph.read().contact_count();
    if let Err(msg) = cost.as_ref().map_err(Clone::clone).and_then(|c| c.check(contacts)) {
        return (Answered::Graphql(request_failure("BAD_USER_INPUT", msg)), Some(Trail::default()));
    }
    // Documents that read the whole org or introspect run a few at a time, so that they never
    // hold every worker thread and `/healthz` and lookups keep answering.
    let _heavy = match cost {
        Ok(c) if c.whole_org > 0 || c.fields > 1_000 => Some(st.heavy.acquire().await),
        _ => None,
    };
    if let (Some(Some(plan)), true, false) = (cached.plan.get(), st.graph.ready(), across) {
        if let Some(body) = plan.answer(&st.graph.read(), operation.as_deref(), wire.variables.as_ref()) {
            // A planned document looks contacts up: never introspection.
            return (Answered::Planned(body.0, body.1), trail_of(st, &cached, operation.as_deref()));
        }
    }
    let introspection = crate::introspection::only_introspection(&cached.doc, operation.as_deref());
    // What the access log says of it (after the cost check: a document priced past the limit is
    // never walked).
    let trail = match introspection {
        Some(_) => None,
        None => trail_of(st, &cached, operation.as_deref()),
    };
    if let Some(Err(msg)) = &introspection {
        return (Answered::Graphql(request_failure("GRAPHQL_VALIDATION_FAILED", msg.clone())), Some(Trail::default()));
    }
    let mut req = async_graphql::Request::new(query)
        .data(role)
        .data(principal.clone())
        .data(st.access.clone())
        .data(st.ctx.clone());
    if get {
        req = req.data(crate::schema::SentWithGet);
    }
    if across {
        req = req.data(crate::orgs::AcrossOrgs);
    }
    if let Some(op) = &operation {
        req = req.operation_name(op.clone());
    }
    if let Some(v) = wire.variables.filter(|v| !v.is_null()) {
        req = req.variables(async_graphql::Variables::from_json(v));
    }
    req.set_parsed_query(cached.doc.clone());
    let resp = match introspection {
        Some(_) => st.introspection_schema.execute(req.only_introspection()).await,
        None => st.schema.execute(req).await,
    };
    let request_error = resp.data == async_graphql::Value::Null && !resp.errors.is_empty();
    if resp.errors.is_empty() {
        cached.plan.get_or_init(|| Plan::of(&cached.doc, operation.as_deref()));
    }
    let mut errors = resp.errors;
    for e in &mut errors {
        let ext = e.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_none() {
            ext.set("code", if request_error { "GRAPHQL_VALIDATION_FAILED" } else { "INTERNAL" });
        }
    }
    (Answered::Graphql(Answer { data: (!request_error).then_some(resp.data), errors, request_error }), trail)
}

/// The HTTP answer, as GraphQL over HTTP asks: with `application/graphql-response+json`, a
/// request that failed before execution is a 400; with `application/json`, every well-formed
/// request is a 200.
fn respond(a: Answer, media: &'static str) -> Response {
    /// The answer as written: `data` absent after a request error, `errors` absent when none.
    #[derive(serde::Serialize)]
    struct Wire<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a async_graphql::Value>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        errors: &'a [async_graphql::ServerError],
    }
    let body = serde_json::to_vec(&Wire { data: a.data.as_ref(), errors: &a.errors }).unwrap_or_else(|_| {
        br#"{"errors":[{"message":"the answer could not be encoded","extensions":{"code":"INTERNAL"}}]}"#.to_vec()
    });
    let status =
        if a.request_error && media == GRAPHQL_RESPONSE_JSON { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    (status, [(header::CONTENT_TYPE, media)], body).into_response()
}

/// Queries longer than this are parsed every time rather than cached (the cache stays small).
const CACHED_QUERY_MAX_BYTES: usize = 16 * 1024;
/// Parsed documents kept, by their text (and by SHA-256 for automatic persisted queries).
const DOCUMENT_CACHE_ENTRIES: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(1024) {
    Some(n) => n,
    None => unreachable!(),
};

/// idgraph's icon (three linked nodes), so that a browser's request for it is no 404.
async fn favicon() -> Response {
    const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><g stroke="#3b5bdb" stroke-width="3"><line x1="8" y1="24" x2="16" y2="8"/><line x1="16" y1="8" x2="24" y2="24"/></g><g fill="#3b5bdb"><circle cx="16" cy="8" r="5"/><circle cx="8" cy="24" r="5"/><circle cx="24" cy="24" r="5"/></g></svg>"##;
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "max-age=86400")], SVG).into_response()
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    match st.graph.info() {
        Some(i) => Json(json!({"ready": true, "generation": i.generation})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": "no index loaded yet"})))
            .into_response(),
    }
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    let (generation, contacts, agents, orphans) = {
        let ix = st.graph.read();
        let (c, a, _) = ix.counts();
        (ix.generation, c, a, ix.orphan_total())
    };
    let mut text = st.metrics.render(generation, contacts, agents, orphans);
    text.push_str(&format!(
        "# HELP idgraph_index_copies_total In-place changes that copied the whole index, a reader holding a snapshot of it (process-wide).\n# TYPE idgraph_index_copies_total counter\nidgraph_index_copies_total {}\n",
        idgraph_graph::index_copies()
    ));
    if let Some(log) = &st.access.log {
        text.push_str(&format!(
            "# HELP idgraph_access_log_entries_total Access log entries written.\n# TYPE idgraph_access_log_entries_total counter\nidgraph_access_log_entries_total {}\n# HELP idgraph_access_log_dropped_total Access log entries that could not be queued (never silently).\n# TYPE idgraph_access_log_dropped_total counter\nidgraph_access_log_dropped_total {}\n",
            log.written(),
            log.dropped()
        ));
    }
    if let Some(desk) = st.ops.cases() {
        let now = chrono::Utc::now().timestamp_millis();
        let all = desk.list(None);
        let open = all.iter().filter(|c| c.state != idgraph_cases::CaseState::SignedOff).count();
        let overdue = all.iter().filter(|c| c.overdue(now)).count();
        let (sent, failed) = desk.notifications();
        text.push_str(&format!(
            "# HELP idgraph_cases_open Offboarding cases not signed off.\n# TYPE idgraph_cases_open gauge\nidgraph_cases_open {open}\n# HELP idgraph_cases_overdue Offboarding cases past their due date, not signed off.\n# TYPE idgraph_cases_overdue gauge\nidgraph_cases_overdue {overdue}\n# HELP idgraph_case_notifications_total Case notifications delivered.\n# TYPE idgraph_case_notifications_total counter\nidgraph_case_notifications_total {sent}\n# HELP idgraph_case_notifications_failed_total Case notifications given up after their retries.\n# TYPE idgraph_case_notifications_failed_total counter\nidgraph_case_notifications_failed_total {failed}\n"
        ));
    }
    text.push_str(&format!(
        "# HELP idgraph_sessions Browser sessions open.\n# TYPE idgraph_sessions gauge\nidgraph_sessions {}\n",
        st.access.sessions.len()
    ));
    if st.graph.ready() {
        let f = st.graph.freshness();
        let mut gauge = |name: &str, help: &str, v: Option<f64>| {
            if let Some(v) = v {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"));
            }
        };
        let secs = |ms: Option<i64>| ms.map(|m| m as f64 / 1000.0);
        gauge("idgraph_freshness_p50_age_seconds", "Median age of contacts (now - verifiedAt).", secs(f.p50_age_ms));
        gauge("idgraph_freshness_p99_age_seconds", "99th percentile age of contacts.", secs(f.p99_age_ms));
        gauge("idgraph_freshness_max_age_seconds", "Oldest contact's age.", secs(f.max_age_ms));
        gauge(
            "idgraph_unverified_orphans",
            "Orphans not verified since their owner went.",
            Some(f.unverified_orphans as f64),
        );
        gauge(
            "idgraph_fallback",
            "1 when the current generation failed its check and an older one is served.",
            Some(st.graph.fallback().is_some() as u8 as f64),
        );
        gauge(
            "idgraph_refresh_projected_cycle_seconds",
            "Time to re-read every contact once at the refresher's share of the budget.",
            st.ops.projected_cycle_seconds(contacts),
        );
        gauge(
            "idgraph_refresh_last_cycle_seconds",
            "How long the refresher's last complete cycle over the org took.",
            st.ops.last_cycle_seconds(),
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Encoded chunks (2,000 rows each) each of an export's encoders keeps ready ahead of the socket.
const EXPORT_CHUNKS_AHEAD: usize = 2;

/// The threads an export is encoded on: encoding, not the socket, bounds an export's speed.
const EXPORT_THREADS: usize = 2;

/// The longest a backup through the server may take.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Default, serde::Deserialize)]
struct ExportParams {
    format: Option<String>,
    /// Comma-separated column names (every format).
    columns: Option<String>,
    /// A batch lookup's keys: `email` or `id`.
    by: Option<String>,
}

/// How an export or a lookup is written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OutFormat {
    Text(idgraph_graph::export::Format),
    Columnar(idgraph_columnar::Columnar),
}

/// The format `?format=` names, else the one `Accept` asks for, else NDJSON.
fn out_format(param: Option<&str>, headers: &HeaderMap) -> Result<OutFormat, String> {
    use idgraph_columnar::Columnar;
    use idgraph_graph::export::Format;
    match param {
        Some("ndjson") | Some("json") => return Ok(OutFormat::Text(Format::Ndjson)),
        Some("csv") => return Ok(OutFormat::Text(Format::Csv)),
        Some("arrow") => return Ok(OutFormat::Columnar(Columnar::Arrow)),
        Some("parquet") => return Ok(OutFormat::Columnar(Columnar::Parquet)),
        Some(other) => return Err(format!("format {other:?}: ndjson, csv, arrow or parquet")),
        None => {}
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    Ok(if accept.contains("application/vnd.apache.arrow.stream") {
        OutFormat::Columnar(Columnar::Arrow)
    } else if accept.contains("application/vnd.apache.parquet") || accept.contains("application/x-parquet") {
        OutFormat::Columnar(Columnar::Parquet)
    } else if accept.contains("text/csv") {
        OutFormat::Text(Format::Csv)
    } else {
        OutFormat::Text(Format::Ndjson)
    })
}

fn column_list(p: Option<&str>) -> Option<Vec<String>> {
    p.map(|s| s.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect())
}

fn text_media(f: idgraph_graph::export::Format) -> &'static str {
    match f {
        idgraph_graph::export::Format::Csv => "text/csv; charset=utf-8",
        idgraph_graph::export::Format::Ndjson => "application/x-ndjson",
    }
}

/// Bytes written on a blocking thread, sent to the socket as they come (a writer for the Arrow
/// and Parquet writers).
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if b.len() >= CHANNEL_CHUNK {
            // A record batch's body (megabytes) goes as it is: copied once, not grown into the
            // buffer by doubling.
            self.flush()?;
            self.send(Bytes::copy_from_slice(b))?;
            return Ok(b.len());
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(CHANNEL_CHUNK);
        }
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHANNEL_CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.buf));
            self.send(chunk)?;
        }
        Ok(())
    }
}

/// What a [`ChannelWriter`] gathers before sending.
const CHANNEL_CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    /// An Arrow buffer: a column's (large) sent as it is, without a copy; a message's header or
    /// padding gathered with the next.
    fn buffer(&mut self, b: idgraph_columnar::Buffer) -> std::io::Result<()> {
        if b.len() < CHANNEL_CHUNK / 4 {
            return std::io::Write::write_all(self, &b);
        }
        std::io::Write::flush(self)?;
        self.send(Bytes::from_owner(b))
    }

    fn send(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// Rows of a columnar answer written at once, in the request's task, as one body: a batch this
/// small takes well under a millisecond, less than handing it to a blocking thread and streaming
/// it in chunks would add.
const INLINE_ROWS: usize = 4096;

/// A columnar answer: of at most `INLINE_ROWS` rows, written at once; larger, streamed from a
/// blocking thread.
fn columnar_body(
    format: idgraph_columnar::Columnar,
    rows: usize,
    make: impl FnOnce() -> Result<
            (
                idgraph_columnar::SchemaRef,
                Box<dyn Iterator<Item = Result<idgraph_columnar::RecordBatch, idgraph_columnar::ColumnarError>> + Send>,
            ),
            idgraph_columnar::ColumnarError,
        > + Send
        + 'static,
) -> axum::body::Body {
    if rows <= INLINE_ROWS {
        let mut out = Vec::with_capacity(64 * 1024);
        let written = make().and_then(|(schema, batches)| idgraph_columnar::write(format, schema, batches, &mut out));
        return match written {
            Ok(()) => axum::body::Body::from(out),
            Err(e) => broken_body(&e),
        };
    }
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(EXPORT_CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let (schema, batches) = match make() {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "a columnar answer could not be made");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        let mut w = ChannelWriter { tx, buf: Vec::new() };
        let written = match format {
            idgraph_columnar::Columnar::Arrow => idgraph_columnar::arrow_buffers(schema, batches, |b| {
                w.buffer(b).map_err(|e| idgraph_columnar::ColumnarError::Arrow(e.into()))
            }),
            idgraph_columnar::Columnar::Parquet => idgraph_columnar::write(format, schema, batches, &mut w),
        };
        if let Err(e) = written {
            // The client gone, or the answer failed: either way the body must not end as if
            // complete (a cut stream would read as a shorter, valid one).
            tracing::debug!(error = %e, "a columnar answer stopped");
            let _ = w.tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            return;
        }
        let _ = std::io::Write::flush(&mut w);
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((chunk, rx))
    });
    axum::body::Body::from_stream(stream)
}

/// The body of an answer that failed once its status was decided: the connection is cut rather
/// than the body ended, so that the client sees a failed transfer, not an empty answer.
fn broken_body(e: &idgraph_columnar::ColumnarError) -> axum::body::Body {
    tracing::warn!(error = %e, "a columnar answer could not be made");
    let err = std::io::Error::other(e.to_string());
    axum::body::Body::from_stream(futures::stream::once(async move { Err::<Bytes, _>(err) }))
}

/// `GET /export/{contacts|orphans|agents|accounts}?format=ndjson|csv|arrow|parquet&columns=a,b`:
/// the whole list, streamed from one snapshot of the index (a reindex meanwhile changes nothing
/// in it). Auditors.
async fn export(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(table): axum::extract::Path<String>,
    axum::extract::Query(params): axum::extract::Query<ExportParams>,
    req: axum::extract::Request,
) -> Response {
    use idgraph_graph::export::{Export, Table};
    const JSON: &str = "application/json";
    let headers = req.headers();
    let route = format!("GET /export/{}", if table.len() <= 32 { table.as_str() } else { "?" });
    let caller = match signin::authenticate(&st, req.method(), headers, req.extensions(), &route, JSON).await {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    if caller.role < Role::Auditor {
        return signin::forbidden(&st, &caller, Role::Auditor, &route, JSON);
    }
    let table: Table = match table.parse() {
        Ok(t) => t,
        Err(e) => return early(StatusCode::NOT_FOUND, "BAD_USER_INPUT", &e, JSON),
    };
    let format = match out_format(params.format.as_deref(), headers) {
        Ok(f) => f,
        Err(e) => return early(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &e, JSON),
    };
    let asked = column_list(params.columns.as_deref());
    let keep = match idgraph_graph::export::column_mask(table, asked.as_deref()) {
        Ok(k) => k,
        Err(e) => return early(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &e, JSON),
    };
    if !st.graph.ready() {
        return early(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            "no index is loaded yet: the first crawl is still running",
            JSON,
        );
    }
    // The generation named in the header is the snapshot's own, taken once: a switch between
    // reading one and taking the other cannot make them disagree.
    let snapshot = st.graph.snapshot();
    let generation = snapshot.generation;
    let rows = match table {
        Table::Contacts => snapshot.contact_count(),
        Table::Agents => snapshot.counts().1,
        Table::Accounts => snapshot.counts().2,
        Table::Orphans => snapshot.orphans_len(),
    };
    signin::record(&st, &caller, &route, None, vec![table.name().to_string()], rows as u64, "ok", None);
    let (body, ctype) = match format {
        OutFormat::Columnar(c) => {
            let make = move || {
                let b = idgraph_columnar::TableBatches::new(snapshot, table, asked.as_deref())?
                    .in_parallel(EXPORT_THREADS)?;
                let schema = b.schema();
                let batches: Box<dyn Iterator<Item = _> + Send> = Box::new(b);
                Ok((schema, batches))
            };
            (columnar_body(c, rows, make), c.media_type())
        }
        OutFormat::Text(format) => {
            // Chunks are encoded on blocking threads (each its share, dealt in turn) a few ahead
            // of the socket, so that encoding and sending overlap, and taken from them in turn; a
            // client that goes away stops the encoders at their next chunk.
            let parts = Export::new(snapshot, table, format).with_columns(keep).split(EXPORT_THREADS);
            let receivers: Vec<mpsc::Receiver<Bytes>> = parts
                .into_iter()
                .map(|rows| {
                    let (tx, rx) = mpsc::channel::<Bytes>(EXPORT_CHUNKS_AHEAD);
                    tokio::task::spawn_blocking(move || {
                        for chunk in rows {
                            if tx.blocking_send(Bytes::from(chunk)).is_err() {
                                break;
                            }
                        }
                    });
                    rx
                })
                .collect();
            let turns = futures::stream::unfold((receivers, 0usize), |(mut rxs, turn)| async move {
                let n = rxs.len();
                let chunk = rxs.get_mut(turn % n)?.recv().await?;
                Some((Ok::<_, std::convert::Infallible>(chunk), (rxs, turn + 1)))
            });
            (axum::body::Body::from_stream(turns), text_media(format))
        }
    };
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, ctype)], body).into_response();
    r.headers_mut().insert("x-idgraph-generation", HeaderValue::from(generation));
    r
}

/// The most keys one batch lookup may name.
pub const LOOKUP_MAX_KEYS: usize = 100_000;
/// A lookup's body: 100,000 emails fit.
const LOOKUP_MAX_BYTES: usize = 16 << 20;

/// `POST /lookup/contacts?by=email|id&format=ndjson|csv|arrow|parquet&columns=...` with a JSON
/// array of up to 100,000 keys: each key's contact and owner, in the order given, one row a key
/// (a key no contact has: its row holds the key alone). Viewers.
async fn lookup(
    State(st): State<Arc<AppState>>,
    axum::extract::Query(params): axum::extract::Query<ExportParams>,
    req: axum::extract::Request,
) -> Response {
    const JSON: &str = "application/json";
    const ROUTE: &str = "POST /lookup/contacts";
    let (parts, body) = req.into_parts();
    let caller = match signin::authenticate(&st, &parts.method, &parts.headers, &parts.extensions, ROUTE, JSON).await {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let by_email = match params.by.as_deref() {
        Some("email") | None => true,
        Some("id") => false,
        Some(o) => return early(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &format!("by={o:?}: email or id"), JSON),
    };
    let format = match out_format(params.format.as_deref(), &parts.headers) {
        Ok(f) => f,
        Err(e) => return early(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &e, JSON),
    };
    let asked = column_list(params.columns.as_deref());
    let keep = match idgraph_graph::export::mask_of(idgraph_graph::export::LOOKUP_COLUMNS, asked.as_deref()) {
        Ok(k) => k,
        Err(e) => return early(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &e, JSON),
    };
    let body = match read_body(body, LOOKUP_MAX_BYTES).await {
        Ok(b) => b,
        Err(msg) => return early(StatusCode::PAYLOAD_TOO_LARGE, "BAD_REQUEST", &msg, JSON),
    };
    let keys: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(k) => k,
        Err(e) => {
            return early(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &format!("send a JSON array of keys ({e})"), JSON)
        }
    };
    if keys.len() > LOOKUP_MAX_KEYS {
        let msg = format!("{} keys: at most {LOOKUP_MAX_KEYS} a request", keys.len());
        return early(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &msg, JSON);
    }
    let keys: Vec<String> = keys
        .into_iter()
        .map(|k| match k {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
        .collect();
    if !st.graph.ready() {
        return early(StatusCode::SERVICE_UNAVAILABLE, "NOT_READY", "no index is loaded yet", JSON);
    }
    let snapshot = st.graph.snapshot();
    signin::record(
        &st,
        &caller,
        ROUTE,
        None,
        vec![format!("contacts by {}", if by_email { "email" } else { "id" })],
        keys.len() as u64,
        "ok",
        None,
    );
    let (body, ctype) = match format {
        OutFormat::Columnar(c) => {
            let n = keys.len();
            let make = move || {
                let batches = idgraph_columnar::lookup_batches(snapshot, by_email, keys, asked.as_deref())?;
                let schema = batches.schema();
                let b: Box<dyn Iterator<Item = _> + Send> = Box::new(batches);
                Ok((schema, b))
            };
            (columnar_body(c, n, make), c.media_type())
        }
        OutFormat::Text(f) => {
            let text = tokio::task::spawn_blocking(move || {
                idgraph_graph::export::lookup_text(&snapshot, by_email, &keys, f, &keep)
            })
            .await
            .unwrap_or_default();
            (axum::body::Body::from(text), text_media(f))
        }
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, ctype)], body).into_response()
}

/// `GET /cases/{id}/bundle` (auditor): the case's evidence as one self-contained HTML file
/// (`idgraph case verify FILE` checks it offline).
async fn case_bundle(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    req: axum::extract::Request,
) -> Response {
    const JSON: &str = "application/json";
    let route = "GET /cases/{id}/bundle";
    let caller = match signin::authenticate(&st, req.method(), req.headers(), req.extensions(), route, JSON).await {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    if caller.role < Role::Auditor {
        return signin::forbidden(&st, &caller, Role::Auditor, route, JSON);
    }
    let Some(desk) = st.ops.cases() else {
        return early(StatusCode::NOT_FOUND, "BAD_USER_INPUT", "this server keeps no offboarding cases", JSON);
    };
    let Some(case) = id.parse::<u64>().ok().and_then(|id| desk.get(id)) else {
        return early(StatusCode::NOT_FOUND, "BAD_USER_INPUT", "no such case", JSON);
    };
    signin::record(&st, &caller, route, None, vec![format!("case {}", case.id)], case.items.len() as u64, "ok", None);
    let html = tokio::task::spawn_blocking(move || idgraph_cases::bundle::render(&case)).await.unwrap_or_default();
    let disposition = format!("attachment; filename=\"idgraph-case-{id}.html\"");
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

#[derive(Debug, serde::Deserialize)]
struct BackupRequest {
    to: String,
}

/// `POST /admin/backup {"to": NAME}` (admin token): a consistent, checked copy of the index written
/// on the server's machine while it serves, into a new directory `NAME` under the configured
/// `backup_dir` (created exclusively, 0700; removed again if the backup fails).
async fn backup(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    const JSON: &str = "application/json";
    const ROUTE: &str = "POST /admin/backup";
    let (parts, body) = req.into_parts();
    let caller = match signin::authenticate(&st, &parts.method, &parts.headers, &parts.extensions, ROUTE, JSON).await {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    if caller.role < Role::Admin {
        return signin::forbidden(&st, &caller, Role::Admin, ROUTE, JSON);
    }
    let Some(dir) = st.backup_dir.clone() else {
        return early(
            StatusCode::CONFLICT,
            "BAD_USER_INPUT",
            "this server takes no backups: set backup_dir (--backup-dir) in its configuration, or back up offline with --data-dir",
            JSON,
        );
    };
    let body = match read_body(body, 4096).await {
        Ok(b) => b,
        Err(msg) => return early(StatusCode::PAYLOAD_TOO_LARGE, "BAD_REQUEST", &msg, JSON),
    };
    let req: BackupRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return early(StatusCode::BAD_REQUEST, "BAD_REQUEST", &format!("send {{\"to\": \"NAME\"}} ({e})"), JSON)
        }
    };
    if !idgraph_graph::backup_name_ok(&req.to) {
        return early(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "a backup is named by a plain name (letters, digits, '.', '_', '-'; no '/', no leading '.'): it is written under the server's backup_dir",
            JSON,
        );
    }
    let to = dir.join(&req.to);
    let g = st.graph.clone();
    let started = Instant::now();
    let written = to.clone();
    let ops = st.ops.clone();
    let backup = move || {
        let r = g.backup_to(&to);
        // The copy and its check went through hundreds of MB: give them back now.
        ops.give_back_memory();
        r
    };
    let done = tokio::task::spawn_blocking(backup).await;
    let outcome = if matches!(done, Ok(Ok(_))) { "ok" } else { "error" };
    signin::record(&st, &caller, ROUTE, None, vec![req.to.clone()], 0, outcome, None);
    match done {
        Ok(Ok(r)) => {
            let msg = r.summary(&written, started.elapsed());
            let path = written.display().to_string();
            (StatusCode::OK, Json(json!({"message": msg, "generation": r.generation, "path": path}))).into_response()
        }
        Ok(Err(e)) => early(StatusCode::CONFLICT, "BAD_USER_INPUT", &e.to_string(), JSON),
        Err(e) => early(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", &e.to_string(), JSON),
    }
}

/// Bounds on the server's connections, against clients that hold them open.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// The most connections open at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (also how long an idle
    /// keep-alive connection is kept waiting for the next request).
    pub header_read_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits { max_connections: 1024, header_read_timeout: Duration::from_secs(10) }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the connections in flight
/// finish. A connection that sends no complete request headers within the timeout (nothing, a
/// partial header, a header a byte a second, an idle keep-alive) is closed; past
/// `max_connections` new ones are closed at once, so slow clients cannot use up the process's
/// file descriptors and `/healthz` keeps answering.
pub async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(max = limits.max_connections, "too many connections: one closed at once");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Who is on the other end, for the access log (and the trusted proxies' headers).
        let peer = crate::signin::PeerAddr(_peer);
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer);
                req
            },
        ));
        let (builder, watcher, wait) = (builder.clone(), graceful.watcher(), limits.header_read_timeout);
        tokio::spawn(async move {
            // hyper times a request's headers from their first byte: a connection that sends
            // nothing at all is closed here.
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(wait, stream.peek(&mut first)).await, Ok(Ok(1))) {
                drop(permit);
                return;
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            let _ = watcher.watch(conn).await;
            drop(permit);
        });
    }
    graceful.shutdown().await;
    Ok(())
}
