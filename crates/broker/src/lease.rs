//! A lease: which one of several processes does a job that must be done
//! once per deployment (sending alerts), with the broker as the arbiter.
//!
//! The lease is the queue `<prefix>.lease.<name>`, with a single active
//! consumer, holding a token message. Every candidate consumes it with a
//! prefetch of one; the broker delivers only to the active consumer, so the
//! process holding a token delivery (never acknowledged) holds the lease.
//! When it dies or its connection drops, the broker returns the token and
//! makes the next consumer active, which receives it: a failover with no
//! clock and no election of our own. A candidate that finds no ready token
//! publishes one; two that race publish two, which is harmless: only the
//! active consumer ever receives a token, and it holds just one.
//!
//! The queue is durable and auto-deleted once its last consumer goes, so a
//! deployment that is torn down leaves nothing behind.

use futures_lite::StreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::broker::{Broker, close_quietly, json_props};
use crate::consumer::{Consumer, Incoming};
use crate::error::BrokerError;

/// The lease `name`, held.
pub struct Lease {
    consumer: Consumer,
    _token: Incoming,
}

impl Broker {
    /// Waits until this process holds the lease `name`. A connection
    /// interruption before that ends the wait with an error; call again.
    pub async fn acquire_lease(&self, name: &str) -> Result<Lease, BrokerError> {
        let queue = format!("{}.lease.{name}", self.names().prefix());
        let ch = self.channel(format!("opening a channel to declare {queue}")).await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("classic")));
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        let options = QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() };
        let declared = ch
            .queue_declare(queue.as_str().into(), options, args)
            .await
            .map_err(BrokerError::topology(format!("queue {queue}")));
        close_quietly(ch).await;
        if declared?.message_count() == 0 {
            let id = format!("lease-token:{}", uuid::Uuid::new_v4());
            self.publish_raw("", &queue, b"{}", json_props(id)).await?;
        }
        let tag = format!("{}/lease/{}", self.config().connection_name, uuid::Uuid::new_v4().simple());
        let mut consumer = self.consume_once(&queue, 1, &tag).await?;
        match consumer.next().await {
            Some(Ok(token)) => Ok(Lease { consumer, _token: token }),
            Some(Err(e)) => Err(e),
            None => Err(BrokerError::ConsumerCancelled { queue }),
        }
    }
}

impl Lease {
    /// Resolves once the lease is lost: the channel or the connection was
    /// interrupted (the broker has given the token to another by then, or
    /// will), or the consumer was cancelled.
    pub async fn lost(&mut self) {
        loop {
            match self.consumer.next().await {
                None | Some(Err(_)) => return,
                // Another token: held too, which changes nothing.
                Some(Ok(_)) => {}
            }
        }
    }

    /// Gives the lease up (the broker hands the token to the next candidate).
    pub async fn release(self) {
        self.consumer.close().await;
    }
}
