//! The alerts driver: follows the events stream and watches the parked
//! queue, asks `xaas_core::alerts::AlertFold` what to tell, and POSTs each
//! alert to its sync's webhook.
//!
//! - **It never blocks a run.** No stage waits for it: it only reads the
//!   events stream, which the stages write anyway. Each sync's webhook has a
//!   sender task of its own behind a bounded queue, so a slow or dead
//!   receiver holds up only that sync's later alerts (and, once the queue is
//!   full, drops them, each with a warning), never the reading.
//! - **Retried within a budget.** A 5xx, 408, 429 or network failure is
//!   retried with jittered exponential backoff, at most [`RETRIES`] times
//!   within [`RETRY_WITHIN`]; another 4xx is not retried. Then it is given up
//!   with a warning.
//! - **One sender per deployment.** Every `worker all` and `worker scheduler`
//!   whose configuration has an alerts table is a candidate; only the holder
//!   of the broker lease `alerts` (`xaas_broker::Lease`) reads and sends. A
//!   standby takes over when the holder dies.
//! - **At least once.** A new holder alerts what happened from
//!   [`CATCH_UP`] before it took over (so a failover loses nothing), which
//!   its predecessor may have sent already: each alert carries a
//!   deterministic `id` for a receiver to drop duplicates by.
//! - **Parking is seen in the parked queue**, not in the events stream: a
//!   message that crashes its handler is parked by the broker's delivery
//!   limit, and an unreadable one names no run; neither records an event.
//!   The queue is counted every [`PARKED_POLL`] (cheap: a passive declare)
//!   and listed only when the count changes. A listing holds the messages
//!   for a moment, so an operator's `xaas parked replay` at that very moment
//!   may leave them for a second replay.
//! - **The URL is a secret**: it is never logged, and request errors are
//!   logged without it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use xaas_broker::{Broker, StreamOffset, headers};
use xaas_core::SyncName;
use xaas_core::alerts::{Alert, AlertFold, AlertFormat, AlertsConfig, ParkedNote, parked_sync, webhook_url};
use xaas_core::config::{Config, EnvLookup};
use xaas_core::run_metrics::MetricDoc;

use crate::error::StartupError;

const ALERTS_SENT: &str = "xaas_alerts_sent_total";
const ALERTS_FAILED: &str = "xaas_alerts_failed_total";
const ALERTS_DROPPED: &str = "xaas_alerts_dropped_total";

/// The alert sender's metrics, for the binary's catalogue.
pub const METRICS: &[MetricDoc] = &[
    MetricDoc::counter(ALERTS_SENT, "Alerts a webhook accepted, by sync and kind"),
    MetricDoc::counter(ALERTS_FAILED, "Alerts given up after their retries, by sync and kind"),
    MetricDoc::counter(ALERTS_DROPPED, "Alerts dropped because the sync's send queue was full"),
];

/// How far back a new lease holder alerts.
pub const CATCH_UP: Duration = Duration::from_secs(300);
/// Retries of one alert after its first attempt.
pub const RETRIES: usize = 5;
/// ...and the most time they may spend waiting.
pub const RETRY_WITHIN: Duration = Duration::from_secs(60);
/// How often the parked queue is counted.
pub const PARKED_POLL: Duration = Duration::from_secs(2);
/// Alerts waiting for one sync's webhook before new ones are dropped.
const QUEUE: usize = 256;
/// One attempt's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Parked messages looked at per listing.
const PARKED_LISTING: usize = 500;

/// One sync's webhook. Its `Debug` shows no URL.
struct Hook {
    url: url::Url,
    config: AlertsConfig,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").field("format", &self.config.format).finish_non_exhaustive()
    }
}

/// The webhooks of every sync with an alerts table.
#[derive(Debug)]
pub struct Alerts {
    hooks: BTreeMap<SyncName, Hook>,
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0} (not retried)")]
    Permanent(String),
}

impl DeliveryError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

