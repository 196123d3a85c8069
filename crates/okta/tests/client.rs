//! The client against a scripted Okta: what goes over the wire, and how
//! each of Okta's answers comes back to the caller.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use support::{FakeOkta, IDENTITY_SOURCE, Reply, reset_in, session, within_a_minute};
use xaas_core::{ExternalId, OktaProfile, Op, SessionStatus};
use xaas_okta::{OktaAuth, OktaClient, OktaError, OktaSettings, bulk_body};

const TOKEN: &str = "00TestApiToken-not-a-real-one_xyz";
const SESSIONS: &str = "/api/v1/identity-sources/0oa3l6l6WK6h0R0QW0g4/sessions";

fn client(fake: &FakeOkta) -> OktaClient {
    let mut settings =
        OktaSettings::new(fake.base.clone(), IDENTITY_SOURCE, OktaAuth::ApiToken(SecretString::from(TOKEN)));
    settings.timeout = Duration::from_secs(10);
    settings.max_rate_limit_wait = Duration::from_secs(10);
    OktaClient::new(settings).unwrap()
}

fn profile(id: &str) -> OktaProfile {
    OktaProfile {
        external_id: ExternalId::parse(id).unwrap(),
        profile: Some(BTreeMap::from([
            ("email".to_string(), format!("{id}@example.com")),
            ("userName".to_string(), format!("{id}@example.com")),
            ("firstName".to_string(), "Zoë".to_string()),
        ])),
    }
}

#[tokio::test]
async fn create_session_accepts_200_and_201_and_sends_the_api_token() {
    let fake = FakeOkta::start(vec![
        Reply::json(200, session("aps1", "CREATED")),
        Reply::json(201, session("aps2", "CREATED")),
    ])
    .await;
    let okta = client(&fake);

    let first = within_a_minute(okta.create_session()).await.unwrap();
    let second = within_a_minute(okta.create_session()).await.unwrap();

    assert_eq!(first.id, "aps1");
    assert_eq!(second.id, "aps2");
    assert_eq!(second.status, SessionStatus::Created);
    assert_eq!(second.identity_source_id, IDENTITY_SOURCE);
    assert_eq!(second.import_type.as_deref(), Some("INCREMENTAL"));
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, SESSIONS);
        assert_eq!(request.header("authorization"), Some(format!("SSWS {TOKEN}").as_str()));
        assert_eq!(request.header("accept"), Some("application/json"));
    }
}

#[tokio::test]
async fn list_get_and_delete_use_their_paths() {
    let fake = FakeOkta::start(vec![
        Reply::json(200, json!([session("aps1", "TRIGGERED"), session("aps2", "CREATED")])),
        Reply::json(200, session("aps2", "IN_PROGRESS")),
        Reply::empty(204),
    ])
    .await;
    let okta = client(&fake);

    let list = within_a_minute(okta.list_sessions()).await.unwrap();
    let got = within_a_minute(okta.get_session("aps2")).await.unwrap();
    within_a_minute(okta.delete_session("aps2")).await.unwrap();

    assert_eq!(
        list.iter().map(|s| (s.id.as_str(), s.status)).collect::<Vec<_>>(),
        vec![("aps1", SessionStatus::Triggered), ("aps2", SessionStatus::Created)]
    );
    assert_eq!(got.status, SessionStatus::InProgress);
    let seen: Vec<_> = fake.seen().into_iter().map(|s| (s.method.to_string(), s.path)).collect();
    assert_eq!(
        seen,
        vec![
            ("GET".to_string(), SESSIONS.to_string()),
            ("GET".to_string(), format!("{SESSIONS}/aps2")),
            ("DELETE".to_string(), format!("{SESSIONS}/aps2")),
        ]
    );
}

#[tokio::test]
async fn start_import_accepts_an_object_and_a_one_element_array() {
    let fake = FakeOkta::start(vec![
        Reply::json(200, session("aps1", "TRIGGERED")),
        Reply::json(200, json!([session("aps2", "TRIGGERED")])),
    ])
    .await;
    let okta = client(&fake);

    let one = within_a_minute(okta.start_import("aps1")).await.unwrap();
    let array = within_a_minute(okta.start_import("aps2")).await.unwrap();

    assert_eq!((one.id.as_str(), one.status), ("aps1", SessionStatus::Triggered));
    assert_eq!((array.id.as_str(), array.status), ("aps2", SessionStatus::Triggered));
    let paths: Vec<_> = fake.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, vec![format!("{SESSIONS}/aps1/start-import"), format!("{SESSIONS}/aps2/start-import")]);
}

