//! The server's `Access`: who may do what (configured tokens, service tokens, the identity
//! provider's sign-in and JWTs) and the access log, built from the settings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use idgraph_access::jwt::{Algorithm, JwtConfig, JwtVerifier, DEFAULT_ALGORITHMS};
use idgraph_access::log::{AccessLog, Sink};
use idgraph_access::oidc::{Oidc, OidcConfig};
use idgraph_access::session::Sessions;
use idgraph_access::tokens::{configured, TokenStore};
use idgraph_access::Access;

use crate::app::settings::ServerSettings;

/// The access log's directory under the data directory.
pub const ACCESS_DIR: &str = "access";

/// Builds the server's access. `insecure_no_auth`: with no token, no service token and no
/// identity provider, every caller is admin (refused otherwise, with how to set one up).
/// `keep_log`: false only to measure what the access log costs.
pub fn build(srv: &ServerSettings, data_dir: &Path, insecure_no_auth: bool, keep_log: bool) -> Result<Arc<Access>> {
    let builtin = configured(srv.read_token.clone(), srv.admin_token.clone());
    let tokens = TokenStore::open(Some(data_dir), builtin).context("the service tokens")?;
    let (jwt, oidc) = match &srv.oidc {
        Some(o) => {
            let algorithms = if o.algorithms.is_empty() {
                DEFAULT_ALGORITHMS.to_vec()
            } else {
                o.algorithms
                    .iter()
                    .map(|a| {
                        let alg: Algorithm = a
                            .parse()
                            .map_err(|_| anyhow::anyhow!("[oidc] algorithms: {a:?} is not a JWS algorithm"))?;
                        if !DEFAULT_ALGORITHMS.contains(&alg) {
                            anyhow::bail!("[oidc] algorithms: {a} is not allowed (only asymmetric algorithms are)");
                        }
                        Ok(alg)
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                // Keys are fetched rarely: never on a connection the provider closed as idle.
                .pool_max_idle_per_host(0)
                .build()
                .context("an HTTP client for the identity provider")?;
            let jwt = Arc::new(JwtVerifier::new(
                JwtConfig {
                    issuer: o.issuer.clone(),
                    audience: o.audience.clone(),
                    algorithms,
                    leeway: Duration::from_secs(60),
                    role_claim: o.role_claim.clone(),
                    roles: o.roles.clone(),
                },
                http,
            ));
            let oidc = Oidc::new(
                OidcConfig {
                    issuer: o.issuer.clone(),
                    client_id: o.client_id.clone(),
                    client_secret: o.client_secret.clone(),
                    redirect_url: format!("{}/auth/callback", srv.public_url.trim_end_matches('/')),
                    scopes: o.scopes.clone(),
                },
                jwt.clone(),
            )
            .context("[oidc]")?;
            (Some(jwt), Some(oidc))
        }
        None => (None, None),
    };
    let open = tokens.is_empty() && oidc.is_none();
    if open {
        check_not_open(srv, data_dir, insecure_no_auth)?;
    }
    let log = if keep_log {
        let sink = srv.access_log.as_deref().map(Sink::parse);
        let dir = srv.access_log_dir.clone().unwrap_or_else(|| data_dir.join(ACCESS_DIR));
        match AccessLog::open(&dir, srv.access_log_retention_days, sink) {
            Ok(l) => Some(l),
            // A read-only copy served without sign-in (an auditor's laptop): nobody to name.
            Err(e) if open => {
                tracing::warn!(error = %e, "the access log cannot be kept here (set access_log_dir to a writable directory): requests are not recorded");
                None
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("the access log cannot be kept: set access_log_dir to a writable directory"))
            }
        }
    } else {
        tracing::warn!("--no-access-log: requests are not recorded (for measurements only)");
        None
    };
    Ok(Arc::new(Access {
        open,
        tokens,
        jwt,
        oidc,
        sessions: Sessions::new(srv.session_lifetime),
        log,
        trusted_proxies: srv.trusted_proxies.clone(),
        secure_cookies: srv.public_url.starts_with("https://"),
    }))
}

/// Refuses, before anything is created, a server that would let anyone in without
/// `--insecure-no-auth`.
pub fn check_not_open(srv: &ServerSettings, data_dir: &Path, insecure_no_auth: bool) -> Result<()> {
    let stored = idgraph_access::tokens::list(data_dir).map(|t| !t.is_empty()).unwrap_or(false);
    if insecure_no_auth || srv.read_token.is_some() || srv.admin_token.is_some() || srv.oidc.is_some() || stored {
        return Ok(());
    }
    anyhow::bail!(
        "this server would let anyone in: connect an identity provider ([oidc] in the config), create a service token (`idgraph token create NAME --role admin --data-dir {}`), set read_token and admin_token, or pass --insecure-no-auth",
        data_dir.display()
    )
}

/// Reads `tokens.json` again whenever it changes, so that a token created or revoked from the
/// command line counts within a second; and fetches the provider's keys once at start.
pub fn watch(access: Arc<Access>) {
    tokio::spawn(async move {
        if let Some(j) = &access.jwt {
            if let Err(e) = j.refetch().await {
                tracing::warn!(error = %e, "the identity provider's keys could not be fetched yet: they will be at the first JWT");
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            match access.tokens.reload_if_changed() {
                Ok(true) => tracing::info!(tokens = access.tokens.list().len(), "service tokens read again"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the service tokens file could not be read: the tokens as they were stay")
                }
            }
        }
    });
}
