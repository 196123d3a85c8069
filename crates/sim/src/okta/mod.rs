//! Okta's Identity Sources API ("Anything-as-a-Source"), as strict as Okta.
//!
//! - `call`     the API as one plain function: request and moment in, answer out (`handle`)
//! - `api`      the session routes over HTTP, a thin wrapper around `call`
//! - `session`  the session state machine, the per-session limits and the import queue
//! - `ids`      where session ids and error ids come from (random, or seeded)
//! - `bulk`     bulk bodies and Okta's rules for them (200 profiles, 200 KB, strings only)
//! - `store`    the Okta users the imports produce
//! - `auth`     `SSWS` tokens and OAuth bearer tokens with their scopes
//! - `oauth`    the service app's token endpoint (client credentials + private_key_jwt)
//! - `import`   the background task that completes imports on time
//! - `schema`   an optional strict profile schema (schema drift: unknown attributes refused)
//! - `admin`    the sandbox's inspection routes for all of the above
//! - `error`    Okta's error bodies

pub mod admin;
pub mod api;
pub mod auth;
pub mod bulk;
pub mod call;
pub mod error;
pub mod ids;
pub mod import;
pub mod oauth;
pub mod schema;
pub mod session;
pub mod store;

use std::collections::VecDeque;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;

pub use crate::clock::Moment;
pub use call::{OktaRequest, OktaResponse, Operation, handle};
pub use error::OktaError;
pub use ids::IdSource;
pub use session::{Rules, SessionView, Status};

use crate::SimConfig;
use crate::app::Shared;

/// Everything Okta-side the sandbox remembers.
#[derive(Debug)]
pub struct OktaState {
    pub sessions: session::Sessions,
    pub users: store::UserStore,
    pub tokens: oauth::TokenStore,
    pub refused: VecDeque<RefusedRequest>,
    /// The declared profile schema; `None` accepts every attribute.
    pub schema: Option<schema::ProfileSchema>,
    /// Session ids and error ids.
    pub ids: IdSource,
    /// The per-request limits bulk bodies are held to (the per-session one
    /// is in the session rules).
    pub limits: bulk::OktaLimits,
}

/// Refusals kept for inspection; the oldest go first past this many.
const MAX_REFUSALS: usize = 10_000;

/// A request the sandbox refused on its Okta routes (not an injected fault).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedRequest {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub error_code: String,
    pub error_summary: String,
    pub error_causes: Vec<String>,
}

impl OktaState {
    /// Okta as `cfg` describes it, with random ids; see [`OktaState::with_ids`].
    pub fn new(cfg: &SimConfig) -> Self {
        let rules = Rules {
            cooldown: cfg.cooldown,
            import_duration: cfg.import_duration,
            idle_expiry: cfg.session_idle_expiry,
            requests_per_session: cfg.okta_limits.requests_per_session,
        };
        Self {
            sessions: session::Sessions::new(cfg.identity_source_id.clone(), rules),
            users: store::UserStore::default(),
            tokens: oauth::TokenStore::default(),
            refused: VecDeque::new(),
            schema: None,
            ids: IdSource::random(),
            limits: cfg.okta_limits,
        }
    }

    /// The same state drawing its ids from `ids`: a seeded source makes the
    /// same calls give the same session ids and error ids.
    pub fn with_ids(mut self, ids: IdSource) -> Self {
        self.ids = ids;
        self
    }

    /// Brings the state up to `now`: expiries, and completed imports applied
    /// to the users in the order Okta processed them. Time passes only here
    /// (and in [`handle`], which calls it first).
    pub fn advance(&mut self, now: Moment) {
        for done in self.sessions.advance(now) {
            for load in &done.loads {
                self.users.apply(load, done.at);
            }
        }
    }

    /// Forgets sessions, users, the cooldown, refusals and the declared
    /// schema. Issued tokens stay valid: a reset is about data, and a client
    /// holding a token must not start failing auth because a test reset the
    /// sandbox. Ids carry on, so no session id is ever handed out twice.
    pub fn reset(&mut self) {
        self.sessions.reset();
        self.users = store::UserStore::default();
        self.refused.clear();
        self.schema = None;
    }

    fn record_refusal(&mut self, r: RefusedRequest) {
        if self.refused.len() >= MAX_REFUSALS {
            self.refused.pop_front();
        }
        self.refused.push_back(r);
    }
}

/// The Okta routes, each behind Okta's rate limit; the API routes also behind auth.
pub fn routes(state: &Shared) -> Router<Shared> {
    let api = api::routes()
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(middleware::from_fn_with_state(state.clone(), api_rate_limit))
        // Bodies over 200 KB must reach the handler to get Okta's 400, not axum's 413.
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024));
    let token = Router::new()
        .route(oauth::TOKEN_PATH, axum::routing::post(oauth::token))
        .layer(middleware::from_fn_with_state(state.clone(), token_rate_limit));
    api.merge(token).layer(middleware::from_fn_with_state(state.clone(), record_refusals))
}

async fn api_rate_limit(State(state): State<Shared>, req: Request, next: Next) -> Response {
    rate_limited(&state.okta_rate, req, next).await
}

/// Okta keeps the token endpoint in its own bucket.
async fn token_rate_limit(State(state): State<Shared>, req: Request, next: Next) -> Response {
    rate_limited(&state.okta_token_rate, req, next).await
}

async fn rate_limited(limiter: &crate::ratelimit::RateLimiter, req: Request, next: Next) -> Response {
    let standing = limiter.hit(tokio::time::Instant::now());
    let mut response = if standing.exceeded { OktaError::rate_limited().into_response() } else { next.run(req).await };
    standing.apply(response.headers_mut());
    response
}

/// Keeps the HTTP layer's refusals (auth, rate limit, the token endpoint)
/// for `/sim/okta/refused`, so a test can prove there were none. The API's
/// own refusals are recorded by [`handle`].
async fn record_refusals(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    if let Some(refusal) = response.extensions().get::<error::Refusal>() {
        let now = state.clock.now();
        let r = RefusedRequest {
            at: now.wall,
            method,
            path,
            status: response.status().as_u16(),
            error_code: refusal.code.clone(),
            error_summary: refusal.summary.clone(),
            error_causes: refusal.causes.clone(),
        };
        state.okta_at(now).record_refusal(r);
    }
    response
}
