//! `idgraph reassign`: move a leaver's contacts to active agents, locally or through a server,
//! showing the same plan either way (dry run unless `--apply`).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use idgraph_crawler::Crawler;
use idgraph_graph::reassign::{self, Move};
use idgraph_graph::Graph;
use serde_json::{json, Value};

use super::common::{open_graph, remote_query};
use super::{DriftArgs, StoreArgs};
use crate::app::reassign::execute_moves;
use crate::app::settings::{Env, Settings};

#[derive(Args)]
pub struct ReassignArgs {
    /// The agent whose contacts move: an id or an email.
    #[arg(long)]
    pub from: String,
    /// The active agents who receive them (ids or emails), spread evenly.
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// Carry out the plan (without it, only show what would change).
    #[arg(long)]
    pub apply: bool,
    /// Move an ACTIVE agent's contacts too (refused without it: rarely what is meant).
    #[arg(long)]
    pub force: bool,
    /// Ask a running server (with its admin token) instead of using the data directory.
    #[arg(long, env = "IDGRAPH_SERVER")]
    pub server: Option<String>,
    #[arg(long, env = "IDGRAPH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub drift: DriftArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// How many moves a plan shows.
const SHOWN: usize = 50;

/// One line of a plan: the contact (id and email) and the agents (emails beside ids).
struct Line {
    contact: String,
    from: String,
    to: String,
}

fn label(id: u64, email: Option<&str>) -> String {
    match email {
        Some(e) => format!("{e} ({id})"),
        None => id.to_string(),
    }
}

fn print_plan(lines: &[Line], total: usize, apply: bool) {
    if total == 0 {
        println!("nothing left to move");
        return;
    }
    if apply {
        println!("moving {total} contacts:");
    } else {
        println!("dry run: {total} contacts would move (pass --apply to carry it out)");
    }
    for l in lines {
        println!("  contact {} : {} -> {}", l.contact, l.from, l.to);
    }
    if total > lines.len() {
        println!("  … and {} more", total - lines.len());
    }
}

pub async fn reassign(a: ReassignArgs) -> Result<()> {
    match a.server.clone() {
        Some(server) => remote(&a, &server).await,
        None => local(&a).await,
    }
}

fn resolve(graph: &Graph, key: &str) -> Result<u64> {
    idgraph_graph::audit::find_agent(graph, key).map(|a| a.id).with_context(|| format!("no agent {key:?} in the index"))
}

async fn local(a: &ReassignArgs) -> Result<()> {
    let settings = Settings::load(&a.drift.flags(a.store.flags()), &Env::from_process())?;
    let hint = "idgraph reassign --server {server} --admin-token ADMIN_TOKEN ...";
    let graph = Arc::new(open_graph(&settings.data_dir, hint, false)?);
    let from = resolve(&graph, &a.from)?;
    let to = a.to.iter().map(|t| resolve(&graph, t)).collect::<Result<Vec<_>>>()?;
    let (moves, lines) = {
        let ix = graph.read();
        reassign::check_source(&ix, from, a.force)?;
        let moves = reassign::plan(&ix, from, &to, None)?;
        let email = |id: u64| ix.agent_ref(id).and_then(|x| x.email.clone());
        let lines: Vec<Line> = moves
            .iter()
            .take(SHOWN)
            .map(|m| Line {
                contact: label(m.contact_id, ix.contact_ref(m.contact_id).and_then(|c| c.email.as_deref())),
                from: label(m.from, email(m.from).as_deref()),
                to: label(m.to, email(m.to).as_deref()),
            })
            .collect();
        (moves, lines)
    };
    print_plan(&lines, moves.len(), a.apply);
    if !a.apply || moves.is_empty() {
        return Ok(());
    }
    let crawler = Crawler::new(settings.drift.crawl_config()?)?;
    let every = (moves.len() / 20).max(1);
    let progress = move |done: usize, total: usize| {
        if done % every == 0 || done == total {
            eprintln!("  {done}/{total} moved");
        }
    };
    let out = execute_moves(&graph, &crawler, moves, &progress).await?;
    summary(
        out.applied,
        out.already_done,
        &out.failed.iter().map(|(id, e)| format!("contact {id}: {e}")).collect::<Vec<_>>(),
    )
}

fn summary(applied: usize, already: usize, failed: &[String]) -> Result<()> {
    println!("moved {applied} contacts ({already} already done, {} failed)", failed.len());
    for f in failed.iter().take(20) {
        println!("  {f}");
    }
    if !failed.is_empty() {
        anyhow::bail!("{} moves failed; rerun to retry them (done moves are not repeated)", failed.len());
    }
    Ok(())
}

/// An agent id from an id or an email, asking the server.
async fn remote_agent(server: &str, token: Option<&str>, key: &str) -> Result<(u64, Option<String>)> {
    let (q, vars) = match key.trim().parse::<u64>() {
        Ok(id) => ("query($id: ID) { agent(id: $id) { id email } }", json!({"id": id.to_string()})),
        Err(_) => ("query($e: String) { agent(email: $e) { id email } }", json!({"e": key})),
    };
    let d = remote_query(server, token, q, vars).await?;
    let id = d["agent"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no agent {key:?} on the server"))?;
    Ok((id, d["agent"]["email"].as_str().map(String::from)))
}

async fn remote(a: &ReassignArgs, server: &str) -> Result<()> {
    let token = a.admin_token.as_deref();
    let (from, from_email) = remote_agent(server, token, &a.from).await?;
    let mut emails: HashMap<u64, Option<String>> = HashMap::from([(from, from_email)]);
    let mut to = Vec::new();
    for t in &a.to {
        let (id, e) = remote_agent(server, token, t).await?;
        emails.insert(id, e);
        to.push(id.to_string());
    }
    let q = "mutation($from: ID!, $to: [ID!]!, $dry: Boolean!, $force: Boolean!) { reassignContacts(fromAgentId: $from, toAgentIds: $to, dryRun: $dry, force: $force) { planned applied alreadyDone failed errors moves { contactId fromAgentId toAgentId } } }";
    let plan =
        remote_query(server, token, q, json!({"from": from.to_string(), "to": to, "dry": true, "force": a.force}))
            .await?;
    let plan = &plan["reassignContacts"];
    let moves: Vec<Move> = plan["moves"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    let id = |k: &str| m[k].as_str().and_then(|s| s.parse::<u64>().ok());
                    Some(Move { contact_id: id("contactId")?, from: id("fromAgentId")?, to: id("toAgentId")? })
                })
                .collect()
        })
        .unwrap_or_default();
    let shown: Vec<&Move> = moves.iter().take(SHOWN).collect();
    let ids: Vec<String> = shown.iter().map(|m| m.contact_id.to_string()).collect();
    let contacts =
        remote_query(server, token, "query($i: [ID!]!) { contactsByIds(ids: $i) { email } }", json!({"i": ids}))
            .await?;
    let contact_emails: Vec<Option<String>> = contacts["contactsByIds"]
        .as_array()
        .map(|a| a.iter().map(|c| c["email"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let lines: Vec<Line> = shown
        .iter()
        .enumerate()
        .map(|(i, m)| Line {
            contact: label(m.contact_id, contact_emails.get(i).and_then(|e| e.as_deref())),
            from: label(m.from, emails.get(&m.from).and_then(|e| e.as_deref())),
            to: label(m.to, emails.get(&m.to).and_then(|e| e.as_deref())),
        })
        .collect();
    let total = plan["planned"].as_u64().unwrap_or(0) as usize;
    print_plan(&lines, total, a.apply);
    if !a.apply || total == 0 {
        return Ok(());
    }
    eprintln!("  applying through {server} (each move goes through Drift's API under the crawl budget) …");
    let done =
        remote_query(server, token, q, json!({"from": from.to_string(), "to": to, "dry": false, "force": a.force}))
            .await?;
    let r: &Value = &done["reassignContacts"];
    let failed: Vec<String> = r["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    summary(r["applied"].as_u64().unwrap_or(0) as usize, r["alreadyDone"].as_u64().unwrap_or(0) as usize, &failed)
}