#[tokio::test]
async fn the_bulk_body_is_exactly_what_okta_receives() {
    let fake = FakeOkta::start(vec![Reply::empty(202)]).await;
    let okta = client(&fake);
    let profiles = vec![profile("ada"), profile("grace")];

    within_a_minute(okta.bulk_upsert("aps1", &profiles)).await.unwrap();

    let seen = fake.seen();
    let expected = bulk_body(Op::Upsert, &profiles);
    assert_eq!(seen[0].path, format!("{SESSIONS}/aps1/bulk-upsert"));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(seen[0].body.len(), expected.len());
    assert_eq!(seen[0].body, expected);
    assert_eq!(seen[0].json()["entityType"], "USERS");
    assert_eq!(seen[0].json()["profiles"][1]["profile"]["email"], "grace@example.com");
}

#[tokio::test]
async fn bulk_delete_sends_only_external_ids() {
    let fake = FakeOkta::start(vec![Reply::empty(202)]).await;
    let okta = client(&fake);

    within_a_minute(okta.bulk_delete("aps1", &[profile("ada"), profile("grace")])).await.unwrap();

    let seen = fake.seen();
    assert_eq!(seen[0].path, format!("{SESSIONS}/aps1/bulk-delete"));
    assert_eq!(
        seen[0].json(),
        json!({"entityType": "USERS", "profiles": [{"externalId": "ada"}, {"externalId": "grace"}]})
    );
}

#[tokio::test]
async fn a_400_on_create_is_a_retryable_refusal() {
    let fake = FakeOkta::start(vec![Reply::error(
        400,
        "E0000001",
        "Api validation failed: Identity Source Session",
        &["An active session exists for the identity source"],
    )])
    .await;
    let okta = client(&fake);

    let err = within_a_minute(okta.create_session()).await.unwrap_err();

    let OktaError::CreateRefused { summary } = &err else { panic!("expected CreateRefused, got {err:?}") };
    assert!(summary.contains("E0000001"), "{summary}");
    assert!(summary.contains("oaeTestErrorId"), "{summary}");
    assert!(summary.contains("An active session exists"), "{summary}");
    assert!(err.is_retryable());
    assert_eq!(fake.hits(), 1, "a refused create is the caller's to retry");
}

#[tokio::test]
async fn a_400_on_bulk_is_permanent_and_carries_the_causes() {
    let fake = FakeOkta::start(vec![Reply::error(
        400,
        "E0000001",
        "Api validation failed: profiles",
        &["profiles[0].profile.email: Does not match required pattern", "profiles[1].externalId: too long"],
    )])
    .await;
    let okta = client(&fake);

    let err = within_a_minute(okta.bulk_upsert("aps1", &[profile("ada"), profile("grace")])).await.unwrap_err();

    let OktaError::Validation { status, code, summary, causes } = &err else {
        panic!("expected Validation, got {err:?}")
    };
    assert_eq!((*status, code.as_str()), (400, "E0000001"));
    assert!(summary.contains("Api validation failed: profiles") && summary.contains("oaeTestErrorId"), "{summary}");
    assert_eq!(
        causes,
        &vec![
            "profiles[0].profile.email: Does not match required pattern".to_string(),
            "profiles[1].externalId: too long".to_string()
        ]
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("profiles[1].externalId: too long"), "{err}");
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn a_429_that_resets_soon_is_waited_out_and_retried() {
    let fake = FakeOkta::start(vec![
        Reply::error(429, "E0000047", "API call exceeded rate limit due to too many requests.", &[])
            .header("x-rate-limit-limit", 600)
            .header("x-rate-limit-remaining", 0)
            .header("x-rate-limit-reset", reset_in(1)),
        Reply::empty(202),
    ])
    .await;
    let okta = client(&fake);
    let profiles = vec![profile("ada")];

    within_a_minute(okta.bulk_upsert("aps1", &profiles)).await.unwrap();

    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "the 429 was retried once");
    assert_eq!(seen[0].body, seen[1].body);
    assert_eq!(seen[1].body, bulk_body(Op::Upsert, &profiles));
}

