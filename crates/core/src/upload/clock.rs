//! When the next session may be created, measured on **Okta's** clock.
//!
//! Okta refuses a new session within its cooldown after a trigger, and it
//! measures that on its own clock. The uploader that triggered and the one
//! that creates the next session may run on different hosts whose clocks
//! disagree, so the trigger is recorded with the `Date` Okta's start-import
//! answer carried, and the wait is computed against Okta's clock as the
//! latest answer showed it:
//!
//! - `Date` has whole seconds, rounded down, so the trigger happened before
//!   `okta_at + 1 s`, and Okta's clock now is at least
//!   `date of the latest answer + time elapsed here since it arrived`;
//! - the next create may go once that lower bound has passed
//!   `okta_at + 1 s + cooldown`.
//!
//! An uploader that has heard nothing from Okta yet asks first (any answer
//! with a `Date` will do). When Okta sends no `Date` at all, or the trigger
//! was recorded without one, the cooldown is measured on this host's clock
//! from the trigger's recorded time, plus [`LOCAL_CLOCK_MARGIN`] for the
//! skew between the hosts.

use std::time::Duration;

use time::OffsetDateTime;

/// Added to the cooldown when it must be measured without Okta's clock:
/// the clock skew between two uploader hosts this tolerates.
pub const LOCAL_CLOCK_MARGIN: Duration = Duration::from_secs(30);

/// The resolution of HTTP's `Date`.
const DATE_RESOLUTION: Duration = Duration::from_secs(1);

/// The last trigger, as the log recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerTime {
    pub session: String,
    /// This host's (or the recording host's) clock.
    pub local: OffsetDateTime,
    /// Okta's `Date` on the start-import answer.
    pub okta: Option<OffsetDateTime>,
}

/// What this uploader knows of Okta's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OktaClock {
    /// The latest answer's `Date`, and when it arrived here.
    seen: Option<(OffsetDateTime, OffsetDateTime)>,
    /// An answer came without a `Date`: Okta is not telling.
    silent: bool,
}

impl OktaClock {
    /// Notes an answer from Okta that arrived at `now` (this host's clock).
    pub fn observe(&mut self, date: Option<OffsetDateTime>, now: OffsetDateTime) {
        match date {
            Some(date) => self.seen = Some((date, now)),
            None => self.silent = true,
        }
    }

    /// A lower bound of Okta's clock at `now`.
    fn okta_now(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.seen.map(|(date, at)| date + (now - at))
    }
}

/// Whether a session may be created now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not before this time on this host's clock.
    WaitUntil(OffsetDateTime),
    /// Ask Okta anything first, to read its clock.
    AskOkta,
}

/// Decides whether the session after `last` may be created at `now`.
pub fn readiness(last: Option<&TriggerTime>, clock: &OktaClock, cooldown: Duration, now: OffsetDateTime) -> Readiness {
    let Some(last) = last else { return Readiness::Ready };
    let ready_at = match (last.okta, clock.okta_now(now)) {
        (Some(okta_at), Some(okta_now)) => {
            let okta_ready = okta_at + DATE_RESOLUTION + cooldown;
            now + (okta_ready - okta_now)
        }
        (Some(_), None) if !clock.silent => return Readiness::AskOkta,
        _ => last.local + cooldown + LOCAL_CLOCK_MARGIN,
    };
    if ready_at <= now { Readiness::Ready } else { Readiness::WaitUntil(ready_at) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    const COOLDOWN: Duration = Duration::from_secs(300);

    fn trigger(local: i64, okta: Option<i64>) -> TriggerTime {
        TriggerTime { session: "s1".into(), local: t(local), okta: okta.map(t) }
    }

    #[test]
    fn without_a_trigger_a_session_may_open_at_once() {
        assert_eq!(readiness(None, &OktaClock::default(), COOLDOWN, t(0)), Readiness::Ready);
    }

    #[test]
    fn the_cooldown_runs_on_oktas_clock_whatever_this_hosts_says() {
        // Triggered at Okta 1000. This host's clock is 60 s ahead of Okta's.
        let last = trigger(1060, Some(1000));
        let mut clock = OktaClock::default();
        clock.observe(Some(t(1000)), t(1060));
        // 300 s later here: Okta's clock says 1300, and the trigger may have
        // been at 1000.999: one more second.
        assert_eq!(readiness(Some(&last), &clock, COOLDOWN, t(1360)), Readiness::WaitUntil(t(1361)));
        assert_eq!(readiness(Some(&last), &clock, COOLDOWN, t(1361)), Readiness::Ready);
        // A host 60 s BEHIND Okta that reads the same trigger: its own clock
        // would wait too long; Okta's clock is what counts.
        let mut behind = OktaClock::default();
        behind.observe(Some(t(1200)), t(1140));
        assert_eq!(readiness(Some(&last), &behind, COOLDOWN, t(1240)), Readiness::WaitUntil(t(1241)));
    }

    #[test]
    fn an_uploader_that_never_heard_from_okta_asks_first() {
        let last = trigger(1000, Some(1000));
        assert_eq!(readiness(Some(&last), &OktaClock::default(), COOLDOWN, t(5000)), Readiness::AskOkta);
    }

    #[test]
    fn without_dates_the_local_clock_counts_with_a_margin() {
        let mut silent = OktaClock::default();
        silent.observe(None, t(0));
        let last = trigger(1000, Some(1000));
        let margin = LOCAL_CLOCK_MARGIN.as_secs() as i64;
        assert_eq!(readiness(Some(&last), &silent, COOLDOWN, t(1300)), Readiness::WaitUntil(t(1300 + margin)));
        // A trigger recorded without Okta's date (an old event) too.
        let mut clock = OktaClock::default();
        clock.observe(Some(t(2000)), t(2000));
        let old = trigger(1000, None);
        assert_eq!(readiness(Some(&old), &clock, COOLDOWN, t(1300 + margin)), Readiness::Ready);
    }
}
