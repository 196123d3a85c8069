//! Confirmed publishing: properties, unroutable messages, size limits, and
//! connection errors that say what to check.

mod common;

use std::time::Duration;

use common::{TestBroker, next, request};
use xaas_broker::{Broker, BrokerConfig, BrokerError};
use xaas_core::{MessageId, SyncRequest};

#[tokio::test]
async fn round_trip_keeps_id_persistence_and_content_type() {
    let t = TestBroker::start().await;
    let q = t.broker.names().requests();
    let msg = request("demo", "run-1");
    t.broker.publish(&q, &msg).await.unwrap();

    let mut c = t.broker.consume(&q, 5, "test").await.unwrap();
    let got = next(&mut c).await;
    assert_eq!(got.message_id().as_deref(), Some(msg.message_id().as_str()));
    assert_eq!(got.message_id().as_deref(), Some("req:demo:run-1"));
    let p = &got.delivery.properties;
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert_eq!(got.attempt(), 0);
    assert!(!got.redelivered());
    assert_eq!(got.queue(), q);
    let back: SyncRequest = got.decode().unwrap();
    assert_eq!(back, msg);
    assert!(xaas_broker::ack(&got.delivery).await);
    c.close().await;
    t.cleanup().await;
}

#[tokio::test]
async fn publishing_to_a_missing_queue_is_an_error() {
    let t = TestBroker::start().await;
    let missing = format!("{}.nope", t.broker.names().prefix());
    let err = t.broker.publish(&missing, &request("demo", "r")).await.expect_err("unroutable");
    assert!(matches!(err, BrokerError::Unroutable { .. }), "{err:?}");
    assert!(err.to_string().contains("NO_ROUTE"), "{err}");

    // The publisher channel is still usable afterwards.
    t.broker.publish(&t.broker.names().requests(), &request("demo", "r")).await.unwrap();
    t.cleanup().await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_an_error_and_the_publisher_recovers() {
    let t = TestBroker::start().await;
    let err = t
        .broker
        .publish_raw("no-such-exchange-xaas", "x", b"{}", Default::default())
        .await
        .expect_err("missing exchange");
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    // The broker closed the publisher channel; the next publish opens another.
    t.broker.publish(&t.broker.names().requests(), &request("demo", "r")).await.unwrap();
    t.cleanup().await;
}

#[tokio::test]
async fn oversize_bodies_are_refused_before_sending() {
    let t = TestBroker::start().await;
    let limit = t.config().max_message_bytes;
    let body = vec![b'x'; limit + 1];
    let err =
        t.broker.publish_raw("", &t.broker.names().requests(), &body, Default::default()).await.expect_err("too large");
    assert!(matches!(err, BrokerError::TooLarge { size, .. } if size == limit + 1), "{err:?}");
    assert!(!err.is_retryable());
    t.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_broker_gives_a_clear_error_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let mut cfg = BrokerConfig::new("amqp://guest:topsecret@127.0.0.1:1/%2f".parse().unwrap());
    cfg.connect_timeout = Duration::from_secs(3);
    let err = Broker::connect(cfg).await.expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
    assert!(text.contains("AMQP_URL"), "{text}");
    assert!(text.contains("refused"), "the TCP probe says why: {text}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn the_first_address_that_answers_is_connected_to() {
    // Nothing listens on port 1; the test broker comes second.
    let list = format!("amqp://guest:topsecret@127.0.0.1:1/%2f , {}", common::url());
    let mut cfg = BrokerConfig::new(list.parse().unwrap());
    cfg.connect_timeout = Duration::from_secs(10);
    let broker = Broker::connect(cfg).await.expect("the second address answers");
    assert!(broker.is_connected());
    broker.close().await;

    // None answers: the error names every address, and why each failed.
    let list = "amqp://guest:topsecret@127.0.0.1:1/%2f;amqps://guest:topsecret@127.0.0.1:2/%2f";
    let mut cfg = BrokerConfig::new(list.parse().unwrap());
    cfg.connect_timeout = Duration::from_secs(1);
    let text = Broker::connect(cfg).await.expect_err("nothing listens on ports 1 and 2").to_string();
    assert!(text.contains("amqp://***@127.0.0.1:1/%2f, amqps://***@127.0.0.1:2/%2f"), "{text}");
    assert!(text.contains("TCP connect to 127.0.0.1:1:") && text.contains("TCP connect to 127.0.0.1:2:"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
}
