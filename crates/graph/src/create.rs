//! Graph `POST /v1.0/users` without I/O: the request that creates one user,
//! and how its answer reads. Used by `xaas sample upload` (the original
//! workflow's "Upload Sample User to Azure AD").

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;
use url::Url;

use crate::error::{self, GraphError, Service};
use crate::request::GraphEndpoints;

/// Graph's answer to a user whose userPrincipalName is taken (400
/// `Request_BadRequest`, `details[].code` `ObjectConflict`).
const UPN_TAKEN: &str = "Another object with the same value for property userPrincipalName already exists";

/// One create as it goes on the wire, minus `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub url: Url,
    /// `Accept` and `Content-Type: application/json`.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Graph created the user; its new `id`.
    New { id: String },
    /// A user with this userPrincipalName exists already: nothing was
    /// created, which is what an idempotent upload wants.
    AlreadyExists,
}

impl GraphEndpoints {
    /// `POST /v1.0/users` with `user` (Graph's user resource, with its
    /// `passwordProfile`) as the body.
    pub fn create_user_request(&self, user: &serde_json::Value) -> CreateRequest {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        CreateRequest { url: self.users_endpoint().clone(), headers, body: user.to_string().into_bytes() }
    }
}

/// Reads Graph's answer to a create. Retryable failures (429, 5xx) come back
/// as retryable errors; retrying a create is safe, as a repeat finds the
/// user and reads as [`Created::AlreadyExists`].
pub fn decode_created(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Created, GraphError> {
    const PATH: &str = "/v1.0/users";
    if status.is_success() {
        #[derive(Deserialize)]
        struct NewUser {
            id: String,
        }
        return serde_json::from_slice::<NewUser>(body).map(|u| Created::New { id: u.id }).map_err(|e| {
            GraphError::Malformed { service: Service::Graph, path: PATH.into(), reason: format!("no user id: {e}") }
        });
    }
    let err = error::from_graph_response(PATH, status, xaas_http::retry_after(headers), body);
    match &err {
        GraphError::Rejected { status: 400, message, .. } if message.starts_with(UPN_TAKEN) => {
            Ok(Created::AlreadyExists)
        }
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_request_posts_json_to_users() {
        let e = GraphEndpoints::new(&Url::parse("http://127.0.0.1:8080/g/").unwrap()).unwrap();
        let r = e.create_user_request(&json!({"displayName": "A"}));
        assert_eq!(r.url.as_str(), "http://127.0.0.1:8080/g/v1.0/users");
        assert_eq!(r.headers[CONTENT_TYPE], "application/json");
        assert_eq!(r.body, br#"{"displayName":"A"}"#);
    }

    #[test]
    fn answers_read_as_created_taken_or_an_error() {
        let h = HeaderMap::new();
        let ok = decode_created(StatusCode::CREATED, &h, br#"{"id":"u1","displayName":"A"}"#).unwrap();
        assert_eq!(ok, Created::New { id: "u1".into() });
        let taken = br#"{"error":{"code":"Request_BadRequest","message":"Another object with the same value for property userPrincipalName already exists.","details":[{"code":"ObjectConflict","target":"userPrincipalName"}]}}"#;
        assert_eq!(decode_created(StatusCode::BAD_REQUEST, &h, taken).unwrap(), Created::AlreadyExists);
        let domain = br#"{"error":{"code":"Request_BadRequest","message":"The domain portion of the userPrincipalName property is invalid."}}"#;
        let err = decode_created(StatusCode::BAD_REQUEST, &h, domain).unwrap_err();
        assert!(!err.is_retryable() && err.to_string().contains("domain portion"), "{err}");
        assert!(decode_created(StatusCode::SERVICE_UNAVAILABLE, &h, b"").unwrap_err().is_retryable());
        assert!(matches!(decode_created(StatusCode::CREATED, &h, b"{}"), Err(GraphError::Malformed { .. })));
    }
}
