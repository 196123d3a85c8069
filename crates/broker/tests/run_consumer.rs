//! The generic consume loop: outcomes, panics, shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TestBroker, next, request, within};
use tokio_util::sync::CancellationToken;
use xaas_broker::{Outcome, ack, run_consumer};
use xaas_core::{MessageId, SyncRequest};

/// Polls the parked queue until it holds `n` messages (guarded by PATIENCE).
async fn wait_parked(t: &TestBroker, n: usize) -> Vec<xaas_broker::ParkedMessage> {
    within("messages to be parked", async {
        loop {
            let l = t.broker.parked_list(100).await.unwrap();
            if l.len() >= n {
                return l;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_handler_that_always_panics_gets_its_message_parked_by_the_delivery_limit() {
    let t = TestBroker::start().await;
    let q = t.broker.names().requests();
    let msg = request("demo", "crash");
    t.broker.publish(&q, &msg).await.unwrap();

    let calls = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let runner = {
        let (b, q, calls, shutdown) = (t.broker.clone(), q.clone(), calls.clone(), shutdown.clone());
        tokio::spawn(async move {
            run_consumer(&b, &q, 4, 2, shutdown, move |_m| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    panic!("handler bug");
                }
            })
            .await
        })
    };

    let parked = wait_parked(&t, 1).await;
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!(p.message_id.as_deref(), Some(msg.message_id().as_str()));
    assert_eq!(p.reason, "delivery_limit");
    assert_eq!(p.origin_queue.as_deref(), Some(q.as_str()));
    assert!(p.deaths.iter().any(|d| d.reason == "delivery_limit" && d.queue == q), "{:?}", p.deaths);

    shutdown.cancel();
    within("run_consumer to stop", runner).await.unwrap().unwrap();
    // Delivered once, then redelivered `delivery_limit` times (RabbitMQ 3.10
    // and 4.x count requeueing rejects alike), then dead-lettered: a bounded
    // number of handler calls, not a loop.
    assert_eq!(calls.load(Ordering::SeqCst), t.config().delivery_limit as usize + 1);
    t.cleanup().await;
}

#[tokio::test]
async fn outcomes_are_applied_and_shutdown_requeues_what_was_not_started() {
    let t = TestBroker::start().await;
    let q = t.broker.names().pages();
    // "ok-*" are acked, "park" is parked, "retry" retried until parked.
    for run in ["ok-1", "park", "retry", "ok-2"] {
        t.broker.publish(&q, &request("demo", run)).await.unwrap();
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, u32)>::new()));
    let shutdown = CancellationToken::new();
    let runner = {
        let (b, q, seen, shutdown) = (t.broker.clone(), q.clone(), seen.clone(), shutdown.clone());
        tokio::spawn(async move {
            run_consumer(&b, &q, 10, 3, shutdown, move |m| {
                let seen = seen.clone();
                async move {
                    let req: SyncRequest = match m.decode() {
                        Ok(r) => r,
                        Err(e) => return Outcome::Park { reason: "undecodable".into(), error: e.to_string() },
                    };
                    let run = req.run_id.unwrap().to_string();
                    seen.lock().unwrap().push((run.clone(), m.attempt()));
                    match run.as_str() {
                        "park" => Outcome::Park { reason: "bad".into(), error: "permanent".into() },
                        "retry" => Outcome::Retry { error: "transient".into() },
                        _ => Outcome::Ack,
                    }
                }
            })
            .await
        })
    };

    let parked = wait_parked(&t, 2).await;
    let mut reasons: Vec<_> = parked.iter().map(|p| (p.message_id.clone().unwrap(), p.reason.clone())).collect();
    reasons.sort();
    assert_eq!(reasons[0], ("req:demo:park".into(), "bad".into()));
    assert_eq!(reasons[1].0, "req:demo:retry");
    assert!(reasons[1].1.starts_with("gave up"), "{}", reasons[1].1);

    shutdown.cancel();
    within("run_consumer to stop", runner).await.unwrap().unwrap();

    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let expected: Vec<(String, u32)> = vec![
        ("ok-1".into(), 0),
        ("ok-2".into(), 0),
        ("park".into(), 0),
        ("retry".into(), 0),
        ("retry".into(), 1),
        ("retry".into(), 2),
    ];
    assert_eq!(seen, expected);

    // After shutdown a message published meanwhile is still in the queue,
    // and the acked ones are gone: the next consumer sees only it.
    t.broker.publish(&q, &request("demo", "after")).await.unwrap();
    let mut c = t.broker.consume(&q, 10, "check").await.unwrap();
    let m = next(&mut c).await;
    assert_eq!(m.message_id().as_deref(), Some("req:demo:after"));
    assert!(ack(&m.delivery).await);
    c.close().await;
    t.cleanup().await;
}

#[tokio::test]
async fn shutdown_lets_running_handlers_finish_and_requeues_prefetched_ones() {
    let t = TestBroker::start().await;
    let q = t.broker.names().fetch();
    for i in 0..5 {
        t.broker.publish(&q, &request("demo", &format!("m{i}"))).await.unwrap();
    }
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let runner = {
        let (b, q, shutdown) = (t.broker.clone(), q.clone(), shutdown.clone());
        let (started, release, finished) = (started.clone(), release.clone(), finished.clone());
        tokio::spawn(async move {
            // One at a time, all five prefetched.
            run_consumer(&b, &q, 5, 1, shutdown, move |_m| {
                let (started, release, finished) = (started.clone(), release.clone(), finished.clone());
                async move {
                    started.notify_one();
                    release.notified().await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Outcome::Ack
                }
            })
            .await
        })
    };
    within("the first handler to start", started.notified()).await;
    shutdown.cancel();
    // The running handler is not cut short: let it finish now.
    release.notify_one();
    within("run_consumer to stop", runner).await.unwrap().unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 1);

    // The other four were requeued, none lost, the finished one acked.
    let mut c = t.broker.consume(&q, 10, "check").await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let m = next(&mut c).await;
        ids.push(m.message_id().unwrap());
        assert!(ack(&m.delivery).await);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{ids:?}");
    t.broker.publish(&q, &request("demo", "marker")).await.unwrap();
    assert_eq!(next(&mut c).await.message_id().as_deref(), Some("req:demo:marker"));
    c.close().await;
    t.cleanup().await;
}
