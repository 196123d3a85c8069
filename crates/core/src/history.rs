//! What the events stream says about the runs of one sync: which one is in
//! flight, which are waiting their turn, and the deltaLink the last
//! completed run left for the next.
//!
//! At most one run per sync is in flight, so that two runs never interleave
//! their uploads, deactivations and roster updates. A request that arrives
//! while one runs is **queued** (it waits, and starts when the sync is
//! free) or, when a queued run with the same options is already waiting,
//! **merged** into it: that run reads the source after this request
//! arrived, so it serves it. Both are recorded (`RunQueued`, `RunMerged`)
//! and show in the report.
//!
//! Starting is a claim: the fetcher records `RunStarted`, reads the stream
//! back, and goes on only if no other in-flight run of the sync claimed
//! earlier in stream order (the stream orders claims totally, and each
//! claimant reads every claim before its own, so exactly one wins). A loser
//! records `RunQueued` and waits. A run that has recorded nothing for
//! `stale` (a crashed deployment, a parked page) no longer blocks the sync.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::ids::{RunId, SyncName};
use crate::messages::{EventKind, RunEvent, RunOptions};

/// Where one run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Waiting for another run of its sync to end.
    Queued,
    /// Claimed, and not ended.
    Started,
    /// Completed, failed or merged.
    Ended,
}

#[derive(Debug, Clone)]
struct RunLife {
    life: Life,
    options: Option<RunOptions>,
    last_at: OffsetDateTime,
    /// Stream position of its latest `RunStarted`.
    claimed_at: usize,
    fetching: bool,
}

/// The runs of one sync, folded from (a window of) the events stream.
#[derive(Debug, Clone, Default)]
pub struct SyncHistory {
    runs: HashMap<RunId, RunLife>,
    /// Stream position of each run's first event, for a stable order.
    first: HashMap<RunId, usize>,
    delta_link: Option<String>,
}

/// What to do with a `SyncRequest` for `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Nothing else is in flight: claim the sync.
    Start,
    /// This run already claimed it (a redelivered request); `fetching` says
    /// whether its first page was already read.
    Resume { fetching: bool },
    /// The run is over (a duplicate request).
    Over,
    /// Another run is in flight: wait behind it.
    Queue { behind: RunId },
    /// A waiting run with the same options serves this request.
    Merge { into: RunId },
}

impl SyncHistory {
    /// Folds the events of `sync`, in stream order.
    pub fn fold<'a>(sync: &SyncName, events: impl IntoIterator<Item = &'a RunEvent>) -> Self {
        let mut h = Self::default();
        for (pos, e) in events.into_iter().enumerate().filter(|(_, e)| &e.sync == sync) {
            h.first.entry(e.run_id.clone()).or_insert(pos);
            let run = h.runs.entry(e.run_id.clone()).or_insert(RunLife {
                life: Life::Started,
                options: None,
                last_at: e.at,
                claimed_at: pos,
                fetching: false,
            });
            run.last_at = run.last_at.max(e.at);
            if run.life == Life::Ended {
                continue;
            }
            match &e.kind {
                EventKind::RunStarted { options } => {
                    run.life = Life::Started;
                    run.options = Some(options.clone());
                    run.claimed_at = pos;
                }
                EventKind::RunQueued { options, .. } => {
                    run.life = Life::Queued;
                    run.options = Some(options.clone());
                }
                EventKind::PageFetched { .. } => run.fetching = true,
                EventKind::RunCompleted { delta_link } => {
                    run.life = Life::Ended;
                    if delta_link.is_some() {
                        h.delta_link.clone_from(delta_link);
                    }
                }
                EventKind::RunFailed { .. } | EventKind::RunMerged { .. } => run.life = Life::Ended,
                _ => {}
            }
        }
        h
    }

    pub fn life(&self, run: &RunId) -> Option<Life> {
        self.runs.get(run).map(|r| r.life)
    }

    /// The options a run was claimed or queued with.
    pub fn options(&self, run: &RunId) -> Option<&RunOptions> {
        self.runs.get(run).and_then(|r| r.options.as_ref())
    }

    /// The deltaLink of the last completed run that left one.
    pub fn last_delta_link(&self) -> Option<&str> {
        self.delta_link.as_deref()
    }

    /// When `run` last recorded anything.
    pub fn last_event_at(&self, run: &RunId) -> Option<OffsetDateTime> {
        self.runs.get(run).map(|r| r.last_at)
    }

    /// Runs holding the sync, earliest claim first; those silent for `stale` are left out.
    pub fn in_flight(&self, now: OffsetDateTime, stale: Duration) -> Vec<RunId> {
        let mut runs: Vec<(&RunId, &RunLife)> =
            self.runs.iter().filter(|(_, r)| r.life == Life::Started && !is_stale(r.last_at, now, stale)).collect();
        runs.sort_by_key(|(_, r)| r.claimed_at);
        runs.into_iter().map(|(id, _)| id.clone()).collect()
    }

    /// Decides what a request for `run` does. `alive` is how recently a
    /// waiting run must have shown a sign of life to be merged into.
    pub fn admit(
        &self,
        run: &RunId,
        options: &RunOptions,
        now: OffsetDateTime,
        stale: Duration,
        alive: Duration,
    ) -> Admission {
        match self.runs.get(run).map(|r| (r.life, r.fetching)) {
            Some((Life::Ended, _)) => return Admission::Over,
            Some((Life::Started, fetching)) => {
                if self.in_flight(now, stale).first() == Some(run) {
                    return Admission::Resume { fetching };
                }
            }
            Some((Life::Queued, _)) | None => {}
        }
        let others: Vec<RunId> = self.in_flight(now, stale).into_iter().filter(|r| r != run).collect();
        let Some(behind) = others.first().cloned() else { return Admission::Start };
        let mut waiting: Vec<(&RunId, &RunLife)> = self
            .runs
            .iter()
            .filter(|(id, r)| {
                *id != run
                    && r.life == Life::Queued
                    && !is_stale(r.last_at, now, alive)
                    && r.options.as_ref().is_some_and(|o| same_request(o, options))
            })
            .collect();
        waiting.sort_by_key(|(id, _)| self.first.get(*id).copied().unwrap_or(usize::MAX));
        if self.runs.get(run).is_none_or(|r| r.life != Life::Queued)
            && let Some((into, _)) = waiting.first()
        {
            return Admission::Merge { into: (*into).clone() };
        }
        Admission::Queue { behind }
    }
}

