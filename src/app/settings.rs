//! Settings, resolved once for every command: defaults < TOML file < `IDGRAPH_*` environment <
//! flags. This is the only place that reads configuration files and the environment; everything
//! after it takes typed values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use idgraph_access::RoleMap;
use idgraph_crawler::{BudgetConfig, CrawlConfig, Credentials, OAuthConfig};
use idgraph_model::Secret;
use serde::Deserialize;

use crate::app::scheduler::FullSchedule;

/// The one table of defaults.
pub mod defaults {
    pub const DATA_DIR: &str = "idgraph-data";
    pub const DRIFT_URL: &str = "https://driftapi.com";
    pub const OAUTH_TOKEN_URL: &str = "https://driftapi.com/oauth2/token";
    pub const RATE_LIMIT: &str = "200/min";
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const FULL_EVERY: &str = "6h";
    pub const AGENTS_EVERY: &str = "5m";
    pub const REBUILD_EVERY: &str = "off";
    pub const REFRESH_SHARE: f64 = 0.5;
    pub const INCREMENTAL: bool = true;
}

/// The TOML file. Every key is optional. No `Debug`: it holds secrets.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub drift_url: Option<String>,
    pub scim_url: Option<String>,
    pub token: Option<Secret>,
    pub scim_token: Option<Secret>,
    pub rate_limit: Option<String>,
    pub read_token: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub webhook_token: Option<Secret>,
    /// Each secret also from a file holding it alone (systemd credentials, Kubernetes secrets).
    pub token_file: Option<PathBuf>,
    pub scim_token_file: Option<PathBuf>,
    pub read_token_file: Option<PathBuf>,
    pub admin_token_file: Option<PathBuf>,
    pub webhook_token_file: Option<PathBuf>,
    pub full_every: Option<String>,
    pub agents_every: Option<String>,
    /// How often a server builds its index again from the store (`off`: never).
    pub rebuild_every: Option<String>,
    pub cors_origins: Option<Vec<String>>,
    /// Where server-side backups (`POST /admin/backup`) go, each by a plain name.
    pub backup_dir: Option<PathBuf>,
    pub known_ids_file: Option<PathBuf>,
    pub incremental: Option<bool>,
    pub refresh_share: Option<f64>,
    pub oauth: Option<OAuthFile>,
    /// Sign-in through the company's identity provider, and its JWTs for API clients.
    pub oidc: Option<OidcFile>,
    /// Where the access log's entries are also streamed as NDJSON: a path, or `-` for stdout.
    pub access_log: Option<String>,
    /// Days the access log keeps (default 400).
    pub access_log_retention_days: Option<u32>,
    /// Where the access log's hash chain is kept (default DATA_DIR/access).
    pub access_log_dir: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (IP addresses).
    pub trusted_proxies: Option<Vec<String>>,
    /// How long a browser session lasts (default 8h).
    pub session_lifetime: Option<String>,
    /// sled's page cache, in MB (default 32): what it costs and buys is in docs/benchmarks.md.
    pub cache_mb: Option<u64>,
    /// The time allowed to close an offboarding case (default 7d).
    pub case_allowance: Option<String>,
    /// Where case events are told: Slack-compatible or generic JSON webhooks.
    pub notify: Option<Vec<NotifyFile>>,
    /// OCSF records of case events: an NDJSON file path, or an http(s) URL to POST them to.
    pub case_ocsf: Option<String>,
    /// The URL people reach this server at (default `http://LISTEN`): where the identity
    /// provider sends them back; https makes the session cookie `Secure`.
    pub public_url: Option<String>,
    /// Several orgs in one server (`[[org]]`): each with its name and its own Drift keys, which
    /// take the top-level keys' place; its store is `DATA_DIR/orgs/NAME`.
    pub org: Option<Vec<OrgFile>>,
}

/// One org of `[[org]]`: its name and the single-org keys it sets (the others are the top
/// level's).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgFile {
    pub name: String,
    pub drift_url: Option<String>,
    pub scim_url: Option<String>,
    pub token: Option<Secret>,
    pub scim_token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub scim_token_file: Option<PathBuf>,
    pub rate_limit: Option<String>,
    pub webhook_token: Option<Secret>,
    pub webhook_token_file: Option<PathBuf>,
    pub full_every: Option<String>,
    pub agents_every: Option<String>,
    pub refresh_share: Option<f64>,
    pub known_ids_file: Option<PathBuf>,
    pub incremental: Option<bool>,
    pub oauth: Option<OAuthFile>,
    pub cache_mb: Option<u64>,
    pub case_allowance: Option<String>,
}

