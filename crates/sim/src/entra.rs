//! Entra's v2.0 token endpoint for the client-credentials grant, and the
//! bearer check Graph applies to every call (reference microsoft-graph.md §1).
//!
//! `POST /{tenant}/oauth2/v2.0/token` takes a form with `grant_type`,
//! `client_id`, `client_secret` (or HTTP Basic) and `scope`, which must be
//! `https://graph.microsoft.com/.default`. Mistakes get Entra's own answers:
//! an `AADSTSnnnn` description, `error_codes`, `timestamp`, `trace_id`,
//! `correlation_id` and `error_uri`, with Entra's status codes (a wrong
//! secret is `401 invalid_client` AADSTS7000215). Issued tokens are opaque to
//! clients (JWT-shaped, unsigned) and expire after `--token-ttl`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::Rng;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::app::{AppState, Shared};
use crate::graph::{GraphError, RequestIds};

/// The one scope a client-credentials token for Graph may ask for, and the
/// same resource named by Graph's application id.
const GRAPH_SCOPES: [&str; 2] =
    ["https://graph.microsoft.com/.default", "00000003-0000-0000-c000-000000000000/.default"];

/// Expired tokens are remembered this long after expiry, so a client using one
/// is told "expired" rather than "invalid".
const REMEMBER_EXPIRED: Duration = Duration::from_secs(24 * 3600);

/// What a bearer token is worth right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Valid,
    Expired,
    Unknown,
}

/// Access tokens issued by the token endpoint, with their expiry.
#[derive(Debug, Default)]
pub struct Tokens {
    expiry: HashMap<String, Instant>,
}

impl Tokens {
    /// Issues a token for `client_id` in `tenant`, valid for `ttl`.
    pub fn issue(&mut self, tenant: &str, client_id: &str, ttl: Duration) -> String {
        let now = Instant::now();
        self.expiry.retain(|_, expires| now.saturating_duration_since(*expires) < REMEMBER_EXPIRED);
        let token = jwt_shaped(tenant, client_id, ttl);
        self.expiry.insert(token.clone(), now + ttl);
        token
    }

    pub fn status(&self, token: &str) -> TokenStatus {
        match self.expiry.get(token) {
            Some(expires) if Instant::now() < *expires => TokenStatus::Valid,
            Some(_) => TokenStatus::Expired,
            None => TokenStatus::Unknown,
        }
    }

    /// Every token issued and still remembered: tests search logs for them,
    /// since an access token is as secret as the client secret that got it.
    pub fn issued(&self) -> impl Iterator<Item = &str> {
        self.expiry.keys().map(String::as_str)
    }

    /// Makes every issued token expire now (for tests of token refresh).
    /// Returns how many were still valid.
    pub fn expire_all(&mut self) -> usize {
        let now = Instant::now();
        let mut valid = 0;
        for expires in self.expiry.values_mut() {
            if *expires > now {
                valid += 1;
                *expires = now;
            }
        }
        valid
    }
}

/// A token that looks like Entra's (header.claims.signature) so that client
/// code never gets to assume anything shorter; nothing checks the signature.
fn jwt_shaped(tenant: &str, client_id: &str, ttl: Duration) -> String {
    let mut rng = rand::rng();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "sandbox"});
    let claims = json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now,
        "nbf": now,
        "exp": now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        "appid": client_id,
        "tid": tenant,
        "roles": ["User.Read.All"],
        "uti": URL_SAFE_NO_PAD.encode(rng.random::<[u8; 16]>()),
    });
    let signature: [u8; 32] = rng.random();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/sim/entra/expire-tokens", post(expire_tokens))
}

/// Graph's bearer check: `Ok` for a valid token, otherwise the 401 Graph
/// sends (return it with `.into_response()`).
pub fn check_bearer(state: &AppState, headers: &HeaderMap) -> Result<(), Unauthorized> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    let message = if token.is_empty() {
        "Access token is empty."
    } else {
        match crate::app::lock(&state.entra).status(token) {
            TokenStatus::Valid => return Ok(()),
            TokenStatus::Expired => "Access token has expired or is not yet valid.",
            TokenStatus::Unknown => "Access token validation failure. Invalid audience.",
        }
    };
    Err(Unauthorized { message, ids: RequestIds::from_headers(headers) })
}

