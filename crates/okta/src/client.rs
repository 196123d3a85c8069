//! The client proper: one method per Identity Sources operation, over one
//! request loop that knows Okta's failure modes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use url::Url;
use xaas_core::{OktaProfile, Op};

use crate::auth::Credentials;
use crate::error::{ApiError, TransportError};
use crate::rate_limit::{self, RateGate};
use crate::{OktaError, OktaSettings, Session, bulk_body, metrics, session};

/// 429s waited out in process for one call before giving up with
/// `RateLimited`: a window that keeps refilling to zero is someone else's
/// traffic, and the caller should reschedule rather than hold the work.
const MAX_RATE_LIMIT_WAITS: usize = 3;

/// Repeats of a failed idempotent call (5xx, transport), with exponential
/// backoff and jitter between 200 ms and 5 s.
fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(3)
        .with_jitter()
        .build()
}

/// The operations, for metrics, logs and the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    CreateSession,
    ListSessions,
    GetSession,
    DeleteSession,
    BulkUpsert,
    BulkDelete,
    StartImport,
}

impl Call {
    fn label(self) -> &'static str {
        match self {
            Self::CreateSession => "create_session",
            Self::ListSessions => "list_sessions",
            Self::GetSession => "get_session",
            Self::DeleteSession => "delete_session",
            Self::BulkUpsert => "bulk_upsert",
            Self::BulkDelete => "bulk_delete",
            Self::StartImport => "start_import",
        }
    }

    fn method(self) -> Method {
        match self {
            Self::ListSessions | Self::GetSession => Method::GET,
            Self::DeleteSession => Method::DELETE,
            Self::CreateSession | Self::BulkUpsert | Self::BulkDelete | Self::StartImport => Method::POST,
        }
    }

    /// Whether repeating the call can never change what Okta did: GETs.
    fn idempotent(self) -> bool {
        self.method() == Method::GET
    }
}

/// Client for one identity source. Cheap to clone; clones share the HTTP
/// connection pool, the service-app token and the rate-limit state.
///
/// # Retries
///
/// Okta counts bulk requests against a session's 50 and the uploader keeps
/// that count, so the client must never send a write twice without the
/// caller knowing. The policy:
///
/// * **Reads** (list, get) are retried in process on 5xx and transport
///   errors, a few times with exponential backoff and jitter.
/// * **Writes** (create, delete, bulk-upsert, bulk-delete, start-import) are
///   repeated in process only when Okta certainly did not act on them: the
///   connection was never made, Okta answered 429, or it answered 401 and a
///   fresh service-app token is available. A timeout or reset after
///   sending, and any 5xx, may have been acted on (a 5xx can come from a
///   proxy after Okta processed the request), so they are returned at once
///   as retryable errors and the caller, who keeps the count, decides.
/// * **429** is waited out in process until `X-Rate-Limit-Reset` (plus
///   jitter) when that is within `max_rate_limit_wait`, at most
///   3 times per call; otherwise the call fails with
///   [`OktaError::RateLimited`]. When an answer reports the window spent
///   (`X-Rate-Limit-Remaining: 0`) the next requests are held until the
///   reset, under the same bound.
#[derive(Clone)]
pub struct OktaClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    identity_source_id: String,
    credentials: Credentials,
    gate: RateGate,
    max_rate_limit_wait: Duration,
    /// The `Date` of the latest answer, until [`OktaClient::take_date`].
    date: std::sync::Mutex<Option<time::OffsetDateTime>>,
}

impl fmt::Debug for OktaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OktaClient")
            .field("base_url", &self.inner.base.as_str())
            .field("identity_source_id", &self.inner.identity_source_id)
            .finish_non_exhaustive()
    }
}

/// A successful answer, read whole.
struct Answer {
    body: Vec<u8>,
}

