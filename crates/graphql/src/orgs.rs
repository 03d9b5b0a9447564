//! Many orgs behind one listener: `/orgs/NAME/...` and the `X-Idgraph-Org` header pick an org's
//! router (each one built by [`crate::router`] for its org); a request that names none goes to
//! the only org, or, on a server with several, answers only what spans them (`person`, `orgs`,
//! `me`, the pages and sign-in).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use idgraph_graph::Graph;
use parking_lot::RwLock;
use serde_json::json;
use tower::ServiceExt;

/// The header that names the org of a request to `/graphql` (and every other route).
pub const ORG_HEADER: &str = "x-idgraph-org";

/// Set on a request that names no org, sent to a server that holds several: its GraphQL
/// answers only the fields that span orgs, and its role is the caller's role in every org.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcrossOrgs;

/// The routes that make sense without an org on a server with several.
fn across_route(path: &str) -> bool {
    matches!(path, "/graphql" | "/" | "/audit" | "/favicon.ico")
        || path.starts_with("/auth/")
        || path.starts_with("/assets/")
}

struct Entry {
    router: Router,
    graph: Option<Arc<Graph>>,
}

/// The routers of the orgs a server holds, by name; a reload adds and removes them while
/// requests are answered (a request holds its org's router until it is done).
#[derive(Default)]
pub struct OrgRouters {
    map: RwLock<BTreeMap<String, Entry>>,
}

impl OrgRouters {
    pub fn new() -> OrgRouters {
        OrgRouters::default()
    }

    /// Adds or replaces an org (`graph`: `None` while its store cannot be opened).
    pub fn insert(&self, name: &str, router: Router, graph: Option<Arc<Graph>>) {
        self.map.write().insert(name.to_string(), Entry { router, graph });
    }

    pub fn remove(&self, name: &str) -> bool {
        self.map.write().remove(name).is_some()
    }

    pub fn names(&self) -> Vec<String> {
        self.map.read().keys().cloned().collect()
    }

    fn router(&self, name: &str) -> Option<Router> {
        self.map.read().get(name).map(|e| e.router.clone())
    }

    /// The only org's router, when there is exactly one.
    fn only(&self) -> Option<Router> {
        let m = self.map.read();
        (m.len() == 1).then(|| m.values().next().map(|e| e.router.clone())).flatten()
    }

    fn first(&self) -> Option<Router> {
        self.map.read().values().next().map(|e| e.router.clone())
    }
}

/// The router of a server with many orgs.
pub fn front(orgs: Arc<OrgRouters>) -> Router {
    Router::new().fallback(dispatch).with_state(orgs)
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"errors": [{"message": message, "extensions": {"code": code}}]}))).into_response()
}

async fn dispatch(State(orgs): State<Arc<OrgRouters>>, mut req: Request) -> Response {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/orgs/") {
        let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(router) = orgs.router(name) else {
            return unknown(name);
        };
        let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
        match format!("/{tail}{query}").parse::<Uri>() {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => return refuse(StatusCode::BAD_REQUEST, "BAD_REQUEST", "the path is not valid".into()),
        }
        return forward(router, req).await;
    }
    if let Some(h) = req.headers().get(ORG_HEADER) {
        let name = h.to_str().unwrap_or("").trim().to_string();
        return match orgs.router(&name) {
            Some(router) => forward(router, req).await,
            None => unknown(&name),
        };
    }
    if let Some(router) = orgs.only() {
        return forward(router, req).await;
    }
    match path.as_str() {
        "/healthz" => "ok".into_response(),
        "/readyz" => readiness(&orgs),
        p if across_route(p) => match orgs.first() {
            Some(router) => {
                req.extensions_mut().insert(AcrossOrgs);
                forward(router, req).await
            }
            None => refuse(StatusCode::SERVICE_UNAVAILABLE, "NOT_READY", "this server holds no org".into()),
        },
        _ => refuse(
            StatusCode::BAD_REQUEST,
            "ORG_REQUIRED",
            format!(
                "this server holds several orgs ({}): name one, as /orgs/NAME{path} or with the {ORG_HEADER} header",
                orgs.names().join(", ")
            ),
        ),
    }
}

fn unknown(name: &str) -> Response {
    let shown = if idgraph_access::is_org_name(name) { name } else { "(not a plain name)" };
    refuse(StatusCode::NOT_FOUND, "NOT_FOUND", format!("this server holds no org named {shown}"))
}

async fn forward(router: Router, req: Request) -> Response {
    match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Ready when at least one org has an index (one org failing never hides the others); the body
/// says which are.
fn readiness(orgs: &OrgRouters) -> Response {
    let m = orgs.map.read();
    let each: Vec<_> = m
        .iter()
        .map(|(name, e)| {
            let generation = e.graph.as_ref().and_then(|g| g.info()).map(|i| i.generation);
            json!({"org": name, "ready": generation.is_some(), "generation": generation})
        })
        .collect();
    let ready = each.iter().any(|o| o["ready"] == true);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": ready, "orgs": each}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_spanning_routes_go_without_an_org() {
        assert!(across_route("/graphql"));
        assert!(across_route("/auth/login"));
        assert!(!across_route("/export/orphans"));
        assert!(!across_route("/webhooks/drift"));
        assert!(!across_route("/metrics"));
    }
}
