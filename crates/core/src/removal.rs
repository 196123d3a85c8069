//! `xaas users deactivate`: which users an operator may deactivate by hand
//! (the original workflow's "Remove All Users" and "Remove Single User").
//!
//! Only users the sync's roster holds: Okta's Identity Sources API cannot
//! tell which users a source owns, so an id the roster does not hold may
//! belong to another source or to nobody, and is refused rather than sent.
//! The deactivations themselves go out as an ordinary run (mode
//! `deactivate` with `users`), through the uploader's session rules.

use std::collections::BTreeSet;

use crate::ids::ExternalId;
use crate::roster::Roster;

/// Whom the operator named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every user the roster holds.
    All,
    /// These externalIds, as typed.
    Users(Vec<String>),
}

/// What the command does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing is sent; the reason says why, with the numbers.
    Refuse(String),
    /// `--dry-run`: these would be deactivated; nothing is sent.
    Show(Vec<ExternalId>),
    /// Confirmed: deactivate these (sorted, each once).
    Send(Vec<ExternalId>),
}

/// Decides what `xaas users deactivate` does. `yes` is the operator's
/// confirmation; a dry run needs none.
pub fn decide(roster: &Roster, selection: &Selection, yes: bool, dry_run: bool) -> Action {
    if !roster.is_known() {
        return Action::Refuse(format!(
            "the roster of sync {} is unknown (no completed run has written it), so it cannot say which users this sync owns; run a full sync first",
            roster.sync()
        ));
    }
    let chosen: BTreeSet<ExternalId> = match selection {
        Selection::All => roster.ids().cloned().collect(),
        Selection::Users(ids) => {
            let mut chosen = BTreeSet::new();
            let mut refused = Vec::new();
            for raw in ids {
                match ExternalId::parse(raw.as_str()) {
                    Ok(id) if roster.contains(&id) => {
                        chosen.insert(id);
                    }
                    Ok(id) => refused.push(format!(
                        "{id}: not in the roster of sync {} (this sync never synced it, or it is already deactivated)",
                        roster.sync()
                    )),
                    Err(e) => refused.push(format!("{raw:?}: {e}")),
                }
            }
            if !refused.is_empty() {
                return Action::Refuse(format!("refusing to deactivate anyone; {}", refused.join("; ")));
            }
            chosen
        }
    };
    let users: Vec<ExternalId> = chosen.into_iter().collect();
    if users.is_empty() {
        return Action::Refuse(format!(
            "the roster of sync {} holds no active users: nothing to deactivate",
            roster.sync()
        ));
    }
    if dry_run {
        return Action::Show(users);
    }
    if !yes {
        return Action::Refuse(format!(
            "this would deactivate {} user(s) of sync {} in Okta; add --yes to do it (or --dry-run to list them)",
            users.len(),
            roster.sync()
        ));
    }
    Action::Send(users)
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::ids::{RunId, SyncName};
    use crate::roster::{Digest, RosterEntry};

    fn roster(ids: &[&str]) -> Roster {
        let sync = SyncName::parse("demo").unwrap();
        let empty = Roster::unknown(sync.clone());
        let entries = ids
            .iter()
            .map(|i| RosterEntry {
                external_id: ExternalId::parse(*i).unwrap(),
                digest: Digest::of(&Default::default()),
            })
            .collect();
        let at = OffsetDateTime::UNIX_EPOCH;
        let records = empty.records_for(&RunId::parse("r").unwrap(), at, entries, Vec::new());
        Roster::replay(sync, &records)
    }

    fn ids(v: &[&str]) -> Vec<ExternalId> {
        v.iter().map(|i| ExternalId::parse(*i).unwrap()).collect()
    }

    #[test]
    fn without_yes_it_refuses_and_says_how_many_and_how_to_confirm() {
        let Action::Refuse(why) = decide(&roster(&["a", "b"]), &Selection::All, false, false) else { panic!() };
        assert!(why.contains("2 user(s)") && why.contains("--yes"), "{why}");
        assert_eq!(decide(&roster(&["a", "b"]), &Selection::All, true, false), Action::Send(ids(&["a", "b"])));
    }

    #[test]
    fn a_user_the_roster_does_not_hold_refuses_the_whole_command() {
        let sel = Selection::Users(vec!["a".into(), "stranger".into()]);
        let Action::Refuse(why) = decide(&roster(&["a", "b"]), &sel, true, false) else { panic!() };
        assert!(why.contains("stranger: not in the roster"), "{why}");
        assert!(!why.contains("a: not"), "{why}");
    }

    #[test]
    fn named_users_are_sent_once_sorted_and_a_dry_run_only_shows_them() {
        let sel = Selection::Users(vec!["b".into(), "a".into(), "b".into()]);
        assert_eq!(decide(&roster(&["a", "b", "c"]), &sel, true, false), Action::Send(ids(&["a", "b"])));
        assert_eq!(decide(&roster(&["a", "b", "c"]), &sel, false, true), Action::Show(ids(&["a", "b"])));
    }

    #[test]
    fn an_unknown_or_empty_roster_deactivates_nobody() {
        let unknown = Roster::unknown(SyncName::parse("demo").unwrap());
        assert!(matches!(decide(&unknown, &Selection::All, true, false), Action::Refuse(w) if w.contains("unknown")));
        assert!(
            matches!(decide(&roster(&[]), &Selection::All, true, false), Action::Refuse(w) if w.contains("no active"))
        );
        let bad = Selection::Users(vec!["a\nb".into()]);
        assert!(matches!(decide(&roster(&["a"]), &bad, true, false), Action::Refuse(_)));
    }
}
