//! `idgraph reassign`: move a leaver's contacts to active agents, locally or through a server,
//! showing the same plan either way (dry run unless `--apply`).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use idgraph_crawler::Crawler;
use idgraph_graph::reassign::{self, Job, JobState, Move};
use idgraph_graph::Graph;
use serde_json::{json, Value};

use super::common::{open_graph, remote_query};
use super::{DriftArgs, StoreArgs};
use crate::app::reassign::Jobs;
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
    /// List every move of the plan (by default the first 50 and a count of the rest).
    #[arg(long)]
    pub all: bool,
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

fn print_plan(lines: &[Line], total: usize, apply: bool, more: &str) {
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
        println!("  … and {} more ({more})", total - lines.len());
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
    settings.require_org()?;
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
            .take(if a.all { usize::MAX } else { SHOWN })
            .map(|m| Line {
                contact: label(m.contact_id, ix.contact_ref(m.contact_id).and_then(|c| c.email.as_deref())),
                from: label(m.from, email(m.from).as_deref()),
                to: label(m.to, email(m.to).as_deref()),
            })
            .collect();
        (moves, lines)
    };
    print_plan(&lines, moves.len(), a.apply, "--all lists every move");
    if !a.apply || moves.is_empty() {
        return Ok(());
    }
    let crawler = Crawler::new(settings.drift.crawl_config()?)?;
    // The same job as a server runs, kept in the store: a run that is killed resumes where it
    // was at the next `reassign --apply` (moves in doubt read from Drift first).
    let jobs = Jobs::open(graph.clone(), crawler, None)?;
    let job = jobs.submit(from, to, a.force)?;
    let bar = progress_bar(job.moves.len());
    let job = jobs.run(job.id, &|j: &Job| bar.set_position(finished(j) as u64)).await?;
    bar.finish_and_clear();
    job_summary(&job)
}

/// Moves of a job that are over (done, already done or failed).
fn finished(j: &Job) -> usize {
    let c = j.counts();
    c.done + c.already_done + c.failed
}

fn progress_bar(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(total as u64), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("  {bar:30} {pos}/{len} moves  {elapsed}, {eta} left") {
        bar.set_style(style);
    }
    bar
}

fn job_summary(job: &Job) -> Result<()> {
    let c = job.counts();
    let failed: Vec<String> = job.failures().map(|(id, e)| format!("contact {id}: {e}")).collect();
    if job.state == JobState::Stopped {
        summary(c.done, c.already_done, &failed)?;
        anyhow::bail!("the reassignment stopped: {}", job.reason.as_deref().unwrap_or("no reason given"));
    }
    summary(c.done, c.already_done, &failed)
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
    let q = "mutation($from: ID!, $to: [ID!]!, $dry: Boolean!, $force: Boolean!) { reassignContacts(fromAgentId: $from, toAgentIds: $to, dryRun: $dry, force: $force) { planned applied alreadyDone failed errors jobId moves { contactId fromAgentId toAgentId } } }";
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
    let shown: Vec<&Move> = moves.iter().take(if a.all { usize::MAX } else { SHOWN }).collect();
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
    let more = if a.all {
        "a server lists the first 1,000 moves; every move: `idgraph reassign --all --data-dir DIR` with the server stopped"
    } else {
        "--all lists every move"
    };
    print_plan(&lines, total, a.apply, more);
    if !a.apply || total == 0 {
        return Ok(());
    }
    eprintln!("  applying through {server} (each move goes through Drift's API under the crawl budget) …");
    let started =
        remote_query(server, token, q, json!({"from": from.to_string(), "to": to, "dry": false, "force": a.force}))
            .await?;
    let r: &Value = &started["reassignContacts"];
    let Some(job) = r["jobId"].as_str().map(String::from) else {
        let failed: Vec<String> = r["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default();
        return summary(
            r["applied"].as_u64().unwrap_or(0) as usize,
            r["alreadyDone"].as_u64().unwrap_or(0) as usize,
            &failed,
        );
    };
    eprintln!("  job {job}: the server carries it out; following it (Ctrl-C stops following, not the job)");
    let bar = progress_bar(r["planned"].as_u64().unwrap_or(0) as usize);
    let q = "query($id: ID!) { reassignment(id: $id) { state reason planned done alreadyDone failed errors } }";
    let j = loop {
        let d = remote_query(server, token, q, json!({"id": job})).await?;
        let j = d["reassignment"].clone();
        let n = |k: &str| j[k].as_u64().unwrap_or(0);
        bar.set_position(n("done") + n("alreadyDone") + n("failed"));
        if j["state"] != "RUNNING" {
            break j;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    bar.finish_and_clear();
    let failed: Vec<String> = j["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let n = |k: &str| j[k].as_u64().unwrap_or(0) as usize;
    summary(n("done"), n("alreadyDone"), &failed)?;
    if j["state"] == "STOPPED" {
        anyhow::bail!("the reassignment stopped: {}", j["reason"].as_str().unwrap_or("no reason given"));
    }
    Ok(())
}
