//! The session routes under `/api/v1/identity-sources/{identitySourceId}/sessions`,
//! over HTTP: a thin wrapper around [`call::handle`](super::call::handle),
//! which holds every rule and renders every answer.
//!
//! The route table stays here because it decides which paths are the API:
//! those get auth and Okta's rate limit (see `okta::routes`); any other path
//! is the router's plain 404.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::call::{self, OktaRequest, OktaResponse};
use crate::app::Shared;

const SESSIONS: &str = "/api/v1/identity-sources/{identity_source_id}/sessions";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(SESSIONS, post(serve).get(serve))
        .route(&format!("{SESSIONS}/{{session_id}}"), get(serve).delete(serve))
        .route(&format!("{SESSIONS}/{{session_id}}/bulk-upsert"), post(serve))
        .route(&format!("{SESSIONS}/{{session_id}}/bulk-delete"), post(serve))
        .route(&format!("{SESSIONS}/{{session_id}}/start-import"), post(serve))
}

/// Every API route: one call to `handle` at the sandbox's clock.
async fn serve(State(state): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let request = OktaRequest { method, path: uri.path().to_owned(), body: body.into() };
    let now = state.clock.now();
    let answer = call::handle(&mut crate::app::lock(&state.okta), &request, now);
    // A create, load or trigger moves the next expiry or import completion.
    state.wake_import_processor();
    answer.into_response()
}

impl IntoResponse for OktaResponse {
    fn into_response(self) -> Response {
        // A bare `Body`: no `Content-Type` but the one `handle` chose.
        let mut response = (self.status, axum::body::Body::from(self.body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}
