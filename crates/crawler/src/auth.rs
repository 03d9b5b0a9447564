//! Credentials: a personal access token, or OAuth 2.0 with refresh.
//!
//! OAuth access tokens are refreshed ahead of expiry and once on a 401/403; one refresh is in
//! flight however many requests wait for it; the newest refresh token is written to a file with
//! mode 0600. Secrets never appear in `Debug`, `Display`, logs or errors.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::CrawlError;

pub use idgraph_model::Secret;

/// How requests authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A personal access token (or an OAuth token that never expires).
    Token(Secret),
    /// OAuth 2.0 with a refresh token.
    OAuth(OAuthConfig),
}

#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// `https://driftapi.com/oauth2/token`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Where the newest tokens are kept (mode 0600). Read at start when `refresh_token` is `None`.
    pub token_file: Option<PathBuf>,
    pub refresh_token: Option<Secret>,
    /// How long before expiry to refresh.
    pub refresh_ahead: Duration,
}

/// What the token file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTokens {
    pub refresh_token: Secret,
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// Epoch seconds when the access token expires; absent = never.
    #[serde(default)]
    pub expires_at_epoch_s: Option<i64>,
}

impl StoredTokens {
    pub fn read(path: &std::path::Path) -> Result<StoredTokens, CrawlError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CrawlError::Auth(format!("cannot read token file {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| CrawlError::Auth(format!("token file {} is not valid: {e}", path.display())))
    }

    /// Writes atomically (temporary file, then rename) with mode 0600.
    /// Writes the tokens to `path` (0600) through a temporary file renamed into place.
    pub fn write(&self, path: &std::path::Path) -> Result<(), CrawlError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| CrawlError::Auth(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| CrawlError::Auth(format!("cannot write token file {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
        }
        {
            use std::io::Write;
            // A temporary file of our own: created new (a file or link planted at its name is
            // removed, never written through), 0600, never following a link.
            match std::fs::symlink_metadata(&tmp) {
                Ok(_) => std::fs::remove_file(&tmp).map_err(io)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
            }
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[derive(Debug)]
struct OAuthState {
    access: Option<Secret>,
    refresh: Secret,
    expires_at: Option<Instant>,
    /// The lifetime of the last access token, to refresh a short-lived one at 90% of it.
    lifetime: Option<Duration>,
}

/// Hands out the current bearer token and refreshes it when needed.
#[derive(Debug)]
pub struct TokenSource {
    kind: Kind,
    /// Bumped on every refresh, so a request that failed with an old token does not refresh again
    /// when another request already did.
    generation: AtomicU64,
}

// One value per token source, made once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Kind {
    Static(Secret),
    OAuth { cfg: OAuthConfig, http: reqwest::Client, state: tokio::sync::Mutex<OAuthState> },
}

impl TokenSource {
    pub fn new(creds: Credentials, http: reqwest::Client) -> Result<TokenSource, CrawlError> {
        let kind = match creds {
            Credentials::Token(t) => Kind::Static(t),
            Credentials::OAuth(cfg) => {
                let (refresh, access, expires_at) = match (&cfg.refresh_token, &cfg.token_file) {
                    (Some(r), _) => (r.clone(), None, None),
                    (None, Some(path)) => {
                        let st = StoredTokens::read(path)?;
                        let exp = st.expires_at_epoch_s.map(|e| {
                            let left = e - chrono_now_s();
                            Instant::now() + Duration::from_secs(left.max(0) as u64)
                        });
                        (st.refresh_token, st.access_token, exp)
                    }
                    (None, None) => {
                        return Err(CrawlError::Auth("OAuth needs a refresh token or a token file".into()));
                    }
                };
                Kind::OAuth {
                    cfg,
                    http,
                    state: tokio::sync::Mutex::new(OAuthState { access, refresh, expires_at, lifetime: None }),
                }
            }
        };
        Ok(TokenSource { kind, generation: AtomicU64::new(0) })
    }

    /// The bearer token to send now, and the generation it belongs to.
    pub async fn bearer(&self) -> Result<(Secret, u64), CrawlError> {
        match &self.kind {
            Kind::Static(t) => Ok((t.clone(), 0)),
            Kind::OAuth { cfg, state, .. } => {
                let mut st = state.lock().await;
                let ahead = st.lifetime.map_or(cfg.refresh_ahead, |l| cfg.refresh_ahead.min(l / 10));
                let stale = st.access.is_none() || st.expires_at.is_some_and(|t| Instant::now() + ahead >= t);
                if stale {
                    self.refresh_locked(&mut st).await?;
                }
                let tok = st.access.clone().ok_or_else(|| CrawlError::Auth("no access token".into()))?;
                Ok((tok, self.generation.load(Ordering::SeqCst)))
            }
        }
    }

    /// A request made with generation `gen` was refused: refresh, unless someone already did.
    /// Returns false when there is nothing to refresh (a personal access token).
    pub async fn refresh_after_refusal(&self, gen: u64) -> Result<bool, CrawlError> {
        match &self.kind {
            Kind::Static(_) => Ok(false),
            Kind::OAuth { state, .. } => {
                let mut st = state.lock().await;
                if self.generation.load(Ordering::SeqCst) == gen {
                    self.refresh_locked(&mut st).await?;
                }
                Ok(true)
            }
        }
    }

    async fn refresh_locked(&self, st: &mut OAuthState) -> Result<(), CrawlError> {
        let Kind::OAuth { cfg, http, .. } = &self.kind else {
            return Ok(());
        };
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", st.refresh.expose()),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", cfg.client_secret.expose()),
        ];
        // A refresh is retried a few times on transport errors and 5xx; a refusal is final.
        let mut last = String::new();
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let resp = match http.post(&cfg.token_url).form(&form).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("token endpoint unreachable: {}", e.without_url());
                    continue;
                }
            };
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            if status.is_server_error() || status.as_u16() == 429 {
                last = format!("token endpoint answered {status}");
                continue;
            }
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if !status.is_success() {
                let why = v.get("error").and_then(Value::as_str).unwrap_or("refused");
                return Err(CrawlError::Auth(format!("token refresh refused ({status}): {why}")));
            }
            let Some(access) = v.get("access_token").and_then(Value::as_str) else {
                last = "token response has no access_token".into();
                continue;
            };
            st.access = Some(Secret::new(access));
            if let Some(r) = v.get("refresh_token").and_then(Value::as_str) {
                st.refresh = Secret::new(r);
            }
            let expires_in = v.get("expires_in").and_then(Value::as_u64).unwrap_or(0);
            st.expires_at = (expires_in > 0).then(|| Instant::now() + Duration::from_secs(expires_in));
            st.lifetime = (expires_in > 0).then(|| Duration::from_secs(expires_in));
            self.generation.fetch_add(1, Ordering::SeqCst);
            if let Some(path) = &cfg.token_file {
                StoredTokens {
                    refresh_token: st.refresh.clone(),
                    access_token: st.access.clone(),
                    expires_at_epoch_s: (expires_in > 0).then(|| chrono_now_s() + expires_in as i64),
                }
                .write(path)?;
            }
            tracing::info!(expires_in_s = expires_in, "refreshed the OAuth access token");
            return Ok(());
        }
        Err(CrawlError::Auth(format!("token refresh failed: {last}")))
    }
}

