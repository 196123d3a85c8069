//! A Graph call without HTTP: what `respond` is given and what it answers.
//!
//! The axum handlers build a [`GraphRequest`] from the request they got; a
//! simulation builds one from exactly the URL the Graph client would request
//! ([`GraphRequest::get`]), plus the headers it would send.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

/// One `GET` to Graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphRequest {
    /// `scheme://host[:port]`: every link in the answer is built on it, so
    /// following links verbatim comes back here.
    pub base: String,
    /// `/v1.0/users`, `/v1.0/users/delta`, ...
    pub path: String,
    /// The raw query string, percent-encoding included.
    pub query: Option<String>,
    /// The headers Graph reads: `Prefer`, `ConsistencyLevel`, `client-request-id`.
    /// Authorization is checked before a request gets here.
    pub headers: HeaderMap,
    /// The `request-id` Graph gives this request; also the
    /// `client-request-id` when the caller sent none.
    pub request_id: String,
}

impl GraphRequest {
    /// A GET of `url` (absolute, as the client requests it: a first-page URL
    /// or a link verbatim), with no headers and a fixed `request-id`.
    pub fn get(url: &str) -> Result<Self, url::ParseError> {
        let url = url::Url::parse(url)?;
        let base = match url.port() {
            Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or_default()),
            None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
        };
        Ok(Self {
            base,
            path: url.path().to_owned(),
            query: url.query().map(str::to_owned),
            headers: HeaderMap::new(),
            request_id: "00000000-0000-0000-0000-000000000000".to_owned(),
        })
    }

    /// Adds a header (`prefer: odata.maxpagesize=50`, ...); invalid names or
    /// values are ignored, as Graph never receives them.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            self.headers.append(name, value);
        }
        self
    }

    /// Sets the `request-id` Graph gives this request.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = id.into();
        self
    }
}

/// Graph's answer, as it goes on the wire (minus `Content-Length` and `Date`,
/// which the HTTP layer adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphResponse {
    pub status: StatusCode,
    /// `request-id`, `client-request-id`, Graph's `Content-Type` and
    /// `OData-Version`; `Preference-Applied` when `Prefer` set the page
    /// size; `Location` on a 410.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// What every Graph response echoes about its request.
#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    pub request_id: String,
    /// The caller's `client-request-id`, or a fresh one, as Graph does.
    pub client_request_id: String,
}

impl RequestIds {
    /// Fresh random ids, for the HTTP layer's own answers (401s, faults).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        Self::echoing(headers, uuid::Uuid::new_v4().to_string(), || uuid::Uuid::new_v4().to_string())
    }

    /// `request_id`, and the caller's `client-request-id` or else `fresh()`.
    pub(crate) fn echoing(headers: &HeaderMap, request_id: String, fresh: impl FnOnce() -> String) -> Self {
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map_or_else(fresh, str::to_owned);
        RequestIds { request_id, client_request_id }
    }

    /// Graph's headers for a JSON answer.
    pub(crate) fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [("request-id", &self.request_id), ("client-request-id", &self.client_request_id)] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(
                "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
            ),
        );
        headers.insert(HeaderName::from_static("odata-version"), HeaderValue::from_static("4.0"));
        headers
    }

    /// A Graph JSON answer with Graph's headers.
    pub(crate) fn json(&self, status: StatusCode, body: &serde_json::Value) -> GraphResponse {
        GraphResponse { status, headers: self.headers(), body: body.to_string().into_bytes() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_becomes_base_path_and_raw_query() {
        let r = GraphRequest::get("http://127.0.0.1:8080/v1.0/users?$top=5&$filter=city%20eq%20'x'").unwrap();
        assert_eq!((r.base.as_str(), r.path.as_str()), ("http://127.0.0.1:8080", "/v1.0/users"));
        assert_eq!(r.query.as_deref(), Some("$top=5&$filter=city%20eq%20%27x%27"));
        let r = GraphRequest::get("https://graph.microsoft.com/v1.0/users/delta")
            .unwrap()
            .header("prefer", "odata.maxpagesize=7");
        assert_eq!((r.base.as_str(), r.query), ("https://graph.microsoft.com", None));
        assert_eq!(r.headers["prefer"], "odata.maxpagesize=7");
    }
}
