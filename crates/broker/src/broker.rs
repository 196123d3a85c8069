//! The process's handle on RabbitMQ: one connection with automatic
//! recovery, a confirmed publisher, consumers, and the retry/park moves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Event};
use secrecy::ExposeSecret;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;
use xaas_core::broker_address::{BrokerAddress, BrokerAddresses};
use xaas_core::{MessageId, RunEvent, SyncName};

use crate::config::BrokerConfig;
use crate::consumer::{self, Consumer};
use crate::error::BrokerError;
use crate::headers::{self, ATTEMPT, LAST_ERROR, ORIGIN_QUEUE, PARKED_AT, PARKED_ERROR, PARKED_REASON, RETRY_TIER};
use crate::metrics;
use crate::names::{Names, tier_label};
use crate::publisher::Publisher;
use crate::topology::Topology;

/// What [`Broker::retry_later`] did with a failed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Sent to the delay tier `tier`; it comes back to its queue afterwards
    /// carrying `x-attempt = attempt`.
    Retried { attempt: u32, tier: Duration },
    /// Out of attempts: moved to the parked queue.
    Parked,
}

/// A cheap-to-clone handle on the broker for the whole process.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: BrokerConfig,
    topology: Topology,
    conn: Arc<Connection>,
    publisher: Publisher,
    /// Syncs whose batches queue this handle declared, so that
    /// `delete_everything` can find them without the management API.
    syncs: std::sync::Mutex<BTreeSet<SyncName>>,
    /// Stops the connection-events logger on close.
    closed: CancellationToken,
    /// Connection failures seen (see [`Broker::interruptions`]).
    interruptions: Arc<std::sync::atomic::AtomicU64>,
}

impl Broker {
    /// Opens the connection (with automatic recovery) to the first of the
    /// configured addresses that answers, and checks the configuration.
    /// Fails after `connect_timeout` with an error that names the addresses
    /// (without password) and what to check.
    pub async fn connect(cfg: BrokerConfig) -> Result<Self, BrokerError> {
        Self::open(cfg, true).await
    }

    /// A second connection with the same settings that is NOT recovered: the
    /// first failure of it or of a channel on it is final. For a consumer
    /// whose deliveries must not outlive its connection (the uploader's term:
    /// a recovered connection would silently re-subscribe it while a standby
    /// already holds its deliveries). RabbitMQ closing the connection, a
    /// network failure and a channel closed by the broker all end it.
    pub async fn detached(&self, name: &str) -> Result<Self, BrokerError> {
        let mut cfg = self.inner.cfg.clone();
        cfg.connection_name = format!("{}/{name}", cfg.connection_name);
        Self::open(cfg, false).await
    }

