//! Page identity: which reads of the source's page chain a run is made of.
//!
//! The fetcher reads page `n` from the link page `n - 1` ended with, and
//! publishes it together with the request for page `n + 1`. When that
//! request is delivered twice (a crash before its ack, a retry), page `n` is
//! read twice. In a live directory the two reads can differ: a user deleted
//! or created in the page's range moves where the page ends, so the second
//! read ends with another next link. Both copies travel on, and both may be
//! continued: the chain forks.
//!
//! Every read is therefore a **copy** with an id derived from what was read
//! (the same read twice gets the same id, and is an ordinary duplicate) and
//! its **parent**, the copy whose next link it was read from. The uploader
//! takes the **union** of every copy it receives, and counts a run as loaded
//! once **one lineage** — a copy of page 0, then a child of it, and so on to a
//! last page — is fully accounted for.
//!
//! Why this is safe: a keyset page chain from the first page to a last one
//! covers every user who was in the source from its first read to its last,
//! whatever changed in between. Every profile of any copy was in the source
//! when it was read, so sending it is harmless; and reconciling against the
//! union (a superset of one complete chain) never deactivates a user who
//! stayed in the source.
//!
//! Why not keep only the first copy's lineage and drop the others? The
//! uploader would have to hold every later page until its ancestry is
//! decided; a page stalled upstream (a mapper that died, a retry) would then
//! fill the uploader's prefetch window with pages it may not use yet, and
//! the queue would stop. The union needs no holding and no decision.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// The id of one read of one page. Serialised as 16 hex digits, so that
/// JavaScript clients of the events stream do not round it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CopyId(u64);

impl CopyId {
    /// The copy of messages written before page identity: every page then
    /// had one copy, and its parent is the legacy copy of the page before.
    pub const LEGACY: CopyId = CopyId(0);

    /// The id of a read: a hash of everything that identifies what was read.
    /// Never [`CopyId::LEGACY`].
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for part in parts {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let digest = h.finalize();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        Self(u64::from_le_bytes(bytes).max(1))
    }

    pub fn from_u64(n: u64) -> Self {
        Self(n)
    }
}

impl fmt::Display for CopyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for CopyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for CopyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map(Self).map_err(|_| serde::de::Error::custom("a copy id is 16 hex digits"))
    }
}

/// One copy of one page: `(page_seq, copy)`.
pub type PageRef = (u32, CopyId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    parent: Option<CopyId>,
    /// No page follows this copy.
    last: bool,
}

/// How two sightings of a user relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The same copy, or one descends from the other: one read of the
    /// source saw both, so they are two source records.
    SameRead,
    /// Different reads of the chain (copies of one page, or on two branches
    /// of a fork): possibly the same record read twice.
    Reread,
    /// The links between them are not known yet.
    Unknown,
}

/// The copies of one run's pages and how they descend from each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    nodes: BTreeMap<PageRef, Node>,
}

impl Lineage {
    /// Records a copy: its parent (`None` for page 0) and whether it is a
    /// last page. Noting a copy again changes nothing but `last`, which
    /// only ever becomes true.
    pub fn note(&mut self, page: PageRef, parent: Option<CopyId>, last: bool) {
        let node = self.nodes.entry(page).or_insert(Node { parent, last });
        node.last |= last;
        if node.parent.is_none() {
            node.parent = parent;
        }
    }

    pub fn contains(&self, page: PageRef) -> bool {
        self.nodes.contains_key(&page)
    }

    /// The copy `page` was read from, `None` for page 0. A copy written
    /// before page identity names no parent: its parent is the legacy copy.
    fn parent_of(&self, page: PageRef) -> Option<PageRef> {
        let (seq, _) = page;
        if seq == 0 {
            return None;
        }
        let parent = self.nodes.get(&page).and_then(|n| n.parent).unwrap_or(CopyId::LEGACY);
        Some((seq - 1, parent))
    }

    /// A complete lineage: a last copy whose every ancestor down to page 0
    /// is known and `done`. Returns it from page 0 on.
    pub fn complete_chain(&self, done: impl Fn(PageRef) -> bool) -> Option<Vec<PageRef>> {
        self.nodes.iter().filter(|(_, n)| n.last).find_map(|(&tip, _)| {
            let mut chain = vec![tip];
            let mut at = tip;
            loop {
                if !self.nodes.contains_key(&at) || !done(at) {
                    return None;
                }
                match self.parent_of(at) {
                    None => break,
                    Some(parent) => {
                        chain.push(parent);
                        at = parent;
                    }
                }
            }
            chain.reverse();
            Some(chain)
        })
    }

    /// Whether two sightings of one externalId were made by one read of the
    /// chain. Walks the later one's ancestry back to the earlier page.
    pub fn relation(&self, a: PageRef, b: PageRef) -> Relation {
        if a == b {
            return Relation::SameRead;
        }
        let (early, late) = if a.0 <= b.0 { (a, b) } else { (b, a) };
        if early.0 == late.0 {
            return Relation::Reread;
        }
        let mut at = late;
        while at.0 > early.0 {
            if at != late && !self.nodes.contains_key(&at) {
                return self.unknown_or_same(early.0, late.0);
            }
            match self.parent_of(at) {
                Some(parent) => at = parent,
                None => return Relation::Unknown,
            }
        }
        if at == early { Relation::SameRead } else { Relation::Reread }
    }

    /// With a link missing: if no page between the two was read twice as
    /// far as anything known says, there was only one read of that stretch.
    fn unknown_or_same(&self, from: u32, to: u32) -> Relation {
        if self.forked_within(from, to) { Relation::Unknown } else { Relation::SameRead }
    }

