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
    #[arg(long, conflicts_with_all = ["all", "person"], required_unless_present_any = ["all", "person"])]
    pub agent: Option<String>,
    /// Audit every gone or deactivated agent who still owns something.
    #[arg(long, conflicts_with = "person")]
    pub all: bool,
    /// One person across every org (by email): the agent they are in each, and the contacts
    /// their leaving orphaned there (format table, csv or json).
    #[arg(long)]
    pub person: Option<String>,
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
    if let Some(email) = &a.person {
        let p = match &a.remote.server {
            Some(server) => person_remote(server, a.remote.token.as_deref(), email).await?,
            None => person_local(&a.store, email)?,
        };
        let out = match a.format {
            Format::Table => p.table(),
            Format::Csv => p.csv(),
            Format::Json => serde_json::to_string_pretty(&p)? + "\n",
            _ => anyhow::bail!("--person writes table, csv or json"),
        };
        return print_out(&out);
    }
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

/// One person across orgs: the agent they are in each, and what they own there.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PersonAudit {
    pub email: String,
    pub agents: Vec<PersonInOrg>,
    /// Orgs that could not be read (no index yet, or failing).
    pub unavailable: Vec<String>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonInOrg {
    pub org: String,
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub departed_at: Option<String>,
    pub deactivated_at: Option<String>,
    pub contacts: u64,
    pub orphans: u64,
    pub orphan_reason: Option<String>,
    /// The contacts they own there (all of them when they are orphans).
    pub owned: Vec<OwnedContact>,
    /// Contacts owned beyond those listed (a server lists at most 1,000 an org).
    #[serde(default)]
    pub not_listed: u64,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OwnedContact {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
}

impl PersonAudit {
    fn orphans(&self) -> u64 {
        self.agents.iter().map(|a| a.orphans).sum()
    }

    fn table(&self) -> String {
        let mut t = format!(
            "person {}: an agent in {} org(s), {} orphaned contact(s)\n\n",
            self.email,
            self.agents.len(),
            self.orphans()
        );
        t += &format!(
            "{:<16} {:>12}  {:<12} {:<25} {:>9} {:>8}\n",
            "ORG", "AGENT", "STATUS", "GONE", "CONTACTS", "ORPHANS"
        );
        for a in &self.agents {
            let gone = a.departed_at.as_deref().or(a.deactivated_at.as_deref()).unwrap_or("-");
            t += &format!(
                "{:<16} {:>12}  {:<12} {:<25} {:>9} {:>8}\n",
                a.org, a.id, a.status, gone, a.contacts, a.orphans
            );
        }
        for u in &self.unavailable {
            t += &format!("{u:<16} (not read: no index loaded)\n");
        }
        let orphaned: Vec<&PersonInOrg> = self.agents.iter().filter(|a| a.orphans > 0).collect();
        if !orphaned.is_empty() {
            t += "\nORG              CONTACT       EMAIL                                    NAME\n";
            for a in orphaned {
                for c in &a.owned {
                    t += &format!(
                        "{:<16} {:>12}  {:<40} {}\n",
                        a.org,
                        c.id,
                        c.email.as_deref().unwrap_or("-"),
                        c.name.as_deref().unwrap_or("-")
                    );
                }
                if a.not_listed > 0 {
                    t += &format!(
                        "{:<16} … and {} more (idgraph export orphans --org {})\n",
                        a.org, a.not_listed, a.org
                    );
                }
            }
        }
        t
    }

    fn csv(&self) -> String {
        let q = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut t = String::from("org,agent_id,agent_status,reason,contact_id,contact_email,contact_name\n");
        for a in self.agents.iter().filter(|a| a.orphans > 0) {
            for c in &a.owned {
                t += &format!(
                    "{},{},{},{},{},{},{}\n",
                    q(&a.org),
                    a.id,
                    a.status,
                    a.orphan_reason.as_deref().unwrap_or(""),
                    c.id,
                    q(c.email.as_deref().unwrap_or("")),
                    q(c.name.as_deref().unwrap_or(""))
                );
            }
        }
        t
    }
}

/// Asks a server's `person(email:)`.
async fn person_remote(server: &str, token: Option<&str>, email: &str) -> Result<PersonAudit> {
    let q = "query($e: String!) { person(email: $e) { email unavailable agents { org id name status departedAt \
             deactivatedAt contacts orphans orphanReason owned(first: 1000) { id email name } } } }";
    let d = remote_query(server, token, q, serde_json::json!({"e": email})).await?;
    let mut p: PersonAudit = serde_json::from_value(d.get("person").cloned().unwrap_or_default())
        .context("the server's person has an unexpected shape")?;
    for a in &mut p.agents {
        a.not_listed = a.contacts.saturating_sub(a.owned.len() as u64);
    }
    Ok(p)
}

/// Reads every org's store (or the only one) of the configuration.
fn person_local(store: &StoreArgs, email: &str) -> Result<PersonAudit> {
    use crate::app::settings::{Env, Flags, Settings};
    let flags = Flags { org: None, ..store.flags() };
    let env = Env::from_process();
    let mut orgs: Vec<(String, std::path::PathBuf)> = Settings::load_orgs(&flags, &env)?
        .into_iter()
        .filter(|s| store.org.is_none() || s.org == store.org)
        .filter_map(|s| s.org.clone().map(|o| (o, s.data_dir)))
        .collect();
    if orgs.is_empty() {
        orgs.push(("default".into(), Settings::load(&flags, &env)?.data_dir));
    }
    let email = email.trim().to_lowercase();
    let mut p = PersonAudit { email: email.clone(), ..PersonAudit::default() };
    for (org, dir) in orgs {
        let hint = format!("idgraph audit --person {email} --server {{server}} --token READ_TOKEN");
        let graph = open_graph_to_read(&dir, &hint).with_context(|| format!("org {org}"))?;
        if graph.info().is_none() {
            p.unavailable.push(org);
            continue;
        }
        let ix = graph.read();
        for a in ix.agents_by_email(&email) {
            let reason = a.status.orphans();
            let contacts = ix.contact_count_of(a.id);
            let owned = if reason.is_some() {
                ix.owned_contact_ids(a.id)
                    .into_iter()
                    .filter_map(|id| ix.contact_ref(id))
                    .map(|c| OwnedContact { id: c.id.to_string(), email: c.email.clone(), name: c.name.clone() })
                    .collect()
            } else {
                Vec::new()
            };
            p.agents.push(PersonInOrg {
                org: org.clone(),
                id: a.id.to_string(),
                name: a.name.clone(),
                status: a.status.name().to_string(),
                departed_at: a.departed_at_ms.map(rfc3339),
                deactivated_at: a.deactivated_at_ms.map(rfc3339),
                contacts: contacts as u64,
                orphans: if reason.is_some() { contacts as u64 } else { 0 },
                orphan_reason: reason.map(|r| idgraph_graph::export::reason_name(r).to_string()),
                owned,
                not_listed: 0,
            });
        }
    }
    Ok(p)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default()
}
