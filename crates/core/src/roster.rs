//! The roster: which externalIds a sync has left active in Okta, each with
//! a fingerprint of the profile Okta last confirmed.
//!
//! It answers the three questions delta sync needs: *is this profile
//! unchanged since its last upload* (then it is not sent again), *which
//! attributes changed* (the dry-run plan), and *who is active in Okta but no
//! longer in the source* (a full run deactivates them). Okta's Identity
//! Sources API cannot list what a source holds, so the product keeps this
//! itself.
//!
//! ## Where it lives, and why
//!
//! In a RabbitMQ stream of its own per sync, `<prefix>.roster.<sync>`,
//! written only by the sync's active uploader, as [`RosterRecord`]s:
//! - a **snapshot** (the whole roster, cut into parts) or
//! - the **changes** one run made (upserted entries, deactivated ids).
//!
//! The events stream would be the obvious place, but it is retained for 7
//! days by default: a weekly sync would lose its roster, and a snapshot per
//! run would not fit one message past ~50,000 users. The roster stream has no
//! age limit, only a size limit, and a snapshot is rewritten whenever the
//! changes written since the last one outgrow half of it, so the live part
//! (last snapshot + later changes) stays about 1.5 roster sizes and the
//! reader never needs more than that. A record set (snapshot or changes) of
//! one run counts only once all its parts are read, so a writer killed
//! half-way leaves nothing half-applied; its successor writes the set again,
//! and a set that completes twice is applied once.
//!
//! If the stream lost the base snapshot (retention, a deleted queue), the
//! roster is *unknown* rather than empty: every profile is sent again, and
//! nobody is deactivated for being absent, until the next completed run
//! writes a fresh snapshot. Losing the roster costs a full upload, never a
//! mass deactivation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::ids::{ExternalId, RunId, SyncName};
use crate::messages::MESSAGE_VERSION;

/// Entries per roster record: a few hundred KB, well under a message's limit.
pub const ENTRIES_PER_RECORD: usize = 2_000;

/// A mapped profile's fingerprint: enough to tell whether it changed since
/// its last confirmed upload, and which attributes did, without keeping the
/// profile itself (a roster of 100,000 users stays a few tens of MB).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    /// The first 8 bytes of SHA-256 over the whole profile, in hex.
    #[serde(rename = "p")]
    pub profile: String,
    /// `name:hash` per attribute (first 4 bytes of SHA-256 of the value, in
    /// hex), sorted by name, comma-separated.
    #[serde(rename = "a")]
    pub attrs: String,
}

impl Digest {
    /// The fingerprint of a mapped profile.
    pub fn of(profile: &BTreeMap<String, String>) -> Self {
        let mut whole = Sha256::new();
        let mut attrs = String::with_capacity(profile.len() * 20);
        for (name, value) in profile {
            // Length-prefixed, so ("ab","c") and ("a","bc") differ.
            whole.update((name.len() as u64).to_le_bytes());
            whole.update(name.as_bytes());
            whole.update((value.len() as u64).to_le_bytes());
            whole.update(value.as_bytes());
            if !attrs.is_empty() {
                attrs.push(',');
            }
            let one = Sha256::digest(value.as_bytes());
            let _ = write!(attrs, "{name}:{}", hex(&one[..4]));
        }
        Self { profile: hex(&whole.finalize()[..8]), attrs }
    }

    /// The attributes that differ between `self` and `before`: changed,
    /// added or cleared, sorted.
    pub fn changed_since(&self, before: &Digest) -> Vec<String> {
        let now = self.attr_map();
        let then = before.attr_map();
        let mut changed: Vec<String> = now
            .iter()
            .filter(|(name, hash)| then.get(*name) != Some(*hash))
            .map(|(name, _)| (*name).to_string())
            .chain(then.keys().filter(|name| !now.contains_key(*name)).map(|name| (*name).to_string()))
            .collect();
        changed.sort();
        changed
    }

    fn attr_map(&self) -> BTreeMap<&str, &str> {
        self.attrs.split(',').filter(|s| !s.is_empty()).filter_map(|pair| pair.split_once(':')).collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One user in a roster record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    #[serde(rename = "externalId")]
    pub external_id: ExternalId,
    #[serde(flatten)]
    pub digest: Digest,
}

/// What a roster record carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum RosterBody {
    /// Part of the whole roster as it stands after `run_id`.
    Snapshot { entries: Vec<RosterEntry> },
    /// Part of what `run_id` changed: users it upserted (now active with
    /// this profile) and users it deactivated.
    Changes { upserted: Vec<RosterEntry>, deactivated: Vec<ExternalId> },
}

