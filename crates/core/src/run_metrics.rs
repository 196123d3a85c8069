//! What the metrics say about runs, folded from the events stream.
//!
//! Every number here follows from `RunEvent`s alone, so any process that
//! reads the stream arrives at the same values; the worker's driver
//! (`xaas_workers::run_metrics`) only copies them into gauges, counters
//! and histograms. Also here: the catalogue type every crate lists its
//! metrics with, and the bounded label values (guard, retry reason) that
//! free-text reasons are reduced to, so a label never grows without bound.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use time::OffsetDateTime;

use crate::ids::{RunId, SyncName};
use crate::messages::{EventKind, Mode, RunEvent};

/// `xaas_retries_total{stage,reason}`: one name for every retry, whichever
/// crate makes it (`stage` = graph | okta | fetcher | mapper | uploader).
pub const RETRIES: &str = "xaas_retries_total";

/// The kind of a metric, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric: its name, type and help text. Each crate lists its
/// own; the binary describes them all, and the deploy test checks that the
/// dashboard and the alert rules use only these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDoc {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
}

impl MetricDoc {
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: MetricKind::Counter, help }
    }
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: MetricKind::Gauge, help }
    }
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: MetricKind::Histogram, help }
    }
}

/// How a run ended, as `xaas_run_duration_seconds{outcome}` and
/// `xaas_sync_last_run_status` (1 completed, 0 failed) say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// The value of `xaas_sync_last_run_status`.
    pub fn status_value(self) -> f64 {
        match self {
            Self::Completed => 1.0,
            Self::Failed => 0.0,
        }
    }
}

/// Something to count or observe once, as the event that caused it is read.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A run ended: `xaas_run_duration_seconds{sync,mode,outcome}`.
    RunEnded { sync: SyncName, mode: Mode, outcome: Outcome, seconds: f64 },
    /// `xaas_guard_tripped_total{sync,guard}`.
    GuardTripped { sync: SyncName, guard: &'static str },
}

/// The per-sync values of the gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncGauges {
    /// How the last run that changes Okta (not a dry run) ended.
    pub last_outcome: Option<Outcome>,
    /// When the last such run completed.
    pub last_success_at: Option<OffsetDateTime>,
    /// Runs claimed and not ended, that recorded something within `stale`.
    pub in_flight: usize,
    /// Seconds the latest claimed run has waited out Okta's cooldown so far.
    pub cooldown_seconds: f64,
}

#[derive(Debug, Clone)]
struct RunSeen {
    started_at: Option<OffsetDateTime>,
    last_at: OffsetDateTime,
    mode: Mode,
    dry_run: bool,
    ended: bool,
    cooldown_seconds: f64,
}

#[derive(Debug, Clone, Default)]
struct SyncSeen {
    last_outcome: Option<Outcome>,
    last_success_at: Option<OffsetDateTime>,
    /// The run of the latest `RunStarted`.
    latest: Option<RunId>,
}

/// The fold. Feed it every event in stream order with [`RunMetrics::apply`].
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    runs: HashMap<(SyncName, RunId), RunSeen>,
    syncs: BTreeMap<SyncName, SyncSeen>,
}

impl RunMetrics {
    /// Folds one event; returns what it adds to the counters and histograms.
    pub fn apply(&mut self, e: &RunEvent) -> Vec<Observation> {
        let key = (e.sync.clone(), e.run_id.clone());
        let run = self.runs.entry(key).or_insert(RunSeen {
            started_at: None,
            last_at: e.at,
            mode: Mode::Full,
            dry_run: false,
            ended: false,
            cooldown_seconds: 0.0,
        });
        run.last_at = run.last_at.max(e.at);
        let sync = self.syncs.entry(e.sync.clone()).or_default();
        let mut out = Vec::new();
        if run.ended {
            // A second RunFailed (another stage giving up on the same run)
            // is not a second run.
            return out;
        }
        let outcome = match &e.kind {
            EventKind::RunStarted { options } => {
                run.started_at = Some(e.at);
                run.mode = options.mode;
                run.dry_run = options.dry_run;
                sync.latest = Some(e.run_id.clone());
                None
            }
            EventKind::RunQueued { options, .. } => {
                run.mode = options.mode;
                run.dry_run = options.dry_run;
                None
            }
            EventKind::RunMerged { .. } => {
                // Served by another run: this request has no outcome of its own.
                run.ended = true;
                None
            }
            EventKind::GuardTripped { reason, .. } => {
                out.push(Observation::GuardTripped { sync: e.sync.clone(), guard: guard_label(reason) });
                None
            }
            EventKind::CooldownWaited { seconds } => {
                run.cooldown_seconds += seconds;
                None
            }
            EventKind::RunCompleted { .. } => Some(Outcome::Completed),
            EventKind::RunFailed { .. } => Some(Outcome::Failed),
            _ => None,
        };
        if let Some(outcome) = outcome {
            run.ended = true;
            let started = run.started_at.unwrap_or(e.at);
            let seconds = (e.at - started).as_seconds_f64().max(0.0);
            out.push(Observation::RunEnded { sync: e.sync.clone(), mode: run.mode, outcome, seconds });
            // A dry run changes nothing in Okta: it neither is a success
            // that keeps the sync current nor a failure to page anyone for.
            if !run.dry_run {
                sync.last_outcome = Some(outcome);
                if outcome == Outcome::Completed {
                    sync.last_success_at = Some(e.at);
                }
            }
        }
        out
    }

