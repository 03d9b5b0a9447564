//! `idgraph audit`: one agent's offboarding audit, or the org's, from a server or a data
//! directory, in the format asked for.

use anyhow::Result;
use clap::Args;

use super::audit_render::{render, Doc, Format};
use super::common::{data_dir, open_graph, print_out, remote_query};
use super::{ServerArgs, StoreArgs};

#[derive(Args)]
pub struct AuditArgs {
    /// The agent to audit: a Drift user id or an email.
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    pub agent: Option<String>,
    /// Audit every gone or deactivated agent who still owns something.
    #[arg(long)]
    pub all: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub remote: ServerArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn audit(a: AuditArgs) -> Result<()> {
    let doc = match &a.remote.server {
        Some(server) => {
            let q = "query($agent: String, $all: Boolean) { auditReport(agent: $agent, all: $all) }";
            let d =
                remote_query(server, a.remote.token.as_deref(), q, serde_json::json!({"agent": a.agent, "all": a.all}))
                    .await?;
            let r = d.get("auditReport").cloned().unwrap_or_default();
            Doc {
                kind: r.get("kind").and_then(|k| k.as_str()).unwrap_or("org").to_string(),
                digest: r.get("digest").and_then(|k| k.as_str()).unwrap_or_default().to_string(),
                report: r.get("report").cloned().unwrap_or_default(),
            }
        }
        None => {
            let dir = data_dir(&a.store)?;
            let what = a.agent.as_ref().map(|x| format!("--agent {x}")).unwrap_or_else(|| "--all".into());
            let hint = format!("idgraph audit {what} --server {{server}} --token READ_TOKEN");
            let graph = open_graph(&dir, &hint, false)?;
            if graph.info().is_none() {
                anyhow::bail!("no index in {} yet: run `idgraph crawl` first", dir.display());
            }
            let r = idgraph_graph::audit::report(&graph, a.agent.as_deref(), a.all)?;
            Doc { kind: r.kind, digest: r.digest, report: r.report }
        }
    };
    // `| head` closes the pipe early: that ends the report quietly, not with a panic.
    print_out(&render(&doc, a.format)?)
}
