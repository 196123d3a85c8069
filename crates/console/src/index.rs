//! The console's picture of every run: one incremental fold per run
//! (`xaas_core::report::RunFold`), fed by `tail` as events arrive, so that
//! a page view or a progress update reads memory instead of the stream.
//!
//! Pure: no I/O, no clock. What an event means is the report module's
//! business; this only files each event under its run.

use std::collections::HashMap;

use time::OffsetDateTime;
use xaas_core::report::{Plan, PlanFold, RunFold, RunReport, RunState, Timeline};
use xaas_core::{RunEvent, RunId, SyncName};

/// Every run the events stream still holds, folded.
#[derive(Debug, Default)]
pub struct RunIndex {
    runs: HashMap<RunId, Entry>,
    /// Run ids in the order their first event arrived (newest last).
    order: Vec<RunId>,
    /// The latest completed run of each sync, by when it finished.
    last_success: HashMap<SyncName, (OffsetDateTime, RunId)>,
    /// Offset of the last event applied, to resume from after a reconnect.
    offset: Option<u64>,
    /// Bumped by every event applied; live views wait for it to move.
    version: u64,
}

#[derive(Debug)]
struct Entry {
    sync: SyncName,
    fold: RunFold,
    /// Kept for dry runs only: their plan is the deliverable, and one entry
    /// per user is too much to keep for every real run of the week.
    plan: Option<PlanFold>,
    /// `version` of the index when this run last changed.
    version: u64,
}

/// The runs of one sync, newest first.
#[derive(Debug, Clone)]
pub struct SyncRuns {
    pub sync: SyncName,
    pub runs: Vec<RunReport>,
    /// How many runs of this sync the stream holds in all.
    pub total: usize,
    pub last_success: Option<RunReport>,
}

impl RunIndex {
    /// Files one event under its run. An offset at or before the last one
    /// applied is a re-read (after a reconnect) and changes nothing.
    pub fn apply(&mut self, offset: u64, e: &RunEvent) {
        if self.offset.is_some_and(|last| offset <= last) {
            return;
        }
        self.offset = Some(offset);
        self.version += 1;
        let entry = self.runs.entry(e.run_id.clone()).or_insert_with(|| {
            self.order.push(e.run_id.clone());
            Entry { sync: e.sync.clone(), fold: RunFold::default(), plan: None, version: 0 }
        });
        let was_completed = entry.fold.state() == Some(&RunState::Completed);
        entry.fold.apply(e);
        if entry.plan.is_none() && entry.fold.options().is_some_and(|o| o.dry_run) {
            entry.plan = Some(PlanFold::default());
        }
        if let Some(plan) = entry.plan.as_mut() {
            plan.apply(e);
        }
        entry.version = self.version;
        // The event that completed it says when; later repeats do not.
        if !was_completed && entry.fold.state() == Some(&RunState::Completed) {
            let newer = self.last_success.get(&entry.sync).is_none_or(|(at, _)| *at <= e.at);
            if newer {
                self.last_success.insert(entry.sync.clone(), (e.at, e.run_id.clone()));
            }
        }
    }

    /// The offset to resume reading from: the one after the last applied.
    pub fn next_offset(&self) -> Option<u64> {
        self.offset.map(|o| o + 1)
    }

    /// Moves on every event applied.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Moves on every event of `run`; `None` for a run never seen.
    pub fn run_version(&self, run: &RunId) -> Option<u64> {
        self.runs.get(run).map(|e| e.version)
    }

    pub fn report(&self, run: &RunId) -> Option<RunReport> {
        self.runs.get(run)?.fold.report(run)
    }

    /// A dry run's plan so far; `None` for a real run.
    pub fn plan(&self, run: &RunId) -> Option<Plan> {
        self.runs.get(run)?.plan.as_ref().map(PlanFold::plan)
    }

    pub fn timeline(&self, run: &RunId) -> Option<&Timeline> {
        self.runs.get(run).map(|e| e.fold.timeline())
    }

    /// The latest completed run of `sync`.
    pub fn last_success(&self, sync: &SyncName) -> Option<RunReport> {
        self.last_success.get(sync).and_then(|(_, run)| self.report(run))
    }

