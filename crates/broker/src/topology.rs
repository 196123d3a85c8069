//! The queues, exchanges and bindings of DESIGN §4, declared idempotently.
//!
//! ```text
//!  publish ──▶ P (direct) ──rk = queue name──▶ P.requests | P.fetch | P.pages | P.batches.<sync>
//!                                                    │ x-delivery-limit exceeded
//!                                                    ▼ (dead-letter "" → P.parked)
//!  retry_later ──▶ P.retry (headers, xaas-retry-tier)   ──▶ P.retry.<tier> (TTL)
//!                    routing key = origin queue           │ expired: dead-letter to ""
//!                                                         ▼ with the original routing key
//!                                                      origin queue
//!  park ──▶ "" ──▶ P.parked          publish_event ──▶ "" ──▶ P.events (stream)
//! ```
//!
//! A retry queue has a dead-letter exchange but no dead-letter routing key,
//! so an expired message keeps the routing key it was published with: the
//! name of the queue it came from. That is how one set of delay queues
//! serves every work queue.
//!
//! Redeclaring a queue with other arguments fails with PRECONDITION_FAILED,
//! so every argument lives here and changes to them need a migration
//! (delete the queue, or move to a new prefix).

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use xaas_core::SyncName;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::headers::RETRY_TIER;
use crate::names::{Names, tier_label};

/// RabbitMQ 4 gives quorum queues a default delivery limit of 20, and a
/// message over it with no dead-letter target is dropped. Listing the parked
/// queue returns messages to it, which counts as a delivery, so the parked
/// queue gets a limit no operator will reach.
const PARKED_DELIVERY_LIMIT: i64 = 1_000_000;

/// The declared shape of the topology for one configuration.
#[derive(Debug, Clone)]
pub struct Topology {
    names: Names,
    retry_tiers: Vec<Duration>,
    delivery_limit: u32,
    events_max_age: String,
    events_max_bytes: u64,
}

impl Topology {
    pub fn new(cfg: &BrokerConfig) -> Self {
        Self {
            names: Names::new(cfg.prefix.clone()),
            retry_tiers: cfg.retry_tiers.clone(),
            delivery_limit: cfg.delivery_limit,
            events_max_age: cfg.events_max_age.clone(),
            events_max_bytes: cfg.events_max_bytes,
        }
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn retry_tiers(&self) -> &[Duration] {
        &self.retry_tiers
    }

    /// Exchanges, the common work queues, the retry tiers, parked and events.
    pub async fn declare(&self, ch: &Channel) -> Result<(), BrokerError> {
        let n = &self.names;
        exchange(ch, &n.exchange(), ExchangeKind::Direct).await?;
        exchange(ch, &n.retry_exchange(), ExchangeKind::Headers).await?;

        queue(ch, &n.parked(), parked_args()).await?;
        for q in [n.requests(), n.fetch(), n.pages()] {
            self.declare_work_queue(ch, &q, false).await?;
        }
        for &tier in &self.retry_tiers {
            let q = n.retry(tier);
            queue(ch, &q, retry_args(tier)).await?;
            let mut bind = FieldTable::default();
            bind.insert("x-match".into(), str_arg("all"));
            bind.insert(RETRY_TIER.into(), str_arg(&tier_label(tier)));
            ch.queue_bind(q.as_str().into(), n.retry_exchange().into(), "".into(), QueueBindOptions::default(), bind)
                .await
                .map_err(BrokerError::topology(format!("binding {q} to {}", n.retry_exchange())))?;
        }
        queue(ch, &n.events(), self.events_args()).await?;
        Ok(())
    }

    /// The batches queue of one sync: a work queue with a single active
    /// consumer, so exactly one uploader owns the identity source. And the
    /// sync's roster stream.
    pub async fn declare_sync(&self, ch: &Channel, sync: &SyncName) -> Result<(), BrokerError> {
        self.declare_work_queue(ch, &self.names.batches(sync), true).await?;
        queue(ch, &self.names.roster(sync), crate::roster::roster_args()).await
    }

    async fn declare_work_queue(&self, ch: &Channel, name: &str, single_active: bool) -> Result<(), BrokerError> {
        queue(ch, name, self.work_args(single_active)).await?;
        ch.queue_bind(
            name.into(),
            self.names.exchange().into(),
            name.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(BrokerError::topology(format!("binding {name} to {}", self.names.exchange())))
    }

    /// Quorum, with a delivery limit whose overflow dead-letters to parked.
    /// At-least-once dead-lettering keeps a message in its queue until
    /// parked has it (RabbitMQ requires `reject-publish` overflow for that).
    fn work_args(&self, single_active: bool) -> FieldTable {
        let mut a = quorum();
        a.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(self.delivery_limit.into()));
        a.insert("x-dead-letter-exchange".into(), str_arg(""));
        a.insert("x-dead-letter-routing-key".into(), str_arg(&self.names.parked()));
        at_least_once(&mut a);
        if single_active {
            a.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        a
    }

    fn events_args(&self) -> FieldTable {
        let mut a = FieldTable::default();
        a.insert("x-queue-type".into(), str_arg("stream"));
        a.insert("x-max-age".into(), str_arg(&self.events_max_age));
        a.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(self.events_max_bytes).unwrap_or(i64::MAX)),
        );
        a
    }

    /// Deletes every queue and exchange of this prefix, including the
    /// batches queues of `syncs`. Deleting what does not exist is not an error.
    pub async fn delete(&self, ch: &Channel, syncs: &[SyncName]) -> Result<(), BrokerError> {
        let n = &self.names;
        let mut queues = vec![n.requests(), n.fetch(), n.pages(), n.parked(), n.events()];
        queues.extend(self.retry_tiers.iter().map(|&t| n.retry(t)));
        queues.extend(syncs.iter().map(|s| n.batches(s)));
        queues.extend(syncs.iter().map(|s| n.roster(s)));
        for q in queues {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(BrokerError::amqp(format!("deleting queue {q}")))?;
        }
        for x in [n.exchange(), n.retry_exchange()] {
            ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(BrokerError::amqp(format!("deleting exchange {x}")))?;
        }
        Ok(())
    }
}

fn quorum() -> FieldTable {
    let mut a = FieldTable::default();
    a.insert("x-queue-type".into(), str_arg("quorum"));
    a
}

fn at_least_once(a: &mut FieldTable) {
    a.insert("x-dead-letter-strategy".into(), str_arg("at-least-once"));
    a.insert("x-overflow".into(), str_arg("reject-publish"));
}

/// A delay tier: messages wait `tier`, then go back to the default exchange
/// with the routing key they were published with (no dead-letter routing key).
fn retry_args(tier: Duration) -> FieldTable {
    let mut a = quorum();
    let ms = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
    a.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms));
    a.insert("x-dead-letter-exchange".into(), str_arg(""));
    at_least_once(&mut a);
    a
}

fn parked_args() -> FieldTable {
    let mut a = quorum();
    a.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(PARKED_DELIVERY_LIMIT));
    a
}

fn str_arg(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) -> Result<(), BrokerError> {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .map_err(BrokerError::topology(format!("exchange {name}")))
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), BrokerError> {
    ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args)
        .await
        .map(drop)
        .map_err(BrokerError::topology(format!("queue {name}")))
}
