//! The sandbox's Okta side against Okta's contract: every body on the Okta
//! routes is checked against the official schemas (fixture copy of the spec),
//! and every limit is refused the way Okta refuses it.
//!
//! Each test runs its own sandbox on 127.0.0.1:0 with the timings it needs.
//! Waiting is done by polling with a generous timeout that only guards
//! against hangs; no assertion depends on how fast the machine is.
//!
//! `fixtures/okta-test-service-app.{key,pub}.pem` is a throwaway RSA key pair
//! made for these tests only (`openssl genpkey -algorithm RSA`); it signs the
//! client assertions of the OAuth tests.

#[path = "common/schema.rs"]
mod schema;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use schema::OpenApi;
use serde_json::{Value, json};
use xaas_sim::{RunningSim, SimConfig};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/okta-identity-sources.openapi.yaml");
const PRIVATE_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/okta-test-service-app.key.pem");
const PUBLIC_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/okta-test-service-app.pub.pem");
/// Guards against hangs only.
const PATIENCE: Duration = Duration::from_secs(60);

fn spec() -> &'static OpenApi {
    static SPEC_DOC: OnceLock<OpenApi> = OnceLock::new();
    SPEC_DOC.get_or_init(|| OpenApi::load(SPEC))
}

/// The raw YAML of the spec, for its examples.
fn spec_yaml() -> Value {
    let text = std::fs::read_to_string(SPEC).unwrap();
    let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

/// What a successful answer must look like.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Session,
    Sessions,
    Nothing,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn error_code(&self) -> &str {
        self.body["errorCode"].as_str().unwrap_or("")
    }

    fn causes(&self) -> Vec<String> {
        self.body["errorCauses"]
            .as_array()
            .map(|a| a.iter().map(|c| c["errorSummary"].as_str().unwrap_or("").to_owned()).collect())
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<i64> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    }

    #[track_caller]
    fn assert_refused(&self, status: u16, code: &str) -> &Self {
        assert_eq!((self.status.as_u16(), self.error_code()), (status, code), "body: {:#}", self.body);
        self
    }
}

#[derive(Clone)]
enum Auth {
    Ssws(String),
    Bearer(String),
    Raw(String),
    None,
}

struct Okta {
    sim: RunningSim,
    http: reqwest::Client,
    auth: Auth,
}

impl Okta {
    async fn start(tune: impl FnOnce(&mut SimConfig)) -> Self {
        let mut cfg = SimConfig::defaults();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.cooldown = Duration::ZERO;
        cfg.import_duration = Duration::from_millis(200);
        tune(&mut cfg);
        let auth = Auth::Ssws(cfg.okta_token.clone());
        let sim = xaas_sim::spawn(cfg).await.unwrap();
        Okta { sim, http: reqwest::Client::new(), auth }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    fn sessions_path(&self) -> String {
        format!("/api/v1/identity-sources/{}/sessions", self.sim.state.cfg.identity_source_id)
    }

    /// Sends one Okta request and checks the answer against the contract:
    /// errors are `Error`s, successes have the expected schema, and every
    /// answer carries the rate-limit headers.
    async fn send_as(&self, auth: &Auth, method: Method, path: &str, body: Option<Vec<u8>>, want: Want) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        req = match auth {
            Auth::Ssws(t) => req.header("Authorization", format!("SSWS {t}")),
            Auth::Bearer(t) => req.header("Authorization", format!("Bearer {t}")),
            Auth::Raw(v) => req.header("Authorization", v),
            Auth::None => req,
        };
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let response = tokio::time::timeout(PATIENCE, req.send()).await.unwrap().unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        let reply = Reply { status, headers, body };
        check_contract(&reply, want);
        reply
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>, want: Want) -> Reply {
        self.send_as(&self.auth, method, path, body, want).await
    }

    async fn create(&self) -> Reply {
        self.send(Method::POST, &self.sessions_path(), None, Want::Session).await
    }

    /// Creates a session that must succeed; returns its id.
    async fn open(&self) -> String {
        let r = self.create().await;
        assert_eq!(r.status, StatusCode::OK, "{:#}", r.body);
        assert_eq!(r.body["status"], "CREATED");
        r.body["id"].as_str().unwrap().to_owned()
    }

    async fn get(&self, session: &str) -> Reply {
        self.send(Method::GET, &format!("{}/{session}", self.sessions_path()), None, Want::Session).await
    }

    async fn list(&self) -> Reply {
        self.send(Method::GET, &self.sessions_path(), None, Want::Sessions).await
    }

    async fn cancel(&self, session: &str) -> Reply {
        self.send(Method::DELETE, &format!("{}/{session}", self.sessions_path()), None, Want::Nothing).await
    }

    async fn bulk_raw(&self, session: &str, op: &str, body: Vec<u8>) -> Reply {
        self.send(Method::POST, &format!("{}/{session}/bulk-{op}", self.sessions_path()), Some(body), Want::Nothing)
            .await
    }

