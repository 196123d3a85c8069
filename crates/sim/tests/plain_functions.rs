//! The sandbox's plain entry points, `graph::respond` and `okta::handle`,
//! answer exactly as the sandbox does over HTTP: the same calls, once
//! through a running sandbox and once through the functions, give the same
//! statuses, the same bodies byte for byte, and the same headers (every
//! header the function sets, with the same value; HTTP adds only transport
//! headers such as `Content-Length` and `X-Rate-Limit-*`).
//!
//! What would differ by chance is pinned, not ignored: the sandbox's clock is
//! pinned to the moment each call is handed to the function, the sandbox's
//! Okta draws its ids from the same seed as the function's state, and the
//! Graph `request-id` the sandbox drew is handed to the function.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use xaas_sim::app::lock;
use xaas_sim::directory::{Directory, Removal};
use xaas_sim::graph::{self, GraphRequest};
use xaas_sim::okta::{self, IdSource, Moment, OktaRequest, OktaState};
use xaas_sim::{RunningSim, SimConfig};

/// One answer, from either side.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        Answer { status, headers, body }
    }
}

/// The same status and body, and every header the function set, as sent.
#[track_caller]
fn assert_same(step: &str, http: &Answer, plain: &Answer) {
    assert_eq!(http.status, plain.status, "{step}: status; HTTP body {}", String::from_utf8_lossy(&http.body));
    assert_eq!(String::from_utf8_lossy(&http.body), String::from_utf8_lossy(&plain.body), "{step}: body");
    for (name, value) in &plain.headers {
        assert_eq!(http.headers.get(name), Some(value), "{step}: header {name}");
    }
}

async fn start(tune: impl FnOnce(&mut SimConfig)) -> RunningSim {
    let mut cfg = SimConfig::defaults();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    tune(&mut cfg);
    xaas_sim::spawn(cfg).await.unwrap()
}

// ---------------------------------------------------------------------------
// Graph
// ---------------------------------------------------------------------------

/// Both directories, changed in step.
struct Directories<'a> {
    sim: &'a RunningSim,
    plain: Directory,
}

impl Directories<'_> {
    fn change(&mut self, f: impl Fn(&mut Directory)) {
        f(&mut lock(&self.sim.state.directory));
        f(&mut self.plain);
    }
}

