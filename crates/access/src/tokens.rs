//! Named service tokens for scripts and CI: each with a name, a role (in one org or in all) and an
//! optional expiry, stored as SHA-256 digests in `tokens.json` under the data directory (0600),
//! shown once at creation. A running server reads the file again when it changes
//! (`TokenStore::reload_if_changed`, every 250 ms), so a token revoked from the command line is
//! refused within a second. The configured `read_token` and `admin_token` are two more named
//! tokens, held in memory only.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::{digest, random_secret, Grant, Kind, Principal, Role};

/// The prefix of every token idgraph creates (secret scanners can look for it).
pub const TOKEN_PREFIX: &str = "idg_";
/// The file under the data directory.
pub const TOKENS_FILE: &str = "tokens.json";
/// The names the configured tokens go by.
pub const READ_TOKEN_NAME: &str = "read_token";
pub const ADMIN_TOKEN_NAME: &str = "admin_token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    #[error("a token named {0:?} exists already (revoke it first, or pick another name)")]
    Exists(String),
    #[error("no token is named {0:?}")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a token file: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("{0} is locked by another command for more than 5 s (remove it if no idgraph command is running)")]
    Locked(PathBuf),
}

/// One token as stored: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl TokenRecord {
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    fn principal(&self) -> Principal {
        Principal {
            name: self.name.clone(),
            kind: Kind::ServiceToken,
            grants: vec![Grant { role: self.role, org: self.org.clone() }],
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

/// Why a bearer token that looks like a service token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefused {
    /// No token has this digest (never issued, or revoked).
    Unknown,
    /// The named token expired at the time given.
    Expired { name: String, at: DateTime<Utc> },
}

impl std::fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRefused::Unknown => f.write_str("the token is not one this server knows (never issued, or revoked)"),
            TokenRefused::Expired { name, at } => write!(f, "service token {name:?} expired at {}", at.to_rfc3339()),
        }
    }
}

/// The tokens a server accepts, by digest.
pub struct TokenStore {
    path: Option<PathBuf>,
    builtin: Vec<TokenRecord>,
    state: RwLock<Loaded>,
}

#[derive(Default)]
struct Loaded {
    by_digest: HashMap<[u8; 32], TokenRecord>,
    /// The file as last read (modified time and length): read again when either changes.
    seen: Option<(SystemTime, u64)>,
}

impl TokenStore {
    /// The tokens of `tokens.json` under `dir` (none while it does not exist), plus `builtin`.
    pub fn open(
        dir: Option<&Path>,
        builtin: Vec<(String, Role, idgraph_model::Secret)>,
    ) -> Result<TokenStore, TokenError> {
        let now = Utc::now();
        let builtin = builtin
            .into_iter()
            .map(|(name, role, secret)| TokenRecord {
                name,
                role,
                org: None,
                sha256: hex::encode(digest(secret.expose())),
                created_at: now,
                expires_at: None,
            })
            .collect();
        let store =
            TokenStore { path: dir.map(|d| d.join(TOKENS_FILE)), builtin, state: RwLock::new(Loaded::default()) };
        store.reload()?;
        Ok(store)
    }

    /// A store with no tokens and no file.
    pub fn empty() -> TokenStore {
        TokenStore { path: None, builtin: Vec::new(), state: RwLock::new(Loaded::default()) }
    }

    /// Whether any token is known (a server without tokens and without sign-in is open).
    pub fn is_empty(&self) -> bool {
        self.state.read().by_digest.is_empty()
    }

