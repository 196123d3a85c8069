//! Confirmed, mandatory publishing on one long-lived channel.
//!
//! A message counts as published only when the broker has confirmed it *and*
//! not returned it as unroutable (RabbitMQ acks an unroutable mandatory
//! message, after a `basic.return`). lapin does not re-send a publish that
//! failed while the connection was recovering, so this module does: it waits
//! for the recovery and tries again, a bounded number of times. A re-send can
//! duplicate a message whose confirm was lost; consumers recognise duplicates
//! by `message_id`.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::Mutex;

use crate::error::{BrokerError, is_transient};

/// Tries per publish: the first send plus re-sends after a recovery, a nack
/// or a confirm timeout.
const MAX_TRIES: u32 = 5;

pub(crate) struct Publisher {
    conn: Arc<Connection>,
    /// `None` until first use, and after the broker closed the channel.
    channel: Mutex<Option<Channel>>,
    confirm_timeout: Duration,
}

/// One try's failure, and whether another try may help.
enum Failure {
    /// The channel or connection failed; wait for recovery on `channel`.
    Channel(Channel, lapin::Error),
    /// Nack or confirm timeout: nothing to wait for, just try again.
    Again(BrokerError),
    Final(BrokerError),
}

impl Publisher {
    pub(crate) fn new(conn: Arc<Connection>, confirm_timeout: Duration) -> Self {
        Self { conn, channel: Mutex::new(None), confirm_timeout }
    }

    pub(crate) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: &BasicProperties,
    ) -> Result<(), BrokerError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let last = tries >= MAX_TRIES;
            match self.try_once(exchange, routing_key, body, props).await {
                Ok(()) => return Ok(()),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Again(e)) => {
                    if last {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, tries, "publish not confirmed, sending again");
                    tokio::time::sleep(Duration::from_millis(100) * tries).await;
                }
                Err(Failure::Channel(ch, e)) => {
                    let context = format!("publishing to {exchange:?} with key {routing_key:?}");
                    if last || !is_transient(&e) {
                        self.forget_if_closed(&ch).await;
                        return Err(BrokerError::amqp(context)(e));
                    }
                    tracing::warn!(error = %e, tries, "publish failed, waiting for the connection to recover");
                    match tokio::time::timeout(self.recovery_wait(), ch.wait_for_recovery(e)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            // Not recoverable in place (e.g. the broker closed
                            // just this channel): a fresh channel may do.
                            self.forget_if_closed(&ch).await;
                            tracing::warn!(error = %e, "publisher channel lost, opening a new one");
                            tokio::time::sleep(Duration::from_millis(100) * tries).await;
                        }
                        Err(_) => {
                            return Err(BrokerError::RecoveryTimeout { after: self.recovery_wait() });
                        }
                    }
                }
            }
        }
    }

    /// How long a publish waits for lapin to recover the connection.
    fn recovery_wait(&self) -> Duration {
        self.confirm_timeout * 2
    }

    async fn try_once(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: &BasicProperties,
    ) -> Result<(), Failure> {
        // The lock covers only getting the channel and writing the frames, so
        // confirms of concurrent publishes are awaited in parallel.
        let (ch, confirm) = {
            let mut slot = self.channel.lock().await;
            let ch = match self.channel_in(&mut slot).await {
                Ok(ch) => ch,
                Err(e) if is_transient(&e) => {
                    return Err(Failure::Again(BrokerError::amqp("opening the publisher channel")(e)));
                }
                Err(e) => return Err(Failure::Final(BrokerError::amqp("opening the publisher channel")(e))),
            };
            let sent = ch
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions { mandatory: true, immediate: false },
                    body,
                    props.clone(),
                )
                .await;
            match sent {
                Ok(confirm) => (ch, confirm),
                Err(e) => return Err(Failure::Channel(ch, e)),
            }
        };
        let confirmation = match tokio::time::timeout(self.confirm_timeout, confirm).await {
            Err(_) => {
                return Err(Failure::Again(BrokerError::ConfirmTimeout {
                    exchange: exchange.into(),
                    routing_key: routing_key.into(),
                    after: self.confirm_timeout,
                }));
            }
            Ok(Err(e)) => return Err(Failure::Channel(ch, e)),
            Ok(Ok(c)) => c,
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(Failure::Final(BrokerError::Unroutable {
                    exchange: exchange.into(),
                    routing_key: routing_key.into(),
                    reply: format!("{} {}", returned.reply_code, returned.reply_text),
                }))
            }
            Confirmation::Nack(None) => {
                Err(Failure::Again(BrokerError::Nacked { exchange: exchange.into(), routing_key: routing_key.into() }))
            }
            // Only possible if confirm mode were off, which channel_in prevents.
            Confirmation::NotRequested => {
                Err(Failure::Final(BrokerError::Config("the publisher channel is not in confirm mode".into())))
            }
        }
    }

    /// The current channel, or a new one in confirm mode if there is none or
    /// it was closed. A channel that is only reconnecting is kept: lapin
    /// recovers it along with the connection.
    async fn channel_in(&self, slot: &mut Option<Channel>) -> Result<Channel, lapin::Error> {
        if let Some(ch) = slot.as_ref() {
            let s = ch.status();
            if s.connected() || s.reconnecting() || s.initializing() {
                return Ok(ch.clone());
            }
        }
        let ch = self.conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    async fn forget_if_closed(&self, ch: &Channel) {
        let mut slot = self.channel.lock().await;
        if slot.as_ref().is_some_and(|c| c.id() == ch.id() && !c.status().connected()) {
            *slot = None;
        }
    }

    pub(crate) async fn close(&self) {
        if let Some(ch) = self.channel.lock().await.take()
            && ch.status().connected()
        {
            let _ = ch.close(200, "bye".into()).await;
        }
    }
}
