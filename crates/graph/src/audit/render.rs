//! Audit reports as text: a table for a terminal, CSV, JSON or Markdown. The CLI prints these and
//! GraphQL's `auditDocument` answers them, so the audit page's downloads are the CLI's files.

use super::{AgentAudit, Evidence, OrgAudit, OrphanRow, ReportDoc, ReportError};
use crate::export;
use crate::index::AgentStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Markdown,
}

fn when(ms: Option<i64>) -> String {
    export::when(ms)
}

fn status(s: AgentStatus) -> &'static str {
    export::status_name(s)
}

/// The orphans as the audit CSV: the same columns and cells as `/export/orphans?format=csv`.
fn csv(rows: &[OrphanRow]) -> String {
    let mut out = export::ORPHAN_COLUMNS.join(",");
    out.push('\n');
    for r in rows {
        let cells = [
            r.contact_id.to_string(),
            r.contact_email.clone().unwrap_or_default(),
            r.contact_name.clone().unwrap_or_default(),
            r.owner_id.to_string(),
            r.owner_email.clone().unwrap_or_default(),
            r.owner_name.clone().unwrap_or_default(),
            status(r.owner_status).to_string(),
            export::reason_name(r.reason).to_string(),
            when(r.owner_gone_at_ms),
            when(r.contact_verified_at_ms),
        ];
        out.push_str(&cells.iter().map(|c| export::csv_cell(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// When an orphan was last verified, and whether that was after its owner went.
fn verified(r: &OrphanRow) -> String {
    match r.contact_verified_at_ms {
        None => "never".into(),
        Some(_) if !r.verified_after_departure() => {
            format!("{} (before the owner went)", when(r.contact_verified_at_ms))
        }
        Some(_) => when(r.contact_verified_at_ms),
    }
}

/// One line of evidence: which generation, how fresh, whether SCIM was there.
fn evidence_line(e: &Evidence, crawl: &str, agents: &str) -> String {
    format!(
        "generation {}, {crawl} {}, {agents} {}, data age {}s, SCIM {}",
        e.generation,
        when(Some(e.crawl_finished_at_ms)),
        when(Some(e.agents_refreshed_at_ms)),
        e.data_age_s,
        if e.scim_available { "yes" } else { "no" }
    )
}

/// An agent audit's orphaned contacts as audit CSV rows.
pub fn agent_rows(a: &AgentAudit) -> Vec<OrphanRow> {
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
            contact_verified_at_ms: Some(c.verified_at_ms).filter(|t| *t > 0),
        })
        .collect()
}

/// Renders a report document (`{kind, report, digest}`, as `report` or `auditReport` gives it).
pub fn render(doc: &ReportDoc, format: Format) -> Result<String, ReportError> {
    fn shape(what: &'static str) -> impl Fn(serde_json::Error) -> ReportError {
        move |e| ReportError::Shape(format!("the {what} report: {e}"))
    }
    if format == Format::Json {
        let v = serde_json::json!({"kind": doc.kind, "digest": doc.digest, "report": doc.report});
        return Ok(serde_json::to_string_pretty(&v).map_err(shape("json"))? + "\n");
    }
    match doc.kind.as_str() {
        "agent" => {
            let a: AgentAudit = serde_json::from_value(doc.report.clone()).map_err(shape("agent"))?;
            Ok(render_agent(&a, &doc.digest, format))
        }
        _ => {
            let o: OrgAudit = serde_json::from_value(doc.report.clone()).map_err(shape("org"))?;
            Ok(render_org(&o, &doc.digest, format))
        }
    }
}

fn render_agent(a: &AgentAudit, digest: &str, format: Format) -> String {
    let rows = agent_rows(a);
    match format {
        Format::Csv => csv(&rows),
        Format::Markdown => agent_markdown(a, &rows, digest),
        _ => agent_table(a, &rows, digest),
    }
}

fn names(a: &AgentAudit) -> (String, String, Vec<String>) {
    let name = a.agent.name.clone().unwrap_or_else(|| "(no name)".into());
    let email = a.agent.email.clone().unwrap_or_else(|| "(no email)".into());
    let timeline = a.timeline.iter().map(|e| format!("{} {}", e.status, when(Some(e.at_ms)))).collect();
    (name, email, timeline)
}

fn agent_markdown(a: &AgentAudit, rows: &[OrphanRow], digest: &str) -> String {
    let (name, email, timeline) = names(a);
    let mut out = format!("# Offboarding audit: {name} <{email}> (id {})\n\n", a.agent.id);
    out.push_str(&format!("| | |\n|---|---|\n| Status | {} |\n", status(a.agent.status)));
    out.push_str(&format!("| Timeline | {} |\n", timeline.join("; ")));
    out.push_str(&format!("| Owns now | {} contacts, {} accounts |\n", a.contacts_now, a.accounts_now));
    if let Some(n) = a.contacts_at_departure {
        out.push_str(&format!("| Owned when it went | {n} contacts |\n"));
    }
    out.push_str(&format!("| Reassigned since | {} contacts |\n", a.reassigned_since.len()));
    out.push_str(&format!("| Evidence | {} |\n", evidence_line(&a.evidence, "crawl finished", "agents refreshed")));
    out.push_str(&format!("| Digest | sha256:{digest} |\n\n"));
    if !rows.is_empty() {
        out.push_str(
            "## Orphaned contacts\n\n| contact_id | email | name | reason | verified at |\n|---|---|---|---|---|\n",
        );
        for r in rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.contact_id,
                r.contact_email.as_deref().unwrap_or(""),
                r.contact_name.as_deref().unwrap_or(""),
                export::reason_name(r.reason),
                verified(r)
            ));
        }
    }
    out
}

