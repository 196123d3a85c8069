//! The Microsoft Graph client the fetcher reads Entra ID users with.
//!
//! - [`GraphClient::get_page`] GETs one page of `/v1.0/users` or
//!   `/v1.0/users/delta`, following Graph's `@odata.nextLink` and
//!   `@odata.deltaLink` verbatim, so each page can be its own broker message.
//! - [`GraphClient::create_user`] creates one user (`POST /v1.0/users`), for
//!   `xaas sample upload`; a taken userPrincipalName reads as [`Created::AlreadyExists`].
//! - [`GraphEndpoints`] and [`decode_page`] are those requests and answers
//!   without I/O: the client uses them, and so can a simulation.
//! - The app-only token (client credentials) is cached and refreshed before it
//!   expires, one refresh at a time however many tasks share the client.
//! - 429 and transient 5xx/network failures are retried briefly in-process
//!   (honouring `Retry-After`), then returned as retryable so the broker's
//!   delayed retry takes over; everything else is permanent, with a message
//!   that says what to fix. An expired delta link is its own error,
//!   [`GraphError::DeltaExpired`], because the answer is a full resync.
//!
//! See `reference/microsoft-graph.md` for the behaviour this follows.

mod client;
mod create;
mod error;
pub mod metrics;
mod page;
mod request;
mod settings;
mod token;

pub use client::GraphClient;
pub use create::{CreateRequest, Created, decode_created};
pub use error::{AuthFailure, GraphError, Service};
pub use page::GraphPage;
pub use request::{GraphEndpoints, PageRequest, decode_page};
pub use settings::{GraphSettings, MAX_PAGE_SIZE, UsersQuery};

#[cfg(test)]
mod tests;