/// A refused bearer token: Graph's 401 `InvalidAuthenticationToken`.
#[derive(Debug)]
pub struct Unauthorized {
    message: &'static str,
    ids: RequestIds,
}

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut response = GraphError::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", self.message)
            .into_response(&self.ids);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", \
                 client_id=\"00000003-0000-0000-c000-000000000000\"",
            ),
        );
        response
    }
}

async fn expire_tokens(State(state): State<Shared>) -> Response {
    let expired = crate::app::lock(&state.entra).expire_all();
    axum::Json(json!({ "expired": expired })).into_response()
}

/// An error of the token endpoint, rendered as Entra renders it.
#[derive(Debug, PartialEq)]
pub(crate) struct TokenError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl TokenError {
    pub(crate) fn new(status: StatusCode, error: &'static str, code: u32, description: impl Into<String>) -> Self {
        TokenError { status, error, code, description: description.into() }
    }

    fn missing(parameter: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    pub(crate) fn into_response(self, correlation_id: String) -> Response {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let now = OffsetDateTime::now_utc();
        let timestamp =
            now.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z")).unwrap_or_default();
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {}",
            self.code,
            self.description,
            now.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:7]Z"))
                .unwrap_or_default()
        );
        let body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        with_token_headers((self.status, axum::Json(body)).into_response())
    }
}

fn with_token_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

async fn token(State(state): State<Shared>, Path(tenant): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let correlation_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    match issue(&state, &tenant, &headers, &body) {
        Ok(body) => with_token_headers(axum::Json(body).into_response()),
        Err(e) => e.into_response(correlation_id),
    }
}

/// The checks, in the order Entra makes them.
fn issue(state: &AppState, tenant: &str, headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Value, TokenError> {
    let cfg = &state.cfg;
    if !tenant.eq_ignore_ascii_case(&cfg.graph_tenant) {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing \
                 into the correct cloud. Check with your subscription administrator, this may happen if there are \
                 no active subscriptions for the tenant."
            ),
        ));
    }
    let form = read_form(headers, body);
    let grant_type = form.get("grant_type").ok_or_else(|| TokenError::missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let basic = basic_credentials(headers);
    let client_id = form
        .get("client_id")
        .cloned()
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()))
        .ok_or_else(|| TokenError::missing("client_id"))?;
    let scope = form.get("scope").ok_or_else(|| TokenError::missing("scope"))?;
    if client_id != cfg.graph_client_id {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can \
                 happen if the application has not been installed by the administrator of the tenant or consented \
                 to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    let secret = form.get("client_secret").cloned().or_else(|| basic.map(|(_, secret)| secret)).ok_or_else(|| {
        TokenError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    })?;
    if secret != cfg.graph_client_secret {
        return Err(TokenError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret \
                 value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        ));
    }
    let scope = scope.trim();
    if !GRAPH_SCOPES.contains(&scope) {
        return Err(if scope.ends_with("/.default") {
            TokenError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                ),
            )
        } else {
            TokenError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope \
                     value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            )
        });
    }
    let ttl = cfg.token_ttl;
    let access_token = crate::app::lock(&state.entra).issue(tenant, &client_id, ttl);
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "ext_expires_in": ttl.as_secs(),
        "access_token": access_token,
    }))
}

/// The form fields, or none when the body is not a form (Entra then reports
/// the first missing parameter, as it does for a JSON body).
fn read_form(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return HashMap::new();
    }
    let mut form = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        form.entry(key.into_owned()).or_insert_with(|| value.into_owned());
    }
    form
}

/// `Authorization: Basic base64(urlencoded id ":" urlencoded secret)` (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape =
        |s: &str| url::form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((unescape(id)?, unescape(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_unknown_ones_are_told_apart() {
        let mut tokens = Tokens::default();
        let long = tokens.issue("t", "c", Duration::from_secs(3600));
        let short = tokens.issue("t", "c", Duration::ZERO);
        assert_eq!(tokens.status(&long), TokenStatus::Valid);
        assert_eq!(tokens.status(&short), TokenStatus::Expired);
        assert_eq!(tokens.status("made-up"), TokenStatus::Unknown);
        assert_eq!(long.split('.').count(), 3);
        assert_eq!(tokens.expire_all(), 1);
        assert_eq!(tokens.status(&long), TokenStatus::Expired);
    }

    #[test]
    fn basic_credentials_are_url_decoded() {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode("my%20app:s%3Acret"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        assert_eq!(basic_credentials(&h), Some(("my app".into(), "s:cret".into())));
    }
}
