//! A case's evidence in one self-contained HTML file: the view a person reads (the leaver, the
//! state, every item with its decision, who decided and when, the chain), the case as JSON
//! (embedded, and downloadable from the page as JSON and CSV with no network), and the chain.
//! `verify` checks a bundle offline: the chain's hashes and links, and that every item says what
//! the chain says.

use crate::{verify_items, Broken, Case};

const OPEN: &str = r#"<script type="application/json" id="idgraph-case">"#;
const CLOSE: &str = "</script>";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("this is not an idgraph case bundle (no embedded case)")]
    NotABundle,
    #[error("the embedded case is not readable: {0}")]
    Unreadable(String),
    #[error("the chain does not hold at {0}")]
    Broken(Broken),
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// One CSV row per item.
pub fn csv(case: &Case) -> String {
    let mut out = String::from("kind,id,email,domain,verified_at,decision,to,reason,decided_by,decided_at,carried\n");
    let cell = |s: &str| {
        let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    for it in &case.items {
        let d = it.decision.as_ref();
        let to = match d.map(|d| &d.verdict) {
            Some(crate::Verdict::Reassign { to }) => to.to_string(),
            Some(crate::Verdict::AlreadyMoved { to: Some(t), .. }) => t.to_string(),
            _ => String::new(),
        };
        out.push_str(
            &[
                cell(if it.kind == crate::ItemKind::Contact { "contact" } else { "account" }),
                cell(&it.id),
                cell(it.email.as_deref().unwrap_or("")),
                cell(it.domain.as_deref().unwrap_or("")),
                it.verified_at_ms.map(when).unwrap_or_default(),
                d.map_or("", |d| d.verdict.name()).to_string(),
                to,
                cell(d.and_then(|d| d.reason.as_deref()).unwrap_or("")),
                cell(d.map_or("", |d| d.by.as_str())),
                d.map(|d| when(d.at_ms)).unwrap_or_default(),
                it.group().to_string(),
            ]
            .join(","),
        );
        out.push('\n');
    }
    out
}

/// The bundle: one HTML file.
pub fn render(case: &Case) -> String {
    let json = serde_json::to_string(case).unwrap_or_default().replace("</", "<\\/");
    let who = case.agent.email.as_deref().or(case.agent.name.as_deref()).unwrap_or("?");
    let mut rows = String::new();
    for it in &case.items {
        let d = it.decision.as_ref();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&it.key()),
            esc(it.email.as_deref().unwrap_or("")),
            it.group(),
            esc(&d.map(|d| format!("{:?}", d.verdict)).unwrap_or_default()),
            esc(d.and_then(|d| d.reason.as_deref()).unwrap_or("")),
            esc(d.map_or("", |d| d.by.as_str())),
            d.map(|d| when(d.at_ms)).unwrap_or_default(),
        ));
    }
    let mut chain = String::new();
    for e in &case.events {
        chain.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>\n",
            e.seq,
            when(e.at_ms),
            esc(&e.kind),
            esc(&e.by),
            &e.hash[..16.min(e.hash.len())]
        ));
    }
    let counts: Vec<String> = case.counts().iter().map(|(k, v)| format!("{k} {v}")).collect();
    let signed = case
        .signed_off
        .as_ref()
        .map_or("not signed off".to_string(), |s| format!("signed off by {} at {}", esc(&s.by), when(s.at_ms)));
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>idgraph · offboarding case {id}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ddd;padding:2px 6px;text-align:left}}h2{{margin-top:2rem}}</style>
</head><body>
<h1>Offboarding case {id}: {who}</h1>
<p id="summary">Agent {agent_id} ({status}) · opened {opened} by {opened_by} · due {due} · state <b>{state}</b> · {signed}</p>
<p>{counts}</p>
<p><a id="dl-json" download="case-{id}.json">case.json</a> · <a id="dl-csv" download="case-{id}.csv">items.csv</a> · check this file offline: <code>idgraph case verify case-{id}.html</code></p>
<h2>Items ({n})</h2>
<table><tr><th>item</th><th>email</th><th>state</th><th>decision</th><th>reason</th><th>by</th><th>at</th></tr>
{rows}</table>
<h2>The chain ({events} entries)</h2>
<table><tr><th>#</th><th>at</th><th>event</th><th>by</th><th>hash</th></tr>
{chain}</table>
{open}{json}{close}
<script type="text/plain" id="idgraph-case-csv">{csv}</script>
<script>
const data = document.getElementById('idgraph-case').textContent;
document.getElementById('dl-json').href = URL.createObjectURL(new Blob([data], {{type: 'application/json'}}));
const csv = document.getElementById('idgraph-case-csv').textContent;
document.getElementById('dl-csv').href = URL.createObjectURL(new Blob([csv], {{type: 'text/csv'}}));
</script>
</body></html>
"#,
        id = case.id,
        who = esc(who),
        agent_id = case.agent.id,
        status = esc(&case.agent.status),
        opened = when(case.opened_at_ms),
        opened_by = esc(&case.opened_by),
        due = when(case.due_at_ms),
        state = case.state.cli_name(),
        signed = signed,
        counts = esc(&counts.join(" · ")),
        n = case.items.len(),
        rows = rows,
        events = case.events.len(),
        chain = chain,
        open = OPEN,
        json = json,
        close = CLOSE,
        csv = esc(&csv(case)),
    )
}