fn is_stale(last: OffsetDateTime, now: OffsetDateTime, stale: Duration) -> bool {
    now - last > stale
}

/// Two requests a single run can serve: same mode and flags.
fn same_request(a: &RunOptions, b: &RunOptions) -> bool {
    a.mode == b.mode
        && a.dry_run == b.dry_run
        && a.force == b.force
        && a.allow_mass_deactivation == b.allow_mass_deactivation
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Mode;

    const STALE: Duration = Duration::from_secs(3600);
    const ALIVE: Duration = Duration::from_secs(180);

    fn sync() -> SyncName {
        SyncName::parse("demo").unwrap()
    }

    fn run(s: &str) -> RunId {
        RunId::parse(s).unwrap()
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    fn ev(r: &str, secs: i64, kind: EventKind) -> RunEvent {
        RunEvent::new(run(r), sync(), at(secs), kind)
    }

    fn full() -> RunOptions {
        RunOptions::default()
    }

    fn started(r: &str, secs: i64) -> RunEvent {
        ev(r, secs, EventKind::RunStarted { options: full() })
    }

    #[test]
    fn a_free_sync_starts_and_a_busy_one_queues_then_merges() {
        let events = vec![started("a", 0)];
        let h = SyncHistory::fold(&sync(), &events);
        assert_eq!(h.admit(&run("b"), &full(), at(1), STALE, ALIVE), Admission::Queue { behind: run("a") });
        let events = vec![started("a", 0), ev("b", 1, EventKind::RunQueued { behind: run("a"), options: full() })];
        let h = SyncHistory::fold(&sync(), &events);
        assert_eq!(h.admit(&run("c"), &full(), at(2), STALE, ALIVE), Admission::Merge { into: run("b") });
        // Other options are not served by b: c waits too.
        let dry = RunOptions { dry_run: true, ..full() };
        assert_eq!(h.admit(&run("c"), &dry, at(2), STALE, ALIVE), Admission::Queue { behind: run("a") });
        // b itself, coming back, keeps waiting (it is not merged into itself).
        assert_eq!(h.admit(&run("b"), &full(), at(3), STALE, ALIVE), Admission::Queue { behind: run("a") });
        // Once a ends, b starts.
        let mut events = events;
        events.push(ev("a", 4, EventKind::RunCompleted { delta_link: Some("L1".into()) }));
        let h = SyncHistory::fold(&sync(), &events);
        assert_eq!(h.admit(&run("b"), &full(), at(5), STALE, ALIVE), Admission::Start);
        assert_eq!(h.last_delta_link(), Some("L1"));
        assert_eq!(h.admit(&run("a"), &full(), at(5), STALE, ALIVE), Admission::Over);
    }

    #[test]
    fn of_two_claims_the_earlier_in_the_stream_wins() {
        let events = vec![started("a", 0), started("b", 0)];
        let h = SyncHistory::fold(&sync(), &events);
        assert_eq!(h.in_flight(at(1), STALE), vec![run("a"), run("b")]);
        assert_eq!(h.admit(&run("a"), &full(), at(1), STALE, ALIVE), Admission::Resume { fetching: false });
        assert_eq!(h.admit(&run("b"), &full(), at(1), STALE, ALIVE), Admission::Queue { behind: run("a") });
    }

    #[test]
    fn a_silent_run_stops_blocking_the_sync_and_a_silent_queue_takes_no_merges() {
        let events = vec![started("a", 0), ev("b", 1, EventKind::RunQueued { behind: run("a"), options: full() })];
        let h = SyncHistory::fold(&sync(), &events);
        assert_eq!(h.admit(&run("c"), &full(), at(600), STALE, ALIVE), Admission::Queue { behind: run("a") });
        assert_eq!(h.admit(&run("c"), &full(), at(7200), STALE, ALIVE), Admission::Start);
    }

    #[test]
    fn other_syncs_and_dry_or_failed_runs_leave_no_delta_link() {
        let other = RunEvent::new(
            run("x"),
            SyncName::parse("other").unwrap(),
            at(0),
            EventKind::RunCompleted { delta_link: Some("X".into()) },
        );
        let events = vec![
            other,
            ev("a", 0, EventKind::RunStarted { options: RunOptions { mode: Mode::Delta, ..full() } }),
            ev("a", 1, EventKind::RunCompleted { delta_link: Some("L1".into()) }),
            ev("b", 2, EventKind::RunFailed { reason: "x".into() }),
            ev("c", 3, EventKind::RunCompleted { delta_link: None }),
        ];
        assert_eq!(SyncHistory::fold(&sync(), &events).last_delta_link(), Some("L1"));
    }
}
