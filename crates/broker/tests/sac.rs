//! Single active consumer on the batches queue: one uploader owns a sync,
//! another stands by and takes over.

mod common;

use common::{TestBroker, next};
use xaas_broker::ack;
use xaas_core::{Batch, MessageId, Op, RunId, RunOptions};

fn batch(sync: &xaas_core::SyncName, page_seq: u32) -> Batch {
    Batch {
        v: xaas_core::MESSAGE_VERSION,
        run_id: RunId::parse("run-sac").unwrap(),
        sync: sync.clone(),
        options: RunOptions::default(),
        page_seq,
        part: 0,
        parts: 1,
        total_pages: None,
        op: Op::Upsert,
        profiles: Vec::new(),
        rejected: Vec::new(),
        delta_link: None,
        copy: Default::default(),
        parent: None,
    }
}

#[tokio::test]
async fn only_one_consumer_is_active_and_the_standby_takes_over() {
    let mut t = TestBroker::start().await;
    let sync = t.sync("sac-demo").await;
    let q = t.broker.names().batches(&sync);

    // Two "uploaders", each with its own connection as in production.
    let other = xaas_broker::Broker::connect(t.config().clone()).await.unwrap();
    let mut active = t.broker.consume(&q, 20, "uploader-1").await.unwrap();
    let mut standby = other.consume(&q, 20, "uploader-2").await.unwrap();

    for seq in 0..10 {
        t.broker.publish(&q, &batch(&sync, seq)).await.unwrap();
    }
    // All ten go to the first consumer, in order; it acks eight and still
    // holds the last two when it goes away.
    let mut held = Vec::new();
    for seq in 0..10 {
        let m = next(&mut active).await;
        assert_eq!(m.message_id(), Some(batch(&sync, seq).message_id()));
        if seq < 8 {
            assert!(ack(&m.delivery).await);
        } else {
            held.push(m);
        }
    }
    active.close().await;
    drop(held);

    for seq in 10..15 {
        t.broker.publish(&q, &batch(&sync, seq)).await.unwrap();
    }
    // The standby received nothing while the first was active: its first
    // deliveries are the two the first one held, redelivered, then the new ones.
    let mut got = Vec::new();
    for _ in 0..7 {
        let m = next(&mut standby).await;
        got.push((m.decode::<Batch>().unwrap().page_seq, m.redelivered()));
        assert!(ack(&m.delivery).await);
    }
    assert_eq!(got, vec![(8, true), (9, true), (10, false), (11, false), (12, false), (13, false), (14, false)]);
    standby.close().await;
    other.close().await;
    t.cleanup().await;
}
