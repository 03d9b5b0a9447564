//! JWTs from the identity provider, for API clients: checked against the provider's JWKS
//! (signature, an allow-list of algorithms, issuer, audience, expiry and not-before with a small
//! leeway), the role read from a configurable claim. Keys are cached and fetched again when a
//! token names a key id not among them, at most once a minute. A verified token is remembered
//! (by its SHA-256) until it expires, so a client sending the same token pays one hash map
//! lookup a request.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{DecodingKey, Validation};
use lru::LruCache;
use parking_lot::{Mutex, RwLock};

use crate::{digest, principal_name, Kind, Principal, RoleMap};

/// What a verifier accepts.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    /// The `aud` a token must carry.
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    pub role_claim: String,
    pub roles: RoleMap,
}

/// The asymmetric algorithms accepted unless the configuration narrows them. Never `none`, never
/// an HMAC (its key would be the provider's public key: anyone could sign).
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a token was refused: said in the log line and in the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRefused {
    #[error("the token is not a JWT ({0})")]
    Malformed(String),
    #[error("the token is unsigned (alg none)")]
    AlgNone,
    #[error("the token's algorithm {0} is not allowed")]
    AlgNotAllowed(String),
    #[error("the token names a signing key the provider does not publish (kid {0:?})")]
    UnknownKid(String),
    #[error("the provider's keys could not be fetched: {0}")]
    KeysUnavailable(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf in the future)")]
    NotYetValid,
    #[error("the token is for another audience (expected {0:?})")]
    WrongAudience(String),
    #[error("the token is from another issuer (expected {0:?})")]
    WrongIssuer(String),
    #[error("the token lacks the {0} claim")]
    MissingClaim(String),
}

struct Remembered {
    principal: Principal,
    /// `exp`, seconds since the epoch.
    exp: i64,
}

pub struct JwtVerifier {
    cfg: JwtConfig,
    http: reqwest::Client,
    jwks_uri: RwLock<Option<String>>,
    keys: RwLock<JwkSet>,
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    verified: Mutex<LruCache<[u8; 32], Remembered>>,
}

/// How often the keys may be fetched again for an unknown key id.
pub const REFETCH_EVERY: Duration = Duration::from_secs(60);
/// Verified tokens remembered at once.
const REMEMBERED: NonZeroUsize = match NonZeroUsize::new(10_000) {
    Some(n) => n,
    None => unreachable!(),
};
/// The largest discovery document or JWKS read.
const DOCUMENT_MAX_BYTES: usize = 1 << 20;

impl JwtVerifier {
    pub fn new(cfg: JwtConfig, http: reqwest::Client) -> JwtVerifier {
        JwtVerifier {
            cfg,
            http,
            jwks_uri: RwLock::new(None),
            keys: RwLock::new(JwkSet { keys: Vec::new() }),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            verified: Mutex::new(LruCache::new(REMEMBERED)),
        }
    }

    pub fn config(&self) -> &JwtConfig {
        &self.cfg
    }

    /// Whether `token` looks like a JWT (three dot-separated parts) rather than a service token.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// The principal a JWT stands for, with the grants its role claim maps to (possibly none:
    /// the caller refuses a principal without a role).
    pub async fn verify(&self, token: &str) -> Result<Principal, JwtRefused> {
        let key = digest(token);
        let now = chrono::Utc::now().timestamp();
        if let Some(r) = self.verified.lock().get(&key) {
            if r.exp + self.cfg.leeway.as_secs() as i64 > now {
                return Ok(r.principal.clone());
            }
        }
        let claims = self.claims(token, &self.cfg.audience).await?;
        let principal = Principal {
            name: principal_name(&claims),
            kind: Kind::Jwt,
            grants: self.cfg.roles.grants(claims.get(&self.cfg.role_claim)),
        };
        let exp = claims.get("exp").and_then(|v| v.as_i64()).unwrap_or(now);
        self.verified.lock().put(key, Remembered { principal: principal.clone(), exp });
        Ok(principal)
    }