    async fn open(cfg: BrokerConfig, recover: bool) -> Result<Self, BrokerError> {
        cfg.validate()?;
        let mut props =
            ConnectionProperties::default().with_connection_name(LongString::from(cfg.connection_name.clone()));
        if recover {
            props = props
                .enable_auto_recover()
                // Reconnect quickly at first, then every few seconds: a broker
                // restart takes seconds, and the default backoff grows to minutes.
                .configure_backoff(|b| {
                    b.with_min_delay(Duration::from_millis(250))
                        .with_max_delay(Duration::from_secs(5))
                        .with_max_times(24)
                        .with_jitter()
                });
        }
        let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
        // lapin retries an unreachable address from a background thread that
        // outlives a timed-out connect (and panics when the runtime then shuts
        // down), so reachability is settled first, here, where giving up is clean.
        let address = match first_reachable(&cfg.addresses, deadline).await {
            Ok(address) => address,
            Err(probe) => {
                let url = cfg.addresses.to_string();
                return Err(BrokerError::ConnectTimeout { url, after: cfg.connect_timeout, probe });
            }
        };
        let url = address.to_string();
        let connect = Connection::connect(address.url().expose_secret(), props);
        let conn = match tokio::time::timeout_at(deadline, connect).await {
            Err(_) => {
                let probe = probe_tcp(address).await;
                return Err(BrokerError::ConnectTimeout { url, after: cfg.connect_timeout, probe });
            }
            Ok(Err(source)) => return Err(BrokerError::Connect { url, source }),
            Ok(Ok(conn)) => Arc::new(conn),
        };
        tracing::info!(url = %url, name = %cfg.connection_name, "connected to RabbitMQ");
        let closed = CancellationToken::new();
        let interruptions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(log_connection_events(conn.events_listener(), url, closed.clone(), Arc::clone(&interruptions)));
        let inner = Inner {
            topology: Topology::new(&cfg),
            publisher: Publisher::new(Arc::clone(&conn), cfg.confirm_timeout),
            conn,
            cfg,
            syncs: std::sync::Mutex::new(BTreeSet::new()),
            closed,
            interruptions,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    pub fn names(&self) -> &Names {
        self.inner.topology.names()
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.inner.cfg
    }

    /// Connected now (false while recovering); for health checks.
    pub fn is_connected(&self) -> bool {
        self.inner.conn.status().connected()
    }

    /// Declares exchanges, the common queues, retry tiers, parked and events.
    /// Idempotent; every worker calls it at start.
    pub async fn declare(&self) -> Result<(), BrokerError> {
        let ch = self.channel("opening a channel to declare the topology").await?;
        let res = self.inner.topology.declare(&ch).await;
        close_quietly(ch).await;
        res
    }

    /// Declares the batches queue of `sync` (single active consumer).
    pub async fn declare_sync(&self, sync: &SyncName) -> Result<(), BrokerError> {
        let ch = self.channel("opening a channel to declare the topology").await?;
        let res = self.inner.topology.declare_sync(&ch, sync).await;
        close_quietly(ch).await;
        self.remember_sync(sync);
        res
    }

    /// Deletes every queue and exchange of this prefix: the common ones and
    /// the batches queues declared through this handle (or named in
    /// [`Broker::delete_sync`]). Messages in them are lost; meant for tests
    /// and for tearing down a deployment.
    pub async fn delete_everything(&self) -> Result<(), BrokerError> {
        let syncs: Vec<SyncName> = self.lock_syncs().iter().cloned().collect();
        let ch = self.channel("opening a channel to delete the topology").await?;
        let res = self.inner.topology.delete(&ch, &syncs).await;
        close_quietly(ch).await;
        res
    }

    /// Marks the batches queue of `sync` for deletion by `delete_everything`
    /// (for syncs this handle did not declare).
    pub fn delete_sync(&self, sync: &SyncName) {
        self.remember_sync(sync);
    }

    /// Publishes `msg` as JSON to the work queue `queue` (through the `P`
    /// exchange, where only the work queues are bound) and waits for the
    /// broker's confirm. The message id is the message's own deterministic id.
    /// Any other queue: [`Broker::publish_raw`] with the default exchange `""`.
    pub async fn publish<M: Serialize + MessageId>(&self, queue: &str, msg: &M) -> Result<(), BrokerError> {
        let body = serde_json::to_vec(msg).map_err(BrokerError::Encode)?;
        let props = json_props(msg.message_id());
        self.publish_raw(&self.names().exchange(), queue, &body, props).await
    }

    /// Appends a run event to the events stream, confirmed.
    pub async fn publish_event(&self, e: &RunEvent) -> Result<(), BrokerError> {
        let body = serde_json::to_vec(e).map_err(BrokerError::Encode)?;
        let props = json_props(event_id(e)).with_timestamp(e.at.unix_timestamp().max(0).unsigned_abs());
        self.publish_raw("", &self.names().events(), &body, props).await
    }

    /// Publishes bytes as they are, mandatory and confirmed, re-sending after
    /// a connection recovery. The caller chooses the properties.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let limit = self.inner.cfg.max_message_bytes;
        if body.len() > limit {
            return Err(BrokerError::TooLarge { size: body.len(), limit });
        }
        self.republish(exchange, routing_key, body, props).await
    }

    /// Publishes a message the broker already holds (a retry, parked or
    /// replayed copy) whatever its size: the broker took it once, and an
    /// oversize message must still reach the parked queue rather than bounce
    /// between its queue and a consumer that can neither read nor park it.
    pub(crate) async fn republish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.inner.publisher.publish(exchange, routing_key, body, &props).await?;
        ::metrics::counter!(metrics::PUBLISHED, "queue" => routing_key.to_owned()).increment(1);
        Ok(())
    }

    /// Starts consuming `queue` on a channel of its own, with manual acks and
    /// at most `prefetch` unacknowledged deliveries. The stream survives
    /// connection recoveries.
    pub async fn consume(&self, queue: &str, prefetch: u16, consumer_tag: &str) -> Result<Consumer, BrokerError> {
        self.consumer(queue, prefetch, consumer_tag, true).await
    }