    async fn upsert(&self, session: &str, profiles: Value) -> Reply {
        let body = json!({"entityType": "USERS", "profiles": profiles});
        self.bulk_raw(session, "upsert", body.to_string().into_bytes()).await
    }

    async fn delete(&self, session: &str, external_ids: &[&str]) -> Reply {
        let profiles: Vec<Value> = external_ids.iter().map(|id| json!({"externalId": id})).collect();
        let body = json!({"entityType": "USERS", "profiles": profiles});
        self.bulk_raw(session, "delete", body.to_string().into_bytes()).await
    }

    async fn trigger(&self, session: &str) -> Reply {
        self.send(Method::POST, &format!("{}/{session}/start-import", self.sessions_path()), None, Want::Session).await
    }

    async fn admin(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json().await.unwrap()
    }

    async fn users(&self) -> Value {
        self.admin("/sim/okta/users").await
    }

    async fn session_record(&self, id: &str) -> Value {
        let all = self.admin("/sim/okta/sessions").await;
        all.as_array().unwrap().iter().find(|s| s["id"] == id).cloned().unwrap_or_else(|| panic!("no session {id}"))
    }

    async fn refused(&self) -> Vec<Value> {
        self.admin("/sim/okta/refused").await.as_array().unwrap().clone()
    }

    /// Polls the inspection API until `done` holds for the session record.
    async fn wait_for_session(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let record = self.session_record(id).await;
                if done(&record) {
                    return record;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("session {id} never reached the expected state"))
    }
}

#[track_caller]
fn check_contract(reply: &Reply, want: Want) {
    for h in ["x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"] {
        assert!(reply.header(h).is_some(), "{h} missing on a {} answer", reply.status);
    }
    let spec = spec();
    if reply.status.is_client_error() || reply.status.is_server_error() {
        spec.assert_valid("Error", &reply.body);
        // The spec marks nothing required; Okta always sends all five.
        let b = &reply.body;
        assert!(b["errorCode"].is_string() && b["errorSummary"].is_string(), "{b:#}");
        assert_eq!(b["errorLink"], b["errorCode"], "{b:#}");
        assert!(b["errorId"].as_str().is_some_and(|id| !id.is_empty()), "{b:#}");
        assert!(b["errorCauses"].is_array(), "{b:#}");
        return;
    }
    match want {
        Want::Session => {
            spec.assert_valid("IdentitySourceSession", &reply.body);
            for field in ["id", "identitySourceId", "status", "importType", "created", "lastUpdated"] {
                assert!(reply.body[field].is_string(), "{field} missing: {:#}", reply.body);
            }
            assert_eq!(reply.body["importType"], "INCREMENTAL");
        }
        Want::Sessions => {
            let items = reply.body.as_array().unwrap_or_else(|| panic!("expected an array: {:#}", reply.body));
            for item in items {
                spec.assert_valid("IdentitySourceSession", item);
            }
        }
        Want::Nothing => assert_eq!(reply.body, Value::Null, "expected no body"),
    }
}

fn user(id: &str) -> Value {
    json!({"externalId": id, "profile": {
        "userName": format!("{id}@example.com"), "email": format!("{id}@example.com"),
        "firstName": "First", "lastName": "Last"}})
}

fn users(prefix: &str, n: usize) -> Value {
    Value::Array((0..n).map(|i| user(&format!("{prefix}{i}"))).collect())
}

/// A bulk-upsert body of exactly `size` bytes carrying `n` profiles, padded
/// with a custom string attribute.
fn upsert_body_of_size(n: usize, size: usize) -> Vec<u8> {
    let build = |pads: &[usize]| {
        let profiles: Vec<Value> = (0..n)
            .map(|i| {
                let mut u = user(&format!("big{i}"));
                u["profile"]["notes"] = json!("x".repeat(pads[i]));
                u
            })
            .collect();
        serde_json::to_vec(&json!({"entityType": "USERS", "profiles": profiles})).unwrap()
    };
    let base = build(&vec![0; n]).len();
    assert!(base <= size, "{n} profiles do not fit in {size} bytes");
    let extra = size - base;
    let mut pads = vec![extra / n; n];
    pads[0] += extra % n;
    let body = build(&pads);
    assert_eq!(body.len(), size);
    body
}

// ---------------------------------------------------------------- contract

#[tokio::test]
async fn the_validator_can_fail() {
    let spec = spec();
    spec.assert_invalid("IdentitySourceSession", &json!({"id": "aps1", "status": "DONE"}));
    spec.assert_invalid("IdentitySourceSession", &json!({"id": 7}));
    spec.assert_invalid("Error", &json!({"errorCode": "E0000001", "errorCauses": "none"}));
    spec.assert_invalid("BulkUpsertRequestBody", &json!({"entityType": "GROUPS"}));
    spec.assert_invalid("BulkUpsertRequestBody", &json!({"profiles": [{"externalId": "x".repeat(513)}]}));
    // ...and accepts what it should.
    spec.assert_valid("IdentitySourceSession", &spec_yaml()["components"]["examples"]["GetSessionResponse"]["value"]);
}

