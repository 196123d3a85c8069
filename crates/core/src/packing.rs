//! Fitting profiles into Okta bulk requests: at most `profiles_per_request`
//! profiles and `bytes_per_request` bytes of JSON body each (DESIGN §1,
//! invariant 1), and as full as possible (invariant 5: requests used =
//! ⌈profiles / 200⌉), because every request counts against the 50 of a
//! session.
//!
//! Sizes are computed, not measured: [`profile_len`] is the exact length
//! `serde_json` gives a profile, so a request can be filled to the byte
//! without serializing it again and again.

use std::collections::VecDeque;

use serde::Serialize;

use crate::limits::Limits;
use crate::lineage::CopyId;
use crate::messages::{OktaProfile, Op, Piece, Rejected};

/// The body of `bulk-upsert` and `bulk-delete` (reference §4.1, §4.3).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BulkBody<'a> {
    #[serde(rename = "entityType")]
    entity_type: &'static str,
    profiles: &'a [OktaProfile],
}

impl<'a> BulkBody<'a> {
    /// A body for users, the only entity type Okta supports here.
    pub fn users(profiles: &'a [OktaProfile]) -> Self {
        Self { entity_type: "USERS", profiles }
    }
}

/// `{"entityType":"USERS","profiles":[]}`: what a body costs before its profiles.
pub const EMPTY_BODY_LEN: usize = r#"{"entityType":"USERS","profiles":[]}"#.len();

/// The `,` between two profiles of a body.
pub const SEPARATOR_LEN: usize = 1;

/// Exact length of `serde_json::to_vec(&BulkBody::users(profiles))`.
pub fn bulk_body_len(profiles: &[OktaProfile]) -> usize {
    EMPTY_BODY_LEN + profiles.iter().map(profile_len).sum::<usize>() + profiles.len().saturating_sub(1) * SEPARATOR_LEN
}

/// Exact length of one profile as serde_json encodes it inside a body:
/// `{"externalId":"…"}` or `{"externalId":"…","profile":{"k":"v",…}}`.
pub fn profile_len(p: &OktaProfile) -> usize {
    const EXTERNAL_ID: usize = r#"{"externalId":}"#.len();
    const PROFILE: usize = r#","profile":{}"#.len();
    let attributes = p.profile.as_ref().map_or(0, |attrs| {
        PROFILE
            + attrs.iter().map(|(k, v)| json_str_len(k) + 1 + json_str_len(v)).sum::<usize>()
            + attrs.len().saturating_sub(1)
    });
    EXTERNAL_ID + json_str_len(p.external_id.as_str()) + attributes
}

/// Length of `s` as a JSON string, with serde_json's escapes: `\"`, `\\` and
/// the short forms of control characters take 2 bytes, other control
/// characters 6 (`\u001f`); everything else, non-ASCII included, is copied as
/// UTF-8.
fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Body length of a request holding a single profile of `len` bytes.
fn alone(len: usize) -> usize {
    EMPTY_BODY_LEN + len
}

/// How the mapper cut one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutResult {
    /// Never empty: a page that maps to nothing still yields one empty batch,
    /// so the uploader can count the page.
    pub batches: Vec<Vec<OktaProfile>>,
    /// Profiles that do not fit in a request even alone.
    pub too_large: Vec<Rejected>,
}

/// Cuts one page's profiles into batches that each fit one bulk request,
/// greedily and in order.
pub fn cut(profiles: Vec<OktaProfile>, limits: &Limits) -> CutResult {
    let max_profiles = limits.profiles_per_request.max(1);
    let mut batches = Vec::new();
    let mut too_large = Vec::new();
    let mut batch: Vec<OktaProfile> = Vec::new();
    let mut body = EMPTY_BODY_LEN;
    for profile in profiles {
        let len = profile_len(&profile);
        if alone(len) > limits.bytes_per_request {
            too_large.push(too_large_rejection(&profile, len, limits));
            continue;
        }
        let grown = if batch.is_empty() { alone(len) } else { body + SEPARATOR_LEN + len };
        if batch.len() >= max_profiles || grown > limits.bytes_per_request {
            batches.push(std::mem::take(&mut batch));
            body = alone(len);
        } else {
            body = grown;
        }
        batch.push(profile);
    }
    if !batch.is_empty() || batches.is_empty() {
        batches.push(batch);
    }
    CutResult { batches, too_large }
}