    /// Reads the file again if it changed since it was last read. A file that cannot be read
    /// keeps the tokens as they were (and the error is returned to be logged).
    pub fn reload_if_changed(&self) -> Result<bool, TokenError> {
        let Some(path) = &self.path else { return Ok(false) };
        let now = std::fs::metadata(path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if now == self.state.read().seen {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    fn reload(&self) -> Result<(), TokenError> {
        let (records, seen) = match &self.path {
            Some(p) => {
                let seen = std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
                (read_file(p)?.tokens, seen)
            }
            None => (Vec::new(), None),
        };
        let mut by_digest = HashMap::new();
        for r in self.builtin.iter().chain(records.iter()) {
            let mut d = [0u8; 32];
            if hex::decode_to_slice(&r.sha256, &mut d).is_ok() {
                by_digest.insert(d, r.clone());
            }
        }
        *self.state.write() = Loaded { by_digest, seen };
        Ok(())
    }

    /// The principal a bearer token stands for. Lookup is by the token's SHA-256: a hash map
    /// finds it without comparing secrets byte by byte.
    pub fn check(&self, token: &str) -> Result<Principal, TokenRefused> {
        let state = self.state.read();
        let r = state.by_digest.get(&digest(token)).ok_or(TokenRefused::Unknown)?;
        let now = Utc::now();
        if let Some(at) = r.expires_at.filter(|_| r.expired(now)) {
            return Err(TokenRefused::Expired { name: r.name.clone(), at });
        }
        Ok(r.principal())
    }

    /// Every token known now, the configured ones first.
    pub fn list(&self) -> Vec<TokenRecord> {
        let mut v: Vec<TokenRecord> = self.state.read().by_digest.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        v
    }

    /// The file this store reads, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// The configured `read_token` (an auditor) and `admin_token` (an admin) as named tokens.
pub fn configured(
    read: Option<idgraph_model::Secret>,
    admin: Option<idgraph_model::Secret>,
) -> Vec<(String, Role, idgraph_model::Secret)> {
    let mut v = Vec::new();
    if let Some(r) = read {
        v.push((READ_TOKEN_NAME.to_string(), Role::Auditor, r));
    }
    if let Some(a) = admin {
        v.push((ADMIN_TOKEN_NAME.to_string(), Role::Admin, a));
    }
    v
}

/// Parses `90d`, `12h`, `2w` (humantime) into an expiry from now.
pub fn expiry(after: &str) -> Result<DateTime<Utc>, TokenError> {
    let d: Duration = humantime::parse_duration(after)
        .map_err(|e| TokenError::Invalid(format!("--expires {after:?}: {e} (say 90d, 12h, 2w)")))?;
    let d =
        chrono::Duration::from_std(d).map_err(|_| TokenError::Invalid(format!("--expires {after:?} is too far")))?;
    Utc::now().checked_add_signed(d).ok_or_else(|| TokenError::Invalid(format!("--expires {after:?} is too far")))
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Creates a token in `dir`'s `tokens.json` and returns it: the only time it is ever shown.
pub fn create(
    dir: &Path,
    name: &str,
    role: Role,
    org: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<String, TokenError> {
    if !name_ok(name) {
        return Err(TokenError::Invalid(format!(
            "{name:?} is not a token name: 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )));
    }
    if [READ_TOKEN_NAME, ADMIN_TOKEN_NAME].contains(&name) {
        return Err(TokenError::Invalid(format!("{name:?} is the configured token's name: pick another")));
    }
    let token = random_secret(TOKEN_PREFIX);
    edit(dir, |f| {
        if f.tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::Exists(name.to_string()));
        }
        f.tokens.push(TokenRecord {
            name: name.to_string(),
            role,
            org: org.map(str::to_string),
            sha256: hex::encode(digest(&token)),
            created_at: Utc::now(),
            expires_at,
        });
        Ok(())
    })?;
    Ok(token)
}

/// Removes the token `name` from `dir`'s `tokens.json`.
pub fn revoke(dir: &Path, name: &str) -> Result<TokenRecord, TokenError> {
    let mut gone = None;
    edit(dir, |f| {
        let i = f.tokens.iter().position(|t| t.name == name).ok_or_else(|| TokenError::NotFound(name.to_string()))?;
        gone = Some(f.tokens.remove(i));
        Ok(())
    })?;
    gone.ok_or_else(|| TokenError::NotFound(name.to_string()))
}

/// The tokens stored in `dir` (not the configured ones, which live in the configuration).
pub fn list(dir: &Path) -> Result<Vec<TokenRecord>, TokenError> {
    Ok(read_file(&dir.join(TOKENS_FILE))?.tokens)
}

fn read_file(path: &Path) -> Result<TokenFile, TokenError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| TokenError::Corrupt { path: path.into(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(source) => Err(TokenError::Io { path: path.into(), source }),
    }
}

/// Reads, changes and writes `tokens.json` under a lock file, replacing it whole (a new file,
/// 0600, renamed over the old one): a server reading it meanwhile sees the old or the new.
fn edit(dir: &Path, change: impl FnOnce(&mut TokenFile) -> Result<(), TokenError>) -> Result<(), TokenError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TokenError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(TOKENS_FILE);
    let lock = dir.join("tokens.json.lock");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if std::time::Instant::now() > deadline {
                    return Err(TokenError::Locked(lock));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io(&lock)(e)),
        }
    }
    let result = (|| {
        let mut f = read_file(&path)?;
        change(&mut f)?;
        let tmp = dir.join("tokens.json.new");
        let mut out = open_private(&tmp).map_err(io(&tmp))?;
        let body = serde_json::to_vec_pretty(&f).map_err(|e| TokenError::Invalid(e.to_string()))?;
        out.write_all(&body).and_then(|_| out.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    })();
    let _ = std::fs::remove_file(&lock);
    result
}

/// A new file readable by its owner only.
pub(crate) fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_are_stored_hashed_and_revoked_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = create(dir.path(), "ci", Role::Auditor, None, None).unwrap();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() > 40);
        let file = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!file.contains(&t), "the token itself is never stored");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKENS_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        let store = TokenStore::open(Some(dir.path()), vec![]).unwrap();
        let p = store.check(&t).unwrap();
        assert_eq!((p.name.as_str(), p.role_in(None)), ("ci", Some(Role::Auditor)));
        assert!(matches!(create(dir.path(), "ci", Role::Viewer, None, None), Err(TokenError::Exists(_))));
        revoke(dir.path(), "ci").unwrap();
        // The same second, the same length: the store must still notice (length differs here).
        store.reload_if_changed().unwrap();
        assert_eq!(store.check(&t), Err(TokenRefused::Unknown));
    }

    #[test]
    fn expired_tokens_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let past = Utc::now() - chrono::Duration::seconds(5);
        let t = create(dir.path(), "old", Role::Viewer, Some("eu"), Some(past)).unwrap();
        let store = TokenStore::open(Some(dir.path()), vec![]).unwrap();
        assert!(matches!(store.check(&t), Err(TokenRefused::Expired { name, .. }) if name == "old"));
        assert!(expiry("90d").unwrap() > Utc::now() + chrono::Duration::days(89));
        assert!(expiry("soon").is_err());
    }

    #[test]
    fn configured_tokens_are_named_tokens() {
        let store = TokenStore::open(
            None,
            vec![(ADMIN_TOKEN_NAME.into(), Role::Admin, idgraph_model::Secret::new("adm1n-secret"))],
        )
        .unwrap();
        let p = store.check("adm1n-secret").unwrap();
        assert_eq!((p.name.as_str(), p.top_role()), (ADMIN_TOKEN_NAME, Some(Role::Admin)));
        assert_eq!(store.check("adm1n-secreT"), Err(TokenRefused::Unknown));
    }
}
