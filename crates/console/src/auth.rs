//! Who may act. Every page is read-only and open to whoever can reach the
//! console (it listens on loopback by default). Actions (replay, purge,
//! enqueue, dry run) need the admin token the console was started with
//! (`XAAS_CONSOLE_ADMIN_TOKEN`); without one configured, actions are off.
//!
//! Two ways to present it:
//! - **A script** sends `Authorization: Bearer <token>` with each POST.
//!   Browsers never attach such a header by themselves, so a forged
//!   cross-site request cannot carry it: no CSRF token is needed.
//! - **A person** logs in once with the token (`POST /login`) and gets a
//!   random session id in an `HttpOnly`, `SameSite=Strict` cookie, plus a
//!   per-session CSRF token that the console puts in every action form.
//!   A cookie *is* attached to forged requests by some browsers, so an
//!   action made with the cookie must also carry the form's CSRF token and
//!   must not come from another origin. The admin token itself never goes
//!   back to the browser, so a script on the page could not read it.
//!
//! Refusals: no credentials, a malformed header or an unknown (expired)
//! session is 401; a wrong token, a missing or wrong CSRF token, another
//! origin, or actions disabled is 403. Tokens are compared in constant time
//! (as SHA-256 digests, so that their lengths do not show either), and the
//! token is never logged or printed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable that holds the admin token.
pub const ADMIN_TOKEN_ENV: &str = "XAAS_CONSOLE_ADMIN_TOKEN";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "xaas_console_session";
/// A session lasts a working day.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Logins beyond this push out the oldest session: memory stays bounded
/// however often someone logs in.
const MAX_SESSIONS: usize = 256;

/// Why an action was refused; `status` is the HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("this action needs the admin token: log in, or send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    #[error("this console session is unknown or has expired: log in again")]
    UnknownSession,
    #[error("the admin token is wrong")]
    WrongToken,
    #[error("the form's CSRF token is missing or wrong: reload the page and try again")]
    Csrf,
    #[error("a request from another origin may not act here")]
    CrossOrigin,
    #[error("actions are disabled: the console was started without an admin token ({ADMIN_TOKEN_ENV})")]
    Disabled,
}

impl Denied {
    pub fn status(self) -> u16 {
        match self {
            Self::Missing | Self::Malformed | Self::UnknownSession => 401,
            Self::WrongToken | Self::Csrf | Self::CrossOrigin | Self::Disabled => 403,
        }
    }
}

/// What a request brought to prove it may act.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The `Authorization` header, as sent.
    pub authorization: Option<&'a str>,
    /// The session cookie's value.
    pub session: Option<&'a str>,
    /// The form's `csrf` field.
    pub csrf: Option<&'a str>,
    /// `Origin` or `Sec-Fetch-Site` say another site sent it.
    pub cross_origin: bool,
}

/// A new login: the cookie value and the session's CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
}

/// The admin token and the logged-in sessions.
#[derive(Debug)]
pub struct Access {
    admin: Option<SecretString>,
    /// By the SHA-256 of the session id: a lookup with a guessed id then
    /// tells nothing about the real ones.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

impl Access {
    /// `None` (or an empty token) turns actions off.
    pub fn new(admin: Option<SecretString>) -> Self {
        let admin = admin.filter(|t| !t.expose_secret().is_empty());
        Self { admin, sessions: Mutex::new(HashMap::new()) }
    }

    /// The admin token from `XAAS_CONSOLE_ADMIN_TOKEN`.
    pub fn from_env() -> Self {
        Self::new(std::env::var(ADMIN_TOKEN_ENV).ok().map(SecretString::from))
    }

    /// Whether actions are possible at all.
    pub fn enabled(&self) -> bool {
        self.admin.is_some()
    }

    /// May this request act?
    pub fn authorize(&self, p: &Presented<'_>, now: Instant) -> Result<(), Denied> {
        let admin = self.admin.as_ref().ok_or(Denied::Disabled)?;
        if let Some(header) = p.authorization {
            let token = bearer(header).ok_or(Denied::Malformed)?;
            return if same(token, admin.expose_secret()) { Ok(()) } else { Err(Denied::WrongToken) };
        }
        let id = p.session.ok_or(Denied::Missing)?;
        let csrf = self.csrf(id, now).ok_or(Denied::UnknownSession)?;
        if p.cross_origin {
            return Err(Denied::CrossOrigin);
        }
        match p.csrf {
            Some(sent) if same(sent, &csrf) => Ok(()),
            _ => Err(Denied::Csrf),
        }
    }

    /// Checks the token a person typed and opens a session for them.
    pub fn login(&self, token: &str, now: Instant) -> Result<NewSession, Denied> {
        let admin = self.admin.as_ref().ok_or(Denied::Disabled)?;
        if token.is_empty() {
            return Err(Denied::Missing);
        }
        if !same(token, admin.expose_secret()) {
            return Err(Denied::WrongToken);
        }
        let session = NewSession { id: random_token(), csrf: random_token() };
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(digest(&session.id), Session { csrf: session.csrf.clone(), expires: now + SESSION_TTL });
        Ok(session)
    }

    /// Ends a session.
    pub fn logout(&self, id: &str) {
        lock(&self.sessions).remove(&digest(id));
    }

