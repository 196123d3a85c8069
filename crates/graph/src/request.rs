//! The Graph side of a read without I/O: where a read starts, what each page
//! request carries, and how an answer reads. [`GraphClient`](crate::GraphClient)
//! sends these requests and decodes with [`decode_page`]; a simulation uses
//! the same functions against a simulated Graph, so both speak one protocol.

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::error::{self, GraphError, Service};
use crate::page::GraphPage;
use crate::settings::{UsersQuery, clamp_page_size};

/// The user endpoints under one Graph base URL, and the one origin our
/// bearer token may be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphEndpoints {
    origin: url::Origin,
    users: Url,
    delta: Url,
}

impl GraphEndpoints {
    /// `graph_url` is e.g. `https://graph.microsoft.com`; a path prefix (a
    /// proxy's) is kept.
    pub fn new(graph_url: &Url) -> Result<Self, GraphError> {
        Ok(Self {
            origin: graph_url.origin(),
            users: endpoint("graph_url", graph_url, &["v1.0", "users"])?,
            delta: endpoint("graph_url", graph_url, &["v1.0", "users", "delta"])?,
        })
    }

    /// `/v1.0/users` itself.
    pub(crate) fn users_endpoint(&self) -> &Url {
        &self.users
    }

    /// The origin links must stay on.
    pub fn origin(&self) -> &url::Origin {
        &self.origin
    }

    /// The first page of a full read: `GET /v1.0/users?$top=..&$select=..&$filter=..`.
    pub fn users_url(&self, q: &UsersQuery) -> Url {
        q.users_url(&self.users)
    }

    /// The first page of a delta round: `GET /v1.0/users/delta?$select=..`.
    /// Request it, and every link that follows, with a `max_page_size`.
    pub fn delta_url(&self, q: &UsersQuery) -> Url {
        q.delta_url(&self.delta)
    }

    /// The GET of `link` (a first-page URL, or a nextLink/deltaLink
    /// verbatim), without the bearer token. `max_page_size` is sent as
    /// `Prefer: odata.maxpagesize` (clamped to what Graph accepts): delta
    /// takes no `$top`, and Graph does not carry the preference over from one
    /// page to the next. A link off the Graph origin is refused, because the
    /// request would carry our token there.
    pub fn page_request(&self, link: &str, max_page_size: Option<u16>) -> Result<PageRequest, GraphError> {
        let url = Url::parse(link).map_err(|e| GraphError::BadLink { reason: format!("{e}") })?;
        if url.origin() != self.origin {
            return Err(GraphError::ForeignLink {
                link_origin: url.origin().ascii_serialization(),
                graph_origin: self.origin.ascii_serialization(),
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(size) = max_page_size {
            let value = format!("odata.maxpagesize={}", clamp_page_size(size));
            headers.insert(
                HeaderName::from_static("prefer"),
                HeaderValue::from_str(&value).expect("digits are a valid header value"),
            );
        }
        Ok(PageRequest { url, headers })
    }
}

/// One page GET as it goes on the wire, minus `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub url: Url,
    /// `Accept`, and `Prefer` when a page size is asked for.
    pub headers: HeaderMap,
}

/// Reads Graph's answer to a page GET of `path`: the page, or the error the
/// caller can act on (retryable, delta expired, refused, malformed). Reads
/// no clock, except for a `Retry-After` given as an HTTP date.
pub fn decode_page(path: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<GraphPage, GraphError> {
    if !status.is_success() {
        let retry_after = xaas_http::retry_after(headers);
        return Err(error::from_graph_response(path, status, retry_after, body));
    }
    GraphPage::parse(body).map_err(|reason| GraphError::Malformed {
        service: Service::Graph,
        path: path.to_owned(),
        reason,
    })
}

/// `base` with `segments` appended to its path (keeping any path prefix, as a
/// sandbox or a proxy may have one).
pub(crate) fn endpoint(setting: &str, base: &Url, segments: &[&str]) -> Result<Url, GraphError> {
    let unusable = || GraphError::Config(format!("{setting} {base} must be an absolute http(s) URL"));
    if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
        return Err(unusable());
    }
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut().map_err(|()| unusable())?.pop_if_empty().extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> GraphEndpoints {
        GraphEndpoints::new(&Url::parse("http://127.0.0.1:8080").unwrap()).unwrap()
    }

    #[test]
    fn endpoints_keep_a_path_prefix() {
        let base = Url::parse("http://127.0.0.1:8080/graph/").unwrap();
        let url = endpoint("graph_url", &base, &["v1.0", "users"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/graph/v1.0/users");
        let bare = Url::parse("https://login.microsoftonline.com").unwrap();
        let url = endpoint("authority_url", &bare, &["contoso.onmicrosoft.com", "oauth2", "v2.0", "token"]).unwrap();
        assert_eq!(url.as_str(), "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
        assert!(endpoint("graph_url", &Url::parse("mailto:a@b.c").unwrap(), &["x"]).is_err());
    }

    #[test]
    fn page_requests_stay_on_graph_and_carry_the_page_size() {
        let e = endpoints();
        let q = UsersQuery { page_size: 5000, select: vec!["id".into()], filter: None };
        let first = e.page_request(e.delta_url(&q).as_str(), Some(q.page_size)).unwrap();
        assert_eq!(first.url.as_str(), "http://127.0.0.1:8080/v1.0/users/delta?$select=id");
        assert_eq!(first.headers["prefer"], "odata.maxpagesize=999");
        assert_eq!(first.headers["accept"], "application/json");
        let plain = e.page_request(e.users_url(&q).as_str(), None).unwrap();
        assert!(plain.headers.get("prefer").is_none());
        assert!(matches!(e.page_request("http://evil.test/v1.0/users", None), Err(GraphError::ForeignLink { .. })));
        assert!(matches!(e.page_request("not a url", None), Err(GraphError::BadLink { .. })));
    }

    #[test]
    fn answers_decode_into_pages_or_errors() {
        let ok = decode_page("/v1.0/users", StatusCode::OK, &HeaderMap::new(), br#"{"value":[{"id":"1"}]}"#).unwrap();
        assert_eq!(ok.users.len(), 1);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        let throttled = decode_page("/v1.0/users", StatusCode::TOO_MANY_REQUESTS, &h, b"").unwrap_err();
        assert_eq!(throttled.retry_after(), Some(std::time::Duration::from_secs(2)));
        let gone = br#"{"error":{"code":"syncStateNotFound","message":"x"}}"#;
        assert!(matches!(
            decode_page("/v1.0/users/delta", StatusCode::GONE, &HeaderMap::new(), gone),
            Err(GraphError::DeltaExpired { status: 410, .. })
        ));
        assert!(matches!(
            decode_page("/v1.0/users", StatusCode::OK, &HeaderMap::new(), b"<html>"),
            Err(GraphError::Malformed { .. })
        ));
    }
}