fn agent_table(a: &AgentAudit, rows: &[OrphanRow], digest: &str) -> String {
    let (name, email, timeline) = names(a);
    let mut out = format!("Offboarding audit: {name} <{email}> (id {})\n", a.agent.id);
    out.push_str(&format!("  status            {}\n", status(a.agent.status)));
    out.push_str(&format!("  timeline          {}\n", timeline.join(", ")));
    out.push_str(&format!("  owns now          {} contacts, {} accounts\n", a.contacts_now, a.accounts_now));
    if let Some(n) = a.contacts_at_departure {
        out.push_str(&format!("  owned when gone   {n} contacts\n"));
    }
    out.push_str(&format!("  orphans           {} contacts, {} accounts\n", rows.len(), a.orphaned_accounts.len()));
    out.push_str(&format!("  reassigned since  {} contacts\n", a.reassigned_since.len()));
    out.push_str(&format!("  evidence          {}\n", evidence_line(&a.evidence, "crawl", "agents")));
    out.push_str(&format!("  digest            sha256:{digest}\n"));
    if !rows.is_empty() {
        let verified_after = rows.iter().filter(|r| r.verified_after_departure()).count();
        out.push_str(&format!(
            "  verified          {verified_after} orphans re-read after the agent went, {} not yet\n",
            rows.len() - verified_after
        ));
        out.push_str(&format!("\n  {:<12} {:<40} {:<18} {}\n", "CONTACT", "EMAIL", "REASON", "VERIFIED AT"));
        for r in rows.iter().take(25) {
            out.push_str(&format!(
                "  {:<12} {:<40} {:<18} {}\n",
                r.contact_id,
                r.contact_email.as_deref().unwrap_or(""),
                export::reason_name(r.reason),
                verified(r)
            ));
        }
        if rows.len() > 25 {
            out.push_str(&format!("  … and {} more (use --format csv for all)\n", rows.len() - 25));
        }
    }
    out
}

fn render_org(o: &OrgAudit, digest: &str, format: Format) -> String {
    match format {
        Format::Csv => csv(&o.orphans),
        Format::Markdown => org_markdown(o, digest),
        _ => org_table(o, digest),
    }
}

fn org_markdown(o: &OrgAudit, digest: &str) -> String {
    let mut out = String::from("# Org offboarding audit\n\n");
    let ev = evidence_line(&o.evidence, "crawl finished", "agents refreshed");
    out.push_str(&format!("{}. Digest `sha256:{digest}`.\n\n", capitalised(&ev)));
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
    out.push_str(&format!(
        "\n{} contacts have no owner at all. Verified: {} orphans re-read in Drift after their owner went, {} not yet.\n",
        o.unowned_contacts, o.orphans_verified_after_departure, o.orphans_not_yet_verified
    ));
    out
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

fn org_table(o: &OrgAudit, digest: &str) -> String {
    let mut out =
        String::from("Org offboarding audit: departed, deactivated or unknown owners who still own something\n\n");
    let line = |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str| {
        format!("  {a:<10} {b:<42} {c:<12} {d:<21} {e:>8} {f:>8}\n")
    };
    out.push_str(&line("AGENT", "EMAIL", "STATUS", "GONE SINCE", "CONTACTS", "ACCOUNTS"));
    for r in &o.rows {
        out.push_str(&line(
            &r.agent.id.to_string(),
            r.agent.email.as_deref().unwrap_or("(unknown)"),
            status(r.agent.status),
            &when(r.gone_at_ms),
            &r.contacts.to_string(),
            &r.accounts.to_string(),
        ));
    }
    out.push_str(&format!(
        "\n  total: {} agents, {} orphaned contacts, {} orphaned accounts; {} contacts have no owner at all\n",
        o.total_agents, o.total_contacts, o.total_accounts, o.unowned_contacts
    ));
    out.push_str(&format!(
        "  verified: {} orphans re-read in Drift after their owner went, {} not yet\n",
        o.orphans_verified_after_departure, o.orphans_not_yet_verified
    ));
    out.push_str(&format!(
        "  evidence: {}\n  digest: sha256:{digest}\n",
        evidence_line(&o.evidence, "crawl", "agents")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every total the table prints, the Markdown prints too.
    #[test]
    fn the_markdown_org_audit_has_the_tables_totals() {
        let o = OrgAudit {
            rows: vec![],
            total_agents: 0,
            total_contacts: 0,
            total_accounts: 0,
            unowned_contacts: 17,
            orphans_verified_after_departure: 5,
            orphans_not_yet_verified: 3,
            orphans: vec![],
            evidence: crate::audit::Evidence {
                generation: 1,
                crawl_finished_at_ms: 0,
                agents_refreshed_at_ms: 0,
                generated_at_ms: 0,
                data_age_s: 0,
                scim_available: true,
            },
        };
        let md = org_markdown(&o, "d");
        let table = org_table(&o, "d");
        for needle in
            ["17 contacts have no owner at all", "5 orphans re-read in Drift after their owner went, 3 not yet"]
        {
            assert!(table.contains(needle), "{table}");
            assert!(md.contains(needle), "{md}");
        }
    }

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        let cell = export::csv_cell;
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }
}
