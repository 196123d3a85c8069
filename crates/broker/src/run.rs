//! The consume loop every stateless worker runs: take deliveries, hand each
//! to a handler, apply what the handler decided, and stop cleanly.

use std::future::Future;
use std::sync::Arc;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::broker::Broker;
use crate::consumer::{self, Incoming};
use crate::error::BrokerError;
use crate::metrics;

/// What a handler decided about its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or a duplicate of something done): acknowledge.
    Ack,
    /// Failed in a way that may pass: retry after a delay, park when out of
    /// attempts.
    Retry { error: String },
    /// Can never succeed as it is (bad message, unknown version...): park now.
    Park { reason: String, error: String },
}

/// Consumes `queue` until `shutdown`, running up to `concurrency` handlers
/// at once, and settles each delivery by its [`Outcome`]. It decodes
/// nothing: the handler does.
///
/// A handler that panics gets its delivery rejected with requeue; the
/// queue's `x-delivery-limit` then parks a message that keeps crashing its
/// handler instead of looping forever. If a retry or park cannot be
/// published, the delivery is requeued the same way.
///
/// On shutdown it cancels the consumer, lets running handlers finish and
/// settle, then closes the channel so the broker requeues the deliveries
/// that were prefetched but not started. Returns `Ok` then; an error if the
/// consumer could not start or was cancelled by the broker.
pub async fn run_consumer<F, Fut>(
    broker: &Broker,
    queue: &str,
    prefetch: u16,
    concurrency: usize,
    shutdown: CancellationToken,
    handler: F,
) -> Result<(), BrokerError>
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let tag = format!("{}/{queue}", broker.config().connection_name);
    let mut consumer = broker.consume(queue, prefetch, &tag).await?;
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let tasks = TaskTracker::new();

    let result = loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                // The semaphore is never closed.
                Err(_) => break Ok(()),
            },
        };
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(incoming)) => {
                tasks.spawn(settle_one(broker.clone(), Arc::clone(&handler), incoming, permit));
            }
            Some(Err(e)) => break Err(e),
            None => break Err(BrokerError::ConsumerCancelled { queue: queue.to_owned() }),
        }
    };

    if let Err(e) = consumer.cancel().await {
        tracing::debug!(error = %e, queue, "cancelling consumer");
    }
    tasks.close();
    tasks.wait().await;
    consumer.close().await;
    tracing::info!(queue, "consumer stopped");
    result
}

async fn settle_one<F, Fut>(broker: Broker, handler: Arc<F>, incoming: Incoming, _permit: OwnedSemaphorePermit)
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    // Kept aside so the message can still be retried, parked or requeued if
    // the handler panics with the original.
    let d = copy_delivery(&incoming.delivery);
    let queue = incoming.queue().to_owned();
    let span = tracing::info_span!(
        "delivery",
        queue = %queue,
        message_id = incoming.message_id().unwrap_or_default(),
        attempt = incoming.attempt(),
        redelivered = incoming.redelivered(),
    );
    // Spawned so a panic is caught as a JoinError instead of unwinding here.
    let outcome = tokio::spawn(async move { handler(incoming).await }.instrument(span.clone())).await;
    async {
        match outcome {
            Ok(Outcome::Ack) => {
                consumer::ack(&d).await;
            }
            Ok(Outcome::Retry { error }) => {
                if let Err(e) = broker.retry_later(&d, &queue, &error).await {
                    tracing::warn!(error = %e, "could not schedule the retry; requeueing");
                    consumer::reject(&d, true).await;
                }
            }
            Ok(Outcome::Park { reason, error }) => {
                if let Err(e) = broker.park(&d, &queue, &reason, &error).await {
                    tracing::warn!(error = %e, "could not park the message; requeueing");
                    consumer::reject(&d, true).await;
                }
            }
            Err(join) if join.is_panic() => {
                tracing::error!("handler panicked; requeueing (the delivery limit parks a repeat offender)");
                ::metrics::counter!(metrics::HANDLER_PANICS, "queue" => queue.clone()).increment(1);
                consumer::reject(&d, true).await;
            }
            // The runtime is shutting down: the channel closes and the
            // broker requeues the delivery.
            Err(_) => {}
        }
    }
    .instrument(span)
    .await;
}

/// A second handle on the same delivery (same acker, copied body).
fn copy_delivery(d: &Delivery) -> Delivery {
    Delivery {
        delivery_tag: d.delivery_tag,
        exchange: d.exchange.clone(),
        routing_key: d.routing_key.clone(),
        redelivered: d.redelivered,
        properties: d.properties.clone(),
        data: d.data.clone(),
        acker: d.acker.clone(),
    }
}
