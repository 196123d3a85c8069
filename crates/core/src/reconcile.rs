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
//! Then the guards: the source returned nobody; more deactivations than
//! `max_deactivations`; more than `max_deactivations_percent` of the roster.
//! `--allow-mass-deactivation` lets one run past those. Partial data (a delta
//! round that ended without its deltaLink) is refused whatever the flag says.

use std::collections::BTreeSet;

use crate::ids::ExternalId;
use crate::ledger::{Fate, RunProgress};
use crate::messages::RunOptions;
use crate::roster::Roster;

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
        // them all (it ignores those it does not hold).
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
    let n = candidates.len() as u64;
    let active = roster.len() as u64;
    let decision = |deactivate: Vec<ExternalId>, tripped, overridden| Decision {
        deactivate,
        tripped,
        overridden,
        candidates: n as u32,
        roster: active as u32,
    };
    if let Some(why) = partial {
        let reason =
            format!("{why}: the data is partial, so none of the {n} deactivations it asked for was sent; run it again");
        return decision(Vec::new(), Some(reason), None);
    }
    let returned_nobody = reconciles && run.ids().is_empty() && run.rejected_in_source().is_empty() && active > 0;
    let share = if active > 0 { n as f64 * 100.0 / active as f64 } else { 0.0 };
    let over_count = guards.max_deactivations.filter(|max| n > *max);
    let over_share = guards.max_deactivations_percent.filter(|max| active > 0 && share > *max);
    let reason = if returned_nobody {
        Some(format!(
            "the source returned no users, but {active} are active in Okta: refusing to deactivate all of them"
        ))
    } else if let Some(max) = over_count {
        Some(format!("{n} deactivations exceed max_deactivations = {max} (roster: {active} active users)"))
    } else {
        over_share.map(|max| {
            format!(
                "{n} deactivations are {share:.1}% of the {active} users active in Okta, over max_deactivations_percent = {max}%"
            )
        })
    };
    let all: Vec<ExternalId> = candidates.into_iter().collect();
    match reason {
        None => decision(all, None, None),
        Some(reason) if options.allow_mass_deactivation => decision(all, None, Some(reason)),
        Some(reason) => decision(
            Vec::new(),
            Some(format!(
                "{reason}; nothing was deactivated. If this is intended, run once with --allow-mass-deactivation"
            )),
            None,
        ),
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
        // With an unknown roster, every requested deactivation goes out.
        let d = decide(&run(&delta, &[], &[3, 150]), &delta, &Roster::unknown(sync()), &Guards::DEFAULT, None);
        assert_eq!(d.deactivate, vec![id(3), id(150)]);
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
