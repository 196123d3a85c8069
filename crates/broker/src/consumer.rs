//! Receiving: a stream of deliveries that survives connection recovery, the
//! delivery wrapper the workers decode from, and ack/reject helpers that
//! count lost acknowledgements.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::Stream;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicRejectOptions};
use serde::de::DeserializeOwned;

use crate::error::{BrokerError, DecodeError};
use crate::headers::{self, ATTEMPT, Death};
use crate::metrics;

/// One message received from a queue, not yet acknowledged.
#[derive(Debug)]
pub struct Incoming {
    pub delivery: Delivery,
    queue: String,
    max_bytes: usize,
}

impl Incoming {
    pub(crate) fn new(delivery: Delivery, queue: String, max_bytes: usize) -> Self {
        Self { delivery, queue, max_bytes }
    }

    /// The queue it was consumed from (the origin queue for retry/park).
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Failed attempts before this delivery (`x-attempt`), 0 when new.
    pub fn attempt(&self) -> u32 {
        attempt(&self.delivery)
    }

    /// The broker delivered it before without an acknowledgement (a consumer
    /// died or its channel closed): the handler may have done the work already.
    pub fn redelivered(&self) -> bool {
        self.delivery.redelivered
    }

    pub fn message_id(&self) -> Option<String> {
        self.delivery.properties.message_id().as_ref().map(|s| s.as_str().to_owned())
    }

    pub fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    /// The broker's dead-letter history of the message, newest first.
    pub fn deaths(&self) -> Vec<Death> {
        headers::deaths(&self.delivery.properties)
    }

    /// Parses the JSON body, refusing oversize bodies and schema versions
    /// this build does not speak (a missing `v` means the current one).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode(&self.delivery.data, self.max_bytes)
    }

    pub fn into_delivery(self) -> Delivery {
        self.delivery
    }
}

/// Failed attempts before this delivery (`x-attempt`), 0 when absent.
pub fn attempt(d: &Delivery) -> u32 {
    headers::get_u64(&d.properties, ATTEMPT).map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

pub(crate) fn decode<T: DeserializeOwned>(body: &[u8], limit: usize) -> Result<T, DecodeError> {
    if body.len() > limit {
        return Err(DecodeError::Oversize { size: body.len(), limit });
    }
    /// Only the version, so that a message of a future schema is reported
    /// as such rather than as a field mismatch.
    #[derive(serde::Deserialize)]
    struct Version {
        v: Option<serde_json::Value>,
    }
    let probe: Version = serde_json::from_slice(body).map_err(DecodeError::InvalidJson)?;
    if let Some(v) = probe.v {
        let supported = xaas_core::MESSAGE_VERSION;
        match v.as_u64() {
            Some(found) if found == u64::from(supported) => {}
            Some(found) => return Err(DecodeError::UnknownVersion { found, supported }),
            // Not a number: the typed parse below says what is wrong.
            None => {}
        }
    }
    serde_json::from_slice(body).map_err(DecodeError::InvalidJson)
}

/// Acknowledges `d`. Returns false when the acknowledgement could not reach
/// the broker (its channel closed or recovered since the delivery): the
/// broker will deliver the message again, so handlers must be idempotent.
pub async fn ack(d: &Delivery) -> bool {
    settle(d.acker.ack(BasicAckOptions::default()).await, "ack")
}

/// Rejects `d`: with `requeue`, the broker delivers it again (counting
/// towards the queue's delivery limit); without, it is dead-lettered.
/// `reject` rather than `nack`, because RabbitMQ 4.3 counts only rejects
/// towards the delivery limit. Returns false as [`ack`] does.
pub async fn reject(d: &Delivery, requeue: bool) -> bool {
    settle(d.acker.reject(BasicRejectOptions { requeue }).await, "reject")
}

fn settle(res: lapin::Result<bool>, what: &'static str) -> bool {
    match res {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!(what, "acknowledgement lost (channel closed or recovered); the message will be redelivered");
            ::metrics::counter!(metrics::ACK_LOST).increment(1);
            false
        }
        Err(e) => {
            tracing::warn!(what, error = %e, "acknowledgement failed; the message will be redelivered");
            ::metrics::counter!(metrics::ACK_LOST).increment(1);
            false
        }
    }
}

type Recovery = Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>>;

