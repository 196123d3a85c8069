//! The session routes under `/api/v1/identity-sources/{identitySourceId}/sessions`.
//!
//! Status codes follow the spec: create 200 (Okta has been seen answering 201;
//! the spec says 200), list/get 200, cancel 204, bulk loads 202 with no body,
//! start-import 200 with the single session. Checks run in the order a caller
//! can act on: identity source, session, session state, then the body.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use super::bulk::{self, BulkKind, Load};
use super::error::OktaError;
use super::session::{Moment, SessionView};
use crate::app::Shared;

const SESSIONS: &str = "/api/v1/identity-sources/{identity_source_id}/sessions";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(SESSIONS, post(create).get(list))
        .route(&format!("{SESSIONS}/{{session_id}}"), get(fetch).delete(cancel))
        .route(&format!("{SESSIONS}/{{session_id}}/bulk-upsert"), post(bulk_upsert))
        .route(&format!("{SESSIONS}/{{session_id}}/bulk-delete"), post(bulk_delete))
        .route(&format!("{SESSIONS}/{{session_id}}/start-import"), post(start_import))
}

/// The sandbox has exactly one identity source; any other id is Okta's 404.
fn known_source(state: &Shared, id: &str) -> Result<(), OktaError> {
    if id == state.cfg.identity_source_id { Ok(()) } else { Err(OktaError::not_found(id, "IdentitySource")) }
}

async fn create(State(state): State<Shared>, Path(source): Path<String>) -> Result<Json<SessionView>, OktaError> {
    known_source(&state, &source)?;
    let now = Moment::now();
    let view = state.okta_at(now.instant).sessions.create(now)?;
    state.wake_import_processor();
    Ok(Json(view))
}

async fn list(State(state): State<Shared>, Path(source): Path<String>) -> Result<Json<Vec<SessionView>>, OktaError> {
    known_source(&state, &source)?;
    Ok(Json(state.okta_at(tokio::time::Instant::now()).sessions.list()))
}

async fn fetch(
    State(state): State<Shared>,
    Path((source, session)): Path<(String, String)>,
) -> Result<Json<SessionView>, OktaError> {
    known_source(&state, &source)?;
    let now = Moment::now();
    let view = state.okta_at(now.instant).sessions.get(&session, now)?;
    Ok(Json(view))
}

async fn cancel(
    State(state): State<Shared>,
    Path((source, session)): Path<(String, String)>,
) -> Result<StatusCode, OktaError> {
    known_source(&state, &source)?;
    let now = Moment::now();
    state.okta_at(now.instant).sessions.cancel(&session, now)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn bulk_upsert(
    State(state): State<Shared>,
    Path((source, session)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, OktaError> {
    load(&state, &source, &session, BulkKind::Upsert, &body)
}

async fn bulk_delete(
    State(state): State<Shared>,
    Path((source, session)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, OktaError> {
    load(&state, &source, &session, BulkKind::Delete, &body)
}

fn load(state: &Shared, source: &str, session: &str, kind: BulkKind, body: &[u8]) -> Result<StatusCode, OktaError> {
    known_source(state, source)?;
    // Parsing needs no lock; its verdict waits until the session has been checked.
    let schema = crate::app::lock(&state.okta).schema.clone();
    let parsed = bulk::parse_with(kind, body, schema.as_ref());
    let now = Moment::now();
    let mut okta = state.okta_at(now.instant);
    okta.sessions.check_loadable(session, now)?;
    let load = parsed?;
    // Okta leaves a CREATED session CREATED after a bulk-delete that names no
    // user it knows (reference §1.3); triggering it is then a 400.
    let moves_forward = match &load {
        Load::Upsert(_) => true,
        Load::Delete(ids) => ids.iter().any(|id| okta.users.contains(id)),
    };
    okta.sessions.load(session, now, load, body.len(), moves_forward)?;
    Ok(StatusCode::ACCEPTED)
}

async fn start_import(
    State(state): State<Shared>,
    Path((source, session)): Path<(String, String)>,
) -> Result<Json<SessionView>, OktaError> {
    known_source(&state, &source)?;
    let now = Moment::now();
    let view = state.okta_at(now.instant).sessions.trigger(&session, now)?;
    state.wake_import_processor();
    Ok(Json(view))
}
