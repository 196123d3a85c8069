//! Who a run deactivates, and the guards that stop it from deactivating the
//! company by mistake.
//!
//! Decided once, by the uploader, after every page of the run is accounted
//! for: deactivations never go out on partial data. The candidates are
//! - the users the run asked to deactivate (disabled in the source, or
//!   `@removed` in a delta round) that are active in Okta, and
//! - for a run that reads the full state, the users active in Okta (the
//!   roster) that the source no longer returned at all.
//!
//! Then the guards ([`guard::check`]): data that cannot be trusted (a delta
//! round that ended without its deltaLink, a source that returned nobody, a
//! run reading only changes while the roster is unknown) is refused whatever
//! `--allow-mass-deactivation` says; more deactivations than
//! `max_deactivations` or `max_deactivations_percent` of the roster are
//! refused unless the flag lets that one run past.

use std::collections::BTreeSet;

use crate::ids::ExternalId;
use crate::ledger::{Fate, RunProgress};
use crate::messages::RunOptions;
use crate::roster::Roster;

pub(crate) mod guard;

pub use guard::{Facts, Verdict};

/// `[syncs.<name>.guards]`: how many deactivations one run may make.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guards {
    /// At most this many per run; `None`: no count limit.
    pub max_deactivations: Option<u64>,
    /// At most this share of the users active in Okta, in percent; `None`:
    /// no share limit.
    pub max_deactivations_percent: Option<f64>,
}

impl Guards {
    /// No count limit; at most 10% of the roster.
    pub const DEFAULT: Guards = Guards { max_deactivations: None, max_deactivations_percent: Some(10.0) };
}

impl Default for Guards {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the run may deactivate.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Sorted; empty when a guard tripped.
    pub deactivate: Vec<ExternalId>,
    /// Why nothing is deactivated, with the numbers.
    pub tripped: Option<String>,
    /// The guard `--allow-mass-deactivation` let this run past.
    pub overridden: Option<String>,
    /// Deactivations the run asked for, before the guards.
    pub candidates: u32,
    /// Users active in Okta before the run, as far as the roster knows.
    pub roster: u32,
}

