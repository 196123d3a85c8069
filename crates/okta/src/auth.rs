//! The `Authorization` header: an SSWS API token as is, or a service app's
//! access token obtained with client credentials + `private_key_jwt` and
//! cached until shortly before it expires.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{ACCEPT, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::error::TransportError;
use crate::settings::{OktaAuth, SERVICE_APP_SCOPES};
use crate::{OktaError, metrics, rate_limit};

/// Refresh this long before the token expires, so it never expires in
/// flight. Okta's service-app tokens live one hour.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// The client assertion is single use; five minutes covers clock skew.
const ASSERTION_LIFETIME: i64 = 300;
const OP: &str = "token";

pub(crate) enum Credentials {
    ApiToken(SecretString),
    ServiceApp(Box<ServiceApp>),
}

impl Credentials {
    /// Checks the settings up front, so a bad key fails at start, not on
    /// the first upload. `token_url` is `{base}/oauth2/v1/token`.
    pub fn new(auth: OktaAuth, token_url: Url) -> Result<Self, OktaError> {
        match auth {
            OktaAuth::ApiToken(token) => {
                if token.expose_secret().trim().is_empty() {
                    return Err(OktaError::Config("the Okta API token is empty".into()));
                }
                header_value("SSWS", &token).map_err(|_| {
                    OktaError::Config("the Okta API token contains characters not allowed in an HTTP header".into())
                })?;
                Ok(Self::ApiToken(token))
            }
            OktaAuth::ServiceApp { client_id, key_id, private_key_pem } => {
                if client_id.trim().is_empty() {
                    return Err(OktaError::Config("the Okta service app client_id is empty".into()));
                }
                ensure_crypto_provider();
                // jsonwebtoken's error names the problem, never the key.
                let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes()).map_err(|e| {
                    OktaError::Config(format!(
                        "the Okta service app private key is not an RSA private key in PEM (PKCS#8 or PKCS#1): {e}"
                    ))
                })?;
                Ok(Self::ServiceApp(Box::new(ServiceApp {
                    client_id,
                    key_id,
                    key,
                    token_url,
                    cached: Mutex::new(None),
                })))
            }
        }
    }

    /// The header for the next request.
    pub async fn authorization(&self, http: &reqwest::Client) -> Result<HeaderValue, OktaError> {
        match self {
            Self::ApiToken(token) => header_value("SSWS", token)
                .map_err(|_| OktaError::Config("the Okta API token is not a valid header value".into())),
            Self::ServiceApp(app) => app.authorization(http).await,
        }
    }

    /// After a 401: forget `rejected` if it is the cached token. Returns
    /// whether a fresh credential can be had (an API token cannot).
    pub async fn reject(&self, rejected: &HeaderValue) -> bool {
        match self {
            Self::ApiToken(_) => false,
            Self::ServiceApp(app) => {
                let mut cached = app.cached.lock().await;
                let same =
                    cached.as_ref().is_some_and(|c| header_value("Bearer", &c.token).ok().as_ref() == Some(rejected));
                if same {
                    *cached = None;
                }
                true
            }
        }
    }
}

