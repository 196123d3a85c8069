//! The deactivation guards at their exact boundaries: a limit is "more than",
//! so a run exactly at `max_deactivations` or exactly at the percentage goes
//! through, and one more trips. Written to kill the mutants `cargo mutants`
//! left alive in `reconcile::decide` (`>` vs `>=`, `active > 0`).

use std::collections::BTreeMap;

use time::OffsetDateTime;
use xaas_core::ledger::{Ledger, RunProgress};
use xaas_core::messages::{EventKind, Mode, Piece, RunEvent, RunOptions};
use xaas_core::reconcile::{Guards, decide};
use xaas_core::roster::{Digest, Roster, RosterEntry};
use xaas_core::{ExternalId, RunId, SyncName};

fn sync() -> SyncName {
    SyncName::parse("demo").unwrap()
}

fn id(i: usize) -> ExternalId {
    ExternalId::parse(format!("u{i:03}")).unwrap()
}

fn at() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
}

fn roster_of(n: usize) -> Roster {
    let entries =
        (0..n).map(|i| RosterEntry { external_id: id(i), digest: Digest::of(&BTreeMap::new()) }).collect::<Vec<_>>();
    let records = Roster::unknown(sync()).records_for(&RunId::parse("r0").unwrap(), at(), entries, vec![]);
    Roster::replay(sync(), &records)
}

fn full() -> RunOptions {
    RunOptions { mode: Mode::Full, ..RunOptions::default() }
}

/// A full run that returned users `0..kept` of a roster, so the rest are candidates.
fn full_run_keeping(kept: usize) -> RunProgress {
    let run = RunId::parse("r1").unwrap();
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
        RunEvent::new(run.clone(), sync(), at(), EventKind::RunStarted { options: full() }),
        RunEvent::new(
            run.clone(),
            sync(),
            at(),
            EventKind::ProfilesUnchanged {
                pieces: vec![piece(kept as u32)],
                external_ids: (0..kept).map(id).collect(),
            },
        ),
        RunEvent::new(
            run.clone(),
            sync(),
            at(),
            EventKind::DeactivationsQueued { pieces: vec![piece(0)], external_ids: vec![] },
        ),
    ];
    Ledger::replay(sync(), &events).run(&run).unwrap().clone()
}

#[test]
fn exactly_max_deactivations_goes_through_and_one_more_trips() {
    let guards = Guards { max_deactivations: Some(5), max_deactivations_percent: None };
    let d = decide(&full_run_keeping(95), &full(), &roster_of(100), &guards, None);
    assert_eq!((d.deactivate.len(), d.tripped, d.candidates, d.roster), (5, None, 5, 100));
    let d = decide(&full_run_keeping(94), &full(), &roster_of(100), &guards, None);
    assert!(d.deactivate.is_empty());
    assert!(d.tripped.unwrap().contains("6 deactivations exceed max_deactivations = 5"));
}

#[test]
fn exactly_the_percentage_goes_through_and_one_more_trips() {
    let guards = Guards { max_deactivations: None, max_deactivations_percent: Some(10.0) };
    let d = decide(&full_run_keeping(90), &full(), &roster_of(100), &guards, None);
    assert_eq!((d.deactivate.len(), d.tripped), (10, None));
    let d = decide(&full_run_keeping(89), &full(), &roster_of(100), &guards, None);
    assert!(d.deactivate.is_empty());
    assert!(d.tripped.unwrap().contains("11.0% of the 100 users"));
}

#[test]
fn the_share_is_count_over_roster_not_another_ratio() {
    // 3 of 20 is 15%: trips a 14% limit, passes a 15% one.
    let d = decide(
        &full_run_keeping(17),
        &full(),
        &roster_of(20),
        &Guards { max_deactivations: None, max_deactivations_percent: Some(14.0) },
        None,
    );
    assert!(d.tripped.unwrap().contains("15.0%"));
    let d = decide(
        &full_run_keeping(17),
        &full(),
        &roster_of(20),
        &Guards { max_deactivations: None, max_deactivations_percent: Some(15.0) },
        None,
    );
    assert_eq!(d.deactivate.len(), 3);
}

#[test]
fn an_empty_roster_trips_nothing_and_deactivates_nobody() {
    let d = decide(&full_run_keeping(0), &full(), &roster_of(0), &Guards::DEFAULT, None);
    assert_eq!((d.deactivate.len(), d.tripped, d.overridden, d.candidates, d.roster), (0, None, None, 0, 0));
    // A zero share limit on an empty roster must not divide by zero or trip.
    let guards = Guards { max_deactivations: Some(0), max_deactivations_percent: Some(0.0) };
    let d = decide(&full_run_keeping(0), &full(), &roster_of(0), &guards, None);
    assert_eq!(d.tripped, None);
}

#[test]
fn the_override_still_reports_the_guard_and_sends_everything() {
    let options = RunOptions { allow_mass_deactivation: true, ..full() };
    let guards = Guards { max_deactivations: Some(5), max_deactivations_percent: None };
    let d = decide(&full_run_keeping(94), &options, &roster_of(100), &guards, None);
    assert_eq!(d.deactivate.len(), 6);
    assert_eq!(d.tripped, None);
    assert!(d.overridden.unwrap().contains("max_deactivations = 5"));
}