impl OrgFile {
    /// The top-level keys with this org's over them.
    fn over(&self, top: &FileConfig) -> FileConfig {
        let mut f = top.clone();
        f.org = None;
        macro_rules! set {
            ($($k:ident),*) => { $( if self.$k.is_some() { f.$k = self.$k.clone(); } )* };
        }
        set!(
            drift_url,
            scim_url,
            token,
            scim_token,
            token_file,
            scim_token_file,
            rate_limit,
            webhook_token,
            webhook_token_file,
            full_every,
            agents_every,
            refresh_share,
            known_ids_file,
            incremental,
            oauth,
            cache_mb,
            case_allowance
        );
        f
    }
}

/// An org name: lower-case letters, digits, `-` and `_`, at most 64 (it is a path segment and a
/// directory name).
/// The names of the config's `[[org]]`s, in order, each checked and none twice.
fn org_names(file: &FileConfig) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for o in file.org.iter().flatten() {
        check_org_name(&o.name)?;
        if names.contains(&o.name) {
            anyhow::bail!("[[org]] {:?} is named twice", o.name);
        }
        names.push(o.name.clone());
    }
    Ok(names)
}

pub fn check_org_name(name: &str) -> Result<()> {
    if !idgraph_access::is_org_name(name) {
        anyhow::bail!("org name {name:?} must be 1-64 lower-case letters, digits, '-' or '_'");
    }
    Ok(())
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    pub url: String,
    /// `slack` (an incoming-webhook body, the default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The `aud` API clients' JWTs must carry (default: the client id).
    #[serde(default)]
    pub audience: Option<String>,
    /// The claim roles are read from (default `groups`).
    #[serde(default)]
    pub role_claim: Option<String>,
    #[serde(default)]
    pub roles: RoleMap,
    /// Scopes asked at sign-in besides `openid` (default `email`, `profile`).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The JWT algorithms accepted (default: RS256/384/512, PS256/384/512, ES256/384, EdDSA).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct OAuthFile {
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// The client secret from a file holding it alone.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
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
        let file: FileConfig =
            toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))?;
        // As ssh does with a private key: a file that holds a secret is read only when no one but
        // its owner can read it.
        #[cfg(unix)]
        if file.holds_secret() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "config file {} holds a secret and can be read by others (mode {:o}): run `chmod 600 {}`, or move the secrets into files (token_file, read_token_file, ...)",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
        }
        Ok(file)
    }

    /// Whether the file itself holds a secret (not only the path of one).
    fn holds_secret(&self) -> bool {
        [&self.token, &self.scim_token, &self.read_token, &self.admin_token, &self.webhook_token]
            .iter()
            .any(|s| s.is_some())
            || self.org.iter().flatten().any(|o| {
                o.token.is_some()
                    || o.scim_token.is_some()
                    || o.webhook_token.is_some()
                    || o.oauth.as_ref().is_some_and(|a| a.client_secret.is_some())
            })
            || self.oauth.as_ref().is_some_and(|o| o.client_secret.is_some())
            || self.oidc.as_ref().is_some_and(|o| o.client_secret.is_some())
    }
}

/// A secret read from a file that holds it alone (a trailing newline is not part of it).
fn read_secret(what: &str, path: &Path) -> Result<Secret> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        anyhow::bail!("{what} {} is empty", path.display());
    }
    Ok(Secret::new(secret))
}

/// What the flags say; `None` where a flag was not given.
#[derive(Default, Clone)]
pub struct Flags {
    pub config: Option<PathBuf>,
    /// The org, with a config of several (`--org`).
    pub org: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub drift_url: Option<String>,
    pub scim_url: Option<String>,
    pub token: Option<String>,
    pub scim_token: Option<String>,
    pub rate_limit: Option<String>,
    pub known_ids_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub read_token: Option<String>,
    pub admin_token: Option<String>,
    pub webhook_token: Option<String>,
    pub full_every: Option<String>,
    pub agents_every: Option<String>,
    pub rebuild_every: Option<String>,
    pub refresh_share: Option<f64>,
    pub cors_origins: Vec<String>,
    pub backup_dir: Option<PathBuf>,
}

