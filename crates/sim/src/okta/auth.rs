//! Who may call the Identity Sources API: `Authorization: SSWS <api token>`
//! (an API token can do everything its admin can), or `Authorization: Bearer
//! <access token>` from the sandbox's token endpoint, limited to its scopes:
//! reads need `okta.identitySources.read` or `.manage`, writes need `.manage`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::error::OktaError;
use super::oauth::{MANAGE_SCOPE, READ_SCOPE};
use crate::app::Shared;

pub async fn require(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    match authorize(&state, req.headers(), read_only) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn authorize(state: &Shared, headers: &HeaderMap, read_only: bool) -> Result<(), OktaError> {
    let value =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(OktaError::invalid_token)?;
    let (scheme, credential) = value.trim().split_once(' ').ok_or_else(OktaError::invalid_token)?;
    let credential = credential.trim();
    if scheme == "SSWS" {
        return if credential == state.cfg.okta_token { Ok(()) } else { Err(OktaError::invalid_token()) };
    }
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(OktaError::invalid_token());
    }
    let okta = state.okta_at(state.clock.now());
    let scopes = okta.tokens.scopes(credential, Instant::now()).ok_or_else(OktaError::invalid_token)?;
    let allowed = scopes.contains(MANAGE_SCOPE) || (read_only && scopes.contains(READ_SCOPE));
    if allowed { Ok(()) } else { Err(OktaError::forbidden()) }
}
