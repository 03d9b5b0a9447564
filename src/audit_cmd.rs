//! `idgraph audit`: renders audit reports as a table, CSV, JSON or Markdown.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use idgraph_graph::audit::{AgentAudit, OrgAudit, OrphanRow};
use idgraph_graph::{AgentStatus, OrphanReason};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Markdown,
}

/// A report as fetched: `{kind, report, digest}`.
pub struct Doc {
    pub kind: String,
    pub report: Value,
    pub digest: String,
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn status(s: AgentStatus) -> String {
    idgraph_graph::audit::status_label(s)
}

fn reason(r: OrphanReason) -> &'static str {
    match r {
        OrphanReason::OwnerDeactivated => "OWNER_DEACTIVATED",
        OrphanReason::OwnerDeparted => "OWNER_DEPARTED",
        OrphanReason::OwnerUnknown => "OWNER_UNKNOWN",
    }
}

/// One CSV cell: quoted when needed, and defused when a spreadsheet would read it as a formula.
fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

const CSV_HEADER: &str =
    "contact_id,contact_email,contact_name,owner_id,owner_email,owner_name,owner_status,reason,owner_gone_at";

fn csv_row(r: &OrphanRow) -> String {
    [
        r.contact_id.to_string(),
        r.contact_email.clone().unwrap_or_default(),
        r.contact_name.clone().unwrap_or_default(),
        r.owner_id.to_string(),
        r.owner_email.clone().unwrap_or_default(),
        r.owner_name.clone().unwrap_or_default(),
        status(r.owner_status),
        reason(r.reason).to_string(),
        when(r.owner_gone_at_ms),
    ]
    .iter()
    .map(|c| cell(c))
    .collect::<Vec<_>>()
    .join(",")
}

fn agent_rows(a: &AgentAudit) -> Vec<OrphanRow> {
    let Some(r) = a.orphan_reason else {
        return Vec::new();
    };
    a.orphaned_contacts
        .iter()
        .map(|c| OrphanRow {
            contact_id: c.id,
            contact_email: c.email.clone(),
            contact_name: c.name.clone(),
            owner_id: a.agent.id,
            owner_email: a.agent.email.clone(),
            owner_name: a.agent.name.clone(),
            owner_status: a.agent.status,
            reason: r,
            owner_gone_at_ms: a.agent.departed_at_ms.or(a.agent.deactivated_at_ms),
        })
        .collect()
}