/// The environment, as a map (the process's, or a test's).
#[derive(Default, Clone)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Env {
        Env(std::env::vars().collect())
    }

    /// Without the variables that describe one org's Drift (they apply to the org `--org`
    /// names, never to every org of a config).
    pub fn without_org_keys(&self) -> Env {
        const ORG_KEYS: &[&str] = &[
            "DRIFT_TOKEN",
            "DRIFT_TOKEN_FILE",
            "IDGRAPH_TOKEN_FILE",
            "IDGRAPH_DRIFT_URL",
            "IDGRAPH_SCIM_URL",
            "IDGRAPH_SCIM_TOKEN",
            "IDGRAPH_SCIM_TOKEN_FILE",
            "IDGRAPH_RATE_LIMIT",
            "IDGRAPH_WEBHOOK_TOKEN",
            "IDGRAPH_WEBHOOK_TOKEN_FILE",
            "IDGRAPH_KNOWN_IDS_FILE",
            "IDGRAPH_FULL_EVERY",
            "IDGRAPH_AGENTS_EVERY",
            "IDGRAPH_REFRESH_SHARE",
        ];
        Env(self
            .0
            .iter()
            .filter(|(k, _)| !ORG_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env(pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).filter(|v| !v.is_empty()).cloned()
    }
}

/// The OAuth client, after `idgraph auth login`. No `Debug` derive: the secret is a [`Secret`].
#[derive(Clone, Debug)]
pub struct OAuthSettings {
    pub client_id: String,
    pub client_secret: Secret,
    pub token_file: PathBuf,
    pub token_url: String,
}

/// Where Drift is and how to reach it.
#[derive(Clone, Debug)]
pub struct DriftSettings {
    pub drift_url: String,
    /// Whether the Drift URL was given (flag, environment or file) rather than defaulted: a data
    /// directory that knows its org supplies it otherwise.
    pub drift_url_given: bool,
    /// `None`: SCIM is skipped (`scim_url = "none"`).
    pub scim_url: Option<String>,
    pub token: Option<Secret>,
    pub scim_token: Option<Secret>,
    pub oauth: Option<OAuthSettings>,
    pub budget: BudgetConfig,
    pub known_ids_file: Option<PathBuf>,
    pub incremental: bool,
}

/// What `serve` listens on and whom it lets in.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: String,
    pub read_token: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub webhook_token: Option<Secret>,
    pub cors_origins: Vec<String>,
    /// Where server-side backups go; none: the server refuses them.
    pub backup_dir: Option<PathBuf>,
    pub oidc: Option<OidcSettings>,
    pub access_log: Option<String>,
    pub access_log_retention_days: u32,
    pub access_log_dir: Option<PathBuf>,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub session_lifetime: Duration,
    pub public_url: String,
}

/// The identity provider, resolved.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub audience: String,
    pub role_claim: String,
    pub roles: RoleMap,
    pub scopes: Vec<String>,
    pub algorithms: Vec<String>,
}

/// When `serve` reindexes.
#[derive(Clone, Debug)]
pub struct ScheduleSettings {
    pub full: FullSchedule,
    pub agents_every: Duration,
    /// How often a server builds its index again from the store (`None`: never).
    pub rebuild_every: Option<Duration>,
    /// The share of the budget the refresher spends between full crawls (0: off).
    pub refresh_share: f64,
}

/// Everything a command needs, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The org's store: `base_dir`, or `base_dir/orgs/NAME` with a config of several orgs.
    pub data_dir: PathBuf,
    /// The data directory (`data_dir`, `--data-dir`): the server's tokens, access log and notes.
    pub base_dir: PathBuf,
    /// The org these settings are for, with a config of `[[org]]`s.
    pub org: Option<String>,
    /// Every org the config names (empty: a config of one org, without `[[org]]`).
    pub orgs: Vec<String>,
    pub drift: DriftSettings,
    pub server: ServerSettings,
    pub schedule: ScheduleSettings,
    pub cases: crate::app::cases::CaseConfig,
    /// sled's page cache of a server, in MB.
    pub cache_mb: u64,
}

/// Parses a duration such as `30s`, `5m`, `6h`.
pub fn duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s.trim()).with_context(|| format!("{s:?} is not a duration (try 30s, 5m, 6h)"))
}

