//! The `/sim/...` control API for the source directory: seed it, look at it,
//! and change users so that delta runs and deactivation have something to
//! find. No auth: the sandbox listens on loopback by default.
//!
//! - `POST /sim/seed` `{"csv_path": "..."}` or `{"generate": N, "rng_seed": S,
//!   "domain"?, "disabled_share"?, "other_dept_share"?, "non_ascii_share"?,
//!   "malformed"?}`, plus `"replace"` (default `true`: empty the directory
//!   first, which also kills every delta token; `false` appends).
//!   Answers `{"seeded", "total", "malformed": [{index, kind, id}]}`.
//! - `GET /sim/users`: every live user, in directory order, as stored.
//! - `POST /sim/users`: create one (Graph JSON; `id` is generated when absent).
//! - `PATCH /sim/users/{id}`: merge fields (`null` clears one).
//! - `POST /sim/users/{id}/disable`, `POST /sim/users/{id}/enable`.
//! - `DELETE /sim/users/{id}`: permanent delete, reported by delta as
//!   `@removed: {"reason": "deleted"}`; `?soft=true` soft-deletes instead
//!   (`"reason": "changed"`, like a user moved to deleted items).
//! - `POST /sim/graph/expire-delta-tokens`: every delta token issued so far
//!   gets 410 `syncStateNotFound`.

use std::path::PathBuf;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::Shared;
use crate::directory::{DirectoryError, Removal};
use crate::seed::{self, GenerateOptions};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/sim/seed", post(seed_directory))
        .route("/sim/users", get(list).post(create))
        .route("/sim/users/{id}", patch(update).delete(delete))
        .route("/sim/users/{id}/disable", post(disable))
        .route("/sim/users/{id}/enable", post(enable))
        .route("/sim/graph/expire-delta-tokens", post(expire_delta_tokens))
}

/// An admin API error: status plus `{"error": "..."}` that says what to do.
struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<DirectoryError> for AdminError {
    fn from(e: DirectoryError) -> Self {
        let status = match e {
            DirectoryError::NotFound(_) => StatusCode::NOT_FOUND,
            DirectoryError::Exists(_) => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        AdminError(status, e.to_string())
    }
}

impl From<seed::SeedError> for AdminError {
    fn from(e: seed::SeedError) -> Self {
        AdminError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<JsonRejection> for AdminError {
    fn from(e: JsonRejection) -> Self {
        AdminError(e.status(), format!("{}; send a JSON body with Content-Type: application/json", e.body_text()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    csv_path: Option<PathBuf>,
    generate: Option<usize>,
    rng_seed: Option<u64>,
    domain: Option<String>,
    disabled_share: Option<f64>,
    other_dept_share: Option<f64>,
    non_ascii_share: Option<f64>,
    malformed: Option<usize>,
    #[serde(default = "default_true")]
    replace: bool,
}

fn default_true() -> bool {
    true
}

async fn seed_directory(
    State(state): State<Shared>,
    body: Result<Json<SeedRequest>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let Json(req) = body?;
    let cfg = &state.cfg;
    let domain = req.domain.clone().unwrap_or_else(|| cfg.domain.clone());
    // Build everything before touching the directory, so a bad request changes nothing.
    let (users, malformed) = match (&req.csv_path, req.generate) {
        (Some(path), None) => (seed::load_sample_csv(path, &domain)?, Vec::new()),
        (None, Some(count)) => {
            let defaults = GenerateOptions::new(count, req.rng_seed.unwrap_or(cfg.rng_seed), &domain);
            let opts = GenerateOptions {
                disabled_share: req.disabled_share.unwrap_or(cfg.generate_disabled_share),
                other_dept_share: req.other_dept_share.unwrap_or(cfg.generate_other_dept_share),
                non_ascii_share: req.non_ascii_share.unwrap_or(cfg.generate_non_ascii_share),
                malformed: req.malformed.unwrap_or(0),
                ..defaults
            };
            let generated = seed::generate_with(&opts)?;
            let malformed: Vec<Value> = generated
                .malformed
                .iter()
                .map(|m| json!({ "index": m.index, "kind": m.kind, "id": generated.users[m.index]["id"] }))
                .collect();
            (generated.users, malformed)
        }
        _ => {
            return Err(AdminError(StatusCode::BAD_REQUEST, "give exactly one of \"csv_path\" or \"generate\"".into()));
        }
    };
    let mut dir = crate::app::lock(&state.directory);
    if req.replace {
        dir.reset();
    }
    let seeded = users.len();
    let now = state.clock.now().wall;
    for user in users {
        dir.insert_at(user, now)?;
    }
    Ok(Json(json!({ "seeded": seeded, "total": dir.len(), "malformed": malformed })))
}

async fn list(State(state): State<Shared>) -> Json<Value> {
    let dir = crate::app::lock(&state.directory);
    Json(Value::Array(dir.users().cloned().map(Value::Object).collect()))
}

async fn create(
    State(state): State<Shared>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let Json(mut user) = body?;
    if let Some(obj) = user.as_object_mut() {
        obj.entry("id").or_insert_with(|| json!(uuid::Uuid::new_v4().to_string()));
    }
    let mut dir = crate::app::lock(&state.directory);
    let created = dir.create_at(user, state.clock.now().wall)?.clone();
    Ok((StatusCode::CREATED, Json(Value::Object(created))))
}

async fn update(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let Json(patch) = body?;
    let mut dir = crate::app::lock(&state.directory);
    Ok(Json(Value::Object(dir.update(&id, patch)?.clone())))
}

async fn disable(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    let mut dir = crate::app::lock(&state.directory);
    Ok(Json(Value::Object(dir.set_enabled(&id, false)?.clone())))
}

async fn enable(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    let mut dir = crate::app::lock(&state.directory);
    Ok(Json(Value::Object(dir.set_enabled(&id, true)?.clone())))
}

#[derive(Debug, Deserialize)]
struct DeleteOptions {
    #[serde(default)]
    soft: bool,
}

async fn delete(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(opts): Query<DeleteOptions>,
) -> Result<StatusCode, AdminError> {
    let how = if opts.soft { Removal::SoftDeleted } else { Removal::Deleted };
    crate::app::lock(&state.directory).remove_at(&id, how, state.clock.now().wall)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn expire_delta_tokens(State(state): State<Shared>) -> Json<Value> {
    let mut dir = crate::app::lock(&state.directory);
    dir.expire_delta_tokens();
    Json(json!({ "generation": dir.generation() }))
}
