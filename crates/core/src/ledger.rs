//! The uploader's state, rebuilt from the events stream.
//!
//! The uploader is the only stage with state (DESIGN §5): the open session and
//! how many bulk requests it has taken, when the last session was triggered,
//! and which parts of which pages each run has loaded. All of it is derived
//! from the uploader's own `RunEvent`s, so a standby that takes over replays
//! the stream into a fresh `Ledger` and carries on where its predecessor
//! stopped. The uploader records `BulkSending` *before* each request, so after
//! a crash the request count can be too high (an early rollover), never too
//! low (a 51st request).
//!
//! Per run it also keeps what change detection, reconciliation and the
//! guards decide from: what became of each externalId (sent, unchanged,
//! queued for deactivation, refused), the ids the source returned but the
//! mapper rejected, the deactivation list once it is fixed, and whether the
//! run reads Graph's full state. Two facts come from the fetcher's events
//! rather than the uploader's own (`RunStarted`'s options, `DeltaResync`):
//! a standby reads them on replay; the active uploader learns the same from
//! the batches themselves.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ids::{ExternalId, RunId, SyncName};
use crate::lineage::{CopyId, Lineage, PageRef};
use crate::messages::{Batch, EventKind, OktaProfile, Op, Piece, ProfileChange, RunEvent, RunOptions, SessionStatus};
use crate::roster::Digest;
use crate::upload::clock::TriggerTime;

/// The page number of a run's deactivation list: it is packed and tracked
/// like the batches of a page after the last one, so a crash in the middle
/// of the deactivations resumes exactly where it stopped.
pub const DEACTIVATION_PAGE: u32 = u32::MAX;

/// What a run did with one externalId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Sent with bulk-upsert into `session`; the roster keeps `digest` once
    /// that session completes.
    Upserted { session: String, digest: Option<Digest> },
    /// Not sent: unchanged since its last confirmed upload.
    Unchanged,
    /// To be deactivated once every page is in and the guards pass.
    DeleteQueued,
    /// Refused, by the uploader (a duplicate) or by Okta.
    Refused,
}

/// The latest thing a run did with one externalId, and on which page.
/// Graph may show one user several times in a delta round; the one on the
/// latest page is the current state ("the last wins").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub page: u32,
    /// Which read of the page (`lineage`).
    pub copy: CopyId,
    pub fate: Fate,
}

impl Seen {
    pub fn at(&self) -> PageRef {
        (self.page, self.copy)
    }
}

/// The session the uploader is loading into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    pub id: String,
    /// Bulk requests sent or possibly sent to it.
    pub requests: u32,
}

/// Positions `[from, to)` of one batch that are accounted for (loaded or
/// refused), kept merged and sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Coverage {
    len: u32,
    ranges: Vec<(u32, u32)>,
}

impl Coverage {
    fn add(&mut self, from: u32, to: u32) {
        if from >= to {
            return;
        }
        self.ranges.push((from, to));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.ranges.len());
        for &(f, t) in &self.ranges {
            match merged.last_mut() {
                Some(last) if f <= last.1 => last.1 = last.1.max(t),
                _ => merged.push((f, t)),
            }
        }
        self.ranges = merged;
    }

    fn contains(&self, i: u32) -> bool {
        self.ranges.iter().any(|&(f, t)| f <= i && i < t)
    }

    fn is_complete(&self) -> bool {
        self.len == 0 || self.ranges == [(0, self.len)]
    }
}

/// What one page of a run has had accounted for.
#[derive(Debug, Clone, Default)]
struct PageProgress {
    parts: u32,
    by_part: BTreeMap<u32, Coverage>,
}

impl PageProgress {
    fn is_complete(&self) -> bool {
        self.parts > 0 && (0..self.parts).all(|p| self.by_part.get(&p).is_some_and(Coverage::is_complete))
    }
}

/// One run's progress, as far as the uploader is concerned.
#[derive(Debug, Clone, Default)]
pub struct RunProgress {
    /// Every copy of every page met so far, and how they descend.
    lineage: Lineage,
    pages: BTreeMap<PageRef, PageProgress>,
    /// Sessions that carry data of this run, in order.
    pub sessions: Vec<String>,
    pub completed: bool,
    pub failed: bool,
    /// The options it was started with (from `RunStarted`).
    pub options: Option<RunOptions>,
    full_state: bool,
    ids: HashMap<ExternalId, Seen>,
    /// Deactivated with bulk-delete, and into which session.
    deactivated: HashMap<ExternalId, String>,
    rejected_in_source: HashSet<String>,
    plan: BTreeMap<u32, Vec<ExternalId>>,
    plan_parts: Option<u32>,
    delta_link: Option<String>,
    /// Why a guard refused the run's deactivations, once it did.
    pub guard_tripped: Option<String>,
}

