//! A data directory knows which org it holds: the first crawl stores the Drift and SCIM URLs and
//! the org Drift says the token belongs to; later commands use the URLs when none is given, and
//! refuse another org's URL or token unless forced.

use anyhow::Result;
use idgraph_crawler::Crawler;
use idgraph_graph::Graph;
use serde::{Deserialize, Serialize};

use crate::app::settings::DriftSettings;

const KEY: &str = "org";

/// The org a data directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgIdentity {
    pub drift_url: String,
    pub scim_url: Option<String>,
    /// The org Drift's `token_info` named for the token that crawled it (every org shares
    /// `https://driftapi.com`, so the URL alone does not tell orgs apart).
    #[serde(default)]
    pub org_id: Option<u64>,
}

fn same(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Reconciles the settings with the org the data directory holds: takes its URLs when none was
/// given; refuses another org's URL unless `force` (which records the new one); records the org
/// when the directory knows none yet.
pub fn reconcile(graph: &Graph, drift: &mut DriftSettings, force: bool) -> Result<()> {
    let stored = stored(graph)?;
    match stored {
        Some(org) if !drift.drift_url_given => {
            drift.drift_url = org.drift_url;
            drift.scim_url = org.scim_url;
            Ok(())
        }
        Some(org) if !same(&org.drift_url, &drift.drift_url) && !force => anyhow::bail!(
            "this data directory holds the org at {}, not {}: point at that URL (or give none), use another data directory, or pass --force to replace it",
            org.drift_url,
            drift.drift_url
        ),
        Some(org) if same(&org.drift_url, &drift.drift_url) && org.scim_url == drift.scim_url => Ok(()),
        _ => {
            let org_id = stored.filter(|o| same(&o.drift_url, &drift.drift_url)).and_then(|o| o.org_id);
            let org = OrgIdentity { drift_url: drift.drift_url.clone(), scim_url: drift.scim_url.clone(), org_id };
            graph.save_state(KEY, &serde_json::to_value(&org)?)?;
            Ok(())
        }
    }
}

/// Asks Drift which org the token belongs to and holds it against the org the data directory
/// knows: records it when none is known (or `force`), refuses another. When Drift does not say
/// (no `token_info`, a failed request), it warns and goes on: the URL check still stands.
pub async fn check_token_org(graph: &Graph, crawler: &Crawler, force: bool) -> Result<()> {
    let token_org = match crawler.org_id().await {
        Ok(Some(id)) => id,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "could not ask Drift which org the token belongs to; only the URL is checked");
            return Ok(());
        }
    };
    let Some(mut org) = stored(graph)? else {
        return Ok(());
    };
    match org.org_id {
        Some(held) if held == token_org => return Ok(()),
        Some(held) if !force => anyhow::bail!(
            "this data directory holds Drift org {held}, and the token given belongs to org {token_org}: \
             use that org's token, another data directory, or pass --force to replace it"
        ),
        _ => {}
    }
    org.org_id = Some(token_org);
    graph.save_state(KEY, &serde_json::to_value(&org)?)?;
    Ok(())
}

/// The org the data directory holds, if it knows.
pub fn stored(graph: &Graph) -> Result<Option<OrgIdentity>> {
    Ok(graph.load_state(KEY)?.and_then(|v| serde_json::from_value(v).ok()))
}
