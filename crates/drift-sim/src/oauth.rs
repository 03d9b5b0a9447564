//! OAuth 2.0: the authorize page, the token endpoint and token introspection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{RawQuery, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};

use crate::{State, TokenInfo, ALL_SCOPES};

type S = Arc<State>;

pub(crate) fn api_routes() -> Router<S> {
    Router::new().route("/oauth2/token", post(token)).route("/app/token_info", post(token_info))
}

pub(crate) fn open_routes() -> Router<S> {
    Router::new().route("/oauth2/authorize", get(authorize)).route("/authorize", get(authorize))
}

fn random(prefix: &str) -> String {
    let s: String = rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
    format!("{prefix}{s}")
}

pub(crate) fn new_code(st: &State, redirect_uri: &str) -> String {
    let code = random("code-");
    st.codes.lock().insert(code.clone(), redirect_uri.to_string());
    code
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

/// Consents at once (the simulator has one user) and redirects back with a code.
async fn authorize(AxState(st): AxState<S>, RawQuery(q): RawQuery) -> Response {
    let pairs: Vec<(String, String)> =
        q.as_deref().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    if get("client_id").as_deref() != Some(st.cfg.oauth_client_id.as_str()) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", "unknown client_id");
    }
    let Some(redirect) = get("redirect_uri") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "redirect_uri is required");
    };
    let code = new_code(&st, &redirect);
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let mut to = format!("{redirect}{sep}code={}", urlencoding::encode(&code));
    if let Some(state) = get("state") {
        to.push_str(&format!("&state={}", urlencoding::encode(&state)));
    }
    Redirect::to(&to).into_response()
}

/// Accepts a form body (the docs) or a JSON body in snake_case or camelCase (an old sample).
fn params(headers: &HeaderMap, body: &Bytes) -> Vec<(String, String)> {
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    if is_json {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
            return Vec::new();
        };
        m.into_iter()
            .filter_map(|(k, v)| {
                let key = match k.as_str() {
                    "clientId" => "client_id",
                    "clientSecret" => "client_secret",
                    "grantType" => "grant_type",
                    "refreshToken" => "refresh_token",
                    "redirectUri" => "redirect_uri",
                    other => other,
                }
                .to_string();
                v.as_str().map(|s| (key, s.to_string()))
            })
            .collect()
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    }
}

async fn token(AxState(st): AxState<S>, headers: HeaderMap, body: Bytes) -> Response {
    let p = params(&headers, &body);
    let get = |k: &str| p.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    if get("client_id").as_deref() != Some(st.cfg.oauth_client_id.as_str())
        || get("client_secret").as_deref() != Some(st.cfg.oauth_client_secret.as_str())
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    }
    let refresh = match get("grant_type").as_deref() {
        Some("authorization_code") => {
            let Some(code) = get("code") else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "code is required");
            };
            if st.codes.lock().remove(&code).is_none() {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or used code");
            }
            let r = random("refresh-");
            st.refresh_tokens.lock().insert(r.clone(), ());
            r
        }
        Some("refresh_token") => {
            let Some(old) = get("refresh_token") else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required");
            };
            let mut rts = st.refresh_tokens.lock();
            if !rts.contains_key(&old) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or retired refresh token");
            }
            st.stats.token_refreshes.fetch_add(1, Ordering::Relaxed);
            if st.cfg.rotate_refresh_tokens {
                rts.remove(&old);
                let r = random("refresh-");
                rts.insert(r.clone(), ());
                r
            } else {
                old
            }
        }
        other => {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", &format!("grant_type {other:?}"));
        }
    };
    let access = random("access-");
    let ttl = st.cfg.access_token_ttl;
    st.tokens.lock().insert(
        access.clone(),
        TokenInfo {
            scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
            expires_at: ttl.map(|t| Instant::now() + t),
        },
    );
    Json(json!({
        "access_token": access, "refresh_token": refresh, "token_type": "bearer",
        "expires_in": ttl.map_or(0, |t| t.as_secs()), "orgId": st.cfg.org_id,
    }))
    .into_response()
}

async fn token_info(AxState(st): AxState<S>, body: Bytes) -> Response {
    let tok = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("access_token").and_then(Value::as_str).map(str::to_string));
    let Some(tok) = tok else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "access_token is required");
    };
    let info = st.tokens.lock().get(&tok).cloned();
    match info {
        Some(i) if i.expires_at.is_none_or(|t| Instant::now() < t) => Json(json!({
            "orgId": st.cfg.org_id,
            "authenticated_userid": format!("orgId:{}", st.cfg.org_id),
            "scope": i.scopes.join(" "),
            "expires_in": i.expires_at.map_or(0, |t| t.saturating_duration_since(Instant::now()).as_secs()),
        }))
        .into_response(),
        _ => oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", "unknown or expired token"),
    }
}