fn too_large_rejection(profile: &OktaProfile, len: usize, limits: &Limits) -> Rejected {
    Rejected {
        external_id: Some(profile.external_id.to_string()),
        reason: format!(
            "profile is {} bytes as a bulk request on its own; a bulk request may carry at most {} bytes \
             (shorten its longest attributes)",
            alone(len),
            limits.bytes_per_request
        ),
    }
}

/// Where a queued batch came from, copied into every [`Piece`] of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PieceMeta {
    pub page_seq: u32,
    pub part: u32,
    pub parts: u32,
    /// Profiles in the batch.
    pub len: u32,
    pub total_pages: Option<u32>,
    /// The copy of the page, and its parent (`lineage`).
    pub copy: CopyId,
    pub parent: Option<CopyId>,
}

/// One bulk request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub op: Op,
    /// In arrival order.
    pub profiles: Vec<OktaProfile>,
    /// Which slices of which batches `profiles` are, in the same order.
    pub pieces: Vec<Piece>,
    /// Exact length of the JSON body.
    pub body_bytes: usize,
    /// A single profile larger than `bytes_per_request` on its own. Only
    /// possible when the uploader's limit is lower than the one the mapper cut
    /// with; it is never combined with others, and the caller decides whether
    /// to send it (Okta refuses it if it is over Okta's own limit).
    pub oversized: bool,
}

#[derive(Debug)]
struct Item {
    meta: PieceMeta,
    index: u32,
    profile: OktaProfile,
    len: usize,
}

/// The profiles of one op waiting for a request, with their total encoded
/// size kept up to date so readiness is O(1).
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    profile_bytes: usize,
}

impl Queue {
    fn body_len(&self) -> usize {
        EMPTY_BODY_LEN + self.profile_bytes + self.items.len().saturating_sub(1) * SEPARATOR_LEN
    }

    /// A full request can be taken from the front: either enough profiles,
    /// or more bytes than one request holds, so some prefix is full.
    fn has_full(&self, limits: &Limits) -> bool {
        self.items.len() >= limits.profiles_per_request.max(1)
            || (!self.items.is_empty() && self.body_len() > limits.bytes_per_request)
    }

    /// Takes the longest front prefix that fits one request; the first
    /// profile is always taken, even oversized, so the queue always moves.
    fn take(&mut self, op: Op, limits: &Limits) -> Option<Packed> {
        let first = self.items.front()?;
        let oversized = alone(first.len) > limits.bytes_per_request;
        let mut packed = Packed { op, profiles: Vec::new(), pieces: Vec::new(), body_bytes: EMPTY_BODY_LEN, oversized };
        while let Some(next) = self.items.front() {
            if !packed.profiles.is_empty() {
                let grown = packed.body_bytes + SEPARATOR_LEN + next.len;
                if oversized
                    || packed.profiles.len() >= limits.profiles_per_request.max(1)
                    || grown > limits.bytes_per_request
                {
                    break;
                }
            }
            let Some(item) = self.items.pop_front() else { break };
            self.profile_bytes -= item.len;
            packed.body_bytes += item.len + if packed.profiles.is_empty() { 0 } else { SEPARATOR_LEN };
            extend_pieces(&mut packed.pieces, &item);
            packed.profiles.push(item.profile);
        }
        Some(packed)
    }
}

/// Adds `item` to the last piece when it continues the same batch, else
/// starts a new piece.
fn extend_pieces(pieces: &mut Vec<Piece>, item: &Item) {
    let m = item.meta;
    match pieces.last_mut() {
        Some(last)
            if last.page_seq == m.page_seq && last.copy == m.copy && last.part == m.part && last.to == item.index =>
        {
            last.to += 1;
        }
        _ => pieces.push(Piece {
            page_seq: m.page_seq,
            part: m.part,
            parts: m.parts,
            len: m.len,
            total_pages: m.total_pages,
            from: item.index,
            to: item.index + 1,
            copy: m.copy,
            parent: m.parent,
        }),
    }
}

/// The uploader's coalescing: profiles of many small batches go out in full
/// requests. Upserts and deletes queue separately (they go to different
/// endpoints) and each keeps arrival order.
#[derive(Debug)]
pub struct Packer {
    limits: Limits,
    upserts: Queue,
    deletes: Queue,
}

