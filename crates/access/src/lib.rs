//! Who may do what, and the trail of who did.
//!
//! A request is made by a [`Principal`]: a person signed in through the company's identity
//! provider (`oidc`, `session`), an API client with a JWT from that provider (`jwt`), a named
//! service token (`tokens`), or the anonymous caller of a server that runs without sign-in (the
//! demo). A principal holds [`Grant`]s: a [`Role`] in one org or in every org. Every request that
//! reads contact data or changes something is written to the access log (`log`), a hash chain
//! that `verify` checks offline.
//!
//! This crate knows nothing of GraphQL or of the HTTP server's routes: the server asks it who a
//! caller is and writes what it answered.

pub mod jwt;
pub mod log;
pub mod oidc;
pub mod session;
pub mod tokens;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a principal may do, each role including the ones below it. Default deny: a principal
/// with no role may do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Lookups: who owns a contact, an agent's holdings.
    Viewer,
    /// Also orphans, audits, exports, the change feed, the audit page.
    Auditor,
    /// Also reindex, reassignments, backups, service tokens, the access log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Auditor, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s.to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "auditor" => Ok(Role::Auditor),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("{s:?} is not a role: viewer, auditor or admin")),
        }
    }
}

/// A role in one org (`org: Some`) or in every org the server indexes (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
}

impl Grant {
    pub fn everywhere(role: Role) -> Grant {
        Grant { role, org: None }
    }
}

/// Whether `name` is a plain org name: 1-64 lower-case letters, digits, `-` and `_` (it is a path
/// segment, a header value and a directory name).
pub fn is_org_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Signed in through the identity provider in a browser (a session).
    Person,
    /// An API client with a JWT from the identity provider.
    Jwt,
    /// A named service token.
    ServiceToken,
    /// Nobody: a server that runs without sign-in (the demo, `--insecure-no-auth`).
    Anonymous,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Person => "person",
            Kind::Jwt => "jwt",
            Kind::ServiceToken => "service_token",
            Kind::Anonymous => "anonymous",
        }
    }
}

/// Who made a request, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A person's email or username, a JWT's subject, a service token's name.
    pub name: String,
    pub kind: Kind,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// The caller of a server without sign-in: admin everywhere.
    pub fn anonymous() -> Principal {
        Principal { name: "anonymous".into(), kind: Kind::Anonymous, grants: vec![Grant::everywhere(Role::Admin)] }
    }

    /// The principal's highest role in `org` (`None`: the server's only org), from its grants
    /// for that org and for every org.
    pub fn role_in(&self, org: Option<&str>) -> Option<Role> {
        self.grants
            .iter()
            .filter(|g| g.org.is_none() || (org.is_some() && g.org.as_deref() == org))
            .map(|g| g.role)
            .max()
    }

    /// Whether the principal holds at least `need` in `org`.
    pub fn may(&self, need: Role, org: Option<&str>) -> bool {
        self.role_in(org).is_some_and(|r| r >= need)
    }

    /// The highest role held anywhere (what a page shows beside the name).
    pub fn top_role(&self) -> Option<Role> {
        self.grants.iter().map(|g| g.role).max()
    }
}

/// How claim values of the identity provider map to roles: a principal gets every role one of
/// whose values it carries in `claim` (a string or a list of strings), and no role otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct RoleMap {
    #[serde(default)]
    pub viewer: Vec<String>,
    #[serde(default)]
    pub auditor: Vec<String>,
    #[serde(default)]
    pub admin: Vec<String>,
    /// Roles in one org only (`[oidc.roles.org.NAME]`, the same three lists): a claim value here
    /// grants its role in that org and nothing in the others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub org: BTreeMap<String, RoleMap>,
}

