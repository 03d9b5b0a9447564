//! Sign-in through the company's identity provider: OpenID Connect's authorization code flow with
//! PKCE (the `openidconnect` crate: discovery, the authorization URL, the code exchange, the ID
//! token's checks), for the browser pages. The role comes from the ID token's role claim, or from
//! the userinfo endpoint when the provider puts it only there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use parking_lot::Mutex;

use crate::jwt::JwtVerifier;
use crate::{principal_name, Kind, Principal};

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: idgraph_model::Secret,
    /// Where the provider sends the browser back: this server's `/auth/callback`.
    pub redirect_url: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider at {issuer} cannot be reached or is not an OpenID provider: {why}")]
    Discovery { issuer: String, why: String },
    #[error("{0}")]
    Config(String),
    #[error("this sign-in was not started here, or took longer than 10 minutes: start again")]
    UnknownState,
    #[error("the identity provider refused the sign-in: {0}")]
    Provider(String),
    #[error("the identity provider's ID token was refused: {0}")]
    IdToken(String),
}

struct Pending {
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    next: String,
    started: Instant,
}

/// Sign-ins started and not yet finished, at most this many (the oldest are dropped).
const PENDING_MAX: usize = 10_000;
const PENDING_FOR: Duration = Duration::from_secs(600);

pub struct Oidc {
    cfg: OidcConfig,
    http: reqwest::Client,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    pending: Mutex<HashMap<String, Pending>>,
    jwt: Arc<JwtVerifier>,
    /// The provider's end-session endpoint, once read (`Some(None)`: it publishes none).
    end_session: tokio::sync::OnceCell<Option<String>>,
}

impl Oidc {
    /// The provider is discovered on first use (and again after a failure), so that a server
    /// starts while its provider is down.
    pub fn new(cfg: OidcConfig, jwt: Arc<JwtVerifier>) -> Result<Oidc, OidcError> {
        RedirectUrl::new(cfg.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("the redirect URL {:?}: {e}", cfg.redirect_url)))?;
        IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| OidcError::Config(format!("the issuer {:?}: {e}", cfg.issuer)))?;
        // The provider's own redirects are not followed (the flow's are the browser's).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            // Sign-ins are rare: a fresh connection each time, never one the provider has
            // meanwhile closed as idle.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        Ok(Oidc {
            cfg,
            http,
            client: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            jwt,
            end_session: tokio::sync::OnceCell::new(),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    async fn client(&self) -> Result<Arc<Client>, OidcError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let issuer = IssuerUrl::new(self.cfg.issuer.clone()).map_err(|e| OidcError::Config(e.to_string()))?;
        let meta = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Discovery { issuer: self.cfg.issuer.clone(), why: error_chain(&e) })?;
        let redirect = RedirectUrl::new(self.cfg.redirect_url.clone()).map_err(|e| OidcError::Config(e.to_string()))?;
        let client = CoreClient::from_provider_metadata(
            meta,
            ClientId::new(self.cfg.client_id.clone()),
            Some(ClientSecret::new(self.cfg.client_secret.expose().to_string())),
        )
        .set_redirect_uri(redirect);
        let c = Arc::new(client);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Starts a sign-in: the provider's URL to send the browser to. `next` is the page to come
    /// back to (a path of this server).
    pub async fn begin(&self, next: &str) -> Result<String, OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for s in &self.cfg.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        let next = if next.starts_with('/') && !next.starts_with("//") { next } else { "/" };
        let mut pending = self.pending.lock();
        pending.retain(|_, p| p.started.elapsed() < PENDING_FOR);
        if pending.len() >= PENDING_MAX {
            if let Some(oldest) = pending.iter().min_by_key(|(_, p)| p.started).map(|(k, _)| k.clone()) {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            state.secret().clone(),
            Pending { verifier, nonce, next: next.to_string(), started: Instant::now() },
        );
        Ok(url.to_string())
    }

    /// Finishes a sign-in: exchanges the code (with the PKCE verifier), checks the ID token (by
    /// the `openidconnect` crate, and by the JWT verifier, which also reads the role claim), and
    /// returns the person and the page to go back to.
    pub async fn finish(&self, code: &str, state: &str, role_claim: &str) -> Result<(Principal, String), OidcError> {
        let p = {
            let mut pending = self.pending.lock();
            pending.remove(state).filter(|p| p.started.elapsed() < PENDING_FOR).ok_or(OidcError::UnknownState)?
        };
        let client = self.client().await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(p.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Provider(error_chain(&e)))?;
        let id_token = token.id_token().ok_or_else(|| OidcError::IdToken("the provider sent no ID token".into()))?;
        id_token.claims(&client.id_token_verifier(), &p.nonce).map_err(|e| OidcError::IdToken(error_chain(&e)))?;
        let raw = id_token.to_string();
        let mut claims =
            self.jwt.claims(&raw, &self.cfg.client_id).await.map_err(|e| OidcError::IdToken(e.to_string()))?;
        if claims.get("nonce").and_then(|n| n.as_str()) != Some(p.nonce.secret().as_str()) {
            return Err(OidcError::IdToken("its nonce is not this sign-in's".into()));
        }
        if claims.get(role_claim).is_none() {
            // Some providers give the groups only at the userinfo endpoint.
            if let Some(extra) = self.userinfo(&client, token.access_token().secret()).await {
                if extra.get("sub") == claims.get("sub") {
                    if let (Some(v), Some(obj)) = (extra.get(role_claim), claims.as_object_mut()) {
                        obj.insert(role_claim.to_string(), v.clone());
                    }
                }
            }
        }
        let grants = self.jwt.config().roles.grants(claims.get(role_claim));
        Ok((Principal { name: principal_name(&claims), kind: Kind::Person, grants }, p.next))
    }

    async fn userinfo(&self, client: &Client, access_token: &str) -> Option<serde_json::Value> {
        let url = client.user_info_url()?.url().clone();
        let resp = self.http.get(url).bearer_auth(access_token).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// The provider's end-session endpoint, if it publishes one (not all do): read from its
    /// discovery document at the first sign-out (again later if the provider could not be read).
    pub async fn end_session_url(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct D {
            end_session_endpoint: Option<String>,
        }
        let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer.trim_end_matches('/'));
        let found = self
            .end_session
            .get_or_try_init(|| async {
                crate::jwt::get_json::<D>(&self.http, &url).await.map(|d| d.end_session_endpoint)
            })
            .await;
        found.ok().cloned().flatten()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