    /// Like [`Broker::consume`], but the stream ends with an error at the
    /// first interruption instead of waiting for a recovery: for a consumer
    /// that must stop acting the moment its deliveries can go to another
    /// (the uploader, on a single-active-consumer queue).
    pub async fn consume_once(&self, queue: &str, prefetch: u16, consumer_tag: &str) -> Result<Consumer, BrokerError> {
        self.consumer(queue, prefetch, consumer_tag, false).await
    }

    /// Connection failures since the connection was made; a consumer that
    /// started before one must assume its deliveries went elsewhere.
    pub fn interruptions(&self) -> u64 {
        self.inner.interruptions.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn consumer(
        &self,
        queue: &str,
        prefetch: u16,
        consumer_tag: &str,
        recovers: bool,
    ) -> Result<Consumer, BrokerError> {
        let ch = self.channel(format!("opening a channel to consume {queue}")).await?;
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(BrokerError::amqp(format!("setting prefetch on {queue}")))?;
        let inner = ch
            .basic_consume(queue.into(), consumer_tag.into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(BrokerError::amqp(format!("consuming from {queue}")))?;
        Ok(Consumer::new(inner, ch, queue.to_owned(), self.inner.cfg.max_message_bytes, recovers))
    }

    /// Schedules `d` (consumed from `origin_queue`) to come back after a delay,
    /// or parks it once it has been retried `max_attempts` times. The copy is
    /// confirmed before `d` is acknowledged, so a crash in between duplicates
    /// the message rather than losing it.
    pub async fn retry_later(
        &self,
        d: &Delivery,
        origin_queue: &str,
        error: &str,
    ) -> Result<RetryDecision, BrokerError> {
        let attempt = consumer::attempt(d).saturating_add(1);
        if attempt > self.inner.cfg.max_attempts {
            let reason = format!("gave up after {} retries", self.inner.cfg.max_attempts);
            self.park(d, origin_queue, &reason, error).await?;
            return Ok(RetryDecision::Parked);
        }
        let tiers = self.inner.topology.retry_tiers();
        // validate() guarantees at least one tier.
        let index = usize::try_from(attempt - 1).unwrap_or(usize::MAX).min(tiers.len() - 1);
        let tier = tiers[index];
        let label = tier_label(tier);
        let props = headers::republish_props(
            &d.properties,
            false,
            &[],
            vec![
                (ATTEMPT, AMQPValue::LongLongInt(attempt.into())),
                (RETRY_TIER, headers::long_str(label.clone())),
                (ORIGIN_QUEUE, headers::long_str(origin_queue)),
                (LAST_ERROR, headers::long_str(headers::error_text(error))),
            ],
        );
        self.republish(&self.names().retry_exchange(), origin_queue, &d.data, props).await?;
        consumer::ack(d).await;
        ::metrics::counter!(metrics::RETRIED, "queue" => origin_queue.to_owned(), "tier" => label).increment(1);
        tracing::info!(queue = origin_queue, attempt, ?tier, error, "message scheduled for retry");
        Ok(RetryDecision::Retried { attempt, tier })
    }

    /// Moves `d` to the parked queue with the reason and error in headers
    /// (confirmed), then acknowledges it.
    pub async fn park(&self, d: &Delivery, origin_queue: &str, reason: &str, error: &str) -> Result<(), BrokerError> {
        let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        let props = headers::republish_props(
            &d.properties,
            true,
            &[],
            vec![
                (PARKED_REASON, headers::long_str(reason)),
                (PARKED_ERROR, headers::long_str(headers::error_text(error))),
                (ORIGIN_QUEUE, headers::long_str(origin_queue)),
                (PARKED_AT, headers::long_str(now)),
                (ATTEMPT, AMQPValue::LongLongInt(consumer::attempt(d).saturating_add(1).into())),
            ],
        );
        self.republish("", &self.names().parked(), &d.data, props).await?;
        consumer::ack(d).await;
        ::metrics::counter!(metrics::PARKED, "queue" => origin_queue.to_owned(), "reason" => reason.to_owned())
            .increment(1);
        tracing::warn!(queue = origin_queue, reason, error, "message parked");
        Ok(())
    }

    /// Closes the publisher channel and the connection. Consumers still
    /// open lose their channel and the broker requeues what they held.
    pub async fn close(&self) {
        self.inner.closed.cancel();
        self.inner.publisher.close().await;
        if self.inner.conn.status().connected()
            && let Err(e) = self.inner.conn.close(200, "bye".into()).await
        {
            tracing::debug!(error = %e, "closing the RabbitMQ connection");
        }
    }

    pub(crate) async fn channel(&self, context: impl Into<String>) -> Result<Channel, BrokerError> {
        self.inner.conn.create_channel().await.map_err(BrokerError::amqp(context))
    }

    fn remember_sync(&self, sync: &SyncName) {
        self.lock_syncs().insert(sync.clone());
    }

    fn lock_syncs(&self) -> std::sync::MutexGuard<'_, BTreeSet<SyncName>> {
        // The set stays valid even if a holder panicked.
        self.inner.syncs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("addresses", &self.inner.cfg.addresses)
            .field("prefix", &self.inner.cfg.prefix)
            .finish_non_exhaustive()
    }
}

/// JSON, persistent, with a message id.
pub(crate) fn json_props(message_id: String) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
}

