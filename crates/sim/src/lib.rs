//! `xaas sim`: one HTTP server that behaves like Entra's token endpoint,
//! Microsoft Graph `/v1.0/users` (+ `/users/delta`) and Okta's Identity
//! Sources API, strictly enough that code which passes against it would pass
//! against the real services (DESIGN §7).
//!
//! Module map:
//! - `config`    flags and environment (`SimConfig`)
//! - `clock`     `Moment`, the time every rule is given, and the sandbox's `Clock`
//! - `entra`     `POST /{tenant}/oauth2/v2.0/token`, bearer-token checks for Graph
//! - `graph`     `GET /v1.0/users`, `GET /v1.0/users/delta`
//! - `directory` the source users (Entra side) and their change log for delta
//! - `seed`      seeding from `sampleUsers.csv`, deterministic generation
//! - `okta`      Identity Sources sessions, bulk loads, imports, the Okta user store, Okta OAuth
//! - `ratelimit` Okta's `X-Rate-Limit-*` accounting
//! - `faults`    injected latency, 429s, 5xx and dropped connections, per service
//! - `admin_directory` the `/sim/...` control API for the source directory
//! - `app`       shared state, the router (each service behind its fault layer), `spawn`/`serve`

pub mod admin_directory;
pub mod app;
pub mod clock;
pub mod config;
pub mod directory;
pub mod entra;
pub mod faults;
pub mod graph;
pub mod okta;
pub mod ratelimit;
pub mod seed;

pub use app::{AppState, RunningSim, Shared, serve, spawn};
pub use config::SimConfig;
