//! The app-only bearer token: client credentials against the tenant's token
//! endpoint, cached until shortly before it expires.

use std::time::Duration;

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::error::{self, Credentials, GraphError, Service};

/// "All application permissions admin-consented for this app" on Graph.
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// A token, ready to put in `Authorization`. The header value is marked
/// sensitive, so `Debug` output and reqwest's logs show it redacted.
#[derive(Clone)]
pub(crate) struct Bearer {
    pub header: HeaderValue,
    /// Which issue of the token this is, so that a 401 discards only the
    /// token that was refused, not one another task has just fetched.
    generation: u64,
}

struct Cached {
    bearer: Bearer,
    refresh_at: Instant,
}

#[derive(Default)]
struct Cache {
    current: Option<Cached>,
    issued: u64,
}

pub(crate) struct TokenSource {
    http: reqwest::Client,
    token_url: Url,
    tenant: String,
    client_id: String,
    client_secret: SecretString,
    /// Held across the refresh itself: concurrent callers wait for the one
    /// request in flight instead of stampeding the token endpoint.
    cache: Mutex<Cache>,
}

impl TokenSource {
    pub fn new(
        http: reqwest::Client,
        token_url: Url,
        tenant: String,
        client_id: String,
        client_secret: SecretString,
    ) -> Self {
        Self { http, token_url, tenant, client_id, client_secret, cache: Mutex::default() }
    }

    /// The cached token, or a new one when it is missing or about to expire.
    pub async fn bearer(&self) -> Result<Bearer, GraphError> {
        let mut cache = self.cache.lock().await;
        if let Some(current) = cache.current.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(current.bearer.clone());
        }
        let requested_at = Instant::now();
        let (header, lifetime) = self.request().await?;
        cache.issued += 1;
        let bearer = Bearer { header, generation: cache.issued };
        cache.current = Some(Cached { bearer: bearer.clone(), refresh_at: requested_at + refresh_after(lifetime) });
        metrics::counter!(crate::metrics::TOKEN_REFRESHES).increment(1);
        tracing::debug!(lifetime_s = lifetime.as_secs(), "obtained a Graph token");
        Ok(bearer)
    }

    /// Forgets `refused` (Graph answered 401 to it), unless it was already
    /// replaced.
    pub async fn discard(&self, refused: &Bearer) {
        let mut cache = self.cache.lock().await;
        if cache.current.as_ref().is_some_and(|c| c.bearer.generation == refused.generation) {
            cache.current = None;
        }
    }

    async fn request(&self) -> Result<(HeaderValue, Duration), GraphError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("scope", GRAPH_SCOPE),
        ];
        let transport = |e| error::transport(Service::TokenEndpoint, &self.token_url, e);
        let since = std::time::Instant::now();
        let sent = self.http.post(self.token_url.clone()).form(&form).send().await;
        crate::metrics::observe("token", &sent, since);
        let response = sent.map_err(transport)?;
        let status = response.status();
        let retry_after = xaas_http::retry_after(response.headers());
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let who = Credentials {
                tenant: &self.tenant,
                client_id: &self.client_id,
                secret: self.client_secret.expose_secret(),
            };
            return Err(error::from_token_response(&who, status, retry_after, &body));
        }
        self.parse(&body)
    }

    fn parse(&self, body: &[u8]) -> Result<(HeaderValue, Duration), GraphError> {
        let malformed = |reason: String| GraphError::Malformed {
            service: Service::TokenEndpoint,
            path: self.token_url.path().to_owned(),
            reason,
        };
        // The position only: serde's message could quote a value, and a
        // value here may be the token.
        let token: TokenResponse = serde_json::from_slice(body)
            .map_err(|e| malformed(format!("not a token response (line {}, column {})", e.line(), e.column())))?;
        if let Some(kind) = token.token_type.as_deref().filter(|t| !t.eq_ignore_ascii_case("bearer")) {
            return Err(malformed(format!("token_type is {kind:?}, expected Bearer")));
        }
        if token.access_token.expose_secret().is_empty() {
            return Err(malformed("access_token is empty".into()));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.access_token.expose_secret()))
            .map_err(|_| malformed("access_token is not a valid header value".into()))?;
        header.set_sensitive(true);
        Ok((header, Duration::from_secs(token.expires_in.0.min(MAX_LIFETIME_SECS))))
    }
}

/// Entra issues tokens for about an hour; a claim of more is capped rather
/// than trusted (and cannot overflow the clock).
const MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// When to fetch the next token: before the last 10% of its lifetime or its
/// last 5 minutes, whichever is shorter, so that a request never leaves with
/// a token that expires on the way.
fn refresh_after(lifetime: Duration) -> Duration {
    let margin = (lifetime / 10).min(Duration::from_secs(300));
    lifetime - margin
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    token_type: Option<String>,
    expires_in: Seconds,
}

/// `expires_in`: a number in v2.0 responses, a string in older (v1) ones.
struct Seconds(u64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Seconds(n)),
            Raw::Text(s) => s.trim().parse().map(Seconds).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_before_they_expire() {
        // An hour-long token: 5 minutes of margin (less than 10%).
        assert_eq!(refresh_after(Duration::from_secs(3599)), Duration::from_secs(3299));
        // A 10-minute token: 10% (1 minute) is the smaller margin.
        assert_eq!(refresh_after(Duration::from_secs(600)), Duration::from_secs(540));
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn expires_in_may_be_a_number_or_a_string() {
        for body in [
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"t"}"#,
            r#"{"token_type":"Bearer","expires_in":"3599","access_token":"t"}"#,
        ] {
            let parsed: TokenResponse = serde_json::from_str(body).unwrap();
            assert_eq!(parsed.expires_in.0, 3599);
        }
    }
}
