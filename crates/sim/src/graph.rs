//! Microsoft Graph `GET /v1.0/users` and `GET /v1.0/users/delta`, as strict as
//! the real service where a client could get it wrong (reference
//! microsoft-graph.md §2-§4):
//!
//! - `$top` must be 1..=999 (default 100); `$select` returns exactly the
//!   selected properties (the documented default set without it); unknown
//!   properties are a 400, properties Graph cannot list are a 501.
//! - `$filter` takes `prop eq 'value'` / `accountEnabled eq true|false`
//!   clauses joined with `and`, on the properties Graph filters by default;
//!   `ConsistencyLevel: eventual` with `$count=true` unlocks the advanced ones
//!   (and `@odata.count` on the first page). String comparison ignores case,
//!   as Entra does.
//! - `@odata.nextLink` is absolute (built from the request's Host) and its
//!   `$skiptoken` carries the whole query and the position, so following the
//!   link verbatim is the only thing a client needs to do. Spaces in the
//!   repeated query options are encoded as `+`, like Graph's own links.
//! - Delta rounds end with `@odata.deltaLink`; its `$deltatoken` carries the
//!   directory version, `$select` and `$filter`. Tokens die after 7 days, on
//!   reseeding, and on `POST /sim/graph/expire-delta-tokens`; a dead token gets
//!   `410 Gone` + `syncStateNotFound` and a `Location` that restarts the round.
//!   Pages hold 100 items unless `Prefer: odata.maxpagesize=N` says otherwise.
//!   Items show a user's current state, so a user changed while a round is
//!   being paged may show up in that round and again in the next (at least
//!   once, never lost). Deleted users come as `{"id", "@removed": {"reason"}}`,
//!   except those created and deleted since the token: the client never saw them.
//!
//! [`respond`] is all of it as one plain function of the directory, the
//! request and the time, so a simulation can ask it without HTTP; the axum
//! handler only checks the bearer token and calls it.
//!
//! Sandbox-only, documented deviations: delta also takes `$top` as its page
//! size (real Graph only honours `Prefer: odata.maxpagesize=N`); a `$filter`
//! may only join with `and` (delta: `id eq` joined with `or`); `$orderby`,
//! `$expand` and `$search` are refused with 400.

mod create;
mod request;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

pub(crate) use self::create::create_user;
pub(crate) use self::request::RequestIds;
pub use self::request::{GraphRequest, GraphResponse};
use crate::app::Shared;
use crate::directory::{Directory, Entry, User};
use crate::entra;
use xaas_core::odata::{Filter, FilterError, Join, Literal};

/// Graph's default and maximum page sizes for `/users`.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 999;
/// Delta tokens for directory objects live 7 days.
const DELTA_TOKEN_LIFETIME_SECS: i64 = 7 * 24 * 3600;
/// `Prefer`/`$filter=id eq ...` limit on ids in one delta query.
const MAX_DELTA_IDS: usize = 50;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1.0/users", get(serve).post(create))
        .route("/v1.0/users/delta", get(serve))
        .route("/v1.0/users/delta()", get(serve))
        .route("/v1.0/users/microsoft.graph.delta()", get(serve))
}

/// Every read route: the bearer token, then [`respond`] at the sandbox's clock.
async fn serve(State(state): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(denied) = entra::check_bearer(&state, &headers) {
        return denied.into_response();
    }
    let request = from_http(headers, &uri);
    let directory = crate::app::lock(&state.directory);
    let answer = respond(&directory, &request, state.clock.now().wall);
    drop(directory);
    answer.into_response()
}

/// `POST /v1.0/users`: the bearer token, then [`create_user`].
async fn create(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(denied) = entra::check_bearer(&state, &headers) {
        return denied.into_response();
    }
    let ids = RequestIds::from_headers(&headers);
    let domains = [state.cfg.domain.as_str()];
    let mut directory = crate::app::lock(&state.directory);
    let answer = create_user(&mut directory, &domains, &body, &ids, state.clock.now().wall);
    drop(directory);
    answer.into_response()
}

/// The request as `respond` takes it: links are built on the Host the caller
/// used (so they work at any address), and ids are fresh per request.
fn from_http(mut headers: HeaderMap, uri: &Uri) -> GraphRequest {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".to_owned());
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http")
        .to_owned();
    // Graph makes up a client-request-id of its own when the caller sent none.
    let ids = RequestIds::from_headers(&headers);
    if let Ok(value) = HeaderValue::from_str(&ids.client_request_id) {
        headers.insert(HeaderName::from_static("client-request-id"), value);
    }
    GraphRequest {
        base: format!("{scheme}://{host}"),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        request_id: ids.request_id,
    }
}