impl Settings {
    /// Reads the configuration file named by `--config` or `IDGRAPH_CONFIG`, then resolves.
    ///
    /// With `[[org]]`s: the org `--org` names, or the only one; with several and no `--org`, the
    /// server-wide settings (`org` is `None`: `require_org` says to name one).
    pub fn load(flags: &Flags, env: &Env) -> Result<Settings> {
        let file = FileConfig::load(Settings::config_path(flags, env).as_deref())?;
        let names = org_names(&file)?;
        if names.is_empty() {
            if let Some(o) = &flags.org {
                anyhow::bail!("--org {o}: the configuration names no orgs ([[org]] sections)");
            }
            return Settings::resolve(flags, &file, env);
        }
        let chosen = match &flags.org {
            Some(o) if !names.contains(o) => {
                anyhow::bail!("no org named {o:?} in the configuration (its orgs: {})", names.join(", "))
            }
            Some(o) => Some(o.as_str()),
            None if names.len() == 1 => Some(names[0].as_str()),
            None => None,
        };
        // Only the org chosen is resolved: another org's unreadable secret file does not stop a
        // command about this one.
        match chosen {
            Some(name) => Settings::resolve_org(flags, &file, env, name, &names),
            None => {
                let mut s = Settings::resolve(flags, &file, &env.without_org_keys())?;
                s.orgs = names;
                Ok(s)
            }
        }
    }

    fn config_path(flags: &Flags, env: &Env) -> Option<PathBuf> {
        flags.config.clone().or_else(|| env.get("IDGRAPH_CONFIG").map(PathBuf::from))
    }

    /// Every org of a config of `[[org]]`s (empty without them), each resolved as one org over
    /// the top-level keys; Drift's flags and variables apply only to the org `--org` names.
    pub fn load_orgs(flags: &Flags, env: &Env) -> Result<Vec<Settings>> {
        let file = FileConfig::load(Settings::config_path(flags, env).as_deref())?;
        let names = org_names(&file)?;
        names.iter().map(|n| Settings::resolve_org(flags, &file, env, n, &names)).collect()
    }

    /// One org of the config (`name` is one of `names`), its keys over the top level's.
    fn resolve_org(flags: &Flags, file: &FileConfig, env: &Env, name: &str, names: &[String]) -> Result<Settings> {
        let o = file.org.iter().flatten().find(|o| o.name == name).context("no such org")?;
        let merged = o.over(file);
        let mut s = if flags.org.as_deref() == Some(name) {
            Settings::resolve(flags, &merged, env)
        } else {
            let f = Flags {
                config: flags.config.clone(),
                data_dir: flags.data_dir.clone(),
                listen: flags.listen.clone(),
                ..Flags::default()
            };
            Settings::resolve(&f, &merged, &env.without_org_keys())
        }
        .with_context(|| format!("[[org]] {name}"))?;
        s.data_dir = s.base_dir.join("orgs").join(name);
        s.cases.org = Some(name.to_string());
        s.org = Some(name.to_string());
        s.orgs = names.to_vec();
        Ok(s)
    }

    /// Fails when the config names several orgs and none was chosen (`--org`).
    pub fn require_org(&self) -> Result<()> {
        if self.org.is_none() && !self.orgs.is_empty() {
            anyhow::bail!(
                "the configuration names several orgs ({}): choose one with --org NAME",
                self.orgs.join(", ")
            );
        }
        Ok(())
    }

