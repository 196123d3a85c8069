//! The client the fetcher holds: one GET per page, with the token attached,
//! throttling waited out within limits, and everything else classified.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use tracing::Instrument;

use crate::create::{CreateRequest, Created, decode_created};
use crate::error::{self, GraphError, Service};
use crate::page::GraphPage;
use crate::request::{GraphEndpoints, PageRequest, decode_page, endpoint};
use crate::settings::{GraphSettings, UsersQuery};
use crate::token::{Bearer, TokenSource};

const USER_AGENT: &str = concat!("xaas-sync/", env!("CARGO_PKG_VERSION"));

/// A Microsoft Graph client for one tenant. Cheap to clone; clones share the
/// connection pool and the cached token.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
    retry: RetryPolicy,
}

struct Inner {
    http: reqwest::Client,
    tokens: TokenSource,
    /// The URLs, and the only origin the bearer token is sent to.
    endpoints: GraphEndpoints,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient").field("graph", &self.inner.endpoints.origin().ascii_serialization()).finish()
    }
}

impl GraphClient {
    /// Checks the settings and prepares the endpoints. Makes no request: the
    /// first token is fetched by the first page.
    pub fn new(settings: GraphSettings) -> Result<Self, GraphError> {
        let GraphSettings {
            authority_url,
            graph_url,
            tenant,
            client_id,
            client_secret,
            timeout,
            max_in_process_retries,
            max_retry_after,
        } = settings;
        check_tenant(&tenant)?;
        if client_id.trim().is_empty() {
            return Err(GraphError::Config(
                "client_id is empty: set the application (client) ID of the app registration".into(),
            ));
        }
        if secrecy::ExposeSecret::expose_secret(&client_secret).is_empty() {
            return Err(GraphError::Config(
                "client_secret is empty: provide the secret's Value through the environment or a file".into(),
            ));
        }
        let token_url = endpoint("authority_url", &authority_url, &[&tenant, "oauth2", "v2.0", "token"])?;
        let endpoints = GraphEndpoints::new(&graph_url)?;
        let http = xaas_http::build_client(USER_AGENT, timeout)
            .map_err(|e| GraphError::Config(format!("cannot build the HTTP client: {e}")))?;
        let tokens = TokenSource::new(http.clone(), token_url, tenant, client_id, client_secret);
        let inner = Inner { http, tokens, endpoints };
        Ok(Self {
            inner: Arc::new(inner),
            retry: RetryPolicy {
                max_retries: max_in_process_retries,
                max_retry_after,
                min_backoff: DEFAULT_MIN_BACKOFF,
            },
        })
    }

    /// The first backoff step when the server gave no `Retry-After` (it then
    /// doubles, with jitter). One second by default; tests and the sandbox
    /// may shorten it.
    pub fn with_min_backoff(mut self, min_backoff: Duration) -> Self {
        self.retry.min_backoff = min_backoff;
        self
    }

    /// The URLs this client requests, and how its requests are built.
    pub fn endpoints(&self) -> &GraphEndpoints {
        &self.inner.endpoints
    }

    /// The first page of a full read: `GET /v1.0/users?$top=..&$select=..&$filter=..`.
    pub fn users_url(&self, q: &UsersQuery) -> url::Url {
        self.inner.endpoints.users_url(q)
    }

    /// The first page of a delta round: `GET /v1.0/users/delta?$select=..`.
    /// Fetch it, and every link that follows, with [`Self::get_delta_page`]
    /// so that the page size is sent along.
    pub fn delta_url(&self, q: &UsersQuery) -> url::Url {
        self.inner.endpoints.delta_url(q)
    }

    /// GETs exactly `url` (a first-page URL, or a nextLink/deltaLink
    /// verbatim) and reads the page.
    pub async fn get_page(&self, url: &str) -> Result<GraphPage, GraphError> {
        self.fetch(url, None).await
    }

    /// Like [`Self::get_page`], for `/users/delta` links: Graph takes no `$top`
    /// there, and does not carry the `Prefer: odata.maxpagesize` header over
    /// from one page to the next, so it is sent on every request.
    pub async fn get_delta_page(&self, url: &str, page_size: u16) -> Result<GraphPage, GraphError> {
        self.fetch(url, Some(page_size)).await
    }

    /// Creates one user (`POST /v1.0/users`); a user whose
    /// userPrincipalName exists already is [`Created::AlreadyExists`].
    pub async fn create_user(&self, user: &serde_json::Value) -> Result<Created, GraphError> {
        let request = self.inner.endpoints.create_user_request(user);
        let inner = &*self.inner;
        self.retried("create", || inner.create_once(&request)).await
    }

