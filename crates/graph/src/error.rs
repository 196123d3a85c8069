//! What can go wrong talking to Entra and Graph, split into what a later
//! retry can fix and what needs a person (or a full resync).

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

/// Which server a failure came from: the operator's next step differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Graph,
    TokenEndpoint,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Graph => "Microsoft Graph",
            Service::TokenEndpoint => "the Entra ID token endpoint",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    // --- retryable -------------------------------------------------------
    /// 429. `retry_after` is the server's requested wait, when it gave one.
    #[error("{service} is throttling us (429){}; retry after that wait", wait(*retry_after))]
    Throttled { service: Service, retry_after: Option<Duration> },

    /// A 5xx that a later attempt may not get.
    #[error("{service} is unavailable ({status}{}){}; retry later", code_suffix(code), wait(*retry_after))]
    Unavailable { service: Service, status: u16, code: Option<String>, retry_after: Option<Duration> },

    /// Connection refused or reset, DNS, timeout, a body cut short.
    #[error(
        "could not complete a request to {service} at {origin}: {reason}; check network, DNS and proxy, it will be retried"
    )]
    Transport { service: Service, origin: String, reason: String },

    // --- permanent -------------------------------------------------------
    /// The token endpoint refused our credentials. Never contains the secret.
    #[error("{0}")]
    Auth(Box<AuthFailure>),

    /// The delta link is no longer valid (410, `syncStateNotFound`,
    /// `resyncRequired`): start over with a full round.
    #[error("the delta link has expired ({status}{}); run a full sync to get a new one", code_suffix(code))]
    DeltaExpired { status: u16, code: Option<String> },

    /// Graph answered a 4xx (or an odd status) that retrying will not change.
    #[error("Microsoft Graph refused {path} with {status}{}: {message}{}", code_suffix(code), hint_suffix(*hint))]
    Rejected { path: String, status: u16, code: Option<String>, message: String, hint: Option<&'static str> },

    /// A 2xx whose body is not what Graph sends.
    #[error("{service} sent a malformed response to {path}: {reason}")]
    Malformed { service: Service, path: String, reason: String },

    /// A link pointing somewhere other than the configured Graph: following
    /// it would hand our bearer token to that host.
    #[error(
        "refusing to follow a link to {link_origin}: it is not the configured Graph origin {graph_origin}, and the request would carry our token"
    )]
    ForeignLink { link_origin: String, graph_origin: String },

    /// A link that is not an absolute http(s) URL.
    #[error("not a usable Graph link: {reason}")]
    BadLink { reason: String },

    /// The settings cannot work.
    #[error("graph settings: {0}")]
    Config(String),
}

impl GraphError {
    /// Worth trying again later (the broker's delayed retry); everything else
    /// needs a fix or, for [`GraphError::DeltaExpired`], a full resync.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Unavailable { .. } | Self::Transport { .. })
    }

    /// The wait the server asked for, when it asked.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } | Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "throttled",
            Self::Unavailable { .. } => "unavailable",
            Self::Transport { .. } => "transport",
            Self::Auth(_) => "auth",
            Self::DeltaExpired { .. } => "delta_expired",
            Self::Rejected { .. } => "rejected",
            Self::Malformed { .. } => "malformed",
            Self::ForeignLink { .. } => "foreign_link",
            Self::BadLink { .. } => "bad_link",
            Self::Config(_) => "config",
        }
    }
}

fn wait(retry_after: Option<Duration>) -> String {
    retry_after.map(|d| format!(", asked to wait {:.3}s", d.as_secs_f64())).unwrap_or_default()
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
}

fn hint_suffix(hint: Option<&'static str>) -> String {
    hint.map(|h| format!(". {h}")).unwrap_or_default()
}

fn aadsts(codes: &[u64]) -> String {
    if codes.is_empty() {
        return String::new();
    }
    let codes: Vec<String> = codes.iter().map(|c| format!("AADSTS{c}")).collect();
    format!(" ({})", codes.join(", "))
}

fn description_suffix(description: &str) -> String {
    if description.is_empty() { String::new() } else { format!(": {description}") }
}

