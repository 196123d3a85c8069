//! The client proper: one method per Identity Sources operation, over one
//! request loop that knows Okta's failure modes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use xaas_core::{OktaProfile, Op};

use crate::auth::Credentials;
use crate::error::TransportError;
use crate::rate_limit::{self, RateGate};
use crate::wire::{ApiRequest, OktaApi};
use crate::{OktaError, OktaSettings, Session, metrics};

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
    api: OktaApi,
    credentials: Credentials,
    gate: RateGate,
    max_rate_limit_wait: Duration,
}

impl fmt::Debug for OktaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OktaClient")
            .field("base_url", &self.inner.api.base_url().as_str())
            .field("identity_source_id", &self.inner.api.identity_source_id())
            .finish_non_exhaustive()
    }
}

/// A successful answer, read whole, for the call's decoder.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl OktaClient {
    pub fn new(s: OktaSettings) -> Result<Self, OktaError> {
        let api = OktaApi::new(s.base_url, &s.identity_source_id)?;
        let credentials = Credentials::new(s.auth, api.token_url())?;
        let http = xaas_http::build_client(concat!("xaas-sync/", env!("CARGO_PKG_VERSION")), s.timeout)
            .map_err(|e| OktaError::Config(format!("could not build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api,
                credentials,
                gate: RateGate::default(),
                max_rate_limit_wait: s.max_rate_limit_wait,
            }),
        })
    }

    pub fn identity_source_id(&self) -> &str {
        self.inner.api.identity_source_id()
    }

    /// The requests this client sends and how it reads the answers.
    pub fn api(&self) -> &OktaApi {
        &self.inner.api
    }

    /// Opens a session (`CREATED`). Okta's spec says 200, Okta's own SDK
    /// tests see 201; both are accepted. A 400 is
    /// [`OktaError::CreateRefused`]: cooldown or another open session.
    pub async fn create_session(&self) -> Result<Session, OktaError> {
        let a = self.send(self.inner.api.create_session()).await?;
        self.inner.api.decode_create(a.status, &a.headers, &a.body)
    }

    /// The identity source's sessions. Whether Okta lists only active ones
    /// is undocumented: filter on `status`.
    pub async fn list_sessions(&self) -> Result<Vec<Session>, OktaError> {
        let a = self.send(self.inner.api.list_sessions()).await?;
        self.inner.api.decode_list(a.status, &a.headers, &a.body)
    }

    pub async fn get_session(&self, id: &str) -> Result<Session, OktaError> {
        let a = self.send(self.inner.api.get_session(id)).await?;
        self.inner.api.decode_get(a.status, &a.headers, &a.body)
    }

    /// Cancels a `CREATED` or `IN_PROGRESS` session (it becomes `CLOSED` and
    /// its loaded data is dropped). Okta answers 400 for other statuses.
    pub async fn delete_session(&self, id: &str) -> Result<(), OktaError> {
        let a = self.send(self.inner.api.delete_session(id)).await?;
        self.inner.api.decode_delete(a.status, &a.headers, &a.body)
    }

    /// `bulk-upsert` of `profiles`, sent as [`bulk_body`](crate::bulk_body)`(Op::Upsert, …)`.
    /// Counts against the session's 50 requests once Okta accepts it (202).
    pub async fn bulk_upsert(&self, session_id: &str, profiles: &[OktaProfile]) -> Result<(), OktaError> {
        self.bulk(session_id, Op::Upsert, profiles).await
    }

    /// `bulk-delete`: deactivates the users with these `externalId`s; only
    /// the ids are sent. Okta silently ignores ids it does not know.
    pub async fn bulk_delete(&self, session_id: &str, external_ids: &[OktaProfile]) -> Result<(), OktaError> {
        self.bulk(session_id, Op::Delete, external_ids).await
    }

    async fn bulk(&self, session_id: &str, op: Op, profiles: &[OktaProfile]) -> Result<(), OktaError> {
        let a = self.send(self.inner.api.bulk(session_id, op, profiles)).await?;
        self.inner.api.decode_bulk(op, a.status, &a.headers, &a.body)
    }

    /// Triggers the import of everything loaded into the session. The schema
    /// answers one session, the spec's example an array of one: both are
    /// read. Okta answers 400 for a session with nothing loaded.
    pub async fn start_import(&self, session_id: &str) -> Result<Session, OktaError> {
        let a = self.send(self.inner.api.start_import(session_id)).await?;
        self.inner.api.decode_start_import(session_id, a.status, &a.headers, &a.body)
    }

    /// One call, with the retry policy of the type docs.
    async fn send(&self, request: ApiRequest) -> Result<Answer, OktaError> {
        let mut budget = RetryBudget::new();
        loop {
            match self.attempt(&request, &mut budget).await {
                Next::Done(answer) => return Ok(answer),
                Next::Fail(err) => return Err(err),
                Next::Again { reason, delay, err } => self.pause(request.call.label(), reason, delay, &err).await,
            }
        }
    }

    /// One request, and what it leads to.
    async fn attempt(&self, req: &ApiRequest, budget: &mut RetryBudget) -> Next {
        let inner = &*self.inner;
        let call = req.call;
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
            .request(req.method.clone(), req.url.clone())
            .header(AUTHORIZATION, auth.clone())
            .header(ACCEPT, "application/json");
        if let Some(body) = &req.body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.clone());
        }

        let since = std::time::Instant::now();
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(source) => {
                metrics::request(op, "transport", since);
                let err = TransportError::new(op, source);
                let unsent = !err.maybe_sent;
                let err = OktaError::Transport(err);
                return if call.idempotent() || unsent { budget.backoff("transport", err) } else { Next::Fail(err) };
            }
        };

        let status = answer.status();
        let headers = answer.headers().clone();
        metrics::request(op, status.as_str(), since);
        inner.gate.observe(&headers);
        tracing::debug!(op, status = status.as_u16(), "okta answered");

        let body = match answer.bytes().await {
            Ok(bytes) => bytes.to_vec(),
            // Okta acted; only its answer was lost. A read asks again,
            // a write is reported as possibly applied.
            Err(source) if status.is_success() => {
                let err = OktaError::Transport(TransportError::new(op, source));
                return if call.idempotent() { budget.backoff("transport", err) } else { Next::Fail(err) };
            }
            // A refusal whose body was cut short is still a refusal.
            Err(_) => Vec::new(),
        };

        match inner.api.check(call, status, &headers, &body) {
            Ok(()) => Next::Done(Answer { status, headers, body }),
            Err(OktaError::RateLimited { wait }) => {
                metrics::rate_limited(op);
                budget.wait_out(wait, inner.max_rate_limit_wait)
            }
            Err(err @ OktaError::Server { .. }) => {
                if call.idempotent() {
                    budget.backoff("server", err)
                } else {
                    Next::Fail(err)
                }
            }
            // A service-app token can be revoked or rotated before it expires:
            // one fresh token is worth a try. Okta did not act on the request.
            Err(err)
                if status == StatusCode::UNAUTHORIZED
                    && !budget.refreshed_token
                    && inner.credentials.reject(&auth).await =>
            {
                budget.refreshed_token = true;
                Next::Again { reason: "token_refresh", delay: Duration::ZERO, err }
            }
            Err(err) => Next::Fail(err),
        }
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
        metrics::retry(reason);
        tracing::warn!(op, reason, delay_ms = delay.as_millis() as u64, error = %err, "retrying the Okta request");
        tokio::time::sleep(delay).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_can_be_shared_across_tasks() {
        fn check<T: Send + Sync + Clone>() {}
        check::<OktaClient>();
    }
}