/// Decides the deactivations of a run whose every page is accounted for.
/// `partial` says why the data cannot be trusted, when it cannot.
pub fn decide(
    run: &RunProgress,
    options: &RunOptions,
    roster: &Roster,
    guards: &Guards,
    partial: Option<String>,
) -> Decision {
    let mut candidates: BTreeSet<ExternalId> = run
        .ids()
        .iter()
        .filter(|(_, seen)| seen.fate == Fate::DeleteQueued)
        // An unknown roster cannot say who is active: ask Okta to deactivate
        // them all (it ignores those it does not hold), if the guards let
        // the run deactivate at all.
        .filter(|(id, _)| !roster.is_known() || roster.contains(id))
        .map(|(id, _)| id.clone())
        .collect();
    let reconciles = run.reads_full_state() && roster.is_known();
    if reconciles {
        candidates.extend(
            roster
                .ids()
                .filter(|id| !run.ids().contains_key(*id) && !run.rejected_in_source().contains(id.as_str()))
                .cloned(),
        );
    }
    let facts = Facts {
        candidates: candidates.len() as u64,
        roster: roster.is_known().then_some(roster.len() as u64),
        reads_full_state: run.reads_full_state(),
        returned: (run.ids().len() + run.rejected_in_source().len()) as u64,
        partial,
    };
    let counts = |deactivate: Vec<ExternalId>, tripped, overridden| Decision {
        deactivate,
        tripped,
        overridden,
        candidates: facts.candidates as u32,
        roster: roster.len() as u32,
    };
    match guard::check(roster.sync(), &facts, guards, options.allow_mass_deactivation) {
        Verdict::Deactivate => counts(candidates.into_iter().collect(), None, None),
        Verdict::Overridden(why) => counts(candidates.into_iter().collect(), None, Some(why)),
        Verdict::Refused(why) => counts(Vec::new(), Some(why), None),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use time::OffsetDateTime;

    use super::*;
    use crate::ids::{RunId, SyncName};
    use crate::ledger::Ledger;
    use crate::messages::{EventKind, Mode, Piece, RunEvent};
    use crate::roster::{Digest, RosterEntry};

    fn sync() -> SyncName {
        SyncName::parse("demo").unwrap()
    }

    fn id(i: usize) -> ExternalId {
        ExternalId::parse(format!("u{i:03}")).unwrap()
    }

    fn roster_of(n: usize) -> Roster {
        let entries = (0..n)
            .map(|i| RosterEntry { external_id: id(i), digest: Digest::of(&BTreeMap::new()) })
            .collect::<Vec<_>>();
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let records = Roster::unknown(sync()).records_for(&RunId::parse("r0").unwrap(), at, entries, vec![]);
        Roster::replay(sync(), &records)
    }

    fn full() -> RunOptions {
        RunOptions { mode: Mode::Full, ..RunOptions::default() }
    }

    /// A run that returned `kept` (unchanged) and asked to delete `deleted`.
    fn run(options: &RunOptions, kept: &[usize], deleted: &[usize]) -> RunProgress {
        let run = RunId::parse("r1").unwrap();
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let piece = |len: u32| Piece {
            page_seq: 0,
            part: 0,
            parts: 1,
            len,
            total_pages: Some(1),
            from: 0,
            to: len,
            ..Default::default()
        };
        let events = [
            RunEvent::new(run.clone(), sync(), at, EventKind::RunStarted { options: options.clone() }),
            RunEvent::new(
                run.clone(),
                sync(),
                at,
                EventKind::ProfilesUnchanged {
                    pieces: vec![piece(kept.len() as u32)],
                    external_ids: kept.iter().map(|i| id(*i)).collect(),
                },
            ),
            RunEvent::new(
                run.clone(),
                sync(),
                at,
                EventKind::DeactivationsQueued {
                    pieces: vec![piece(deleted.len() as u32)],
                    external_ids: deleted.iter().map(|i| id(*i)).collect(),
                },
            ),
        ];
        Ledger::replay(sync(), &events).run(&run).unwrap().clone()
    }

    #[test]
    fn a_full_run_deactivates_who_the_source_no_longer_returns() {
        let kept: Vec<usize> = (0..95).collect();
        let d = decide(&run(&full(), &kept, &[]), &full(), &roster_of(100), &Guards::DEFAULT, None);
        assert_eq!(d.deactivate, (95..100).map(id).collect::<Vec<_>>());
        assert_eq!((d.tripped, d.candidates, d.roster), (None, 5, 100));
    }

    #[test]
    fn a_delta_run_deactivates_only_what_it_was_told_and_only_if_active() {
        let delta = RunOptions { mode: Mode::Delta, ..RunOptions::default() };
        // u150 was never synced: nothing to deactivate.
        let d = decide(&run(&delta, &[1, 2], &[3, 150]), &delta, &roster_of(100), &Guards::DEFAULT, None);
        assert_eq!(d.deactivate, vec![id(3)]);
    }

    #[test]
    fn an_unknown_roster_fails_a_delta_run_closed() {
        let delta = RunOptions { mode: Mode::Delta, allow_mass_deactivation: true, ..RunOptions::default() };
        let d = decide(&run(&delta, &[], &[3, 150]), &delta, &Roster::unknown(sync()), &Guards::DEFAULT, None);
        assert!(d.deactivate.is_empty());
        assert!(d.tripped.unwrap().contains("is unknown"));
        assert_eq!((d.candidates, d.roster), (2, 0));
        // A run that read the full state asks only for the users the source
        // itself reports disabled: they go out, for Okta to drop those it
        // does not hold.
        let initial = RunOptions { full_state: true, ..delta };
        let d = decide(&run(&initial, &[1], &[3, 150]), &initial, &Roster::unknown(sync()), &Guards::DEFAULT, None);
        assert_eq!((d.deactivate, d.tripped), (vec![id(3), id(150)], None));
    }

    #[test]
    fn the_override_never_lifts_the_empty_source_guard() {
        let allowed = RunOptions { allow_mass_deactivation: true, ..full() };
        let d = decide(&run(&allowed, &[], &[]), &allowed, &roster_of(10), &Guards::DEFAULT, None);
        assert!(d.deactivate.is_empty());
        assert_eq!(d.overridden, None);
        assert!(d.tripped.unwrap().contains("the source returned no users, but 10 are active"));
    }

    #[test]
    fn an_empty_source_trips_even_without_a_share_limit() {
        let guards = Guards { max_deactivations: None, max_deactivations_percent: None };
        let d = decide(&run(&full(), &[], &[]), &full(), &roster_of(10), &guards, None);
        assert!(d.deactivate.is_empty());
        assert!(d.tripped.unwrap().contains("the source returned no users, but 10 are active"));
    }

    #[test]
    fn the_share_and_count_limits_trip_with_the_numbers() {
        let kept: Vec<usize> = (0..70).collect();
        let d = decide(&run(&full(), &kept, &[]), &full(), &roster_of(100), &Guards::DEFAULT, None);
        assert!(d.deactivate.is_empty());
        let why = d.tripped.unwrap();
        assert!(why.contains("30 deactivations are 30.0% of the 100 users"), "{why}");
        assert!(why.contains("max_deactivations_percent = 10%"), "{why}");
        let guards = Guards { max_deactivations: Some(20), max_deactivations_percent: None };
        let why = decide(&run(&full(), &kept, &[]), &full(), &roster_of(100), &guards, None).tripped.unwrap();
        assert!(why.contains("30 deactivations exceed max_deactivations = 20"), "{why}");
    }

    #[test]
    fn the_override_lets_one_run_through_but_never_partial_data() {
        let allowed = RunOptions { allow_mass_deactivation: true, ..full() };
        let kept: Vec<usize> = (0..70).collect();
        let d = decide(&run(&allowed, &kept, &[]), &allowed, &roster_of(100), &Guards::DEFAULT, None);
        assert_eq!(d.deactivate.len(), 30);
        assert!(d.overridden.unwrap().contains("30.0%"));
        let partial = Some("the delta round ended without a deltaLink".to_string());
        let d = decide(&run(&allowed, &kept, &[]), &allowed, &roster_of(100), &Guards::DEFAULT, partial);
        assert!(d.deactivate.is_empty());
        assert!(d.tripped.unwrap().contains("partial"));
    }

    #[test]
    fn rejected_users_are_still_in_the_source() {
        let mut r = run(&full(), &(0..99).collect::<Vec<_>>(), &[]);
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut ledger = Ledger::new(sync());
        let run_id = RunId::parse("r1").unwrap();
        ledger.apply(&RunEvent::new(run_id.clone(), sync(), at, EventKind::RunStarted { options: full() }));
        ledger.apply(&RunEvent::new(
            run_id.clone(),
            sync(),
            at,
            EventKind::RejectedInSource { external_ids: vec![id(99).to_string()] },
        ));
        assert!(decide(&r, &full(), &roster_of(100), &Guards::DEFAULT, None).deactivate == vec![id(99)]);
        r = ledger.run(&run_id).unwrap().clone();
        // Only u099 was seen (rejected): the others would go, but not u099.
        let d =
            decide(&r, &full(), &roster_of(100), &Guards { max_deactivations_percent: None, ..Guards::DEFAULT }, None);
        assert_eq!(d.deactivate.len(), 99);
        assert!(!d.deactivate.contains(&id(99)));
    }
}
