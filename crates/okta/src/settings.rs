//! What the client needs to know to reach one identity source.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// The scopes a service app asks for: `manage` for every write, `read` for
/// the session GETs (reference §3).
pub const SERVICE_APP_SCOPES: &str = "okta.identitySources.manage okta.identitySources.read";

/// How the client proves who it is to Okta.
#[derive(Debug, Clone)]
pub enum OktaAuth {
    /// `Authorization: SSWS <token>`: an API token, which acts with the
    /// admin role of the user who created it.
    ApiToken(SecretString),
    /// An OAuth 2.0 service app ("OAuth for Okta"): client credentials with
    /// `private_key_jwt`, scopes [`SERVICE_APP_SCOPES`], then
    /// `Authorization: Bearer <access token>`.
    ///
    /// DPoP-bound tokens are not supported: the app must have "Require
    /// Demonstrating Proof of Possession (DPoP) header in token requests"
    /// turned off. The client says so when Okta asks for DPoP.
    ServiceApp {
        client_id: String,
        /// The `kid` of the public key registered on the app; Okta needs it
        /// when the app has more than one key.
        key_id: Option<String>,
        /// RSA private key, PEM (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1
        /// `BEGIN RSA PRIVATE KEY`). Signs the client assertion with RS256.
        private_key_pem: SecretString,
    },
}

/// One identity source in one Okta org.
#[derive(Debug, Clone)]
pub struct OktaSettings {
    /// `https://{yourOktaDomain}`. Parse it with `xaas_http::parse_base_url`
    /// so that plain http is refused outside the sandbox.
    pub base_url: Url,
    /// The app instance id of the Custom Identity Source app (`0oa…`).
    pub identity_source_id: String,
    pub auth: OktaAuth,
    /// Per HTTP request, connect included.
    pub timeout: Duration,
    /// The longest a 429 (or an exhausted rate-limit window) is waited out
    /// in process; beyond it the call fails with `RateLimited` and the caller
    /// reschedules the work instead of holding it.
    pub max_rate_limit_wait: Duration,
}

impl OktaSettings {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Okta's rate-limit windows are 60 s long, so a minute covers any 429.
    pub const DEFAULT_MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

    /// Settings with the default timeout and rate-limit wait.
    pub fn new(base_url: Url, identity_source_id: impl Into<String>, auth: OktaAuth) -> Self {
        Self {
            base_url,
            identity_source_id: identity_source_id.into(),
            auth,
            timeout: Self::DEFAULT_TIMEOUT,
            max_rate_limit_wait: Self::DEFAULT_MAX_RATE_LIMIT_WAIT,
        }
    }
}
