//! The run, sync and queue metrics of a worker that serves `/metrics`:
//! a thin driver over `xaas_core::run_metrics`, which folds the events
//! stream into the values; this file reads the stream, samples the queue
//! depths and copies both into the Prometheus recorder.
//!
//! Only the uploader, `all` and the scheduler run it (`runs_in`): each
//! follows the whole stream, and fetchers and mappers, of which there may
//! be many, would only repeat the same numbers. Events stamped before this
//! process started set the gauges but are not counted again, so a restart
//! does not replay old runs into the histograms and counters.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use xaas_broker::{Broker, StreamOffset};
use xaas_core::config::Config;
use xaas_core::roster::Roster;
use xaas_core::run_metrics::{GUARD_LABELS, MetricDoc, Observation, RETRIES, RunMetrics};
use xaas_core::{RunEvent, SyncName};

use crate::Role;
use crate::scheduler::Schedule;

pub const RUN_DURATION: &str = "xaas_run_duration_seconds";
pub const LAST_RUN_STATUS: &str = "xaas_sync_last_run_status";
pub const LAST_SUCCESS: &str = "xaas_sync_last_success_timestamp_seconds";
pub const ROSTER_USERS: &str = "xaas_sync_roster_users";
pub const RUNS_IN_FLIGHT: &str = "xaas_sync_runs_in_flight";
pub const COOLDOWN: &str = "xaas_sync_cooldown_seconds";
pub const SCHEDULE_INTERVAL: &str = "xaas_sync_schedule_interval_seconds";
pub const GUARD_TRIPPED: &str = "xaas_guard_tripped_total";
pub const QUEUE_MESSAGES: &str = "xaas_queue_messages";
pub const PARKED_MESSAGES: &str = "xaas_parked_messages";
pub const PAGES_FETCHED: &str = "xaas_pages_fetched_total";
pub const PAGES_MAPPED: &str = "xaas_pages_mapped_total";
pub const PROFILES_REJECTED: &str = "xaas_profiles_rejected_total";
pub const BULK_REQUESTS: &str = "xaas_bulk_requests_total";

/// The workers' metrics.
pub const METRICS: &[MetricDoc] = &[
    MetricDoc::counter(
        RETRIES,
        "Retries by stage (graph, okta: inside the client; fetcher, mapper, uploader: a step tried again) and reason",
    ),
    MetricDoc::counter(PAGES_FETCHED, "Graph pages read and handed to the mappers"),
    MetricDoc::counter(PAGES_MAPPED, "Pages mapped into Okta batches"),
    MetricDoc::counter(PROFILES_REJECTED, "Source users the mapper rejected (invalid for Okta)"),
    MetricDoc::counter(BULK_REQUESTS, "Bulk requests Okta accepted, by op (upsert, delete)"),
    MetricDoc::histogram(
        RUN_DURATION,
        "Runs from their start to their end, by sync, mode and outcome (completed, failed)",
    ),
    MetricDoc::gauge(LAST_RUN_STATUS, "How the sync's last run ended (dry runs aside): 1 completed, 0 failed"),
    MetricDoc::gauge(LAST_SUCCESS, "When the sync's last run (dry runs aside) completed, as a Unix time"),
    MetricDoc::gauge(ROSTER_USERS, "Users the sync holds active in Okta, as its active uploader's roster says"),
    MetricDoc::gauge(RUNS_IN_FLIGHT, "The sync's runs started and not ended (at most one works at a time)"),
    MetricDoc::gauge(COOLDOWN, "Seconds the sync's latest run has waited out Okta's cooldown between import sessions"),
    MetricDoc::gauge(SCHEDULE_INTERVAL, "Seconds between the next two due times of the sync's schedule"),
    MetricDoc::counter(GUARD_TRIPPED, "Runs whose deactivations a guard refused, by sync and guard"),
    MetricDoc::gauge(
        QUEUE_MESSAGES,
        "Messages ready in each work queue (requests, fetch, pages, batches.<sync>, parked)",
    ),
    MetricDoc::gauge(PARKED_MESSAGES, "Messages parked for an operator (one queue for every sync)"),
];

/// How often the queues are counted and the time-dependent gauges refreshed.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Whether a process of `role` exports the run and queue metrics.
pub fn runs_in(role: Role) -> bool {
    matches!(role, Role::Uploader | Role::All | Role::Scheduler)
}

/// Sets `xaas_sync_roster_users` from the active uploader's roster, when known.
pub fn roster(sync: &SyncName, roster: Option<&Roster>) {
    if let Some(r) = roster.filter(|r| r.is_known()) {
        gauge!(ROSTER_USERS, "sync" => sync.to_string()).set(r.len() as f64);
    }
}

