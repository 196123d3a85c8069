//! The parked queue, for `xaas parked list|show|replay|purge`.
//!
//! Listing must not lose or reorder anything for good, and AMQP has no
//! "peek". So a listing takes messages with `basic.get` *without*
//! acknowledging them, holding each one (a held message is not handed out
//! again, so the next get returns the next message), and then closes its
//! channel: the broker puts every held message back. Nothing is republished,
//! so message ids, headers and bodies stay exactly as they were. Each
//! listing counts as one delivery of each listed message, which is why the
//! parked queue has a very high delivery limit (see `topology`).
//!
//! A quorum queue takes the returned messages back asynchronously, so after
//! closing the channel we wait until the queue counts them again: the next
//! command (a `show` after a `list`, or a replay) then sees all of them.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::broker::{Broker, close_quietly};
use crate::consumer;
use crate::error::BrokerError;
use crate::headers::{
    self, ATTEMPT, Death, LAST_ERROR, ORIGIN_QUEUE, PARKED_AT, PARKED_ERROR, PARKED_REASON, REPLAYED_AT, RETRY_TIER,
};

/// A parked message as an operator sees it.
#[derive(Debug, Clone)]
pub struct ParkedMessage {
    /// Position in the listing, from 1.
    pub position: usize,
    pub message_id: Option<String>,
    /// Where a replay sends it: `x-origin-queue`, or for a message the broker
    /// parked itself (delivery limit) the queue in its `x-death`.
    pub origin_queue: Option<String>,
    /// `x-parked-reason`, or the broker's dead-letter reason (e.g.
    /// `delivery_limit`: its consumer crashed or rejected it too often).
    pub reason: String,
    pub error: Option<String>,
    pub parked_at: Option<String>,
    /// Failed attempts (`x-attempt`).
    pub attempt: u32,
    pub deaths: Vec<Death>,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl ParkedMessage {
    fn new(position: usize, d: &Delivery) -> Self {
        let p = &d.properties;
        let deaths = headers::deaths(p);
        // The broker's record of why it dead-lettered the message here.
        let broker_death = deaths.iter().find(|x| x.reason != "expired");
        Self {
            position,
            message_id: p.message_id().as_ref().map(|s| s.as_str().to_owned()),
            origin_queue: headers::get_str(p, ORIGIN_QUEUE).or_else(|| broker_death.map(|x| x.queue.clone())),
            reason: headers::get_str(p, PARKED_REASON)
                .or_else(|| broker_death.map(|x| x.reason.clone()))
                .unwrap_or_else(|| "unknown".into()),
            error: headers::get_str(p, PARKED_ERROR),
            parked_at: headers::get_str(p, PARKED_AT),
            attempt: consumer::attempt(d),
            deaths,
            properties: p.clone(),
            body: d.data.clone(),
        }
    }
}

/// Which parked messages to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    All,
    /// The message at this listing position (from 1).
    Position(usize),
    MessageId(String),
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub replayed: usize,
    /// Selected messages left parked, with why (e.g. no origin queue known).
    pub skipped: Vec<(Option<String>, String)>,
}

/// How long to wait for returned messages to be counted by the queue again.
const RETURN_WAIT: Duration = Duration::from_secs(10);

/// Messages taken from parked and held unacknowledged on a channel.
struct Held {
    ch: Channel,
    deliveries: Vec<Delivery>,
    /// Ready messages left in the queue after the last get.
    remaining: u32,
}

impl Broker {
    /// The first `limit` parked messages, oldest first, left in place.
    pub async fn parked_list(&self, limit: usize) -> Result<Vec<ParkedMessage>, BrokerError> {
        let mut held = self.hold_parked().await?;
        let res = self.take_parked(&mut held, limit).await;
        let list = held.deliveries.iter().enumerate().map(|(i, d)| ParkedMessage::new(i + 1, d)).collect();
        self.give_back(held).await;
        res.map(|()| list)
    }

    /// The parked message at `position` (from 1), left in place.
    pub async fn parked_get(&self, position: usize) -> Result<Option<ParkedMessage>, BrokerError> {
        if position == 0 {
            return Ok(None);
        }
        Ok(self.parked_list(position).await?.into_iter().nth(position - 1))
    }

    /// Sends the selected parked messages back to the queue they came from,
    /// with a fresh attempt count and without the broker's dead-letter
    /// history, each confirmed before it is removed from parked.
    pub async fn parked_replay(&self, which: Replay) -> Result<ReplayReport, BrokerError> {
        let mut held = self.hold_parked().await?;
        let res = self.replay_held(&mut held, which).await;
        self.give_back(held).await;
        res
    }

