//! The sandbox's view of Okta, for tests and people: `GET /sim/okta/users`
//! (what the imports produced), `/sim/okta/sessions` (every session and every
//! request it took, with sizes) and `/sim/okta/refused` (every refusal, so a
//! test can prove there were none). No auth: the sandbox listens on loopback.
//!
//! `PUT /sim/okta/schema` `{"attributes": [...], "causes"?: "perProfile" |
//! "perAttribute"}` declares a strict profile schema (see `schema`): upserts
//! carrying any other attribute are refused with a 400. `GET` shows it
//! (`null` when none), `DELETE` goes back to accepting every attribute.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::schema::ProfileSchema;
use crate::app::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/sim/okta/users", get(users))
        .route("/sim/okta/sessions", get(sessions))
        .route("/sim/okta/refused", get(refused))
        .route("/sim/okta/schema", get(schema).put(declare_schema).delete(drop_schema))
}

async fn users(State(state): State<Shared>) -> Response {
    let okta = state.okta_at(state.clock.now());
    Json(okta.users.views()).into_response()
}

async fn sessions(State(state): State<Shared>) -> Response {
    let records = state.okta_at(state.clock.now()).sessions.records();
    Json(records).into_response()
}

async fn refused(State(state): State<Shared>) -> Response {
    let refused = state.okta_at(state.clock.now()).refused.clone();
    Json(refused).into_response()
}

async fn schema(State(state): State<Shared>) -> Response {
    Json(crate::app::lock(&state.okta).schema.clone()).into_response()
}

async fn declare_schema(State(state): State<Shared>, body: Result<Json<ProfileSchema>, JsonRejection>) -> Response {
    match body {
        Ok(Json(schema)) => {
            crate::app::lock(&state.okta).schema = Some(schema.clone());
            tracing::info!(attributes = schema.attributes.len(), causes = ?schema.causes, "strict profile schema declared");
            Json(schema).into_response()
        }
        Err(e) => {
            let error = format!(
                "{}; send {{\"attributes\": [\"userName\", ...], \"causes\": \"perProfile\" | \"perAttribute\"}}",
                e.body_text()
            );
            (e.status(), Json(serde_json::json!({ "error": error }))).into_response()
        }
    }
}

async fn drop_schema(State(state): State<Shared>) -> StatusCode {
    crate::app::lock(&state.okta).schema = None;
    StatusCode::NO_CONTENT
}
