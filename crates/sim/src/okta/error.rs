//! Okta's error responses: `{errorCode, errorSummary, errorLink, errorId, errorCauses}`.
//!
//! The codes and summaries are the ones the spec's examples and Okta's legacy
//! reference give (reference §1.4). `errorLink` repeats the code and `errorId`
//! is fresh per response, as Okta does.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A refused Okta request, as the handlers build it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaError {
    pub status: StatusCode,
    pub code: &'static str,
    pub summary: String,
    pub causes: Vec<String>,
}

/// Marks a response as a refusal so the recorder (`/sim/okta/refused`) can log
/// it without parsing the body again.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: String,
    pub summary: String,
    /// The `errorCauses`, which say which rule was broken (e.g. the 50-request limit).
    pub causes: Vec<String>,
}

impl OktaError {
    /// 400 `E0000001`: a rule of the API was broken. `what` names the field or
    /// rule, as Okta's `Api validation failed: <what>` does.
    pub fn validation(what: &str, causes: Vec<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "E0000001",
            summary: format!("Api validation failed: {what}"),
            causes,
        }
    }

    /// 400 `E0000003`: the body is not JSON of the expected shape.
    pub fn malformed(cause: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "E0000003",
            summary: "The request body was not well-formed.".into(),
            causes: vec![cause.into()],
        }
    }

    /// 401 `E0000011`.
    pub fn invalid_token() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "E0000011",
            summary: "Invalid token provided".into(),
            causes: Vec::new(),
        }
    }

    /// 403 `E0000006`: authenticated, but the token lacks the scope.
    pub fn forbidden() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "E0000006",
            summary: "You do not have permission to perform the requested action".into(),
            causes: Vec::new(),
        }
    }

    /// 404 `E0000007`. `kind` is Okta's resource type name.
    pub fn not_found(id: &str, kind: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "E0000007",
            summary: format!("Not found: Resource not found: {id} ({kind})"),
            causes: Vec::new(),
        }
    }

    /// 429 `E0000047`. The caller adds the `X-Rate-Limit-*` headers.
    pub fn rate_limited() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "E0000047",
            summary: "API call exceeded rate limit due to too many requests.".into(),
            causes: Vec::new(),
        }
    }

    /// 500 `E0000009`, only ever injected by the fault layer.
    pub fn internal() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "E0000009",
            summary: "Internal Server Error".into(),
            causes: Vec::new(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    error_code: &'a str,
    error_summary: &'a str,
    error_link: &'a str,
    error_id: String,
    error_causes: Vec<Cause<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cause<'a> {
    error_summary: &'a str,
}

impl OktaError {
    /// The JSON body Okta sends for this error, with `error_id` as its `errorId`.
    pub fn body(&self, error_id: String) -> Vec<u8> {
        let body = Body {
            error_code: self.code,
            error_summary: &self.summary,
            error_link: self.code,
            error_id,
            error_causes: self.causes.iter().map(|c| Cause { error_summary: c }).collect(),
        };
        // Strings all the way down: encoding cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// The refusals the HTTP layer makes itself (auth, rate limit, injected
/// faults), marked for the recorder. The API's own refusals are rendered and
/// recorded by [`super::call::handle`].
impl IntoResponse for OktaError {
    fn into_response(self) -> Response {
        let error_id = super::ids::error_id(&mut rand::rng());
        let mut response =
            (self.status, [(header::CONTENT_TYPE, "application/json")], self.body(error_id)).into_response();
        let refusal = Refusal { code: self.code.to_owned(), summary: self.summary, causes: self.causes };
        response.extensions_mut().insert(refusal);
        response
    }
}