/// Why Entra ID would not issue a token, and what to check.
#[derive(Debug, thiserror::Error)]
#[error(
    "Entra ID refused a token for client_id {client_id} in tenant {tenant}: {error}{}{}. {hint}",
    aadsts(codes),
    description_suffix(description)
)]
pub struct AuthFailure {
    pub tenant: String,
    pub client_id: String,
    /// OAuth error, e.g. `invalid_client`.
    pub error: String,
    /// `AADSTS` numbers, e.g. 7000215 for a wrong secret.
    pub codes: Vec<u64>,
    /// First line of `error_description`, secret scrubbed.
    pub description: String,
    pub hint: &'static str,
}

/// Graph's 5xx worth retrying. 501 means "this query is not supported"
/// (e.g. a `$select` of a property Graph cannot list) and will never pass.
fn is_retryable_server_error(status: StatusCode) -> bool {
    status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED
}

/// Graph's OData error body: `{"error":{"code","message","innerError":{..}}}`.
#[derive(Debug, Default, Deserialize)]
struct ODataBody {
    #[serde(default)]
    error: Option<MainError>,
}

#[derive(Debug, Default, Deserialize)]
struct MainError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "innerError", alias = "innererror")]
    inner: Option<Box<MainError>>,
}

impl MainError {
    /// The outer code and every nested one: Microsoft asks clients to look for
    /// the most specific code they understand.
    fn codes(&self) -> impl Iterator<Item = &str> {
        std::iter::successors(Some(self), |e| e.inner.as_deref()).filter_map(|e| e.code.as_deref())
    }
}

/// A request that got no complete answer. The reason keeps reqwest's chain of
/// causes (e.g. "connection refused") but not the URL: the origin is enough.
pub(crate) fn transport(service: Service, url: &Url, error: reqwest::Error) -> GraphError {
    let error = error.without_url();
    let mut reason = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        reason.push_str(": ");
        reason.push_str(&inner.to_string());
        cause = inner.source();
    }
    GraphError::Transport { service, origin: url.origin().ascii_serialization(), reason }
}

/// The codes that say a delta token is gone.
const DELTA_EXPIRED_CODES: [&str; 2] = ["syncStateNotFound", "resyncRequired"];

/// Turns a non-2xx Graph response into the error the caller can act on.
pub(crate) fn from_graph_response(
    path: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> GraphError {
    let error = serde_json::from_slice::<ODataBody>(body).ok().and_then(|b| b.error).unwrap_or_default();
    let code = error.code.clone();
    let delta_expired = error.codes().any(|c| DELTA_EXPIRED_CODES.iter().any(|known| c.eq_ignore_ascii_case(known)));
    if status == StatusCode::GONE || delta_expired {
        return GraphError::DeltaExpired { status: status.as_u16(), code };
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return GraphError::Throttled { service: Service::Graph, retry_after };
    }
    if is_retryable_server_error(status) {
        return GraphError::Unavailable { service: Service::Graph, status: status.as_u16(), code, retry_after };
    }
    let message = error.message.clone().unwrap_or_else(|| body_excerpt(body));
    GraphError::Rejected {
        path: path.to_owned(),
        status: status.as_u16(),
        hint: graph_hint(status, code.as_deref()),
        code,
        message,
    }
}

fn graph_hint(status: StatusCode, code: Option<&str>) -> Option<&'static str> {
    match (status, code) {
        (StatusCode::UNAUTHORIZED, _) => Some(
            "Graph refused a freshly issued token: check that graph_url and the token's audience are the same cloud",
        ),
        (StatusCode::FORBIDDEN, _) => Some(
            "grant the app registration the User.Read.All application permission and have an administrator consent to it",
        ),
        (_, Some("Request_UnsupportedQuery" | "Request_BadRequest")) => {
            Some("check the sync's select and filter settings against Graph's supported query options")
        }
        (StatusCode::NOT_IMPLEMENTED, _) => {
            Some("a selected property cannot be listed on /users (e.g. skills, hireDate); remove it from select")
        }
        _ => None,
    }
}

/// The Microsoft identity platform's error body.
#[derive(Debug, Default, Deserialize)]
struct TokenErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
}

/// Who was asking, to put in the message (never the secret itself).
pub(crate) struct Credentials<'a> {
    pub tenant: &'a str,
    pub client_id: &'a str,
    pub secret: &'a str,
}

