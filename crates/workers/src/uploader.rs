//! The uploader's driver: carries out what the upload machine
//! (`xaas_core::upload`) decides, against the broker and Okta. Every rule
//! lives in the machine; this file only moves messages, calls and timers.
//!
//! One uploader is active per sync: the batches queue has a single active
//! consumer, and the others stand by. A **term** is one subscription:
//! - standing by until the broker delivers (which makes it the active one);
//! - waiting [`TAKEOVER_GRACE`], so that a predecessor that lost its
//!   consumer a moment ago has stopped and its last records are in the log;
//! - reading the log (events and roster) into the machine;
//! - acting until its consumer or connection is lost: then it stops at
//!   once — no Okta call after that point — and stands by again. Each term
//!   has a connection of its own that is never recovered, so "lost" cannot
//!   be papered over by a reconnect that silently subscribes it again.
//!
//! The contract the machine relies on: commands run in order; a record is
//! confirmed before the next command; at most one Okta call or sleep is
//! outstanding.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_lite::StreamExt;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use xaas_broker::{Broker, BrokerError, Consumer, Delivery, Incoming};
use xaas_core::upload::{self, Answer, Call, CallId, Command, Failure, Input, Key, Reply, SessionInfo, TimerId, Why};
use xaas_core::{EventKind, Op, RunEvent, SyncName, UploaderMessage};
use xaas_okta::{OktaClient, OktaError, Session};

use crate::deps::Deps;

/// Deliveries the uploader may hold unacked. A partial request holds at most
/// `profiles_per_request - 1` profiles, so this bounds nothing in practice
/// but keeps a misbehaving producer from flooding memory.
pub const PREFETCH: u16 = 1000;

/// How long a newly active uploader waits before it reads the log. A
/// predecessor that lost its consumer notices within moments (its
/// connection or channel closes) and makes no Okta call after that; this
/// wait covers the moment, so that its last records are in the log the
/// successor reads.
pub const TAKEOVER_GRACE: Duration = Duration::from_secs(3);

/// Why the uploader stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// SIGTERM: leave everything unacked; the successor resumes from the events.
    #[error("shutting down")]
    Shutdown,
    /// The broker could not be reached to subscribe or to read the log.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The configuration cannot work.
    #[error("{0}")]
    Fatal(String),
}

/// The uploader of one sync.
pub struct Uploader {
    deps: Deps,
    sync: SyncName,
    okta: OktaClient,
    settings: upload::Settings,
    shutdown: CancellationToken,
}

/// How a term ended.
enum Ended {
    Shutdown,
    /// The consumer or connection is gone; why.
    Lost(String),
}

type OktaFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// What one term holds besides the machine.
struct Term {
    machine: upload::Uploader,
    deliveries: HashMap<Key, (Delivery, String)>,
    next_key: u64,
    call: Option<(CallId, &'static str, OktaFuture)>,
    timer: Option<(TimerId, tokio::time::Instant)>,
    /// The broker's interruption count when the term began.
    epoch: u64,
}

impl Uploader {
    pub fn new(deps: Deps, sync: SyncName, shutdown: CancellationToken) -> Result<Self, Stop> {
        let clients = deps.sync(&sync).ok_or_else(|| Stop::Fatal(format!("no sync named {sync} is configured")))?;
        let config = &clients.config;
        let settings = upload::Settings {
            sync: sync.clone(),
            limits: config.limits,
            guards: config.guards,
            retry: config.retry,
            sabotage: upload::Sabotage::NONE,
        };
        // `Needs::of` gives every uploading process its Okta clients.
        let okta = clients.okta().cloned().ok_or_else(|| Stop::Fatal("this worker has no Okta client".into()))?;
        Ok(Self { deps, sync, okta, settings, shutdown })
    }

