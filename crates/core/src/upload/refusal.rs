//! A bulk request Okta refuses with a 400 costs only the refused profiles:
//! the ones Okta's `errorCauses` name are taken out, and when they name
//! none, the request is halved until each refused profile stands alone.
//! Also here: telling "the session is full" apart from refused profiles.

use crate::messages::{OktaProfile, Op, Piece, Rejected};
use crate::packing::{Packed, PieceMeta, bulk_body_len};

/// The pieces covering `positions` (ascending) of the batch `meta` describes.
pub fn pieces_at(meta: PieceMeta, positions: impl Iterator<Item = u32>) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    for i in positions {
        match pieces.last_mut() {
            Some(last) if last.to == i => last.to = i + 1,
            _ => pieces.push(Piece {
                page_seq: meta.page_seq,
                part: meta.part,
                parts: meta.parts,
                len: meta.len,
                total_pages: meta.total_pages,
                from: i,
                to: i + 1,
                copy: meta.copy,
                parent: meta.parent,
            }),
        }
    }
    pieces
}

/// One profile of a packed request with the batch position it came from.
pub fn explode(p: &Packed) -> Vec<(OktaProfile, Piece)> {
    let mut positions =
        p.pieces.iter().flat_map(|piece| (piece.from..piece.to).map(move |i| Piece { from: i, to: i + 1, ..*piece }));
    p.profiles.iter().cloned().filter_map(|profile| positions.next().map(|pos| (profile, pos))).collect()
}

/// Packs single positions back into a request, merging adjacent ones.
pub fn assemble(op: Op, items: Vec<(OktaProfile, Piece)>) -> Packed {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut profiles = Vec::with_capacity(items.len());
    for (profile, pos) in items {
        match pieces.last_mut() {
            Some(last)
                if last.page_seq == pos.page_seq
                    && last.copy == pos.copy
                    && last.part == pos.part
                    && last.to == pos.from =>
            {
                last.to = pos.to;
            }
            _ => pieces.push(pos),
        }
        profiles.push(profile);
    }
    let body_bytes = bulk_body_len(&profiles);
    Packed { op, profiles, pieces, body_bytes, oversized: false }
}

/// Splits a refused request: profiles Okta's causes name are refused; when
/// no cause names one, the request is halved until the culprit stands alone.
/// Returns the refused profiles and the requests still to send, in the
/// order they are to be sent.
pub fn isolate(p: &Packed, causes: &[String]) -> (Vec<(OktaProfile, Piece)>, Vec<Packed>) {
    let items = explode(p);
    let named = |profile: &OktaProfile| causes.iter().any(|c| names_id(c, profile.external_id.as_str()));
    let (refused, rest): (Vec<_>, Vec<_>) = items.iter().cloned().partition(|(profile, _)| named(profile));
    if !refused.is_empty() {
        let rest = if rest.is_empty() { vec![] } else { vec![assemble(p.op, rest)] };
        return (refused, rest);
    }
    if items.len() <= 1 {
        return (items, vec![]);
    }
    let (left, right) = items.split_at(items.len() / 2);
    (vec![], vec![assemble(p.op, left.to_vec()), assemble(p.op, right.to_vec())])
}

/// Whether a 400 on a bulk request refuses the session rather than the
/// profiles: the request limit of the session was reached. Okta's exact text
/// is not documented; this matches the sandbox's ("already has 50 bulk
/// requests") and any wording that names the bulk request limit.
pub fn says_session_full(summary: &str, causes: &[String]) -> bool {
    std::iter::once(summary).chain(causes.iter().map(String::as_str)).any(|text| {
        let text = text.to_ascii_lowercase();
        text.contains("bulk request") && (text.contains("most") || text.contains("limit") || text.contains("maximum"))
    })
}

/// Whether an error cause names this externalId as a whole word.
pub fn names_id(cause: &str, id: &str) -> bool {
    let boundary =
        |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '@'));
    cause
        .match_indices(id)
        .any(|(at, _)| boundary(cause[..at].chars().next_back()) && boundary(cause[at + id.len()..].chars().next()))
}

