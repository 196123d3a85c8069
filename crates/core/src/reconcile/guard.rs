//! The guards' verdict on a run's deactivations, from counts alone.
//!
//! Two kinds of refusal:
//! - **untrusted data**: the page chain ended early, the source returned
//!   nobody, or the roster is unknown to a run that cannot reconcile
//!   without it. Nothing lifts these: an operator's flag cannot make the
//!   data right.
//! - **too many**: over `max_deactivations` or `max_deactivations_percent`
//!   of the roster. `--allow-mass-deactivation` lifts these for one run.

use super::Guards;
use crate::ids::SyncName;

/// What the guards look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Deactivations the run asks for.
    pub candidates: u64,
    /// Users active in Okta before the run; `None`: the roster is unknown.
    pub roster: Option<u64>,
    /// The run read the source's full state, so it can tell who left.
    pub reads_full_state: bool,
    /// Users the source returned, mapped or rejected.
    pub returned: u64,
    /// Why the data is partial, when it is.
    pub partial: Option<String>,
}

/// What the run does with its candidates.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Deactivate them all.
    Deactivate,
    /// Deactivate them all: `--allow-mass-deactivation` lifted this guard.
    Overridden(String),
    /// Deactivate nobody, for this reason (with the numbers and what to do).
    Refused(String),
}

/// The verdict on a run of `sync` whose every page is accounted for.
pub fn check(sync: &SyncName, facts: &Facts, guards: &Guards, allow_mass_deactivation: bool) -> Verdict {
    let n = facts.candidates;
    if let Some(why) = &facts.partial {
        return Verdict::Refused(format!(
            "{why}: the data is partial, so none of the {n} deactivations it asked for was sent; run it again"
        ));
    }
    let Some(active) = facts.roster else {
        // Without the roster a run that reads only changes cannot tell who
        // is active in Okta, and the share guard has nothing to divide by.
        // (A run that reads the full state asks only for users the source
        // itself reports disabled or removed.)
        if n > 0 && !facts.reads_full_state {
            return Verdict::Refused(format!(
                "the roster of who this sync left active in Okta is unknown (its stream was lost or could not be \
                 read), so the {n} deactivations this run asked for cannot be checked against it or against the \
                 guards; nothing was deactivated. Run a full sync (xaas enqueue --sync {sync} --mode full) to \
                 rebuild the roster"
            ));
        }
        return over_count(n, guards).map_or(Verdict::Deactivate, |why| too_many(why, allow_mass_deactivation));
    };
    if facts.reads_full_state && facts.returned == 0 && active > 0 {
        return Verdict::Refused(format!(
            "the source returned no users, but {active} are active in Okta: refusing to deactivate all of them; \
             nothing was deactivated (--allow-mass-deactivation does not lift this). Check the source's tenant \
             and filter"
        ));
    }
    let share = if active > 0 { n as f64 * 100.0 / active as f64 } else { 0.0 };
    let over_share = guards.max_deactivations_percent.filter(|max| active > 0 && share > *max).map(|max| {
        format!(
            "{n} deactivations are {share:.1}% of the {active} users active in Okta, over max_deactivations_percent = {max}%"
        )
    });
    let over = over_count(n, guards).map(|why| format!("{why} (roster: {active} active users)")).or(over_share);
    over.map_or(Verdict::Deactivate, |why| too_many(why, allow_mass_deactivation))
}

fn over_count(n: u64, guards: &Guards) -> Option<String> {
    guards
        .max_deactivations
        .filter(|max| n > *max)
        .map(|max| format!("{n} deactivations exceed max_deactivations = {max}"))
}