    /// The syncs seen so far, each with its gauge values at `now`.
    pub fn gauges(&self, now: OffsetDateTime, stale: Duration) -> BTreeMap<SyncName, SyncGauges> {
        let mut all: BTreeMap<SyncName, SyncGauges> = self
            .syncs
            .iter()
            .map(|(name, seen)| {
                let cooldown_seconds = seen
                    .latest
                    .as_ref()
                    .and_then(|run| self.runs.get(&(name.clone(), run.clone())))
                    .map_or(0.0, |r| r.cooldown_seconds);
                let g = SyncGauges {
                    last_outcome: seen.last_outcome,
                    last_success_at: seen.last_success_at,
                    in_flight: 0,
                    cooldown_seconds,
                };
                (name.clone(), g)
            })
            .collect();
        for ((sync, _), run) in &self.runs {
            if run.started_at.is_some() && !run.ended && now - run.last_at <= stale {
                all.entry(sync.clone()).or_default().in_flight += 1;
            }
        }
        all
    }
}

/// Every value [`guard_label`] returns, so that each counter can start at 0.
pub const GUARD_LABELS: &[&str] =
    &["partial_data", "unknown_roster", "empty_source", "max_deactivations", "max_deactivations_percent", "other"];

/// The `guard` label of a `GuardTripped` reason (the texts of
/// `reconcile::guard::check`; its tests pin each one).
pub fn guard_label(reason: &str) -> &'static str {
    if reason.contains("the data is partial") {
        "partial_data"
    } else if reason.contains("this sync left active in Okta is unknown") {
        "unknown_roster"
    } else if reason.contains("the source returned no users") {
        "empty_source"
    } else if reason.contains("exceed max_deactivations =") {
        "max_deactivations"
    } else if reason.contains("max_deactivations_percent") {
        "max_deactivations_percent"
    } else {
        "other"
    }
}