    /// Runs terms until shutdown. Returns an error only when the broker
    /// cannot be used at all; the caller restarts the uploader.
    pub async fn run(self) -> Result<(), Stop> {
        loop {
            match self.term().await? {
                Ended::Shutdown => return Ok(()),
                Ended::Lost(why) => {
                    tracing::warn!(sync = %self.sync, %why, "uploader lost its consumer; it stops acting and stands by again");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn term(&self) -> Result<Ended, Stop> {
        // A connection of its own that is never recovered: when it or its
        // channel fails, the term is over (see `Broker::detached`).
        let link = self.deps.broker.detached(&format!("uploader/{}", self.sync)).await?;
        let result = self.term_on(&link).await;
        link.close().await;
        result
    }

    async fn term_on(&self, broker: &Broker) -> Result<Ended, Stop> {
        let queue = broker.names().batches(&self.sync);
        let tag = format!("{}/uploader/{}", broker.config().connection_name, self.sync);
        let mut consumer = broker.consume_once(&queue, PREFETCH, &tag).await?;
        let epoch = broker.interruptions();
        tracing::info!(sync = %self.sync, %queue, "uploader standing by until it is the active consumer");
        let first = tokio::select! {
            () = self.shutdown.cancelled() => return Ok(self.end(consumer, Ended::Shutdown).await),
            next = consumer.next() => next,
        };
        let first = match first {
            Some(Ok(incoming)) => incoming,
            Some(Err(e)) => return Ok(self.end(consumer, Ended::Lost(e.to_string())).await),
            None => return Ok(self.end(consumer, Ended::Lost("the broker cancelled the consumer".into())).await),
        };
        tokio::select! {
            () = self.shutdown.cancelled() => return Ok(self.end(consumer, Ended::Shutdown).await),
            () = tokio::time::sleep(TAKEOVER_GRACE) => {}
        }
        let events = broker.read_all_events().await?;
        let roster = broker.read_roster(&self.sync).await?;
        tracing::info!(sync = %self.sync, events = events.len(), roster = roster.len(), "uploader is active; state rebuilt from the log");
        let mut term = Term {
            machine: upload::Uploader::new(self.settings.clone()),
            deliveries: HashMap::new(),
            next_key: 0,
            call: None,
            timer: None,
            epoch,
        };
        let mut next = self.feed(broker, &mut term, &mut consumer, Input::Gained { events, roster }).await;
        if next.is_ok() {
            next = self.take(broker, &mut term, &mut consumer, first).await;
        }
        let ended = loop {
            if let Err(lost) = next {
                break lost;
            }
            let call = async {
                match term.call.as_mut() {
                    Some((_, _, future)) => future.await,
                    None => std::future::pending().await,
                }
            };
            let timer = async {
                match term.timer {
                    Some((_, at)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break Ended::Shutdown,
                delivery = consumer.next() => match delivery {
                    Some(Ok(incoming)) => {
                        next = self.take(broker, &mut term, &mut consumer, incoming).await;
                        continue;
                    }
                    Some(Err(e)) => break Ended::Lost(e.to_string()),
                    None => break Ended::Lost("the broker cancelled the consumer".into()),
                },
                reply = call => {
                    let (call, name, _) = term.call.take().expect("a call was outstanding");
                    hit_failpoint(name, &reply);
                    Input::Okta { call, reply }
                }
                () = timer => {
                    let (timer, _) = term.timer.take().expect("a timer was set");
                    Input::Timer { timer }
                }
            };
            next = self.feed(broker, &mut term, &mut consumer, input).await;
        };
        // Unacked deliveries go back to the queue when the channel closes.
        Ok(self.end(consumer, ended).await)
    }

    async fn end(&self, consumer: Consumer, ended: Ended) -> Ended {
        consumer.close().await;
        ended
    }

    /// A delivery: parked when it cannot be read, else handed to the machine.
    async fn take(
        &self,
        broker: &Broker,
        term: &mut Term,
        consumer: &mut Consumer,
        incoming: Incoming,
    ) -> Result<(), Ended> {
        let origin = incoming.queue().to_string();
        let decoded = incoming
            .decode::<serde_json::Value>()
            .map_err(|e| e.to_string())
            .and_then(|_| UploaderMessage::from_json(incoming.body()).map_err(|e| e.to_string()));
        let delivery = incoming.into_delivery();
        match decoded {
            Err(error) => {
                tracing::warn!(sync = %self.sync, error, "parking an undecodable message");
                broker.park(&delivery, &origin, "undecodable", &error).await.map_err(lost)
            }
            Ok(message) => {
                term.next_key += 1;
                let key = Key(term.next_key);
                term.deliveries.insert(key, (delivery, origin));
                self.feed(broker, term, consumer, Input::Message { key, message }).await
            }
        }
    }

    /// Hands one input to the machine and carries out what it decides.
    async fn feed(&self, broker: &Broker, term: &mut Term, consumer: &mut Consumer, input: Input) -> Result<(), Ended> {
        let commands = term.machine.handle(OffsetDateTime::now_utc(), input);
        for command in commands {
            self.execute(broker, term, consumer, command).await?;
        }
        crate::run_metrics::roster(&self.sync, term.machine.roster());
        Ok(())
    }

    async fn execute(
        &self,
        broker: &Broker,
        term: &mut Term,
        consumer: &mut Consumer,
        command: Command,
    ) -> Result<(), Ended> {
        match command {
            Command::Record(event) => {
                log_event(&event);
                broker.publish_event(&event).await.map_err(lost)?;
            }
            Command::SaveRoster(record) => broker.publish_roster(&record).await.map_err(lost)?,
            Command::Publish(finish) => {
                broker.publish(&broker.names().batches(&self.sync), &finish).await.map_err(lost)?
            }
            Command::Ack(key) => {
                if let Some((delivery, _)) = term.deliveries.remove(&key) {
                    xaas_broker::ack(&delivery).await;
                }
            }
            Command::Park { key, reason, error } => {
                if let Some((delivery, origin)) = term.deliveries.remove(&key) {
                    tracing::warn!(sync = %self.sync, %reason, %error, "parking a message");
                    broker.park(&delivery, &origin, &reason, &error).await.map_err(lost)?;
                }
            }
            Command::Okta { call, request } => {
                // The fence: an uploader whose consumer may be another's
                // now calls Okta no more.
                if !consumer.is_open() || !broker.is_connected() || broker.interruptions() != term.epoch {
                    return Err(Ended::Lost("the broker connection was interrupted".into()));
                }
                let name = request.name();
                term.call = Some((call, name, Box::pin(call_okta(self.okta.clone(), request))));
            }
            Command::Sleep { timer, until, why } => {
                let wait = Duration::try_from(until - OffsetDateTime::now_utc()).unwrap_or_default();
                if why == Why::Cooldown {
                    tracing::info!(sync = %self.sync, seconds = wait.as_secs_f64(), "waiting out Okta's cooldown");
                    crate::failpoint::hit("uploader.cooldown_wait");
                }
                term.timer = Some((timer, tokio::time::Instant::now() + wait));
            }
        }
        Ok(())
    }
}

fn lost(e: BrokerError) -> Ended {
    Ended::Lost(format!("the broker could not record a step: {e}"))
}

/// Crash points between Okta's answer and its record (`failpoint`).
fn hit_failpoint(call: &str, reply: &Reply) {
    if reply.result.is_ok() {
        match call {
            "bulk_upsert" | "bulk_delete" => {
                metrics::counter!(crate::run_metrics::BULK_REQUESTS, "op" => if call == "bulk_upsert" { "upsert" } else { "delete" })
                    .increment(1);
                crate::failpoint::hit("uploader.after_bulk_accepted");
            }
            "start_import" => crate::failpoint::hit("uploader.after_trigger"),
            _ => {}
        }
    }
}

/// The steps worth a log line.
fn log_event(e: &RunEvent) {
    let (sync, run) = (&e.sync, &e.run_id);
    match &e.kind {
        EventKind::SessionOpened { session_id } => tracing::info!(%sync, %run, session = %session_id, "session opened"),
        EventKind::SessionTriggered { session_id, requests, .. } => {
            tracing::info!(%sync, %run, session = %session_id, requests, "import triggered");
        }
        EventKind::Retrying { reason, attempt, .. } => {
            let label = xaas_core::run_metrics::uploader_retry_reason(reason);
            metrics::counter!(xaas_core::run_metrics::RETRIES, "stage" => "uploader", "reason" => label).increment(1);
            tracing::warn!(%sync, %run, attempt, %reason, "retrying an Okta call");
        }
        EventKind::GuardTripped { reason, .. } => tracing::warn!(%sync, %run, %reason, "deactivation guard tripped"),
        EventKind::GuardOverridden { reason, .. } => {
            tracing::warn!(%sync, %run, %reason, "deactivation guard overridden for this run");
        }
        EventKind::RunCompleted { .. } => tracing::info!(%sync, %run, "run completed"),
        EventKind::RunFailed { reason } => tracing::error!(%sync, %run, %reason, "run failed"),
        _ => {}
    }
}

/// Makes one Okta call and says what came of it, with Okta's clock (the
/// `Date` of a session's answer).
async fn call_okta(okta: OktaClient, request: Call) -> Reply {
    let one = |s: Session| (s.okta_date, Answer::Session(SessionInfo { id: s.id, status: s.status }));
    let result = match request {
        Call::CreateSession => okta.create_session().await.map(one),
        Call::ListSessions => okta.list_sessions().await.map(|list| {
            let date = list.first().and_then(|s| s.okta_date);
            (date, Answer::Sessions(list.into_iter().map(|s| SessionInfo { id: s.id, status: s.status }).collect()))
        }),
        Call::GetSession { session: id } => okta.get_session(&id).await.map(one),
        Call::CancelSession { session: id } => okta.delete_session(&id).await.map(|()| (None, Answer::Accepted)),
        Call::Bulk { session: id, op: Op::Upsert, profiles } => {
            okta.bulk_upsert(&id, &profiles).await.map(|()| (None, Answer::Accepted))
        }
        Call::Bulk { session: id, op: Op::Delete, profiles } => {
            okta.bulk_delete(&id, &profiles).await.map(|()| (None, Answer::Accepted))
        }
        Call::StartImport { session: id } => okta.start_import(&id).await.map(one),
    };
    match result {
        Ok((okta_date, answer)) => Reply::ok(answer, okta_date),
        Err(e) => Reply::failed(failure(e), None),
    }
}

/// An Okta client error, by what the machine does about it.
pub fn failure(e: OktaError) -> Failure {
    match e {
        OktaError::CreateRefused { summary } => Failure::CreateRefused { summary },
        OktaError::Validation { summary, causes, .. } => Failure::Invalid { summary, causes },
        e if e.is_retryable() => Failure::Transient { retry_after: e.retry_after(), reason: e.to_string() },
        e => Failure::Fatal { reason: e.to_string() },
    }
}
