//! Decoding real deliveries: invalid JSON, unknown versions and oversize
//! bodies are told apart, so a worker can park each with its reason.

mod common;

use common::{TestBroker, config, next};
use xaas_broker::{DecodeError, ack};
use xaas_core::SyncRequest;

#[tokio::test]
async fn decode_tells_the_three_failures_apart() {
    let t = TestBroker::start().await;
    let q = t.broker.names().requests();
    // A reader with a smaller limit than the writer, to receive an oversize body.
    let mut small = config();
    small.prefix = t.config().prefix.clone();
    small.max_message_bytes = 100;
    let reader = xaas_broker::Broker::connect(small).await.unwrap();

    let big = format!(r#"{{"v":1,"sync":"demo","pad":"{}"}}"#, "x".repeat(200));
    for body in [&b"{oops"[..], br#"{"v":7,"sync":"demo"}"#, big.as_bytes(), br#"{"v":1,"sync":"demo"}"#] {
        t.broker.publish_raw("", &q, body, Default::default()).await.unwrap();
    }
    let mut c = reader.consume(&q, 10, "test").await.unwrap();
    let got: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(next(&mut c).await);
        }
        v
    };
    assert!(matches!(got[0].decode::<SyncRequest>(), Err(DecodeError::InvalidJson(_))));
    assert!(matches!(
        got[1].decode::<SyncRequest>(),
        Err(DecodeError::UnknownVersion { found: 7, supported: xaas_core::MESSAGE_VERSION })
    ));
    assert!(matches!(got[2].decode::<SyncRequest>(), Err(DecodeError::Oversize { limit: 100, .. })));
    assert_eq!(got[3].decode::<SyncRequest>().unwrap().sync.as_str(), "demo");
    for m in &got {
        assert!(ack(&m.delivery).await);
    }
    c.close().await;
    reader.close().await;
    t.cleanup().await;
}
