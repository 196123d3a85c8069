//! The parked queue: park, list without losing anything, show, replay,
//! purge.

mod common;

use common::{TestBroker, next, request};
use xaas_broker::{Replay, ack};
use xaas_core::{MessageId, SyncRequest};

#[tokio::test]
async fn park_list_show_replay_and_purge() {
    let t = TestBroker::start().await;
    let names = t.broker.names().clone();
    let (requests, pages) = (names.requests(), names.pages());

    // Park three messages from two queues.
    let msgs = [request("demo", "a"), request("demo", "b"), request("demo", "c")];
    for m in &msgs[..2] {
        t.broker.publish(&requests, m).await.unwrap();
    }
    t.broker.publish(&pages, &msgs[2]).await.unwrap();
    let mut rc = t.broker.consume(&requests, 5, "test").await.unwrap();
    let mut pc = t.broker.consume(&pages, 5, "test").await.unwrap();
    for _ in 0..2 {
        let m = next(&mut rc).await;
        t.broker.park(&m.delivery, &requests, "unknown version", "v=9").await.unwrap();
    }
    let m = next(&mut pc).await;
    t.broker.park(&m.delivery, &pages, "invalid", "bad json").await.unwrap();

    // Listing twice shows the same messages: listing loses nothing.
    let first = t.broker.parked_list(100).await.unwrap();
    let second = t.broker.parked_list(100).await.unwrap();
    let ids = |l: &[xaas_broker::ParkedMessage]| {
        let mut v: Vec<_> = l.iter().map(|p| p.message_id.clone().unwrap()).collect();
        v.sort();
        v
    };
    let mut expected: Vec<_> = msgs.iter().map(|m| m.message_id()).collect();
    expected.sort();
    assert_eq!(ids(&first), expected);
    assert_eq!(ids(&second), expected);
    assert_eq!(first.iter().map(|p| p.position).collect::<Vec<_>>(), vec![1, 2, 3]);
    let c = first.iter().find(|p| p.message_id.as_deref() == Some("req:demo:c")).unwrap();
    assert_eq!(c.origin_queue.as_deref(), Some(pages.as_str()));
    assert_eq!(c.reason, "invalid");
    assert_eq!(c.error.as_deref(), Some("bad json"));
    assert_eq!(c.attempt, 1);

    // A limited listing and show.
    assert_eq!(t.broker.parked_list(2).await.unwrap().len(), 2);
    let shown = t.broker.parked_get(2).await.unwrap().expect("position 2 exists");
    assert_eq!(shown.position, 2);
    assert!(t.broker.parked_get(4).await.unwrap().is_none());
    assert!(t.broker.parked_get(0).await.unwrap().is_none());

    // Replay one by id: it goes back to its own queue with a fresh count.
    let report = t.broker.parked_replay(Replay::MessageId("req:demo:c".into())).await.unwrap();
    assert_eq!(report.replayed, 1);
    assert!(report.skipped.is_empty());
    let back = next(&mut pc).await;
    assert_eq!(back.message_id().as_deref(), Some("req:demo:c"));
    assert_eq!(back.attempt(), 0);
    assert!(back.deaths().is_empty());
    assert_eq!(back.decode::<SyncRequest>().unwrap(), msgs[2]);
    assert!(ack(&back.delivery).await);
    assert_eq!(t.broker.parked_list(100).await.unwrap().len(), 2);

    // Replay all: both go back to the requests queue.
    let report = t.broker.parked_replay(Replay::All).await.unwrap();
    assert_eq!(report.replayed, 2);
    let mut got = vec![next(&mut rc).await, next(&mut rc).await];
    got.sort_by_key(|m| m.message_id());
    assert_eq!(got[0].message_id().as_deref(), Some("req:demo:a"));
    assert_eq!(got[1].message_id().as_deref(), Some("req:demo:b"));
    assert!(t.broker.parked_list(100).await.unwrap().is_empty());

    // Park them again and purge.
    for m in &got {
        t.broker.park(&m.delivery, &requests, "again", "x").await.unwrap();
    }
    assert_eq!(t.broker.parked_purge().await.unwrap(), 2);
    assert!(t.broker.parked_list(100).await.unwrap().is_empty());

    rc.close().await;
    pc.close().await;
    t.cleanup().await;
}

/// A body over `max_message_bytes` cannot be read; it must still be parked
/// with its reason (not bounce between the queue and a consumer that can
/// neither read nor park it until the delivery limit drops it in parked
/// without one). Also replayable as it is.
#[tokio::test]
async fn an_oversize_message_is_parked_with_its_reason_and_can_be_replayed() {
    let t = TestBroker::start().await;
    let requests = t.broker.names().requests();
    let limit = t.config().max_message_bytes;
    let mut big_cfg = t.config().clone();
    big_cfg.max_message_bytes = limit * 4;
    big_cfg.connection_name.push_str("-big");
    let big = xaas_broker::Broker::connect(big_cfg).await.unwrap();
    let body = format!(r#"{{"sync":"demo","pad":"{}"}}"#, "x".repeat(limit));
    let props = xaas_broker::BasicProperties::default().with_message_id("oversize".into());
    big.publish_raw("", &requests, body.as_bytes(), props).await.unwrap();

    let mut c = t.broker.consume(&requests, 5, "test").await.unwrap();
    let m = next(&mut c).await;
    let err = m.decode::<SyncRequest>().unwrap_err();
    assert!(matches!(err, xaas_broker::DecodeError::Oversize { .. }), "{err}");
    t.broker.park(&m.delivery, &requests, "undecodable", &err.to_string()).await.unwrap();

    assert_eq!(t.broker.parked_count().await.unwrap(), 1);
    let parked = t.broker.parked_list(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(t.broker.parked_count().await.unwrap(), 1, "listing leaves it parked");
    assert_eq!(parked[0].reason, "undecodable");
    assert_eq!(parked[0].body.len(), body.len());
    assert!(parked[0].error.as_deref().unwrap().contains("over the"), "{:?}", parked[0].error);

    let report = t.broker.parked_replay(Replay::All).await.unwrap();
    assert_eq!(report.replayed, 1, "{report:?}");
    assert_eq!(t.broker.parked_count().await.unwrap(), 0);
    let back = next(&mut c).await;
    assert_eq!(back.body().len(), body.len(), "replayed whole to its queue");
    assert!(ack(&back.delivery).await);
    c.close().await;
    big.close().await;
    t.cleanup().await;
}