impl OktaClient {
    pub fn new(s: OktaSettings) -> Result<Self, OktaError> {
        if s.base_url.cannot_be_a_base() || !matches!(s.base_url.scheme(), "http" | "https") {
            return Err(OktaError::Config(format!(
                "okta base_url {:?} must be an http(s) URL such as https://acme.okta.com",
                s.base_url.as_str()
            )));
        }
        let id = s.identity_source_id.trim();
        if id.is_empty() {
            return Err(OktaError::Config(
                "okta identity_source_id is empty; it is the app id (0oa…) of the Custom Identity Source app".into(),
            ));
        }
        let token_url = endpoint(&s.base_url, &["oauth2", "v1", "token"]);
        let credentials = Credentials::new(s.auth, token_url)?;
        let http = xaas_http::build_client(concat!("xaas-sync/", env!("CARGO_PKG_VERSION")), s.timeout)
            .map_err(|e| OktaError::Config(format!("could not build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: s.base_url,
                identity_source_id: id.to_string(),
                credentials,
                gate: RateGate::default(),
                max_rate_limit_wait: s.max_rate_limit_wait,
                date: std::sync::Mutex::new(None),
            }),
        })
    }

    pub fn identity_source_id(&self) -> &str {
        &self.inner.identity_source_id
    }

    /// Okta's clock as the `Date` header of the latest answer showed it
    /// (whole seconds), once: `None` when no answer came since the last
    /// take. The uploader measures Okta's cooldown on it, because the host
    /// that triggered a session and the one that opens the next may
    /// disagree about the time.
    pub fn take_date(&self) -> Option<time::OffsetDateTime> {
        self.inner.date.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Opens a session (`CREATED`). Okta's spec says 200, Okta's own SDK
    /// tests see 201; both are accepted. A 400 is
    /// [`OktaError::CreateRefused`]: cooldown or another open session.
    pub async fn create_session(&self) -> Result<Session, OktaError> {
        let answer = self.send(Call::CreateSession, &[], None).await?;
        session::parse_one(&answer.body, self.identity_source_id())
    }

    /// The identity source's sessions. Whether Okta lists only active ones
    /// is undocumented: filter on `status`.
    pub async fn list_sessions(&self) -> Result<Vec<Session>, OktaError> {
        let answer = self.send(Call::ListSessions, &[], None).await?;
        session::parse_list(&answer.body, self.identity_source_id())
    }

    pub async fn get_session(&self, id: &str) -> Result<Session, OktaError> {
        let answer = self.send(Call::GetSession, &[id], None).await?;
        session::parse_one(&answer.body, self.identity_source_id())
    }

    /// Cancels a `CREATED` or `IN_PROGRESS` session (it becomes `CLOSED` and
    /// its loaded data is dropped). Okta answers 400 for other statuses.
    pub async fn delete_session(&self, id: &str) -> Result<(), OktaError> {
        self.send(Call::DeleteSession, &[id], None).await.map(drop)
    }

    /// `bulk-upsert` of `profiles`, sent as [`bulk_body`]`(Op::Upsert, …)`.
    /// Counts against the session's 50 requests once Okta accepts it (202).
    pub async fn bulk_upsert(&self, session_id: &str, profiles: &[OktaProfile]) -> Result<(), OktaError> {
        let body = bulk_body(Op::Upsert, profiles);
        self.send(Call::BulkUpsert, &[session_id, "bulk-upsert"], Some(body)).await.map(drop)
    }

    /// `bulk-delete`: deactivates the users with these `externalId`s; only
    /// the ids are sent. Okta silently ignores ids it does not know.
    pub async fn bulk_delete(&self, session_id: &str, external_ids: &[OktaProfile]) -> Result<(), OktaError> {
        let body = bulk_body(Op::Delete, external_ids);
        self.send(Call::BulkDelete, &[session_id, "bulk-delete"], Some(body)).await.map(drop)
    }

    /// Triggers the import of everything loaded into the session. The schema
    /// answers one session, the spec's example an array of one: both are
    /// read. Okta answers 400 for a session with nothing loaded.
    pub async fn start_import(&self, session_id: &str) -> Result<Session, OktaError> {
        let answer = self.send(Call::StartImport, &[session_id, "start-import"], None).await?;
        session::parse_triggered(&answer.body, self.identity_source_id(), session_id)
    }

    /// `{base}/api/v1/identity-sources/{id}/sessions/{tail…}`, each segment
    /// percent-encoded.
    fn sessions_url(&self, tail: &[&str]) -> Url {
        let head = ["api", "v1", "identity-sources", self.identity_source_id(), "sessions"];
        let segments: Vec<&str> = head.iter().chain(tail).copied().collect();
        endpoint(&self.inner.base, &segments)
    }

    /// One call, with the retry policy of the type docs.
    async fn send(&self, call: Call, tail: &[&str], body: Option<Vec<u8>>) -> Result<Answer, OktaError> {
        let url = self.sessions_url(tail);
        let mut budget = RetryBudget::new();
        loop {
            match self.attempt(call, &url, body.as_deref(), &mut budget).await {
                Next::Done(answer) => return Ok(answer),
                Next::Fail(err) => return Err(err),
                Next::Again { reason, delay, err } => self.pause(call.label(), reason, delay, &err).await,
            }
        }
    }

    /// One request, and what it leads to.
    async fn attempt(&self, call: Call, url: &Url, body: Option<&[u8]>, budget: &mut RetryBudget) -> Next {
        let inner = &*self.inner;
        let op = call.label();
        if let Err(err) = self.hold_for_rate_limit(op).await {
            return Next::Fail(err);
        }

        let auth = match inner.credentials.authorization(&inner.http).await {
            Ok(auth) => auth,
            // Nothing has gone to the API yet, so any call may try again
            // when the token endpoint failed transiently.
            Err(err @ (OktaError::Transport(_) | OktaError::Server { .. })) => return budget.backoff("token", err),
            Err(err) => return Next::Fail(err),
        };

        let mut request = inner
            .http
            .request(call.method(), url.clone())
            .header(AUTHORIZATION, auth.clone())
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.to_vec());
        }

        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(source) => {
                metrics::request(op, "transport");
                let err = TransportError::new(op, source);
                let unsent = !err.maybe_sent;
                let err = OktaError::Transport(err);
                return if call.idempotent() || unsent { budget.backoff("transport", err) } else { Next::Fail(err) };
            }
        };

        let status = answer.status();
        let headers = answer.headers().clone();
        metrics::request(op, status.as_str());
        inner.gate.observe(&headers);
        if let Some(date) = http_date(&headers) {
            *inner.date.lock().unwrap_or_else(|e| e.into_inner()) = Some(date);
        }
        tracing::debug!(op, status = status.as_u16(), "okta answered");

        if status.is_success() {
            return match answer.bytes().await {
                Ok(bytes) => Next::Done(Answer { body: bytes.to_vec() }),
                // Okta acted; only its answer was lost. A read asks again,
                // a write is reported as possibly applied.
                Err(source) => {
                    let err = OktaError::Transport(TransportError::new(op, source));
                    if call.idempotent() { budget.backoff("transport", err) } else { Next::Fail(err) }
                }
            };
        }

        if status == StatusCode::TOO_MANY_REQUESTS {
            metrics::rate_limited(op);
            let wait = rate_limit::wait_after_429(&headers);
            return budget.wait_out(wait, inner.max_rate_limit_wait);
        }

        let body = answer.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        let api = ApiError::parse(status, &body);
        if status.is_server_error() {
            let err = OktaError::Server { status: status.as_u16(), summary: api.one_line() };
            return if call.idempotent() { budget.backoff("server", err) } else { Next::Fail(err) };
        }
        let err = self.refusal(call, status, api);
        // A service-app token can be revoked or rotated before it expires:
        // one fresh token is worth a try. Okta did not act on the request.
        if status == StatusCode::UNAUTHORIZED && !budget.refreshed_token && inner.credentials.reject(&auth).await {
            budget.refreshed_token = true;
            return Next::Again { reason: "token_refresh", delay: Duration::ZERO, err };
        }
        Next::Fail(err)
    }

    /// Holds the call while Okta's window is spent, or fails it when the
    /// reset is further away than we may wait.
    async fn hold_for_rate_limit(&self, op: &'static str) -> Result<(), OktaError> {
        let Some(wait) = self.inner.gate.pause() else {
            return Ok(());
        };
        if wait > self.inner.max_rate_limit_wait {
            tracing::info!(op, wait_s = wait.as_secs(), "Okta's rate-limit window is spent; not sending");
            return Err(OktaError::RateLimited { wait });
        }
        tracing::info!(op, wait_ms = wait.as_millis() as u64, "Okta's rate-limit window is spent; holding the request");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    async fn pause(&self, op: &'static str, reason: &'static str, delay: Duration, err: &OktaError) {
        metrics::retry(op, reason);
        tracing::warn!(op, reason, delay_ms = delay.as_millis() as u64, error = %err, "retrying the Okta request");
        tokio::time::sleep(delay).await;
    }

    /// A 4xx other than 429, as the error the caller acts on.
    fn refusal(&self, call: Call, status: StatusCode, api: ApiError) -> OktaError {
        match status.as_u16() {
            400 if call == Call::CreateSession => OktaError::CreateRefused { summary: api.one_line() },
            401 | 403 => OktaError::Auth { status: status.as_u16(), code: api.code, summary: api.summary },
            404 => OktaError::NotFound {
                identity_source_id: self.identity_source_id().to_string(),
                code: api.code,
                summary: api.summary,
            },
            other => OktaError::Validation { status: other, code: api.code, summary: api.summary, causes: api.causes },
        }
    }
}