    /// Each value from the first of: flag, environment, file, default.
    pub fn resolve(flags: &Flags, file: &FileConfig, env: &Env) -> Result<Settings> {
        let pick = |flag: &Option<String>, var: &str, file: &Option<String>| {
            flag.clone().or_else(|| env.get(var)).or_else(|| file.clone())
        };
        // A secret from the first of: flag, variable, the file the variable `<VAR>_FILE` names,
        // the config file, the file its `<key>_file` names.
        let secret = |flag: &Option<String>, var: &str, file: &Option<Secret>, file_path: &Option<PathBuf>| {
            if let Some(v) = flag.clone().or_else(|| env.get(var)) {
                return Ok(Some(Secret::new(v)));
            }
            let var_file = format!("{var}_FILE");
            if let Some(p) = env.get(&var_file) {
                return read_secret(&var_file, Path::new(&p)).map(Some);
            }
            if let Some(s) = file.clone() {
                return Ok(Some(s));
            }
            file_path.as_deref().map(|p| read_secret("the secret file", p)).transpose()
        };
        let path = |flag: &Option<PathBuf>, var: &str, file: &Option<PathBuf>| {
            flag.clone().or_else(|| env.get(var).map(PathBuf::from)).or_else(|| file.clone())
        };
        let given_url = pick(&flags.drift_url, "IDGRAPH_DRIFT_URL", &file.drift_url);
        let drift_url_given = given_url.is_some();
        let drift_url = given_url.unwrap_or_else(|| defaults::DRIFT_URL.to_string());
        let scim_url = pick(&flags.scim_url, "IDGRAPH_SCIM_URL", &file.scim_url)
            .unwrap_or_else(|| format!("{}/scim/v2", drift_url.trim_end_matches('/')));
        let rate = pick(&flags.rate_limit, "IDGRAPH_RATE_LIMIT", &file.rate_limit)
            .unwrap_or_else(|| defaults::RATE_LIMIT.to_string());
        let budget: BudgetConfig = rate.parse().map_err(|e: String| anyhow::anyhow!("rate limit {rate:?}: {e}"))?;
        let cors = if !flags.cors_origins.is_empty() {
            flags.cors_origins.clone()
        } else if let Some(v) = env.get("IDGRAPH_CORS_ORIGINS") {
            v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        } else {
            file.cors_origins.clone().unwrap_or_default()
        };
        let full = pick(&flags.full_every, "IDGRAPH_FULL_EVERY", &file.full_every)
            .unwrap_or_else(|| defaults::FULL_EVERY.to_string());
        let agents = pick(&flags.agents_every, "IDGRAPH_AGENTS_EVERY", &file.agents_every)
            .unwrap_or_else(|| defaults::AGENTS_EVERY.to_string());
        let rebuild = pick(&flags.rebuild_every, "IDGRAPH_REBUILD_EVERY", &file.rebuild_every)
            .unwrap_or_else(|| defaults::REBUILD_EVERY.to_string());
        let base_dir = path(&flags.data_dir, "IDGRAPH_DATA_DIR", &file.data_dir)
            .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
        Ok(Settings {
            data_dir: base_dir.clone(),
            base_dir,
            org: None,
            orgs: Vec::new(),
            drift: DriftSettings {
                scim_url: (scim_url != "none").then_some(scim_url),
                drift_url,
                drift_url_given,
                token: match secret(&flags.token, "DRIFT_TOKEN", &file.token, &file.token_file)? {
                    Some(t) => Some(t),
                    // The systemd unit's and the container's name for it.
                    None => env
                        .get("IDGRAPH_TOKEN_FILE")
                        .map(|p| read_secret("IDGRAPH_TOKEN_FILE", Path::new(&p)))
                        .transpose()?,
                },
                scim_token: secret(&flags.scim_token, "IDGRAPH_SCIM_TOKEN", &file.scim_token, &file.scim_token_file)?,
                oauth: match &file.oauth {
                    Some(o) => Some(OAuthSettings {
                        client_id: o.client_id.clone(),
                        client_secret: match (&o.client_secret, &o.client_secret_file) {
                            (Some(s), _) => s.clone(),
                            (None, Some(p)) => read_secret("[oauth] client_secret_file", p)?,
                            (None, None) => anyhow::bail!("[oauth] needs client_secret or client_secret_file"),
                        },
                        token_file: o.token_file.clone(),
                        token_url: o.token_url.clone().unwrap_or_else(|| defaults::OAUTH_TOKEN_URL.to_string()),
                    }),
                    None => None,
                },
                budget,
                known_ids_file: path(&flags.known_ids_file, "IDGRAPH_KNOWN_IDS_FILE", &file.known_ids_file),
                incremental: file.incremental.unwrap_or(defaults::INCREMENTAL),
            },
            server: ServerSettings {
                listen: pick(&flags.listen, "IDGRAPH_LISTEN", &file.listen)
                    .unwrap_or_else(|| defaults::LISTEN.to_string()),
                read_token: secret(&flags.read_token, "IDGRAPH_READ_TOKEN", &file.read_token, &file.read_token_file)?,
                admin_token: secret(
                    &flags.admin_token,
                    "IDGRAPH_ADMIN_TOKEN",
                    &file.admin_token,
                    &file.admin_token_file,
                )?,
                webhook_token: secret(
                    &flags.webhook_token,
                    "IDGRAPH_WEBHOOK_TOKEN",
                    &file.webhook_token,
                    &file.webhook_token_file,
                )?,
                cors_origins: cors,
                backup_dir: path(&flags.backup_dir, "IDGRAPH_BACKUP_DIR", &file.backup_dir),
                oidc: match &file.oidc {
                    Some(o) => Some(OidcSettings {
                        issuer: o.issuer.clone(),
                        client_id: o.client_id.clone(),
                        client_secret: match (&o.client_secret, &o.client_secret_file) {
                            (Some(s), _) => s.clone(),
                            (None, Some(p)) => read_secret("[oidc] client_secret_file", p)?,
                            (None, None) => match env.get("IDGRAPH_OIDC_CLIENT_SECRET_FILE") {
                                Some(p) => read_secret("IDGRAPH_OIDC_CLIENT_SECRET_FILE", Path::new(&p))?,
                                None => anyhow::bail!("[oidc] needs client_secret or client_secret_file"),
                            },
                        },
                        audience: o.audience.clone().unwrap_or_else(|| o.client_id.clone()),
                        role_claim: o.role_claim.clone().unwrap_or_else(|| "groups".into()),
                        roles: o.roles.clone(),
                        scopes: o.scopes.clone().unwrap_or_else(|| vec!["email".into(), "profile".into()]),
                        algorithms: o.algorithms.clone().unwrap_or_default(),
                    }),
                    None => None,
                },
                access_log: env.get("IDGRAPH_ACCESS_LOG").or_else(|| file.access_log.clone()),
                access_log_retention_days: file.access_log_retention_days.unwrap_or(400),
                access_log_dir: file.access_log_dir.clone(),
                trusted_proxies: file
                    .trusted_proxies
                    .iter()
                    .flatten()
                    .map(|a| a.parse().with_context(|| format!("trusted_proxies: {a:?} is not an IP address")))
                    .collect::<Result<_>>()?,
                session_lifetime: file
                    .session_lifetime
                    .as_deref()
                    .map(duration)
                    .transpose()
                    .context("session_lifetime")?
                    .unwrap_or(Duration::from_secs(8 * 3600)),
                public_url: file.public_url.clone().unwrap_or_else(|| {
                    let listen = pick(&flags.listen, "IDGRAPH_LISTEN", &file.listen)
                        .unwrap_or_else(|| defaults::LISTEN.to_string());
                    format!("http://{listen}")
                }),
            },
            cache_mb: match file.cache_mb {
                Some(0) => anyhow::bail!("cache_mb must be at least 1"),
                Some(n) => n,
                None => idgraph_graph::store::CACHE_BYTES >> 20,
            },
            cases: crate::app::cases::CaseConfig {
                allowance: file
                    .case_allowance
                    .as_deref()
                    .map(duration)
                    .transpose()
                    .context("case_allowance")?
                    .unwrap_or(Duration::from_secs(7 * 86400)),
                notify: file
                    .notify
                    .iter()
                    .flatten()
                    .map(|n| {
                        let format = n.format.clone().unwrap_or_else(|| "slack".into());
                        if format != "slack" && format != "json" {
                            anyhow::bail!("[[notify]] format must be \"slack\" or \"json\", not {format:?}");
                        }
                        Ok(crate::app::cases::NotifyTarget { url: n.url.clone(), format })
                    })
                    .collect::<Result<_>>()?,
                ocsf: file.case_ocsf.clone(),
                org: None,
            },
            schedule: ScheduleSettings {
                full: full.parse().map_err(|e: String| anyhow::anyhow!("full_every: {e}"))?,
                agents_every: duration(&agents).context("agents_every")?,
                rebuild_every: match rebuild.trim() {
                    "off" => None,
                    r => Some(duration(r).context("rebuild_every")?).filter(|d| !d.is_zero()),
                },
                refresh_share: refresh_share(flags, file, env)?,
            },
        })
    }
}