impl RoleMap {
    /// The grants for the values a token carries in its role claim.
    pub fn grants(&self, claim: Option<&serde_json::Value>) -> Vec<Grant> {
        let values: Vec<&str> = match claim {
            Some(serde_json::Value::String(s)) => s.split([' ', ',']).filter(|s| !s.is_empty()).collect(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        let has = |list: &[String]| list.iter().any(|want| values.iter().any(|v| v == want));
        let mut out = Vec::new();
        for (role, list) in [(Role::Viewer, &self.viewer), (Role::Auditor, &self.auditor), (Role::Admin, &self.admin)] {
            if has(list) {
                out.push(Grant::everywhere(role));
            }
        }
        for (org, map) in &self.org {
            for (role, list) in [(Role::Viewer, &map.viewer), (Role::Auditor, &map.auditor), (Role::Admin, &map.admin)]
            {
                if has(list) {
                    out.push(Grant { role, org: Some(org.clone()) });
                }
            }
        }
        out
    }
}

/// The name a principal from the identity provider goes by: its email, else its username, else
/// its subject, else the client it was issued to.
pub fn principal_name(claims: &serde_json::Value) -> String {
    ["email", "preferred_username", "sub", "client_id", "azp"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(|v| v.as_str()).filter(|s| !s.is_empty()))
        .unwrap_or("unknown")
        .to_string()
}

/// SHA-256 of a secret a caller presented: what is stored and compared, never the secret.
pub fn digest(secret: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random secret: 32 bytes, URL-safe base64, with a prefix that says what it is.
pub fn random_secret(prefix: &str) -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_names_are_plain() {
        assert!(is_org_name("acme-eu_2"));
        assert!(!is_org_name("Acme"));
        assert!(!is_org_name("a/b"));
        assert!(!is_org_name(""));
        assert!(!is_org_name(&"a".repeat(65)));
    }

    #[test]
    fn roles_are_ordered_and_grants_are_per_org() {
        assert!(Role::Admin > Role::Auditor && Role::Auditor > Role::Viewer);
        let p = Principal {
            name: "a".into(),
            kind: Kind::ServiceToken,
            grants: vec![Grant { role: Role::Auditor, org: Some("eu".into()) }, Grant::everywhere(Role::Viewer)],
        };
        assert_eq!(p.role_in(Some("eu")), Some(Role::Auditor));
        assert_eq!(p.role_in(Some("us")), Some(Role::Viewer));
        assert_eq!(p.role_in(None), Some(Role::Viewer));
        assert!(!p.may(Role::Auditor, Some("us")));
        let nobody = Principal { name: "n".into(), kind: Kind::Jwt, grants: vec![] };
        assert!(!nobody.may(Role::Viewer, None), "no grant, no access");
    }

    #[test]
    fn role_map_reads_strings_and_lists() {
        let eu = RoleMap { auditor: vec!["eu-sec".into()], ..RoleMap::default() };
        let m = RoleMap {
            viewer: vec!["staff".into()],
            auditor: vec!["sec".into()],
            admin: vec!["it-admins".into()],
            org: BTreeMap::from([("eu".to_string(), eu)]),
        };
        let p = Principal { name: "a".into(), kind: Kind::Jwt, grants: m.grants(Some(&serde_json::json!(["eu-sec"]))) };
        assert_eq!(p.role_in(Some("eu")), Some(Role::Auditor));
        assert_eq!(p.role_in(Some("us")), None);
        let g = m.grants(Some(&serde_json::json!(["staff", "sec"])));
        assert_eq!(g.iter().map(|g| g.role).max(), Some(Role::Auditor));
        assert_eq!(m.grants(Some(&serde_json::json!("it-admins"))), vec![Grant::everywhere(Role::Admin)]);
        assert!(m.grants(Some(&serde_json::json!(["other"]))).is_empty());
        assert!(m.grants(None).is_empty());
    }
}

/// Everything a server needs to tell who a caller is, and to write down what they did.
pub struct Access {
    /// No sign-in at all: every caller is `Principal::anonymous()` (the demo,
    /// `--insecure-no-auth`).
    pub open: bool,
    pub tokens: tokens::TokenStore,
    /// API clients' JWTs (also checks the ID tokens of sign-ins).
    pub jwt: Option<std::sync::Arc<jwt::JwtVerifier>>,
    /// Browser sign-in.
    pub oidc: Option<oidc::Oidc>,
    pub sessions: session::Sessions,
    pub log: Option<log::AccessLog>,
    /// Proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Cookies are `Secure` (the server's public URL is https).
    pub secure_cookies: bool,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("open", &self.open)
            .field("tokens", &self.tokens.list().len())
            .field("jwt", &self.jwt.is_some())
            .field("oidc", &self.oidc.is_some())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// Why a caller was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials at all.
    Missing,
    /// A bearer token that is no service token this server knows.
    Token(tokens::TokenRefused),
    /// A JWT that does not verify.
    Jwt(jwt::JwtRefused),
    /// A session cookie that is no live session.
    Session,
    /// A page's state-changing request without its session's CSRF token.
    Csrf,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => {
                f.write_str("no credentials: sign in, or send a bearer token (a service token or a JWT)")
            }
            Refusal::Token(t) => t.fmt(f),
            Refusal::Jwt(j) => j.fmt(f),
            Refusal::Session => f.write_str("the session has ended: sign in again"),
            Refusal::Csrf => f.write_str("the request lacks its page's CSRF token (X-CSRF-Token)"),
        }
    }
}

