//! A data directory knows which org it holds: the first crawl stores the Drift and SCIM URLs;
//! later commands use them when none is given, and refuse another org's URL unless forced.

use anyhow::Result;
use idgraph_graph::Graph;
use serde::{Deserialize, Serialize};

use crate::app::settings::DriftSettings;

const KEY: &str = "org";

/// The org a data directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgIdentity {
    pub drift_url: String,
    pub scim_url: Option<String>,
}

fn same(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Reconciles the settings with the org the data directory holds: takes its URLs when none was
/// given; refuses another org's URL unless `force` (which records the new one); records the org
/// when the directory knows none yet.
pub fn reconcile(graph: &Graph, drift: &mut DriftSettings, force: bool) -> Result<()> {
    let stored: Option<OrgIdentity> = graph.load_state(KEY)?.and_then(|v| serde_json::from_value(v).ok());
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
            let org = OrgIdentity { drift_url: drift.drift_url.clone(), scim_url: drift.scim_url.clone() };
            graph.save_state(KEY, &serde_json::to_value(&org)?)?;
            Ok(())
        }
    }
}

/// The org the data directory holds, if it knows.
pub fn stored(graph: &Graph) -> Result<Option<OrgIdentity>> {
    Ok(graph.load_state(KEY)?.and_then(|v| serde_json::from_value(v).ok()))
}