impl Alerts {
    /// Reads and checks each webhook URL from its secret: a missing or bad
    /// one stops the worker at start, naming the setting (never the URL).
    /// `None` when no sync has alerts.
    pub fn build(config: &Config, env: EnvLookup<'_>) -> Result<Option<Self>, StartupError> {
        let mut hooks = BTreeMap::new();
        for sync in config.syncs() {
            let Some(alerts) = &sync.alerts else { continue };
            let raw = alerts.webhook.resolve(env, &|p| std::fs::read_to_string(p))?;
            let url = webhook_url(alerts.webhook.setting(), raw.expose_secret(), alerts.allow_insecure_http)?;
            hooks.insert(sync.name.clone(), Hook { url, config: alerts.clone() });
        }
        Ok((!hooks.is_empty()).then_some(Self { hooks }))
    }

    /// Sends alerts while this process holds the lease, until `shutdown`.
    pub async fn run(self, broker: Broker, shutdown: CancellationToken) -> Result<(), String> {
        let client = xaas_http::build_client(concat!("xaas-sync/", env!("CARGO_PKG_VERSION")), REQUEST_TIMEOUT)
            .map_err(|e| format!("alerts: building the HTTP client: {}", e.without_url()))?;
        let mut senders = JoinSet::new();
        let mut queues = BTreeMap::new();
        for (sync, hook) in self.hooks {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(sync.clone(), (tx, hook.config.clone()));
            senders.spawn(send_loop(client.clone(), sync, hook, rx, shutdown.clone()));
        }
        let queues = Arc::new(queues);
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let lease = tokio::select! {
                () = shutdown.cancelled() => break,
                lease = broker.acquire_lease("alerts") => lease,
            };
            let mut lease = match lease {
                Ok(lease) => lease,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "alerts: cannot take part in the alerts lease; retrying");
                    pause(&shutdown, failures).await;
                    continue;
                }
            };
            failures = 0;
            tracing::info!("alerts: this process sends the alerts");
            let term = shutdown.child_token();
            let fold = Arc::new(Mutex::new(AlertFold::new(OffsetDateTime::now_utc() - CATCH_UP)));
            let mut work = JoinSet::new();
            work.spawn(follow_events(broker.clone(), fold.clone(), queues.clone(), term.clone()));
            work.spawn(watch_parked(broker.clone(), fold, queues.clone(), term.clone()));
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = lease.lost() => tracing::warn!("alerts: lost the alerts lease; standing by"),
            }
            term.cancel();
            while work.join_next().await.is_some() {}
            lease.release().await;
        }
        drop(queues);
        while senders.join_next().await.is_some() {}
        Ok(())
    }
}

type Queues = Arc<BTreeMap<SyncName, (mpsc::Sender<Alert>, AlertsConfig)>>;

/// Hands each alert to its sync's sender without waiting.
fn dispatch(queues: &Queues, alerts: Vec<Alert>) {
    for alert in alerts {
        let Some((tx, config)) = queues.get(alert.sync()) else { continue };
        if !config.wants(&alert) {
            continue;
        }
        let id = alert.id();
        if let Err(e) = tx.try_send(alert) {
            metrics::counter!(ALERTS_DROPPED, "sync" => dropped_sync(&e)).increment(1);
            tracing::warn!(alert = %id, "alerts: the webhook's queue is full (its receiver is slow or down); alert dropped");
        }
    }
}

fn dropped_sync(e: &mpsc::error::TrySendError<Alert>) -> String {
    match e {
        mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a.sync().to_string(),
    }
}

/// Follows the events stream from its first retained entry (the fold
/// needs the history to tell a recovery), resuming after a broken read.
async fn follow_events(broker: Broker, fold: Arc<Mutex<AlertFold>>, queues: Queues, stop: CancellationToken) {
    let mut next: Option<u64> = None;
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let from = next.map_or(StreamOffset::First, StreamOffset::Offset);
        match broker.events_since(from).await {
            Ok(mut stream) => loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        stream.close().await;
                        return;
                    }
                    item = stream.next() => match item {
                        Some(Ok((offset, event))) => {
                            failures = 0;
                            next = Some(offset + 1);
                            let alerts = lock(&fold).observe(&event);
                            dispatch(&queues, alerts);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "alerts: reading the events stream failed; resuming");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "alerts: cannot read the events stream; retrying"),
        }
        failures = failures.saturating_add(1);
        pause(&stop, failures).await;
    }
}

