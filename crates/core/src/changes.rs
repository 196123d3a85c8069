//! Change detection: what the uploader does with each profile of a batch
//! before anything is sent.
//!
//! - An upsert whose mapped profile has the same fingerprint as its last
//!   confirmed upload (the roster) is **unchanged**: not sent (`--force`
//!   sends it anyway).
//! - A delete is **queued**: deactivations go out only once every page of
//!   the run is in and the guards pass (see `reconcile`).
//! - The same externalId met twice in one run means two different things:
//!   - in a full or deactivate run, met twice by one read of the page chain,
//!     it is two source users claiming one Okta user: the first is kept,
//!     later ones are **refused** as duplicates. Met on two reads of the
//!     chain (two copies of a page, two branches of a fork: see `lineage`)
//!     it is one user read twice, handled like a delta replay below; when
//!     the links between the two reads are not known yet, it is taken as a
//!     re-read, so that nobody is refused for a crash upstream;
//!   - in a delta run it is Graph replaying an object (its delta rounds may
//!     show one user several times, in no guaranteed order): the copy on the
//!     latest page wins. An older copy met after a newer one is unchanged
//!     (superseded); a newer one is compared with what this run already
//!     sent for it, and sent only if it differs.
//!
//! Pure: the uploader passes what it knows (the run's ledger, the roster,
//! the profiles it has queued but not sent yet) and records the outcome.

use std::collections::HashMap;

use crate::ids::ExternalId;
use crate::ledger::{Fate, RunProgress, Seen};
use crate::lineage::{CopyId, Lineage, PageRef, Relation};
use crate::messages::{Action, Batch, Mode, OktaProfile, Op, ProfileChange};
use crate::roster::{Digest, Roster};

/// A profile this uploader has queued for a bulk request but not sent yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub page: u32,
    pub copy: CopyId,
    /// `None` for a delete.
    pub digest: Option<Digest>,
}

impl Queued {
    pub fn at(&self) -> PageRef {
        (self.page, self.copy)
    }
}

/// What becomes of the remaining positions of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sorted {
    /// (position, externalId, reason)
    pub refused: Vec<(u32, ExternalId, String)>,
    pub unchanged: Vec<(u32, ExternalId)>,
    /// Deletes, to be decided at the end of the run.
    pub queued_deletes: Vec<(u32, ExternalId)>,
    /// Upserts to send, with why.
    pub send: Vec<(u32, OktaProfile, ProfileChange)>,
    /// A profile to send is already queued (an older copy, in a delta run):
    /// send what is queued first, so one request never carries an
    /// externalId twice.
    pub flush_first: bool,
}

