//! What this process holds of one run besides the log: the deliveries it
//! has not acked, the profiles waiting to fill a request, and which parts
//! of which page copies have arrived.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::changes::Queued;
use crate::ids::{ExternalId, RunId};
use crate::ledger::Ledger;
use crate::limits::Limits;
use crate::lineage::{Lineage, PageRef};
use crate::messages::{Action, OktaProfile, Op, ProfileChange, RunOptions};
use crate::packing::{Packed, Packer, PieceMeta};

use super::refusal::explode;
use super::{Key, State};

/// A delivery held until its batch is accounted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub key: Key,
    pub page: PageRef,
    pub part: u32,
}

#[derive(Debug)]
pub(crate) struct RunBuffer {
    pub options: RunOptions,
    pub packer: Packer,
    pub held: Vec<Held>,
    /// Deliveries of this run's `FinishRun`, acked when the run closes.
    pub finish_keys: Vec<Key>,
    /// Parts received per page copy, and how many parts it has.
    received: BTreeMap<PageRef, (u32, BTreeSet<u32>)>,
    /// Every copy received here or accounted for in the log.
    pub lineage: Lineage,
    pub delta_link: Option<String>,
    /// The run's `FinishRun` was published (or is held here).
    pub finish_queued: bool,
    /// A `Finish` task for the run is queued or running.
    pub finishing: bool,
    pub dry_run_requests: u32,
    /// Why each queued position is sent, by (copy, part, position).
    pending: HashMap<(PageRef, u32, u32), ProfileChange>,
    /// externalIds queued in the packer and not loaded yet.
    pub queued: HashMap<ExternalId, Queued>,
}

impl RunBuffer {
    fn new(options: RunOptions, limits: Limits, lineage: Lineage) -> Self {
        Self {
            options,
            packer: Packer::new(limits),
            held: Vec::new(),
            finish_keys: Vec::new(),
            received: BTreeMap::new(),
            lineage,
            delta_link: None,
            finish_queued: false,
            finishing: false,
            dry_run_requests: 0,
            pending: HashMap::new(),
            queued: HashMap::new(),
        }
    }

    /// Every delivery this run holds.
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.held.iter().map(|h| h.key).chain(self.finish_keys.iter().copied())
    }

    /// Notes that a part of a page copy arrived.
    pub fn receive(&mut self, meta: &PieceMeta) {
        let at = (meta.page_seq, meta.copy);
        let entry = self.received.entry(at).or_insert_with(|| (meta.parts, BTreeSet::new()));
        entry.0 = meta.parts;
        entry.1.insert(meta.part);
        let last = meta.total_pages == Some(meta.page_seq.saturating_add(1));
        self.lineage.note(at, meta.parent, last);
    }

    /// The held delivery of this part, if this process holds one.
    pub fn held_copy(&mut self, page: PageRef, part: u32) -> Option<&mut Held> {
        self.held.iter_mut().find(|h| h.page == page && h.part == part)
    }

    /// Queues profiles for bulk requests, remembering why each is sent.
    pub fn enqueue(&mut self, op: Op, meta: PieceMeta, items: Vec<(u32, OktaProfile, ProfileChange)>) {
        let at = (meta.page_seq, meta.copy);
        let mut profiles = Vec::with_capacity(items.len());
        for (index, profile, change) in items {
            let digest = change.digest.clone();
            self.queued.insert(change.external_id.clone(), Queued { page: meta.page_seq, copy: meta.copy, digest });
            self.pending.insert((at, meta.part, index), change);
            profiles.push((index, profile));
        }
        self.packer.push(op, meta, profiles);
    }

    /// Why each profile of `p` is sent, in order; forgets them as queued.
    pub fn take_changes(&mut self, p: &Packed) -> Vec<ProfileChange> {
        let mut out = Vec::with_capacity(p.profiles.len());
        for (profile, pos) in explode(p) {
            let at = (pos.page_seq, pos.copy);
            let change = self.pending.remove(&(at, pos.part, pos.from));
            if self.queued.get(&profile.external_id).is_some_and(|q| q.at() == at) {
                self.queued.remove(&profile.external_id);
            }
            out.push(change.unwrap_or_else(|| ProfileChange {
                external_id: profile.external_id.clone(),
                action: if p.op == Op::Delete { Action::Deactivate } else { Action::Create },
                changed: Vec::new(),
                digest: None,
            }));
        }
        out
    }

    /// Every part of one lineage of the run has arrived here or was
    /// accounted for before: what is still queued is all there will be.
    pub fn all_received(&self, run: &RunId, ledger: &Ledger) -> bool {
        let part_in = |page: PageRef, part: u32| {
            self.received.get(&page).is_some_and(|(_, parts)| parts.contains(&part))
                || ledger.part_done(run, page, part)
        };
        self.lineage
            .complete_chain(|page| {
                let parts = self.received.get(&page).map(|(n, _)| *n).or_else(|| ledger.page_parts(run, page));
                parts.is_some_and(|n| (0..n).all(|part| part_in(page, part)))
            })
            .is_some()
    }
}

impl State {
    /// The buffer of `run`, made on first use with what the log knows of
    /// its pages.
    pub fn buffer(&mut self, run: &RunId, options: &RunOptions, limits: &Limits) -> &mut RunBuffer {
        let lineage = || self.ledger.run(run).map(|r| r.lineage().clone()).unwrap_or_default();
        if !self.runs.contains_key(run) {
            let buffer = RunBuffer::new(options.clone(), *limits, lineage());
            self.runs.insert(run.clone(), buffer);
        }
        self.runs.get_mut(run).expect("inserted above")
    }

    /// Why each profile of `p` is sent (see [`RunBuffer::take_changes`]).
    pub fn take_changes(&mut self, run: &RunId, p: &Packed) -> Vec<ProfileChange> {
        self.runs.get_mut(run).map(|b| b.take_changes(p)).unwrap_or_default()
    }

    /// Acks the held deliveries whose batches are accounted for.
    pub fn settle_held(&mut self, run: &RunId) -> Vec<Key> {
        let Some(buffer) = self.runs.get_mut(run) else { return Vec::new() };
        let ledger = &self.ledger;
        let (done, kept): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut buffer.held).into_iter().partition(|h| ledger.part_done(run, h.page, h.part));
        buffer.held = kept;
        done.into_iter().map(|h| h.key).collect()
    }
}
