//! Okta's OAuth for service apps: `POST /oauth2/v1/token` with client
//! credentials and a `private_key_jwt` client assertion (reference §3), and the
//! bearer tokens it issues.
//!
//! The assertion is checked the way Okta documents it: `alg` one of
//! RS256/384/512 or ES256/384/512; `iss` = `sub` = the client id; `aud` = the
//! token endpoint's own URL; `exp` in the future and at most an hour ahead; a
//! `jti`, when present, used once. The signature is verified when the sandbox
//! has the app's public key (`--okta-public-key`); without it the sandbox can
//! only check shape and claims.
//!
//! `aud` must be `http://<Host>/oauth2/v1/token` or `https://<Host>/...`, with
//! `<Host>` the request's `Host` (or `X-Forwarded-Host`) header: a client must
//! name the URL it actually calls, as with real Okta, while the sandbox keeps
//! working behind a TLS-terminating proxy.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::error::Refusal;
use crate::app::Shared;

pub const MANAGE_SCOPE: &str = "okta.identitySources.manage";
pub const READ_SCOPE: &str = "okta.identitySources.read";
/// The scopes granted to the sandbox's service app.
const GRANTED: [&str; 2] = [MANAGE_SCOPE, READ_SCOPE];
/// The signing algorithms Okta accepts for client assertions.
const OKTA_ALGS: [&str; 6] = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"];
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const TOKEN_PATH: &str = "/oauth2/v1/token";
/// Okta: an assertion's `exp` may be at most one hour ahead. A minute of
/// leeway absorbs clock skew between client and sandbox.
const MAX_ASSERTION_LIFETIME: i64 = 3600 + 60;

/// What an issued access token allows, and until when.
#[derive(Debug, Clone)]
struct Issued {
    scopes: BTreeSet<String>,
    expires: Instant,
}

/// Access tokens issued, and assertion ids already used.
#[derive(Debug, Default)]
pub struct TokenStore {
    tokens: HashMap<String, Issued>,
    used_jtis: HashMap<String, Instant>,
}

impl TokenStore {
    fn issue(&mut self, scopes: BTreeSet<String>, ttl: Duration, now: Instant) -> String {
        self.forget_expired(now);
        let token: String = rand::rng().sample_iter(Alphanumeric).take(48).map(char::from).collect();
        let token = format!("sandbox.{token}");
        self.tokens.insert(token.clone(), Issued { scopes, expires: now + ttl });
        token
    }

    /// The scopes of a live token; `None` for unknown or expired ones.
    pub fn scopes(&self, token: &str, now: Instant) -> Option<&BTreeSet<String>> {
        self.tokens.get(token).filter(|t| now < t.expires).map(|t| &t.scopes)
    }

    /// Marks an assertion id used; false if it already was.
    fn use_jti(&mut self, jti: &str, until: Instant, now: Instant) -> bool {
        self.forget_expired(now);
        if self.used_jtis.contains_key(jti) {
            return false;
        }
        self.used_jtis.insert(jti.to_owned(), until);
        true
    }

    fn forget_expired(&mut self, now: Instant) {
        self.tokens.retain(|_, t| now < t.expires);
        self.used_jtis.retain(|_, until| now < *until);
    }
}

/// The service app's public key, for verifying assertion signatures.
#[derive(Clone)]
pub struct AssertionKey {
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
}

impl std::fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionKey").field("rsa", &self.rsa.is_some()).field("ec", &self.ec.is_some()).finish()
    }
}

impl AssertionKey {
    /// Reads a PEM public key (RSA or EC).
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let pem = std::fs::read(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot read the Okta public key {}: {e}", path.display()))
        })?;
        Self::from_pem(&pem)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{}: {e}", path.display())))
    }

    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let rsa = DecodingKey::from_rsa_pem(pem).ok();
        let ec = DecodingKey::from_ec_pem(pem).ok();
        if rsa.is_none() && ec.is_none() {
            return Err(
                "not a PEM RSA or EC public key; pass the key that verifies the service app's assertions".into()
            );
        }
        Ok(Self { rsa, ec })
    }

    fn verify(&self, jwt: &str, alg: &str) -> Result<(), String> {
        let (alg, key) = match alg {
            "RS256" => (Algorithm::RS256, &self.rsa),
            "RS384" => (Algorithm::RS384, &self.rsa),
            "RS512" => (Algorithm::RS512, &self.rsa),
            "ES256" => (Algorithm::ES256, &self.ec),
            "ES384" => (Algorithm::ES384, &self.ec),
            // Okta accepts ES512; the verifier the sandbox uses cannot check it.
            other => return Err(format!("the sandbox cannot verify {other} signatures; sign with RS256 or ES256")),
        };
        let key = key.as_ref().ok_or_else(|| format!("the registered key cannot verify {alg:?} signatures"))?;
        let mut v = Validation::new(alg);
        // Claims are checked by `check_claims`, with Okta's messages.
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(jwt, key, &v).map(|_| ()).map_err(|e| format!("signature check failed: {e}"))
    }
}

