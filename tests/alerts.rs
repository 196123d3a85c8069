//! Alerts (issue 11), against the real binary, broker and sandbox: a local
//! webhook receiver in this test records what `worker all` POSTs while real
//! runs fail, trip a guard, recover, and while poison messages are parked.

mod common;
mod sync_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common::{Env, Options};
use serde_json::{Value, json};
use sync_support::{completed, configure, failed};
use xaas_broker::BasicProperties;

/// The webhook variable of the demo sync (the default name).
const HOOK_VAR: &str = "XAAS_SYNC_DEMO_ALERT_WEBHOOK";

/// What the receiver saw: each request's answer and body, in order.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<(u16, Value)>>>,
    /// Requests to answer 500 before answering 200.
    fail_first: Arc<Mutex<usize>>,
}

struct Receiver {
    seen: Seen,
    /// The URL, whose path holds a secret the logs must never show.
    url: String,
    token: String,
}

async fn hook(State(seen): State<Seen>, Json(body): Json<Value>) -> StatusCode {
    let status = {
        let mut fail = seen.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    };
    seen.requests.lock().unwrap().push((status.as_u16(), body));
    status
}

/// An HTTP server on 127.0.0.1:0 that records every POST to `/hook/<token>`.
async fn receiver(fail_first: usize) -> Receiver {
    let seen = Seen { fail_first: Arc::new(Mutex::new(fail_first)), ..Seen::default() };
    let token = format!("hook-secret-{}", uuid::Uuid::new_v4().simple());
    let app = axum::Router::new().route(&format!("/hook/{token}"), axum::routing::post(hook)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook/{token}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { seen, url, token }
}

impl Receiver {
    fn requests(&self) -> Vec<(u16, Value)> {
        self.seen.requests.lock().unwrap().clone()
    }

    /// The bodies answered 200.
    fn accepted(&self) -> Vec<Value> {
        self.requests().into_iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect()
    }

    async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {n} alerts; got {:?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A complete run, then 30% of the users disabled with a 10% guard: the
/// second run trips the guard and fails. Returns its run id.
async fn complete_then_trip(env: &Env) -> String {
    completed(&env.enqueue_wait(&[]).await);
    let active: Vec<String> = env.okta_users().await.into_keys().collect();
    for id in active.iter().take(active.len() * 3 / 10) {
        assert!(env.post(&format!("/sim/users/{id}/disable"), json!({})).await.is_success());
    }
    let tripped = failed(&env.enqueue_wait(&[]).await);
    assert!(tripped["guard_tripped"].is_string(), "{tripped}");
    tripped["run_id"].as_str().unwrap_or_else(|| panic!("a run id in {tripped}")).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tripped_guard_alerts_twice_and_the_next_good_run_alerts_recovery_in_slack_shape_after_retries() {
    let mut env = Env::start("alerts-slack", Options::default()).await;
    configure(&env, "[syncs.demo.guards]\nmax_deactivations_percent = 10\n\n[syncs.demo.alerts]\nformat = \"slack\"");
    let hook = receiver(2).await;
    env.spawn_worker_env("all", "worker", &[(HOOK_VAR, Some(&hook.url))]);

    let tripped = complete_then_trip(&env).await;
    let good = completed(&env.enqueue_wait(&["--allow-mass-deactivation"]).await);
    let good = good["run_id"].as_str().unwrap().to_string();

    let accepted = hook.wait_accepted(3, Duration::from_secs(120)).await;
    let texts: Vec<&str> = accepted.iter().map(|b| b["text"].as_str().unwrap_or_else(|| panic!("{b}"))).collect();
    assert!(texts[0].contains(&format!("xaas-sync demo: a guard tripped in run {tripped}")), "{texts:?}");
    assert!(texts[0].contains("max_deactivations_percent = 10%"), "the guard's reason: {texts:?}");
    assert!(texts[1].starts_with(&format!("xaas-sync demo: run {tripped} failed: ")), "{texts:?}");
    assert_eq!(
        texts[2],
        format!("xaas-sync demo: recovered, run {good} completed after run {tripped} had failed"),
        "{texts:?}"
    );
    for b in &accepted {
        assert_eq!(b["blocks"][0]["type"], "section", "{b}");
        assert_eq!(b["blocks"][0]["text"]["type"], "mrkdwn", "{b}");
        assert_eq!(b["blocks"][0]["text"]["text"], b["text"], "{b}");
    }

    // The receiver's two 500s were retried: the first alert came three times.
    let requests = hook.requests();
    let answers: Vec<u16> = requests.iter().map(|(s, _)| *s).collect();
    assert_eq!(&answers[..3], [500, 500, 200], "{requests:?}");
    assert!(requests[..3].iter().all(|(_, b)| *b == accepted[0]), "retries send the same body: {requests:?}");
    // The first run completed with no failure before it: no alert; and none twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hook.accepted().len(), 3, "exactly three alerts: {:?}", hook.requests());
    assert_eq!(hook.requests().len(), 5, "{:?}", hook.requests());

    let log = env.log("worker");
    assert!(log.contains("alerts: this process sends the alerts"), "{log}");
    assert!(log.contains("alerts: alert delivered"), "{log}");
    assert!(!log.contains(&hook.token), "the webhook URL is a secret and never logged:\n{log}");
    env.finish().await;
}

fn props(message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn parked_messages_alert_once_each_in_json_for_their_sync() {
    let mut env = Env::start("alerts-parked", Options::default()).await;
    configure(&env, "[syncs.demo.alerts]\nformat = \"json\"\nevents = [\"message_parked\", \"run_failed\"]");
    let hook = receiver(0).await;
    env.spawn_worker_env("all", "worker", &[(HOOK_VAR, Some(&hook.url))]);

    let names = env.broker.names().clone();
    // A request of a schema this build does not speak names its sync and run;
    // an unreadable page names nothing, so every sync with alerts is told.
    let future = json!({"v": 99, "run_id": "r-99", "sync": "demo", "mode": "full"}).to_string();
    env.broker.publish_raw("", &names.requests(), future.as_bytes(), props("poison-v99")).await.unwrap();
    env.broker.publish_raw("", &names.pages(), b"{not json", props("poison-json")).await.unwrap();

    let accepted = hook.wait_accepted(2, Duration::from_secs(120)).await;
    let by_id = |id: &str| {
        accepted
            .iter()
            .find(|b| b["message_id"] == id)
            .unwrap_or_else(|| panic!("no alert for {id}: {accepted:?}"))
            .clone()
    };
    let v99 = by_id("poison-v99");
    assert_eq!(v99["type"], "message_parked", "{v99}");
    assert_eq!(v99["sync"], "demo", "{v99}");
    assert_eq!(v99["run_id"], "r-99", "{v99}");
    assert_eq!(v99["queue"], names.requests(), "{v99}");
    assert_eq!(v99["reason"], "undecodable", "{v99}");
    assert!(v99["error"].as_str().unwrap().contains("schema version 99"), "{v99}");
    assert!(v99["id"].as_str().unwrap().starts_with("message_parked:demo:poison-v99|"), "{v99}");
    assert!(v99["at"].is_string() && v99["summary"].as_str().unwrap().contains("xaas parked list"), "{v99}");
    let anon = by_id("poison-json");
    assert_eq!(anon["sync"], "demo", "told to the only sync with alerts: {anon}");
    assert_eq!(anon["queue"], names.pages(), "{anon}");
    assert_eq!(anon["run_id"], Value::Null, "{anon}");

    // An operator's listing returns the messages to the queue: not a new parking.
    let list = env.run_xaas(&["parked", "list"]).await;
    assert!(String::from_utf8_lossy(&list.stdout).lines().count() == 2, "{list:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hook.accepted().len(), 2, "each parking alerted once: {:?}", hook.requests());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_receiver_does_not_hold_up_runs_and_its_alerts_are_given_up() {
    let mut env = Env::start("alerts-dead", Options::default()).await;
    configure(&env, "[syncs.demo.guards]\nmax_deactivations_percent = 10\n\n[syncs.demo.alerts]");
    // A port nobody listens on: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook/dead-secret-path");
    env.spawn_worker_env("all", "worker", &[(HOOK_VAR, Some(&url))]);

    let tripped = complete_then_trip(&env).await;
    // While the two alerts of the tripped run are being retried, the next
    // run goes through the same worker and completes.
    let good = completed(&env.enqueue_wait(&["--allow-mass-deactivation"]).await);
    assert!(good["deactivated"].as_u64().unwrap() > 0, "{good}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let given_up = format!("guard_tripped:demo:{tripped}");
    loop {
        let log = env.log("worker");
        if log.lines().any(|l| l.contains("alerts: alert not delivered; giving up") && l.contains(&given_up)) {
            let line = log.lines().find(|l| l.contains("giving up") && l.contains(&given_up)).unwrap();
            assert!(line.contains("Connection refused"), "says why: {line}");
            // The budget: five retries after the first attempt, then no more.
            let retries =
                log.lines().filter(|l| l.contains("webhook failed; retrying") && l.contains(&given_up)).count();
            assert_eq!(retries, 5, "retried within its budget:\n{log}");
            assert!(!log.contains("dead-secret-path"), "the webhook URL is never logged:\n{log}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the alert was never given up:\n{log}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(env.worker_running("worker"), "a dead receiver does not take the worker down");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_bad_webhook_stops_the_worker_at_start_naming_the_setting() {
    let env = Env::start("alerts-config", Options::default()).await;
    configure(&env, "[syncs.demo.alerts]\nformat = \"slack\"");
    let out = env.run_xaas_env(&["worker", "all"], &[(HOOK_VAR, None)]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("syncs.demo.alerts.webhook_url_env: environment variable XAAS_SYNC_DEMO_ALERT_WEBHOOK is not set"),
        "{err}"
    );
    let out = env.run_xaas_env(&["worker", "all"], &[(HOOK_VAR, Some("http://hooks.example.com/T0/B0/sekrit"))]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("syncs.demo.alerts.webhook_url_env: the webhook URL it holds uses http to a non-loopback host"),
        "{err}"
    );
    assert!(!err.contains("sekrit"), "the URL is not shown: {err}");
    // Roles that send no alerts do not read it.
    let out = env.run_xaas_env(&["status"], &[(HOOK_VAR, None)]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_workers_one_sends_each_alert_and_the_other_takes_over_when_it_dies() {
    let mut env = Env::start("alerts-lease", Options::default()).await;
    configure(&env, "[syncs.demo.alerts]\nevents = [\"message_parked\"]");
    let hook = receiver(0).await;
    env.spawn_worker_env("all", "w1", &[(HOOK_VAR, Some(&hook.url))]);
    env.spawn_worker_env("all", "w2", &[(HOOK_VAR, Some(&hook.url))]);
    const SENDS: &str = "alerts: this process sends the alerts";
    let leader = |env: &Env| ["w1", "w2"].into_iter().filter(|w| env.log(w).contains(SENDS)).collect::<Vec<_>>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while leader(&env).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nobody took the alerts lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let requests = env.broker.names().requests();
    env.broker.publish_raw("", &requests, b"{first", props("poison-first")).await.unwrap();
    hook.wait_accepted(1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hook.accepted().len(), 1, "one process sent it: {:?}", hook.requests());
    let first = leader(&env);
    assert_eq!(first.len(), 1, "exactly one holder of the lease: {first:?}");
    let (dead, standby) = if first[0] == "w1" { ("w1", "w2") } else { ("w2", "w1") };

    env.kill_worker(dead);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !env.log(standby).contains(SENDS) {
        assert!(tokio::time::Instant::now() < deadline, "the standby never took over:\n{}", env.log(standby));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.broker.publish_raw("", &requests, b"{second", props("poison-second")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !hook.accepted().iter().any(|b| b["message_id"] == "poison-second") {
        assert!(tokio::time::Instant::now() < deadline, "no alert after the takeover: {:?}", hook.requests());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = hook.accepted();
    let count = |id: &str| accepted.iter().filter(|b| b["message_id"] == id).count();
    assert_eq!(count("poison-second"), 1, "{accepted:?}");
    // At least once: the new holder tells again what it cannot know was
    // sent (the last five minutes), with the same id for the receiver to drop.
    assert!((1..=2).contains(&count("poison-first")), "{accepted:?}");
    let ids: std::collections::BTreeSet<&str> =
        accepted.iter().filter(|b| b["message_id"] == "poison-first").map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "a repeat has the same id: {accepted:?}");
    env.finish().await;
}