impl RunProgress {
    /// Every page of one lineage of the run, from page 0 to a last page, is
    /// fully accounted for (`lineage`).
    pub fn is_loaded(&self) -> bool {
        self.lineage.complete_chain(|p| self.page_complete(p)).is_some()
    }

    fn page_complete(&self, page: PageRef) -> bool {
        self.pages.get(&page).is_some_and(PageProgress::is_complete)
    }

    /// The run's pages and how they descend from each other.
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    /// The run reads Graph's full state (a full run, or a delta run's initial
    /// round or resync): a roster user it does not return has left.
    pub fn reads_full_state(&self) -> bool {
        self.full_state || self.options.as_ref().is_some_and(RunOptions::reads_full_state)
    }

    /// What the run last did with `id`.
    pub fn seen(&self, id: &ExternalId) -> Option<&Seen> {
        self.ids.get(id)
    }

    /// Every externalId the run accounted for, with what became of it.
    pub fn ids(&self) -> &HashMap<ExternalId, Seen> {
        &self.ids
    }

    /// Users the source returned that the mapper rejected.
    pub fn rejected_in_source(&self) -> &HashSet<String> {
        &self.rejected_in_source
    }

    /// Users deactivated by this run, with their session.
    pub fn deactivated(&self) -> &HashMap<ExternalId, String> {
        &self.deactivated
    }

    /// The deactivation list, once every part of it is recorded.
    pub fn deactivation_plan(&self) -> Option<Vec<Vec<ExternalId>>> {
        let parts = self.plan_parts?;
        (self.plan.len() == parts as usize).then(|| self.plan.values().cloned().collect())
    }

    /// The deltaLink the run's last page brought, once the uploader saw it.
    pub fn delta_link(&self) -> Option<&str> {
        self.delta_link.as_deref()
    }

    /// Records what the run did with `id` on `page`. A later page wins, and
    /// on the same page the later record wins, except that a refusal never
    /// hides what the run already did with the user (it refused a later
    /// copy), and a copy found unchanged after an upsert keeps the upsert
    /// (it is the same profile, and the roster must learn it).
    fn note(&mut self, id: ExternalId, (page, copy): PageRef, fate: Fate) {
        let fate = match (self.ids.get(&id), fate) {
            (Some(_), Fate::Refused) => return,
            (Some(seen), _) if seen.page > page => return,
            (Some(Seen { fate: sent @ Fate::Upserted { .. }, .. }), Fate::Unchanged) => sent.clone(),
            (_, fate) => fate,
        };
        self.ids.insert(id, Seen { page, copy, fate });
    }

    /// Drops the per-user detail of a run that is over.
    fn forget_users(&mut self) {
        self.ids = HashMap::new();
        self.deactivated = HashMap::new();
        self.rejected_in_source = HashSet::new();
        self.plan = BTreeMap::new();
    }

    fn cover(&mut self, piece: &Piece) {
        let at = (piece.page_seq, piece.copy);
        if piece.page_seq != DEACTIVATION_PAGE {
            let last = piece.total_pages == Some(piece.page_seq.saturating_add(1));
            self.lineage.note(at, piece.parent, last);
        }
        let page = self.pages.entry(at).or_default();
        page.parts = piece.parts;
        let part = page.by_part.entry(piece.part).or_default();
        part.len = piece.len;
        part.add(piece.from, piece.to);
    }
}

/// The uploader's recoverable state for one sync (one identity source).
#[derive(Debug, Clone)]
pub struct Ledger {
    sync: SyncName,
    session: Option<OpenSession>,
    last_trigger: Option<TriggerTime>,
    /// Triggered sessions whose final status has not been recorded yet.
    awaiting: Vec<String>,
    /// The final status of every session that reached one.
    finished: HashMap<String, SessionStatus>,
    /// Sessions cancelled because Okta had applied nothing from them.
    cancelled_empty: std::collections::HashSet<String>,
    runs: HashMap<RunId, RunProgress>,
}

