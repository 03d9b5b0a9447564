//! Server-side sessions of people signed in through the identity provider. The cookie carries a
//! random id; the server keeps, by the id's SHA-256, who it is, the CSRF token the page sends
//! back on every state-changing request, and when it ends. Sessions live in memory: a restart
//! signs everyone out, which is the safe side.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{digest, random_secret, Principal};

/// The cookie's name.
pub const COOKIE: &str = "idgraph_session";
/// Sessions held at once; past it the oldest is ended.
const SESSIONS_MAX: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    pub started: Instant,
    pub expires: Instant,
}

pub struct Sessions {
    lifetime: Duration,
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions { lifetime, by_digest: Mutex::new(HashMap::new()) }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Starts a session: the cookie's value (shown to the browser only) and the session.
    pub fn start(&self, principal: Principal) -> (String, Session) {
        let id = random_secret("");
        let now = Instant::now();
        let s = Session { principal, csrf: random_secret(""), started: now, expires: now + self.lifetime };
        let mut all = self.by_digest.lock();
        all.retain(|_, s| s.expires > now);
        if all.len() >= SESSIONS_MAX {
            if let Some(k) = all.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| *k) {
                all.remove(&k);
            }
        }
        all.insert(digest(&id), s.clone());
        (id, s)
    }

    /// The live session a cookie names.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut all = self.by_digest.lock();
        let key = digest(id);
        match all.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                all.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session (sign-out).
    pub fn end(&self, id: &str) -> Option<Session> {
        self.by_digest.lock().remove(&digest(id))
    }

    pub fn len(&self) -> usize {
        self.by_digest.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether the CSRF token a page sent is its session's, in constant time.
pub fn csrf_ok(session: &Session, sent: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    sent.is_some_and(|t| bool::from(digest(t).ct_eq(&digest(&session.csrf))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_and_expire() {
        let s = Sessions::new(Duration::from_millis(50));
        let (id, sess) = s.start(Principal::anonymous());
        assert!(s.get(&id).is_some());
        assert!(csrf_ok(&sess, Some(&sess.csrf)) && !csrf_ok(&sess, Some("x")) && !csrf_ok(&sess, None));
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&id).is_none(), "past its lifetime a session is gone");
        let (id, _) = s.start(Principal::anonymous());
        assert!(s.end(&id).is_some() && s.get(&id).is_none());
    }
}
