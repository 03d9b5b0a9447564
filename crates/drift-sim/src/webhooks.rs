//! Webhooks out: events queued with a bound, sent by one task, optionally duplicated and reordered.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::WebhookConfig;
use crate::State;

/// How many events wait to be sent before new ones are dropped (a simulator may lose webhooks, as
/// Drift may).
const QUEUE_MAX: usize = 10_000;

pub(crate) enum Event {
    ContactIdentified(Value),
    ContactUpdated { contact_id: u64, timestamp: i64, diff: Vec<Value> },
    NewConversation { conversation_id: u64, contact_id: u64, timestamp: i64 },
}

pub(crate) struct Outbox {
    tx: mpsc::Sender<Value>,
}

impl Outbox {
    pub fn start(cfg: WebhookConfig, seed: u64) -> Outbox {
        let (tx, mut rx) = mpsc::channel::<Value>(QUEUE_MAX);
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            let mut held: Option<Value> = None;
            while let Some(ev) = rx.recv().await {
                let mut batch = Vec::new();
                if cfg.reorder_rate > 0.0 && held.is_none() && rng.random_bool(cfg.reorder_rate.min(1.0)) {
                    held = Some(ev);
                    continue;
                }
                batch.push(ev);
                if let Some(h) = held.take() {
                    batch.push(h);
                }
                for ev in batch {
                    let times =
                        if cfg.duplicate_rate > 0.0 && rng.random_bool(cfg.duplicate_rate.min(1.0)) { 2 } else { 1 };
                    for _ in 0..times {
                        for url in &cfg.urls {
                            let _ = client
                                .post(url)
                                .header("X-Verification-Token", &cfg.verification_token)
                                .json(&ev)
                                .send()
                                .await;
                        }
                    }
                }
            }
        });
        Outbox { tx }
    }
}

impl State {
    pub(crate) fn emit(&self, ev: Event) {
        let Some(out) = &self.webhooks else {
            return;
        };
        let (kind, data) = match ev {
            Event::ContactIdentified(c) => ("contact_identified", c),
            Event::ContactUpdated { contact_id, timestamp, diff } => (
                "contact_updated",
                json!({"endUserId": contact_id, "timestamp": timestamp, "orgId": self.cfg.org_id, "diff": diff}),
            ),
            Event::NewConversation { conversation_id, contact_id, timestamp } => (
                "new_conversation",
                json!({"id": conversation_id, "contactId": contact_id, "createdAt": timestamp, "orgId": self.cfg.org_id}),
            ),
        };
        let body = json!({"type": kind, "token": self.cfg.webhooks.verification_token, "orgId": self.cfg.org_id, "data": data});
        if out.tx.try_send(body).is_ok() {
            self.stats.webhooks_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}