#[tokio::test]
async fn the_spec_examples_are_accepted_and_the_lifecycle_matches_the_spec() {
    let okta = Okta::start(|_| {}).await;
    let examples = &spec_yaml()["components"]["examples"];
    let upsert = &examples["bulkUpsertPayload"]["value"];
    let delete = &examples["bulkDeletePayload"]["value"];
    spec().assert_valid("BulkUpsertRequestBody", upsert);
    spec().assert_valid("BulkDeleteRequestBody", delete);

    let id = okta.open().await;
    assert_eq!(okta.list().await.body[0]["id"], id.as_str());
    let r = okta.bulk_raw(&id, "upsert", upsert.to_string().into_bytes()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:#}", r.body);
    assert_eq!(okta.get(&id).await.body["status"], "IN_PROGRESS");
    let r = okta.bulk_raw(&id, "delete", delete.to_string().into_bytes()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:#}", r.body);

    let triggered = okta.trigger(&id).await;
    assert_eq!((triggered.status, &triggered.body["status"]), (StatusCode::OK, &json!("TRIGGERED")));
    okta.wait_for_session(&id, |s| s["status"] == "COMPLETED").await;
    assert_eq!(okta.get(&id).await.body["status"], "COMPLETED");

    // Upserted, then deactivated by the delete example, which names them too.
    let store = okta.users().await;
    let ids: Vec<&str> = store.as_array().unwrap().iter().map(|u| u["externalId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["EXT123456784C2IF", "EXT123456784C3IF"], "the delete example's unknown ids are ignored");
    assert!(store.as_array().unwrap().iter().all(|u| u["status"] == "DEACTIVATED"));
    assert_eq!(store[0]["profile"], upsert["profiles"][0]["profile"]);
    assert!(okta.refused().await.is_empty(), "nothing was refused");
}

// ---------------------------------------------------------------- bulk limits

#[tokio::test]
async fn the_201st_profile_is_refused() {
    let okta = Okta::start(|_| {}).await;
    let id = okta.open().await;
    let r = okta.upsert(&id, users("u", 201)).await;
    r.assert_refused(400, "E0000001");
    assert!(r.causes().iter().any(|c| c.contains("200") && c.contains("201")), "{:?}", r.causes());
    assert_eq!(okta.get(&id).await.body["status"], "CREATED", "a refused request changes nothing");

    assert_eq!(okta.upsert(&id, users("u", 200)).await.status, StatusCode::ACCEPTED);
    let record = okta.session_record(&id).await;
    assert_eq!(record["requests"].as_array().unwrap().len(), 1);
    assert_eq!(record["requests"][0]["profiles"], 200);
}

#[tokio::test]
async fn two_hundred_kb_plus_one_byte_is_refused() {
    let okta = Okta::start(|_| {}).await;
    let id = okta.open().await;
    let over = upsert_body_of_size(150, 204_801);
    let r = okta.bulk_raw(&id, "upsert", over).await;
    r.assert_refused(400, "E0000001");
    assert!(r.causes().iter().any(|c| c.contains("204801") && c.contains("204800")), "{:?}", r.causes());

    let exact = upsert_body_of_size(150, 204_800);
    assert_eq!(okta.bulk_raw(&id, "upsert", exact).await.status, StatusCode::ACCEPTED);
    assert_eq!(okta.session_record(&id).await["requests"][0]["bodyBytes"], 204_800);
}

#[tokio::test]
async fn the_51st_request_is_refused() {
    let okta = Okta::start(|_| {}).await;
    let id = okta.open().await;
    for i in 0..50 {
        let r = okta.upsert(&id, json!([user(&format!("u{i}"))])).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "request {} {:#}", i + 1, r.body);
    }
    let r = okta.delete(&id, &["u0"]).await;
    r.assert_refused(400, "E0000001");
    assert!(r.causes()[0].contains("50"), "{:?}", r.causes());
    assert_eq!(okta.session_record(&id).await["requests"].as_array().unwrap().len(), 50);
    // The session itself is fine: it can still be triggered.
    assert_eq!(okta.trigger(&id).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bodies_must_be_users_with_profiles() {
    let okta = Okta::start(|_| {}).await;
    let id = okta.open().await;
    okta.bulk_raw(&id, "upsert", b"{not json".to_vec()).await.assert_refused(400, "E0000003");
    okta.bulk_raw(&id, "upsert", Vec::new()).await.assert_refused(400, "E0000003");
    okta.bulk_raw(&id, "delete", br#"{"entityType":"GROUPS","profiles":[{"externalId":"a"}]}"#.to_vec())
        .await
        .assert_refused(400, "E0000003");
    okta.bulk_raw(&id, "delete", br#"{"profiles":[{"externalId":"a"}]}"#.to_vec())
        .await
        .assert_refused(400, "E0000001");
    okta.bulk_raw(&id, "upsert", br#"{"entityType":"USERS","profiles":[]}"#.to_vec())
        .await
        .assert_refused(400, "E0000001");
    okta.bulk_raw(&id, "upsert", br#"{"entityType":"USERS"}"#.to_vec()).await.assert_refused(400, "E0000001");
    let r = okta.delete(&id, &[&"x".repeat(513)]).await;
    r.assert_refused(400, "E0000001");
    assert!(r.causes()[0].contains("externalId"));
    assert!(okta.delete(&id, &[""]).await.status == StatusCode::BAD_REQUEST);
    assert_eq!(okta.get(&id).await.body["status"], "CREATED");
}

#[tokio::test]
async fn one_bad_profile_refuses_the_whole_request_naming_it() {
    let okta = Okta::start(|_| {}).await;
    let id = okta.open().await;
    let mut profiles = users("ok", 3);
    let bad = [
        json!({"externalId": "numeric", "profile": {"employeeNumber": 42}}),
        json!({"externalId": "array", "profile": {"groups": ["a", "b"]}}),
        json!({"externalId": "boolean", "profile": {"active": true}}),
        json!({"externalId": "longname", "profile": {"firstName": "x".repeat(51)}}),
        json!({"externalId": "emptyname", "profile": {"lastName": ""}}),
        json!({"externalId": "bademail", "profile": {"email": "not-an-email"}}),
        json!({"externalId": "nulldept", "profile": {"department": null}}),
    ];
    profiles.as_array_mut().unwrap().extend(bad.iter().cloned());
    let r = okta.upsert(&id, profiles).await;
    r.assert_refused(400, "E0000001");
    let causes = r.causes();
    assert_eq!(causes.len(), bad.len(), "one cause per bad profile: {causes:#?}");
    for (cause, (id, attr)) in causes.iter().zip([
        ("numeric", "employeeNumber"),
        ("array", "groups"),
        ("boolean", "active"),
        ("longname", "firstName"),
        ("emptyname", "lastName"),
        ("bademail", "email"),
        ("nulldept", "department"),
    ]) {
        assert!(cause.contains(&format!("\"{id}\"")) && cause.contains(attr), "{cause}");
    }
    assert!(!causes.iter().any(|c| c.contains("\"ok")), "good profiles are not blamed");

    // Nothing of it was taken.
    assert_eq!(okta.get(&id).await.body["status"], "CREATED");
    assert!(okta.session_record(&id).await["requests"].as_array().unwrap().is_empty());

    // Nullable standard attributes may be null.
    let nulls = json!([{"externalId": "n", "profile": {"firstName": null, "lastName": null, "mobilePhone": null, "homeAddress": null, "email": "n@example.com"}}]);
    assert_eq!(okta.upsert(&id, nulls).await.status, StatusCode::ACCEPTED);
    let refusals = okta.refused().await;
    assert_eq!(refusals.len(), 1);
    assert_eq!((refusals[0]["status"].as_u64(), refusals[0]["errorCode"].as_str()), (Some(400), Some("E0000001")));
}

// ---------------------------------------------------------------- sessions

#[tokio::test]
async fn only_one_open_session_at_a_time() {
    let okta = Okta::start(|c| c.cooldown = Duration::from_secs(3600)).await;
    let first = okta.open().await;
    let r = okta.create().await;
    r.assert_refused(400, "E0000001");
    assert!(r.causes()[0].contains(&first), "{:?}", r.causes());

    okta.upsert(&first, users("u", 1)).await;
    okta.create().await.assert_refused(400, "E0000001"); // IN_PROGRESS blocks too

    // Cancelling (never triggered) needs no cooldown.
    assert_eq!(okta.cancel(&first).await.status, StatusCode::NO_CONTENT);
    let second = okta.open().await;
    assert_ne!(first, second);
}

#[tokio::test]
async fn no_new_session_inside_the_cooldown() {
    let okta = Okta::start(|c| c.cooldown = Duration::from_secs(3600)).await;
    let id = okta.open().await;
    okta.upsert(&id, users("u", 1)).await;
    okta.trigger(&id).await;
    let r = okta.create().await;
    r.assert_refused(400, "E0000001");
    assert!(r.causes()[0].contains("cooldown") && r.causes()[0].contains("1h"), "{:?}", r.causes());
}

#[tokio::test]
async fn a_new_session_after_the_cooldown() {
    let cooldown = Duration::from_millis(300);
    let okta = Okta::start(|c| c.cooldown = cooldown).await;
    let id = okta.open().await;
    okta.upsert(&id, users("u", 1)).await;
    okta.trigger(&id).await;
    tokio::time::sleep(cooldown + Duration::from_millis(50)).await;
    okta.open().await;
}

#[tokio::test]
async fn trigger_rules() {
    let okta = Okta::start(|_| {}).await;
    let id = okta.open().await;
    let r = okta.trigger(&id).await;
    r.assert_refused(400, "E0000001");
    assert!(r.causes()[0].contains("CREATED"), "{:?}", r.causes());

    okta.upsert(&id, users("u", 1)).await;
    assert_eq!(okta.trigger(&id).await.body["status"], "TRIGGERED");
    okta.trigger(&id).await.assert_refused(400, "E0000001");
    okta.cancel(&id).await.assert_refused(400, "E0000001");
    okta.upsert(&id, users("v", 1)).await.assert_refused(400, "E0000001");

    okta.wait_for_session(&id, |s| s["status"] == "COMPLETED").await;
    okta.trigger(&id).await.assert_refused(400, "E0000001");
    okta.cancel(&id).await.assert_refused(400, "E0000001");
}

#[tokio::test]
async fn cancel_closes_keeps_the_record_and_discards_the_data() {
    let okta = Okta::start(|_| {}).await;
    let id = okta.open().await;
    okta.upsert(&id, users("u", 2)).await;
    assert_eq!(okta.cancel(&id).await.status, StatusCode::NO_CONTENT);
    assert_eq!(okta.get(&id).await.body["status"], "CLOSED");
    okta.cancel(&id).await.assert_refused(400, "E0000001");
    okta.upsert(&id, users("u", 1)).await.assert_refused(400, "E0000001");
    okta.trigger(&id).await.assert_refused(400, "E0000001");
    assert!(okta.users().await.as_array().unwrap().is_empty());
    let listed = okta.list().await;
    assert_eq!(listed.body[0]["status"], "CLOSED");
}

#[tokio::test]
async fn a_delete_naming_no_known_user_leaves_the_session_created() {
    let okta = Okta::start(|_| {}).await;
    let id = okta.open().await;
    assert_eq!(okta.delete(&id, &["ghost"]).await.status, StatusCode::ACCEPTED);
    assert_eq!(okta.get(&id).await.body["status"], "CREATED");
    okta.trigger(&id).await.assert_refused(400, "E0000001");
    assert_eq!(okta.cancel(&id).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn unknown_ids_are_okta_404s() {
    let okta = Okta::start(|_| {}).await;
    let r = okta.send(Method::POST, "/api/v1/identity-sources/0oaNOPE/sessions", None, Want::Session).await;
    r.assert_refused(404, "E0000007");
    assert!(r.body["errorSummary"].as_str().unwrap().contains("0oaNOPE"));
    okta.send(Method::GET, "/api/v1/identity-sources/0oaNOPE/sessions", None, Want::Sessions)
        .await
        .assert_refused(404, "E0000007");

    let r = okta.get("apsNOPE").await;
    r.assert_refused(404, "E0000007");
    assert_eq!(r.body["errorSummary"], "Not found: Resource not found: apsNOPE (IdentitySourceSession)");
    okta.upsert("apsNOPE", users("u", 1)).await.assert_refused(404, "E0000007");
    okta.trigger("apsNOPE").await.assert_refused(404, "E0000007");
    okta.cancel("apsNOPE").await.assert_refused(404, "E0000007");
}

#[tokio::test]
async fn idle_sessions_expire() {
    let okta = Okta::start(|c| c.session_idle_expiry = Duration::from_millis(300)).await;
    let created = okta.open().await;
    let loaded = {
        // The first one blocks a second open session until it expires.
        okta.wait_for_session(&created, |s| s["status"] == "EXPIRED").await;
        let id = okta.open().await;
        okta.upsert(&id, users("u", 1)).await;
        id
    };
    okta.wait_for_session(&loaded, |s| s["status"] == "EXPIRED").await;
    assert_eq!(okta.get(&loaded).await.body["status"], "EXPIRED");
    okta.upsert(&loaded, users("u", 1)).await.assert_refused(400, "E0000001");
    okta.trigger(&loaded).await.assert_refused(400, "E0000001");
    assert!(okta.users().await.as_array().unwrap().is_empty(), "expired data is never imported");
}

// ---------------------------------------------------------------- imports and the user store

#[tokio::test]
async fn imports_apply_only_at_completion() {
    let import = Duration::from_millis(600);
    let okta = Okta::start(|c| c.import_duration = import).await;
    let id = okta.open().await;
    okta.upsert(&id, users("u", 3)).await;
    assert!(okta.users().await.as_array().unwrap().is_empty(), "loading imports nothing");
    assert_eq!(okta.trigger(&id).await.body["status"], "TRIGGERED");

    // Read the store, then the session: while the later read still says
    // TRIGGERED, the earlier read must not show the data.
    let done = tokio::time::timeout(PATIENCE, async {
        loop {
            let store = okta.users().await;
            let record = okta.session_record(&id).await;
            match record["status"].as_str() {
                Some("TRIGGERED") => assert!(store.as_array().unwrap().is_empty(), "applied before COMPLETED"),
                Some("COMPLETED") => return record,
                other => panic!("unexpected status {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    let at = |v: &Value| {
        time::OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
    };
    let (triggered, completed) = (at(&done["triggeredAt"]), at(&done["completedAt"]));
    assert!(completed - triggered >= import, "took {} < {import:?}", completed - triggered);
    let store = okta.users().await;
    assert_eq!(store.as_array().unwrap().len(), 3);
    for u in store.as_array().unwrap() {
        assert_eq!(at(&u["created"]), completed, "users are created when the import completes");
    }
}

#[tokio::test]
async fn the_store_follows_oktas_rules() {
    let okta = Okta::start(|_| {}).await;
    let run = |ops: Vec<(&'static str, Value)>| {
        let okta = &okta;
        async move {
            let id = okta.open().await;
            for (op, payload) in ops {
                let r = if op == "upsert" {
                    okta.upsert(&id, payload).await
                } else {
                    let ids: Vec<String> =
                        payload.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    okta.delete(&id, &refs).await
                };
                assert_eq!(r.status, StatusCode::ACCEPTED, "{:#}", r.body);
            }
            okta.trigger(&id).await;
            okta.wait_for_session(&id, |s| s["status"] == "COMPLETED").await;
        }
    };
    let find = |store: &Value, id: &str| store.as_array().unwrap().iter().find(|u| u["externalId"] == id).cloned();

    run(vec![(
        "upsert",
        json!([
            {"externalId": "a", "profile": {"firstName": "Ann", "department": "Okta Workflows"}},
            {"externalId": "b", "profile": {"firstName": "Bob"}},
        ]),
    )])
    .await;
    let store = okta.users().await;
    assert_eq!(find(&store, "a").unwrap()["status"], "ACTIVE");
    assert_eq!(find(&store, "a").unwrap()["profile"], json!({"firstName": "Ann", "department": "Okta Workflows"}));

    run(vec![("delete", json!(["a", "ghost"]))]).await;
    let store = okta.users().await;
    assert_eq!(find(&store, "a").unwrap()["status"], "DEACTIVATED");
    assert_eq!(find(&store, "b").unwrap()["status"], "ACTIVE");
    assert!(find(&store, "ghost").is_none(), "unknown ids are ignored");

    // Reactivation, with the profile replaced by the one sent.
    run(vec![("upsert", json!([{"externalId": "a", "profile": {"firstName": "Anne"}}]))]).await;
    let a = find(&okta.users().await, "a").unwrap();
    assert_eq!((a["status"].as_str(), &a["profile"]), (Some("ACTIVE"), &json!({"firstName": "Anne"})));

    // Within one session, requests apply in order.
    run(vec![
        ("upsert", json!([{"externalId": "c", "profile": {"firstName": "C1"}}])),
        ("delete", json!(["c"])),
        ("upsert", json!([{"externalId": "d", "profile": {"firstName": "D1"}}])),
        ("upsert", json!([{"externalId": "d", "profile": {"firstName": "D2"}}])),
    ])
    .await;
    let store = okta.users().await;
    assert_eq!(find(&store, "c").unwrap()["status"], "DEACTIVATED");
    assert_eq!(find(&store, "d").unwrap()["profile"]["firstName"], "D2");
    let ids: Vec<&str> = store.as_array().unwrap().iter().map(|u| u["externalId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"], "sorted by externalId");
}

#[tokio::test]
async fn triggered_sessions_are_processed_one_after_another() {
    let import = Duration::from_millis(500);
    let okta = Okta::start(|c| c.import_duration = import).await;
    let first = okta.open().await;
    okta.upsert(&first, json!([{"externalId": "x", "profile": {"firstName": "first"}}])).await;
    okta.trigger(&first).await;
    let second = okta.open().await;
    okta.upsert(&second, json!([{"externalId": "x", "profile": {"firstName": "second"}}])).await;
    okta.trigger(&second).await;

    let b = okta.wait_for_session(&second, |s| s["status"] == "COMPLETED").await;
    let a = okta.session_record(&first).await;
    assert_eq!(a["status"], "COMPLETED");
    let at = |v: &Value| {
        time::OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(
        at(&b["importStartedAt"]) >= at(&a["completedAt"]),
        "the second started after the first finished: {a:#} {b:#}"
    );
    assert!(at(&b["completedAt"]) - at(&b["importStartedAt"]) >= import);
    let x = &okta.users().await[0];
    assert_eq!(x["profile"]["firstName"], "second", "applied in trigger order");
}

// ---------------------------------------------------------------- auth and rate limits

#[tokio::test]
async fn bad_tokens_are_401() {
    let okta = Okta::start(|_| {}).await;
    let path = okta.sessions_path();
    for auth in [
        Auth::Ssws("wrong".into()),
        Auth::None,
        Auth::Bearer("never-issued".into()),
        Auth::Raw(okta.sim.state.cfg.okta_token.clone()),
        Auth::Raw(format!("Basic {}", okta.sim.state.cfg.okta_token)),
    ] {
        let r = okta.send_as(&auth, Method::POST, &path, None, Want::Session).await;
        r.assert_refused(401, "E0000011");
        assert_eq!(r.body["errorSummary"], "Invalid token provided");
    }
    assert!(okta.list().await.status.is_success());
}

#[tokio::test]
async fn over_the_rate_limit_is_429_with_the_headers() {
    let okta = Okta::start(|c| c.rate_limit_per_minute = 4).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let r = okta.list().await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-rate-limit-limit"), Some(4));
        remaining.push(r.header("x-rate-limit-remaining").unwrap());
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    let r = okta.list().await;
    r.assert_refused(429, "E0000047");
    assert_eq!(r.body["errorSummary"], "API call exceeded rate limit due to too many requests.");
    assert_eq!((r.header("x-rate-limit-limit"), r.header("x-rate-limit-remaining")), (Some(4), Some(0)));
    let reset = r.header("x-rate-limit-reset").unwrap();
    assert!((now + 1..=now + 62).contains(&reset), "reset {reset} is not about a minute after {now}");
    // Bad credentials count and are limited too.
    okta.send_as(&Auth::None, Method::GET, &okta.sessions_path(), None, Want::Sessions)
        .await
        .assert_refused(429, "E0000047");
}

// ---------------------------------------------------------------- OAuth

fn assertion(audience: &str, client_id: &str, claims_patch: Value) -> String {
    let key = std::fs::read(PRIVATE_KEY).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = json!({
        "iss": client_id, "sub": client_id, "aud": audience,
        "iat": now, "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string(),
    });
    for (k, v) in claims_patch.as_object().unwrap() {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).unwrap()
}

impl Okta {
    fn token_url(&self) -> String {
        self.url("/oauth2/v1/token")
    }

    async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let r = self
            .http
            .post(self.token_url())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        (status, headers, r.json().await.unwrap())
    }

    async fn token_for(&self, scope: &str, jwt: &str) -> (StatusCode, Value) {
        let (status, headers, body) = self
            .token(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", jwt),
            ])
            .await;
        assert!(headers.contains_key("x-rate-limit-remaining"));
        if !status.is_success() {
            let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["error", "error_description"], "OAuth error shape: {body:#}");
        }
        (status, body)
    }
}

const BOTH: &str = "okta.identitySources.manage okta.identitySources.read";

#[tokio::test]
async fn oauth_client_credentials_with_a_verified_assertion() {
    let okta = Okta::start(|c| c.okta_public_key = Some(PUBLIC_KEY.into())).await;
    let client = okta.sim.state.cfg.okta_client_id.clone();
    let (status, body) = okta.token_for(BOTH, &assertion(&okta.token_url(), &client, json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(3600)));
    assert_eq!(body["scope"], BOTH);
    let bearer = Auth::Bearer(body["access_token"].as_str().unwrap().to_owned());

    let r = okta.send_as(&bearer, Method::POST, &okta.sessions_path(), None, Want::Session).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = okta.send_as(&bearer, Method::GET, &okta.sessions_path(), None, Want::Sessions).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);

    // A tampered signature is refused when the sandbox holds the key.
    let good = assertion(&okta.token_url(), &client, json!({}));
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[0] ^= 1;
    let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
    let (status, body) = okta.token_for(BOTH, &tampered).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")), "{body:#}");
}

#[tokio::test]
async fn oauth_refuses_bad_assertions_and_requests() {
    let okta = Okta::start(|_| {}).await;
    let client = okta.sim.state.cfg.okta_client_id.clone();
    let aud = okta.token_url();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (why, jwt) in [
        ("wrong audience", assertion("https://example.okta.com/oauth2/v1/token", &client, json!({}))),
        ("wrong issuer", assertion(&aud, "someone-else", json!({}))),
        ("sub differs", assertion(&aud, &client, json!({"sub": "x"}))),
        ("expired", assertion(&aud, &client, json!({"exp": now - 10}))),
        ("too long", assertion(&aud, &client, json!({"exp": now + 7200}))),
        ("no exp", assertion(&aud, &client, json!({"exp": null}))),
        ("not a JWT", "abc.def".to_owned()),
    ] {
        let (status, body) = okta.token_for(BOTH, &jwt).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{why}: {body:#}"
        );
    }

    let once = assertion(&aud, &client, json!({}));
    assert_eq!(okta.token_for(BOTH, &once).await.0, StatusCode::OK);
    assert_eq!(okta.token_for(BOTH, &once).await.0, StatusCode::UNAUTHORIZED, "a jti is single-use");

    let (status, body) = okta.token_for("okta.users.manage", &assertion(&aud, &client, json!({}))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    let (status, _, body) = okta
        .token(&[
            ("grant_type", "password"),
            ("scope", BOTH),
            ("client_assertion", &assertion(&aud, &client, json!({}))),
        ])
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_grant_type")));
    let (status, _, body) = okta
        .token(&[("grant_type", "client_credentials"), ("scope", BOTH), ("client_id", &client), ("client_secret", "s")])
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
}

#[tokio::test]
async fn bearer_tokens_are_limited_to_their_scopes() {
    let okta = Okta::start(|_| {}).await;
    let client = okta.sim.state.cfg.okta_client_id.clone();
    let jwt = assertion(&okta.token_url(), &client, json!({}));
    let (status, body) = okta.token_for("okta.identitySources.read", &jwt).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let reader = Auth::Bearer(body["access_token"].as_str().unwrap().to_owned());

    let r = okta.send_as(&reader, Method::GET, &okta.sessions_path(), None, Want::Sessions).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = okta.send_as(&reader, Method::POST, &okta.sessions_path(), None, Want::Session).await;
    r.assert_refused(403, "E0000006");
}

#[tokio::test]
async fn bearer_tokens_expire() {
    let ttl = Duration::from_secs(1);
    let okta = Okta::start(|c| c.token_ttl = ttl).await;
    let client = okta.sim.state.cfg.okta_client_id.clone();
    let (status, body) = okta.token_for(BOTH, &assertion(&okta.token_url(), &client, json!({}))).await;
    assert_eq!((status, body["expires_in"].as_u64()), (StatusCode::OK, Some(1)), "{body:#}");
    let bearer = Auth::Bearer(body["access_token"].as_str().unwrap().to_owned());
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let r = okta.send_as(&bearer, Method::GET, &okta.sessions_path(), None, Want::Sessions).await;
    r.assert_refused(401, "E0000011");
}

// ---------------------------------------------------------------- faults and the admin API

async fn set_faults(okta: &Okta, faults: Value) -> Value {
    let r = okta.http.put(okta.url("/sim/faults")).json(&faults).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn injected_okta_faults_look_like_okta() {
    let okta = Okta::start(|_| {}).await;
    set_faults(&okta, json!({"okta": {"rate_429": 1.0}})).await;
    let r = okta.list().await;
    r.assert_refused(429, "E0000047");
    assert_eq!(r.header("x-rate-limit-remaining"), Some(0));

    set_faults(&okta, json!({"okta": {"rate_5xx": 1.0}})).await;
    let r = okta.list().await;
    assert!(r.status.is_server_error());

    set_faults(&okta, json!({"okta": {"rate_drop": 1.0}})).await;
    let err = okta.http.get(okta.url(&okta.sessions_path())).send().await.unwrap_err();
    assert!(err.is_request() || err.is_connect(), "the connection was dropped: {err:?}");
    // /sim/* is never faulted.
    assert!(okta.users().await.is_array());

    let view = okta.admin("/sim/faults").await;
    assert_eq!(view["injected"]["okta"]["rate_429"], 1);
    assert_eq!(view["injected"]["okta"]["rate_5xx"], 1);
    assert_eq!(view["injected"]["okta"]["dropped"], 1);
    assert!(okta.refused().await.is_empty(), "injected faults are not the sandbox refusing");

    let r = okta.http.put(okta.url("/sim/faults")).json(&json!({"okta": {"rate_429": 2.0}})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    assert_eq!(okta.http.post(okta.url("/sim/reset")).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(okta.list().await.status, StatusCode::OK);
    assert_eq!(okta.admin("/sim/faults").await["injected"]["okta"]["dropped"], 0);
}

#[tokio::test]
async fn injected_graph_faults_look_like_graph() {
    let okta = Okta::start(|_| {}).await;
    set_faults(&okta, json!({"graph": {"rate_429": 1.0, "latency_ms": 5, "jitter_ms": 5}, "seed": 3})).await;
    let r = okta.http.get(okta.url("/v1.0/users")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "0.2");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert!(body["error"]["innerError"]["request-id"].is_string());
    // Okta is unaffected.
    assert_eq!(okta.list().await.status, StatusCode::OK);
    let view = okta.admin("/sim/faults").await;
    assert_eq!(
        (view["injected"]["graph"]["rate_429"].as_u64(), view["injected"]["graph"]["delayed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(view["injected"]["okta"]["rate_429"], 0);

    set_faults(&okta, json!({"entra": {"rate_5xx": 1.0}})).await;
    let tenant = okta.sim.state.cfg.graph_tenant.clone();
    let r = okta.http.post(okta.url(&format!("/{tenant}/oauth2/v2.0/token"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS"));
    assert_eq!(okta.admin("/sim/faults").await["injected"]["entra"]["rate_5xx"], 1);
}

#[tokio::test]
async fn reset_forgets_sessions_users_and_the_cooldown() {
    let okta = Okta::start(|c| c.cooldown = Duration::from_secs(3600)).await;
    let id = okta.open().await;
    okta.upsert(&id, users("u", 2)).await;
    okta.trigger(&id).await;
    okta.wait_for_session(&id, |s| s["status"] == "COMPLETED").await;
    okta.create().await.assert_refused(400, "E0000001");
    assert_eq!(okta.users().await.as_array().unwrap().len(), 2);

    okta.http.post(okta.url("/sim/reset")).send().await.unwrap();
    assert!(okta.users().await.as_array().unwrap().is_empty());
    assert!(okta.admin("/sim/okta/sessions").await.as_array().unwrap().is_empty());
    assert!(okta.refused().await.is_empty());
    okta.open().await;
}