    /// Runs one Graph call, retrying what may pass with the client's backoff.
    async fn retried<T, Fut>(&self, what: &'static str, call: impl FnMut() -> Fut) -> Result<T, GraphError>
    where
        Fut: std::future::Future<Output = Result<T, GraphError>>,
    {
        let retry = self.retry;
        call.retry(retry.backoff())
            .sleep(tokio::time::sleep)
            .when(GraphError::is_retryable)
            .adjust(|err, backoff| retry.next_wait(err, backoff))
            .notify(|err, wait| {
                crate::metrics::retry(err.kind());
                tracing::warn!(error = %err, wait_ms = wait.as_millis() as u64, "retrying a Graph {what}");
            })
            .await
    }

    async fn fetch(&self, link: &str, max_page_size: Option<u16>) -> Result<GraphPage, GraphError> {
        let request = self.inner.endpoints.page_request(link, max_page_size)?;
        let span = tracing::debug_span!("graph_page", path = request.url.path());
        let inner = &*self.inner;
        self.retried("request", || inner.get_once(&request)).instrument(span).await
    }
}

impl Inner {
    /// One attempt, without the retry loop.
    async fn get_once(&self, request: &PageRequest) -> Result<GraphPage, GraphError> {
        let url = &request.url;
        let bearer = self.tokens.bearer().await?;
        let mut response = self.send(request, &bearer).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            // Revoked or rotated before its time: one fresh token, one more try.
            tracing::info!("Graph refused the cached token; fetching a new one");
            self.tokens.discard(&bearer).await;
            let bearer = self.tokens.bearer().await?;
            response = self.send(request, &bearer).await?;
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| error::transport(Service::Graph, url, e))?;
        decode_page(url.path(), status, &headers, &body)
    }

    /// One create, with one fresh token on a 401 as for reads.
    async fn create_once(&self, request: &CreateRequest) -> Result<Created, GraphError> {
        let url = &request.url;
        let post = |bearer: Bearer| {
            self.http
                .post(url.clone())
                .headers(request.headers.clone())
                .header(AUTHORIZATION, bearer.header)
                .body(request.body.clone())
                .send()
        };
        let timed = |bearer: Bearer| async move {
            let since = std::time::Instant::now();
            let result = post(bearer).await;
            crate::metrics::observe("create", &result, since);
            result.map_err(|e| error::transport(Service::Graph, url, e))
        };
        let bearer = self.tokens.bearer().await?;
        let mut response = timed(bearer.clone()).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.tokens.discard(&bearer).await;
            let bearer = self.tokens.bearer().await?;
            response = timed(bearer).await?;
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| error::transport(Service::Graph, url, e))?;
        decode_created(status, &headers, &body)
    }

    async fn send(&self, request: &PageRequest, bearer: &Bearer) -> Result<reqwest::Response, GraphError> {
        let url = &request.url;
        let since = std::time::Instant::now();
        let result = self
            .http
            .get(url.clone())
            .headers(request.headers.clone())
            .header(AUTHORIZATION, bearer.header.clone())
            .send()
            .await;
        let status = crate::metrics::observe("page", &result, since);
        tracing::debug!(path = url.path(), %status, "graph response");
        result.map_err(|e| error::transport(Service::Graph, url, e))
    }
}

const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(1);

/// How long to keep trying inside the process. Past this, the error goes
/// back to the caller, whose broker-level retry waits without holding a
/// worker.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    max_retries: usize,
    max_retry_after: Duration,
    min_backoff: Duration,
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_retry_after.max(self.min_backoff))
            .with_max_times(self.max_retries)
    }

    /// The wait before the next attempt, or `None` to give up now: the
    /// server's `Retry-After` wins over our backoff, unless it is longer than
    /// we are willing to hold a worker for.
    fn next_wait(&self, err: &GraphError, backoff: Option<Duration>) -> Option<Duration> {
        let backoff = backoff?;
        match err.retry_after() {
            Some(wait) if wait > self.max_retry_after => None,
            Some(wait) => Some(wait),
            None => Some(backoff),
        }
    }
}

/// App-only tokens need the specific tenant: a GUID or a domain name. Also
/// keeps the value a single path segment of the token URL.
fn check_tenant(tenant: &str) -> Result<(), GraphError> {
    let valid = !tenant.is_empty()
        && !tenant.starts_with('.')
        && tenant.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(GraphError::Config(format!(
            "tenant {tenant:?} is not a tenant ID or domain: use the directory (tenant) ID, e.g. 00000000-0000-0000-0000-000000000000"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_retries: 3, max_retry_after: Duration::from_secs(30), min_backoff: Duration::from_millis(10) }
    }

    fn throttled(secs: u64) -> GraphError {
        GraphError::Throttled { service: Service::Graph, retry_after: Some(Duration::from_secs(secs)) }
    }

    #[test]
    fn retry_after_wins_over_backoff_within_the_limit() {
        let backoff = Some(Duration::from_millis(10));
        assert_eq!(policy().next_wait(&throttled(5), backoff), Some(Duration::from_secs(5)));
        assert_eq!(policy().next_wait(&throttled(31), backoff), None);
        assert_eq!(policy().next_wait(&throttled(5), None), None, "the retry budget is spent");
        let transport = GraphError::Transport { service: Service::Graph, origin: "o".into(), reason: "r".into() };
        assert_eq!(policy().next_wait(&transport, backoff), backoff);
    }

    #[test]
    fn tenants_are_single_path_segments() {
        assert!(check_tenant("9188040d-6c67-4c5b-b112-36a304b66dad").is_ok());
        assert!(check_tenant("contoso.onmicrosoft.com").is_ok());
        for bad in ["", "..", "a/b", "a b", "x?y"] {
            assert!(matches!(check_tenant(bad), Err(GraphError::Config(_))), "{bad:?}");
        }
    }
}
