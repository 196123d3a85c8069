//! What the client needs to know about one tenant, and which users to read.

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use secrecy::SecretString;
use url::Url;

/// How to reach one Entra tenant through Graph, and how hard to try before
/// handing a failure back to the broker.
///
/// The URLs are expected to have passed `xaas_http::parse_base_url` (the
/// transport policy); the client only checks that they can carry a path.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// e.g. `https://login.microsoftonline.com`; the token URL is
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub authority_url: Url,
    /// e.g. `https://graph.microsoft.com`; the users URL is `{graph}/v1.0/users`.
    /// Also the only origin the bearer token is ever sent to.
    pub graph_url: Url,
    /// Tenant GUID or verified domain. App-only tokens need the specific tenant.
    pub tenant: String,
    /// The application (client) ID of the app registration.
    pub client_id: String,
    /// The secret's **Value** (not its Secret ID).
    pub client_secret: SecretString,
    /// Whole-request timeout, connection included.
    pub timeout: Duration,
    /// Short retries inside the process before giving up with a retryable
    /// error, so that the broker's delayed retry takes over (e.g. 3).
    pub max_in_process_retries: usize,
    /// A server-requested wait longer than this is not slept in-process: the
    /// error is returned at once with its `retry_after`, and the broker waits.
    pub max_retry_after: Duration,
}

/// Which users a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersQuery {
    /// `$top` for `/users`, `Prefer: odata.maxpagesize` for delta.
    /// Graph accepts 1..=999; values outside are clamped.
    pub page_size: u16,
    /// `$select`: the properties to read. Include `id`. Empty means Graph's
    /// default property set.
    pub select: Vec<String>,
    /// `$filter`, e.g. `accountEnabled eq false`. Not sent on delta.
    pub filter: Option<String>,
}

/// Graph's accepted page sizes.
pub const MAX_PAGE_SIZE: u16 = 999;

/// Clamps a page size into what Graph accepts, instead of letting Graph
/// answer 400 "Invalid page size specified".
pub(crate) fn clamp_page_size(page_size: u16) -> u16 {
    page_size.clamp(1, MAX_PAGE_SIZE)
}

impl UsersQuery {
    /// `GET /v1.0/users?$top=..&$select=..&$filter=..`
    pub(crate) fn users_url(&self, endpoint: &Url) -> Url {
        let mut options = vec![("$top", clamp_page_size(self.page_size).to_string())];
        options.extend(self.select_option());
        if let Some(filter) = &self.filter {
            options.push(("$filter", filter.clone()));
        }
        with_query(endpoint, &options)
    }

    /// `GET /v1.0/users/delta?$select=..`. Graph refuses `$top` and any
    /// `$filter` other than ids on delta; the page size travels in a header.
    pub(crate) fn delta_url(&self, endpoint: &Url) -> Url {
        let options: Vec<_> = self.select_option().into_iter().collect();
        with_query(endpoint, &options)
    }

    fn select_option(&self) -> Option<(&'static str, String)> {
        (!self.select.is_empty()).then(|| ("$select", self.select.join(",")))
    }
}

/// Characters escaped in OData query values. `$`, `,`, `(`, `)` and `'` stay
/// readable as in Graph's own examples; what would end or split the value
/// (`&`, `=`, `#`, `+`, `%`, space) is escaped, space as `%20` rather than `+`.
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'=')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn with_query(endpoint: &Url, options: &[(&str, String)]) -> Url {
    let mut url = endpoint.clone();
    let query: Vec<String> =
        options.iter().map(|(name, value)| format!("{name}={}", utf8_percent_encode(value, QUERY_VALUE))).collect();
    url.set_query((!query.is_empty()).then(|| query.join("&")).as_deref());
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Url {
        Url::parse("https://graph.microsoft.com/v1.0/users").unwrap()
    }

    fn query(filter: Option<&str>) -> UsersQuery {
        UsersQuery {
            page_size: 999,
            select: vec!["id".into(), "userPrincipalName".into()],
            filter: filter.map(String::from),
        }
    }

    #[test]
    fn users_url_reads_like_graphs_examples() {
        let url = query(Some("accountEnabled eq false")).users_url(&endpoint());
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/v1.0/users?$top=999&$select=id,userPrincipalName&$filter=accountEnabled%20eq%20false"
        );
    }

    #[test]
    fn filter_values_cannot_break_out_of_their_option() {
        let url = query(Some("department eq 'R&D+X=1#'")).users_url(&endpoint());
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        assert_eq!(pairs.len(), 3, "{url}");
        assert_eq!(pairs[2], ("$filter".into(), "department eq 'R&D+X=1#'".into()));
    }

    #[test]
    fn page_size_is_clamped_to_what_graph_accepts() {
        let mut q = query(None);
        q.page_size = 5000;
        assert!(q.users_url(&endpoint()).as_str().contains("$top=999&"));
        q.page_size = 0;
        assert!(q.users_url(&endpoint()).as_str().contains("$top=1&"));
    }

    #[test]
    fn delta_url_carries_only_select() {
        let delta = Url::parse("https://graph.microsoft.com/v1.0/users/delta").unwrap();
        let url = query(Some("accountEnabled eq true")).delta_url(&delta);
        assert_eq!(url.as_str(), "https://graph.microsoft.com/v1.0/users/delta?$select=id,userPrincipalName");
        let bare = UsersQuery { page_size: 10, select: vec![], filter: None }.delta_url(&delta);
        assert_eq!(bare.as_str(), "https://graph.microsoft.com/v1.0/users/delta");
    }
}