    /// Every sync that has runs, by name, each with its `limit` newest runs.
    pub fn syncs(&self, limit: usize) -> Vec<SyncRuns> {
        let mut by_sync: HashMap<&SyncName, Vec<&RunId>> = HashMap::new();
        for run in self.order.iter().rev() {
            if let Some(entry) = self.runs.get(run) {
                by_sync.entry(&entry.sync).or_default().push(run);
            }
        }
        let mut out: Vec<SyncRuns> = by_sync
            .into_iter()
            .map(|(sync, runs)| SyncRuns {
                sync: sync.clone(),
                total: runs.len(),
                runs: runs.iter().take(limit).filter_map(|r| self.report(r)).collect(),
                last_success: self.last_success(sync),
            })
            .collect();
        out.sort_by(|a, b| a.sync.cmp(&b.sync));
        out
    }

    /// How many runs of `sync` have ended: changes when a run finishes, so
    /// what a run finish can change (the roster) is worth reading again.
    pub fn ended_runs(&self, sync: &SyncName) -> usize {
        self.runs.values().filter(|e| &e.sync == sync && e.fold.state().is_some_and(RunState::is_over)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xaas_core::report::RunState;
    use xaas_core::{EventKind, RunOptions};

    fn ev(run: &str, sync: &str, secs: i64, kind: EventKind) -> RunEvent {
        RunEvent::new(
            RunId::parse(run).unwrap(),
            SyncName::parse(sync).unwrap(),
            OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap(),
            kind,
        )
    }

    fn started(run: &str, sync: &str, secs: i64, dry_run: bool) -> RunEvent {
        ev(run, sync, secs, EventKind::RunStarted { options: RunOptions { dry_run, ..RunOptions::default() } })
    }

    fn index(events: &[RunEvent]) -> RunIndex {
        let mut index = RunIndex::default();
        for (offset, e) in events.iter().enumerate() {
            index.apply(offset as u64, e);
        }
        index
    }

    #[test]
    fn runs_are_listed_per_sync_newest_first_with_the_last_success() {
        let events = vec![
            started("a1", "alpha", 0, false),
            ev("a1", "alpha", 5, EventKind::RunCompleted { delta_link: None }),
            started("b1", "beta", 6, false),
            started("a2", "alpha", 7, false),
            ev("a2", "alpha", 8, EventKind::RunFailed { reason: "Okta said no".into() }),
            started("a3", "alpha", 9, false),
        ];
        let index = index(&events);
        let syncs = index.syncs(2);
        assert_eq!(syncs.iter().map(|s| s.sync.as_str()).collect::<Vec<_>>(), ["alpha", "beta"]);
        let alpha = &syncs[0];
        assert_eq!(alpha.total, 3);
        let ids: Vec<&str> = alpha.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["a3", "a2"], "newest first, at most the limit");
        assert_eq!(alpha.runs[0].state, RunState::Running);
        assert_eq!(alpha.last_success.as_ref().map(|r| r.run_id.as_str()), Some("a1"));
        assert!(syncs[1].last_success.is_none());
        assert_eq!(index.ended_runs(&SyncName::parse("alpha").unwrap()), 2);
    }

    #[test]
    fn a_reread_event_changes_nothing_and_versions_track_each_run() {
        let events = vec![started("a1", "alpha", 0, false), started("b1", "alpha", 1, false)];
        let mut index = index(&events);
        let (a, b) = (RunId::parse("a1").unwrap(), RunId::parse("b1").unwrap());
        let before = (index.version(), index.run_version(&a), index.run_version(&b));
        index.apply(1, &events[1]);
        assert_eq!((index.version(), index.run_version(&a), index.run_version(&b)), before);
        assert_eq!(index.next_offset(), Some(2));
        index.apply(2, &ev("b1", "alpha", 2, EventKind::PageFetched { seq: 0, users: 10, removed: 0, last: true }));
        assert_eq!(index.run_version(&a), before.1, "a1 did not change");
        assert!(index.run_version(&b) > before.2);
        assert_eq!(index.report(&b).unwrap().users_read, 10);
    }

    #[test]
    fn only_dry_runs_keep_a_plan() {
        let events = vec![started("d", "alpha", 0, true), started("r", "alpha", 0, false)];
        let index = index(&events);
        assert!(index.plan(&RunId::parse("d").unwrap()).is_some());
        assert!(index.plan(&RunId::parse("r").unwrap()).is_none());
        assert!(index.report(&RunId::parse("nope").unwrap()).is_none());
    }
}
