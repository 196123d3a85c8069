//! Declaring the topology is idempotent and refuses silent drift.

mod common;

use common::TestBroker;
use xaas_broker::{Broker, BrokerError};

#[tokio::test]
async fn declare_twice_and_from_two_instances() {
    let mut t = TestBroker::start().await;
    t.broker.declare().await.expect("second declare");
    let sync = t.sync("demo").await;
    t.broker.declare_sync(&sync).await.expect("second declare_sync");

    let other = Broker::connect(t.config().clone()).await.unwrap();
    other.declare().await.expect("declare from a second instance");
    other.declare_sync(&sync).await.expect("declare_sync from a second instance");

    // Every queue is really there: consuming a missing queue fails.
    let names = t.broker.names().clone();
    for q in [names.requests(), names.fetch(), names.pages(), names.parked(), names.batches(&sync)] {
        let c = other.consume(&q, 1, "probe").await.unwrap_or_else(|e| panic!("{q}: {e}"));
        c.close().await;
    }
    other.close().await;
    t.cleanup().await;
}

#[tokio::test]
async fn redeclaring_with_other_arguments_is_a_permanent_error() {
    let t = TestBroker::start().await;
    let mut cfg = t.config().clone();
    cfg.delivery_limit += 1;
    let drifted = Broker::connect(cfg).await.unwrap();
    let err = drifted.declare().await.expect_err("a different x-delivery-limit must be refused");
    assert!(matches!(err, BrokerError::Topology { .. }), "{err:?}");
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
    drifted.close().await;
    t.cleanup().await;
}

#[tokio::test]
async fn consuming_a_missing_queue_fails() {
    let t = TestBroker::start().await;
    let missing = format!("{}.nope", t.broker.names().prefix());
    let err = t.broker.consume(&missing, 1, "probe").await.err().expect("missing queue");
    assert!(!err.is_retryable(), "{err}");
    t.cleanup().await;
}