impl Ledger {
    pub fn new(sync: SyncName) -> Self {
        Self {
            sync,
            session: None,
            last_trigger: None,
            awaiting: Vec::new(),
            finished: HashMap::new(),
            cancelled_empty: std::collections::HashSet::new(),
            runs: HashMap::new(),
        }
    }

    /// Replays `events` (in stream order) into a fresh ledger. Events of
    /// other syncs are ignored.
    pub fn replay<'a>(sync: SyncName, events: impl IntoIterator<Item = &'a RunEvent>) -> Self {
        let mut ledger = Self::new(sync);
        for e in events {
            ledger.apply(e);
        }
        ledger
    }

    /// Folds one event into the state. Applying an event twice is harmless.
    pub fn apply(&mut self, e: &RunEvent) {
        if e.sync != self.sync {
            return;
        }
        match &e.kind {
            EventKind::SessionOpened { session_id } => {
                if self.session.as_ref().is_none_or(|s| &s.id != session_id) {
                    self.session = Some(OpenSession { id: session_id.clone(), requests: 0 });
                }
            }
            EventKind::BulkSending { session_id, request_no, .. } => {
                let session = self.session.get_or_insert_with(|| OpenSession { id: session_id.clone(), requests: 0 });
                if &session.id == session_id {
                    session.requests = session.requests.max(*request_no);
                }
            }
            EventKind::BulkLoaded { session_id, pieces, op, changes, .. } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                if !run.sessions.contains(session_id) {
                    run.sessions.push(session_id.clone());
                }
                pieces.iter().for_each(|p| run.cover(p));
                for (change, page) in changes.iter().zip(pages_of(pieces)) {
                    note_change(run, *op, session_id, change, page);
                }
            }
            EventKind::ProfilesRefused { pieces, refused } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                pieces.iter().for_each(|p| run.cover(p));
                for (r, page) in refused.iter().zip(pages_of(pieces)) {
                    if page.0 == DEACTIVATION_PAGE {
                        continue;
                    }
                    if let Some(id) = r.external_id.as_deref().and_then(|id| ExternalId::parse(id).ok()) {
                        run.note(id, page, Fate::Refused);
                    }
                }
            }
            EventKind::ProfilesUnchanged { pieces, external_ids } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                pieces.iter().for_each(|p| run.cover(p));
                for (id, page) in external_ids.iter().zip(pages_of(pieces)) {
                    run.note(id.clone(), page, Fate::Unchanged);
                }
            }
            EventKind::DeactivationsQueued { pieces, external_ids } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                pieces.iter().for_each(|p| run.cover(p));
                for (id, page) in external_ids.iter().zip(pages_of(pieces)) {
                    run.note(id.clone(), page, Fate::DeleteQueued);
                }
            }
            EventKind::RejectedInSource { external_ids } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                run.rejected_in_source.extend(external_ids.iter().cloned());
            }
            EventKind::DeactivationsPlanned { part, parts, external_ids } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                run.plan_parts = Some(*parts);
                run.plan.insert(*part, external_ids.clone());
            }
            EventKind::GuardTripped { reason, .. } => {
                self.runs.entry(e.run_id.clone()).or_default().guard_tripped = Some(reason.clone());
            }
            EventKind::RunStarted { options } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                run.options = Some(options.clone());
                run.full_state |= options.full_state;
            }
            EventKind::DeltaResync { .. } => {
                self.runs.entry(e.run_id.clone()).or_default().full_state = true;
            }
            EventKind::DeltaLinkReceived { delta_link } => {
                self.runs.entry(e.run_id.clone()).or_default().delta_link = Some(delta_link.clone());
            }
            EventKind::BatchEmpty { page_seq, part, parts, total_pages, copy, parent } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                run.cover(&Piece {
                    page_seq: *page_seq,
                    part: *part,
                    parts: *parts,
                    len: 0,
                    total_pages: *total_pages,
                    from: 0,
                    to: 0,
                    copy: *copy,
                    parent: *parent,
                });
            }
            EventKind::SessionTriggered { session_id, okta_at, .. } => {
                if self.session.as_ref().is_some_and(|s| &s.id == session_id) {
                    self.session = None;
                }
                self.last_trigger = Some(TriggerTime { session: session_id.clone(), local: e.at, okta: *okta_at });
                if !self.awaiting.contains(session_id) {
                    self.awaiting.push(session_id.clone());
                }
            }
            EventKind::SessionFinished { session_id, status, empty } => {
                self.awaiting.retain(|s| s != session_id);
                if status.is_final() {
                    self.finished.insert(session_id.clone(), *status);
                }
                if *empty {
                    self.cancelled_empty.insert(session_id.clone());
                }
                if status.is_final() && self.session.as_ref().is_some_and(|s| &s.id == session_id) {
                    self.session = None;
                }
            }
            EventKind::RunCompleted { .. } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                run.completed = true;
                run.forget_users();
            }
            EventKind::RunFailed { .. } => {
                let run = self.runs.entry(e.run_id.clone()).or_default();
                run.failed = true;
                run.forget_users();
            }
            EventKind::PageFetched { .. }
            | EventKind::PageMapped { .. }
            | EventKind::CooldownWaited { .. }
            | EventKind::Retrying { .. }
            | EventKind::GuardOverridden { .. }
            | EventKind::RunQueued { .. }
            | EventKind::RunMerged { .. } => {}
        }
    }

    /// Notes what the active uploader learnt from a batch before any event
    /// says it: the run reads the full state (the batch's options say so).
    pub fn note_options(&mut self, run: &RunId, options: &RunOptions) {
        let progress = self.runs.entry(run.clone()).or_default();
        progress.full_state |= options.full_state;
        if progress.options.is_none() {
            progress.options = Some(options.clone());
        }
    }

    /// The final status of `session_id`, once recorded.
    pub fn session_status(&self, session_id: &str) -> Option<SessionStatus> {
        self.finished.get(session_id).copied()
    }

    /// The session was cancelled because Okta had applied nothing from it.
    pub fn was_cancelled_empty(&self, session_id: &str) -> bool {
        self.cancelled_empty.contains(session_id)
    }

    pub fn sync(&self) -> &SyncName {
        &self.sync
    }

    /// The session to load into, if one is open.
    pub fn open_session(&self) -> Option<&OpenSession> {
        self.session.as_ref()
    }

    /// Forgets the open session (Okta closed or expired it).
    pub fn drop_session(&mut self) {
        self.session = None;
    }

    /// Okta says the open session has taken all the requests it can: count
    /// it as full, so the next send rolls over instead of being refused again.
    pub fn mark_session_full(&mut self, requests_per_session: u32) {
        if let Some(session) = self.session.as_mut() {
            session.requests = session.requests.max(requests_per_session);
        }
    }

    /// Triggered sessions whose outcome is still unknown.
    pub fn awaiting(&self) -> &[String] {
        &self.awaiting
    }

    /// The last trigger: the next session may be created only after
    /// Okta's cooldown from it (`upload::clock`).
    pub fn last_trigger(&self) -> Option<&TriggerTime> {
        self.last_trigger.as_ref()
    }

    pub fn run(&self, run: &RunId) -> Option<&RunProgress> {
        self.runs.get(run)
    }

    /// True when the run was already completed or failed: nothing more to do.
    pub fn is_run_closed(&self, run: &RunId) -> bool {
        self.runs.get(run).is_some_and(|r| r.completed || r.failed)
    }

    /// Whether part `part` of copy `page` of `run` is fully accounted for.
    pub fn part_done(&self, run: &RunId, page: PageRef, part: u32) -> bool {
        self.runs
            .get(run)
            .and_then(|r| r.pages.get(&page))
            .and_then(|p| p.by_part.get(&part))
            .is_some_and(Coverage::is_complete)
    }

    /// How many parts copy `page` of `run` was cut into, if known.
    pub fn page_parts(&self, run: &RunId, page: PageRef) -> Option<u32> {
        self.runs.get(run).and_then(|r| r.pages.get(&page)).map(|p| p.parts).filter(|&n| n > 0)
    }

    /// The profiles of `batch` not yet accounted for, with their positions.
    /// Empty when a redelivered batch was fully loaded before.
    pub fn remaining(&self, batch: &Batch) -> Vec<(u32, OktaProfile)> {
        let coverage = self
            .runs
            .get(&batch.run_id)
            .and_then(|r| r.pages.get(&(batch.page_seq, batch.copy)))
            .and_then(|p| p.by_part.get(&batch.part));
        batch
            .profiles
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32, p))
            .filter(|(i, _)| !coverage.is_some_and(|c| c.contains(*i)))
            .map(|(i, p)| (i, p.clone()))
            .collect()
    }

    /// The batch's every position is accounted for.
    pub fn is_batch_done(&self, batch: &Batch) -> bool {
        self.part_done(&batch.run_id, (batch.page_seq, batch.copy), batch.part)
    }

    /// Runs that are fully loaded but not yet completed or failed.
    pub fn loaded_unfinished_runs(&self) -> Vec<RunId> {
        let mut runs: Vec<RunId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.is_loaded() && !r.completed && !r.failed)
            .map(|(id, _)| id.clone())
            .collect();
        runs.sort();
        runs
    }
}

