//! Delayed retries go through the delay tiers and come back to the queue
//! they came from; out of attempts, the message is parked.

mod common;

use common::{TestBroker, next, request};
use xaas_broker::headers::{self, ATTEMPT, LAST_ERROR, ORIGIN_QUEUE, PARKED_AT, PARKED_ERROR, PARKED_REASON};
use xaas_broker::{RetryDecision, ack};
use xaas_core::SyncRequest;

#[tokio::test]
async fn a_retried_message_comes_back_through_its_tier_then_is_parked() {
    let t = TestBroker::start().await;
    let names = t.broker.names().clone();
    let tiers = t.config().retry_tiers.clone();
    assert_eq!(t.config().max_attempts, 2);

    // Use the fetch queue, to show that retries return to their own queue
    // and not to a fixed one.
    let q = names.fetch();
    let msg = request("demo", "run-retry");
    t.broker.publish(&q, &msg).await.unwrap();
    let mut c = t.broker.consume(&q, 5, "test").await.unwrap();

    let first = next(&mut c).await;
    assert_eq!(first.attempt(), 0);
    let d = t.broker.retry_later(&first.delivery, &q, "graph said 503").await.unwrap();
    assert_eq!(d, RetryDecision::Retried { attempt: 1, tier: tiers[0] });

    let second = next(&mut c).await;
    assert_eq!(second.attempt(), 1);
    assert_eq!(second.message_id(), first.message_id());
    assert_eq!(second.decode::<SyncRequest>().unwrap(), msg);
    let p = &second.delivery.properties;
    assert_eq!(headers::get_str(p, LAST_ERROR).as_deref(), Some("graph said 503"));
    assert_eq!(headers::get_str(p, ORIGIN_QUEUE).as_deref(), Some(q.as_str()));
    // It really waited in the first tier and expired from there.
    let deaths = second.deaths();
    assert_eq!(deaths.len(), 1, "{deaths:?}");
    assert_eq!(deaths[0].queue, names.retry(tiers[0]));
    assert_eq!(deaths[0].reason, "expired");

    let d = t.broker.retry_later(&second.delivery, &q, "graph said 503 again").await.unwrap();
    assert_eq!(d, RetryDecision::Retried { attempt: 2, tier: tiers[1] });

    let third = next(&mut c).await;
    assert_eq!(third.attempt(), 2);
    let deaths = third.deaths();
    assert_eq!(deaths.len(), 1, "our republish drops the old x-death: {deaths:?}");
    assert_eq!(deaths[0].queue, names.retry(tiers[1]));

    let d = t.broker.retry_later(&third.delivery, &q, "still 503").await.unwrap();
    assert_eq!(d, RetryDecision::Parked);

    let parked = t.broker.parked_list(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!(p.message_id, first.message_id());
    assert_eq!(p.origin_queue.as_deref(), Some(q.as_str()));
    assert_eq!(p.error.as_deref(), Some("still 503"));
    assert!(p.reason.contains("gave up after 2 retries"), "{}", p.reason);
    assert_eq!(p.attempt, 3);
    assert!(p.parked_at.is_some());
    let h = &p.properties;
    for key in [PARKED_REASON, PARKED_ERROR, PARKED_AT, ORIGIN_QUEUE] {
        assert!(headers::get_str(h, key).is_some(), "{key} missing");
    }
    assert_eq!(headers::get_u64(h, ATTEMPT), Some(3));
    assert_eq!(serde_json::from_slice::<SyncRequest>(&p.body).unwrap(), msg);

    // Nothing else is left in the work queue: the originals were acked.
    t.broker.publish(&q, &request("demo", "marker")).await.unwrap();
    let marker = next(&mut c).await;
    assert_eq!(marker.message_id().as_deref(), Some("req:demo:marker"));
    assert!(ack(&marker.delivery).await);
    c.close().await;
    t.cleanup().await;
}