/// An OAuth error response: `{error, error_description}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn invalid_client(description: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, error: "invalid_client", description: description.into() }
    }

    fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, error, description: description.into() }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.error, "error_description": self.description});
        let mut response = (self.status, no_store(), Json(body)).into_response();
        response.extensions_mut().insert(Refusal {
            code: self.error.to_owned(),
            summary: self.description,
            causes: Vec::new(),
        });
        response
    }
}

fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

#[derive(Debug, Serialize)]
struct TokenResponse {
    token_type: &'static str,
    expires_in: u64,
    access_token: String,
    scope: String,
}

/// `POST /oauth2/v1/token`.
pub async fn token(State(state): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    match issue(&state, &uri, &headers, &body) {
        Ok(ok) => (StatusCode::OK, no_store(), Json(ok)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn issue(state: &Shared, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<TokenResponse, OAuthError> {
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "The token request must be sent as application/x-www-form-urlencoded.",
        ));
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());

    match field("grant_type") {
        None => return Err(OAuthError::bad_request("invalid_request", "The 'grant_type' parameter is required.")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(OAuthError::bad_request(
                "unsupported_grant_type",
                format!(
                    "The authorization grant type '{other}' is not supported; service apps use client_credentials."
                ),
            ));
        }
    }
    if field("client_secret").is_some() {
        return Err(OAuthError::invalid_client(
            "Service apps that request Okta scopes must authenticate with private_key_jwt, not a client secret.",
        ));
    }
    if field("client_assertion_type") != Some(ASSERTION_TYPE) {
        return Err(OAuthError::invalid_client(format!(
            "The 'client_assertion_type' parameter must be {ASSERTION_TYPE}."
        )));
    }
    let Some(assertion) = field("client_assertion") else {
        return Err(OAuthError::invalid_client("The 'client_assertion' parameter is required."));
    };
    let cfg = &state.cfg;
    if let Some(id) = field("client_id").filter(|id| *id != cfg.okta_client_id) {
        return Err(OAuthError::invalid_client(format!(
            "The client_id {id:?} does not match the client_assertion's issuer."
        )));
    }

    let now_epoch = OffsetDateTime::now_utc().unix_timestamp();
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let claims = check_assertion(assertion, &cfg.okta_client_id, &host, now_epoch)?;
    if let Some(key) = &state.okta_key {
        key.verify(assertion, &claims.alg)
            .map_err(|e| OAuthError::invalid_client(format!("The client_assertion is invalid: {e}.")))?;
    }

    let requested: BTreeSet<String> = field("scope").unwrap_or("").split_whitespace().map(str::to_owned).collect();
    if requested.is_empty() {
        return Err(OAuthError::bad_request(
            "invalid_scope",
            "The 'scope' parameter is required; ask for okta.identitySources.manage and/or okta.identitySources.read.",
        ));
    }
    let refused: Vec<&str> = requested.iter().map(String::as_str).filter(|s| !GRANTED.contains(s)).collect();
    if !refused.is_empty() {
        return Err(OAuthError::bad_request(
            "invalid_scope",
            format!("The following scopes are not granted to this client: {}.", refused.join(" ")),
        ));
    }

    let now = Instant::now();
    let mut okta = state.okta_at(state.clock.now());
    if let Some(jti) = &claims.jti {
        let lives = Duration::from_secs(u64::try_from(claims.exp - now_epoch).unwrap_or(0));
        if !okta.tokens.use_jti(jti, now + lives, now) {
            return Err(OAuthError::invalid_client("The client_assertion token has already been used (jti replay)."));
        }
    }
    let ttl = cfg.token_ttl;
    let scope = requested.iter().cloned().collect::<Vec<_>>().join(" ");
    let access_token = okta.tokens.issue(requested, ttl, now);
    Ok(TokenResponse { token_type: "Bearer", expires_in: ttl.as_secs(), access_token, scope })
}

/// What the token endpoint needs from a valid assertion.
#[derive(Debug)]
struct Claims {
    alg: String,
    exp: i64,
    jti: Option<String>,
}

fn check_assertion(jwt: &str, client_id: &str, host: &str, now_epoch: i64) -> Result<Claims, OAuthError> {
    let bad = |why: &str| OAuthError::invalid_client(format!("The client_assertion is invalid: {why}."));
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(bad("it is not a signed JWT (header.payload.signature)"));
    };
    if signature.is_empty() {
        return Err(bad("it is not signed"));
    }
    let decode = |part: &str, what: &str| -> Result<Value, OAuthError> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| bad(&format!("its {what} is not base64url")))?;
        serde_json::from_slice(&bytes).map_err(|_| bad(&format!("its {what} is not JSON")))
    };
    let header = decode(header, "header")?;
    let claims = decode(payload, "payload")?;

    let alg = match header.get("alg").and_then(Value::as_str) {
        Some(name) if OKTA_ALGS.contains(&name) => name.to_owned(),
        Some(other) => return Err(bad(&format!("alg {other} is not one of {}", OKTA_ALGS.join(", ")))),
        None => return Err(bad("its header has no alg")),
    };
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(client_id) {
        return Err(bad("iss must be the client_id"));
    }
    if text("sub") != Some(client_id) {
        return Err(bad("sub must be the client_id"));
    }
    let expected = [format!("http://{host}{TOKEN_PATH}"), format!("https://{host}{TOKEN_PATH}")];
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => expected.contains(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| expected.iter().any(|e| e == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(bad(&format!("aud must be the token endpoint, {}", expected[1])));
    }
    let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
        return Err(bad("exp (seconds since the epoch) is required"));
    };
    if exp <= now_epoch {
        return Err(OAuthError::invalid_client("The client_assertion token is expired."));
    }
    if exp > now_epoch + MAX_ASSERTION_LIFETIME {
        return Err(OAuthError::invalid_client(
            "The client_assertion token has an expiration too far in the future (at most one hour).",
        ));
    }
    let jti = match claims.get("jti") {
        None | Some(Value::Null) => None,
        Some(Value::String(j)) => Some(j.clone()),
        Some(_) => return Err(bad("jti must be a string")),
    };
    Ok(Claims { alg, exp, jti })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(header: Value, claims: Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", enc(&header), enc(&claims))
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "app", "sub": "app", "aud": "http://h:1/oauth2/v1/token", "exp": now + 300, "jti": "j1"})
    }

    #[test]
    fn accepts_a_well_formed_assertion() {
        let c = check_assertion(&jwt(json!({"alg": "RS256"}), claims(1000)), "app", "h:1", 1000).unwrap();
        assert_eq!((c.alg.as_str(), c.jti.as_deref()), ("RS256", Some("j1")));
    }

    #[test]
    fn refuses_wrong_claims() {
        let now = 1000;
        let cases = [
            (json!({"alg": "HS256"}), claims(now)),
            (
                json!({"alg": "RS256"}),
                json!({"iss": "x", "sub": "app", "aud": "http://h:1/oauth2/v1/token", "exp": now + 5}),
            ),
            (
                json!({"alg": "RS256"}),
                json!({"iss": "app", "sub": "app", "aud": "http://other/oauth2/v1/token", "exp": now + 5}),
            ),
            (
                json!({"alg": "RS256"}),
                json!({"iss": "app", "sub": "app", "aud": "http://h:1/oauth2/v1/token", "exp": now}),
            ),
            (
                json!({"alg": "RS256"}),
                json!({"iss": "app", "sub": "app", "aud": "http://h:1/oauth2/v1/token", "exp": now + 7200}),
            ),
        ];
        for (h, c) in cases {
            let e = check_assertion(&jwt(h.clone(), c.clone()), "app", "h:1", now).unwrap_err();
            assert_eq!((e.status, e.error), (StatusCode::UNAUTHORIZED, "invalid_client"), "{h} {c}");
        }
        assert!(check_assertion("not-a-jwt", "app", "h:1", now).is_err());
    }

    #[test]
    fn tokens_expire_and_jtis_are_single_use() {
        let mut store = TokenStore::default();
        let t0 = Instant::now();
        let token = store.issue([MANAGE_SCOPE.to_owned()].into(), Duration::from_secs(10), t0);
        assert!(store.scopes(&token, t0).is_some_and(|s| s.contains(MANAGE_SCOPE)));
        assert!(store.scopes(&token, t0 + Duration::from_secs(10)).is_none());
        assert!(store.use_jti("j", t0 + Duration::from_secs(5), t0));
        assert!(!store.use_jti("j", t0 + Duration::from_secs(5), t0));
    }
}
