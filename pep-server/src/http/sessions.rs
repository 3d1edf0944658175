//! The floor page's sessions (issue #14 §4): a random ID per login, held server-side with an
//! absolute expiry, revoked at logout and replaced at each login. The cookie carries only the ID;
//! the table keeps its SHA-256 (a memory dump does not hand out live cookies), who logged in and
//! until when. Memory is enough: a restart ends every session, as before.
//!
//! CSRF (§4): the login form carries a random one-use token ([`LOGIN_FORMS`]) that is also set as a
//! short-lived pre-session cookie, so a login needs both a form this server rendered and the
//! browser that fetched it; a session's pages carry a token derived from its secret ID
//! ([`session_csrf`]) that `POST /floor/logout` checks.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::auth::Principal;

/// How long a session lives from its login, whatever its use (a shift and a half).
pub(super) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most; a full table drops the expired ones, then the oldest.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    principal: Principal,
    expires: Instant,
}

/// The session table.
#[derive(Default)]
pub(super) struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
}

/// The process's sessions.
pub(super) static SESSIONS: LazyLock<Sessions> = LazyLock::new(Sessions::default);

fn key_of(id: &[u8]) -> [u8; 32] {
    Sha256::digest(id).into()
}

impl Sessions {
    /// A new session for `principal`, valid until `now` + [`SESSION_LIFETIME`]; returns the ID
    /// to put into the cookie (64 hex characters, 256 random bits).
    pub(super) fn create(&self, principal: Principal, now: Instant) -> String {
        use rand::RngCore;
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let id = hex::encode(raw);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_SESSIONS {
            table.retain(|_, s| s.expires > now);
            if table.len() >= MAX_SESSIONS
                && let Some(oldest) = table.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        table.insert(
            key_of(id.as_bytes()),
            Session {
                principal,
                expires: now + SESSION_LIFETIME,
            },
        );
        id
    }

    /// Who holds session `id`, if it exists and has not expired (an expired one is removed).
    pub(super) fn get(&self, id: &[u8], now: Instant) -> Option<Principal> {
        let key = key_of(id);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(&key) {
            Some(s) if s.expires > now => Some(s.principal.clone()),
            Some(_) => {
                table.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends session `id` (logout, or a new login replacing it).
    pub(super) fn revoke(&self, id: &[u8]) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(&key_of(id));
    }
}

/// The CSRF token of the pages of session `id`: a hash of the secret ID under its own label, so
/// it is worth nothing without the session cookie and does not reveal the ID (the page's HTML may
/// be cached or saved where the HttpOnly cookie is not).
pub(super) fn session_csrf(id: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"pep floor logout csrf\0");
    h.update(id);
    hex::encode(h.finalize())
}

/// How long a rendered login form can be used: time to type a token, not a shift.
pub(super) const LOGIN_FORM_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Login forms held at most (every 401 page renders one); a full table drops the expired ones,
/// then the oldest.
const MAX_LOGIN_FORMS: usize = 10_000;

/// The CSRF tokens of the login forms rendered and not used yet (keyed by SHA-256, like sessions).
#[derive(Default)]
pub(super) struct LoginForms {
    table: Mutex<HashMap<[u8; 32], Instant>>,
}

/// The process's login forms.
pub(super) static LOGIN_FORMS: LazyLock<LoginForms> = LazyLock::new(LoginForms::default);

impl LoginForms {
    /// A new form token, valid once until `now` + [`LOGIN_FORM_LIFETIME`] (64 hex characters).
    pub(super) fn issue(&self, now: Instant) -> String {
        use rand::RngCore;
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_LOGIN_FORMS {
            table.retain(|_, expires| *expires > now);
            if table.len() >= MAX_LOGIN_FORMS
                && let Some(oldest) = table.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        table.insert(key_of(token.as_bytes()), now + LOGIN_FORM_LIFETIME);
        token
    }

    /// Uses up form token `token`: true when it was issued and has not expired or been used.
    pub(super) fn take(&self, token: &[u8], now: Instant) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table
            .remove(&key_of(token))
            .is_some_and(|expires| expires > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::SerialScope;

    #[test]
    fn login_forms_are_single_use_and_expire() {
        let f = LoginForms::default();
        let t0 = Instant::now();
        let a = f.issue(t0);
        let b = f.issue(t0);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(f.take(a.as_bytes(), t0));
        assert!(!f.take(a.as_bytes(), t0), "a form token is used once");
        assert!(!f.take(b.as_bytes(), t0 + LOGIN_FORM_LIFETIME));
        assert!(!f.take(b"", t0));
        assert!(!f.take(b"nonsense", t0));
    }

    #[test]
    fn session_csrf_is_per_session_and_not_the_id() {
        let a = session_csrf(b"aa");
        assert_eq!(a, session_csrf(b"aa"));
        assert_ne!(a, session_csrf(b"ab"));
        assert_eq!(a.len(), 64);
    }

    fn who() -> Principal {
        Principal("reader".into(), SerialScope::default())
    }

    #[test]
    fn sessions_expire_are_revoked_and_random() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let a = s.create(who(), t0);
        let b = s.create(who(), t0);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(s.get(a.as_bytes(), t0).map(|p| p.0), Some("reader".into()));
        // Absolute expiry, checked by the server.
        let late = t0 + SESSION_LIFETIME + Duration::from_secs(1);
        assert!(
            s.get(a.as_bytes(), t0 + SESSION_LIFETIME - Duration::from_secs(1))
                .is_some()
        );
        assert!(s.get(a.as_bytes(), late).is_none());
        assert!(
            s.get(a.as_bytes(), t0).is_none(),
            "an expired session is gone"
        );
        s.revoke(b.as_bytes());
        assert!(s.get(b.as_bytes(), t0).is_none());
        assert!(s.get(b"nonsense", t0).is_none());
    }
}
