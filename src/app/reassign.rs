//! Reassignment: moves through Drift's `PATCH /contacts/{id}`, under the crawl budget, each
//! recorded in the graph (and its history) as soon as Drift accepts it, so a crash loses nothing
//! and a rerun redoes nothing.

use std::sync::Arc;

use anyhow::{Context, Result};
use idgraph_crawler::Crawler;
use idgraph_graph::reassign::{Move, Outcome};
use idgraph_graph::{now_ms, Event, Graph, Update, Via};
use idgraph_model::Contact;
use reqwest::Method;

/// Applies moves through Drift and into the graph; `progress` is told after each.
pub async fn execute_moves(
    graph: &Arc<Graph>,
    crawler: &Crawler,
    moves: Vec<Move>,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Result<Outcome> {
    let mut out = Outcome { dry_run: false, ..Default::default() };
    let base = crawler.config().drift_url.trim_end_matches('/').to_string();
    for (i, m) in moves.iter().enumerate() {
        progress(i, moves.len());
        // The graph may have moved on (a webhook, a concurrent run): skip what is done already.
        if graph.read().contact(m.contact_id).and_then(|c| c.owner_id) != Some(m.from) {
            out.already_done += 1;
            continue;
        }
        let body = serde_json::json!({"attributes": {"ownerId": m.to}});
        let url = format!("{base}/contacts/{}", m.contact_id);
        let reply = match crawler.client().request(Method::PATCH, &url, Some(&body)).await {
            Ok(r) => r,
            Err(e) => {
                out.failed.push((m.contact_id, e.to_string()));
                continue;
            }
        };
        if reply.status.as_u16() == 404 {
            out.failed.push((m.contact_id, "the contact no longer exists in Drift".into()));
            continue;
        }
        let at_ms = reply
            .body
            .get("data")
            .and_then(|d| Contact::from_json(d).ok())
            .map(|c| c.updated_at)
            .filter(|t| *t > 0)
            .unwrap_or_else(now_ms);
        let ev = Event {
            id: Some(format!("reassign:{}:{}:{}", m.contact_id, m.to, at_ms)),
            update: Update::SetOwner { id: m.contact_id, owner: Some(m.to), at_ms },
            via: Via::Reassignment,
        };
        let g = graph.clone();
        tokio::task::spawn_blocking(move || g.apply(vec![ev]))
            .await
            .context("the graph update task failed")?
            .context("the graph could not record the move")?;
        out.applied += 1;
    }
    progress(moves.len(), moves.len());
    out.moves = moves;
    Ok(out)
}