impl IntoResponse for GraphResponse {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::body::Body::from(self.body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

/// Answers one GET of `/v1.0/users` or `/v1.0/users/delta` as Graph would at
/// `now` (which only delta tokens' 7-day lifetime and error dates depend
/// on). Reads nothing else: no clock, no randomness, no I/O. Any other path
/// is the router's bare 404.
pub fn respond(dir: &Directory, req: &GraphRequest, now: OffsetDateTime) -> GraphResponse {
    let ids = RequestIds::echoing(&req.headers, req.request_id.clone(), || req.request_id.clone());
    let call = Call { ids, base: &req.base };
    let query = req.query.as_deref();
    let result = match req.path.as_str() {
        "/v1.0/users" => list_page(dir, &call, query, &req.headers),
        "/v1.0/users/delta" | "/v1.0/users/delta()" | "/v1.0/users/microsoft.graph.delta()" => {
            delta_page(dir, &call, query, &req.headers, now)
        }
        _ => return GraphResponse { status: StatusCode::NOT_FOUND, headers: HeaderMap::new(), body: Vec::new() },
    };
    call.respond(result, now)
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// One Graph call: its ids and the base URL links are built on.
struct Call<'a> {
    ids: RequestIds,
    /// `http://host:port`.
    base: &'a str,
}

impl Call<'_> {
    fn respond(&self, result: Result<Page, GraphError>, now: OffsetDateTime) -> GraphResponse {
        match result {
            Ok(page) => {
                let mut response = self.ids.json(StatusCode::OK, &page.body);
                if let Some(size) = page.preference_applied
                    && let Ok(v) = HeaderValue::from_str(&format!("odata.maxpagesize={size}"))
                {
                    response.headers.insert(HeaderName::from_static("preference-applied"), v);
                }
                response
            }
            Err(e) => e.render(&self.ids, now),
        }
    }

    fn context(&self, select: Option<&[&str]>) -> String {
        match select {
            Some(props) => format!("{}/v1.0/$metadata#users({})", self.base, props.join(",")),
            None => format!("{}/v1.0/$metadata#users", self.base),
        }
    }
}

#[derive(Debug)]
struct Page {
    body: Value,
    preference_applied: Option<usize>,
}

/// A Graph error (`microsoft.graph.ODataErrors.ODataError`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GraphError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as the `Location` header (410 resync).
    pub location: Option<String>,
    /// `error.details[]` as (code, target): which property a write refused.
    pub details: Vec<(&'static str, &'static str)>,
}

impl GraphError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        GraphError { status, code, message: message.into(), location: None, details: Vec::new() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_UnsupportedQuery", message)
    }

    /// The error as the HTTP layer sends it (401s, injected faults), dated now.
    pub(crate) fn into_response(self, ids: &RequestIds) -> Response {
        self.render(ids, OffsetDateTime::now_utc()).into_response()
    }

    /// Graph's error answer, with `innerError.date` from `now`.
    fn render(&self, ids: &RequestIds, now: OffsetDateTime) -> GraphResponse {
        let date = inner_error_date_at(now);
        let mut body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": date,
                    "request-id": ids.request_id,
                    "client-request-id": ids.client_request_id,
                }
            }
        });
        if !self.details.is_empty() {
            let details: Vec<Value> =
                self.details.iter().map(|(code, target)| json!({"code": code, "target": target})).collect();
            body["error"]["details"] = Value::Array(details);
        }
        let mut response = ids.json(self.status, &body);
        if let Some(location) = self.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
            response.headers.insert(header::LOCATION, location);
        }
        response
    }
}

/// Graph's `innerError.date` now.
pub(crate) fn inner_error_date() -> String {
    inner_error_date_at(OffsetDateTime::now_utc())
}

