//! Connection recovery: the broker closes our connection (as on a broker
//! restart or a network cut); publishing and consuming carry on, the
//! unacknowledged delivery comes again, its old acknowledgement is refused.
//!
//! Needs `rabbitmqctl` for the local broker (it closes only this test's
//! connection, found by its connection name, never anyone else's).

mod common;

use common::{TestBroker, next, request, within};
use xaas_broker::ack;

/// Closes the broker-side connection whose client-provided name is `name`.
async fn close_connection_named(name: &str) {
    let list = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "--no-table-headers", "list_connections", "pid", "client_properties"])
        .output()
        .await
        .expect("this test needs rabbitmqctl on PATH, talking to the broker at AMQP_URL");
    assert!(list.status.success(), "rabbitmqctl list_connections: {}", String::from_utf8_lossy(&list.stderr));
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    let listing = String::from_utf8_lossy(&list.stdout);
    let pid = listing
        .lines()
        .find(|l| l.contains(&needle))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no connection named {name} in:\n{listing}"))
        .to_owned();
    let closed = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "close_connection", &pid, "xaas-broker recovery test"])
        .output()
        .await
        .unwrap();
    assert!(closed.status.success(), "rabbitmqctl close_connection: {}", String::from_utf8_lossy(&closed.stderr));
}

#[tokio::test]
async fn publishing_and_consuming_survive_a_closed_connection() {
    let t = TestBroker::start().await;
    let q = t.broker.names().requests();
    let mut c = t.broker.consume(&q, 5, "test").await.unwrap();
    t.broker.publish(&q, &request("demo", "before")).await.unwrap();
    let held = next(&mut c).await;
    assert!(!held.redelivered());

    close_connection_named(&t.config().connection_name).await;

    // Publishing works again once the connection is back (re-sent if the
    // first try hit the closed connection).
    within("a publish across recovery", t.broker.publish(&q, &request("demo", "after"))).await.unwrap();

    // The same consumer stream goes on: the unacknowledged message comes
    // again, marked redelivered, and the new one arrives.
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = next(&mut c).await;
        got.push((m.message_id().unwrap(), m.redelivered()));
        assert!(ack(&m.delivery).await, "acks on the recovered channel work");
    }
    got.sort();
    assert_eq!(got, vec![("req:demo:after".to_owned(), false), ("req:demo:before".to_owned(), true)]);

    // The delivery from before the cut cannot be acknowledged any more.
    assert!(!ack(&held.delivery).await);
    assert!(t.broker.is_connected());

    c.close().await;
    t.cleanup().await;
}