impl RosterBody {
    fn kind(&self) -> SetKind {
        match self {
            Self::Snapshot { .. } => SetKind::Snapshot,
            Self::Changes { .. } => SetKind::Changes,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Snapshot { entries } => entries.len(),
            Self::Changes { upserted, deactivated } => upserted.len() + deactivated.len(),
        }
    }
}

/// One message of the roster stream: part `part` of `parts` of one set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterRecord {
    #[serde(default = "current_version")]
    pub v: u32,
    pub sync: SyncName,
    pub run_id: RunId,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub part: u32,
    pub parts: u32,
    #[serde(flatten)]
    pub body: RosterBody,
}

fn current_version() -> u32 {
    MESSAGE_VERSION
}

impl RosterRecord {
    /// Deterministic, like every message id: a rewritten part keeps its id.
    pub fn message_id(&self) -> String {
        let kind = match self.body.kind() {
            SetKind::Snapshot => "snapshot",
            SetKind::Changes => "changes",
        };
        format!("roster:{}:{}:{kind}:{}", self.sync, self.run_id, self.part)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SetKind {
    Snapshot,
    Changes,
}

/// The roster of one sync, folded from its stream.
#[derive(Debug, Clone)]
pub struct Roster {
    sync: SyncName,
    /// `None` while no base snapshot has been read: unknown, not empty.
    active: Option<HashMap<ExternalId, Digest>>,
    /// Parts read of sets not yet complete.
    partial: HashMap<(RunId, SetKind), BTreeMap<u32, RosterBody>>,
    applied: HashSet<(RunId, SetKind)>,
    /// Entries written as changes since the last snapshot (for compaction).
    changes_since_snapshot: usize,
}

impl Roster {
    /// A roster nothing is known about yet.
    pub fn unknown(sync: SyncName) -> Self {
        Self { sync, active: None, partial: HashMap::new(), applied: HashSet::new(), changes_since_snapshot: 0 }
    }

    /// Folds the records of a roster stream, oldest first. Records of other
    /// syncs are ignored.
    pub fn replay<'a>(sync: SyncName, records: impl IntoIterator<Item = &'a RosterRecord>) -> Self {
        let mut roster = Self::unknown(sync);
        for r in records {
            roster.apply(r);
        }
        roster
    }

    /// Folds one record in. A set takes effect when its last missing part
    /// arrives, and only the first time it completes.
    pub fn apply(&mut self, r: &RosterRecord) {
        if r.sync != self.sync || r.parts == 0 || r.part >= r.parts {
            return;
        }
        let key = (r.run_id.clone(), r.body.kind());
        if self.applied.contains(&key) {
            return;
        }
        let parts = self.partial.entry(key.clone()).or_default();
        parts.insert(r.part, r.body.clone());
        if parts.len() < r.parts as usize {
            return;
        }
        let Some(set) = self.partial.remove(&key) else { return };
        self.applied.insert(key.clone());
        match key.1 {
            SetKind::Snapshot => {
                // A snapshot replaces whatever was known.
                let mut active = HashMap::new();
                for body in set.into_values() {
                    if let RosterBody::Snapshot { entries } = body {
                        active.extend(entries.into_iter().map(|e| (e.external_id, e.digest)));
                    }
                }
                self.active = Some(active);
                self.changes_since_snapshot = 0;
            }
            SetKind::Changes => {
                // Changes without a base (lost to retention) cannot be applied.
                let Some(active) = self.active.as_mut() else { return };
                for body in set.into_values() {
                    if let RosterBody::Changes { upserted, deactivated } = body {
                        self.changes_since_snapshot += upserted.len() + deactivated.len();
                        active.extend(upserted.into_iter().map(|e| (e.external_id, e.digest)));
                        for id in deactivated {
                            active.remove(&id);
                        }
                    }
                }
            }
        }
    }

    pub fn sync(&self) -> &SyncName {
        &self.sync
    }

    /// Whether a base snapshot was read. An unknown roster detects no
    /// change and reconciles nobody away.
    pub fn is_known(&self) -> bool {
        self.active.is_some()
    }

    /// The fingerprint of the profile Okta last confirmed for `id`, if it
    /// is active there as far as the product knows.
    pub fn get(&self, id: &ExternalId) -> Option<&Digest> {
        self.active.as_ref().and_then(|a| a.get(id))
    }

    pub fn contains(&self, id: &ExternalId) -> bool {
        self.get(id).is_some()
    }

    /// Users active in Okta as far as the product knows.
    pub fn len(&self) -> usize {
        self.active.as_ref().map_or(0, HashMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every active externalId, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = &ExternalId> {
        self.active.iter().flat_map(|a| a.keys())
    }

    /// The records that save what `run` changed: its changes, or a whole
    /// snapshot when the roster was unknown or the changes written since the
    /// last snapshot would outgrow half of it. Apply them (after they are
    /// written) to bring this roster up to date.
    pub fn records_for(
        &self,
        run: &RunId,
        at: OffsetDateTime,
        upserted: Vec<RosterEntry>,
        deactivated: Vec<ExternalId>,
    ) -> Vec<RosterRecord> {
        let changes = upserted.len() + deactivated.len();
        if changes == 0 && self.is_known() {
            return Vec::new();
        }
        let compact = !self.is_known() || (self.changes_since_snapshot + changes) * 2 > self.len().max(1);
        let bodies: Vec<RosterBody> = if compact {
            let mut after: BTreeMap<ExternalId, Digest> =
                self.active.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
            for e in upserted {
                after.insert(e.external_id, e.digest);
            }
            for id in &deactivated {
                after.remove(id);
            }
            let entries: Vec<RosterEntry> =
                after.into_iter().map(|(external_id, digest)| RosterEntry { external_id, digest }).collect();
            if entries.is_empty() {
                vec![RosterBody::Snapshot { entries: Vec::new() }]
            } else {
                entries.chunks(ENTRIES_PER_RECORD).map(|c| RosterBody::Snapshot { entries: c.to_vec() }).collect()
            }
        } else {
            let mut upserted = upserted;
            upserted.sort_by(|a, b| a.external_id.cmp(&b.external_id));
            let mut deactivated = deactivated;
            deactivated.sort();
            let mut bodies: Vec<RosterBody> = upserted
                .chunks(ENTRIES_PER_RECORD)
                .map(|c| RosterBody::Changes { upserted: c.to_vec(), deactivated: Vec::new() })
                .collect();
            bodies.extend(
                deactivated
                    .chunks(ENTRIES_PER_RECORD)
                    .map(|c| RosterBody::Changes { upserted: Vec::new(), deactivated: c.to_vec() }),
            );
            bodies
        };
        let parts = bodies.len() as u32;
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| RosterRecord {
                v: MESSAGE_VERSION,
                sync: self.sync.clone(),
                run_id: run.clone(),
                at,
                part: i as u32,
                parts,
                body,
            })
            .collect()
    }

    /// Entries a record set carries, for logs.
    pub fn record_entries(records: &[RosterRecord]) -> usize {
        records.iter().map(|r| r.body.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync() -> SyncName {
        SyncName::parse("demo").unwrap()
    }

    fn id(s: &str) -> ExternalId {
        ExternalId::parse(s).unwrap()
    }

    fn profile(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn entry(i: &str, city: &str) -> RosterEntry {
        RosterEntry { external_id: id(i), digest: Digest::of(&profile(&[("city", city), ("email", "a@b.c")])) }
    }

    fn at() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    #[test]
    fn digests_tell_what_changed() {
        let a = Digest::of(&profile(&[("city", "Cork"), ("email", "a@b.c"), ("title", "x")]));
        let same = Digest::of(&profile(&[("title", "x"), ("email", "a@b.c"), ("city", "Cork")]));
        assert_eq!(a, same, "attribute order does not matter");
        let b = Digest::of(&profile(&[("city", "Galway"), ("email", "a@b.c"), ("zipCode", "1")]));
        assert_ne!(a.profile, b.profile);
        assert_eq!(b.changed_since(&a), vec!["city", "title", "zipCode"]);
        assert!(a.changed_since(&same).is_empty());
        // Length-prefixed: moving a character between name and value changes the hash.
        assert_ne!(Digest::of(&profile(&[("ab", "c")])).profile, Digest::of(&profile(&[("a", "bc")])).profile);
    }

    #[test]
    fn an_empty_stream_is_unknown_and_the_first_write_is_a_snapshot() {
        let roster = Roster::unknown(sync());
        assert!(!roster.is_known());
        let run = RunId::parse("r1").unwrap();
        let records = roster.records_for(&run, at(), vec![entry("u1", "Cork")], vec![]);
        assert_eq!(records.len(), 1);
        assert!(matches!(records[0].body, RosterBody::Snapshot { .. }));
        let roster = Roster::replay(sync(), &records);
        assert!(roster.is_known());
        assert_eq!(roster.len(), 1);
        // Even an empty first run establishes a (known, empty) roster.
        let empty = Roster::unknown(sync()).records_for(&run, at(), vec![], vec![]);
        assert!(Roster::replay(sync(), &empty).is_known());
    }

    #[test]
    fn small_changes_are_written_as_changes_and_compacted_when_they_pile_up() {
        let base: Vec<RosterEntry> = (0..10).map(|i| entry(&format!("u{i}"), "Cork")).collect();
        let mut records = Roster::unknown(sync()).records_for(&RunId::parse("r0").unwrap(), at(), base, vec![]);
        let mut roster = Roster::replay(sync(), &records);
        let r1 = RunId::parse("r1").unwrap();
        let changes = roster.records_for(&r1, at(), vec![entry("u1", "Galway")], vec![id("u2")]);
        assert!(matches!(changes[0].body, RosterBody::Changes { .. }));
        changes.iter().for_each(|r| roster.apply(r));
        records.extend(changes);
        assert_eq!(roster.len(), 9);
        assert_eq!(roster.get(&id("u1")), Some(&entry("u1", "Galway").digest));
        assert!(!roster.contains(&id("u2")));
        // Replaying the stream gives the same roster.
        let replayed = Roster::replay(sync(), &records);
        assert_eq!(replayed.len(), 9);
        assert_eq!(replayed.get(&id("u1")), roster.get(&id("u1")));
        // Changes reaching half the roster are written as a new snapshot.
        let many: Vec<RosterEntry> = (0..5).map(|i| entry(&format!("n{i}"), "Cork")).collect();
        let r2 = RunId::parse("r2").unwrap();
        let compacted = roster.records_for(&r2, at(), many, vec![]);
        assert!(compacted.iter().all(|r| matches!(r.body, RosterBody::Snapshot { .. })));
        records.extend(compacted);
        assert_eq!(Roster::replay(sync(), &records).len(), 14);
    }

    #[test]
    fn a_set_counts_only_when_complete_and_only_once() {
        let entries: Vec<RosterEntry> = (0..ENTRIES_PER_RECORD + 1).map(|i| entry(&format!("u{i}"), "Cork")).collect();
        let run = RunId::parse("r1").unwrap();
        let records = Roster::unknown(sync()).records_for(&run, at(), entries, vec![]);
        assert_eq!(records.len(), 2);
        // A writer killed after the first part: nothing is known yet.
        assert!(!Roster::replay(sync(), &records[..1]).is_known());
        // Its successor rewrote the whole set: the duplicate part changes nothing.
        let rewritten = [records[0].clone(), records[0].clone(), records[1].clone()];
        assert_eq!(Roster::replay(sync(), &rewritten).len(), ENTRIES_PER_RECORD + 1);
    }

    #[test]
    fn changes_without_a_base_leave_the_roster_unknown() {
        let run = RunId::parse("r1").unwrap();
        let base: Vec<RosterEntry> = (0..10).map(|i| entry(&format!("u{i}"), "Cork")).collect();
        let known = Roster::replay(sync(), &Roster::unknown(sync()).records_for(&run, at(), base, vec![]));
        let changes = known.records_for(&RunId::parse("r2").unwrap(), at(), vec![entry("u1", "Galway")], vec![]);
        assert!(matches!(changes[0].body, RosterBody::Changes { .. }));
        // The base snapshot was lost to retention; only the changes remain.
        assert!(!Roster::replay(sync(), &changes).is_known());
    }

    #[test]
    fn records_round_trip_as_json() {
        let run = RunId::parse("r1").unwrap();
        let r = &Roster::unknown(sync()).records_for(&run, at(), vec![entry("u1", "Cork")], vec![])[0];
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["type"], "Snapshot");
        assert_eq!(json["entries"][0]["externalId"], "u1");
        assert_eq!(json["entries"][0]["p"].as_str().unwrap().len(), 16);
        let back: RosterRecord = serde_json::from_value(json).unwrap();
        assert_eq!(&back, r);
        assert_eq!(r.message_id(), "roster:demo:r1:snapshot:0");
    }
}
