//! Poison messages and parked-message management, against the real binary:
//! a message no worker can process is parked in `<prefix>.parked` with the
//! reason in its headers, the consumers carry on, and `xaas parked
//! list|show|replay|purge` lets an operator deal with what was parked.

mod common;

use std::time::Duration;

use common::{Env, Options, json_report};
use serde_json::json;
use xaas_broker::BasicProperties;
use xaas_core::{EventKind, RunId, SyncName};

/// The workers' limit on a message body (the broker crate's default).
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

fn props(message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "xaas failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_on_every_queue_is_parked_with_its_reason_and_the_workers_carry_on() {
    let mut env = Env::start("poison", Options::default()).await;
    let sync = SyncName::parse("demo").unwrap();
    env.broker.declare_sync(&sync).await.unwrap();
    env.spawn_worker("all", "worker");

    let names = env.broker.names().clone();
    let queues = [names.requests(), names.fetch(), names.pages(), names.batches(&sync)];
    // Publishes bodies the workers refuse to read, straight onto each queue.
    let raw = env.broker_with_limit(4 * MAX_MESSAGE_BYTES).await;
    let oversize = format!(r#"{{"v":1,"sync":"demo","pad":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
    let poisons: [(&str, Vec<u8>, &str); 3] = [
        ("json", b"{this is not json".to_vec(), "not valid JSON"),
        ("version", br#"{"v":99,"run_id":"r-99","sync":"demo","mode":"full"}"#.to_vec(), "schema version 99"),
        ("oversize", oversize.into_bytes(), &format!("over the {MAX_MESSAGE_BYTES}-byte limit")),
    ];
    let mut expected = Vec::new();
    for queue in &queues {
        for (kind, body, error) in &poisons {
            let id = format!("poison-{kind}-{queue}");
            raw.publish_raw("", queue, body, props(&id)).await.unwrap();
            expected.push((id, queue.clone(), error.to_string()));
        }
    }

    let parked = env.wait_parked(expected.len(), Duration::from_secs(120)).await;
    assert_eq!(parked.len(), expected.len(), "exactly the poison messages are parked");
    for (id, queue, error) in &expected {
        let p = parked
            .iter()
            .find(|p| p.message_id.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{id} was not parked"));
        assert_eq!(p.origin_queue.as_deref(), Some(queue.as_str()), "{id}: origin queue in x-origin-queue");
        assert_eq!(p.reason, "undecodable", "{id}: parked by the consumer, not by the delivery limit");
        let got = p.error.as_deref().unwrap_or_default();
        assert!(got.contains(error.as_str()), "{id}: x-parked-error {got:?} should say {error:?}");
        assert!(p.parked_at.is_some(), "{id}: x-parked-at");
    }
    assert!(env.worker_running("worker"), "the worker survived the poison");

    // The consumers carry on: a normal run afterwards completes exactly.
    let report = json_report(&env.enqueue_wait(&[]).await);
    assert_eq!(report["state"]["state"], "completed", "{report}");
    assert_eq!(report["upserted"], 299);
    assert_eq!(env.okta_users().await.len(), 299);

    // The operator's view: one line per parked message, origin and reason.
    let list = stdout(&env.run_xaas(&["parked", "list"]).await);
    assert_eq!(list.lines().count(), expected.len(), "{list}");
    for queue in &queues {
        assert_eq!(list.lines().filter(|l| l.contains(&format!(" {queue} "))).count(), 3, "{queue} in:\n{list}");
    }
    assert!(list.lines().all(|l| l.contains("undecodable")), "{list}");

    // Replaying without fixing the cause sends each back to its queue,
    // where it is parked again, once: no replay loop.
    let replay = stdout(&env.run_xaas(&["parked", "replay", "--all"]).await);
    assert!(replay.contains(&format!("replayed {}", expected.len())), "{replay}");
    let again = env.wait_parked(expected.len(), Duration::from_secs(120)).await;
    assert_eq!(again.len(), expected.len());
    assert!(again.iter().all(|p| p.reason == "undecodable"), "parked again by the consumers");
    assert!(
        again.iter().all(|p| xaas_broker::headers::get_str(&p.properties, xaas_broker::headers::REPLAYED_AT).is_some()),
        "each parked copy is the replayed one"
    );

    let purge = stdout(&env.run_xaas(&["parked", "purge"]).await);
    assert!(purge.contains(&format!("purged {}", expected.len())), "{purge}");
    assert!(stdout(&env.run_xaas(&["parked", "list"]).await).contains("nothing is parked"));
    raw.close().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_crashes_its_handler_is_parked_by_the_delivery_limit_and_replayed_once_fixed() {
    let mut env = Env::start("panic", Options::default()).await;
    let needle = format!("crash-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    env.spawn_worker_env("all", "crashy", &[("XAAS_PANIC_ON", Some(&needle))]);

    // A valid request that this build's handler crashes on.
    let run_id = RunId::generate();
    let message_id = format!("req-{needle}");
    let body = json!({"v": 1, "sync": "demo", "mode": "full", "run_id": run_id}).to_string();
    let requests = env.broker.names().requests();
    env.broker.publish_raw("", &requests, body.as_bytes(), props(&message_id)).await.unwrap();

    let parked = env.wait_parked(1, Duration::from_secs(120)).await;
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!(p.message_id.as_deref(), Some(message_id.as_str()));
    assert_eq!(p.reason, "delivery_limit", "parked by the quorum queue's delivery limit");
    assert_eq!(p.origin_queue.as_deref(), Some(requests.as_str()));
    assert_eq!(p.body, body.as_bytes(), "parked as it was sent");

    // Bounded, not looped: delivered once plus the delivery limit (5), and
    // no more afterwards; the worker process stayed up throughout.
    let crashes = || env.log("crashy").matches("XAAS_PANIC_ON test hook").count();
    assert_eq!(crashes(), 6, "handler runs before parking:\n{}", env.log("crashy"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(crashes(), 6, "the parked message is not delivered again");
    assert!(env.worker_running("crashy"), "a panicking handler does not take the worker down");
    assert!(!env.events().await.iter().any(|e| e.run_id == run_id), "the crashing request started nothing");

    // What an operator sees.
    let list = stdout(&env.run_xaas(&["parked", "list"]).await);
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains(&requests) && list.contains("delivery_limit"), "{list}");
    let show = stdout(&env.run_xaas(&["parked", "show", "1"]).await);
    for needle in [message_id.as_str(), requests.as_str(), "delivery_limit", run_id.as_str()] {
        assert!(show.contains(needle), "show lacks {needle:?}:\n{show}");
    }

    // Fix the cause (a build without the crash), then replay: processed.
    assert_eq!(env.terminate_worker("crashy").and_then(|s| s.code()), Some(0), "SIGTERM exits 0");
    env.spawn_worker("all", "fixed");
    let replay = stdout(&env.run_xaas(&["parked", "replay", "1"]).await);
    assert!(replay.contains("replayed 1"), "{replay}");
    env.wait_for_events("the replayed run to end", Duration::from_secs(120), |events| {
        events.iter().any(|e| {
            e.run_id == run_id && matches!(e.kind, EventKind::RunCompleted { .. } | EventKind::RunFailed { .. })
        })
    })
    .await;
    let events = env.events().await;
    assert!(
        events.iter().any(|e| e.run_id == run_id && matches!(e.kind, EventKind::RunCompleted { .. })),
        "the replayed request ran to completion"
    );
    assert_eq!(env.okta_users().await.len(), 299);
    assert!(stdout(&env.run_xaas(&["parked", "list"]).await).contains("nothing is parked"));

    // Purge drops what the operator no longer wants.
    env.broker.publish_raw("", &requests, b"{not json", props("poison-to-purge")).await.unwrap();
    env.wait_parked(1, Duration::from_secs(60)).await;
    let purge = stdout(&env.run_xaas(&["parked", "purge"]).await);
    assert!(purge.contains("purged 1"), "{purge}");
    assert!(stdout(&env.run_xaas(&["parked", "list"]).await).contains("nothing is parked"));
    env.finish().await;
}