#[tokio::test]
async fn a_429_that_resets_late_is_returned_and_holds_later_calls() {
    let fake = FakeOkta::start(vec![
        Reply::error(429, "E0000047", "API call exceeded rate limit due to too many requests.", &[])
            .header("x-rate-limit-remaining", 0)
            .header("x-rate-limit-reset", reset_in(3600)),
    ])
    .await;
    let okta = client(&fake);

    let err = within_a_minute(okta.bulk_upsert("aps1", &[profile("ada")])).await.unwrap_err();
    let OktaError::RateLimited { wait } = err else { panic!("expected RateLimited, got {err:?}") };
    assert!(wait > Duration::from_secs(3000), "{wait:?}");
    assert!(OktaError::RateLimited { wait }.is_retryable());
    assert_eq!(OktaError::RateLimited { wait }.retry_after(), Some(wait));

    // The window is known to be spent: the next call does not spend a request.
    let err = within_a_minute(okta.list_sessions()).await.unwrap_err();
    assert!(matches!(err, OktaError::RateLimited { .. }), "{err:?}");
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn a_spent_window_reported_on_success_holds_the_next_call() {
    let fake = FakeOkta::start(vec![
        Reply::json(200, json!([]))
            .header("x-rate-limit-limit", 600)
            .header("x-rate-limit-remaining", 0)
            .header("x-rate-limit-reset", reset_in(3600)),
    ])
    .await;
    let okta = client(&fake);

    assert!(within_a_minute(okta.list_sessions()).await.unwrap().is_empty());
    let err = within_a_minute(okta.create_session()).await.unwrap_err();

    assert!(matches!(err, OktaError::RateLimited { wait } if wait > Duration::from_secs(3000)), "{err:?}");
    assert_eq!(fake.hits(), 1, "the held call never reached Okta");
}

#[tokio::test]
async fn a_401_is_an_auth_error_that_never_shows_the_token() {
    let fake = FakeOkta::start(vec![Reply::error(401, "E0000011", "Invalid token provided", &[])]).await;
    let okta = client(&fake);

    let err = within_a_minute(okta.list_sessions()).await.unwrap_err();

    assert!(matches!(err, OktaError::Auth { status: 401, ref code, .. } if code == "E0000011"), "{err:?}");
    assert!(!err.is_retryable());
    let shown = format!("{err} {err:?} {okta:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(err.to_string().contains("check the API token"), "{err}");
    assert_eq!(fake.hits(), 1, "an API token cannot be refreshed, so no retry");
}

#[tokio::test]
async fn a_403_points_at_roles_and_scopes_and_a_404_at_the_identity_source() {
    let fake = FakeOkta::start(vec![
        Reply::error(403, "E0000006", "You do not have permission to perform the requested action", &[]),
        Reply::error(404, "E0000007", "Not found: Resource not found: 0oa3l6l6WK6h0R0QW0g4 (AppInstance)", &[]),
    ])
    .await;
    let okta = client(&fake);

    let forbidden = within_a_minute(okta.create_session()).await.unwrap_err();
    let missing = within_a_minute(okta.create_session()).await.unwrap_err();

    assert!(matches!(forbidden, OktaError::Auth { status: 403, .. }), "{forbidden:?}");
    assert!(forbidden.to_string().contains("okta.identitySources.manage"), "{forbidden}");
    assert!(matches!(missing, OktaError::NotFound { .. }), "{missing:?}");
    assert!(missing.to_string().contains(&format!("identity_source_id {IDENTITY_SOURCE:?}")), "{missing}");
    assert!(missing.to_string().contains("E0000007"), "{missing}");
    assert!(!forbidden.is_retryable() && !missing.is_retryable());
}

#[tokio::test]
async fn a_5xx_on_a_read_is_retried_in_process() {
    let fake = FakeOkta::start(vec![
        Reply::error(503, "E0000009", "Internal Server Error", &[]),
        Reply::json(200, json!([session("aps1", "COMPLETED")])),
    ])
    .await;
    let okta = client(&fake);

    let list = within_a_minute(okta.list_sessions()).await.unwrap();

    assert_eq!(list[0].status, SessionStatus::Completed);
    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn a_5xx_on_a_bulk_load_is_returned_without_resending() {
    let fake = FakeOkta::start(vec![Reply::error(502, "-", "Bad Gateway", &[]), Reply::empty(202)]).await;
    let okta = client(&fake);

    let err = within_a_minute(okta.bulk_upsert("aps1", &[profile("ada")])).await.unwrap_err();

    assert!(matches!(err, OktaError::Server { status: 502, .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(fake.hits(), 1, "a 5xx may have been applied: the caller decides");
    assert_eq!(fake.unused(), 1);
}

#[tokio::test]
async fn a_hang_up_after_sending_a_bulk_load_is_returned_without_resending() {
    let fake = FakeOkta::start(vec![Reply::HangUp, Reply::empty(202)]).await;
    let okta = client(&fake);

    let err = within_a_minute(okta.bulk_delete("aps1", &[profile("ada")])).await.unwrap_err();

    let OktaError::Transport(transport) = &err else { panic!("expected Transport, got {err:?}") };
    assert!(transport.maybe_sent);
    assert_eq!(transport.op, "bulk_delete");
    assert!(err.is_retryable());
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn a_hang_up_on_a_read_is_retried() {
    let fake = FakeOkta::start(vec![Reply::HangUp, Reply::json(200, session("aps1", "COMPLETED"))]).await;
    let okta = client(&fake);

    let got = within_a_minute(okta.get_session("aps1")).await.unwrap();

    assert_eq!(got.status, SessionStatus::Completed);
    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn a_refused_connection_sent_nothing_and_is_retryable() {
    // A port that was free a moment ago: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let okta = OktaClient::new(OktaSettings::new(base, IDENTITY_SOURCE, OktaAuth::ApiToken(SecretString::from(TOKEN))))
        .unwrap();

    let err = within_a_minute(okta.bulk_upsert("aps1", &[profile("ada")])).await.unwrap_err();

    let OktaError::Transport(transport) = &err else { panic!("expected Transport, got {err:?}") };
    assert!(!transport.maybe_sent, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_unreadable_success_body_is_malformed() {
    let fake = FakeOkta::start(vec![Reply::json(200, json!({"sessions": []}))]).await;
    let okta = client(&fake);

    let err = within_a_minute(okta.create_session()).await.unwrap_err();

    assert!(matches!(err, OktaError::Malformed(ref m) if m.contains("sessions")), "{err:?}");
    assert!(!err.is_retryable());
}

#[test]
fn bad_settings_fail_before_anything_is_sent() {
    let base = url::Url::parse("https://acme.okta.com").unwrap();
    let token = || OktaAuth::ApiToken(SecretString::from(TOKEN));
    let err = OktaClient::new(OktaSettings::new(base.clone(), " ", token())).unwrap_err();
    assert!(matches!(err, OktaError::Config(ref m) if m.contains("identity_source_id")), "{err}");
    let err =
        OktaClient::new(OktaSettings::new(base.clone(), IDENTITY_SOURCE, OktaAuth::ApiToken("".into()))).unwrap_err();
    assert!(matches!(err, OktaError::Config(_)), "{err}");
    let err = OktaClient::new(OktaSettings::new(
        url::Url::parse("mailto:admin@acme.example").unwrap(),
        IDENTITY_SOURCE,
        token(),
    ))
    .unwrap_err();
    assert!(matches!(err, OktaError::Config(_)), "{err}");
}

/// Counts every counter increment and histogram observation as `name{label=value,…}`.
#[derive(Clone, Default)]
struct Counts(std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>>);

struct Counted {
    key: String,
    counts: Counts,
}

impl metrics::CounterFn for Counted {
    fn increment(&self, value: u64) {
        *self.counts.0.lock().unwrap().entry(self.key.clone()).or_default() += value;
    }

    fn absolute(&self, value: u64) {
        self.counts.0.lock().unwrap().insert(self.key.clone(), value);
    }
}

impl metrics::HistogramFn for Counted {
    fn record(&self, _: f64) {
        *self.counts.0.lock().unwrap().entry(self.key.clone()).or_default() += 1;
    }
}

fn key_text(key: &metrics::Key) -> String {
    let mut labels: Vec<_> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl metrics::Recorder for Counts {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(std::sync::Arc::new(Counted { key: key_text(key), counts: self.clone() }))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::from_arc(std::sync::Arc::new(Counted { key: key_text(key), counts: self.clone() }))
    }
}

#[test]
fn requests_rate_limits_and_retries_are_counted() {
    let counts = Counts::default();
    // A current-thread runtime keeps every task on this thread, where the
    // local recorder is installed.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metrics::with_local_recorder(&counts, || {
        runtime.block_on(async {
            let fake = FakeOkta::start(vec![
                Reply::error(429, "E0000047", "API call exceeded rate limit due to too many requests.", &[])
                    .header("x-rate-limit-reset", reset_in(1)),
                Reply::empty(202),
                Reply::error(503, "E0000009", "Internal Server Error", &[]),
                Reply::json(200, json!([])),
            ])
            .await;
            let okta = client(&fake);
            within_a_minute(okta.bulk_upsert("aps1", &[profile("ada")])).await.unwrap();
            within_a_minute(okta.list_sessions()).await.unwrap();
        })
    });

    let counts = counts.0.lock().unwrap().clone();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("xaas_okta_rate_limited_total{op=bulk_upsert}".to_string(), 1),
            ("xaas_okta_request_duration_seconds{op=bulk_upsert,status=202}".to_string(), 1),
            ("xaas_okta_request_duration_seconds{op=bulk_upsert,status=429}".to_string(), 1),
            ("xaas_okta_request_duration_seconds{op=list_sessions,status=200}".to_string(), 1),
            ("xaas_okta_request_duration_seconds{op=list_sessions,status=503}".to_string(), 1),
            ("xaas_retries_total{reason=rate_limited,stage=okta}".to_string(), 1),
            ("xaas_retries_total{reason=server,stage=okta}".to_string(), 1),
        ])
    );
}