pub fn render(doc: &Doc, format: Format) -> Result<String> {
    if format == Format::Json {
        let v = serde_json::json!({"kind": doc.kind, "digest": doc.digest, "report": doc.report});
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    match doc.kind.as_str() {
        "agent" => {
            let a: AgentAudit =
                serde_json::from_value(doc.report.clone()).context("the agent report has an unexpected shape")?;
            Ok(render_agent(&a, &doc.digest, format))
        }
        _ => {
            let o: OrgAudit =
                serde_json::from_value(doc.report.clone()).context("the org report has an unexpected shape")?;
            Ok(render_org(&o, &doc.digest, format))
        }
    }
}

fn render_agent(a: &AgentAudit, digest: &str, format: Format) -> String {
    let rows = agent_rows(a);
    let name = a.agent.name.clone().unwrap_or_else(|| "(no name)".into());
    let email = a.agent.email.clone().unwrap_or_else(|| "(no email)".into());
    let timeline: Vec<String> = a.timeline.iter().map(|e| format!("{} {}", e.status, when(Some(e.at_ms)))).collect();
    let e = &a.evidence;
    match format {
        Format::Csv => {
            let mut out = String::from(CSV_HEADER);
            out.push('\n');
            for r in &rows {
                out.push_str(&csv_row(r));
                out.push('\n');
            }
            out
        }
        Format::Markdown => {
            let mut out = format!("# Offboarding audit: {name} <{email}> (id {})\n\n", a.agent.id);
            out.push_str(&format!("| | |\n|---|---|\n| Status | {} |\n", status(a.agent.status)));
            out.push_str(&format!("| Timeline | {} |\n", timeline.join("; ")));
            out.push_str(&format!("| Owns now | {} contacts, {} accounts |\n", a.contacts_now, a.accounts_now));
            if let Some(n) = a.contacts_at_departure {
                out.push_str(&format!("| Owned when it went | {n} contacts |\n"));
            }
            out.push_str(&format!("| Reassigned since | {} contacts |\n", a.reassigned_since.len()));
            out.push_str(&format!(
                "| Evidence | generation {}, crawl finished {}, agents refreshed {}, data age {}s, SCIM {} |\n",
                e.generation,
                when(Some(e.crawl_finished_at_ms)),
                when(Some(e.agents_refreshed_at_ms)),
                e.data_age_s,
                if e.scim_available { "yes" } else { "no" }
            ));
            out.push_str(&format!("| Digest | sha256:{digest} |\n\n"));
            if !rows.is_empty() {
                out.push_str("## Orphaned contacts\n\n| contact_id | email | name | reason |\n|---|---|---|---|\n");
                for r in &rows {
                    out.push_str(&format!(
                        "| {} | {} | {} | {} |\n",
                        r.contact_id,
                        r.contact_email.as_deref().unwrap_or(""),
                        r.contact_name.as_deref().unwrap_or(""),
                        reason(r.reason)
                    ));
                }
            }
            out
        }
        _ => {
            let mut out = format!("Offboarding audit: {name} <{email}> (id {})\n", a.agent.id);
            out.push_str(&format!("  status            {}\n", status(a.agent.status)));
            out.push_str(&format!("  timeline          {}\n", timeline.join(", ")));
            out.push_str(&format!("  owns now          {} contacts, {} accounts\n", a.contacts_now, a.accounts_now));
            if let Some(n) = a.contacts_at_departure {
                out.push_str(&format!("  owned when gone   {n} contacts\n"));
            }
            out.push_str(&format!(
                "  orphans           {} contacts, {} accounts\n",
                rows.len(),
                a.orphaned_accounts.len()
            ));
            out.push_str(&format!("  reassigned since  {} contacts\n", a.reassigned_since.len()));
            out.push_str(&format!(
                "  evidence          generation {}, crawl {}, agents {}, data age {}s, SCIM {}\n",
                e.generation,
                when(Some(e.crawl_finished_at_ms)),
                when(Some(e.agents_refreshed_at_ms)),
                e.data_age_s,
                if e.scim_available { "yes" } else { "no" }
            ));
            out.push_str(&format!("  digest            sha256:{digest}\n"));
            if !rows.is_empty() {
                out.push_str(&format!("\n  {:<12} {:<40} {}\n", "CONTACT", "EMAIL", "REASON"));
                for r in rows.iter().take(25) {
                    out.push_str(&format!(
                        "  {:<12} {:<40} {}\n",
                        r.contact_id,
                        r.contact_email.as_deref().unwrap_or(""),
                        reason(r.reason)
                    ));
                }
                if rows.len() > 25 {
                    out.push_str(&format!("  … and {} more (use --format csv for all)\n", rows.len() - 25));
                }
            }
            out
        }
    }
}

fn render_org(o: &OrgAudit, digest: &str, format: Format) -> String {
    let e = &o.evidence;
    match format {
        Format::Csv => {
            let mut out = String::from(CSV_HEADER);
            out.push('\n');
            for r in &o.orphans {
                out.push_str(&csv_row(r));
                out.push('\n');
            }
            out
        }
        Format::Markdown => {
            let mut out = String::from("# Org offboarding audit\n\n");
            out.push_str(&format!(
                "Generation {}, crawl finished {}, agents refreshed {}, data age {}s, SCIM {}. Digest `sha256:{digest}`.\n\n",
                e.generation,
                when(Some(e.crawl_finished_at_ms)),
                when(Some(e.agents_refreshed_at_ms)),
                e.data_age_s,
                if e.scim_available { "yes" } else { "no" }
            ));
            out.push_str("| agent | email | status | gone since | contacts | accounts |\n|---|---|---|---|---|---|\n");
            for r in &o.rows {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.agent.id,
                    r.agent.email.as_deref().unwrap_or(""),
                    status(r.agent.status),
                    when(r.gone_at_ms),
                    r.contacts,
                    r.accounts
                ));
            }
            out.push_str(&format!(
                "| **total** | {} agents | | | {} | {} |\n",
                o.total_agents, o.total_contacts, o.total_accounts
            ));
            out
        }
        _ => {
            let mut out = String::from(
                "Org offboarding audit: departed, deactivated or unknown owners who still own something\n\n",
            );
            out.push_str(&format!(
                "  {:<10} {:<42} {:<12} {:<21} {:>8} {:>8}\n",
                "AGENT", "EMAIL", "STATUS", "GONE SINCE", "CONTACTS", "ACCOUNTS"
            ));
            for r in &o.rows {
                out.push_str(&format!(
                    "  {:<10} {:<42} {:<12} {:<21} {:>8} {:>8}\n",
                    r.agent.id,
                    r.agent.email.as_deref().unwrap_or("(unknown)"),
                    status(r.agent.status),
                    when(r.gone_at_ms),
                    r.contacts,
                    r.accounts
                ));
            }
            out.push_str(&format!(
                "\n  total: {} agents, {} orphaned contacts, {} orphaned accounts; {} contacts have no owner at all\n",
                o.total_agents, o.total_contacts, o.total_accounts, o.unowned_contacts
            ));
            out.push_str(&format!(
                "  evidence: generation {}, crawl {}, agents {}, data age {}s, SCIM {}\n  digest: sha256:{digest}\n",
                e.generation,
                when(Some(e.crawl_finished_at_ms)),
                when(Some(e.agents_refreshed_at_ms)),
                e.data_age_s,
                if e.scim_available { "yes" } else { "no" }
            ));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }
}
