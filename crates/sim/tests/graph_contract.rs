//! The sandbox's Entra and Graph side against Microsoft's contract: every
//! body the token endpoint, `/v1.0/users` and `/v1.0/users/delta` return is
//! checked against the schemas of `fixtures/msgraph-users.openapi.yaml` (a
//! copy of the project's derived Graph spec, header included), and the limits
//! a client can trip over are refused the way Graph refuses them.
//!
//! Each test runs its own sandbox on 127.0.0.1:0. Nothing here waits on a
//! clock: token expiry is tested with a zero lifetime and with the
//! `/sim/entra/expire-tokens` control, delta-token expiry with
//! `/sim/graph/expire-delta-tokens`.

#[path = "common/schema.rs"]
mod schema;

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schema::OpenApi;
use serde_json::{Value, json};
use xaas_sim::{RunningSim, SimConfig};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/msgraph-users.openapi.yaml");
const SAMPLE_CSV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sampleUsers.csv");

const USERS: &str = "microsoft.graph.userCollectionResponse";
const DELTA: &str = "microsoft.graph.userDeltaCollectionResponse";
const ERROR: &str = "microsoft.graph.ODataErrors.ODataError";
const TOKEN: &str = "contract.tokenResponse";
const TOKEN_ERROR: &str = "contract.tokenErrorResponse";
const REMOVED: &str = "contract.removedAnnotation";

/// The properties `/users` returns without `$select` (user-list.md).
const DEFAULT_PROPERTIES: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

fn spec() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| OpenApi::load(SPEC))
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// A Graph error with this status and code, valid against `ODataError`,
    /// carrying Graph's request ids in headers and body alike.
    #[track_caller]
    fn assert_graph_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!((self.status.as_u16(), self.error_code()), (status, code), "body: {:#}", self.body);
        spec().assert_valid(ERROR, &self.body);
        let inner = &self.body["error"]["innerError"];
        assert_eq!(inner["request-id"].as_str(), self.header("request-id"), "request-id header and body agree");
        assert_eq!(inner["client-request-id"].as_str(), self.header("client-request-id"));
        assert!(!inner["date"].as_str().unwrap().ends_with('Z'), "Graph's innerError.date has no offset");
        self
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

struct Graph {
    sim: RunningSim,
    http: reqwest::Client,
}

