//! The Identity Sources API without I/O: the request each call sends and
//! how its answer reads. [`OktaClient`](crate::OktaClient) sends these
//! requests and decodes with these functions; a simulation uses the same
//! ones against a simulated Okta, so both speak one protocol.
//!
//! Decoding reads no clock: every time it reports comes from the answer's
//! `Date` (Okta's clock). The one exception is a 429 whose reset cannot be
//! measured against a `Date` because the answer has none.

use reqwest::header::{DATE, HeaderMap};
use reqwest::{Method, StatusCode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use url::Url;
use xaas_core::{OktaProfile, Op};

use crate::error::ApiError;
use crate::{OktaError, Session, bulk_body, rate_limit, session};

/// The operations, for requests, metrics, logs and the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    CreateSession,
    ListSessions,
    GetSession,
    DeleteSession,
    BulkUpsert,
    BulkDelete,
    StartImport,
}

impl Call {
    /// The `op` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::CreateSession => "create_session",
            Self::ListSessions => "list_sessions",
            Self::GetSession => "get_session",
            Self::DeleteSession => "delete_session",
            Self::BulkUpsert => "bulk_upsert",
            Self::BulkDelete => "bulk_delete",
            Self::StartImport => "start_import",
        }
    }

    pub fn method(self) -> Method {
        match self {
            Self::ListSessions | Self::GetSession => Method::GET,
            Self::DeleteSession => Method::DELETE,
            Self::CreateSession | Self::BulkUpsert | Self::BulkDelete | Self::StartImport => Method::POST,
        }
    }

    /// Whether repeating the call can never change what Okta did: GETs.
    pub fn idempotent(self) -> bool {
        self.method() == Method::GET
    }
}

/// One call as it goes on the wire, minus `Authorization` and `Accept`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub call: Call,
    pub method: Method,
    pub url: Url,
    /// JSON (`Content-Type: application/json`), for bulk loads only.
    pub body: Option<Vec<u8>>,
}

/// The requests and answers of one identity source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaApi {
    base: Url,
    identity_source_id: String,
}