/// Graph's `innerError.date`: ISO 8601 in UTC, without an offset.
fn inner_error_date_at(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Query options
// ---------------------------------------------------------------------------

/// The decoded query string. System options (`$top`, ...) are matched without
/// regard to case; anything without a `$` is ignored, as OData does.
#[derive(Debug, Default)]
struct Options {
    top: Option<String>,
    select: Option<String>,
    filter: Option<String>,
    count: Option<String>,
    skiptoken: Option<String>,
    deltatoken: Option<String>,
}

impl Options {
    fn parse(raw: Option<&str>) -> Result<Self, GraphError> {
        let mut opts = Options::default();
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let name = key.to_ascii_lowercase();
            let slot = match name.as_str() {
                "$top" => &mut opts.top,
                "$select" => &mut opts.select,
                "$filter" => &mut opts.filter,
                "$count" => &mut opts.count,
                "$skiptoken" => &mut opts.skiptoken,
                "$deltatoken" => &mut opts.deltatoken,
                "$skip" => return Err(GraphError::bad_request("'$skip' is not supported by the service.")),
                "$search" => {
                    return Err(GraphError::unsupported(
                        "Request with $search query parameter only works through MSGraph with a special request \
                         header: 'ConsistencyLevel: eventual'. The sandbox does not implement $search.",
                    ));
                }
                "$orderby" | "$expand" | "$format" | "$levels" | "$compute" | "$apply" => {
                    return Err(GraphError::unsupported(format!(
                        "The query option '{key}' is not supported by the sandbox."
                    )));
                }
                other if other.starts_with('$') => {
                    return Err(GraphError::bad_request(format!("The query parameter '{key}' is not supported.")));
                }
                _ => continue,
            };
            if slot.is_some() {
                return Err(GraphError::bad_request(format!(
                    "Query option '{key}' was specified more than once, but it must be specified at most once."
                )));
            }
            *slot = Some(value.into_owned());
        }
        Ok(opts)
    }
}

fn parse_top(raw: &str) -> Result<usize, GraphError> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        _ => Err(GraphError::bad_request(format!(
            "Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive."
        ))),
    }
}

/// `ConsistencyLevel: eventual` plus `$count=true`: Graph's "advanced query".
fn is_advanced(headers: &HeaderMap, count: bool) -> bool {
    count
        && headers
            .get("consistencylevel")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
}

fn parse_count(raw: Option<&str>) -> Result<bool, GraphError> {
    match raw.map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => {
            Err(GraphError::bad_request(format!("Invalid value '{other}' for $count: expected true or false.")))
        }
    }
}

/// `Prefer: odata.maxpagesize=N`, clamped to 1..=999; malformed preferences are ignored.
fn preferred_page_size(headers: &HeaderMap) -> Option<usize> {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).find_map(|pref| {
        let (name, value) = pref.trim().split_once('=')?;
        let n = name.trim().eq_ignore_ascii_case("odata.maxpagesize").then(|| value.trim().parse::<usize>().ok())??;
        Some(n.clamp(1, MAX_PAGE_SIZE))
    })
}

// ---------------------------------------------------------------------------
// Properties and $select
// ---------------------------------------------------------------------------

/// Every structural property of `microsoft.graph.user` (msgraph-metadata CSDL,
/// as in tests/fixtures/msgraph-users.openapi.yaml).
const USER_PROPERTIES: &[&str] = &[
    "id",
    "deletedDateTime",
    "aboutMe",
    "accountEnabled",
    "ageGroup",
    "assignedLicenses",
    "assignedPlans",
    "authorizationInfo",
    "birthday",
    "businessPhones",
    "city",
    "companyName",
    "consentProvidedForMinor",
    "country",
    "createdDateTime",
    "creationType",
    "customSecurityAttributes",
    "department",
    "deviceEnrollmentLimit",
    "displayName",
    "employeeHireDate",
    "employeeId",
    "employeeLeaveDateTime",
    "employeeOrgData",
    "employeeType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "faxNumber",
    "givenName",
    "hireDate",
    "identities",
    "identityParentId",
    "imAddresses",
    "interests",
    "isManagementRestricted",
    "isResourceAccount",
    "jobTitle",
    "lastPasswordChangeDateTime",
    "legalAgeGroupClassification",
    "licenseAssignmentStates",
    "mail",
    "mailboxSettings",
    "mailNickname",
    "mobilePhone",
    "mySite",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "passwordPolicies",
    "passwordProfile",
    "pastProjects",
    "postalCode",
    "preferredDataLocation",
    "preferredLanguage",
    "preferredName",
    "print",
    "provisionedPlans",
    "proxyAddresses",
    "responsibilities",
    "schools",
    "securityIdentifier",
    "serviceProvisioningErrors",
    "showInAddressList",
    "signInActivity",
    "signInSessionsValidFromDateTime",
    "skills",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
];