/// The deliveries of one queue, on a channel of their own. A connection
/// failure does not end the stream: it waits for lapin to recover the
/// connection (which re-registers the consumer) and goes on. It ends when the
/// consumer is cancelled, by [`Consumer::cancel`] or by the broker.
///
/// Keep the `Consumer` alive while any of its deliveries is unacknowledged:
/// dropping it closes the channel and the broker requeues them.
pub struct Consumer {
    inner: lapin::Consumer,
    channel: Channel,
    queue: String,
    max_bytes: usize,
    recovering: Option<Recovery>,
    /// Wait for a recovery after an interruption (else end the stream).
    recovers: bool,
    done: bool,
}

impl Consumer {
    pub(crate) fn new(
        inner: lapin::Consumer,
        channel: Channel,
        queue: String,
        max_bytes: usize,
        recovers: bool,
    ) -> Self {
        Self { inner, channel, queue, max_bytes, recovering: None, recovers, done: false }
    }

    /// Its channel is open: its deliveries can still be acknowledged.
    pub fn is_open(&self) -> bool {
        !self.done && self.channel.status().connected()
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn tag(&self) -> String {
        self.inner.tag().as_str().to_owned()
    }

    /// Stops new deliveries (`basic.cancel`). Deliveries already received
    /// can still be acknowledged until [`Consumer::close`]. (`&mut self` keeps
    /// the future `Send` without requiring the consumer to be `Sync`.)
    pub async fn cancel(&mut self) -> Result<(), BrokerError> {
        if !self.channel.status().connected() {
            return Ok(());
        }
        self.channel
            .basic_cancel(self.inner.tag(), BasicCancelOptions::default())
            .await
            .map_err(BrokerError::amqp(format!("cancelling the consumer on {}", self.queue)))
    }

    /// Closes the channel; the broker requeues every unacknowledged delivery.
    pub async fn close(self) {
        if self.channel.status().connected()
            && let Err(e) = self.channel.close(200, "consumer closed".into()).await
        {
            tracing::debug!(error = %e, queue = %self.queue, "closing consumer channel");
        }
    }
}

impl Stream for Consumer {
    type Item = Result<Incoming, BrokerError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(recovery) = this.recovering.as_mut() {
                match recovery.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => {
                        tracing::info!(queue = %this.queue, "consumer recovered");
                        this.recovering = None;
                    }
                    Poll::Ready(Err(e)) => {
                        this.recovering = None;
                        this.done = true;
                        let context = format!("consuming from {}", this.queue);
                        return Poll::Ready(Some(Err(BrokerError::amqp(context)(e))));
                    }
                }
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(d))) => {
                    let incoming = Incoming::new(d, this.queue.clone(), this.max_bytes);
                    return Poll::Ready(Some(Ok(incoming)));
                }
                Poll::Ready(Some(Err(e))) if !this.recovers => {
                    this.done = true;
                    tracing::warn!(queue = %this.queue, error = %e, "consumer interrupted");
                    let context = format!("consuming from {}", this.queue);
                    return Poll::Ready(Some(Err(BrokerError::amqp(context)(e))));
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(queue = %this.queue, error = %e, "consumer interrupted, waiting for recovery");
                    let ch = this.channel.clone();
                    this.recovering = Some(Box::pin(async move { ch.wait_for_recovery(e).await }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xaas_core::{RunId, SyncName, SyncRequest};

    #[test]
    fn decode_tells_invalid_json_from_unknown_versions_and_oversize() {
        let ok: SyncRequest = decode(br#"{"v":1,"sync":"demo"}"#, 1000).unwrap();
        assert_eq!(ok.sync, SyncName::parse("demo").unwrap());
        let no_v: SyncRequest = decode(br#"{"sync":"demo","run_id":"r1"}"#, 1000).unwrap();
        assert_eq!(no_v.run_id, Some(RunId::parse("r1").unwrap()));

        assert!(matches!(
            decode::<SyncRequest>(br#"{"v":2,"sync":"demo"}"#, 1000),
            Err(DecodeError::UnknownVersion { found: 2, supported: 1 })
        ));
        assert!(matches!(decode::<SyncRequest>(b"{not json", 1000), Err(DecodeError::InvalidJson(_))));
        assert!(matches!(
            decode::<SyncRequest>(br#"{"v":1,"sync":"Not Valid"}"#, 1000),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            decode::<SyncRequest>(br#"{"v":"one","sync":"demo"}"#, 1000),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            decode::<SyncRequest>(br#"{"v":1,"sync":"demo"}"#, 10),
            Err(DecodeError::Oversize { size: 21, limit: 10 })
        ));
    }
}