/// What one attempt leads to.
enum Next {
    Done(Answer),
    Fail(OktaError),
    /// Try again after `delay`; `reason` labels the retry metric, `err` is
    /// what this attempt would have returned.
    Again {
        reason: &'static str,
        delay: Duration,
        err: OktaError,
    },
}

/// How much retrying one call has left.
struct RetryBudget {
    backoff: ExponentialBackoff,
    rate_limit_waits: usize,
    refreshed_token: bool,
}

impl RetryBudget {
    fn new() -> Self {
        Self { backoff: backoff(), rate_limit_waits: 0, refreshed_token: false }
    }

    /// Try again after the next backoff delay, or give up with `err`.
    fn backoff(&mut self, reason: &'static str, err: OktaError) -> Next {
        match self.backoff.next() {
            Some(delay) => Next::Again { reason, delay, err },
            None => Next::Fail(err),
        }
    }

    /// Wait out a 429 whose window resets in `wait`, if that is within
    /// `max` and this call has not been rate limited too often already.
    fn wait_out(&mut self, wait: Duration, max: Duration) -> Next {
        let err = OktaError::RateLimited { wait };
        if wait > max || self.rate_limit_waits >= MAX_RATE_LIMIT_WAITS {
            return Next::Fail(err);
        }
        self.rate_limit_waits += 1;
        Next::Again { reason: "rate_limited", delay: wait + rate_limit::jitter(), err }
    }
}