/// Events have no id of their own; this one is the same for the same event
/// published twice (run, type and time), so duplicates stay recognisable.
fn event_id(e: &RunEvent) -> String {
    format!("event:{}:{}:{}:{}", e.sync, e.run_id, e.type_name(), e.at.unix_timestamp_nanos())
}

pub(crate) async fn close_quietly(ch: Channel) {
    if ch.status().connected()
        && let Err(e) = ch.close(200, "done".into()).await
    {
        tracing::debug!(error = %e, "closing a channel");
    }
}

/// One plain TCP connect to the broker's address, to tell "nothing
/// listens there" from "something answers but the AMQP handshake fails".
async fn probe_tcp(address: &BrokerAddress) -> String {
    match tcp_connect(address, tokio::time::Instant::now() + TCP_PROBE_TIMEOUT).await {
        Ok(addr) => format!("{addr} accepts TCP connections, so the AMQP handshake is failing"),
        Err(why) => why,
    }
}

/// How long one TCP probe may take: a host that drops packets never refuses.
const TCP_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probes the addresses in order, round after round, until one accepts a
/// TCP connection (a broker that is still starting) or `deadline` passes;
/// then says why each could not be reached.
async fn first_reachable(
    addresses: &BrokerAddresses,
    deadline: tokio::time::Instant,
) -> Result<&BrokerAddress, String> {
    let mut delay = Duration::from_millis(100);
    loop {
        let mut why = Vec::new();
        for address in addresses.iter() {
            let until = deadline.min(tokio::time::Instant::now() + TCP_PROBE_TIMEOUT);
            match tcp_connect(address, until).await {
                Ok(_) => return Ok(address),
                Err(e) => why.push(e),
            }
        }
        if tokio::time::Instant::now() + delay >= deadline {
            return Err(why.join("; "));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Opens and drops one TCP connection to the address's host and port;
/// returns `host:port`, or why it could not connect by `until`.
async fn tcp_connect(address: &BrokerAddress, until: tokio::time::Instant) -> Result<String, String> {
    let addr = format!("{}:{}", address.host(), address.port());
    // An IPv6 literal comes in brackets, which the resolver does not take.
    let host = address.host().trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((host, address.port()));
    match tokio::time::timeout_at(until, connect).await {
        Err(_) => Err(format!("TCP connect to {addr} timed out")),
        Ok(Err(e)) => Err(format!("TCP connect to {addr}: {e}")),
        Ok(Ok(_)) => Ok(addr),
    }
}

/// Logs connection events, so that a recovery or a blocked publisher shows
/// in the logs and metrics rather than only as slowness.
async fn log_connection_events(
    events: impl futures_lite::Stream<Item = Event> + Send + 'static,
    url: String,
    closed: CancellationToken,
    interruptions: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            () = closed.cancelled() => return,
            e = events.next() => match e { Some(e) => e, None => return },
        };
        let kind = match &event {
            Event::Connected => {
                tracing::info!(url = %url, "RabbitMQ connection (re)established");
                "connected"
            }
            Event::ConnectionBlocked(reason) => {
                tracing::warn!(url = %url, reason, "RabbitMQ blocked publishing (resource alarm)");
                "blocked"
            }
            Event::ConnectionUnblocked => {
                tracing::info!(url = %url, "RabbitMQ unblocked publishing");
                "unblocked"
            }
            Event::Error(e) => {
                interruptions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(url = %url, error = %e, "RabbitMQ connection error; recovering");
                "error"
            }
            _ => "other",
        };
        ::metrics::counter!(metrics::CONNECTION_EVENTS, "event" => kind).increment(1);
    }
}