    /// Some page in `from..=to` is known in more than one copy, from the
    /// copies received or from the parents they name.
    pub fn forked_within(&self, from: u32, to: u32) -> bool {
        let mut known: BTreeMap<u32, BTreeSet<CopyId>> = BTreeMap::new();
        for (&(seq, copy), _) in self.nodes.range((from, CopyId(0))..=(to, CopyId(u64::MAX))) {
            known.entry(seq).or_default().insert(copy);
        }
        for (&page, _) in
            self.nodes.range((from.saturating_add(1), CopyId(0))..=(to.saturating_add(1), CopyId(u64::MAX)))
        {
            if let Some((seq, parent)) = self.parent_of(page)
                && (from..=to).contains(&seq)
            {
                known.entry(seq).or_default().insert(parent);
            }
        }
        known.values().any(|copies| copies.len() > 1)
    }

    /// Every copy known, in page order.
    pub fn copies(&self) -> impl Iterator<Item = PageRef> + '_ {
        self.nodes.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u64) -> CopyId {
        CopyId(n)
    }

    /// A chain of copies `ids[0]` (page 0), `ids[1]` (page 1)... each the
    /// child of the one before; the last one is a last page.
    fn chain(l: &mut Lineage, ids: &[u64]) {
        for (seq, id) in ids.iter().enumerate() {
            let parent = (seq > 0).then(|| c(ids[seq - 1]));
            l.note((seq as u32, c(*id)), parent, seq + 1 == ids.len());
        }
    }

    #[test]
    fn copy_ids_are_content_hashes_and_never_legacy() {
        assert_eq!(CopyId::of(&[b"a", b"b"]), CopyId::of(&[b"a", b"b"]));
        assert_ne!(CopyId::of(&[b"ab", b""]), CopyId::of(&[b"a", b"b"]));
        assert_ne!(CopyId::of(&[]), CopyId::LEGACY);
        let id = CopyId(0xab);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"00000000000000ab\"");
        assert_eq!(serde_json::from_str::<CopyId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<CopyId>("\"zz\"").is_err());
    }

    #[test]
    fn a_run_is_complete_along_one_lineage_even_when_the_chain_forked() {
        let mut l = Lineage::default();
        // Page 1 was read twice (11, 21); both were continued, 21's branch is longer.
        chain(&mut l, &[10, 11, 12]);
        l.note((1, c(21)), Some(c(10)), false);
        l.note((2, c(22)), Some(c(21)), false);
        l.note((3, c(23)), Some(c(22)), true);
        let all = |_: PageRef| true;
        assert!(l.complete_chain(all).is_some());
        // Only the second branch is accounted for: it is a lineage on its own.
        let second = |p: PageRef| p.1 != c(11) && p.1 != c(12);
        assert_eq!(l.complete_chain(second), Some(vec![(0, c(10)), (1, c(21)), (2, c(22)), (3, c(23))]));
        // A lineage with a page missing is not complete.
        let gap = |p: PageRef| p != (1, c(11)) && p != (2, c(22));
        assert_eq!(l.complete_chain(gap), None);
    }

    #[test]
    fn a_last_page_whose_ancestry_is_unknown_completes_nothing() {
        let mut l = Lineage::default();
        l.note((0, c(10)), None, false);
        l.note((2, c(12)), Some(c(11)), true);
        assert_eq!(l.complete_chain(|_| true), None);
        l.note((1, c(11)), Some(c(10)), false);
        assert!(l.complete_chain(|_| true).is_some());
    }

    #[test]
    fn legacy_copies_chain_by_position() {
        let mut l = Lineage::default();
        l.note((0, CopyId::LEGACY), None, false);
        l.note((1, CopyId::LEGACY), None, true);
        assert_eq!(l.complete_chain(|_| true), Some(vec![(0, CopyId::LEGACY), (1, CopyId::LEGACY)]));
    }

    #[test]
    fn sightings_on_one_read_are_told_from_rereads() {
        let mut l = Lineage::default();
        chain(&mut l, &[10, 11, 12]);
        l.note((1, c(21)), Some(c(10)), false);
        l.note((2, c(22)), Some(c(21)), false);
        assert_eq!(l.relation((1, c(11)), (1, c(11))), Relation::SameRead);
        assert_eq!(l.relation((0, c(10)), (2, c(12))), Relation::SameRead);
        assert_eq!(l.relation((2, c(22)), (0, c(10))), Relation::SameRead, "order does not matter");
        assert_eq!(l.relation((1, c(11)), (1, c(21))), Relation::Reread, "two reads of one page");
        assert_eq!(l.relation((1, c(11)), (2, c(22))), Relation::Reread, "two branches");
        assert_eq!(l.relation((1, c(21)), (2, c(22))), Relation::SameRead);
    }

    #[test]
    fn a_missing_link_is_unknown_only_where_a_fork_is_known() {
        let mut l = Lineage::default();
        l.note((0, c(10)), None, false);
        l.note((3, c(13)), Some(c(12)), false);
        // Pages 1 and 2 not received, and nothing says they were read twice.
        assert_eq!(l.relation((0, c(10)), (3, c(13))), Relation::SameRead);
        // Page 2 was read twice (a copy names another parent).
        l.note((3, c(23)), Some(c(22)), false);
        assert!(l.forked_within(0, 3));
        assert_eq!(l.relation((0, c(10)), (3, c(13))), Relation::Unknown);
        assert!(!l.forked_within(0, 1));
    }
}