/// `<scheme> <secret>`, marked sensitive so that no debug output shows it.
fn header_value(scheme: &str, secret: &SecretString) -> Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
    let mut value = HeaderValue::from_str(&format!("{scheme} {}", secret.expose_secret()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `jsonwebtoken` picks its crypto backend from features; if another crate
/// in the build turns on the other backend too, it can no longer choose, so
/// name ours explicitly.
fn ensure_crypto_provider() {
    use jsonwebtoken::crypto::CryptoProvider;
    if CryptoProvider::try_get_default().is_none() {
        // Err means another thread installed one meanwhile: also fine.
        let _ = CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
    }
}

pub(crate) struct ServiceApp {
    client_id: String,
    key_id: Option<String>,
    key: EncodingKey,
    token_url: Url,
    /// Held across a refresh, so that concurrent callers wait for one token
    /// request instead of each making their own.
    cached: Mutex<Option<AccessToken>>,
}

struct AccessToken {
    token: SecretString,
    refresh_at: Instant,
}

/// RFC 7523 client assertion claims, as Okta's service-app guide lists them.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: SecretString,
    token_type: String,
    expires_in: u64,
}

/// RFC 6749 §5.2 error answer.
#[derive(Deserialize, Default)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

impl ServiceApp {
    async fn authorization(&self, http: &reqwest::Client) -> Result<HeaderValue, OktaError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return bearer(&c.token);
        }
        let fresh = self.fetch(http).await?;
        let header = bearer(&fresh.token)?;
        *cached = Some(fresh);
        Ok(header)
    }

    /// The signed client assertion (`private_key_jwt`).
    fn assertion(&self) -> Result<String, OktaError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = AssertionClaims {
            iss: &self.client_id,
            sub: &self.client_id,
            aud: self.token_url.as_str(),
            iat: now,
            exp: now + ASSERTION_LIFETIME,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            OktaError::Config(format!("could not sign the Okta client assertion with the service app key: {e}"))
        })
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<AccessToken, OktaError> {
        let assertion = self.assertion()?;
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", SERVICE_APP_SCOPES),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion.as_str()),
        ];
        let since = std::time::Instant::now();
        let answer =
            http.post(self.token_url.clone()).header(ACCEPT, "application/json").form(&form).send().await.map_err(
                |e| {
                    metrics::request(OP, "transport", since);
                    OktaError::Transport(TransportError::new(OP, e))
                },
            )?;
        let status = answer.status();
        metrics::request(OP, status.as_str(), since);
        let headers = answer.headers().clone();
        let body = answer.bytes().await.map_err(|e| OktaError::Transport(TransportError::new(OP, e)))?;

        if status.is_success() {
            let token: TokenAnswer =
                serde_json::from_slice(&body).map_err(|e| OktaError::Malformed(format!("token answer: {e}")))?;
            if !token.token_type.eq_ignore_ascii_case("Bearer") {
                return Err(dpop_required(status.as_u16(), &token.token_type));
            }
            tracing::debug!(expires_in = token.expires_in, "obtained an Okta service app access token");
            let lifetime = Duration::from_secs(token.expires_in);
            return Ok(AccessToken {
                token: token.access_token,
                refresh_at: Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN),
            });
        }
        if status.as_u16() == 429 {
            metrics::rate_limited(OP);
            return Err(OktaError::RateLimited { wait: rate_limit::wait_after_429(&headers) });
        }
        let err: TokenError = serde_json::from_slice(&body).unwrap_or_default();
        let code = err.error.unwrap_or_else(|| "-".into());
        let summary = err.error_description.unwrap_or_else(|| status.canonical_reason().unwrap_or("").into());
        if status.is_server_error() {
            return Err(OktaError::Server {
                status: status.as_u16(),
                summary: format!("token endpoint: {code}: {summary}"),
            });
        }
        if code == "use_dpop_nonce" || code == "invalid_dpop_proof" {
            return Err(dpop_required(status.as_u16(), &code));
        }
        Err(OktaError::Auth { status: status.as_u16(), code, summary: format!("token request refused: {summary}") })
    }
}

fn bearer(token: &SecretString) -> Result<HeaderValue, OktaError> {
    header_value("Bearer", token).map_err(|_| {
        OktaError::Malformed("the token endpoint returned an access token that is not a valid header value".into())
    })
}

fn dpop_required(status: u16, code: &str) -> OktaError {
    OktaError::Auth {
        status,
        code: code.to_string(),
        summary: "the service app requires DPoP-bound tokens, which xaas-sync does not support; turn off \"Require Demonstrating Proof of Possession (DPoP) header in token requests\" on the app".into(),
    }
}