impl Graph {
    async fn start(tune: impl FnOnce(&mut SimConfig)) -> Self {
        let mut cfg = SimConfig::defaults();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        tune(&mut cfg);
        let sim = xaas_sim::spawn(cfg).await.unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Graph { sim, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        Reply { status, headers, body }
    }

    async fn token_request(&self, tenant: &str, form: &[(&str, &str)]) -> Reply {
        let url = self.url(&format!("/{tenant}/oauth2/v2.0/token"));
        let reply = Self::reply(self.http.post(url).form(form).send().await.unwrap()).await;
        let schema = if reply.status.is_success() { TOKEN } else { TOKEN_ERROR };
        spec().assert_valid(schema, &reply.body);
        reply
    }

    /// A token for the configured app, the way the product asks for one.
    async fn token(&self) -> String {
        let c = &self.sim.state.cfg;
        let reply = self
            .token_request(
                &c.graph_tenant,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &c.graph_client_id),
                    ("client_secret", &c.graph_client_secret),
                    ("scope", "https://graph.microsoft.com/.default"),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
        reply.body["access_token"].as_str().unwrap().to_owned()
    }

    /// GETs an absolute URL exactly as given.
    async fn get(&self, url: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.get(url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    /// Follows `@odata.nextLink` verbatim from `first` to the end, checking
    /// every page against `schema`. Returns the pages.
    async fn all_pages(&self, first: &str, token: &str, schema: &str, headers: &[(&str, &str)]) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(url) = next {
            assert!(pages.len() < 1000, "paging does not end");
            let reply = self.get(&url, Some(token), headers).await;
            assert_eq!(reply.status, StatusCode::OK, "{url}: {:#}", reply.body);
            spec().assert_valid(schema, &reply.body);
            assert!(reply.header("request-id").is_some());
            next = reply.body["@odata.nextLink"].as_str().map(str::to_owned);
            if let Some(link) = &next {
                assert!(link.starts_with(&self.sim.base_url()), "links are absolute, on the sandbox: {link}");
                assert!(reply.body.get("@odata.deltaLink").is_none(), "a page has nextLink or deltaLink, not both");
            }
            pages.push(reply.body);
        }
        pages
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    /// The directory as the admin API shows it.
    async fn source_users(&self) -> Vec<Value> {
        let reply = self.admin(reqwest::Method::GET, "/sim/users", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.body.as_array().unwrap().clone()
    }
}

fn items(pages: &[Value]) -> Vec<Value> {
    pages.iter().flat_map(|p| p["value"].as_array().unwrap().clone()).collect()
}

fn ids(users: &[Value]) -> Vec<String> {
    users.iter().map(|u| u["id"].as_str().unwrap().to_owned()).collect()
}

fn id_set(users: &[Value]) -> BTreeSet<String> {
    ids(users).into_iter().collect()
}

fn keys(user: &Value) -> BTreeSet<&str> {
    user.as_object().unwrap().keys().map(String::as_str).collect()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[test]
fn the_validator_accepts_graphs_own_examples_and_rejects_wrong_bodies() {
    // reference microsoft-graph.md §6.1, as documented.
    let page = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
        "value": [
            {"businessPhones": [], "displayName": "Conf Room Adams", "givenName": null, "jobTitle": null,
             "mail": "Adams@contoso.com", "mobilePhone": null, "officeLocation": null, "preferredLanguage": null,
             "surname": null, "userPrincipalName": "Adams@contoso.com", "id": "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0"}
        ]
    });
    spec().assert_valid(USERS, &page);
    let mut bad = page.clone();
    bad["value"][0]["businessPhones"] = Value::Null;
    spec().assert_invalid(USERS, &bad);
    let mut bad = page.clone();
    bad["value"][0]["accountEnabled"] = json!("yes");
    spec().assert_invalid(USERS, &bad);
    spec().assert_invalid(USERS, &json!({"value": {"id": "not a list"}}));

    spec().assert_valid(REMOVED, &json!({"reason": "deleted"}));
    spec().assert_invalid(REMOVED, &json!({"reason": "gone"}));
    spec().assert_invalid(ERROR, &json!({"error": {"code": "Request_BadRequest"}}));
    spec().assert_invalid(TOKEN, &json!({"token_type": "Bearer", "expires_in": 3599}));
    spec().assert_invalid(TOKEN, &json!({"token_type": "Bearer", "expires_in": "3599", "access_token": "x"}));
    spec().assert_invalid(TOKEN_ERROR, &json!({"error": "invalid_client", "error_codes": ["7000215"]}));
}

/// A token request form, changed one field at a time.
#[derive(Debug, Clone)]
struct TokenForm(Vec<(&'static str, String)>);

impl TokenForm {
    fn with(&self, key: &'static str, value: &str) -> Self {
        TokenForm(self.0.iter().map(|(k, v)| (*k, if *k == key { value.to_owned() } else { v.clone() })).collect())
    }

    fn without(&self, key: &str) -> Self {
        TokenForm(self.0.iter().filter(|(k, _)| *k != key).cloned().collect())
    }

    fn fields(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

#[tokio::test]
async fn the_token_endpoint_answers_like_entra() {
    let g = Graph::start(|c| c.token_ttl = Duration::from_secs(3599)).await;
    let c = g.sim.state.cfg.clone();
    let tenant = c.graph_tenant.as_str();
    let good = TokenForm(vec![
        ("grant_type", "client_credentials".into()),
        ("client_id", c.graph_client_id.clone()),
        ("client_secret", c.graph_client_secret.clone()),
        ("scope", "https://graph.microsoft.com/.default".into()),
    ]);

    let ok = g.token_request(tenant, &good.fields()).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 3599);
    assert_eq!(ok.body["ext_expires_in"], 3599);
    assert_eq!(ok.body["access_token"].as_str().unwrap().split('.').count(), 3, "JWT-shaped");
    assert_eq!(ok.header("cache-control"), Some("no-store, no-cache"));

    let wrong_secret = g.token_request(tenant, &good.with("client_secret", "not-the-secret").fields()).await;
    assert_eq!(wrong_secret.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_secret.body["error"], "invalid_client");
    assert_eq!(wrong_secret.body["error_codes"], json!([7000215]));
    let description = wrong_secret.body["error_description"].as_str().unwrap();
    assert!(description.starts_with("AADSTS7000215: Invalid client secret provided."), "{description}");
    assert!(description.contains(&format!("Trace ID: {}", wrong_secret.body["trace_id"].as_str().unwrap())));
    assert!(!description.contains(&c.graph_client_secret), "secrets never echo");
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(wrong_secret.body[field].is_string(), "{field}");
    }
    assert_eq!(wrong_secret.body["error_uri"], "https://login.microsoftonline.com/error?code=7000215");

    let cases = [
        ("wrong tenant", "other-tenant", good.clone(), 400, "invalid_request", 90002),
        ("unknown app", tenant, good.with("client_id", "who"), 400, "unauthorized_client", 700016),
        ("no secret", tenant, good.without("client_secret"), 401, "invalid_client", 7000218),
        ("no grant_type", tenant, good.without("grant_type"), 400, "invalid_request", 900144),
        ("other grant", tenant, good.with("grant_type", "password"), 400, "unsupported_grant_type", 70003),
        (
            "delegated scope",
            tenant,
            good.with("scope", "https://graph.microsoft.com/User.Read"),
            400,
            "invalid_scope",
            1002012,
        ),
        (
            "other resource",
            tenant,
            good.with("scope", "https://management.azure.com/.default"),
            400,
            "invalid_scope",
            70011,
        ),
        ("no scope", tenant, good.without("scope"), 400, "invalid_request", 900144),
    ];
    for (case, tenant, form, status, error, code) in cases {
        let reply = g.token_request(tenant, &form.fields()).await;
        assert_eq!(reply.status.as_u16(), status, "{case}: {:#}", reply.body);
        assert_eq!(reply.body["error"], error, "{case}");
        assert_eq!(reply.body["error_codes"], json!([code]), "{case}");
        let prefix = format!("AADSTS{code}: ");
        assert!(reply.body["error_description"].as_str().unwrap().starts_with(&prefix), "{case}");
    }

    // A JSON body is not a form: Entra reports the first missing parameter.
    let json_body = g
        .http
        .post(g.url(&format!("/{}/oauth2/v2.0/token", c.graph_tenant)))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    let reply = Graph::reply(json_body).await;
    spec().assert_valid(TOKEN_ERROR, &reply.body);
    assert_eq!((reply.status.as_u16(), reply.body["error_codes"].clone()), (400, json!([900144])));

    // HTTP Basic client authentication (RFC 6749 §2.3.1) is accepted too.
    let basic = g
        .http
        .post(g.url(&format!("/{}/oauth2/v2.0/token", c.graph_tenant)))
        .basic_auth(&c.graph_client_id, Some(&c.graph_client_secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "https://graph.microsoft.com/.default")])
        .send()
        .await
        .unwrap();
    let reply = Graph::reply(basic).await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    spec().assert_valid(TOKEN, &reply.body);
}

#[tokio::test]
async fn graph_wants_a_live_bearer_token() {
    let g = Graph::start(|c| c.generate = Some(3)).await;
    let users = g.url("/v1.0/users");

    let none = g.get(&users, None, &[("client-request-id", "my-request-1")]).await;
    none.assert_graph_error(401, "InvalidAuthenticationToken");
    assert_eq!(none.message(), "Access token is empty.");
    assert_eq!(none.header("client-request-id"), Some("my-request-1"), "the caller's id is echoed");
    assert!(none.header("www-authenticate").unwrap().starts_with("Bearer"));

    let forged = g.get(&users, Some("eyJ.forged.token"), &[]).await;
    forged.assert_graph_error(401, "InvalidAuthenticationToken");

    let token = g.token().await;
    assert_eq!(g.get(&users, Some(&token), &[]).await.status, StatusCode::OK);
    let expired = g.admin(reqwest::Method::POST, "/sim/entra/expire-tokens", None).await;
    assert_eq!(expired.body["expired"], 1);
    let reply = g.get(&users, Some(&token), &[]).await;
    reply.assert_graph_error(401, "InvalidAuthenticationToken");
    assert_eq!(reply.message(), "Access token has expired or is not yet valid.");
    // The delta endpoint guards the same way.
    g.get(&g.url("/v1.0/users/delta"), Some(&token), &[]).await.assert_graph_error(401, "InvalidAuthenticationToken");
    // A new token works again.
    let fresh = g.token().await;
    assert_eq!(g.get(&users, Some(&fresh), &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_expire_after_the_configured_lifetime() {
    // A zero lifetime: the token is expired as soon as it is issued, with no waiting.
    let g = Graph::start(|c| c.token_ttl = Duration::ZERO).await;
    let token = g.token().await;
    let reply = g.get(&g.url("/v1.0/users"), Some(&token), &[]).await;
    reply.assert_graph_error(401, "InvalidAuthenticationToken");
    assert_eq!(reply.message(), "Access token has expired or is not yet valid.");
}

#[tokio::test]
async fn twenty_five_hundred_users_come_back_exactly_once_over_three_pages() {
    let g = Graph::start(|c| c.generate = Some(2500)).await;
    let token = g.token().await;
    let select = "id,userPrincipalName,givenName,surname,displayName,mail,mobilePhone,businessPhones,department,\
                  jobTitle,streetAddress,city,state,country,postalCode,companyName,accountEnabled,usageLocation";
    let first = g.url(&format!("/v1.0/users?$select={select}&$top=999"));
    let pages = g.all_pages(&first, &token, USERS, &[]).await;
    let sizes: Vec<usize> = pages.iter().map(|p| p["value"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [999, 999, 502]);

    let got = ids(&items(&pages));
    let unique: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(unique.len(), 2500, "no user twice");
    assert_eq!(unique, id_set(&g.source_users().await), "every source user, disabled ones included");
    let expected_keys: BTreeSet<&str> = select.split(',').collect();
    assert!(items(&pages).iter().all(|u| keys(u) == expected_keys), "exactly the selected properties");
    assert_eq!(
        pages[0]["@odata.context"],
        format!("{}/v1.0/$metadata#users({select})", g.sim.base_url()),
        "the context names the selection"
    );
    // The generated directory is what the brief asks for: some disabled, some elsewhere, some non-ASCII.
    let all = items(&pages);
    assert!(all.iter().any(|u| u["accountEnabled"] == false));
    assert!(all.iter().any(|u| u["department"] != "Okta Workflows"));
    assert!(all.iter().any(|u| !u["displayName"].as_str().unwrap().is_ascii()));

    // Without $top the page is Graph's default, 100; without $select, the default properties.
    let default_page = g.get(&g.url("/v1.0/users"), Some(&token), &[]).await;
    spec().assert_valid(USERS, &default_page.body);
    assert_eq!(default_page.body["value"].as_array().unwrap().len(), 100);
    assert_eq!(keys(&default_page.body["value"][0]), DEFAULT_PROPERTIES.into_iter().collect());
    assert_eq!(default_page.body["@odata.context"], format!("{}/v1.0/$metadata#users", g.sim.base_url()));
}

#[tokio::test]
async fn page_sizes_outside_graphs_range_are_refused() {
    let g = Graph::start(|c| c.generate = Some(5)).await;
    let token = g.token().await;
    for top in ["1000", "0", "abc", "-1"] {
        let reply = g.get(&g.url(&format!("/v1.0/users?$top={top}")), Some(&token), &[]).await;
        reply.assert_graph_error(400, "Request_BadRequest");
        assert_eq!(
            reply.message(),
            format!("Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.")
        );
    }
    for (query, status, code) in [
        ("$select=id,favouriteColour", 400, "Request_BadRequest"),
        ("$select=id,skills", 501, "NotImplemented"),
        ("$filter=mobilePhone eq '1'", 400, "Request_UnsupportedQuery"),
        ("$filter=startsWith(displayName,'A')", 400, "Request_UnsupportedQuery"),
        ("$filter=accountEnabled eq 'yes'", 400, "Request_UnsupportedQuery"),
        ("$filter=city eq 'unterminated", 400, "Request_BadRequest"),
        ("$skip=10", 400, "Request_BadRequest"),
        ("$search=\"displayName:a\"", 400, "Request_UnsupportedQuery"),
        ("$top=5&$top=6", 400, "Request_BadRequest"),
    ] {
        let url = g.url(&format!("/v1.0/users?{query}"));
        g.get(&url, Some(&token), &[]).await.assert_graph_error(status, code);
    }
    // Advanced query parameters unlock advanced filters and the count.
    let advanced = g
        .get(
            &g.url("/v1.0/users?$filter=companyName eq 'Okta'&$count=true&$top=2"),
            Some(&token),
            &[("ConsistencyLevel", "eventual")],
        )
        .await;
    assert_eq!(advanced.status, StatusCode::OK, "{:#}", advanced.body);
    spec().assert_valid(USERS, &advanced.body);
    assert_eq!(advanced.body["@odata.count"], 5);
    // Without the header, $count=true is silently ignored, as in Graph.
    let plain = g.get(&g.url("/v1.0/users?$count=true"), Some(&token), &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.body.get("@odata.count").is_none());
}

#[tokio::test]
async fn select_and_filter_give_the_right_subsets() {
    let g = Graph::start(|c| c.generate = Some(600)).await;
    let token = g.token().await;
    let source = g.source_users().await;
    let expect = |pred: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        source.iter().filter(|u| pred(u)).map(|u| u["id"].as_str().unwrap().to_owned()).collect()
    };
    let run = |filter: &'static str, top: usize| {
        let g = &g;
        let token = &token;
        async move {
            let url =
                g.url(&format!("/v1.0/users?$select=id,accountEnabled,department&$filter={}&$top={top}", enc(filter)));
            let pages = g.all_pages(&url, token, USERS, &[]).await;
            let got = ids(&items(&pages));
            assert_eq!(got.len(), id_set(&items(&pages)).len(), "{filter}: no duplicates across pages");
            (pages.len(), id_set(&items(&pages)))
        }
    };

    let (_, disabled) = run("accountEnabled eq false", 999).await;
    assert_eq!(disabled, expect(&|u| u["accountEnabled"] == false));
    assert!(!disabled.is_empty() && disabled.len() < 200, "about 10% disabled: {}", disabled.len());

    let (_, in_dept) = run("department eq 'Okta Workflows'", 999).await;
    assert_eq!(in_dept, expect(&|u| u["department"] == "Okta Workflows"));
    assert!(in_dept.len() > 300 && in_dept.len() < 500, "about 70%: {}", in_dept.len());

    // Small pages: the filter (with its spaces) must survive the nextLink.
    let (pages, both) = run("accountEnabled eq true and department eq 'Okta Workflows'", 50).await;
    assert_eq!(both, expect(&|u| u["accountEnabled"] == true && u["department"] == "Okta Workflows"));
    assert_eq!(pages, both.len().div_ceil(50));

    // Quotes are escaped by doubling; string comparison ignores case, as in Entra.
    let odd = g
        .admin(
            reqwest::Method::POST,
            "/sim/users",
            Some(json!({"displayName": "Odd One", "department": "O'Neil's Team", "accountEnabled": true})),
        )
        .await;
    assert_eq!(odd.status, StatusCode::CREATED);
    let (_, quoted) = run("department eq 'o''neil''s team'", 999).await;
    assert_eq!(quoted, BTreeSet::from([odd.body["id"].as_str().unwrap().to_owned()]));

    // Exactly the selected properties, including unset ones as null.
    let reply = g.get(&g.url("/v1.0/users?$select=displayName,employeeId&$top=3"), Some(&token), &[]).await;
    spec().assert_valid(USERS, &reply.body);
    for user in reply.body["value"].as_array().unwrap() {
        assert_eq!(keys(user), BTreeSet::from(["displayName", "employeeId"]));
        assert!(user["employeeId"].is_null());
    }
}

#[tokio::test]
async fn graph_throttling_looks_like_graph() {
    let g = Graph::start(|c| c.generate = Some(3)).await;
    let token = g.token().await;
    let set = g.admin(reqwest::Method::PUT, "/sim/faults", Some(json!({"graph": {"rate_429": 1.0}}))).await;
    assert_eq!(set.status, StatusCode::OK);
    let reply = g.get(&g.url("/v1.0/users"), Some(&token), &[]).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.error_code(), "TooManyRequests");
    spec().assert_valid(ERROR, &reply.body);
    assert!(reply.header("retry-after").unwrap().parse::<f64>().is_ok());
}

/// Changes, deletions, soft deletions and the resync: one delta life cycle.
#[tokio::test]
async fn delta_reports_exactly_what_changed() {
    let g = Graph::start(|c| c.generate = Some(250)).await;
    let token = g.token().await;
    let prefer = [("Prefer", "odata.maxpagesize=100")];

    // Initial round: everyone, over nextLinks, then a deltaLink.
    let pages = g.all_pages(&g.url("/v1.0/users/delta"), &token, DELTA, &prefer).await;
    assert_eq!(pages.len(), 3);
    assert!(pages[..2].iter().all(|p| p.get("@odata.deltaLink").is_none()));
    let delta_link = pages[2]["@odata.deltaLink"].as_str().unwrap().to_owned();
    assert!(delta_link.starts_with(&format!("{}/v1.0/users/delta?$deltatoken=", g.sim.base_url())));
    let source = g.source_users().await;
    assert_eq!(id_set(&items(&pages)), id_set(&source));
    assert_eq!(items(&pages).len(), 250);
    let default_keys: BTreeSet<&str> = DEFAULT_PROPERTIES.into_iter().collect();
    assert!(items(&pages).iter().all(|u| keys(u) == default_keys));

    // Change 3, disable 1, delete 2.
    let id = |i: usize| source[i]["id"].as_str().unwrap().to_owned();
    for i in [3, 50, 140] {
        let path = format!("/sim/users/{}", id(i));
        let r = g.admin(reqwest::Method::PATCH, &path, Some(json!({"jobTitle": format!("Changed {i}")}))).await;
        assert_eq!(r.status, StatusCode::OK, "{:#}", r.body);
    }
    let r = g.admin(reqwest::Method::POST, &format!("/sim/users/{}/disable", id(77)), None).await;
    assert_eq!(r.body["accountEnabled"], false);
    for i in [10, 200] {
        let r = g.admin(reqwest::Method::DELETE, &format!("/sim/users/{}", id(i)), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
    let missing = g.admin(reqwest::Method::DELETE, &format!("/sim/users/{}", id(10)), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let changes = items(&g.all_pages(&delta_link, &token, DELTA, &[]).await);
    let by_id: HashMap<String, Value> =
        changes.iter().map(|u| (u["id"].as_str().unwrap().to_owned(), u.clone())).collect();
    assert_eq!(changes.len(), 6, "{changes:#?}");
    assert_eq!(by_id.keys().cloned().collect::<BTreeSet<_>>(), [3, 50, 140, 77, 10, 200].map(id).into());
    for i in [3, 50, 140] {
        assert_eq!(by_id[&id(i)]["jobTitle"], format!("Changed {i}"));
        assert!(by_id[&id(i)].get("@removed").is_none());
    }
    assert!(by_id[&id(77)].get("@removed").is_none());
    for i in [10, 200] {
        let removed = &by_id[&id(i)];
        assert_eq!(keys(removed), BTreeSet::from(["id", "@removed"]));
        assert_eq!(removed["@removed"]["reason"], "deleted");
        spec().assert_valid(REMOVED, &removed["@removed"]);
    }

    // The next deltaLink: nothing changed, nothing reported.
    let pages = g.all_pages(&delta_link, &token, DELTA, &[]).await;
    let quiet_link = pages.last().unwrap()["@odata.deltaLink"].as_str().unwrap().to_owned();
    let pages = g.all_pages(&quiet_link, &token, DELTA, &[]).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["value"], json!([]));
    let after_quiet = pages[0]["@odata.deltaLink"].as_str().unwrap().to_owned();

    // A soft delete is "changed"; a user created and deleted in between is never mentioned.
    let r = g.admin(reqwest::Method::DELETE, &format!("/sim/users/{}?soft=true", id(20)), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let brief = g.admin(reqwest::Method::POST, "/sim/users", Some(json!({"displayName": "Brief"}))).await;
    let brief_id = brief.body["id"].as_str().unwrap().to_owned();
    g.admin(reqwest::Method::DELETE, &format!("/sim/users/{brief_id}"), None).await;
    let newcomer = g.admin(reqwest::Method::POST, "/sim/users", Some(json!({"displayName": "New"}))).await;
    let changes = items(&g.all_pages(&after_quiet, &token, DELTA, &[]).await);
    assert_eq!(
        changes,
        [
            json!({"id": id(20), "@removed": {"reason": "changed"}}),
            g.get(
                &g.url(&format!("/v1.0/users?$filter=id eq '{}'", newcomer.body["id"].as_str().unwrap())),
                Some(&token),
                &[]
            )
            .await
            .body["value"][0]
                .clone(),
        ]
    );

    // Expired tokens: 410 Gone, syncStateNotFound, and a Location that restarts the round.
    let expire = g.admin(reqwest::Method::POST, "/sim/graph/expire-delta-tokens", None).await;
    assert_eq!(expire.status, StatusCode::OK);
    let gone = g.get(&after_quiet, Some(&token), &[]).await;
    gone.assert_graph_error(410, "syncStateNotFound");
    let location = gone.header("location").unwrap().to_owned();
    assert_eq!(location, format!("{}/v1.0/users/delta?$deltatoken=", g.sim.base_url()));
    let resync = g.all_pages(&location, &token, DELTA, &[]).await;
    assert_eq!(items(&resync).len(), 250 - 3 + 1, "a full round of the live users");
    assert!(resync.last().unwrap()["@odata.deltaLink"].is_string());
    // A mangled token is as good as expired.
    let mangled = g.get(&g.url("/v1.0/users/delta?$deltatoken=bm90LWEtdG9rZW4"), Some(&token), &[]).await;
    mangled.assert_graph_error(410, "syncStateNotFound");
}

#[tokio::test]
async fn delta_keeps_its_select_and_filter_in_the_tokens() {
    let g = Graph::start(|c| c.generate = Some(30)).await;
    let token = g.token().await;
    let source = g.source_users().await;
    let (a, b) = (source[1]["id"].as_str().unwrap(), source[2]["id"].as_str().unwrap());
    let filter = enc(&format!("id eq '{a}' or id eq '{b}'"));
    // The long form of the function name works too.
    let first = g.url(&format!("/v1.0/users/microsoft.graph.delta()?$select=displayName,department&$filter={filter}"));
    let pages = g.all_pages(&first, &token, DELTA, &[]).await;
    let got = items(&pages);
    assert_eq!(id_set(&got), BTreeSet::from([a.to_owned(), b.to_owned()]));
    assert!(got.iter().all(|u| keys(u) == BTreeSet::from(["id", "displayName", "department"])), "id always comes");
    let link = pages.last().unwrap()["@odata.deltaLink"].as_str().unwrap().to_owned();

    for user in &source[..4] {
        let path = format!("/sim/users/{}", user["id"].as_str().unwrap());
        g.admin(reqwest::Method::PATCH, &path, Some(json!({"department": "Renamed"}))).await;
    }
    let changes = items(&g.all_pages(&link, &token, DELTA, &[]).await);
    assert_eq!(id_set(&changes), BTreeSet::from([a.to_owned(), b.to_owned()]), "only the filtered ids");
    assert!(changes.iter().all(|u| keys(u) == BTreeSet::from(["id", "displayName", "department"])));
    assert!(changes.iter().all(|u| u["department"] == "Renamed"));

    // $top as the page size is a sandbox extension; Prefer wins over it.
    let pages = g.all_pages(&g.url("/v1.0/users/delta?$top=7"), &token, DELTA, &[]).await;
    assert_eq!(pages.len(), 5);
    let reply = g.get(&g.url("/v1.0/users/delta"), Some(&token), &[("Prefer", "odata.maxpagesize=12")]).await;
    assert_eq!(reply.body["value"].as_array().unwrap().len(), 12);
    assert_eq!(reply.header("preference-applied"), Some("odata.maxpagesize=12"));

    // Only id filters are allowed on delta; "latest" syncs from now.
    g.get(&g.url("/v1.0/users/delta?$filter=department eq 'x'"), Some(&token), &[])
        .await
        .assert_graph_error(400, "Request_UnsupportedQuery");
    let latest = g.get(&g.url("/v1.0/users/delta?$deltatoken=latest"), Some(&token), &[]).await;
    spec().assert_valid(DELTA, &latest.body);
    assert_eq!(latest.body["value"], json!([]));
    assert!(latest.body["@odata.deltaLink"].is_string());
}

#[tokio::test]
async fn the_sample_csv_seeds_299_real_users_and_one_blank_row() {
    let g = Graph::start(|c| c.seed_csv = Some(SAMPLE_CSV.into())).await;
    let domain = g.sim.state.cfg.domain.clone();
    let users = g.source_users().await;
    assert_eq!(users.len(), 300);
    let real: Vec<&Value> =
        users.iter().filter(|u| u["accountEnabled"] == true && u["department"] == "Okta Workflows").collect();
    assert_eq!(real.len(), 299);
    let blank: Vec<&Value> = users.iter().filter(|u| u["accountEnabled"] == false).collect();
    assert_eq!(blank.len(), 1);
    for field in ["userPrincipalName", "mail", "givenName", "surname", "displayName", "department"] {
        assert!(blank[0][field].is_null(), "the blank row has no {field}");
    }

    // Row 1 of the CSV:
    // 4be32b80-fa9a-11ed-8ac4-db070ce9c6f6,1684977612349,neil.gilbert@example.com,true,Mr,Neil,Gilbert,7897,
    // South Street,Tullamore,Dublin City,Ireland,40971,neil.gilbert@example.com,041-746-1335,081-990-5259,...
    let namespace = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        b"https://github.com/iamse-blog/workflows-templates/anything-as-a-source-pagination/sampleUsers.csv",
    );
    let id = uuid::Uuid::new_v5(&namespace, b"4be32b80-fa9a-11ed-8ac4-db070ce9c6f6").to_string();
    let neil = &users[0];
    let expected = json!({
        "id": id,
        "accountEnabled": true,
        "userPrincipalName": format!("neil.gilbert@{domain}"),
        "mail": format!("neil.gilbert@{domain}"),
        "givenName": "Neil",
        "surname": "Gilbert",
        "displayName": "Neil Gilbert",
        "department": "Okta Workflows",
        "companyName": "Okta",
        "jobTitle": "Azure AD User",
        "usageLocation": "US",
        "mobilePhone": "081-990-5259",
        "businessPhones": ["041-746-1335"],
        "streetAddress": "7897 South Street",
        "city": "Tullamore",
        "state": "Dublin City",
        "country": "Ireland",
        "postalCode": "40971",
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&neil[field], value, "{field}");
    }

    // What the original workflow asked Graph for ("create" operation), with every property it maps.
    let token = g.token().await;
    let select = "id,userPrincipalName,givenName,surname,mail,mobilePhone,displayName,department,jobTitle,\
                  streetAddress,city,state,country,postalCode,companyName";
    let url = g.url(&format!("/v1.0/users?$top=200&$select={select}&$filter={}", enc("accountEnabled eq true")));
    let pages = g.all_pages(&url, &token, USERS, &[]).await;
    assert_eq!(pages.len(), 2);
    let active = items(&pages);
    assert_eq!(active.len(), 299);
    assert!(active.iter().all(|u| u["department"] == "Okta Workflows"));
    let gone =
        g.get(&g.url(&format!("/v1.0/users?$filter={}", enc("accountEnabled eq false"))), Some(&token), &[]).await;
    assert_eq!(gone.body["value"].as_array().unwrap().len(), 1);
    spec().assert_valid(USERS, &gone.body);
}

#[tokio::test]
async fn seeding_through_the_admin_api_replaces_or_appends() {
    let g = Graph::start(|_| {}).await;
    let token = g.token().await;
    let seeded =
        g.admin(reqwest::Method::POST, "/sim/seed", Some(json!({"generate": 40, "rng_seed": 9, "malformed": 7}))).await;
    assert_eq!(seeded.status, StatusCode::OK, "{:#}", seeded.body);
    assert_eq!((seeded.body["seeded"].clone(), seeded.body["total"].clone()), (json!(40), json!(40)));
    let kinds: Vec<&str> =
        seeded.body["malformed"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "missing_mail",
            "long_given_name",
            "numeric_department",
            "array_department",
            "duplicate_id",
            "duplicate_user_principal_name",
            "empty_user_principal_name"
        ]
    );
    let users = g.source_users().await;
    let numeric = &seeded.body["malformed"][2];
    let planted = &users[numeric["index"].as_u64().unwrap() as usize];
    assert_eq!((planted["id"].clone(), planted["department"].clone()), (numeric["id"].clone(), json!(42)));
    // Graph hands the malformed records out as they are: the product must cope.
    let ids_listed = ids(&items(&g.all_pages(&g.url("/v1.0/users?$select=id"), &token, USERS, &[]).await));
    assert_eq!(ids_listed.len(), 40);
    assert_eq!(id_set(&g.source_users().await).len(), 39, "one duplicate id");

    let same =
        g.admin(reqwest::Method::POST, "/sim/seed", Some(json!({"generate": 40, "rng_seed": 9, "malformed": 7}))).await;
    assert_eq!(same.body["total"], 40, "replace is the default");
    let without_creation_time = |mut users: Vec<Value>| {
        users.iter_mut().for_each(|u| drop(u.as_object_mut().unwrap().remove("createdDateTime")));
        users
    };
    assert_eq!(
        without_creation_time(g.source_users().await),
        without_creation_time(users),
        "the same seed gives the same users"
    );

    let csv =
        g.admin(reqwest::Method::POST, "/sim/seed", Some(json!({"csv_path": SAMPLE_CSV, "replace": false}))).await;
    assert_eq!((csv.body["seeded"].clone(), csv.body["total"].clone()), (json!(300), json!(340)));

    for bad in [
        json!({}),
        json!({"csv_path": "/nonexistent.csv"}),
        json!({"generate": 5, "disabled_share": 2.0}),
        json!({"generte": 5}),
    ] {
        let reply = g.admin(reqwest::Method::POST, "/sim/seed", Some(bad.clone())).await;
        assert!(reply.status.is_client_error(), "{bad}: {}", reply.status);
    }
    assert_eq!(g.source_users().await.len(), 340, "a refused seed changes nothing");
}