    /// The CSRF token of a live session, for the forms of the page it views.
    pub fn csrf(&self, session_id: &str, now: Instant) -> Option<String> {
        lock(&self.sessions).get(&digest(session_id)).filter(|s| s.expires > now).map(|s| s.csrf.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `Bearer <token>` (the scheme in any case), else `None`.
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Equal, in time that depends on neither the contents nor the lengths.
fn same(a: &str, b: &str) -> bool {
    digest(a).ct_eq(&digest(b)).into()
}

/// 256 random bits as hex, from the thread's CSPRNG (seeded by the OS).
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// The `Set-Cookie` value that opens (or, with `None`, ends) a session.
pub fn session_cookie(id: Option<&str>) -> String {
    match id {
        Some(id) => {
            format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs())
        }
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    }
}

/// Whether a request came from another origin than the console's own
/// (`host`): by `Sec-Fetch-Site`, which browsers set and pages cannot, or
/// else by `Origin`. Requests with neither (curl) are not cross-origin.
pub fn is_cross_origin(origin: Option<&str>, fetch_site: Option<&str>, host: Option<&str>) -> bool {
    if let Some(site) = fetch_site {
        return !matches!(site, "same-origin" | "none");
    }
    match (origin, host) {
        (None, _) => false,
        (Some(origin), Some(host)) => origin != format!("http://{host}") && origin != format!("https://{host}"),
        (Some(_), None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-admin-token";

    fn access() -> Access {
        Access::new(Some(SecretString::from(TOKEN)))
    }

    fn bearer_of(header: &str) -> Presented<'_> {
        Presented { authorization: Some(header), ..Presented::default() }
    }

    #[test]
    fn a_bearer_token_is_checked_without_csrf() {
        let (a, now) = (access(), Instant::now());
        assert_eq!(a.authorize(&bearer_of("Bearer s3cret-admin-token"), now), Ok(()));
        assert_eq!(a.authorize(&bearer_of("bearer  s3cret-admin-token "), now), Ok(()));
        assert_eq!(a.authorize(&bearer_of("Bearer wrong"), now), Err(Denied::WrongToken));
        assert_eq!(a.authorize(&bearer_of("Bearer s3cret-admin-token-and-more"), now), Err(Denied::WrongToken));
        assert_eq!(a.authorize(&bearer_of("Basic czNjcmV0"), now), Err(Denied::Malformed));
        assert_eq!(a.authorize(&bearer_of("Bearer "), now), Err(Denied::Malformed));
        assert_eq!(a.authorize(&Presented::default(), now), Err(Denied::Missing));
        assert_eq!(Denied::Missing.status(), 401);
        assert_eq!(Denied::WrongToken.status(), 403);
    }

    fn session<'a>(id: &'a str, csrf: Option<&'a str>, cross_origin: bool) -> Presented<'a> {
        Presented { session: Some(id), csrf, cross_origin, ..Presented::default() }
    }

    #[test]
    fn a_session_acts_only_with_its_csrf_token_and_from_its_origin() {
        let (a, now) = (access(), Instant::now());
        assert_eq!(a.login("", now), Err(Denied::Missing));
        assert_eq!(a.login("nope", now), Err(Denied::WrongToken));
        let s = a.login(TOKEN, now).unwrap();
        assert_ne!(s.id, s.csrf);
        assert_eq!(s.id.len(), 64);
        let with = |csrf, cross_origin| session(&s.id, csrf, cross_origin);
        let csrf = s.csrf.as_str();
        assert_eq!(a.authorize(&with(Some(csrf), false), now), Ok(()));
        assert_eq!(a.authorize(&with(None, false), now), Err(Denied::Csrf));
        assert_eq!(a.authorize(&with(Some("forged"), false), now), Err(Denied::Csrf));
        assert_eq!(a.authorize(&with(Some(csrf), true), now), Err(Denied::CrossOrigin));
        let unknown = Presented { session: Some("guess"), csrf: Some(csrf), ..Presented::default() };
        assert_eq!(a.authorize(&unknown, now), Err(Denied::UnknownSession));
        // Expired, then logged out.
        assert_eq!(a.authorize(&with(Some(csrf), false), now + SESSION_TTL), Err(Denied::UnknownSession));
        a.logout(&s.id);
        assert_eq!(a.authorize(&with(Some(csrf), false), now), Err(Denied::UnknownSession));
    }

    #[test]
    fn without_an_admin_token_nothing_may_act() {
        let now = Instant::now();
        for a in [Access::new(None), Access::new(Some(SecretString::from("")))] {
            assert!(!a.enabled());
            assert_eq!(a.authorize(&bearer_of("Bearer "), now), Err(Denied::Disabled));
            assert_eq!(a.authorize(&Presented::default(), now), Err(Denied::Disabled));
            assert_eq!(a.login("", now), Err(Denied::Disabled));
        }
    }

    #[test]
    fn sessions_stay_bounded() {
        let (a, now) = (access(), Instant::now());
        let first = a.login(TOKEN, now).unwrap();
        for i in 0..MAX_SESSIONS {
            a.login(TOKEN, now + Duration::from_secs(1 + i as u64)).unwrap();
        }
        assert_eq!(lock(&a.sessions).len(), MAX_SESSIONS);
        assert!(a.csrf(&first.id, now).is_none(), "the oldest made room");
    }

    #[test]
    fn cookies_and_origins() {
        assert_eq!(cookie("a=1; xaas_console_session=abc; b=2", SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie("xaas_console_sessionx=abc", SESSION_COOKIE), None);
        assert!(session_cookie(Some("abc")).contains("HttpOnly; SameSite=Strict"));
        assert!(session_cookie(None).contains("Max-Age=0"));
        assert!(!is_cross_origin(None, None, Some("127.0.0.1:8088")));
        assert!(!is_cross_origin(Some("http://127.0.0.1:8088"), None, Some("127.0.0.1:8088")));
        assert!(is_cross_origin(Some("http://evil.example"), None, Some("127.0.0.1:8088")));
        assert!(is_cross_origin(Some("http://127.0.0.1:8088"), Some("cross-site"), Some("127.0.0.1:8088")));
        assert!(!is_cross_origin(None, Some("same-origin"), None));
    }
}
