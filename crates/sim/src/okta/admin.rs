//! The sandbox's view of Okta, for tests and people: `GET /sim/okta/users`
//! (what the imports produced), `/sim/okta/sessions` (every session and every
//! request it took, with sizes) and `/sim/okta/refused` (every refusal, so a
//! test can prove there were none). No auth: the sandbox listens on loopback.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::Instant;

use crate::app::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/sim/okta/users", get(users))
        .route("/sim/okta/sessions", get(sessions))
        .route("/sim/okta/refused", get(refused))
}

async fn users(State(state): State<Shared>) -> Response {
    let okta = state.okta_at(Instant::now());
    Json(okta.users.views()).into_response()
}

async fn sessions(State(state): State<Shared>) -> Response {
    let records = state.okta_at(Instant::now()).sessions.records();
    Json(records).into_response()
}

async fn refused(State(state): State<Shared>) -> Response {
    let refused = state.okta_at(Instant::now()).refused.clone();
    Json(refused).into_response()
}
