//! What can go wrong talking to Okta, split by what the caller should do.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use xaas_core::redact::redact;

/// A failed Okta call. [`OktaError::is_retryable`] is the split the workers
/// act on: retryable errors go back through a delay queue, permanent ones
/// park the message with this error's text, so each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OktaError {
    /// 429 whose reset lies beyond `max_rate_limit_wait` (or that kept coming
    /// back after being waited out).
    #[error(
        "Okta rate limit exceeded; the window resets in {}s. Retry after that, or raise okta max_rate_limit_wait to wait in process",
        wait.as_secs()
    )]
    RateLimited { wait: Duration },

    /// 400 on create-session. Okta answers so within its cooldown after a
    /// trigger (5 min documented, ~60 s observed) and while another session
    /// of the identity source is open. Retryable: list the sessions to tell
    /// the two apart, then wait and retry.
    #[error(
        "Okta refused to open an import session ({summary}): another session is open or the cooldown after the last trigger has not passed; list the sessions, then wait and retry"
    )]
    CreateRefused { summary: String },

    /// Any other 400 (and unexpected 4xx): the request is wrong as sent and
    /// will fail the same way again. `causes` are Okta's
    /// `errorCauses[].errorSummary`, which name the offending profiles.
    #[error("Okta rejected the request ({status} {code}: {summary}){}", causes_suffix(causes))]
    Validation { status: u16, code: String, summary: String, causes: Vec<String> },

    /// 401 (bad or expired credentials) or 403 (missing scope or role), or a
    /// refused service-app token request.
    #[error("Okta refused the credentials ({status} {code}: {summary}); {}", auth_hint(*status))]
    Auth { status: u16, code: String, summary: String },

    /// 404: the identity source (or the session) does not exist.
    #[error(
        "Okta found no such resource ({code}: {summary}); check okta identity_source_id {identity_source_id:?} (the Custom Identity Source app's id) and that the session still exists"
    )]
    NotFound { identity_source_id: String, code: String, summary: String },

    /// 5xx: Okta's side. For writes it may still have acted (see
    /// [`OktaClient`](crate::OktaClient)).
    #[error("Okta failed with {status} ({summary}); retry later")]
    Server { status: u16, summary: String },

    /// No answer: connect failure, timeout, reset.
    #[error(transparent)]
    Transport(TransportError),

    /// A success status with a body that is not what the API documents.
    #[error("Okta's answer could not be read: {0}; this client may not match the Okta API version")]
    Malformed(String),

    /// The settings cannot work; nothing was sent.
    #[error("invalid Okta settings: {0}")]
    Config(String),
}

impl OktaError {
    /// Whether the same call may succeed later without anyone changing
    /// anything: rate limits, the create-session cooldown, Okta's 5xx and the
    /// network.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::CreateRefused { .. } | Self::Server { .. } | Self::Transport(_))
    }

    /// How long to wait before retrying, when Okta said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { wait } => Some(*wait),
            _ => None,
        }
    }
}

/// The request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not reach Okta{} for {op}{}: {source}; check the network and okta base_url",
    url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default(),
    if *maybe_sent { " (the request may have reached Okta)" } else { "" }
)]
pub struct TransportError {
    /// The operation, as in the `op` metric label.
    pub op: &'static str,
    /// False only when the connection was never made, so nothing was sent.
    pub maybe_sent: bool,
    /// The URL called, redacted like every URL that is printed.
    pub url: Option<String>,
    /// reqwest's error, without the URL it would print unredacted.
    #[source]
    pub source: reqwest::Error,
}

impl TransportError {
    pub(crate) fn new(op: &'static str, source: reqwest::Error) -> Self {
        // A connect failure (refused, DNS, connect timeout) sent nothing;
        // anything later may have delivered the request.
        let maybe_sent = !source.is_connect();
        let url = source.url().map(|u| redact(u.as_str()));
        Self { op, maybe_sent, url, source: source.without_url() }
    }
}

fn causes_suffix(causes: &[String]) -> String {
    if causes.is_empty() { String::new() } else { format!("; causes: {}", causes.join("; ")) }
}

fn auth_hint(status: u16) -> &'static str {
    if status == 403 {
        "check that the API token's admin, or the service app, has an admin role that can manage the identity source, and that the service app is granted okta.identitySources.manage and okta.identitySources.read"
    } else {
        "check the API token (is it active?) or the service app's client_id, key id and registered public key"
    }
}

/// Okta's error body (SPEC `Error`); every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    error_code: Option<String>,
    error_summary: Option<String>,
    error_id: Option<String>,
    #[serde(default)]
    error_causes: Vec<ErrorCause>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorCause {
    error_summary: Option<String>,
}

/// An Okta error answer, reduced to what the messages need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub code: String,
    /// `errorSummary`, with `errorId` appended: the id is what Okta support
    /// asks for.
    pub summary: String,
    pub causes: Vec<String>,
}

