//! The browser pages: GraphiQL at `/`, the audit view at `/audit`, and their assets, all from
//! `idgraph-web` (embedded at build time: no CDN).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

pub async fn page() -> Html<String> {
    Html(idgraph_web::graphiql_page())
}

pub async fn audit() -> Html<String> {
    Html(idgraph_web::audit_page())
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match idgraph_web::asset(&name) {
        Some((body, ctype)) => {
            ([(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, "public, max-age=86400")], body).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