/// Sorts `remaining` (position, profile) of `batch`. `run` is what the run
/// has accounted for so far; `queued` the profiles queued in this process;
/// `lineage` every copy of the run's pages received, this batch's included.
pub fn sort_batch(
    batch: &Batch,
    remaining: Vec<(u32, OktaProfile)>,
    run: Option<&RunProgress>,
    roster: &Roster,
    queued: &HashMap<ExternalId, Queued>,
    lineage: &Lineage,
) -> Sorted {
    let options = &batch.options;
    let page = batch.page_seq;
    let at = (page, batch.copy);
    let replays = options.mode == Mode::Delta;
    let mut out = Sorted::default();
    // What this batch itself decided, for an id it holds twice.
    let mut here: HashMap<ExternalId, Queued> = HashMap::new();
    for (index, profile) in remaining {
        let id = profile.external_id.clone();
        let accounted = run.and_then(|r| r.seen(&id));
        let pending = here.get(&id).or_else(|| queued.get(&id));
        let digest = (batch.op == Op::Upsert).then(|| Digest::of(&profile.profile.clone().unwrap_or_default()));
        if !replays {
            let earlier = accounted.map(Seen::at).or(pending.map(Queued::at));
            if let Some(first) = earlier
                && lineage.relation(first, at) == Relation::SameRead
            {
                let reason = format!(
                    "duplicate externalId: a user on page {} of this run has the same externalId; the first was kept",
                    first.0
                );
                out.refused.push((index, id, reason));
                continue;
            }
        } else {
            let latest = accounted.map(|s| s.page).into_iter().chain(pending.map(|q| q.page)).max();
            if latest.is_some_and(|p| p > page) {
                // Graph already showed a newer state of this user.
                out.unchanged.push((index, id));
                continue;
            }
        }
        match batch.op {
            Op::Delete => {
                here.insert(id.clone(), Queued { page, copy: batch.copy, digest: None });
                out.queued_deletes.push((index, id));
            }
            Op::Upsert => {
                let digest = digest.unwrap_or_else(|| Digest::of(&Default::default()));
                let before = roster.get(&id);
                // In a delta run, what this run already sent is the baseline.
                let sent_now = match (pending, accounted.map(|s| &s.fate)) {
                    (Some(q), _) => Some(q.digest.as_ref()),
                    (None, Some(Fate::Upserted { digest, .. })) => Some(digest.as_ref()),
                    (None, Some(Fate::Unchanged)) => Some(before),
                    (None, Some(Fate::DeleteQueued | Fate::Refused)) | (None, None) => None,
                };
                let baseline = sent_now.unwrap_or(before);
                if !options.force && baseline == Some(&digest) {
                    out.unchanged.push((index, id));
                    continue;
                }
                if pending.is_some_and(|q| q.digest.is_some()) {
                    out.flush_first = true;
                }
                let (action, changed) = match before {
                    Some(old) => (Action::Update, digest.changed_since(old)),
                    None => (Action::Create, Vec::new()),
                };
                here.insert(id.clone(), Queued { page, copy: batch.copy, digest: Some(digest.clone()) });
                let change = ProfileChange { external_id: id, action, changed, digest: Some(digest) };
                out.send.push((index, profile, change));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use time::OffsetDateTime;

    use super::*;
    use crate::ids::{RunId, SyncName};
    use crate::ledger::Ledger;
    use crate::messages::{EventKind, Piece, RunEvent, RunOptions};
    use crate::roster::RosterEntry;

    fn sync() -> SyncName {
        SyncName::parse("demo").unwrap()
    }

    fn run_id() -> RunId {
        RunId::parse("r1").unwrap()
    }

    fn profile(id: &str, city: &str) -> OktaProfile {
        OktaProfile {
            external_id: ExternalId::parse(id).unwrap(),
            profile: Some(BTreeMap::from([("city".to_string(), city.to_string())])),
        }
    }

    fn batch(mode: Mode, page: u32, op: Op, profiles: Vec<OktaProfile>) -> Batch {
        Batch {
            v: 1,
            run_id: run_id(),
            sync: sync(),
            options: RunOptions { mode, ..RunOptions::default() },
            page_seq: page,
            part: 0,
            parts: 1,
            total_pages: None,
            op,
            profiles,
            rejected: vec![],
            delta_link: None,
            copy: CopyId::LEGACY,
            parent: None,
        }
    }

    fn sort(b: &Batch, run: Option<&RunProgress>, r: &Roster, queued: &HashMap<ExternalId, Queued>) -> Sorted {
        sort_batch(b, positions(b), run, r, queued, &Lineage::default())
    }

    fn roster(entries: &[(&str, &str)]) -> Roster {
        let entries = entries
            .iter()
            .map(|(id, city)| {
                let p = profile(id, city);
                RosterEntry { external_id: p.external_id, digest: Digest::of(&p.profile.unwrap()) }
            })
            .collect();
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        Roster::replay(sync(), &Roster::unknown(sync()).records_for(&RunId::parse("r0").unwrap(), at, entries, vec![]))
    }

    fn positions(b: &Batch) -> Vec<(u32, OktaProfile)> {
        b.profiles.iter().cloned().enumerate().map(|(i, p)| (i as u32, p)).collect()
    }

    #[test]
    fn unchanged_profiles_are_not_sent_and_changed_ones_say_what_changed() {
        let r = roster(&[("a", "Cork"), ("b", "Cork")]);
        let b = batch(Mode::Full, 0, Op::Upsert, vec![profile("a", "Cork"), profile("b", "Galway"), profile("c", "X")]);
        let sorted = sort(&b, None, &r, &HashMap::new());
        assert_eq!(sorted.unchanged, vec![(0, ExternalId::parse("a").unwrap())]);
        let sent: Vec<(&str, Action, Vec<String>)> =
            sorted.send.iter().map(|(_, p, c)| (p.external_id.as_str(), c.action, c.changed.clone())).collect();
        assert_eq!(sent, vec![("b", Action::Update, vec!["city".to_string()]), ("c", Action::Create, vec![])]);
        // --force sends everyone.
        let mut forced = b.clone();
        forced.options.force = true;
        assert_eq!(sort(&forced, None, &r, &HashMap::new()).send.len(), 3);
    }

    #[test]
    fn a_full_run_refuses_a_second_user_with_the_same_external_id() {
        let r = roster(&[]);
        // "a" is queued here from page 0; page 3 brings it again.
        let queued =
            HashMap::from([(ExternalId::parse("a").unwrap(), Queued { page: 0, copy: CopyId::LEGACY, digest: None })]);
        let b = batch(Mode::Full, 3, Op::Upsert, vec![profile("a", "Cork"), profile("b", "Cork")]);
        let sorted = sort(&b, None, &r, &queued);
        assert_eq!(sorted.refused.len(), 1);
        assert!(sorted.refused[0].2.starts_with("duplicate externalId: a user on page 0"), "{}", sorted.refused[0].2);
        assert_eq!(sorted.send.len(), 1);
        // Also when the first copy was accounted for by a predecessor (from the events).
        let events = [RunEvent::new(
            run_id(),
            sync(),
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            EventKind::ProfilesUnchanged {
                pieces: vec![Piece {
                    page_seq: 1,
                    part: 0,
                    parts: 1,
                    len: 1,
                    total_pages: None,
                    from: 0,
                    to: 1,
                    ..Default::default()
                }],
                external_ids: vec![ExternalId::parse("b").unwrap()],
            },
        )];
        let ledger = Ledger::replay(sync(), &events);
        let sorted = sort(&b, ledger.run(&run_id()), &r, &queued);
        assert_eq!(sorted.refused.len(), 2);
    }

    #[test]
    fn a_delta_run_merges_replays_and_the_latest_page_wins() {
        let r = roster(&[("a", "Cork")]);
        // Page 5 already sent a newer "a"; page 2's older copy is superseded.
        let queued = HashMap::from([(
            ExternalId::parse("a").unwrap(),
            Queued {
                page: 5,
                copy: CopyId::LEGACY,
                digest: Some(Digest::of(&profile("a", "Galway").profile.unwrap())),
            },
        )]);
        let old = batch(Mode::Delta, 2, Op::Upsert, vec![profile("a", "Dublin")]);
        let sorted = sort(&old, None, &r, &queued);
        assert_eq!(sorted.unchanged.len(), 1);
        assert!(sorted.refused.is_empty(), "a replay is not a duplicate");
        // Page 7 repeats what page 5 sent: nothing to send.
        let same = batch(Mode::Delta, 7, Op::Upsert, vec![profile("a", "Galway")]);
        assert_eq!(sort(&same, None, &r, &queued).unchanged.len(), 1);
        // Page 7 changes it again: sent after what is queued.
        let newer = batch(Mode::Delta, 7, Op::Upsert, vec![profile("a", "Limerick")]);
        let sorted = sort(&newer, None, &r, &queued);
        assert_eq!(sorted.send.len(), 1);
        assert!(sorted.flush_first);
        // Another part of page 5 itself is not older than page 5: sorted, not skipped.
        let same_page = batch(Mode::Delta, 5, Op::Upsert, vec![profile("a", "Limerick")]);
        assert_eq!(sort(&same_page, None, &r, &queued).send.len(), 1);
        // A later removal is queued for the end of the run.
        let gone = batch(Mode::Delta, 8, Op::Delete, vec![OktaProfile { profile: None, ..profile("a", "") }]);
        assert_eq!(sort(&gone, None, &r, &queued).queued_deletes.len(), 1);
    }

    #[test]
    fn a_user_read_twice_by_a_redelivered_page_is_not_a_duplicate() {
        let r = roster(&[("a", "Cork")]);
        let (first, second) = (CopyId::from_u64(11), CopyId::from_u64(21));
        let mut lineage = Lineage::default();
        lineage.note((0, CopyId::from_u64(10)), None, false);
        lineage.note((1, first), Some(CopyId::from_u64(10)), false);
        lineage.note((1, second), Some(CopyId::from_u64(10)), false);
        // Copy 11 of page 1 queued "a" (changed); copy 21 of page 1 brings it again.
        let digest = Digest::of(&profile("a", "Galway").profile.unwrap());
        let queued =
            HashMap::from([(ExternalId::parse("a").unwrap(), Queued { page: 1, copy: first, digest: Some(digest) })]);
        let mut again = batch(Mode::Full, 1, Op::Upsert, vec![profile("a", "Galway")]);
        again.copy = second;
        let sorted = sort_batch(&again, positions(&again), None, &r, &queued, &lineage);
        assert!(sorted.refused.is_empty(), "{:?}", sorted.refused);
        assert_eq!(sorted.unchanged.len(), 1, "the same profile as the first read: nothing to send");
        // Read again with another profile: the later read is sent.
        let mut changed = batch(Mode::Full, 1, Op::Upsert, vec![profile("a", "Limerick")]);
        changed.copy = second;
        let sorted = sort_batch(&changed, positions(&changed), None, &r, &queued, &lineage);
        assert_eq!(sorted.send.len(), 1);
        assert!(sorted.flush_first, "the first read's copy goes out first");
        // On one read of the chain, the same externalId twice is still a duplicate.
        let mut later = batch(Mode::Full, 2, Op::Upsert, vec![profile("a", "Galway")]);
        later.copy = CopyId::from_u64(12);
        later.parent = Some(first);
        lineage.note((2, later.copy), later.parent, false);
        assert_eq!(sort_batch(&later, positions(&later), None, &r, &queued, &lineage).refused.len(), 1);
    }

    #[test]
    fn a_user_a_predecessor_accounted_for_earlier_in_the_chain_is_a_duplicate() {
        let r = roster(&[]);
        let mut lineage = Lineage::default();
        lineage.note((0, CopyId::from_u64(10)), None, false);
        lineage.note((1, CopyId::from_u64(11)), Some(CopyId::from_u64(10)), false);
        lineage.note((2, CopyId::from_u64(12)), Some(CopyId::from_u64(11)), false);
        lineage.note((3, CopyId::from_u64(13)), Some(CopyId::from_u64(12)), false);
        // The events say copy 12 of page 2 held "a" (unchanged).
        let events = [RunEvent::new(
            run_id(),
            sync(),
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            EventKind::ProfilesUnchanged {
                pieces: vec![Piece {
                    page_seq: 2,
                    part: 0,
                    parts: 1,
                    len: 1,
                    total_pages: None,
                    from: 0,
                    to: 1,
                    copy: CopyId::from_u64(12),
                    parent: Some(CopyId::from_u64(11)),
                }],
                external_ids: vec![ExternalId::parse("a").unwrap()],
            },
        )];
        let ledger = Ledger::replay(sync(), &events);
        let mut b = batch(Mode::Full, 3, Op::Upsert, vec![profile("a", "Cork")]);
        b.copy = CopyId::from_u64(13);
        b.parent = Some(CopyId::from_u64(12));
        let sorted = sort_batch(&b, positions(&b), ledger.run(&run_id()), &r, &HashMap::new(), &lineage);
        assert_eq!(sorted.refused.len(), 1, "page 3 descends from the copy of page 2 that held \"a\"");
        assert!(sorted.refused[0].2.contains("on page 2"), "{}", sorted.refused[0].2);
    }
}
