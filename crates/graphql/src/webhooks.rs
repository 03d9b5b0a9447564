//! `POST /webhooks/drift`: verified in constant time, bounded, answered at once, queued with a
//! bound and applied in batches, idempotent by event id.
//!
//! Drift's deliveries carry no id, are neither ordered nor deduplicated. The event id is the
//! SHA-256 of the delivery body, so a duplicate delivery is applied once; ordering comes from the
//! record's own timestamp, checked by the graph, so a late delivery never rolls a contact back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idgraph_graph::{Event, Graph, Update, Via};
use idgraph_model::{Secret, WebhookChange};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use crate::server::AppState;
use crate::Metrics;

/// Webhook settings.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub verification_token: Secret,
    /// Events waiting to be applied before deliveries are refused with 503.
    pub queue_max: usize,
    /// Events applied in one batch.
    pub batch_max: usize,
    pub body_max_bytes: usize,
}

impl WebhookConfig {
    pub fn new(token: impl Into<String>) -> Self {
        WebhookConfig {
            verification_token: Secret::new(token),
            queue_max: 10_000,
            batch_max: 500,
            body_max_bytes: 256 * 1024,
        }
    }
}

pub(crate) fn start_applier(graph: Arc<Graph>, metrics: Arc<Metrics>, cfg: &WebhookConfig) -> mpsc::Sender<Event> {
    let (tx, mut rx) = mpsc::channel::<Event>(cfg.queue_max.max(1));
    let batch_max = cfg.batch_max.max(1);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            // Gather what arrived meanwhile, up to the batch bound, after a short pause.
            tokio::time::sleep(Duration::from_millis(20)).await;
            while batch.len() < batch_max {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            metrics.webhook_queue_depth.fetch_sub(batch.len() as i64, Ordering::Relaxed);
            let g = graph.clone();
            match tokio::task::spawn_blocking(move || g.apply(batch)).await {
                Ok(Ok(r)) => {
                    metrics.webhooks_applied.fetch_add(r.applied as u64, Ordering::Relaxed);
                    metrics.webhooks_duplicates.fetch_add(r.duplicates as u64, Ordering::Relaxed);
                    tracing::debug!(?r, "applied a webhook batch");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "a webhook batch could not be applied"),
                Err(e) => tracing::error!(error = %e, "the webhook applier panicked"),
            }
        }
    });
    tx
}

fn token_ok(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Turns a delivery into an update of the graph; `None` for events that change nothing idgraph
/// keeps. Reading Drift's shapes is the model's; this only maps.
pub(crate) fn to_update(body: &Value) -> Result<Option<Update>, String> {
    Ok(idgraph_model::webhook_change(body)?.map(|c| match c {
        WebhookChange::Upsert(c) => Update::Upsert(c),
        WebhookChange::SetOwner { id, owner, at_ms } => Update::SetOwner { id, owner, at_ms },
    }))
}

pub(crate) async fn receive(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (Some(cfg), Some(tx)) = (&st.webhook, &st.webhook_tx) else {
        return (StatusCode::NOT_FOUND, "webhooks are not configured").into_response();
    };
    let m = &st.metrics;
    let reject = |code: StatusCode, msg: &str| {
        m.webhooks_rejected.fetch_add(1, Ordering::Relaxed);
        (code, Json(json!({"error": msg}))).into_response()
    };
    if body.len() > cfg.body_max_bytes {
        return reject(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
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
    let update = match to_update(&v) {
        Ok(Some(u)) => u,
        Ok(None) => return (StatusCode::ACCEPTED, Json(json!({"accepted": true, "applied": false}))).into_response(),
        Err(e) => return reject(StatusCode::BAD_REQUEST, &e),
    };
    let id = hex::encode(&Sha256::digest(&body)[..16]);
    match tx.try_send(Event { id: Some(id), update, via: Via::Webhook }) {
        Ok(()) => {
            m.webhook_queue_depth.fetch_add(1, Ordering::Relaxed);
            (StatusCode::ACCEPTED, Json(json!({"accepted": true}))).into_response()
        }
        Err(_) => reject(StatusCode::SERVICE_UNAVAILABLE, "queue full, retry later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_map_to_graph_updates() {
        // Reading Drift's shapes is tested in the model; here, only the mapping.
        let v = json!({"type": "contact_updated", "data": {"endUserId": 5, "timestamp": 9,
            "diff": [{"name": "ownerId", "updated": 2}]}});
        assert_eq!(to_update(&v).unwrap(), Some(Update::SetOwner { id: 5, owner: Some(2), at_ms: 9 }));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_ok("abc", "abc"));
        assert!(!token_ok("abc", "abd"));
        assert!(!token_ok("abc", "ab"));
    }
}