    /// How many messages are parked (ready to be listed), without touching
    /// them: cheap enough to poll, unlike a listing, which moves every body.
    pub async fn parked_count(&self) -> Result<u32, BrokerError> {
        let parked = self.names().parked();
        let ch = self.channel("opening a channel to count parked messages").await?;
        let res = ch
            .queue_declare(
                parked.as_str().into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .map_err(BrokerError::amqp(format!("counting {parked}")));
        close_quietly(ch).await;
        res
    }

    /// Drops every parked message; returns how many there were.
    pub async fn parked_purge(&self) -> Result<u32, BrokerError> {
        let parked = self.names().parked();
        let ch = self.channel("opening a channel to purge parked messages").await?;
        let res = ch
            .queue_purge(parked.as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(BrokerError::amqp(format!("purging {parked}")));
        close_quietly(ch).await;
        res
    }

    async fn hold_parked(&self) -> Result<Held, BrokerError> {
        let ch = self.channel("opening a channel to read parked messages").await?;
        Ok(Held { ch, deliveries: Vec::new(), remaining: 0 })
    }

    /// Gets and holds messages until `limit` are held or none is ready.
    async fn take_parked(&self, held: &mut Held, limit: usize) -> Result<(), BrokerError> {
        let parked = self.names().parked();
        while held.deliveries.len() < limit {
            let got = held
                .ch
                .basic_get(parked.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(BrokerError::amqp(format!("reading {parked}")))?;
            let Some(m) = got else {
                held.remaining = 0;
                break;
            };
            held.remaining = m.message_count;
            held.deliveries.push(m.delivery);
        }
        Ok(())
    }

    /// Closes the holding channel (the broker requeues what it held) and
    /// waits until the queue counts those messages as ready again.
    async fn give_back(&self, held: Held) {
        let expected = u32::try_from(held.deliveries.len()).unwrap_or(u32::MAX).saturating_add(held.remaining);
        close_quietly(held.ch).await;
        if expected == 0 {
            return;
        }
        let parked = self.names().parked();
        let Ok(ch) = self.channel("opening a channel to count parked messages").await else {
            return;
        };
        let counted = tokio::time::timeout(RETURN_WAIT, async {
            loop {
                let n = ch
                    .queue_declare(
                        parked.as_str().into(),
                        QueueDeclareOptions { passive: true, ..Default::default() },
                        FieldTable::default(),
                    )
                    .await
                    .map(|q| q.message_count());
                match n {
                    Ok(n) if n >= expected => return,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "counting parked messages");
                        return;
                    }
                }
            }
        })
        .await;
        if counted.is_err() {
            tracing::warn!(expected, "parked messages not yet counted back after {RETURN_WAIT:?}");
        }
        close_quietly(ch).await;
    }

    async fn replay_held(&self, held: &mut Held, which: Replay) -> Result<ReplayReport, BrokerError> {
        // Marks this replay's copies: one that fails again and is parked
        // anew during the replay carries it and is not replayed twice.
        let token = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        let mut report = ReplayReport::default();
        let parked = self.names().parked();
        let mut position = 0;
        loop {
            let got = held
                .ch
                .basic_get(parked.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(BrokerError::amqp(format!("reading {parked}")))?;
            let Some(m) = got else { break };
            let d = m.delivery;
            position += 1;
            let p = ParkedMessage::new(position, &d);
            let ours = headers::get_str(&d.properties, REPLAYED_AT).as_deref() == Some(token.as_str());
            let selected = !ours
                && match &which {
                    Replay::All => true,
                    Replay::Position(n) => *n == p.position,
                    Replay::MessageId(id) => p.message_id.as_deref() == Some(id.as_str()),
                };
            if !selected {
                held.deliveries.push(d);
                continue;
            }
            let Some(origin) = p.origin_queue.clone() else {
                report.skipped.push((p.message_id, "no origin queue recorded".into()));
                held.deliveries.push(d);
                continue;
            };
            let props = headers::republish_props(
                &d.properties,
                false,
                &[PARKED_REASON, PARKED_ERROR, PARKED_AT, ATTEMPT, RETRY_TIER, LAST_ERROR, ORIGIN_QUEUE],
                vec![(REPLAYED_AT, headers::long_str(token.clone()))],
            );
            match self.republish("", &origin, &d.data, props).await {
                Ok(()) => {}
                Err(e @ BrokerError::Unroutable { .. }) => {
                    report.skipped.push((p.message_id, format!("queue {origin} does not exist: {e}")));
                    held.deliveries.push(d);
                    continue;
                }
                Err(e) => {
                    held.deliveries.push(d);
                    return Err(e);
                }
            }
            consumer::ack(&d).await;
            tracing::info!(message_id = ?p.message_id, queue = %origin, "parked message replayed");
            report.replayed += 1;
        }
        held.remaining = 0;
        Ok(report)
    }
}
