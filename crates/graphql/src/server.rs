//! The HTTP surface: GraphQL, GraphiQL, webhooks, health and metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idgraph_graph::{Event, Graph};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::schema::{build_schema, AppSchema, Role};
use crate::webhooks::{self, WebhookConfig};
use crate::{graphiql, Metrics, Operations};

/// Bearer tokens for GraphQL. With neither set, every caller is admin (the demo's mode).
#[derive(Clone, Default)]
pub struct ApiTokens {
    pub read: Option<String>,
    pub admin: Option<String>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokens")
            .field("read", &self.read.as_ref().map(|_| "***"))
            .field("admin", &self.admin.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ApiTokens {
    pub fn open(&self) -> bool {
        self.read.is_none() && self.admin.is_none()
    }

    fn role(&self, headers: &HeaderMap) -> Option<Role> {
        if self.open() {
            return Some(Role::Admin);
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())?;
        let eq = |t: &Option<String>| t.as_ref().is_some_and(|t| bool::from(t.as_bytes().ct_eq(given.as_bytes())));
        if eq(&self.admin) {
            Some(Role::Admin)
        } else if eq(&self.read) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub tokens: ApiTokens,
    pub body_max_bytes: usize,
    pub request_timeout: Duration,
    /// Origins allowed by CORS; empty = CORS off.
    pub cors_origins: Vec<String>,
    pub webhook: Option<WebhookConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tokens: ApiTokens::default(),
            body_max_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(15),
            cors_origins: Vec::new(),
            webhook: None,
        }
    }
}

pub struct AppState {
    pub schema: AppSchema,
    pub graph: Arc<Graph>,
    pub metrics: Arc<Metrics>,
    pub tokens: ApiTokens,
    pub webhook: Option<WebhookConfig>,
    pub webhook_tx: Option<mpsc::Sender<Event>>,
}

/// The whole HTTP surface. Call inside a Tokio runtime (the webhook applier is spawned here).
pub fn router(graph: Arc<Graph>, ops: Arc<dyn Operations>, metrics: Arc<Metrics>, cfg: ServerConfig) -> Router {
    let webhook_tx = cfg.webhook.as_ref().map(|w| webhooks::start_applier(graph.clone(), metrics.clone(), w));
    let webhook_body = cfg.webhook.as_ref().map_or(64 * 1024, |w| w.body_max_bytes);
    let state = Arc::new(AppState {
        schema: build_schema(graph.clone(), ops),
        graph,
        metrics,
        tokens: cfg.tokens.clone(),
        webhook: cfg.webhook.clone(),
        webhook_tx,
    });
    let mut app = Router::new()
        .route("/", get(graphiql::page))
        .route("/assets/{name}", get(graphiql::asset))
        .route("/graphql", get(graphql).post(graphql).layer(DefaultBodyLimit::max(cfg.body_max_bytes)))
        .route("/webhooks/drift", post(webhooks::receive).layer(DefaultBodyLimit::max(webhook_body)))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, cfg.request_timeout));
    if !cfg.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = cfg.cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    app
}

async fn graphql(State(st): State<Arc<AppState>>, method: Method, headers: HeaderMap, req: GraphQLRequest) -> Response {
    let Some(mut role) = st.tokens.role(&headers) else {
        st.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": [{"message": "a bearer token is required (read or admin)"}]})),
        )
            .into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    // A GET can be forged by another page: it never carries admin rights.
    if method == Method::GET {
        role = Role::Read;
    }
    let started = Instant::now();
    let resp = st.schema.execute(req.into_inner().data(role)).await;
    st.metrics.observe_query(started.elapsed());
    st.metrics.graphql_requests.fetch_add(1, Ordering::Relaxed);
    if resp.is_err() {
        st.metrics.graphql_errors.fetch_add(1, Ordering::Relaxed);
    }
    GraphQLResponse::from(resp).into_response()
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render(generation, contacts, agents, orphans))
        .into_response()
}