/// The `Date` header, if it is a valid HTTP date.
fn http_date(headers: &reqwest::header::HeaderMap) -> Option<time::OffsetDateTime> {
    let raw = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    httpdate::parse_http_date(raw).ok().map(time::OffsetDateTime::from)
}

/// `base` with `segments` appended as path segments (percent-encoded, so an
/// id can never change the path).
fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    // `OktaClient::new` refuses URLs that cannot be a base, so this holds.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_base_path_and_encode_ids() {
        let base = Url::parse("https://acme.okta.com").unwrap();
        assert_eq!(endpoint(&base, &["oauth2", "v1", "token"]).as_str(), "https://acme.okta.com/oauth2/v1/token");
        let base = Url::parse("http://127.0.0.1:8080/okta/").unwrap();
        assert_eq!(
            endpoint(&base, &["api", "v1", "identity-sources", "0oa1", "sessions", "a/b?c", "bulk-upsert"]).as_str(),
            "http://127.0.0.1:8080/okta/api/v1/identity-sources/0oa1/sessions/a%2Fb%3Fc/bulk-upsert"
        );
    }

    #[test]
    fn dates_are_read_as_http_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::DATE, "Thu, 03 Dec 2026 15:38:56 GMT".parse().unwrap());
        let date = http_date(&headers).unwrap();
        assert_eq!(date.unix_timestamp(), 1_796_312_336);
        headers.insert(reqwest::header::DATE, "yesterday".parse().unwrap());
        assert_eq!(http_date(&headers), None);
    }

    #[test]
    fn the_client_can_be_shared_across_tasks() {
        fn check<T: Send + Sync + Clone>() {}
        check::<OktaClient>();
    }

    #[test]
    fn only_gets_are_idempotent() {
        assert!(Call::ListSessions.idempotent());
        assert!(Call::GetSession.idempotent());
        for write in [Call::CreateSession, Call::DeleteSession, Call::BulkUpsert, Call::BulkDelete, Call::StartImport] {
            assert!(!write.idempotent(), "{write:?}");
        }
    }
}