/// Follows the events stream and samples the queues until `shutdown`.
pub async fn run(broker: Broker, config: std::sync::Arc<Config>, shutdown: CancellationToken) {
    let started = OffsetDateTime::now_utc();
    // Every series of the counter exists from the start, so that the
    // first trip is an increase that `increase()` sees.
    for s in config.syncs() {
        for guard in GUARD_LABELS {
            counter!(GUARD_TRIPPED, "sync" => s.name.to_string(), "guard" => *guard).absolute(0);
        }
    }
    let mut fold = RunMetrics::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let mut failures: u32 = 0;
    let mut next_offset: Option<u64> = None;
    loop {
        let from = next_offset.map_or(StreamOffset::First, StreamOffset::Offset);
        let mut stream = match broker.events_since(from).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the events stream; retrying");
                None
            }
        };
        loop {
            let next = async {
                match stream.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {
                    if let Some(s) = stream { s.close().await; }
                    return;
                }
                _ = tick.tick() => {
                    sample(&broker, &config, &fold).await;
                    if stream.is_none() {
                        break;
                    }
                }
                event = next => match event {
                    Some(Ok((offset, e))) => {
                        failures = 0;
                        next_offset = Some(offset + 1);
                        apply(&mut fold, &e, e.at >= started);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "metrics: reading the events stream failed; resuming");
                        break;
                    }
                    None => break,
                }
            }
        }
        if let Some(s) = stream {
            s.close().await;
        }
        failures = failures.saturating_add(1);
        let pause = Duration::from_millis(500u64.saturating_mul(1 << failures.min(5)));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Folds one event; counts what it adds when it is `new` (not history).
fn apply(fold: &mut RunMetrics, e: &RunEvent, new: bool) {
    let observations = fold.apply(e);
    if new {
        for o in observations {
            match o {
                Observation::RunEnded { sync, mode, outcome, seconds } => histogram!(
                    RUN_DURATION, "sync" => sync.to_string(), "mode" => mode.to_string(), "outcome" => outcome.label()
                )
                .record(seconds),
                Observation::GuardTripped { sync, guard } => {
                    counter!(GUARD_TRIPPED, "sync" => sync.to_string(), "guard" => guard).increment(1);
                }
            }
        }
    }
    set_gauges(fold, Some(&e.sync));
}

/// Copies the fold's gauges (of `only` one sync, or of all).
fn set_gauges(fold: &RunMetrics, only: Option<&SyncName>) {
    let now = OffsetDateTime::now_utc();
    for (sync, g) in fold.gauges(now, crate::admission::STALE) {
        if only.is_some_and(|o| o != &sync) {
            continue;
        }
        let label = sync.to_string();
        gauge!(RUNS_IN_FLIGHT, "sync" => label.clone()).set(g.in_flight as f64);
        gauge!(COOLDOWN, "sync" => label.clone()).set(g.cooldown_seconds);
        if let Some(outcome) = g.last_outcome {
            gauge!(LAST_RUN_STATUS, "sync" => label.clone()).set(outcome.status_value());
        }
        if let Some(at) = g.last_success_at {
            gauge!(LAST_SUCCESS, "sync" => label).set(at.unix_timestamp_nanos() as f64 / 1e9);
        }
    }
}

/// The queue depths, the schedules and the gauges that move with time.
async fn sample(broker: &Broker, config: &Config, fold: &RunMetrics) {
    let names = broker.names();
    let mut queues = vec![
        ("requests".to_string(), names.requests()),
        ("fetch".to_string(), names.fetch()),
        ("pages".to_string(), names.pages()),
        ("parked".to_string(), names.parked()),
    ];
    for s in config.syncs() {
        queues.push((format!("batches.{}", s.name), names.batches(&s.name)));
    }
    for (label, queue) in queues {
        match broker.queue_depth(&queue).await {
            Ok(n) => {
                gauge!(QUEUE_MESSAGES, "queue" => label.clone()).set(f64::from(n));
                if label == "parked" {
                    gauge!(PARKED_MESSAGES).set(f64::from(n));
                }
            }
            Err(e) => tracing::debug!(%queue, error = %e, "metrics: cannot count the queue"),
        }
    }
    let now = OffsetDateTime::now_utc();
    for s in config.syncs() {
        let Some(expr) = s.schedule.as_deref() else { continue };
        // A bad expression is the scheduler's to report.
        let Ok(schedule) = Schedule::parse(&s.name, s.schedule_mode, expr) else { continue };
        if let Some(first) = schedule.next_after(now)
            && let Some(second) = schedule.next_after(first)
        {
            gauge!(SCHEDULE_INTERVAL, "sync" => s.name.to_string()).set((second - first).as_seconds_f64());
        }
    }
    set_gauges(fold, None);
}