/// Counts the parked queue and lists it when the count changes.
async fn watch_parked(broker: Broker, fold: Arc<Mutex<AlertFold>>, queues: Queues, stop: CancellationToken) {
    let syncs: Vec<SyncName> = queues.keys().cloned().collect();
    let batches = format!("{}.batches.", broker.names().prefix());
    let mut last: Option<u32> = None;
    loop {
        match broker.parked_count().await {
            Ok(count) if Some(count) != last => {
                let listed = if count == 0 { Ok(Vec::new()) } else { broker.parked_list(PARKED_LISTING).await };
                match listed {
                    Ok(list) => {
                        last = Some(count);
                        let notes: Vec<ParkedNote> = list.iter().map(|m| note(m, &batches)).collect();
                        let alerts = lock(&fold).observe_parked(&notes, &syncs);
                        dispatch(&queues, alerts);
                    }
                    Err(e) => tracing::warn!(error = %e, "alerts: listing parked messages failed; retrying"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "alerts: counting parked messages failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PARKED_POLL) => {}
        }
    }
}

fn note(m: &xaas_broker::ParkedMessage, batches: &str) -> ParkedNote {
    let (sync, run) = parked_sync(&m.body, m.origin_queue.as_deref(), batches);
    ParkedNote {
        message_id: m.message_id.clone(),
        queue: m.origin_queue.clone(),
        reason: m.reason.clone(),
        error: m.error.clone(),
        parked_at: m.parked_at.clone(),
        replayed_at: headers::get_str(&m.properties, headers::REPLAYED_AT),
        sync,
        run,
    }
}

/// Posts one sync's alerts in order, each within its retry budget.
async fn send_loop(
    client: reqwest::Client,
    sync: SyncName,
    hook: Hook,
    mut rx: mpsc::Receiver<Alert>,
    stop: CancellationToken,
) {
    loop {
        let alert = tokio::select! {
            () = stop.cancelled() => return,
            alert = rx.recv() => match alert {
                Some(a) => a,
                None => return,
            },
        };
        let id = alert.id();
        let kind = alert.kind().as_str();
        let body = alert.body(hook.config.format);
        let format = match hook.config.format {
            AlertFormat::Json => "json",
            AlertFormat::Slack => "slack",
        };
        let mut attempts = 0u32;
        let post = || {
            attempts += 1;
            deliver(&client, &hook.url, &body)
        };
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = post
                .retry(backoff())
                .sleep(tokio::time::sleep)
                .when(DeliveryError::is_retryable)
                .notify(|e, wait| {
                    tracing::info!(%sync, alert = %id, error = %e, wait_ms = wait.as_millis() as u64, "alerts: webhook failed; retrying");
                }) => r,
        };
        match result {
            Ok(()) => {
                metrics::counter!(ALERTS_SENT, "sync" => sync.to_string(), "kind" => kind).increment(1);
                tracing::info!(%sync, alert = %id, format, attempts, "alerts: alert delivered");
            }
            Err(e) => {
                metrics::counter!(ALERTS_FAILED, "sync" => sync.to_string(), "kind" => kind).increment(1);
                tracing::warn!(%sync, alert = %id, attempts, error = %e, "alerts: alert not delivered; giving up");
            }
        }
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(15))
        .with_max_times(RETRIES)
        .with_total_delay(Some(RETRY_WITHIN))
}

async fn deliver(client: &reqwest::Client, url: &url::Url, body: &serde_json::Value) -> Result<(), DeliveryError> {
    let response = client
        .post(url.clone())
        .json(body)
        .send()
        .await
        .map_err(|e| DeliveryError::Retryable(chain(&e.without_url())))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let what = format!("the webhook answered {status}");
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(DeliveryError::Retryable(what))
    } else {
        Err(DeliveryError::Permanent(what))
    }
}

/// An error with its causes ("error sending request: … Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn lock(fold: &Mutex<AlertFold>) -> std::sync::MutexGuard<'_, AlertFold> {
    fold.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn pause(stop: &CancellationToken, failures: u32) {
    let wait = Duration::from_millis(500u64.saturating_mul(1 << failures.min(5)));
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}