/// Turns a non-2xx token-endpoint response into an error. 429 and 5xx are
/// transient; anything else is a configuration problem.
pub(crate) fn from_token_response(
    who: &Credentials<'_>,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> GraphError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return GraphError::Throttled { service: Service::TokenEndpoint, retry_after };
    }
    if is_retryable_server_error(status) {
        return GraphError::Unavailable {
            service: Service::TokenEndpoint,
            status: status.as_u16(),
            code: None,
            retry_after,
        };
    }
    let parsed = serde_json::from_slice::<TokenErrorBody>(body).unwrap_or_default();
    let error = parsed.error.unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let description = parsed.error_description.unwrap_or_else(|| body_excerpt(body));
    GraphError::Auth(Box::new(AuthFailure {
        tenant: who.tenant.to_owned(),
        client_id: who.client_id.to_owned(),
        hint: token_hint(&error, &parsed.error_codes),
        error,
        codes: parsed.error_codes,
        description: scrub(first_line(&description), who.secret),
    }))
}

/// What to check for a token refusal. Branches on codes, never on text.
fn token_hint(error: &str, codes: &[u64]) -> &'static str {
    const SECRET: &str = "check that client_secret holds the secret's Value (not its Secret ID) and has not expired";
    const CLIENT: &str =
        "check client_id: no application with that ID is registered in this tenant (check the tenant too)";
    const TENANT: &str = "check tenant: use the directory (tenant) ID or a verified domain of the tenant";
    const SCOPE: &str = "the scope was refused: check that the app may call Microsoft Graph in this cloud";
    const CONSENT: &str = "an administrator must grant consent for the app's User.Read.All application permission";
    const ANY: &str = "check tenant, client_id and client_secret (the secret's Value, not its Secret ID), and that an administrator consented to User.Read.All";
    for code in codes {
        match code {
            7000215 | 7000222 | 7000216 | 7000218 => return SECRET,
            700016 => return CLIENT,
            90002 | 900023 | 90013 => return TENANT,
            70011 | 1002012 | 500011 => return SCOPE,
            65001 | 650057 => return CONSENT,
            _ => {}
        }
    }
    match error {
        "invalid_client" | "unauthorized_client" => SECRET,
        "invalid_scope" => SCOPE,
        _ => ANY,
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim()
}

/// Defence in depth: whatever a server echoes, the secret does not reach a
/// message or a log line.
fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() { text.to_owned() } else { text.replace(secret, "[redacted]") }
}

/// A bounded, single-line excerpt of a body that was not the expected JSON.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let line = first_line(&text);
    if line.is_empty() {
        return "(empty body)".to_owned();
    }
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_in_nested_inner_errors() {
        let body = br#"{"error":{"code":"badRequest","message":"x","innerError":{"code":"syncStateNotFound"}}}"#;
        let err = from_graph_response("/v1.0/users/delta", StatusCode::BAD_REQUEST, None, body);
        assert!(matches!(err, GraphError::DeltaExpired { status: 400, .. }), "{err:?}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn not_implemented_is_permanent_but_other_5xx_are_not() {
        let e501 = from_graph_response("/v1.0/users", StatusCode::NOT_IMPLEMENTED, None, b"");
        assert!(!e501.is_retryable(), "{e501:?}");
        assert!(e501.to_string().contains("remove it from select"), "{e501}");
        let e502 = from_graph_response("/v1.0/users", StatusCode::BAD_GATEWAY, None, b"<html>");
        assert!(e502.is_retryable());
    }

    #[test]
    fn token_refusals_name_what_to_check_and_scrub_the_secret() {
        let who = Credentials { tenant: "contoso", client_id: "app-1", secret: "s3cr3t" };
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret s3cr3t provided.\r\nTrace ID: 1","error_codes":[7000215]}"#;
        let err = from_token_response(&who, StatusCode::UNAUTHORIZED, None, body);
        let text = err.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("Trace ID"), "{text}");
        assert!(text.contains("AADSTS7000215"), "{text}");
        assert!(text.contains("not its Secret ID"), "{text}");
        assert!(text.contains("tenant contoso"), "{text}");
    }

    #[test]
    fn token_endpoint_throttling_is_retryable() {
        let who = Credentials { tenant: "t", client_id: "c", secret: "s" };
        let err = from_token_response(&who, StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(3)), b"");
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn excerpts_are_bounded() {
        let long = "x".repeat(1000);
        assert_eq!(body_excerpt(long.as_bytes()).chars().count(), 201);
        assert_eq!(body_excerpt(b""), "(empty body)");
    }
}
