//! Web UI sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped in memory to the
//! hash of the token that logged in and a per-session CSRF token. The browser never holds the
//! API token. Sessions live in the process: behind several replicas, use sticky sessions (or
//! log in again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;

pub const COOKIE: &str = "reliquary_session";
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Clone, Debug)]
pub struct Session {
    pub token_sha256: String,
    pub csrf: String,
    /// What the last form did, shown once by the next page (never taken from a URL, so a link
    /// cannot put words in the registry's mouth).
    pub flash: Option<String>,
    expires_at: Instant,
}

#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session for a verified token; returns its id.
    pub fn create(&self, token_sha256: String) -> String {
        let id = Alphanumeric.sample_string(&mut OsRng, 43);
        let session = Session {
            token_sha256,
            csrf: Alphanumeric.sample_string(&mut OsRng, 32),
            flash: None,
            expires_at: Instant::now() + LIFETIME,
        };
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        live.retain(|_, s| s.expires_at > now);
        live.insert(id.clone(), session);
        id
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.get(id)
            .filter(|s| s.expires_at > Instant::now())
            .cloned()
    }

    /// Keeps a message for the session's next page.
    pub fn set_flash(&self, id: &str, message: String) {
        if let Some(session) = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(id)
        {
            session.flash = Some(message);
        }
    }

    /// The message kept for this page, once.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(id)
            .and_then(|session| session.flash.take())
    }

    pub fn remove(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// The `Set-Cookie` value for a session id (`None` clears the cookie).
    pub fn cookie(id: Option<&str>, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        match id {
            Some(id) => format!(
                "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                LIFETIME.as_secs()
            ),
            None => format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
        }
    }
}