async fn graph_token(sim: &RunningSim, http: &reqwest::Client) -> String {
    let c = &sim.state.cfg;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", c.graph_client_id.as_str()),
        ("client_secret", c.graph_client_secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let url = format!("{}/{}/oauth2/v2.0/token", sim.base_url(), c.graph_tenant);
    let reply: Value = http.post(url).form(&form).send().await.unwrap().json().await.unwrap();
    reply["access_token"].as_str().unwrap().to_owned()
}

/// GETs `url` over HTTP with the clock pinned at `now`, asks `respond` the
/// same, checks they agree, and returns the answer.
async fn graph_step(
    step: &str,
    (sim, http, token): (&RunningSim, &reqwest::Client, &str),
    dir: &Directory,
    url: &str,
    headers: &[(&str, &str)],
    now: OffsetDateTime,
) -> Answer {
    sim.state.clock.pin(Moment::origin(now));
    let mut request = http.get(url).bearer_auth(token).header("client-request-id", step);
    let mut plain = GraphRequest::get(url).unwrap().header("client-request-id", step);
    for (name, value) in headers {
        request = request.header(*name, *value);
        plain = plain.header(name, value);
    }
    let over_http = Answer::read(request.send().await.unwrap()).await;
    if let Some(id) = over_http.headers.get("request-id") {
        plain = plain.request_id(id.to_str().unwrap());
    }
    let answer = graph::respond(dir, &plain, now);
    let plain = Answer { status: answer.status, headers: answer.headers, body: answer.body };
    assert_same(step, &over_http, &plain);
    over_http
}

#[tokio::test]
async fn graph_respond_answers_as_the_sandbox_does() {
    let sim = start(|_| {}).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let token = graph_token(&sim, &http).await;
    let io = (&sim, &http, token.as_str());
    let base = sim.base_url();
    let t0 = datetime!(2031-02-03 04:05:06.789 UTC);
    let at = |secs: i64| t0 + time::Duration::seconds(secs);

    let mut dirs = Directories { sim: &sim, plain: Directory::default() };
    dirs.change(|d| {
        for i in 0..7 {
            let user = json!({
                "id": format!("u{i}"),
                "displayName": format!("User {i}"),
                "department": if i % 2 == 0 { "Okta Workflows" } else { "Sales" },
                "accountEnabled": i != 3,
                "mail": format!("u{i}@example.com"),
            });
            d.insert_at(user, t0).unwrap();
        }
    });

    // A full listing, paged, followed by its nextLinks.
    let mut url = format!("{base}/v1.0/users?$top=3&$select=id,displayName,department,createdDateTime");
    let mut pages = 0;
    loop {
        let page = graph_step("list", io, &dirs.plain, &url, &[], at(pages)).await;
        assert_eq!(page.status, StatusCode::OK);
        pages += 1;
        match page.json()["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);

    let advanced = [("ConsistencyLevel", "eventual")];
    let counted = format!("{base}/v1.0/users?$filter=accountEnabled%20eq%20true&$count=true");
    assert_eq!(graph_step("count", io, &dirs.plain, &counted, &advanced, at(10)).await.json()["@odata.count"], 6);
    let refused = graph_step("top", io, &dirs.plain, &format!("{base}/v1.0/users?$top=0"), &[], at(11)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let skills = format!("{base}/v1.0/users?$select=id,skills");
    assert_eq!(graph_step("skills", io, &dirs.plain, &skills, &[], at(12)).await.status, StatusCode::NOT_IMPLEMENTED);
    let nowhere = format!("{base}/v1.0/users/u1/manager");
    assert_eq!(graph_step("404", io, &dirs.plain, &nowhere, &[], at(13)).await.status, StatusCode::NOT_FOUND);

    // A delta round, paged by Prefer, then what changed since.
    let prefer = [("Prefer", "odata.maxpagesize=4")];
    let mut url = format!("{base}/v1.0/users/delta?$select=id,displayName");
    let delta_link = loop {
        let page = graph_step("delta", io, &dirs.plain, &url, &prefer, at(20)).await;
        let body = page.json();
        if let Some(link) = body["@odata.deltaLink"].as_str() {
            break link.to_owned();
        }
        url = body["@odata.nextLink"].as_str().unwrap().to_owned();
    };
    dirs.change(|d| {
        d.update("u1", json!({"displayName": "Renamed"})).unwrap();
        d.set_enabled("u2", false).unwrap();
        d.remove_at("u4", Removal::SoftDeleted, at(30)).unwrap();
        d.insert_at(json!({"id": "u7", "displayName": "New"}), at(30)).unwrap();
    });
    let changes = graph_step("changes", io, &dirs.plain, &delta_link, &prefer, at(40)).await.json();
    assert_eq!(changes["value"].as_array().unwrap().len(), 4, "{changes:#}");

    dirs.change(Directory::expire_delta_tokens);
    let gone = graph_step("gone", io, &dirs.plain, &delta_link, &[], at(50)).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert!(gone.headers.contains_key("location"));
    let latest = format!("{base}/v1.0/users/delta?$deltatoken=latest");
    assert_eq!(graph_step("latest", io, &dirs.plain, &latest, &[], at(51)).await.json()["value"], json!([]));

    sim.stop().await;
}

// ---------------------------------------------------------------------------
// Okta
// ---------------------------------------------------------------------------

struct Okta {
    sim: RunningSim,
    http: reqwest::Client,
    plain: OktaState,
}

impl Okta {
    /// Sends `method path` with the sandbox's clock pinned at `now`, hands
    /// the same request to `handle` at `now`, checks they agree, and returns
    /// the answer.
    async fn step(&mut self, step: &str, method: Method, path: &str, body: Vec<u8>, now: Moment) -> Answer {
        self.sim.state.clock.pin(now);
        let url = format!("{}{path}", self.sim.base_url());
        let token = format!("SSWS {}", self.sim.state.cfg.okta_token);
        let mut request = self.http.request(method.clone(), &url).header("authorization", token);
        if !body.is_empty() {
            request = request.header("content-type", "application/json").body(body.clone());
        }
        let over_http = Answer::read(request.send().await.unwrap()).await;
        let answer = okta::handle(&mut self.plain, &OktaRequest::new(method, &url, body), now);
        let plain = Answer { status: answer.status, headers: answer.headers, body: answer.body };
        assert_same(step, &over_http, &plain);
        over_http
    }

    async fn inspect(&self, what: &str) -> Value {
        let url = format!("{}/sim/okta/{what}", self.sim.base_url());
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }
}

fn profiles(items: Value) -> Vec<u8> {
    json!({"entityType": "USERS", "profiles": items}).to_string().into_bytes()
}

const NO_BODY: Vec<u8> = Vec::new();

#[tokio::test]
async fn okta_handle_answers_as_the_sandbox_does() {
    let sim = start(|c| {
        c.cooldown = Duration::from_secs(30);
        c.import_duration = Duration::from_secs(5);
    })
    .await;
    // The same seed on both sides: the same session ids and errorIds.
    lock(&sim.state.okta).ids = IdSource::seeded(11);
    let plain = OktaState::new(&sim.state.cfg).with_ids(IdSource::seeded(11));
    let sessions = format!("/api/v1/identity-sources/{}/sessions", sim.state.cfg.identity_source_id);
    let mut okta = Okta { sim, http: reqwest::Client::new(), plain };
    let t0 = Moment::origin(datetime!(2031-02-03 04:05:06.789 UTC));
    let at = |secs: u64| t0.plus(Duration::from_secs(secs));
    let s = sessions.as_str();

    let created = okta.step("create", Method::POST, s, NO_BODY, at(0)).await.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let one = format!("{s}/{id}");
    assert_eq!(okta.step("second open", Method::POST, s, NO_BODY, at(0)).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(okta.step("list", Method::GET, s, NO_BODY, at(1)).await.json().as_array().unwrap().len(), 1);

    let good = profiles(json!([
        {"externalId": "u1", "profile": {"userName": "u1@example.com", "email": "u1@example.com"}},
        {"externalId": "u2", "profile": {"userName": "u2@example.com", "email": "u2@example.com"}},
    ]));
    let upsert = format!("{one}/bulk-upsert");
    assert_eq!(okta.step("upsert", Method::POST, &upsert, good, at(1)).await.status, StatusCode::ACCEPTED);
    let bad = profiles(json!([{"externalId": "u3", "profile": {"department": 7}}]));
    assert_eq!(okta.step("bad profile", Method::POST, &upsert, bad, at(2)).await.status, StatusCode::BAD_REQUEST);
    let not_json = okta.step("not json", Method::POST, &upsert, b"{".to_vec(), at(2)).await;
    assert_eq!(not_json.json()["errorCode"], "E0000003");
    let delete = profiles(json!([{"externalId": "u1"}, {"externalId": "ghost"}]));
    let bulk_delete = format!("{one}/bulk-delete");
    assert_eq!(okta.step("delete", Method::POST, &bulk_delete, delete, at(3)).await.status, StatusCode::ACCEPTED);
    assert_eq!(okta.step("get", Method::GET, &one, NO_BODY, at(3)).await.json()["status"], "IN_PROGRESS");

    let trigger = format!("{one}/start-import");
    assert_eq!(okta.step("trigger", Method::POST, &trigger, NO_BODY, at(4)).await.json()["status"], "TRIGGERED");
    assert_eq!(okta.step("again", Method::POST, &trigger, NO_BODY, at(5)).await.status, StatusCode::BAD_REQUEST);
    let cooldown = okta.step("cooldown", Method::POST, s, NO_BODY, at(10)).await.json();
    assert!(cooldown["errorCauses"][0]["errorSummary"].as_str().unwrap().contains("try again in 24s"), "{cooldown}");
    assert_eq!(okta.step("completed", Method::GET, &one, NO_BODY, at(10)).await.json()["status"], "COMPLETED");
    assert_eq!(okta.step("cancel done", Method::DELETE, &one, NO_BODY, at(10)).await.status, StatusCode::BAD_REQUEST);

    let second = okta.step("create after", Method::POST, s, NO_BODY, at(34)).await.json();
    let two = format!("{s}/{}", second["id"].as_str().unwrap());
    let empty = okta.step("empty trigger", Method::POST, &format!("{two}/start-import"), NO_BODY, at(35)).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(okta.step("cancel", Method::DELETE, &two, NO_BODY, at(36)).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        okta.step("no session", Method::GET, &format!("{s}/aps0"), NO_BODY, at(36)).await.status,
        StatusCode::NOT_FOUND
    );
    let other = "/api/v1/identity-sources/0oaother/sessions";
    assert_eq!(okta.step("no source", Method::GET, other, NO_BODY, at(36)).await.status, StatusCode::NOT_FOUND);

    // What each side's Okta now holds, and what it refused, is the same too.
    let users = okta.inspect("users").await;
    assert_eq!(users, serde_json::to_value(okta.plain.users.views()).unwrap());
    assert_eq!(users.as_array().unwrap().len(), 2, "{users:#}");
    assert_eq!(okta.inspect("sessions").await, serde_json::to_value(okta.plain.sessions.records()).unwrap());
    let refused = okta.inspect("refused").await;
    assert_eq!(refused, serde_json::to_value(&okta.plain.refused).unwrap());
    assert_eq!(refused.as_array().unwrap().len(), 9, "{refused:#}");

    okta.sim.stop().await;
}
