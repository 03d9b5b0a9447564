//! `idgraph audit`: one agent's offboarding audit, or the org's, from a server or a data
//! directory, in the format asked for.

use anyhow::{Context, Result};
use clap::Args;

use idgraph_graph::audit::render::{render, Format as TextFormat};
use idgraph_graph::audit::ReportDoc;

use super::common::{data_dir, open_graph_to_read, print_out, remote_query};
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
    /// With `--format html`: how many orphans the file lists (the rest are in the CSV).
    #[arg(long, default_value_t = 2000)]
    pub html_orphans: usize,
    #[command(flatten)]
    pub remote: ServerArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    #[value(alias = "md")]
    Markdown,
    /// One self-contained HTML file: charts, the agent's graph, tables, digest and evidence.
    Html,
}

pub async fn audit(a: AuditArgs) -> Result<()> {
    // The HTML report of the org draws the timeline too.
    let timeline = a.format == Format::Html && a.all;
    let (doc, timeline) = match &a.remote.server {
        Some(server) => {
            let q = "query($agent: String, $all: Boolean, $t: Boolean!) { auditReport(agent: $agent, all: $all) \
                     auditTimeline @include(if: $t) }";
            let vars = serde_json::json!({"agent": a.agent, "all": a.all, "t": timeline});
            let d = remote_query(server, a.remote.token.as_deref(), q, vars).await?;
            let r = d.get("auditReport").cloned().unwrap_or_default();
            let doc: ReportDoc =
                serde_json::from_value(r).context("the server's audit report has an unexpected shape")?;
            (doc, d.get("auditTimeline").cloned())
        }
        None => {
            let dir = data_dir(&a.store)?;
            let what = a.agent.as_ref().map(|x| format!("--agent {x}")).unwrap_or_else(|| "--all".into());
            let hint = format!("idgraph audit {what} --server {{server}} --token READ_TOKEN");
            let graph = open_graph_to_read(&dir, &hint)?;
            if graph.info().is_none() {
                anyhow::bail!("no index in {} yet: run `idgraph crawl` first", dir.display());
            }
            let doc = idgraph_graph::audit::report(&graph, a.agent.as_deref(), a.all)?;
            let t = if timeline {
                Some(serde_json::to_value(idgraph_graph::audit::timeline::timeline(&graph, 120)?)?)
            } else {
                None
            };
            (doc, t)
        }
    };
    let out = match a.format {
        Format::Html => html(doc, timeline, a.html_orphans),
        Format::Table => render(&doc, TextFormat::Table)?,
        Format::Csv => render(&doc, TextFormat::Csv)?,
        Format::Json => render(&doc, TextFormat::Json)?,
        Format::Markdown => render(&doc, TextFormat::Markdown)?,
    };
    // `| head` closes the pipe early: that ends the report quietly, not with a panic.
    print_out(&out)
}

/// The report as one self-contained HTML file (the audit page's code, its data inline).
fn html(doc: ReportDoc, timeline: Option<serde_json::Value>, orphans: usize) -> String {
    let title = match doc.kind.as_str() {
        "agent" => {
            let a = &doc.report["agent"];
            let who = a["email"].as_str().map(str::to_string).unwrap_or_else(|| format!("agent {}", a["id"]));
            format!("Offboarding audit: {who}")
        }
        _ => "Org offboarding audit".to_string(),
    };
    let key = if doc.kind == "agent" { "agent" } else { "org" };
    let data = serde_json::json!({ key: doc.into_json(Some(orphans)), "timeline": timeline });
    idgraph_web::audit_report_html(&title, &data)
}