fn chrono_now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Exchanges an authorization code for tokens (the login flow's last step).
pub async fn exchange_code(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    client_secret: &Secret,
    code: &str,
    redirect_uri: &str,
) -> Result<StoredTokens, CrawlError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("client_id", client_id),
        ("client_secret", client_secret.expose()),
        ("redirect_uri", redirect_uri),
    ];
    let resp = http
        .post(token_url)
        .form(&form)
        .send()
        .await
        .map_err(|e| CrawlError::Auth(format!("token endpoint unreachable: {}", e.without_url())))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let why = v.get("error").and_then(Value::as_str).unwrap_or("refused");
        return Err(CrawlError::Auth(format!("code exchange refused ({status}): {why}")));
    }
    let refresh = v
        .get("refresh_token")
        .and_then(Value::as_str)
        .ok_or_else(|| CrawlError::Auth("token response has no refresh_token".into()))?;
    let expires_in = v.get("expires_in").and_then(Value::as_u64).unwrap_or(0);
    Ok(StoredTokens {
        refresh_token: Secret::new(refresh),
        access_token: v.get("access_token").and_then(Value::as_str).map(Secret::new),
        expires_at_epoch_s: (expires_in > 0).then(|| chrono_now_s() + expires_in as i64),
    })
}

#[cfg(all(test, unix))]
mod file_tests {
    use super::*;

    /// A link planted where the temporary file goes is never written through: the file it points
    /// at stays as it was, and the tokens land in their own file, 0600.
    #[test]
    fn the_token_file_is_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("tokens.json");
        std::os::unix::fs::symlink(&victim, path.with_extension("tmp")).unwrap();
        let t = StoredTokens { refresh_token: Secret::new("r"), access_token: None, expires_at_epoch_s: None };
        t.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(StoredTokens::read(&path).unwrap().refresh_token.expose(), "r");
    }
}