impl Packer {
    pub fn new(limits: Limits) -> Self {
        Self { limits, upserts: Queue::default(), deletes: Queue::default() }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Queues the not-yet-loaded profiles of one batch. `items` are (index
    /// within the batch, profile), in order.
    pub fn push(&mut self, op: Op, meta: PieceMeta, items: Vec<(u32, OktaProfile)>) {
        let queue = self.queue(op);
        for (index, profile) in items {
            let len = profile_len(&profile);
            queue.profile_bytes += len;
            queue.items.push_back(Item { meta, index, profile, len });
        }
    }

    /// A request that is full (`profiles_per_request` profiles, or the next
    /// profile would push it over `bytes_per_request`), if one is ready.
    pub fn next_full(&mut self) -> Option<Packed> {
        let limits = self.limits;
        for op in [Op::Upsert, Op::Delete] {
            let queue = self.queue(op);
            if queue.has_full(&limits) {
                return queue.take(op, &limits);
            }
        }
        None
    }

    /// The next request from whatever is queued, full or not: for the end of
    /// a run or when the linger expires. Call until `None`.
    pub fn drain(&mut self) -> Option<Packed> {
        let limits = self.limits;
        self.upserts.take(Op::Upsert, &limits).or_else(|| self.deletes.take(Op::Delete, &limits))
    }

    /// Profiles waiting, both ops together.
    pub fn queued(&self) -> usize {
        self.upserts.items.len() + self.deletes.items.len()
    }

    fn queue(&mut self, op: Op) -> &mut Queue {
        match op {
            Op::Upsert => &mut self.upserts,
            Op::Delete => &mut self.deletes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::ids::ExternalId;

    /// SplitMix64: small, deterministic, good enough to vary test inputs.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + self.below(hi - lo + 1)
        }

        /// Text with the characters JSON encodes specially.
        fn text(&mut self, max: usize) -> String {
            const ALPHABET: [&str; 14] =
                ["a", "Z", "7", " ", "\"", "\\", "\n", "\t", "\u{1}", "\u{7f}", "é", "李", "🦀", "/"];
            (0..self.range(0, max)).map(|_| ALPHABET[self.below(ALPHABET.len())]).collect()
        }

        fn profile(&mut self, n: usize, max_text: usize) -> OktaProfile {
            let mut id = format!("user-{n}-");
            id.push_str(&self.text(8).replace(|c: char| c.is_control(), "_"));
            let profile = (self.below(5) != 0).then(|| {
                (0..self.range(0, 14)).map(|i| (format!("attr{i}{}", self.text(3)), self.text(max_text))).collect()
            });
            OktaProfile { external_id: ExternalId::parse(id).unwrap(), profile }
        }
    }

    fn encoded_len(profiles: &[OktaProfile]) -> usize {
        serde_json::to_vec(&BulkBody::users(profiles)).unwrap().len()
    }

    /// A realistic mapped user, ~500 bytes: 200 of them fit well within 200 KB.
    fn small(n: usize) -> OktaProfile {
        let upn = format!("user{n}@sandbox.example.com");
        let profile = BTreeMap::from([
            ("userName".to_string(), upn.clone()),
            ("email".to_string(), upn.clone()),
            ("firstName".to_string(), format!("Zoë{n}")),
            ("lastName".to_string(), "Ångström".to_string()),
            ("department".to_string(), "Okta Workflows".to_string()),
            ("streetAddress".to_string(), "205 108th Ave. NE, Suite 400".to_string()),
        ]);
        OktaProfile { external_id: ExternalId::parse(upn).unwrap(), profile: Some(profile) }
    }

    #[test]
    fn the_body_is_okta_wire_format() {
        let p = OktaProfile { external_id: ExternalId::parse("x1").unwrap(), profile: None };
        let body = serde_json::to_string(&BulkBody::users(std::slice::from_ref(&p))).unwrap();
        assert_eq!(body, r#"{"entityType":"USERS","profiles":[{"externalId":"x1"}]}"#);
        assert_eq!(EMPTY_BODY_LEN, encoded_len(&[]));
        assert_eq!(bulk_body_len(&[]), EMPTY_BODY_LEN);
    }

    #[test]
    fn computed_lengths_match_serde_json_exactly() {
        let mut rng = Rng(1);
        for round in 0..500 {
            let profiles: Vec<_> = (0..rng.range(0, 12)).map(|n| rng.profile(n, 40)).collect();
            assert_eq!(bulk_body_len(&profiles), encoded_len(&profiles), "round {round}: {profiles:?}");
            for p in &profiles {
                assert_eq!(profile_len(p), serde_json::to_vec(p).unwrap().len(), "{p:?}");
            }
        }
        // An empty profile object still costs `,"profile":{}`.
        let p = OktaProfile { external_id: ExternalId::parse("é\"").unwrap(), profile: Some(BTreeMap::new()) };
        assert_eq!(profile_len(&p), serde_json::to_vec(&p).unwrap().len());
    }

    fn check_cut(profiles: &[OktaProfile], limits: &Limits, result: &CutResult) {
        assert!(!result.batches.is_empty());
        let mut kept = Vec::new();
        for (i, batch) in result.batches.iter().enumerate() {
            assert!(batch.len() <= limits.profiles_per_request);
            assert!(encoded_len(batch) <= limits.bytes_per_request);
            // Greedy: a batch closes only when the next profile would not fit.
            if let Some(next) = result.batches.get(i + 1).and_then(|b| b.first()) {
                let with_next = [batch.as_slice(), std::slice::from_ref(next)].concat();
                assert!(
                    batch.len() == limits.profiles_per_request || encoded_len(&with_next) > limits.bytes_per_request,
                    "batch {i} closed early"
                );
            }
            kept.extend(batch.iter().cloned());
        }
        let too_large: BTreeSet<_> = result.too_large.iter().map(|r| r.external_id.clone().unwrap()).collect();
        let expected: Vec<_> =
            profiles.iter().filter(|p| !too_large.contains(p.external_id.as_str())).cloned().collect();
        assert_eq!(kept, expected, "every profile kept, in order");
        for r in &result.too_large {
            let p = profiles.iter().find(|p| Some(p.external_id.as_str()) == r.external_id.as_deref()).unwrap();
            assert!(encoded_len(std::slice::from_ref(p)) > limits.bytes_per_request);
        }
    }

    #[test]
    fn cut_respects_both_limits_greedily() {
        let mut rng = Rng(2);
        for _ in 0..100 {
            let limits = Limits {
                profiles_per_request: rng.range(1, 200),
                bytes_per_request: rng.range(1024, 8192),
                ..Limits::OKTA
            };
            let profiles: Vec<_> = (0..rng.range(0, 400)).map(|n| rng.profile(n, 120)).collect();
            let result = cut(profiles.clone(), &limits);
            check_cut(&profiles, &limits, &result);
        }
    }

    #[test]
    fn cut_of_nothing_is_one_empty_batch() {
        let result = cut(Vec::new(), &Limits::OKTA);
        assert_eq!(result, CutResult { batches: vec![vec![]], too_large: vec![] });
    }

    #[test]
    fn cut_of_a_realistic_page_is_by_count() {
        let profiles: Vec<_> = (0..999).map(small).collect();
        let result = cut(profiles.clone(), &Limits::OKTA);
        let sizes: Vec<_> = result.batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [200, 200, 200, 200, 199]);
        check_cut(&profiles, &Limits::OKTA, &result);
    }

    #[test]
    fn cut_rejects_a_profile_too_large_to_send_alone() {
        let mut huge = small(1);
        huge.profile.as_mut().unwrap().insert("notes".into(), "x".repeat(2000));
        let limits = Limits { bytes_per_request: 1024, ..Limits::OKTA };
        let result = cut(vec![small(0), huge, small(2)], &limits);
        assert_eq!(result.batches.concat(), vec![small(0), small(2)]);
        assert_eq!(result.too_large.len(), 1);
        assert_eq!(result.too_large[0].external_id.as_deref(), Some("user1@sandbox.example.com"));
        assert!(result.too_large[0].reason.contains("at most 1024 bytes"), "{}", result.too_large[0].reason);
    }

    /// What one pushed batch was, to check the packer's output against.
    struct Pushed {
        op: Op,
        meta: PieceMeta,
        items: Vec<(u32, OktaProfile)>,
    }

    fn check_packed(limits: &Limits, pushed: &[Pushed], out: &[(Packed, bool)]) {
        for op in [Op::Upsert, Op::Delete] {
            let sent: Vec<&Packed> = out.iter().map(|(p, _)| p).filter(|p| p.op == op).collect();
            // Every profile exactly once, in arrival order.
            let want: Vec<&OktaProfile> =
                pushed.iter().filter(|b| b.op == op).flat_map(|b| b.items.iter().map(|(_, p)| p)).collect();
            let got: Vec<&OktaProfile> = sent.iter().flat_map(|p| p.profiles.iter()).collect();
            assert_eq!(got, want);
            // Pieces name exactly what was pushed, in the same order.
            let want: Vec<(u32, u32, u32)> = pushed
                .iter()
                .filter(|b| b.op == op)
                .flat_map(|b| b.items.iter().map(|(i, _)| (b.meta.page_seq, b.meta.part, *i)))
                .collect();
            let got: Vec<(u32, u32, u32)> = sent
                .iter()
                .flat_map(|p| p.pieces.iter())
                .flat_map(|pc| (pc.from..pc.to).map(|i| (pc.page_seq, pc.part, i)))
                .collect();
            assert_eq!(got, want);
        }
        for (i, (p, from_next_full)) in out.iter().enumerate() {
            assert_eq!(p.body_bytes, encoded_len(&p.profiles), "body_bytes is exact");
            assert!(!p.profiles.is_empty());
            assert!(p.profiles.len() <= limits.profiles_per_request);
            if p.oversized {
                assert_eq!(p.profiles.len(), 1);
                assert!(p.body_bytes > limits.bytes_per_request);
            } else {
                assert!(p.body_bytes <= limits.bytes_per_request);
            }
            assert_eq!(p.pieces.iter().map(|pc| (pc.to - pc.from) as usize).sum::<usize>(), p.profiles.len());
            for pc in &p.pieces {
                let b = pushed.iter().find(|b| b.meta.page_seq == pc.page_seq && b.meta.part == pc.part).unwrap();
                assert_eq!((pc.parts, pc.len, pc.total_pages), (b.meta.parts, b.meta.len, b.meta.total_pages));
            }
            // Consecutive indexes of one batch are merged into one piece.
            for w in p.pieces.windows(2) {
                assert!(!(w[0].page_seq == w[1].page_seq && w[0].part == w[1].part && w[0].to == w[1].from));
            }
            // A request handed out as full really is full.
            if *from_next_full && p.profiles.len() < limits.profiles_per_request && !p.oversized {
                let next = out[i + 1..].iter().find(|(q, _)| q.op == p.op).and_then(|(q, _)| q.profiles.first());
                let next = next.expect("a full request is followed by more profiles");
                assert!(p.body_bytes + SEPARATOR_LEN + profile_len(next) > limits.bytes_per_request);
            }
        }
    }

    /// Pushes batches, taking full requests as they become ready, then drains.
    fn run(limits: Limits, pushed: &[Pushed]) -> Vec<(Packed, bool)> {
        let mut packer = Packer::new(limits);
        let mut out = Vec::new();
        for b in pushed {
            packer.push(b.op, b.meta, b.items.clone());
            while let Some(p) = packer.next_full() {
                out.push((p, true));
            }
            // Nothing full is left behind: each op queues less than one request.
            assert!(packer.queued() <= 2 * (limits.profiles_per_request - 1));
        }
        while let Some(p) = packer.drain() {
            out.push((p, false));
        }
        assert_eq!(packer.queued(), 0);
        assert_eq!(packer.next_full(), None);
        out
    }

    #[test]
    fn packed_requests_respect_limits_and_keep_everything_in_order() {
        let mut rng = Rng(3);
        for _ in 0..80 {
            let limits = Limits {
                profiles_per_request: rng.range(1, 200),
                bytes_per_request: if rng.below(2) == 0 {
                    rng.range(1024, 6000)
                } else {
                    Limits::OKTA.bytes_per_request
                },
                ..Limits::OKTA
            };
            let mut n = 0;
            let pushed: Vec<Pushed> = (0..rng.range(0, 30))
                .map(|page| {
                    let op = if rng.below(4) == 0 { Op::Delete } else { Op::Upsert };
                    let len = rng.range(0, 60);
                    // The uploader pushes only what is not loaded yet: sometimes a tail.
                    let skip = if rng.below(3) == 0 { rng.range(0, len) } else { 0 };
                    let items = (skip..len)
                        .map(|i| {
                            n += 1;
                            (i as u32, rng.profile(n, 100))
                        })
                        .collect();
                    let meta = PieceMeta {
                        page_seq: page as u32,
                        part: 0,
                        parts: 1,
                        len: len as u32,
                        total_pages: None,
                        ..Default::default()
                    };
                    Pushed { op, meta, items }
                })
                .collect();
            let out = run(limits, &pushed);
            check_packed(&limits, &pushed, &out);
        }
    }

    #[test]
    fn small_profiles_use_the_fewest_requests() {
        let mut rng = Rng(4);
        for _ in 0..20 {
            let mut n = 0;
            let pushed: Vec<Pushed> = (0..rng.range(1, 40))
                .flat_map(|page| {
                    let parts = rng.range(1, 3) as u32;
                    (0..parts)
                        .map(|part| {
                            let len = rng.range(0, 200);
                            let items = (0..len as u32)
                                .map(|i| {
                                    n += 1;
                                    (i, small(n))
                                })
                                .collect();
                            let meta = PieceMeta {
                                page_seq: page as u32,
                                part,
                                parts,
                                len: len as u32,
                                total_pages: None,
                                ..Default::default()
                            };
                            Pushed { op: Op::Upsert, meta, items }
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            let out = run(Limits::OKTA, &pushed);
            check_packed(&Limits::OKTA, &pushed, &out);
            assert_eq!(out.len(), n.div_ceil(200), "{n} profiles");
        }
    }

    #[test]
    fn pieces_split_a_batch_across_requests() {
        let limits = Limits { profiles_per_request: 3, ..Limits::OKTA };
        let mut packer = Packer::new(limits);
        let meta =
            |page_seq, len| PieceMeta { page_seq, part: 0, parts: 1, len, total_pages: Some(2), ..Default::default() };
        packer.push(Op::Upsert, meta(0, 2), vec![(0, small(0)), (1, small(1))]);
        assert_eq!(packer.next_full(), None, "2 of 3 is not full");
        packer.push(Op::Delete, meta(9, 1), vec![(0, small(9))]);
        packer.push(Op::Upsert, meta(1, 4), vec![(1, small(2)), (2, small(3)), (3, small(4))]);
        let first = packer.next_full().unwrap();
        assert_eq!(first.op, Op::Upsert);
        assert_eq!(first.profiles, vec![small(0), small(1), small(2)]);
        assert_eq!(
            first.pieces,
            vec![
                Piece {
                    page_seq: 0,
                    part: 0,
                    parts: 1,
                    len: 2,
                    total_pages: Some(2),
                    from: 0,
                    to: 2,
                    ..Default::default()
                },
                Piece {
                    page_seq: 1,
                    part: 0,
                    parts: 1,
                    len: 4,
                    total_pages: Some(2),
                    from: 1,
                    to: 2,
                    ..Default::default()
                },
            ]
        );
        assert_eq!(packer.next_full(), None);
        assert_eq!(packer.queued(), 3);
        let rest = packer.drain().unwrap();
        assert_eq!((rest.op, rest.profiles.len()), (Op::Upsert, 2));
        assert_eq!(
            rest.pieces,
            vec![Piece {
                page_seq: 1,
                part: 0,
                parts: 1,
                len: 4,
                total_pages: Some(2),
                from: 2,
                to: 4,
                ..Default::default()
            }]
        );
        let deletes = packer.drain().unwrap();
        assert_eq!((deletes.op, deletes.profiles.clone()), (Op::Delete, vec![small(9)]));
        assert_eq!(packer.drain(), None);
    }

    #[test]
    fn an_oversized_profile_goes_alone() {
        let limits = Limits { bytes_per_request: 1024, ..Limits::OKTA };
        let mut huge = small(1);
        huge.profile.as_mut().unwrap().insert("notes".into(), "x".repeat(2000));
        let mut packer = Packer::new(limits);
        let meta = PieceMeta { page_seq: 0, part: 0, parts: 1, len: 3, total_pages: None, ..Default::default() };
        packer.push(Op::Upsert, meta, vec![(0, small(0)), (1, huge.clone()), (2, small(2))]);
        let a = packer.next_full().unwrap();
        assert_eq!((a.profiles.clone(), a.oversized), (vec![small(0)], false));
        let b = packer.next_full().unwrap();
        assert_eq!((b.profiles.clone(), b.oversized), (vec![huge], true));
        assert_eq!(packer.next_full(), None);
        let c = packer.drain().unwrap();
        assert_eq!((c.profiles.clone(), c.oversized), (vec![small(2)], false));
    }
}