impl Refusal {
    /// A short word for metrics and the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Token(tokens::TokenRefused::Unknown) => "unknown_token",
            Refusal::Token(tokens::TokenRefused::Expired { .. }) => "expired_token",
            Refusal::Jwt(jwt::JwtRefused::Expired) => "jwt_expired",
            Refusal::Jwt(jwt::JwtRefused::NotYetValid) => "jwt_not_yet_valid",
            Refusal::Jwt(jwt::JwtRefused::WrongAudience(_)) => "jwt_audience",
            Refusal::Jwt(jwt::JwtRefused::WrongIssuer(_)) => "jwt_issuer",
            Refusal::Jwt(jwt::JwtRefused::AlgNone) | Refusal::Jwt(jwt::JwtRefused::AlgNotAllowed(_)) => "jwt_algorithm",
            Refusal::Jwt(jwt::JwtRefused::UnknownKid(_)) => "jwt_unknown_key",
            Refusal::Jwt(jwt::JwtRefused::BadSignature) => "jwt_signature",
            Refusal::Jwt(_) => "jwt_invalid",
            Refusal::Session => "session",
            Refusal::Csrf => "csrf",
        }
    }
}

impl Access {
    /// A server that answers only these two configured tokens (`read_token` as an auditor,
    /// `admin_token` as an admin), or everyone as admin when both are `None`.
    pub fn with_tokens(read: Option<idgraph_model::Secret>, admin: Option<idgraph_model::Secret>) -> Access {
        let open = read.is_none() && admin.is_none();
        // Without a file nothing can fail to read.
        let tokens = tokens::TokenStore::open(None, tokens::configured(read, admin))
            .unwrap_or_else(|_| tokens::TokenStore::empty());
        Access {
            open,
            tokens,
            jwt: None,
            oidc: None,
            sessions: session::Sessions::new(std::time::Duration::from_secs(8 * 3600)),
            log: None,
            trusted_proxies: Vec::new(),
            secure_cookies: false,
        }
    }

    /// The principal a bearer token stands for: a JWT when it has a JWT's shape and JWTs are
    /// configured, else a service token.
    pub async fn bearer(&self, token: &str) -> Result<Principal, Refusal> {
        if let (Some(jwt), true) = (&self.jwt, jwt::JwtVerifier::looks_like_jwt(token)) {
            return jwt.verify(token).await.map_err(Refusal::Jwt);
        }
        self.tokens.check(token).map_err(Refusal::Token)
    }

    /// The identity provider's claim that roles are read from.
    pub fn role_claim(&self) -> &str {
        self.jwt.as_ref().map_or("groups", |j| j.config().role_claim.as_str())
    }

    /// Queues an access log entry (nothing without a log).
    pub fn record(&self, e: log::Entry) {
        if let Some(l) = &self.log {
            l.record(e);
        }
    }
}