/// Collection-valued properties: `[]` when unset, never null.
const COLLECTION_PROPERTIES: &[&str] = &[
    "assignedLicenses",
    "assignedPlans",
    "businessPhones",
    "identities",
    "imAddresses",
    "licenseAssignmentStates",
    "onPremisesProvisioningErrors",
    "otherMails",
    "provisionedPlans",
    "proxyAddresses",
    "serviceProvisioningErrors",
];

/// Properties Graph returns only for a single user: selecting them on a collection is a 501.
const SINGLE_USER_ONLY: &[&str] = &[
    "aboutMe",
    "birthday",
    "hireDate",
    "interests",
    "mySite",
    "pastProjects",
    "preferredName",
    "responsibilities",
    "schools",
    "skills",
    "mailboxSettings",
];

/// What `/users` returns without `$select`.
const DEFAULT_SELECT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

fn canonical_property(name: &str) -> Option<&'static str> {
    USER_PROPERTIES.iter().copied().find(|p| p.eq_ignore_ascii_case(name))
}

/// Parses `$select` into canonical property names, in the order given.
fn parse_select(raw: &str) -> Result<Vec<&'static str>, GraphError> {
    let mut props = Vec::new();
    for name in raw.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(GraphError::bad_request(format!("Syntax error: '$select={raw}' names an empty property.")));
        }
        let prop = canonical_property(name).ok_or_else(|| {
            GraphError::bad_request(format!("Could not find a property named '{name}' on type 'microsoft.graph.user'."))
        })?;
        if SINGLE_USER_ONLY.contains(&prop) {
            return Err(GraphError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                format!("This operation target is not yet supported: '{prop}' cannot be selected on a collection."),
            ));
        }
        if !props.contains(&prop) {
            props.push(prop);
        }
    }
    Ok(props)
}

