//! `xaas worker scheduler`: starts each sync's runs on its cron schedule.
//!
//! A schedule is the sync's `schedule` setting: five cron fields (minute
//! granularity, like `"0 9 17 * *"`), or six with seconds first; evaluated
//! in UTC. At each due time the scheduler publishes a `SyncRequest` of the
//! sync's `schedule_mode`, with a run id derived from the sync and the due
//! time, so that a request published twice (a scheduler restarted at the
//! wrong moment, or two schedulers) is one run. Whether the run starts now,
//! waits for the one in flight or is merged into a waiting one is the
//! fetcher's decision (`admission`), the same as for any request.
//!
//! A due time missed while no scheduler ran is not made up: the next one
//! is. Run one scheduler per deployment.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use xaas_core::{Mode, RunId, SyncName, SyncRequest};

use crate::deps::Deps;
use crate::error::StartupError;

/// One sync's schedule, parsed.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub sync: SyncName,
    pub mode: Mode,
    cron: Cron,
}

impl Schedule {
    /// Parses `expression`; the error names the setting and shows the format.
    pub fn parse(sync: &SyncName, mode: Mode, expression: &str) -> Result<Self, StartupError> {
        let cron = CronParser::builder().seconds(Seconds::Optional).build().parse(expression).map_err(|e| {
            StartupError::Other(format!(
                "syncs.{sync}.schedule: {expression:?} is not a cron expression ({e}); use five fields like \
                 \"0 9 17 * *\" (minute hour day month weekday, UTC), or six with seconds first"
            ))
        })?;
        Ok(Self { sync: sync.clone(), mode, cron })
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let start = DateTime::<Utc>::from_timestamp(after.unix_timestamp(), after.nanosecond())?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
    }

    /// The request for the run due at `due`; the same due time gives the same run.
    pub fn request(&self, due: OffsetDateTime) -> SyncRequest {
        let run_id =
            RunId::parse(format!("sched-{}-{}", self.sync, due.unix_timestamp())).unwrap_or_else(|_| RunId::generate());
        SyncRequest {
            v: xaas_core::MESSAGE_VERSION,
            sync: self.sync.clone(),
            mode: self.mode,
            dry_run: false,
            run_id: Some(run_id),
            force: false,
            allow_mass_deactivation: false,
            users: Vec::new(),
        }
    }
}

/// The schedules of every configured sync that has one.
pub fn schedules(deps: &Deps) -> Result<Vec<Schedule>, StartupError> {
    deps.config
        .syncs()
        .filter_map(|s| s.schedule.as_deref().map(|expr| Schedule::parse(&s.name, s.schedule_mode, expr)))
        .collect()
}

/// Publishes each sync's requests when they are due, until `shutdown`.
pub async fn run(deps: Deps, shutdown: CancellationToken) -> Result<(), String> {
    let schedules = schedules(&deps).map_err(|e| e.to_string())?;
    if schedules.is_empty() {
        tracing::warn!("no sync has a schedule; the scheduler has nothing to do");
    }
    let mut tasks = JoinSet::new();
    for schedule in schedules {
        tasks.spawn(follow(deps.clone(), schedule, shutdown.clone()));
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            return Err(format!("a schedule task crashed: {e}"));
        }
    }
    Ok(())
}

async fn follow(deps: Deps, schedule: Schedule, shutdown: CancellationToken) {
    let queue = deps.broker.names().requests();
    let mut after = OffsetDateTime::now_utc();
    loop {
        let Some(due) = schedule.next_after(after) else {
            tracing::warn!(sync = %schedule.sync, "the schedule has no future due time; stopping it");
            return;
        };
        let wait = Duration::try_from(due - OffsetDateTime::now_utc()).unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let request = schedule.request(due);
        // Keep trying until it is confirmed (or we stop): a due run is not dropped for a broker hiccup.
        let mut failures = 0u32;
        loop {
            match deps.broker.publish(&queue, &request).await {
                Ok(()) => {
                    tracing::info!(sync = %schedule.sync, run_id = ?request.run_id, mode = %schedule.mode, "scheduled run requested");
                    break;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(sync = %schedule.sync, error = %e, failures, "could not publish a scheduled request; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(u64::from(failures.min(30)))) => {}
                    }
                }
            }
        }
        after = due;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn five_fields_are_minutes_and_six_have_seconds() {
        let sync = SyncName::parse("demo").unwrap();
        let monthly = Schedule::parse(&sync, Mode::Full, "0 9 17 * *").unwrap();
        assert_eq!(monthly.next_after(at("2025-03-17T09:00:00Z")), Some(at("2025-04-17T09:00:00Z")));
        let every3 = Schedule::parse(&sync, Mode::Delta, "*/3 * * * * *").unwrap();
        assert_eq!(every3.next_after(at("2025-03-17T09:00:01Z")), Some(at("2025-03-17T09:00:03Z")));
        let due = at("2025-03-17T09:00:03Z");
        assert_eq!(every3.request(due), every3.request(due), "one due time, one run");
        assert_eq!(every3.request(due).mode, Mode::Delta);
    }

    #[test]
    fn a_bad_expression_names_the_setting() {
        let sync = SyncName::parse("demo").unwrap();
        let err = Schedule::parse(&sync, Mode::Full, "every day").unwrap_err().to_string();
        assert!(err.starts_with("syncs.demo.schedule: \"every day\" is not a cron expression"), "{err}");
    }
}