/// What to report of refused profiles, and the positions they held.
pub fn refused_report(
    refused: &[(OktaProfile, Piece)],
    summary: &str,
    causes: &[String],
) -> (Vec<Rejected>, Vec<Piece>) {
    let rejected = refused
        .iter()
        .map(|(profile, _)| {
            let id = profile.external_id.as_str();
            let why = causes.iter().filter(|c| names_id(c, id)).cloned().collect::<Vec<_>>();
            // A profile refused on its own with causes that name nobody
            // (per-attribute causes): those causes are about it.
            let reason = match (why.is_empty(), causes.is_empty()) {
                (false, _) => format!("Okta refused it: {}", why.join("; ")),
                (true, true) => format!("Okta refused it: {summary}"),
                (true, false) => format!("Okta refused it: {summary} ({})", causes.join("; ")),
            };
            Rejected { external_id: Some(id.to_string()), reason }
        })
        .collect();
    (rejected, refused.iter().map(|(_, piece)| *piece).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ExternalId;

    fn packed(n: u32) -> Packed {
        let profiles: Vec<OktaProfile> = (0..n)
            .map(|i| OktaProfile { external_id: ExternalId::parse(format!("user-{i}")).unwrap(), profile: None })
            .collect();
        let piece = Piece {
            page_seq: 0,
            part: 0,
            parts: 1,
            len: n,
            total_pages: Some(1),
            from: 0,
            to: n,
            ..Default::default()
        };
        Packed { op: Op::Upsert, body_bytes: bulk_body_len(&profiles), profiles, pieces: vec![piece], oversized: false }
    }

    #[test]
    fn named_profiles_are_refused_and_the_rest_resent_once() {
        let p = packed(10);
        let causes = vec!["profiles[3]: externalId 'user-3': firstName must be at most 50 characters".to_string()];
        let (refused, rest) = isolate(&p, &causes);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0.external_id.as_str(), "user-3");
        assert_eq!(refused[0].1, Piece { from: 3, to: 4, ..p.pieces[0] });
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].profiles.len(), 9);
        assert_eq!(rest[0].pieces.iter().map(|x| (x.from, x.to)).collect::<Vec<_>>(), vec![(0, 3), (4, 10)]);
        assert_eq!(rest[0].body_bytes, bulk_body_len(&rest[0].profiles));
        let (rejected, pieces) = refused_report(&refused, "Api validation failed", &causes);
        assert!(rejected[0].reason.contains("firstName must be at most 50"), "{}", rejected[0].reason);
        assert_eq!(pieces, vec![refused[0].1]);
    }

    #[test]
    fn without_names_the_request_is_halved_in_order() {
        let p = packed(5);
        let (refused, rest) = isolate(&p, &[]);
        assert!(refused.is_empty());
        assert_eq!(rest[0].profiles[0].external_id.as_str(), "user-0", "the left half goes first");
        assert_eq!(rest[0].profiles.len() + rest[1].profiles.len(), 5);
        let single = assemble(Op::Upsert, explode(&p)[..1].to_vec());
        let (refused, rest) = isolate(&single, &[]);
        assert_eq!(refused.len(), 1);
        assert!(rest.is_empty());
        let (rejected, _) = refused_report(&refused, "bad profile", &[]);
        assert_eq!(rejected[0].reason, "Okta refused it: bad profile");
    }

    #[test]
    fn a_full_session_is_told_apart_from_refused_profiles() {
        let full =
            "Session aps1 already has 50 bulk requests, the most a session can take; trigger it and open another";
        assert!(says_session_full("Api validation failed: session", &[full.to_string()]));
        let profile = "profiles[3] (externalId \"u3\"): costCenter is not an attribute of the profile".to_string();
        assert!(!says_session_full("Api validation failed: profiles", &[profile]));
    }

    #[test]
    fn ids_are_matched_as_whole_words() {
        assert!(names_id("externalId user-1 is bad", "user-1"));
        assert!(!names_id("externalId user-10 is bad", "user-1"));
        assert!(names_id("'a@b.example': bad email", "a@b.example"));
        assert!(!names_id("x.a@b.example", "a@b.example"));
    }
}
