//! How many messages wait in a queue, for the `xaas_queue_messages` gauge.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::broker::{Broker, close_quietly};
use crate::error::BrokerError;

impl Broker {
    /// The ready messages of `queue`, by a passive declare: no message is
    /// touched, so it is cheap enough to sample every few seconds. A queue
    /// that does not exist is an error (and costs only its own channel).
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BrokerError> {
        let ch = self.channel("opening a channel to count a queue").await?;
        let res = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .map_err(BrokerError::amqp(format!("counting {queue}")));
        close_quietly(ch).await;
        res
    }
}