/// The `reason` label of an uploader's `Retrying` (the text of the Okta
/// error it retries, see `xaas_okta::OktaError`).
pub fn uploader_retry_reason(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("rate limit") {
        "rate_limited"
    } else if r.contains("okta failed with") {
        "server"
    } else if r.contains("refused to open an import session") {
        "create_refused"
    } else if r.contains("could not reach okta") {
        "transport"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::RunOptions;
    use crate::reconcile::Guards;
    use crate::reconcile::guard::{Facts, Verdict, check};

    const STALE: Duration = Duration::from_secs(3600);

    fn sync() -> SyncName {
        SyncName::parse("demo").unwrap()
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    fn ev(run: &str, secs: i64, kind: EventKind) -> RunEvent {
        RunEvent::new(RunId::parse(run).unwrap(), sync(), at(secs), kind)
    }

    fn started(run: &str, secs: i64, options: RunOptions) -> RunEvent {
        ev(run, secs, EventKind::RunStarted { options })
    }

    fn fold(events: &[RunEvent]) -> (RunMetrics, Vec<Observation>) {
        let mut m = RunMetrics::default();
        let obs = events.iter().flat_map(|e| m.apply(e)).collect();
        (m, obs)
    }

    #[test]
    fn a_completed_run_is_observed_once_with_its_duration_and_sets_the_last_success() {
        let events = [
            started("a", 0, RunOptions { mode: Mode::Delta, ..RunOptions::default() }),
            ev("a", 3, EventKind::CooldownWaited { seconds: 2.5 }),
            ev("a", 10, EventKind::RunCompleted { delta_link: None }),
            // A late duplicate changes nothing.
            ev("a", 11, EventKind::RunFailed { reason: "late".into() }),
        ];
        let (m, obs) = fold(&events);
        assert_eq!(
            obs,
            vec![Observation::RunEnded { sync: sync(), mode: Mode::Delta, outcome: Outcome::Completed, seconds: 10.0 }]
        );
        let g = &m.gauges(at(12), STALE)[&sync()];
        let expected = SyncGauges {
            last_outcome: Some(Outcome::Completed),
            last_success_at: Some(at(10)),
            in_flight: 0,
            cooldown_seconds: 2.5,
        };
        assert_eq!(g, &expected);
    }

    #[test]
    fn a_failure_after_a_success_keeps_the_success_time_and_a_tripped_guard_is_labelled() {
        let events = [
            started("a", 0, RunOptions::default()),
            ev("a", 5, EventKind::RunCompleted { delta_link: None }),
            started("b", 20, RunOptions::default()),
            ev(
                "b",
                25,
                EventKind::GuardTripped {
                    reason: "the source returned no users, but 10 are active in Okta".into(),
                    deactivations: 10,
                    roster: 10,
                },
            ),
            ev("b", 26, EventKind::RunFailed { reason: "deactivation guard".into() }),
        ];
        let (m, obs) = fold(&events);
        assert!(obs.contains(&Observation::GuardTripped { sync: sync(), guard: "empty_source" }), "{obs:?}");
        assert!(obs.contains(&Observation::RunEnded {
            sync: sync(),
            mode: Mode::Full,
            outcome: Outcome::Failed,
            seconds: 6.0
        }));
        let g = &m.gauges(at(30), STALE)[&sync()];
        assert_eq!((g.last_outcome, g.last_success_at), (Some(Outcome::Failed), Some(at(5))));
        assert_eq!(Outcome::Failed.status_value(), 0.0);
    }

    #[test]
    fn runs_in_flight_exclude_queued_merged_ended_and_silent_runs_and_dry_runs_leave_the_status_alone() {
        let dry = RunOptions { dry_run: true, ..RunOptions::default() };
        let events = [
            started("a", 0, RunOptions::default()),
            ev("q", 1, EventKind::RunQueued { behind: RunId::parse("a").unwrap(), options: RunOptions::default() }),
            ev("m", 2, EventKind::RunMerged { into: RunId::parse("q").unwrap() }),
            started("old", -10_000, RunOptions::default()),
            started("d", 3, dry),
            ev("d", 4, EventKind::RunFailed { reason: "x".into() }),
        ];
        let (m, obs) = fold(&events);
        let g = &m.gauges(at(5), STALE)[&sync()];
        assert_eq!(g.in_flight, 1, "only a: q waits, m was merged, d ended, old is silent");
        assert_eq!(g.last_outcome, None, "a dry run's failure is not the sync's status");
        assert_eq!(obs.len(), 1, "the dry run's duration is still observed: {obs:?}");
    }

    #[test]
    fn every_refusal_of_the_guards_has_its_own_label() {
        let guards = Guards { max_deactivations: Some(5), max_deactivations_percent: Some(10.0) };
        let full = Facts { candidates: 50, roster: Some(100), reads_full_state: true, returned: 100, partial: None };
        let cases = [
            (Facts { partial: Some("the page chain ended early".into()), ..full.clone() }, "partial_data"),
            (Facts { roster: None, reads_full_state: false, ..full.clone() }, "unknown_roster"),
            (Facts { returned: 0, ..full.clone() }, "empty_source"),
            (full.clone(), "max_deactivations"),
            (
                full.clone(),
                // Without the count limit, the share limit speaks.
                "max_deactivations_percent",
            ),
        ];
        for (i, (facts, label)) in cases.into_iter().enumerate() {
            let g = if i == 4 { Guards { max_deactivations: None, ..guards } } else { guards };
            let Verdict::Refused(why) = check(&sync(), &facts, &g, false) else { panic!("case {i} is refused") };
            assert_eq!(guard_label(&why), label, "{why}");
            assert!(GUARD_LABELS.contains(&label));
        }
        assert_eq!(guard_label("something new"), "other");
    }

    #[test]
    fn uploader_retry_reasons_are_a_few_fixed_labels() {
        assert_eq!(uploader_retry_reason("Okta failed with 503 (Service Unavailable); retry later"), "server");
        assert_eq!(uploader_retry_reason("Okta rate limit exceeded; the window resets in 3s."), "rate_limited");
        assert_eq!(uploader_retry_reason("could not reach Okta for bulk_upsert: reset"), "transport");
        assert_eq!(uploader_retry_reason("Okta refused to open an import session (x): wait"), "create_refused");
        assert_eq!(uploader_retry_reason("?"), "other");
    }
}