/// The user reduced to `props`, with Graph's values for unset properties.
fn project(user: &User, props: &[&str]) -> Value {
    let mut out = Map::new();
    for &prop in props {
        let value = user.get(prop).cloned().unwrap_or_else(|| match prop {
            p if COLLECTION_PROPERTIES.contains(&p) => json!([]),
            // Not nullable in the CSDL; Entra's default.
            "deviceEnrollmentLimit" => json!(5),
            _ => Value::Null,
        });
        out.insert(prop.to_owned(), value);
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// $filter
// ---------------------------------------------------------------------------

/// Parses a `$filter` with the product's own parser (`xaas_core::odata`),
/// its properties named the way the directory names them.
fn parse_filter(raw: &str) -> Result<Filter, GraphError> {
    let mut filter = Filter::parse(raw).map_err(|e| match e {
        FilterError::Syntax(why) => GraphError::bad_request(why),
        FilterError::Unsupported(why) => GraphError::unsupported(why),
    })?;
    for clause in &mut filter.clauses {
        let prop = canonical_property(&clause.prop).ok_or_else(|| {
            GraphError::bad_request(format!(
                "Could not find a property named '{}' on type 'microsoft.graph.user'.",
                clause.prop
            ))
        })?;
        clause.prop = prop.to_string();
    }
    Ok(filter)
}

/// Properties `/users` filters with `eq` by default, and with advanced queries.
const FILTER_DEFAULT: &[&str] = &[
    "id",
    "accountEnabled",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "department",
    "city",
    "country",
    "usageLocation",
    "mail",
    "state",
    "employeeId",
    "userType",
    "onPremisesImmutableId",
];
const FILTER_ADVANCED: &[&str] =
    &["mobilePhone", "postalCode", "streetAddress", "companyName", "officeLocation", "preferredLanguage"];

fn unsupported_clause(prop: &str) -> GraphError {
    GraphError::unsupported(format!(
        "Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'."
    ))
}

/// A `/users` filter: `and`-joined `eq` clauses on filterable properties.
fn users_filter(raw: &str, advanced: bool) -> Result<Filter, GraphError> {
    let filter = parse_filter(raw)?;
    if filter.join == Join::Or {
        return Err(GraphError::unsupported("The sandbox supports only 'and' between $filter clauses on /users."));
    }
    for clause in &filter.clauses {
        let prop = clause.prop.as_str();
        let allowed = FILTER_DEFAULT.contains(&prop) || (advanced && FILTER_ADVANCED.contains(&prop));
        let typed = match clause.value {
            Literal::Bool(_) => prop == "accountEnabled",
            Literal::Str(_) => prop != "accountEnabled",
            // `eq null` needs an advanced query, and is never allowed on these.
            Literal::Null => advanced && !matches!(prop, "accountEnabled" | "userPrincipalName" | "id"),
        };
        if !allowed || !typed {
            return Err(unsupported_clause(prop));
        }
    }
    Ok(filter)
}

/// A delta filter: only `id eq '...'`, `or`-joined, at most 50.
fn delta_filter(raw: &str) -> Result<Filter, GraphError> {
    let filter = parse_filter(raw)?;
    let only_ids = filter.clauses.iter().all(|c| c.prop == "id" && matches!(c.value, Literal::Str(_)));
    if !only_ids || (filter.join == Join::And && filter.clauses.len() > 1) {
        return Err(GraphError::unsupported(
            "Users delta supports $filter only as id eq '{id}' clauses joined with 'or'.",
        ));
    }
    if filter.clauses.len() > MAX_DELTA_IDS {
        return Err(GraphError::unsupported(format!("Users delta accepts at most {MAX_DELTA_IDS} ids in $filter.")));
    }
    Ok(filter)
}

// ---------------------------------------------------------------------------
// State tokens
// ---------------------------------------------------------------------------

fn encode_token<T: Serialize>(state: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(state).unwrap_or_default())
}

fn decode_token<T: DeserializeOwned>(token: &str) -> Option<T> {
    URL_SAFE_NO_PAD.decode(token.trim()).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// Query-string value encoding as Graph writes it in its links: space as `+`.
fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The position of a `/users` listing, carried in `$skiptoken`.
#[derive(Debug, Serialize, Deserialize)]
struct ListState {
    /// Directory generation: a reseeded directory invalidates the position.
    g: u64,
    top: Option<String>,
    select: Option<String>,
    filter: Option<String>,
    count: Option<String>,
    /// Last seq returned.
    after: u64,
}

/// Where a delta round is, carried in `$skiptoken`.
#[derive(Debug, Serialize, Deserialize)]
struct DeltaRound {
    g: u64,
    /// Version the client is in sync with; `None` = initial round (full state).
    since: Option<u64>,
    /// Directory version when the round started: the next deltaLink's version.
    upto: u64,
    select: Option<String>,
    filter: Option<String>,
    size: Option<usize>,
    after: Option<u64>,
    /// When the round's starting token was issued (unix seconds).
    iat: i64,
}

/// The state a deltaLink carries in `$deltatoken`.
#[derive(Debug, Serialize, Deserialize)]
struct DeltaToken {
    g: u64,
    /// The client has seen every change up to this version.
    v: u64,
    select: Option<String>,
    filter: Option<String>,
    size: Option<usize>,
    iat: i64,
}

// ---------------------------------------------------------------------------
// GET /v1.0/users
// ---------------------------------------------------------------------------

fn list_page(dir: &Directory, call: &Call, raw: Option<&str>, headers: &HeaderMap) -> Result<Page, GraphError> {
    let mut opts = Options::parse(raw)?;
    if opts.deltatoken.is_some() {
        return Err(GraphError::bad_request("$deltatoken is only valid on /users/delta."));
    }
    let mut after = None;
    if let Some(token) = opts.skiptoken.take() {
        let state: ListState = decode_token(&token)
            .ok_or_else(|| GraphError::bad_request("The $skiptoken is not valid; follow @odata.nextLink verbatim."))?;
        if state.g != dir.generation() {
            return Err(GraphError::bad_request(
                "The $skiptoken is no longer valid (the directory was reseeded); restart the listing.",
            ));
        }
        for (name, given, carried) in [
            ("$top", &opts.top, &state.top),
            ("$select", &opts.select, &state.select),
            ("$filter", &opts.filter, &state.filter),
            ("$count", &opts.count, &state.count),
        ] {
            if given.is_some() && given != carried {
                return Err(GraphError::bad_request(format!(
                    "{name} differs from the query the $skiptoken was issued for; follow @odata.nextLink verbatim."
                )));
            }
        }
        opts = Options { top: state.top, select: state.select, filter: state.filter, count: state.count, ..opts };
        after = Some(state.after);
    }

    let top = opts.top.as_deref().map(parse_top).transpose()?.unwrap_or(DEFAULT_PAGE_SIZE);
    let select = opts.select.as_deref().map(parse_select).transpose()?;
    let count = parse_count(opts.count.as_deref())?;
    let advanced = is_advanced(headers, count);
    let filter = opts.filter.as_deref().map(|f| users_filter(f, advanced)).transpose()?;

    let mut matching =
        dir.entries_after(after).filter(|e| e.is_live() && filter.as_ref().is_none_or(|f| f.matches(&e.user)));
    let page: Vec<&Entry> = matching.by_ref().take(top).collect();
    let more = matching.next().is_some();

    let props = select.as_deref().unwrap_or(DEFAULT_SELECT);
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(call.context(select.as_deref())));
    if advanced && after.is_none() {
        let total =
            dir.entries_after(None).filter(|e| e.is_live() && filter.as_ref().is_none_or(|f| f.matches(&e.user)));
        body.insert("@odata.count".into(), json!(total.count()));
    }
    if more && let Some(last) = page.last() {
        let state = ListState {
            g: dir.generation(),
            top: opts.top.clone(),
            select: opts.select.clone(),
            filter: opts.filter.clone(),
            count: opts.count.clone(),
            after: last.seq,
        };
        let mut link = format!("{}/v1.0/users?", call.base);
        for (name, value) in
            [("$top", &opts.top), ("$select", &opts.select), ("$filter", &opts.filter), ("$count", &opts.count)]
        {
            if let Some(v) = value {
                link.push_str(&format!("{name}={}&", enc(v)));
            }
        }
        link.push_str(&format!("$skiptoken={}", encode_token(&state)));
        body.insert("@odata.nextLink".into(), json!(link));
    }
    body.insert("value".into(), Value::Array(page.iter().map(|e| project(&e.user, props)).collect()));
    Ok(Page { body: Value::Object(body), preference_applied: None })
}

// ---------------------------------------------------------------------------
// GET /v1.0/users/delta
// ---------------------------------------------------------------------------

/// The 410 that tells a client its delta state is gone and where to restart.
fn sync_state_not_found(call: &Call, select: Option<&str>, filter: Option<&str>) -> GraphError {
    let mut location = format!("{}/v1.0/users/delta?", call.base);
    for (name, value) in [("$select", select), ("$filter", filter)] {
        if let Some(v) = value {
            location.push_str(&format!("{name}={}&", enc(v)));
        }
    }
    location.push_str("$deltatoken=");
    GraphError {
        location: Some(location),
        ..GraphError::new(
            StatusCode::GONE,
            "syncStateNotFound",
            "The sync state is not found or has expired (delta tokens live 7 days). Restart with a full \
             synchronization from the URL in the Location header.",
        )
    }
}

fn delta_page(
    dir: &Directory,
    call: &Call,
    raw: Option<&str>,
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Result<Page, GraphError> {
    let opts = Options::parse(raw)?;
    if opts.count.is_some() {
        return Err(GraphError::bad_request("$count is not supported on users delta."));
    }
    let now_secs = now.unix_timestamp();
    let round = match (opts.skiptoken.as_deref(), opts.deltatoken.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(GraphError::bad_request("Give either $skiptoken or $deltatoken, not both."));
        }
        (Some(skip), None) => {
            let round: DeltaRound = decode_token(skip).ok_or_else(|| sync_state_not_found(call, None, None))?;
            check_carried(&opts, &round.select, &round.filter)?;
            if round.g != dir.generation() || now_secs - round.iat > DELTA_TOKEN_LIFETIME_SECS {
                return Err(sync_state_not_found(call, round.select.as_deref(), round.filter.as_deref()));
            }
            round
        }
        (None, Some(token)) if !token.trim().is_empty() && !token.eq_ignore_ascii_case("latest") => {
            let token: DeltaToken = decode_token(token).ok_or_else(|| sync_state_not_found(call, None, None))?;
            check_carried(&opts, &token.select, &token.filter)?;
            if token.g != dir.generation()
                || token.v > dir.version()
                || now_secs - token.iat > DELTA_TOKEN_LIFETIME_SECS
            {
                return Err(sync_state_not_found(call, token.select.as_deref(), token.filter.as_deref()));
            }
            DeltaRound {
                g: token.g,
                since: Some(token.v),
                upto: dir.version(),
                select: token.select,
                filter: token.filter,
                size: token.size,
                after: None,
                iat: now_secs,
            }
        }
        (None, token) => {
            // Initial round (also `$deltatoken=` from a 410's Location), or
            // `$deltatoken=latest`: "sync from now", which returns no users.
            let latest = token.is_some_and(|t| t.eq_ignore_ascii_case("latest"));
            let size = opts.top.as_deref().map(parse_top).transpose()?;
            DeltaRound {
                g: dir.generation(),
                since: latest.then_some(dir.version()),
                upto: dir.version(),
                select: opts.select,
                filter: opts.filter,
                size,
                after: None,
                iat: now_secs,
            }
        }
    };

    let select = round.select.as_deref().map(parse_select).transpose()?;
    let filter = round.filter.as_deref().map(delta_filter).transpose()?;
    let mut props: Vec<&str> = select.clone().unwrap_or_else(|| DEFAULT_SELECT.to_vec());
    if !props.contains(&"id") {
        props.push("id");
    }
    let preferred = preferred_page_size(headers);
    let size = preferred.or(round.size).unwrap_or(DEFAULT_PAGE_SIZE);

    let mut included = dir.entries_after(round.after).filter(|e| {
        let in_round = match round.since {
            None => e.is_live(),
            Some(since) => e.changed_since(since),
        };
        in_round && filter.as_ref().is_none_or(|f| f.matches(&e.user))
    });
    let page: Vec<&Entry> = included.by_ref().take(size).collect();
    let more = included.next().is_some();

    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(call.context(select.as_deref())));
    match page.last() {
        Some(last) if more => {
            let next = DeltaRound { after: Some(last.seq), ..round };
            let link = format!("{}/v1.0/users/delta?$skiptoken={}", call.base, encode_token(&next));
            body.insert("@odata.nextLink".into(), json!(link));
        }
        _ => {
            let token = DeltaToken {
                g: round.g,
                v: round.upto,
                select: round.select,
                filter: round.filter,
                size: round.size,
                iat: now_secs,
            };
            let link = format!("{}/v1.0/users/delta?$deltatoken={}", call.base, encode_token(&token));
            body.insert("@odata.deltaLink".into(), json!(link));
        }
    }
    let value = page
        .iter()
        .map(|e| match e.removed {
            Some(how) => json!({ "id": e.id(), "@removed": { "reason": how.reason() } }),
            None => project(&e.user, &props),
        })
        .collect();
    body.insert("value".into(), Value::Array(value));
    Ok(Page { body: Value::Object(body), preference_applied: preferred })
}

