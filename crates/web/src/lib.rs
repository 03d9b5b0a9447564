//! What idgraph shows in a browser: GraphiQL's page, the audit view's page, and the self-contained
//! HTML audit report, with the libraries they need (fetched from npm at build time by `build.rs`
//! and embedded; nothing is loaded from the network at run time).
//!
//! This crate knows no HTTP server, no GraphQL and no graph: it hands out pages and assets as
//! strings. `idgraph-graphql` serves them; the binary writes the report. The audit view's own code
//! (`audit.js`, `audit.css`) lives here and is the same in the served page and in the report: the
//! page fetches its data from `/graphql`, the report carries it inline.

mod graphiql;

pub use graphiql::graphiql_page;

macro_rules! bundled {
    ($name:literal) => {
        include_str!(concat!(env!("OUT_DIR"), "/web/", $name))
    };
}

const GRAPHIQL_JS: &str = bundled!("graphiql.min.js");
const GRAPHIQL_CSS: &str = bundled!("graphiql.min.css");
const REACT: &str = bundled!("react.production.min.js");
const REACT_DOM: &str = bundled!("react-dom.production.min.js");
const CHART_JS: &str = bundled!("chart.umd.min.js");
const CYTOSCAPE_JS: &str = bundled!("cytoscape.min.js");
const AUDIT_JS: &str = include_str!("audit.js");
const AUDIT_CSS: &str = include_str!("audit.css");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Whether GraphiQL was bundled (else `/` is a minimal query page).
pub fn graphiql_bundled() -> bool {
    cfg!(graphiql_bundled)
}

/// Whether Chart.js and Cytoscape.js were bundled (else the audit view draws plain HTML).
pub fn charts_bundled() -> bool {
    cfg!(charts_bundled)
}

/// An asset by its file name under `/assets/`: (body, content type). `None` for an unknown name
/// or a library this build could not fetch.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    let found = match name {
        "graphiql.min.js" => (GRAPHIQL_JS, JS),
        "graphiql.min.css" => (GRAPHIQL_CSS, CSS),
        "react.production.min.js" => (REACT, JS),
        "react-dom.production.min.js" => (REACT_DOM, JS),
        "chart.umd.min.js" => (CHART_JS, JS),
        "cytoscape.min.js" => (CYTOSCAPE_JS, JS),
        "audit.js" => (AUDIT_JS, JS),
        "audit.css" => (AUDIT_CSS, CSS),
        _ => return None,
    };
    Some(found).filter(|(body, _)| !body.is_empty())
}

fn libraries() -> impl Iterator<Item = &'static str> {
    ["chart.umd.min.js", "cytoscape.min.js"].into_iter().filter(|n| asset(n).is_some())
}

/// The audit view as served at `/audit`: its data comes from `/graphql`.
pub fn audit_page() -> String {
    let scripts: String =
        libraries().chain(["audit.js"]).map(|n| format!("<script src=\"/assets/{n}\"></script>\n")).collect();
    shell("idgraph · audit", "<link rel=\"stylesheet\" href=\"/assets/audit.css\">", "", &scripts)
}

/// The audit report as one self-contained HTML file: every script and style inline, the report
/// (`{org: {kind, digest, report, truncated}, timeline}` or `{agent: …}`) inline as JSON.
pub fn audit_report_html(title: &str, data: &serde_json::Value) -> String {
    // `<` escaped inside the JSON keeps `</script>` in a contact's name from ending the block.
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into()).replace('<', "\\u003c");
    let scripts: String = libraries()
        .chain(["audit.js"])
        .filter_map(asset)
        .map(|(body, _)| format!("<script>{}</script>\n", body.replace("</script", "<\\/script")))
        .collect();
    let data = format!("<script type=\"application/json\" id=\"idgraph-data\">{json}</script>\n");
    shell(&escape(title), &format!("<style>{AUDIT_CSS}</style>"), &data, &scripts)
}

fn shell(title: &str, style: &str, data: &str, scripts: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{style}
</head>
<body>
<div id="app"><p class="loading">Loading the audit…</p></div>
<noscript><p>The audit view needs JavaScript; the same report is available as Markdown, CSV or JSON from <code>idgraph audit</code>.</p></noscript>
{data}{scripts}</body>
</html>
"#
    )
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_one_file_and_data_cannot_close_its_script() {
        let data =
            serde_json::json!({"org": {"kind": "org", "report": {"name": "</script><script>alert(1)</script>"}}});
        let html = audit_report_html("t", &data);
        assert!(!html.contains("src=\"/assets"), "nothing is loaded from elsewhere");
        assert!(!html.contains("</script><script>alert"), "the JSON cannot end its script block");
        assert!(html.contains("\\u003c/script>"));
        assert_eq!(html.matches("<script").count(), html.matches("</script>").count());
    }

    #[test]
    fn unknown_assets_are_none() {
        assert!(asset("audit.js").is_some());
        assert!(asset("../Cargo.toml").is_none());
    }
}
