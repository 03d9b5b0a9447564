//! `POST /webhooks/drift`: verified in constant time, bounded, answered at once.
//!
//! Drift's deliveries carry a static token and no signature, no id, and are neither ordered nor
//! deduplicated: anyone holding the token could write anything. So a delivery is a hint, never
//! evidence: it names a contact, which is queued (deduplicated by contact, bounded, kept across
//! restarts) through [`crate::Operations::announce`] to be read from Drift; only what Drift
//! answers is recorded. A delivery that names a time past now (plus a small skew) is refused.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idgraph_model::Secret;
use serde_json::{json, Value};

use crate::server::AppState;

/// Webhook settings.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub verification_token: Secret,
    pub body_max_bytes: usize,
}

impl WebhookConfig {
    pub fn new(token: impl Into<String>) -> Self {
        WebhookConfig { verification_token: Secret::new(token), body_max_bytes: 256 * 1024 }
    }
}

fn token_ok(expected: &str, given: &str) -> bool {
    crate::server::secrets_equal(expected, given)
}

/// How far past now a delivery's own time may be (clocks differ a little); later is refused.
pub const FUTURE_SKEW_MS: i64 = 5 * 60_000;

pub(crate) async fn receive(State(st): State<Arc<AppState>>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let Some(cfg) = &st.webhook else {
        return (StatusCode::NOT_FOUND, "webhooks are not configured").into_response();
    };
    let m = &st.metrics;
    let reject = |code: StatusCode, msg: &str| {
        m.webhooks_rejected.fetch_add(1, Ordering::Relaxed);
        (code, Json(json!({"error": msg}))).into_response()
    };
    // Read on past the bound (a little) so that a sender still sending gets the answer rather
    // than a reset connection.
    let body: Bytes = match crate::server::read_body(body, cfg.body_max_bytes).await {
        Ok(b) => b,
        Err(_) => return reject(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let header_token = headers.get("x-verification-token").and_then(|v| v.to_str().ok());
    let body_token = parsed.as_ref().ok().and_then(|v| v.get("token")).and_then(Value::as_str);
    let given = header_token.or(body_token).unwrap_or("");
    if !token_ok(cfg.verification_token.expose(), given) {
        return reject(StatusCode::UNAUTHORIZED, "bad verification token");
    }
    let Ok(v) = parsed else {
        return reject(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    m.webhooks_received.fetch_add(1, Ordering::Relaxed);
    let hint = match idgraph_model::webhook_hint(&v) {
        Ok(Some(h)) => h,
        Ok(None) => return (StatusCode::ACCEPTED, Json(json!({"accepted": true, "queued": false}))).into_response(),
        Err(e) => return reject(StatusCode::BAD_REQUEST, &e),
    };
    if hint.at_ms.is_some_and(|t| t > idgraph_graph::now_ms() + FUTURE_SKEW_MS) {
        return reject(StatusCode::BAD_REQUEST, "the delivery's timestamp is in the future");
    }
    // A hint, not evidence: the contact is read from Drift before anything is recorded.
    let ops = st.ops.clone();
    let id = hint.contact_id;
    match tokio::task::spawn_blocking(move || ops.announce(&[id])).await {
        Ok(Ok(a)) => {
            m.webhooks_duplicates.fetch_add(a.already_queued as u64, Ordering::Relaxed);
            m.webhook_queue_depth.store(a.queue_len as i64, Ordering::Relaxed);
            (StatusCode::ACCEPTED, Json(json!({"accepted": true, "queued": a.queued > 0}))).into_response()
        }
        Ok(Err(e)) => reject(StatusCode::SERVICE_UNAVAILABLE, &e),
        Err(_) => reject(StatusCode::INTERNAL_SERVER_ERROR, "the webhook task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_ok("abc", "abc"));
        assert!(!token_ok("abc", "abd"));
        assert!(!token_ok("abc", "ab"));
    }
}
