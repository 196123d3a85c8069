//! The Okta Identity Sources ("Anything-as-a-Source") client the uploader
//! drives: import sessions, bulk loads, the import trigger, authentication
//! and Okta's rate limits.
//!
//! The client is deliberately thin about *when* to do things (the uploader
//! owns the 50-request rollover and the cooldown) and strict about *what*
//! happened: every failure is an [`OktaError`] that says whether retrying can
//! help, and a bulk request is never repeated behind the caller's back (see
//! [`OktaClient`] for the retry policy).
//!
//! [`OktaApi`] is the same protocol without I/O: the request each call sends
//! and how its answer decodes. The client is built on it, and a simulation
//! can drive a simulated Okta with it.
//!
//! The wire contract is `reference/okta-identity-sources.md` §1–§4 and the
//! official OpenAPI extract in `specs/okta-identity-sources.openapi.yaml`.
//!
//! ```no_run
//! # async fn demo(token: secrecy::SecretString, profiles: Vec<xaas_core::OktaProfile>) -> Result<(), xaas_okta::OktaError> {
//! use xaas_okta::{OktaAuth, OktaClient, OktaSettings};
//!
//! let base = xaas_http::parse_base_url("okta.base_url", "https://acme.okta.com", false).expect("a valid URL");
//! let okta = OktaClient::new(OktaSettings::new(base, "0oa3l6l6WK6h0R0QW0g4", OktaAuth::ApiToken(token)))?;
//! let session = okta.create_session().await?;
//! okta.bulk_upsert(&session.id, &profiles).await?; // one of at most 50 per session
//! let triggered = okta.start_import(&session.id).await?;
//! # Ok(()) }
//! ```

mod auth;
mod body;
mod client;
mod error;
pub mod metrics;
mod rate_limit;
mod session;
mod settings;
mod wire;

pub use body::bulk_body;
pub use client::OktaClient;
pub use error::{OktaError, TransportError};
pub use session::Session;
pub use settings::{OktaAuth, OktaSettings, SERVICE_APP_SCOPES};
pub use wire::{ApiRequest, Call, OktaApi, okta_date};