/// The page copy of each position the pieces cover, in order.
fn pages_of(pieces: &[Piece]) -> impl Iterator<Item = PageRef> + '_ {
    pieces.iter().flat_map(|p| std::iter::repeat_n((p.page_seq, p.copy), p.to.saturating_sub(p.from) as usize))
}

fn note_change(run: &mut RunProgress, op: Op, session: &str, change: &ProfileChange, page: PageRef) {
    match op {
        Op::Delete => {
            run.deactivated.insert(change.external_id.clone(), session.to_string());
        }
        Op::Upsert => {
            let fate = Fate::Upserted { session: session.to_string(), digest: change.digest.clone() };
            run.note(change.external_id.clone(), page, fate);
        }
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::messages::{Action, Rejected};

    fn sync() -> SyncName {
        SyncName::parse("demo").unwrap()
    }

    fn run() -> RunId {
        RunId::parse("r1").unwrap()
    }

    #[test]
    fn coverage_merges_only_ranges_that_touch_or_overlap() {
        let mut c = Coverage { len: 7, ranges: vec![] };
        c.add(5, 7);
        c.add(0, 2);
        assert_eq!(c.ranges, [(0, 2), (5, 7)], "a gap stays a gap");
        assert!(!c.is_complete());
        assert!(!c.contains(3));
        c.add(2, 3);
        assert_eq!(c.ranges, [(0, 3), (5, 7)], "touching ranges merge");
        c.add(1, 6);
        assert_eq!(c.ranges, [(0, 7)]);
        assert!(c.is_complete());
        c.add(4, 4);
        assert_eq!(c.ranges, [(0, 7)], "an empty range adds nothing");
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    fn ev(secs: i64, kind: EventKind) -> RunEvent {
        RunEvent::new(run(), sync(), at(secs), kind)
    }

    fn piece(page_seq: u32, part: u32, parts: u32, len: u32, from: u32, to: u32, total: Option<u32>) -> Piece {
        Piece { page_seq, part, parts, len, total_pages: total, from, to, ..Default::default() }
    }

    fn batch(page_seq: u32, part: u32, parts: u32, n: u32) -> Batch {
        Batch {
            v: 1,
            run_id: run(),
            sync: sync(),
            options: RunOptions::default(),
            page_seq,
            part,
            parts,
            total_pages: None,
            op: Op::Upsert,
            profiles: (0..n)
                .map(|i| OktaProfile {
                    external_id: ExternalId::parse(format!("u{page_seq}-{part}-{i}")).unwrap(),
                    profile: None,
                })
                .collect(),
            rejected: vec![],
            delta_link: None,
            copy: CopyId::LEGACY,
            parent: None,
        }
    }

    fn loaded(session: &str, no: u32, pieces: Vec<Piece>) -> EventKind {
        EventKind::BulkLoaded {
            session_id: session.into(),
            request_no: no,
            op: Op::Upsert,
            profiles: 0,
            bytes: 0,
            pieces,
            changes: vec![],
        }
    }

    fn sending(session: &str, no: u32) -> EventKind {
        EventKind::BulkSending { session_id: session.into(), request_no: no, op: Op::Upsert, profiles: 0, bytes: 0 }
    }

    #[test]
    fn a_run_remembers_the_delta_link_it_received() {
        let started = ev(0, EventKind::RunStarted { options: RunOptions::default() });
        let ledger = Ledger::replay(sync(), std::slice::from_ref(&started));
        assert_eq!(ledger.run(&run()).and_then(RunProgress::delta_link), None, "none received yet");
        let link = "https://graph.example/v1.0/users/delta?$deltatoken=abc";
        let events = [started, ev(1, EventKind::DeltaLinkReceived { delta_link: link.into() })];
        let ledger = Ledger::replay(sync(), &events);
        assert_eq!(ledger.run(&run()).and_then(RunProgress::delta_link), Some(link));
    }

    fn id(s: &str) -> ExternalId {
        ExternalId::parse(s).unwrap()
    }

    fn delta(full_state: bool) -> RunOptions {
        RunOptions { mode: crate::messages::Mode::Delta, full_state, ..RunOptions::default() }
    }

    #[test]
    fn a_later_page_wins_and_an_earlier_page_never_overrides_it() {
        let unchanged = |secs, page| {
            let pieces = vec![piece(page, 0, 1, 1, 0, 1, None)];
            ev(secs, EventKind::ProfilesUnchanged { pieces, external_ids: vec![id("a")] })
        };
        let queued = |secs, page| {
            let pieces = vec![piece(page, 0, 1, 1, 0, 1, None)];
            ev(secs, EventKind::DeactivationsQueued { pieces, external_ids: vec![id("a")] })
        };
        let seen = |events: &[RunEvent]| Ledger::replay(sync(), events).run(&run()).unwrap().seen(&id("a")).cloned();
        let late_copy_of_page_two = seen(&[queued(0, 5), unchanged(1, 2)]).unwrap();
        assert_eq!((late_copy_of_page_two.page, late_copy_of_page_two.fate), (5, Fate::DeleteQueued));
        let same_page = seen(&[unchanged(0, 5), queued(1, 5)]).unwrap();
        assert_eq!(same_page.fate, Fate::DeleteQueued, "on one page the later record wins");
    }

    #[test]
    fn a_deactivation_is_remembered_with_its_session() {
        let change = ProfileChange { external_id: id("a"), action: Action::Deactivate, changed: vec![], digest: None };
        let events = [ev(
            0,
            EventKind::BulkLoaded {
                session_id: "s2".into(),
                request_no: 1,
                op: Op::Delete,
                profiles: 1,
                bytes: 0,
                pieces: vec![piece(DEACTIVATION_PAGE, 0, 1, 1, 0, 1, None)],
                changes: vec![change],
            },
        )];
        let ledger = Ledger::replay(sync(), &events);
        let run = ledger.run(&run()).unwrap();
        assert_eq!(run.deactivated().get(&id("a")).map(String::as_str), Some("s2"));
        assert_eq!(run.deactivated().len(), 1);
    }

    #[test]
    fn the_same_session_opened_twice_keeps_its_count_and_another_replaces_it() {
        let opened = |secs, s: &str| ev(secs, EventKind::SessionOpened { session_id: s.into() });
        let ledger = Ledger::replay(sync(), &[opened(0, "s1"), ev(1, sending("s1", 3)), opened(2, "s1")]);
        assert_eq!(ledger.open_session(), Some(&OpenSession { id: "s1".into(), requests: 3 }), "a repeated event");
        let ledger = Ledger::replay(sync(), &[opened(0, "s1"), ev(1, sending("s1", 3)), opened(2, "s2")]);
        assert_eq!(ledger.open_session(), Some(&OpenSession { id: "s2".into(), requests: 0 }));
    }

    #[test]
    fn only_the_open_session_finishing_closes_it_and_an_empty_one_is_remembered() {
        let finished = |secs, s: &str, empty| {
            ev(secs, EventKind::SessionFinished { session_id: s.into(), status: SessionStatus::Completed, empty })
        };
        let opened = ev(0, EventKind::SessionOpened { session_id: "s1".into() });
        let ledger = Ledger::replay(sync(), &[opened.clone(), finished(1, "s0", true)]);
        assert_eq!(ledger.open_session().map(|s| s.id.as_str()), Some("s1"), "another session finished");
        assert!(ledger.was_cancelled_empty("s0"));
        assert!(!ledger.was_cancelled_empty("s1"));
        let ledger = Ledger::replay(sync(), &[opened, finished(1, "s1", false)]);
        assert_eq!(ledger.open_session(), None);
        assert!(!ledger.was_cancelled_empty("s1"));
    }

    #[test]
    fn a_resync_is_not_forgotten_when_the_start_event_or_a_batch_comes_later() {
        let full = |ledger: &Ledger| ledger.run(&run()).is_some_and(RunProgress::reads_full_state);
        let resync = ev(0, EventKind::DeltaResync { reason: "410 Gone".into() });
        let started = ev(1, EventKind::RunStarted { options: delta(false) });
        assert!(full(&Ledger::replay(sync(), &[resync, started.clone()])), "a resync before the start event");
        let mut ledger = Ledger::replay(sync(), &[started]);
        assert!(!full(&ledger));
        ledger.note_options(&run(), &delta(true));
        assert!(full(&ledger), "a batch of the resync round says so before any event");
        let mut fresh = Ledger::replay(sync(), &[]);
        fresh.note_options(&run(), &delta(true));
        assert!(full(&fresh));
        assert_eq!(fresh.run(&run()).and_then(|r| r.options.clone()), Some(delta(true)));
    }

    #[test]
    fn a_page_that_names_no_parts_is_never_complete() {
        let replay = |parts| {
            let events = [ev(0, loaded("s1", 1, vec![piece(0, 0, parts, 1, 0, 1, Some(1))]))];
            Ledger::replay(sync(), &events).run(&run()).is_some_and(RunProgress::is_loaded)
        };
        assert!(replay(1), "the run's only page, wholly loaded");
        assert!(!replay(0), "an event without a part count proves nothing");
    }

    #[test]
    fn counts_requests_from_intents_so_a_crash_errs_high() {
        let events = vec![
            ev(0, EventKind::SessionOpened { session_id: "s1".into() }),
            ev(1, sending("s1", 1)),
            ev(2, loaded("s1", 1, vec![piece(0, 0, 1, 200, 0, 200, None)])),
            // crashed after announcing request 2: it may have reached Okta
            ev(3, sending("s1", 2)),
        ];
        let ledger = Ledger::replay(sync(), &events);
        assert_eq!(ledger.open_session(), Some(&OpenSession { id: "s1".into(), requests: 2 }));
    }

    #[test]
    fn a_trigger_closes_the_session_and_starts_the_cooldown() {
        let events = vec![
            ev(0, EventKind::SessionOpened { session_id: "s1".into() }),
            ev(1, sending("s1", 1)),
            ev(10, EventKind::SessionTriggered { session_id: "s1".into(), requests: 1, okta_at: Some(at(9)) }),
        ];
        let mut ledger = Ledger::replay(sync(), &events);
        assert_eq!(ledger.open_session(), None);
        let trigger = ledger.last_trigger().unwrap();
        assert_eq!((trigger.session.as_str(), trigger.local, trigger.okta), ("s1", at(10), Some(at(9))));
        assert_eq!(ledger.awaiting(), ["s1".to_string()]);
        ledger.apply(&ev(
            20,
            EventKind::SessionFinished { session_id: "s1".into(), status: SessionStatus::Completed, empty: false },
        ));
        assert!(ledger.awaiting().is_empty());
    }

    #[test]
    fn remaining_skips_what_was_loaded_even_when_a_batch_was_split() {
        let b = batch(0, 0, 1, 10);
        let mut ledger = Ledger::new(sync());
        assert_eq!(ledger.remaining(&b).len(), 10);
        ledger.apply(&ev(0, loaded("s1", 1, vec![piece(0, 0, 1, 10, 0, 4, Some(1))])));
        let rest: Vec<u32> = ledger.remaining(&b).into_iter().map(|(i, _)| i).collect();
        assert_eq!(rest, (4..10).collect::<Vec<_>>());
        assert!(!ledger.is_batch_done(&b));
        assert!(!ledger.run(&run()).unwrap().is_loaded());
        ledger.apply(&ev(1, loaded("s1", 2, vec![piece(0, 0, 1, 10, 4, 10, Some(1))])));
        assert!(ledger.remaining(&b).is_empty());
        assert!(ledger.is_batch_done(&b));
        assert!(ledger.run(&run()).unwrap().is_loaded());
        assert_eq!(ledger.loaded_unfinished_runs(), vec![run()]);
    }

    #[test]
    fn a_run_is_loaded_only_when_every_page_and_part_is_accounted_for() {
        let mut ledger = Ledger::new(sync());
        // page 1 of 2 is the last page; page 0 has two parts
        ledger.apply(&ev(0, loaded("s1", 1, vec![piece(1, 0, 1, 5, 0, 5, Some(2))])));
        ledger.apply(&ev(1, loaded("s1", 2, vec![piece(0, 0, 2, 5, 0, 5, None)])));
        assert!(!ledger.run(&run()).unwrap().is_loaded(), "page 0 part 1 missing");
        ledger
            .apply(&ev(2, EventKind::ProfilesRefused { refused: vec![], pieces: vec![piece(0, 1, 2, 1, 0, 1, None)] }));
        assert!(ledger.run(&run()).unwrap().is_loaded());
        ledger.apply(&ev(3, EventKind::RunCompleted { delta_link: None }));
        assert!(ledger.is_run_closed(&run()));
        assert!(ledger.loaded_unfinished_runs().is_empty());
    }

    #[test]
    fn empty_batches_count_as_seen_pages() {
        let mut ledger = Ledger::new(sync());
        let b = batch(0, 0, 1, 0);
        assert!(!ledger.is_batch_done(&b));
        ledger.apply(&ev(
            0,
            EventKind::BatchEmpty {
                page_seq: 0,
                part: 0,
                parts: 1,
                total_pages: Some(1),
                copy: CopyId::LEGACY,
                parent: None,
            },
        ));
        assert!(ledger.is_batch_done(&b));
        assert!(ledger.run(&run()).unwrap().is_loaded());
    }

    #[test]
    fn replaying_twice_changes_nothing_and_other_syncs_are_ignored() {
        let other = RunEvent::new(
            run(),
            SyncName::parse("other").unwrap(),
            at(0),
            EventKind::SessionOpened { session_id: "x".into() },
        );
        let events = [
            other,
            ev(0, EventKind::SessionOpened { session_id: "s1".into() }),
            ev(1, sending("s1", 1)),
            ev(1, sending("s1", 1)),
        ];
        let ledger = Ledger::replay(sync(), events.iter().chain(events.iter()));
        assert_eq!(ledger.open_session(), Some(&OpenSession { id: "s1".into(), requests: 1 }));
    }

    #[test]
    fn a_run_remembers_what_became_of_each_external_id_until_it_ends() {
        let id = |s: &str| ExternalId::parse(s).unwrap();
        let change =
            |s: &str| ProfileChange { external_id: id(s), action: Action::Create, changed: vec![], digest: None };
        let mut ledger = Ledger::new(sync());
        let upsert = EventKind::BulkLoaded {
            session_id: "s1".into(),
            request_no: 1,
            op: Op::Upsert,
            profiles: 2,
            bytes: 0,
            pieces: vec![piece(0, 0, 1, 2, 0, 2, None)],
            changes: vec![change("a"), change("b")],
        };
        ledger.apply(&ev(0, upsert));
        let refused = Rejected { external_id: Some("c".into()), reason: "duplicate externalId".into() };
        ledger.apply(&ev(
            1,
            EventKind::ProfilesRefused { refused: vec![refused], pieces: vec![piece(1, 0, 1, 1, 0, 1, None)] },
        ));
        // A delta replay of "a" on a later page, asking to deactivate it: the later page wins.
        ledger.apply(&ev(
            2,
            EventKind::DeactivationsQueued {
                pieces: vec![piece(2, 0, 1, 1, 0, 1, Some(3))],
                external_ids: vec![id("a")],
            },
        ));
        let r = ledger.run(&run()).unwrap();
        assert_eq!(r.seen(&id("a")).map(|s| (s.page, &s.fate)), Some((2, &Fate::DeleteQueued)));
        assert!(matches!(r.seen(&id("b")).map(|s| &s.fate), Some(Fate::Upserted { session, .. }) if session == "s1"));
        assert_eq!(r.seen(&id("c")).map(|s| &s.fate), Some(&Fate::Refused));
        assert!(r.is_loaded());
        ledger.apply(&ev(3, EventKind::DeactivationsPlanned { part: 0, parts: 1, external_ids: vec![id("a")] }));
        assert_eq!(ledger.run(&run()).unwrap().deactivation_plan(), Some(vec![vec![id("a")]]));
        ledger.apply(&ev(4, EventKind::RunCompleted { delta_link: None }));
        assert!(ledger.run(&run()).unwrap().ids().is_empty(), "the detail goes once the run is over");
    }
}
