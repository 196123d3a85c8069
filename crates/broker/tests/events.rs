//! The events stream: appended with confirms, read back in order from any
//! offset, undecodable entries skipped.

mod common;

use common::{TestBroker, within};
use time::OffsetDateTime;
use xaas_broker::StreamOffset;
use xaas_core::{EventKind, RunEvent, RunId, SyncName};

fn event(seq: u32) -> RunEvent {
    RunEvent::new(
        RunId::parse("run-events").unwrap(),
        SyncName::parse("demo").unwrap(),
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + i64::from(seq)).unwrap(),
        EventKind::PageFetched { seq, users: seq * 10, removed: 0, last: seq == 9 },
    )
}

#[tokio::test]
async fn events_are_read_back_in_order_from_any_offset() {
    let t = TestBroker::start().await;
    let events: Vec<RunEvent> = (0..10).map(event).collect();
    for (i, e) in events.iter().enumerate() {
        t.broker.publish_event(e).await.unwrap();
        if i == 4 {
            // Something that is not an event this build understands.
            t.broker.publish_raw("", &t.broker.names().events(), b"not json", Default::default()).await.unwrap();
            t.broker
                .publish_raw("", &t.broker.names().events(), br#"{"v":99,"type":"Future"}"#, Default::default())
                .await
                .unwrap();
        }
    }

    let mut stream = t.broker.events_since(StreamOffset::First).await.unwrap();
    let mut read = Vec::new();
    for _ in 0..10 {
        read.push(within("an event", stream.next()).await.unwrap().unwrap());
    }
    stream.close().await;
    let offsets: Vec<u64> = read.iter().map(|(o, _)| *o).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert_eq!(read.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(), events);

    // From the offset of the seventh event on.
    let (seventh, _) = read[6];
    let mut stream = t.broker.events_since(StreamOffset::Offset(seventh)).await.unwrap();
    let mut tail = Vec::new();
    for _ in 0..4 {
        tail.push(within("an event", stream.next()).await.unwrap().unwrap().1);
    }
    stream.close().await;
    assert_eq!(tail, events[6..].to_vec());

    // read_all_events reads up to the moment of the call, everything included.
    let all = t.broker.read_all_events().await.unwrap();
    assert_eq!(all, events);
    t.cleanup().await;
}

#[tokio::test]
async fn a_reader_from_next_sees_only_new_events_and_an_empty_stream_reads_empty() {
    let t = TestBroker::start().await;
    assert!(t.broker.read_all_events().await.unwrap().is_empty());

    t.broker.publish_event(&event(0)).await.unwrap();
    let mut stream = t.broker.events_since(StreamOffset::Next).await.unwrap();
    t.broker.publish_event(&event(1)).await.unwrap();
    let (_, e) = within("an event", stream.next()).await.unwrap().unwrap();
    assert_eq!(e, event(1));
    stream.close().await;
    t.cleanup().await;
}