/// The refresher's share of the budget: a number from 0 (off) to 1.
fn refresh_share(flags: &Flags, file: &FileConfig, env: &Env) -> Result<f64> {
    let from_env = env
        .get("IDGRAPH_REFRESH_SHARE")
        .map(|v| v.trim().parse::<f64>().with_context(|| format!("IDGRAPH_REFRESH_SHARE={v:?} is not a number")))
        .transpose()?;
    let share = flags.refresh_share.or(from_env).or(file.refresh_share).unwrap_or(defaults::REFRESH_SHARE);
    if !(0.0..=1.0).contains(&share) {
        anyhow::bail!("refresh_share must be between 0 (off) and 1, not {share}");
    }
    Ok(share)
}

impl DriftSettings {
    /// The crawler's configuration; fails when no credentials were given.
    pub fn crawl_config(&self) -> Result<CrawlConfig> {
        let creds = match (&self.token, &self.oauth) {
            (Some(t), _) => Credentials::Token(t.clone()),
            (None, Some(o)) => Credentials::OAuth(OAuthConfig {
                token_url: o.token_url.clone(),
                client_id: o.client_id.clone(),
                client_secret: o.client_secret.clone(),
                token_file: Some(o.token_file.clone()),
                refresh_token: None,
                refresh_ahead: Duration::from_secs(120),
            }),
            (None, None) => anyhow::bail!(
                "no Drift credentials: pass --token (or set DRIFT_TOKEN), or configure [oauth] after `idgraph auth login`"
            ),
        };
        let mut cfg = CrawlConfig::new(self.drift_url.clone(), creds);
        cfg.scim_url = self.scim_url.clone();
        cfg.scim_credentials = self.scim_token.clone().map(Credentials::Token);
        cfg.budget = self.budget;
        cfg.known_ids_file = self.known_ids_file.clone();
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn each_org_over_the_top_level_and_only_the_chosen_one_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        let text = format!(
            "data_dir = \"{}\"\nrate_limit = \"100/min\"\n[[org]]\nname = \"acme\"\ndrift_url = \"http://a.example\"\n\
             [[org]]\nname = \"beta\"\ntoken_file = \"/nonexistent/token\"\n",
            dir.path().display()
        );
        std::fs::write(&cfg, text).unwrap();
        let env = Env::from_pairs([]);
        let flags =
            |org: Option<&str>| Flags { config: Some(cfg.clone()), org: org.map(str::to_string), ..Flags::default() };
        let acme = Settings::load(&flags(Some("acme")), &env).unwrap();
        assert_eq!(acme.data_dir, dir.path().join("orgs").join("acme"));
        assert_eq!(acme.drift.drift_url, "http://a.example");
        assert_eq!(acme.drift.budget, "100/min".parse().unwrap(), "the top level's keys are the org's defaults");
        assert_eq!(acme.orgs, ["acme", "beta"]);
        let none = Settings::load(&flags(None), &env).unwrap();
        assert!(none.org.is_none() && none.require_org().is_err());
        assert!(Settings::load(&flags(Some("beta")), &env).is_err(), "beta's token file is missing");
        assert!(Settings::load(&flags(Some("gamma")), &env).is_err());
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let s = Settings::resolve(&Flags::default(), &FileConfig::default(), &Env::default()).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("idgraph-data"));
        assert_eq!(s.drift.drift_url, "https://driftapi.com");
        assert_eq!(s.drift.scim_url.as_deref(), Some("https://driftapi.com/scim/v2"));
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.schedule.agents_every, Duration::from_secs(300));
        assert!((s.drift.budget.per_second() - 200.0 / 60.0).abs() < 1e-9);
        assert_eq!(s.schedule.refresh_share, 0.5);
        assert_eq!(s.schedule.rebuild_every, None);
    }

    #[test]
    fn rebuild_every_takes_a_duration_or_off() {
        let at = |v: &str| {
            Settings::resolve(&Flags::default(), &file(&format!("rebuild_every = \"{v}\"")), &Env::default())
                .map(|s| s.schedule.rebuild_every)
        };
        assert_eq!(at("30m").unwrap(), Some(Duration::from_secs(1800)));
        assert_eq!(at("off").unwrap(), None);
        assert_eq!(at("0s").unwrap(), None);
        let err = at("hourly").unwrap_err();
        assert!(format!("{err:#}").contains("rebuild_every"), "{err:#}");
        let env = Env::from_pairs([("IDGRAPH_REBUILD_EVERY", "2h")]);
        let s = Settings::resolve(&Flags::default(), &file("rebuild_every = \"30m\""), &env).unwrap();
        assert_eq!(s.schedule.rebuild_every, Some(Duration::from_secs(7200)), "the environment over the file");
    }

    #[test]
    fn the_file_overrides_defaults() {
        let f =
            file("data_dir = \"/var/lib/idgraph\"\nrate_limit = \"50/s\"\nscim_url = \"none\"\nagents_every = \"1m\"");
        let s = Settings::resolve(&Flags::default(), &f, &Env::default()).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/idgraph"));
        assert!((s.drift.budget.per_second() - 50.0).abs() < 1e-9);
        assert_eq!(s.drift.scim_url, None);
        assert_eq!(s.schedule.agents_every, Duration::from_secs(60));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let f = file("data_dir = \"/from/file\"\nlisten = \"0.0.0.0:1\"\ntoken = \"file-token\"");
        let env = Env::from_pairs([("IDGRAPH_DATA_DIR", "/from/env"), ("DRIFT_TOKEN", "env-token")]);
        let s = Settings::resolve(&Flags::default(), &f, &env).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/from/env"));
        assert_eq!(s.drift.token.as_ref().map(Secret::expose), Some("env-token"));
        assert_eq!(s.server.listen, "0.0.0.0:1", "what the environment does not set comes from the file");
    }

    #[test]
    fn flags_override_the_environment() {
        let f = file("data_dir = \"/from/file\"");
        let env = Env::from_pairs([("IDGRAPH_DATA_DIR", "/from/env"), ("IDGRAPH_RATE_LIMIT", "10/s")]);
        let flags = Flags { data_dir: Some("/from/flag".into()), rate_limit: Some("20/s".into()), ..Flags::default() };
        let s = Settings::resolve(&flags, &f, &env).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/from/flag"));
        assert!((s.drift.budget.per_second() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn the_refresh_share_layers_and_is_bounded() {
        let f = file("refresh_share = 0.3");
        let env = Env::from_pairs([("IDGRAPH_REFRESH_SHARE", "0.2")]);
        assert_eq!(Settings::resolve(&Flags::default(), &f, &Env::default()).unwrap().schedule.refresh_share, 0.3);
        assert_eq!(Settings::resolve(&Flags::default(), &f, &env).unwrap().schedule.refresh_share, 0.2);
        let flags = Flags { refresh_share: Some(0.0), ..Flags::default() };
        assert_eq!(Settings::resolve(&flags, &f, &env).unwrap().schedule.refresh_share, 0.0);
        let flags = Flags { refresh_share: Some(1.5), ..Flags::default() };
        assert!(Settings::resolve(&flags, &f, &env).is_err());
    }

    #[test]
    fn bad_values_say_which_setting() {
        let flags = Flags { rate_limit: Some("lots".into()), ..Flags::default() };
        let e = Settings::resolve(&flags, &FileConfig::default(), &Env::default()).unwrap_err();
        assert!(format!("{e:#}").contains("rate limit"), "{e:#}");
    }

    #[test]
    fn settings_never_print_secrets() {
        let flags = Flags { token: Some("s3cr3t".into()), read_token: Some("r34d".into()), ..Flags::default() };
        let s = Settings::resolve(&flags, &FileConfig::default(), &Env::default()).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("r34d"), "{shown}");
    }

    #[test]
    fn secrets_come_from_files_and_a_config_holding_one_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("drift-token");
        std::fs::write(&tok, "from-a-file\n").unwrap();
        let read = dir.path().join("read-token");
        std::fs::write(&read, "read-secret").unwrap();
        let env = Env::from_pairs([("IDGRAPH_TOKEN_FILE", tok.to_str().unwrap())]);
        let f = FileConfig { read_token_file: Some(read.clone()), ..FileConfig::default() };
        let s = Settings::resolve(&Flags::default(), &f, &env).unwrap();
        assert_eq!(s.drift.token.as_ref().map(|t| t.expose().to_string()), Some("from-a-file".into()));
        assert_eq!(s.server.read_token.as_ref().map(|t| t.expose().to_string()), Some("read-secret".into()));
        let missing = Env::from_pairs([("IDGRAPH_ADMIN_TOKEN_FILE", "/no/such/file")]);
        let err = format!("{:#}", Settings::resolve(&Flags::default(), &FileConfig::default(), &missing).unwrap_err());
        assert!(err.contains("/no/such/file"), "{err}");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let cfg = dir.path().join("idgraph.toml");
            std::fs::write(&cfg, "admin_token = \"s3cret-admin\"\n").unwrap();
            std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = format!("{:#}", FileConfig::load(Some(&cfg)).unwrap_err());
            assert!(err.contains("chmod 600") && err.contains("idgraph.toml"), "{err}");
            assert!(!err.contains("s3cret-admin"), "the secret is not in the error: {err}");
            std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(FileConfig::load(Some(&cfg)).is_ok());
            // A file that names secret files only may be read by others.
            std::fs::write(&cfg, format!("read_token_file = \"{}\"\n", read.display())).unwrap();
            std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(FileConfig::load(Some(&cfg)).is_ok());
        }
    }
}