impl ApiError {
    /// Reads Okta's JSON error, or keeps the start of whatever else came back
    /// (a proxy's HTML page, say) so that the message still shows it.
    pub fn parse(status: reqwest::StatusCode, body: &[u8]) -> Self {
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let mut summary = match parsed.error_summary {
            Some(s) => s,
            None => excerpt(body).unwrap_or_else(|| status.canonical_reason().unwrap_or("no body").to_string()),
        };
        if let Some(id) = parsed.error_id {
            summary = format!("{summary} [errorId {id}]");
        }
        Self {
            code: parsed.error_code.unwrap_or_else(|| "-".to_string()),
            summary,
            causes: parsed.error_causes.into_iter().filter_map(|c| c.error_summary).collect(),
        }
    }

    /// One line with everything: `E0000001: summary [errorId …]; causes: …`.
    pub fn one_line(&self) -> String {
        format!("{}: {}{}", self.code, self.summary, causes_suffix(&self.causes))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// The first 200 characters of a non-JSON body, on one line.
fn excerpt(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return None;
    }
    Some(match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[test]
    fn okta_error_bodies_are_read_with_their_id_and_causes() {
        let body = br#"{"errorCode":"E0000001","errorSummary":"Api validation failed: profiles","errorLink":"E0000001",
            "errorId":"oaeXYZ","errorCauses":[{"errorSummary":"profiles[3].profile.email: not an email"},{"errorSummary":"profiles[7].externalId: too long"}]}"#;
        let e = ApiError::parse(StatusCode::BAD_REQUEST, body);
        assert_eq!(e.code, "E0000001");
        assert_eq!(e.summary, "Api validation failed: profiles [errorId oaeXYZ]");
        assert_eq!(e.causes, vec!["profiles[3].profile.email: not an email", "profiles[7].externalId: too long"]);
        assert_eq!(
            e.one_line(),
            "E0000001: Api validation failed: profiles [errorId oaeXYZ]; causes: profiles[3].profile.email: not an email; profiles[7].externalId: too long"
        );
    }

    #[test]
    fn a_foreign_body_is_kept_short() {
        let html = format!("<html>\n<body>{}</body></html>", "x".repeat(500));
        let e = ApiError::parse(StatusCode::BAD_GATEWAY, html.as_bytes());
        assert_eq!(e.code, "-");
        assert!(e.summary.starts_with("<html> <body>xxx"), "{}", e.summary);
        assert_eq!(e.summary.chars().count(), 201);
        let empty = ApiError::parse(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(empty.summary, "Bad Gateway");
    }

    #[test]
    fn retryable_split_follows_the_design() {
        let wait = Duration::from_secs(9);
        assert!(OktaError::RateLimited { wait }.is_retryable());
        assert_eq!(OktaError::RateLimited { wait }.retry_after(), Some(wait));
        assert!(OktaError::CreateRefused { summary: "x".into() }.is_retryable());
        assert!(OktaError::Server { status: 503, summary: "x".into() }.is_retryable());
        let v = OktaError::Validation { status: 400, code: "E0000001".into(), summary: "s".into(), causes: vec![] };
        assert!(!v.is_retryable());
        assert_eq!(v.retry_after(), None);
        assert!(!OktaError::Auth { status: 401, code: "E0000011".into(), summary: "s".into() }.is_retryable());
        let nf =
            OktaError::NotFound { identity_source_id: "0oa1".into(), code: "E0000007".into(), summary: "s".into() };
        assert!(!nf.is_retryable());
        assert!(nf.to_string().contains("identity_source_id \"0oa1\""), "{nf}");
        assert!(!OktaError::Malformed("x".into()).is_retryable());
    }

    #[tokio::test]
    async fn a_transport_error_shows_its_url_redacted() {
        // Nothing listens on port 1.
        let e = reqwest::get("http://admin:hunter2@127.0.0.1:1/api/v1/x?token=t0k").await.unwrap_err();
        let text = TransportError::new("list_sessions", e).to_string();
        // reqwest itself moves the userinfo into a header; the query is ours to mask.
        assert!(text.starts_with("could not reach Okta at http://127.0.0.1:1/api/v1/x?token=*** for"), "{text}");
        assert!(!text.contains("hunter2") && !text.contains("t0k"), "{text}");
    }

    #[test]
    fn messages_say_what_to_check() {
        let e = OktaError::Auth { status: 403, code: "E0000006".into(), summary: "You do not have permission".into() };
        assert!(e.to_string().contains("okta.identitySources.manage"), "{e}");
        let e = OktaError::Auth { status: 401, code: "E0000011".into(), summary: "Invalid token provided".into() };
        assert!(e.to_string().contains("check the API token"), "{e}");
        let e = OktaError::Validation {
            status: 400,
            code: "E0000001".into(),
            summary: "Api validation failed".into(),
            causes: vec!["a".into(), "b".into()],
        };
        assert_eq!(e.to_string(), "Okta rejected the request (400 E0000001: Api validation failed); causes: a; b");
    }
}