impl OktaApi {
    /// Checks that `base_url` can carry the API's paths and that the
    /// identity source id is there.
    pub fn new(base_url: Url, identity_source_id: &str) -> Result<Self, OktaError> {
        if base_url.cannot_be_a_base() || !matches!(base_url.scheme(), "http" | "https") {
            return Err(OktaError::Config(format!(
                "okta base_url {:?} must be an http(s) URL such as https://acme.okta.com",
                base_url.as_str()
            )));
        }
        let id = identity_source_id.trim();
        if id.is_empty() {
            return Err(OktaError::Config(
                "okta identity_source_id is empty; it is the app id (0oa…) of the Custom Identity Source app".into(),
            ));
        }
        Ok(Self { base: base_url, identity_source_id: id.to_string() })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn identity_source_id(&self) -> &str {
        &self.identity_source_id
    }

    /// `{base}/oauth2/v1/token`, where a service app gets its access token.
    pub fn token_url(&self) -> Url {
        endpoint(&self.base, &["oauth2", "v1", "token"])
    }

    pub fn create_session(&self) -> ApiRequest {
        self.request(Call::CreateSession, &[], None)
    }

    pub fn list_sessions(&self) -> ApiRequest {
        self.request(Call::ListSessions, &[], None)
    }

    pub fn get_session(&self, session_id: &str) -> ApiRequest {
        self.request(Call::GetSession, &[session_id], None)
    }

    pub fn delete_session(&self, session_id: &str) -> ApiRequest {
        self.request(Call::DeleteSession, &[session_id], None)
    }

    /// `bulk-upsert` or `bulk-delete` of `profiles`, with [`bulk_body`] as the body.
    pub fn bulk(&self, session_id: &str, op: Op, profiles: &[OktaProfile]) -> ApiRequest {
        let (call, tail) = match op {
            Op::Upsert => (Call::BulkUpsert, "bulk-upsert"),
            Op::Delete => (Call::BulkDelete, "bulk-delete"),
        };
        self.request(call, &[session_id, tail], Some(bulk_body(op, profiles)))
    }

    pub fn start_import(&self, session_id: &str) -> ApiRequest {
        self.request(Call::StartImport, &[session_id, "start-import"], None)
    }

    /// `{base}/api/v1/identity-sources/{id}/sessions/{tail…}`, each segment
    /// percent-encoded.
    fn request(&self, call: Call, tail: &[&str], body: Option<Vec<u8>>) -> ApiRequest {
        let head = ["api", "v1", "identity-sources", self.identity_source_id.as_str(), "sessions"];
        let segments: Vec<&str> = head.iter().chain(tail).copied().collect();
        ApiRequest { call, method: call.method(), url: endpoint(&self.base, &segments), body }
    }

    /// The error an answer to `call` is, if it is one: `Ok` for any 2xx.
    /// The client's retry policy decides on this error; the `decode_*`
    /// functions start with it.
    pub fn check(&self, call: Call, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<(), OktaError> {
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(OktaError::RateLimited { wait: rate_limit::wait_after_429(headers) });
        }
        let api = ApiError::parse(status, body);
        if status.is_server_error() {
            return Err(OktaError::Server { status: status.as_u16(), summary: api.one_line() });
        }
        Err(match status.as_u16() {
            400 if call == Call::CreateSession => OktaError::CreateRefused { summary: api.one_line() },
            401 | 403 => OktaError::Auth { status: status.as_u16(), code: api.code, summary: api.summary },
            404 => OktaError::NotFound {
                identity_source_id: self.identity_source_id.clone(),
                code: api.code,
                summary: api.summary,
            },
            other => OktaError::Validation { status: other, code: api.code, summary: api.summary, causes: api.causes },
        })
    }

    /// create-session: the new session (`CREATED`). Okta's spec says 200,
    /// Okta's own SDK tests see 201; any 2xx is read. A 400 is
    /// [`OktaError::CreateRefused`]: cooldown or another open session.
    pub fn decode_create(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Session, OktaError> {
        self.check(Call::CreateSession, status, headers, body)?;
        session::parse_one(body, &self.identity_source_id, okta_date(headers))
    }

    /// list-sessions: every session Okta lists, each with the answer's `Date`.
    pub fn decode_list(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Vec<Session>, OktaError> {
        self.check(Call::ListSessions, status, headers, body)?;
        session::parse_list(body, &self.identity_source_id, okta_date(headers))
    }

    pub fn decode_get(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Session, OktaError> {
        self.check(Call::GetSession, status, headers, body)?;
        session::parse_one(body, &self.identity_source_id, okta_date(headers))
    }

    /// delete-session (cancel): nothing to read but the status.
    pub fn decode_delete(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<(), OktaError> {
        self.check(Call::DeleteSession, status, headers, body)
    }

    /// bulk-upsert or bulk-delete: 202 and no body when Okta accepted it.
    pub fn decode_bulk(&self, op: Op, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<(), OktaError> {
        let call = match op {
            Op::Upsert => Call::BulkUpsert,
            Op::Delete => Call::BulkDelete,
        };
        self.check(call, status, headers, body)
    }

    /// start-import: the triggered session. The schema answers one session,
    /// the spec's example an array of one: both are read.
    pub fn decode_start_import(
        &self,
        session_id: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Session, OktaError> {
        self.check(Call::StartImport, status, headers, body)?;
        session::parse_triggered(body, &self.identity_source_id, session_id, okta_date(headers))
    }
}

/// Okta's clock when it answered: the `Date` header, when it is a valid HTTP date.
pub fn okta_date(headers: &HeaderMap) -> Option<OffsetDateTime> {
    let raw = headers.get(DATE)?.to_str().ok()?;
    OffsetDateTime::parse(raw.trim(), &Rfc2822).ok()
}

/// `base` with `segments` appended as path segments (percent-encoded, so an
/// id can never change the path).
fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    // `OktaApi::new` refuses URLs that cannot be a base, so this holds.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use xaas_core::SessionStatus;

    use super::*;

    fn api() -> OktaApi {
        OktaApi::new(Url::parse("http://127.0.0.1:8080/okta/").unwrap(), "0oa1").unwrap()
    }

    #[test]
    fn endpoints_keep_the_base_path_and_encode_ids() {
        let base = Url::parse("https://acme.okta.com").unwrap();
        assert_eq!(endpoint(&base, &["oauth2", "v1", "token"]).as_str(), "https://acme.okta.com/oauth2/v1/token");
        let r = api().bulk("a/b?c", Op::Delete, &[]);
        assert_eq!(
            (r.method, r.url.as_str()),
            (Method::POST, "http://127.0.0.1:8080/okta/api/v1/identity-sources/0oa1/sessions/a%2Fb%3Fc/bulk-delete")
        );
        assert_eq!(r.body.as_deref(), Some(&br#"{"entityType":"USERS","profiles":[]}"#[..]));
        let r = api().get_session("aps1");
        assert_eq!((r.call, r.method, r.body), (Call::GetSession, Method::GET, None));
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(matches!(OktaApi::new(Url::parse("mailto:a@b.c").unwrap(), "0oa1"), Err(OktaError::Config(_))));
        assert!(matches!(OktaApi::new(Url::parse("https://acme.okta.com").unwrap(), " "), Err(OktaError::Config(_))));
    }

    #[test]
    fn only_gets_are_idempotent() {
        assert!(Call::ListSessions.idempotent());
        assert!(Call::GetSession.idempotent());
        for write in [Call::CreateSession, Call::DeleteSession, Call::BulkUpsert, Call::BulkDelete, Call::StartImport] {
            assert!(!write.idempotent(), "{write:?}");
        }
    }

    #[test]
    fn answers_carry_oktas_clock() {
        let mut h = HeaderMap::new();
        h.insert(DATE, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        let body = br#"{"id":"aps1","status":"TRIGGERED"}"#;
        let s = api().decode_start_import("aps1", StatusCode::OK, &h, body).unwrap();
        assert_eq!((s.status, s.identity_source_id.as_str()), (SessionStatus::Triggered, "0oa1"));
        assert_eq!(s.okta_date, Some(time::macros::datetime!(1994-11-06 08:49:37 UTC)));
        let s = api().decode_create(StatusCode::OK, &HeaderMap::new(), br#"{"id":"aps2","status":"CREATED"}"#).unwrap();
        assert_eq!(s.okta_date, None, "no Date, no Okta clock");
    }

    #[test]
    fn refusals_are_classified_by_call() {
        let refused = br#"{"errorCode":"E0000001","errorSummary":"Api validation failed: x","errorCauses":[{"errorSummary":"c"}]}"#;
        let h = HeaderMap::new();
        let a = api();
        assert!(matches!(a.decode_create(StatusCode::BAD_REQUEST, &h, refused), Err(OktaError::CreateRefused { .. })));
        match a.decode_bulk(Op::Upsert, StatusCode::BAD_REQUEST, &h, refused) {
            Err(OktaError::Validation { status: 400, causes, .. }) => assert_eq!(causes, ["c"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(a.decode_get(StatusCode::NOT_FOUND, &h, b""), Err(OktaError::NotFound { .. })));
        assert!(matches!(a.decode_delete(StatusCode::FORBIDDEN, &h, b""), Err(OktaError::Auth { status: 403, .. })));
        assert!(matches!(
            a.decode_list(StatusCode::BAD_GATEWAY, &h, b"<html>"),
            Err(OktaError::Server { status: 502, .. })
        ));
        let mut limited = HeaderMap::new();
        limited.insert("retry-after", HeaderValue::from_static("3"));
        assert!(matches!(
            a.decode_bulk(Op::Delete, StatusCode::TOO_MANY_REQUESTS, &limited, b""),
            Err(OktaError::RateLimited { wait }) if wait == std::time::Duration::from_secs(3)
        ));
        assert_eq!(a.decode_bulk(Op::Upsert, StatusCode::ACCEPTED, &h, b"").ok(), Some(()));
    }
}
