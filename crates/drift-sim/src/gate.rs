//! What stands before every API handler: authentication and scopes, the rate limit, and faults.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream;
use rand::Rng;
use serde_json::json;

use crate::State;

/// Drift's 429, word for word.
fn rate_limited() -> Response {
    drift_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit",
        "You have maxed your number of API calls for the provided time window",
    )
}

/// Drift's error envelope.
pub(crate) fn drift_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"type": kind, "message": message}}))).into_response()
}

pub(crate) fn scim_error(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Response {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/scim+json"));
    r
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// The scope a route needs, and whether it is the contacts API (which answers 401, not 403).
fn required_scope(method: &Method, path: &str) -> Option<(&'static str, bool)> {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    if path.starts_with("/contacts") {
        let scope = if method == Method::GET { "contact_read" } else { "contact_write" };
        Some((scope, true))
    } else if path.starts_with("/users") {
        Some(("user_read", false))
    } else if path.starts_with("/conversations") {
        Some(("conversation_read", false))
    } else if path.starts_with("/accounts") {
        Some(("account_read", false))
    } else if path.starts_with("/scim") {
        Some(("scim", false))
    } else {
        None
    }
}

enum Post {
    None,
    Malformed,
    Truncated,
    Drop,
}

pub(crate) async fn gate(AxState(state): AxState<Arc<State>>, req: Request, next: Next) -> Response {
    let stats = &state.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let token = bearer(req.headers());
    if let Some(refused) = check_auth(&state, req.method(), &path, token.as_deref()) {
        return refused;
    }
    let limit_headers = match take_from_bucket(&state, token.as_deref()) {
        Ok(h) => h,
        Err(limited) => return limited,
    };
    // The OAuth token endpoint is spared faults: a rotated refresh token lost to an injected
    // fault would end the session for good, which tests nothing.
    let is_oauth = path.contains("/oauth2/") || path.contains("/app/token_info");
    let (post, delay) = if is_oauth {
        (Post::None, None)
    } else {
        match draw_faults(&state) {
            Ok(x) => x,
            Err(fault) => return fault,
        }
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = next.run(req).await;
    if let (Some((limit, remaining)), true) = (limit_headers, state.cfg.rate_headers) {
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    }
    if matches!(post, Post::None) || resp.status() != StatusCode::OK {
        return resp;
    }
    spoil(resp, post, stats).await
}

/// Auth and scopes, as Drift answers them; `Some` is the refusal.
fn check_auth(state: &State, method: &axum::http::Method, path: &str, token: Option<&str>) -> Option<Response> {
    let stats = &state.stats;
    let is_scim = path.contains("/scim");
    let (scope, is_contacts) = required_scope(method, path)?;
    let denied = |status: StatusCode, msg: &str| {
        stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        Some(if is_scim { scim_error(status, None, msg) } else { drift_error(status, "authentication_error", msg) })
    };
    let unauth = if is_contacts || is_scim { StatusCode::UNAUTHORIZED } else { StatusCode::FORBIDDEN };
    let Some(tok) = token else {
        return denied(unauth, "Missing bearer token");
    };
    let info = state.tokens.lock().get(tok).cloned();
    let Some(info) = info else {
        return denied(unauth, "Invalid token");
    };
    if info.expires_at.is_some_and(|t| Instant::now() >= t) {
        return denied(unauth, "Token expired");
    }
    if is_scim && !state.cfg.scim_enabled {
        return denied(StatusCode::FORBIDDEN, "SCIM requires the Enterprise plan");
    }
    if !info.scopes.iter().any(|s| s == scope) {
        return denied(StatusCode::FORBIDDEN, &format!("Missing scope: {scope}"));
    }
    None
}

/// The leaky bucket, one per token: the limit and what remains, or a 429.
fn take_from_bucket(state: &State, token: Option<&str>) -> Result<Option<(u32, u32)>, Response> {
    let Some(rl) = state.cfg.rate_limit else {
        return Ok(None);
    };
    let rate = rl.per_second();
    let now = Instant::now();
    let mut buckets = state.buckets.lock();
    let b = buckets.entry(token.unwrap_or_default().to_string()).or_insert(crate::Bucket { level: 0.0, last: now });
    b.level = (b.level - now.duration_since(b.last).as_secs_f64() * rate).max(0.0);
    b.last = now;
    let capacity = f64::from(rl.burst.max(1));
    if b.level + 1.0 > capacity {
        let wait_s = (b.level + 1.0 - capacity) / rate;
        drop(buckets);
        state.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = rate_limited();
        if state.cfg.rate_headers {
            let h = r.headers_mut();
            h.insert("retry-after", HeaderValue::from(wait_s.ceil().max(1.0) as u64));
            h.insert("x-ratelimit-limit", HeaderValue::from(rl.requests));
            h.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
            h.insert("x-ratelimit-reset", HeaderValue::from(wait_s.ceil() as u64));
        }
        return Err(r);
    }
    b.level += 1.0;
    let remaining = ((capacity - b.level) / capacity * f64::from(rl.requests)).floor() as u32;
    Ok(Some((rl.requests, remaining)))
}

/// Faults, drawn from the seeded generator: an answer now (5xx, a 429 storm), or what to do to
/// the answer (spoil it) and how long to wait first.
fn draw_faults(state: &State) -> Result<(Post, Option<Duration>), Response> {
    let stats = &state.stats;
    let mut f = state.faults.lock();
    let cfg = f.faults.clone();
    if f.storm_left > 0 {
        f.storm_left -= 1;
        drop(f);
        stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Err(rate_limited());
    }
    if cfg.storm_rate > 0.0 && f.rng.random_bool(cfg.storm_rate.min(1.0)) {
        f.storm_left = cfg.storm_len.saturating_sub(1);
        drop(f);
        stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Err(rate_limited());
    }
    let roll: f64 = f.rng.random();
    let mut delay = None;
    if cfg.slow_rate > 0.0 && f.rng.random_bool(cfg.slow_rate.min(1.0)) {
        delay = Some(Duration::from_millis(cfg.slow_ms));
    }
    let mut edge = cfg.error_rate;
    if roll < edge {
        let code = [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE]
            [f.rng.random_range(0..3)];
        drop(f);
        stats.server_errors.fetch_add(1, Ordering::Relaxed);
        return Err(drift_error(code, "internal_error", "Internal server error"));
    }
    edge += cfg.malformed_rate;
    let post = if roll < edge {
        Post::Malformed
    } else if roll < edge + cfg.truncated_rate {
        Post::Truncated
    } else if roll < edge + cfg.truncated_rate + cfg.drop_rate {
        Post::Drop
    } else {
        Post::None
    };
    Ok((post, delay))
}

/// Spoils a good answer as the fault drawn says: malformed, truncated, or dropped mid-body.
async fn spoil(resp: Response, post: Post, stats: &crate::Stats) -> Response {
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let half = bytes.len() / 2;
    let mut parts = parts;
    parts.headers.remove("content-length");
    match post {
        Post::Malformed => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            let mut bad = b"{\"data\": [{\"id\": ,,".to_vec();
            bad.extend_from_slice(&bytes[half..]);
            Response::from_parts(parts, Body::from(bad))
        }
        Post::Truncated => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            Response::from_parts(parts, Body::from(bytes.slice(..half)))
        }
        Post::Drop => {
            // Send the first half, then fail the body stream: hyper aborts the connection, and
            // the client sees a connection closed mid-response.
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            let first = bytes.slice(..half);
            let s = stream::iter(vec![
                Ok::<_, std::io::Error>(first),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected drop")),
            ]);
            Response::from_parts(parts, Body::from_stream(s))
        }
        Post::None => Response::from_parts(parts, Body::from(bytes)),
    }
}