    /// A token's claims once its signature, algorithm, issuer, `audience`, expiry and not-before
    /// are checked (an ID token is checked with the client id as its audience).
    pub async fn claims(&self, token: &str, audience: &str) -> Result<serde_json::Value, JwtRefused> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match raw_alg(token).as_deref() {
            Some(a) if a.eq_ignore_ascii_case("none") => JwtRefused::AlgNone,
            Some(a) if !DEFAULT_ALGORITHMS.iter().any(|x| format!("{x:?}") == a) => JwtRefused::AlgNotAllowed(a.into()),
            _ => JwtRefused::Malformed(e.to_string()),
        })?;
        if !self.cfg.algorithms.contains(&header.alg) {
            return Err(JwtRefused::AlgNotAllowed(format!("{:?}", header.alg)));
        }
        let jwk = match self.find_key(header.kid.as_deref()) {
            Some(k) => k,
            None => {
                self.refetch().await?;
                self.find_key(header.kid.as_deref())
                    .ok_or_else(|| JwtRefused::UnknownKid(header.kid.clone().unwrap_or_default()))?
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| JwtRefused::Malformed(format!("the provider's key: {e}")))?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[audience]);
        v.leeway = self.cfg.leeway.as_secs();
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        use jsonwebtoken::errors::ErrorKind as E;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| match e.kind() {
            E::ExpiredSignature => JwtRefused::Expired,
            E::ImmatureSignature => JwtRefused::NotYetValid,
            E::InvalidAudience => JwtRefused::WrongAudience(audience.to_string()),
            E::InvalidIssuer => JwtRefused::WrongIssuer(self.cfg.issuer.clone()),
            E::InvalidSignature => JwtRefused::BadSignature,
            E::MissingRequiredClaim(c) => JwtRefused::MissingClaim(c.clone()),
            E::InvalidAlgorithm => JwtRefused::AlgNotAllowed(format!("{:?}", header.alg)),
            _ => JwtRefused::Malformed(e.to_string()),
        })?;
        Ok(data.claims)
    }

    fn find_key(&self, kid: Option<&str>) -> Option<jsonwebtoken::jwk::Jwk> {
        let keys = self.keys.read();
        match kid {
            Some(k) => keys.find(k).cloned(),
            None if keys.keys.len() == 1 => keys.keys.first().cloned(),
            None => None,
        }
    }

    /// Fetches the provider's keys, unless they were fetched less than a minute ago (then an
    /// unknown key id stays unknown: a flood of forged key ids costs the provider nothing).
    pub async fn refetch(&self) -> Result<(), JwtRefused> {
        let _one = self.fetching.lock().await;
        if self.last_fetch.lock().is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
            return Ok(());
        }
        *self.last_fetch.lock() = Some(Instant::now());
        let known = self.jwks_uri.read().clone();
        let uri = match known {
            Some(u) => u,
            None => {
                let u = self.discover().await?;
                *self.jwks_uri.write() = Some(u.clone());
                u
            }
        };
        let set: JwkSet = get_json(&self.http, &uri).await.map_err(JwtRefused::KeysUnavailable)?;
        tracing::info!(keys = set.keys.len(), "fetched the identity provider's signing keys");
        *self.keys.write() = set;
        Ok(())
    }

    async fn discover(&self) -> Result<String, JwtRefused> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer.trim_end_matches('/'));
        let d: Discovery = get_json(&self.http, &url).await.map_err(JwtRefused::KeysUnavailable)?;
        if d.issuer != self.cfg.issuer {
            return Err(JwtRefused::KeysUnavailable(format!(
                "the provider at {url} says its issuer is {:?}, not {:?}",
                d.issuer, self.cfg.issuer
            )));
        }
        Ok(d.jwks_uri)
    }
}

/// The `alg` a token's header names, read only to say why a token the JWT library refused was
/// refused (`alg: none` is no algorithm the library knows).
fn raw_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

/// GETs a JSON document of at most 1 MB.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Result<T, String> {
    let resp = http.get(url).timeout(Duration::from_secs(10)).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n as usize > DOCUMENT_MAX_BYTES) {
        return Err(format!("GET {url}: the document is larger than 1 MB"));
    }
    let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() > DOCUMENT_MAX_BYTES {
        return Err(format!("GET {url}: the document is larger than 1 MB"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not the JSON expected ({e})"))
}
