//! The browser pages: GraphiQL at `/`, the audit view at `/audit`, and their assets, all from
//! `idgraph-web` (embedded at build time: no CDN).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::server::AppState;

pub async fn page(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    with_session(&st, &headers, "/", idgraph_web::graphiql_page())
}

pub async fn audit(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    with_session(&st, &headers, "/audit", idgraph_web::audit_page())
}

/// A page for a signed-in person, with who they are and their session's CSRF token in `<meta>`
/// tags (its scripts send the token back); without a session on a server with sign-in, the way
/// to sign in.
fn with_session(st: &AppState, headers: &HeaderMap, path: &str, html: String) -> Response {
    match crate::signin::page_session(st, headers, path) {
        Err(to_sign_in) => *to_sign_in,
        Ok(None) => Html(html).into_response(),
        Ok(Some(s)) => {
            let role = s.principal.top_role().map_or("none", |r| r.name());
            let meta = format!(
                "<head>\n<meta name=\"idgraph-csrf\" content=\"{}\">\n<meta name=\"idgraph-user\" content=\"{}\">\n<meta name=\"idgraph-role\" content=\"{role}\">",
                idgraph_web::escape(&s.csrf),
                idgraph_web::escape(&s.principal.name)
            );
            let mut r = Html(html.replacen("<head>", &meta, 1)).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
    }
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match idgraph_web::asset(&name) {
        Some((body, ctype)) => {
            ([(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, "public, max-age=86400")], body).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