fn too_many(why: String, allow_mass_deactivation: bool) -> Verdict {
    if allow_mass_deactivation {
        Verdict::Overridden(why)
    } else {
        Verdict::Refused(format!(
            "{why}; nothing was deactivated. If this is intended, run once with --allow-mass-deactivation"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync() -> SyncName {
        SyncName::parse("demo").unwrap()
    }

    /// A full run of 100 users.
    fn full(candidates: u64, roster: Option<u64>) -> Facts {
        Facts { candidates, roster, reads_full_state: true, returned: 100, partial: None }
    }

    fn delta(candidates: u64, roster: Option<u64>) -> Facts {
        Facts { reads_full_state: false, returned: 5, ..full(candidates, roster) }
    }

    const PERCENT_10: Guards = Guards { max_deactivations: None, max_deactivations_percent: Some(10.0) };
    const COUNT_20: Guards = Guards { max_deactivations: Some(20), max_deactivations_percent: None };
    const NONE: Guards = Guards { max_deactivations: None, max_deactivations_percent: None };
    const PERCENT_2_5: Guards = Guards { max_deactivations: None, max_deactivations_percent: Some(2.5) };
    const BOTH: Guards = Guards { max_deactivations: Some(20), max_deactivations_percent: Some(10.0) };

    #[derive(Debug, PartialEq)]
    enum V {
        Deactivate,
        Overridden,
        Refused,
    }

    /// (case, facts, guards, --allow-mass-deactivation, verdict, text in its reason)
    #[test]
    fn the_guards_decide_on_the_numbers() {
        let partial = Facts { partial: Some("the page chain ended early".into()), ..delta(1, Some(100)) };
        let empty_source = Facts { returned: 0, ..full(100, Some(100)) };
        let cases: Vec<(&str, Facts, Guards, bool, V, &str)> = vec![
            ("nothing to do", full(0, Some(100)), PERCENT_10, false, V::Deactivate, ""),
            ("exactly the percentage", full(10, Some(100)), PERCENT_10, false, V::Deactivate, ""),
            ("exactly the percentage of another roster", full(7, Some(70)), PERCENT_10, false, V::Deactivate, ""),
            ("one over the percentage", full(11, Some(100)), PERCENT_10, false, V::Refused, "11.0% of the 100"),
            ("over the percentage, allowed", full(11, Some(100)), PERCENT_10, true, V::Overridden, "11.0%"),
            ("a fractional percentage", full(1, Some(40)), PERCENT_2_5, false, V::Deactivate, ""),
            ("just over a fractional one", full(2, Some(79)), PERCENT_2_5, false, V::Refused, "2.5% of the 79"),
            ("exactly max_deactivations", full(20, Some(100)), COUNT_20, false, V::Deactivate, ""),
            (
                "one over max_deactivations",
                full(21, Some(100)),
                COUNT_20,
                false,
                V::Refused,
                "21 deactivations exceed max_deactivations = 20 (roster: 100",
            ),
            (
                "over max_deactivations, allowed",
                full(21, Some(100)),
                COUNT_20,
                true,
                V::Overridden,
                "exceed max_deactivations",
            ),
            (
                "the count is named before the share",
                full(30, Some(100)),
                BOTH,
                false,
                V::Refused,
                "exceed max_deactivations = 20",
            ),
            ("no limits", full(90, Some(100)), NONE, false, V::Deactivate, ""),
            ("an empty roster, nothing to do", full(0, Some(0)), PERCENT_10, false, V::Deactivate, ""),
            (
                "an empty roster and an empty source",
                Facts { returned: 0, ..full(0, Some(0)) },
                PERCENT_10,
                false,
                V::Deactivate,
                "",
            ),
            (
                "the source returned nobody",
                empty_source.clone(),
                NONE,
                false,
                V::Refused,
                "the source returned no users, but 100 are active",
            ),
            ("the source returned nobody, allowed", empty_source.clone(), NONE, true, V::Refused, "does not lift this"),
            (
                "partial data",
                partial.clone(),
                NONE,
                false,
                V::Refused,
                "the data is partial, so none of the 1 deactivations",
            ),
            ("partial data, allowed", partial, NONE, true, V::Refused, "partial"),
            ("a delta run, roster known", delta(3, Some(100)), PERCENT_10, false, V::Deactivate, ""),
            (
                "a delta round with no users is no empty source",
                Facts { returned: 0, ..delta(3, Some(100)) },
                PERCENT_10,
                false,
                V::Deactivate,
                "",
            ),
            (
                "a delta run, roster unknown",
                delta(3, None),
                NONE,
                false,
                V::Refused,
                "the roster of who this sync left active in Okta is unknown",
            ),
            (
                "a delta run, roster unknown, says what to do",
                delta(1, None),
                PERCENT_10,
                false,
                V::Refused,
                "Run a full sync (xaas enqueue --sync demo --mode full)",
            ),
            ("a delta run, roster unknown, allowed", delta(3, None), NONE, true, V::Refused, "unknown"),
            ("a delta run, roster unknown, nothing to do", delta(0, None), PERCENT_10, false, V::Deactivate, ""),
            ("a full read, roster unknown: disabled users go", full(30, None), PERCENT_10, false, V::Deactivate, ""),
            (
                "a full read, roster unknown: the count still holds",
                full(21, None),
                COUNT_20,
                false,
                V::Refused,
                "21 deactivations exceed max_deactivations = 20;",
            ),
            ("a full read, roster unknown, allowed", full(21, None), COUNT_20, true, V::Overridden, "exceed"),
        ];
        for (case, facts, guards, allowed, expected, text) in cases {
            let verdict = check(&sync(), &facts, &guards, allowed);
            let (got, reason) = match &verdict {
                Verdict::Deactivate => (V::Deactivate, ""),
                Verdict::Overridden(why) => (V::Overridden, why.as_str()),
                Verdict::Refused(why) => (V::Refused, why.as_str()),
            };
            assert_eq!(got, expected, "{case}: {verdict:?}");
            assert!(reason.contains(text), "{case}: {reason:?} does not contain {text:?}");
        }
    }

    #[test]
    fn a_refusal_says_what_to_do() {
        let Verdict::Refused(why) = check(&sync(), &full(11, Some(100)), &PERCENT_10, false) else { panic!() };
        assert!(why.ends_with("nothing was deactivated. If this is intended, run once with --allow-mass-deactivation"));
        let Verdict::Overridden(why) = check(&sync(), &full(11, Some(100)), &PERCENT_10, true) else { panic!() };
        assert!(!why.contains("nothing was deactivated"), "{why}");
        let Verdict::Refused(why) = check(&sync(), &delta(1, None), &NONE, true) else { panic!() };
        assert!(why.contains("nothing was deactivated") && !why.contains("--allow-mass-deactivation"), "{why}");
    }
}
