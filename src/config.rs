//! Configuration: defaults < TOML file < `IDGRAPH_*` environment < flags. The only place that
//! reads files and environment; the libraries take typed values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use idgraph_crawler::{BudgetConfig, CrawlConfig, Credentials, OAuthConfig, Secret};
use serde::Deserialize;

/// The TOML file. Every key is optional.
// No `Debug`: it holds secrets.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub drift_url: Option<String>,
    pub scim_url: Option<String>,
    pub token: Option<String>,
    pub scim_token: Option<String>,
    pub rate_limit: Option<String>,
    pub read_token: Option<String>,
    pub admin_token: Option<String>,
    pub webhook_token: Option<String>,
    pub full_every: Option<String>,
    pub agents_every: Option<String>,
    pub cors_origins: Option<Vec<String>>,
    pub known_ids_file: Option<PathBuf>,
    pub incremental: Option<bool>,
    pub oauth: Option<OAuthFile>,
}

// No `Debug`: it holds a secret.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthFile {
    pub client_id: String,
    pub client_secret: String,
    pub token_file: PathBuf,
    pub token_url: Option<String>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
    }
}

/// Parses a duration such as `30s`, `5m`, `6h`.
pub fn duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s.trim()).with_context(|| format!("{s:?} is not a duration (try 30s, 5m, 6h)"))
}

/// The crawl settings shared by `crawl`, `serve` and `reassign`. No `Debug`: it holds secrets.
#[derive(Clone)]
pub struct DriftSettings {
    pub drift_url: String,
    pub scim_url: Option<String>,
    pub token: Option<String>,
    pub scim_token: Option<String>,
    pub rate_limit: String,
    pub oauth: Option<(String, String, PathBuf, String)>,
    pub known_ids_file: Option<PathBuf>,
}

impl DriftSettings {
    pub fn crawl_config(&self) -> Result<CrawlConfig> {
        let creds = match (&self.token, &self.oauth) {
            (Some(t), _) => Credentials::Token(Secret::new(t.clone())),
            (None, Some((client_id, secret, token_file, token_url))) => Credentials::OAuth(OAuthConfig {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: Secret::new(secret.clone()),
                token_file: Some(token_file.clone()),
                refresh_token: None,
                refresh_ahead: Duration::from_secs(120),
            }),
            (None, None) => anyhow::bail!(
                "no Drift credentials: pass --token (or set DRIFT_TOKEN), or configure [oauth] after `idgraph auth login`"
            ),
        };
        let budget: BudgetConfig = self.rate_limit.parse().map_err(anyhow::Error::msg)?;
        let mut cfg = CrawlConfig::new(self.drift_url.clone(), creds);
        cfg.scim_url = self.scim_url.clone();
        cfg.scim_credentials = self.scim_token.as_ref().map(|t| Credentials::Token(Secret::new(t.clone())));
        cfg.budget = budget;
        cfg.known_ids_file = self.known_ids_file.clone();
        Ok(cfg)
    }
}
