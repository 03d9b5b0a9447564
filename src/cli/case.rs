//! `idgraph case list|open|export|verify`: offboarding cases from a running server (or a data
//! directory), and a bundle checked offline.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use idgraph_cases::{Case, CaseState};

use super::common::{open_graph_to_read, print_out, remote_query};
use super::{ServerOrStore as Source, StoreArgs};

#[derive(Subcommand)]
pub enum CaseCommand {
    /// One line per case: its id, the agent's email, the state (overdue first).
    List(ListArgs),
    /// Open a case by hand for an agent (by email or id), freezing what it holds now.
    Open(OpenArgs),
    /// Write a case's bundle: one self-contained HTML file (the view, the items as JSON and
    /// CSV, the chain) that `idgraph case verify` checks offline.
    Export(ExportArgs),
    /// Check a bundle offline: exit 0 when its chain and items hold, non-zero naming the first
    /// entry that does not.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// open, decided, carried-out or signed-off.
    #[arg(long)]
    pub state: Option<String>,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Args)]
pub struct OpenArgs {
    pub agent: String,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Args)]
pub struct ExportArgs {
    pub id: u64,
    #[arg(long)]
    pub to: PathBuf,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Args)]
pub struct VerifyArgs {
    pub path: PathBuf,
}

/// Every case of a data directory (read from a private copy when a server holds it).
fn stored_cases(store: &StoreArgs) -> Result<Vec<Case>> {
    let dir = super::common::data_dir(store)?;
    let graph = open_graph_to_read(&dir, "ask the server instead: --server URL --token T")?;
    let mut v: Vec<Case> =
        graph.states_under("case/")?.into_iter().filter_map(|(_, v)| serde_json::from_value(v).ok()).collect();
    v.sort_by_key(|c| std::cmp::Reverse(c.id));
    Ok(v)
}

const CASE_FIELDS: &str = "id agent { id email } state openedAt dueAt overdue totalItems";

pub async fn case(c: CaseCommand) -> Result<()> {
    match c {
        CaseCommand::List(a) => {
            let state = match a.state.as_deref() {
                Some(s) => Some(
                    CaseState::from_cli(s)
                        .with_context(|| format!("--state {s:?}: open, decided, carried-out or signed-off"))?,
                ),
                None => None,
            };
            let mut out = String::new();
            match &a.source.server {
                Some(server) => {
                    let q = format!("query($state: CaseState) {{ cases(state: $state, first: 100) {{ edges {{ node {{ {CASE_FIELDS} }} }} }} }}");
                    let st = state.map(|s| serde_json::to_value(s).unwrap_or_default());
                    let d =
                        remote_query(server, a.source.token.as_deref(), &q, serde_json::json!({ "state": st })).await?;
                    for e in d["cases"]["edges"].as_array().into_iter().flatten() {
                        let n = &e["node"];
                        let st = n["state"].as_str().unwrap_or("?").to_ascii_lowercase().replace('_', "-");
                        out.push_str(&format!(
                            "{}\t{}\t{}\t{} items\tdue {}{}\n",
                            n["id"].as_str().unwrap_or("?"),
                            n["agent"]["email"].as_str().unwrap_or("-"),
                            st,
                            n["totalItems"],
                            n["dueAt"].as_str().unwrap_or("-"),
                            if n["overdue"] == true { "\tOVERDUE" } else { "" }
                        ));
                    }
                }
                None => {
                    let now = chrono::Utc::now().timestamp_millis();
                    for c in stored_cases(&a.source.store)?.into_iter().filter(|c| state.is_none_or(|s| c.state == s)) {
                        out.push_str(&format!(
                            "{}\t{}\t{}\t{} items\tdue {}{}\n",
                            c.id,
                            c.agent.email.as_deref().unwrap_or("-"),
                            c.state.cli_name(),
                            c.items.len(),
                            chrono::DateTime::from_timestamp_millis(c.due_at_ms)
                                .map(|t| t.to_rfc3339())
                                .unwrap_or_default(),
                            if c.overdue(now) { "\tOVERDUE" } else { "" }
                        ));
                    }
                }
            }
            print_out(&out)
        }
        CaseCommand::Open(a) => {
            let server = a.source.server.as_deref().context(
                "a case is opened by the running server (it freezes what the agent holds now): give --server URL --token T",
            )?;
            let q = format!("mutation($agent: String!) {{ openCase(agent: $agent) {{ {CASE_FIELDS} }} }}");
            let d =
                remote_query(server, a.source.token.as_deref(), &q, serde_json::json!({ "agent": a.agent })).await?;
            let n = &d["openCase"];
            print_out(&format!(
                "{}\t{}\topen\t{} items\n",
                n["id"].as_str().unwrap_or("?"),
                n["agent"]["email"].as_str().unwrap_or("-"),
                n["totalItems"]
            ))
        }
        CaseCommand::Export(a) => {
            let html = match &a.source.server {
                Some(server) => {
                    let url = format!("{}/cases/{}/bundle", server.trim_end_matches('/'), a.id);
                    let mut req = reqwest::Client::new().get(&url);
                    if let Some(t) = &a.source.token {
                        req = req.bearer_auth(t);
                    }
                    let r = req.send().await.with_context(|| format!("cannot reach {url}"))?;
                    if !r.status().is_success() {
                        let status = r.status();
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        anyhow::bail!(
                            "the server refused ({status}): {}",
                            body["errors"][0]["message"].as_str().unwrap_or("?")
                        );
                    }
                    r.text().await?
                }
                None => {
                    let c = stored_cases(&a.source.store)?
                        .into_iter()
                        .find(|c| c.id == a.id)
                        .with_context(|| format!("no case {}", a.id))?;
                    idgraph_cases::bundle::render(&c)
                }
            };
            std::fs::write(&a.to, html).with_context(|| format!("cannot write {}", a.to.display()))?;
            eprintln!(
                "Wrote case {} to {} (check it with `idgraph case verify {}`).",
                a.id,
                a.to.display(),
                a.to.display()
            );
            Ok(())
        }
        CaseCommand::Verify(a) => {
            let html = std::fs::read_to_string(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
            match idgraph_cases::bundle::verify(&html) {
                Ok(c) => print_out(&format!(
                    "Case {} holds: {} events chained, {} items as the chain says; state {}.\n",
                    c.id,
                    c.events.len(),
                    c.items.len(),
                    c.state.cli_name()
                )),
                Err(e) => anyhow::bail!("{}: {e}", a.path.display()),
            }
        }
    }
}