/// `$select`/`$filter` next to a state token must repeat what the token carries.
fn check_carried(opts: &Options, select: &Option<String>, filter: &Option<String>) -> Result<(), GraphError> {
    for (name, given, carried) in [("$select", &opts.select, select), ("$filter", &opts.filter, filter)] {
        if given.is_some() && given != carried {
            return Err(GraphError::bad_request(format!(
                "{name} can only be given on the first request of a delta round; the state token already carries it."
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use xaas_core::odata::Clause;

    use super::*;

    #[test]
    fn filters_parse_quotes_and_joins() {
        let f = users_filter("department eq 'O''Brien & Co' and accountEnabled eq false", false).unwrap();
        assert_eq!(
            f.clauses,
            [
                Clause { prop: "department".into(), value: Literal::Str("O'Brien & Co".into()) },
                Clause { prop: "accountEnabled".into(), value: Literal::Bool(false) },
            ]
        );
        assert_eq!(users_filter("mobilePhone eq '1'", false).unwrap_err().code, "Request_UnsupportedQuery");
        assert!(users_filter("mobilePhone eq '1'", true).is_ok());
        assert_eq!(users_filter("accountEnabled eq 'true'", false).unwrap_err().code, "Request_UnsupportedQuery");
        assert_eq!(users_filter("city ne 'x'", false).unwrap_err().code, "Request_UnsupportedQuery");
        assert_eq!(users_filter("city eq 'x", false).unwrap_err().code, "Request_BadRequest");
        assert_eq!(users_filter("nope eq 'x'", false).unwrap_err().code, "Request_BadRequest");
        assert!(users_filter("city eq 'a' or city eq 'b'", false).is_err());
    }

    #[test]
    fn delta_filters_take_only_ids() {
        assert_eq!(delta_filter("id eq 'a' or id eq 'b'").unwrap().clauses.len(), 2);
        assert!(delta_filter("department eq 'x'").is_err());
        assert!(delta_filter("id eq 'a' and id eq 'b'").is_err());
    }

    #[test]
    fn clauses_compare_strings_without_case() {
        let user: User = serde_json::from_value(json!({"city": "MÜNCHEN", "accountEnabled": true})).unwrap();
        assert!(users_filter("city eq 'münchen'", false).unwrap().matches(&user));
        assert!(!users_filter("accountEnabled eq false", false).unwrap().matches(&user));
    }

    #[test]
    fn top_bounds_are_graphs() {
        assert_eq!(parse_top("999").unwrap(), 999);
        for bad in ["0", "1000", "abc", "-1"] {
            let e = parse_top(bad).unwrap_err();
            assert_eq!(
                e.message,
                format!("Invalid page size specified: '{bad}'. Must be between 1 and 999 inclusive.")
            );
        }
    }

    #[test]
    fn select_is_canonicalised_and_checked() {
        assert_eq!(parse_select("ID,displayname,id").unwrap(), ["id", "displayName"]);
        assert_eq!(parse_select("id,nope").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(parse_select("id,skills").unwrap_err().status, StatusCode::NOT_IMPLEMENTED);
        let user: User = serde_json::from_value(json!({"id": "1", "secret": "x"})).unwrap();
        assert_eq!(
            project(&user, &["id", "otherMails", "city", "deviceEnrollmentLimit"]),
            json!({"id": "1", "otherMails": [], "city": null, "deviceEnrollmentLimit": 5})
        );
    }

    #[test]
    fn prefer_header_sets_the_page_size() {
        let mut h = HeaderMap::new();
        h.insert("prefer", HeaderValue::from_static("return=minimal, odata.maxpagesize=7"));
        assert_eq!(preferred_page_size(&h), Some(7));
        h.insert("prefer", HeaderValue::from_static("odata.maxpagesize=5000"));
        assert_eq!(preferred_page_size(&h), Some(999));
        h.insert("prefer", HeaderValue::from_static("odata.maxpagesize=lots"));
        assert_eq!(preferred_page_size(&h), None);
    }

    #[test]
    fn delta_tokens_die_after_seven_days() {
        let mut dir = Directory::default();
        dir.insert(json!({"id": "a"})).unwrap();
        let call = Call { ids: RequestIds::from_headers(&HeaderMap::new()), base: "http://sim" };
        let headers = HeaderMap::new();
        let issued = OffsetDateTime::now_utc() - time::Duration::days(8);
        let first = delta_page(&dir, &call, None, &headers, issued).unwrap();
        let link = first.body["@odata.deltaLink"].as_str().unwrap();
        let query = link.split_once('?').unwrap().1;

        let fresh = delta_page(&dir, &call, Some(query), &headers, issued + time::Duration::days(6)).unwrap();
        assert_eq!(fresh.body["value"], json!([]));
        let stale = delta_page(&dir, &call, Some(query), &headers, OffsetDateTime::now_utc()).unwrap_err();
        assert_eq!((stale.status, stale.code), (StatusCode::GONE, "syncStateNotFound"));
        assert_eq!(stale.location.as_deref(), Some("http://sim/v1.0/users/delta?$deltatoken="));
    }

    #[test]
    fn respond_reads_no_time_but_the_one_it_is_given() {
        // Far from the real clock: a reading of it would show, or change a verdict.
        let t = time::macros::datetime!(2031-02-03 04:05:06 UTC);
        let mut dir = Directory::default();
        for id in ["a", "b", "c"] {
            dir.insert_at(json!({"id": id, "displayName": id}), t).unwrap();
        }
        let get = |url: &str| GraphRequest::get(url).unwrap().header("prefer", "odata.maxpagesize=2");
        let first = respond(&dir, &get("http://sim/v1.0/users/delta?$select=id,createdDateTime"), t);
        assert_eq!(first, respond(&dir, &get("http://sim/v1.0/users/delta?$select=id,createdDateTime"), t));
        let body: Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(body["value"][0]["createdDateTime"], "2031-02-03T04:05:06Z");
        assert_eq!(first.headers["preference-applied"], "odata.maxpagesize=2");

        let next = body["@odata.nextLink"].as_str().unwrap();
        let last: Value = serde_json::from_slice(&respond(&dir, &get(next), t).body).unwrap();
        let link = last["@odata.deltaLink"].as_str().unwrap();
        let fresh = respond(&dir, &get(link), t + time::Duration::days(6));
        assert_eq!(fresh.status, StatusCode::OK, "six days after the round, by the given clock");
        let stale = respond(&dir, &get(link).request_id("r-1"), t + time::Duration::days(8));
        assert_eq!(stale.status, StatusCode::GONE);
        let error: Value = serde_json::from_slice(&stale.body).unwrap();
        assert_eq!(error["error"]["innerError"]["date"], "2031-02-11T04:05:06");
        assert_eq!(error["error"]["innerError"]["request-id"], "r-1");
        assert_eq!(error["error"]["innerError"]["client-request-id"], "r-1", "no client-request-id sent: Graph's own");
        assert_eq!(stale.headers["location"], "http://sim/v1.0/users/delta?$select=id%2CcreatedDateTime&$deltatoken=");
    }
}