/// The case embedded in a bundle.
pub fn extract(html: &str) -> Result<Case, BundleError> {
    let start = html.find(OPEN).ok_or(BundleError::NotABundle)? + OPEN.len();
    let end = html[start..].find(CLOSE).ok_or(BundleError::NotABundle)? + start;
    serde_json::from_str(&html[start..end]).map_err(|e| BundleError::Unreadable(e.to_string()))
}

/// Checks a bundle: its chain, its items against the chain, and its view (the page a person
/// reads) against the case: the whole file is what the case renders to.
pub fn verify(html: &str) -> Result<Case, BundleError> {
    let case = extract(html)?;
    verify_items(&case).map_err(BundleError::Broken)?;
    let expected = render(&case);
    if expected != html {
        let (n, line) = expected
            .lines()
            .zip(html.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (_, b))| (i + 1, b.to_string()))
            .unwrap_or((expected.lines().count().min(html.lines().count()) + 1, String::new()));
        // An item's row: name the entry that decided it.
        let key = line.strip_prefix("<tr><td>").and_then(|r| r.split("</td>").next()).map(str::to_string);
        let item = key.as_ref().and_then(|k| case.items.iter().find(|i| i.key() == *k));
        let broken = match item {
            Some(it) => Broken {
                entry: it.decision.as_ref().map_or(1, |d| d.event),
                kind: it.decision.as_ref().map_or("OPENED".into(), |_| "DECIDED".into()),
                why: format!(
                    "item {}'s row in the page (line {n}) was changed: it is not what the case says",
                    it.key()
                ),
            },
            None => Broken {
                entry: 0,
                kind: "VIEW".into(),
                why: format!("line {n} of the page was changed: the view is not what the case says"),
            },
        };
        return Err(BundleError::Broken(broken));
    }
    Ok(case)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    #[test]
    fn a_bundle_checks_itself_and_names_a_changed_entry() {
        let items = (0..3)
            .map(|i| Item {
                kind: ItemKind::Contact,
                id: i.to_string(),
                email: Some(format!("x{i}@a.example")),
                name: None,
                domain: Some("a.example".into()),
                verified_at_ms: Some(5),
                decision: None,
                carry: Carry::NotYet,
            })
            .collect();
        let agent = AgentRef {
            id: 1,
            email: Some("l@x.example".into()),
            name: Some("</script><b>".into()),
            status: "DEPARTED".into(),
        };
        let mut c = Case::open(3, None, agent, items, "system", "gone", 1, 10);
        c.decide(&Filter::default(), Verdict::Keep, Some("a </script> reason".into()), "alice", 2, &|_| {
            (Some(1), Some(5))
        })
        .unwrap();
        let html = render(&c);
        assert_eq!(verify(&html).unwrap(), c);
        let changed = html.replacen("a <\\/script> reason", "b <\\/script> reason", 1);
        assert_ne!(changed, html);
        let e = verify(&changed).unwrap_err().to_string();
        assert!(e.contains("entry 2"), "{e}");
        // The view a person reads is checked too.
        let changed = html.replacen("a &lt;/script&gt; reason", "b &lt;/script&gt; reason", 1);
        assert_ne!(changed, html);
        let e = verify(&changed).unwrap_err().to_string();
        assert!(e.contains("entry 2") && e.contains("row in the page"), "{e}");
    }
}
