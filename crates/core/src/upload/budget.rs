//! How long a failing Okta call is retried before its run fails.
//!
//! Okta's 5xx, 429s and network failures usually pass, so the uploader
//! retries them in place, with a backoff, recording each retry. But not
//! forever: a run whose Okta calls keep failing fails with the reason once
//! either budget (attempts, or time since the first failure) is spent, so
//! the operator hears of it and the sync is free for the next run.

use std::time::Duration;

use time::OffsetDateTime;

/// `[syncs.<name>.retry]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Failed attempts of one call before its run fails.
    pub attempts: u32,
    /// Time from a call's first failure after which its run fails.
    pub within: Duration,
}

impl RetryBudget {
    pub const DEFAULT: RetryBudget = RetryBudget { attempts: 8, within: Duration::from_secs(600) };
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The failures of one call so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    failures: u32,
    since: Option<OffsetDateTime>,
}

/// A retry, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Try again after `after`; this was failure number `attempt`.
    After { attempt: u32, after: Duration },
    /// The budget is spent: the run fails with this reason.
    GiveUp(String),
}

impl Attempts {
    /// Counts a failure at `now`, and says whether to retry.
    pub fn fail(
        &mut self,
        what: &str,
        reason: &str,
        hint: Option<Duration>,
        budget: &RetryBudget,
        now: OffsetDateTime,
    ) -> Retry {
        self.failures += 1;
        let since = *self.since.get_or_insert(now);
        let spent = now - since;
        if self.failures >= budget.attempts || spent >= budget.within {
            let secs = spent.whole_seconds().max(0);
            return Retry::GiveUp(format!(
                "Okta kept failing ({what}: {reason}); gave up after {} attempts over {secs}s (the sync's retry budget is \
                 attempts = {}, within = {}s); check Okta's status page and the network, then run the sync again",
                self.failures,
                budget.attempts,
                budget.within.as_secs()
            ));
        }
        Retry::After { attempt: self.failures, after: hint.unwrap_or_else(|| backoff(self.failures)) }
    }

    /// The call succeeded: the next failure starts a new count.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Exponential backoff from 1 s, capped at 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(6), Duration::from_secs(30));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn the_attempt_budget_ends_exactly_at_its_count() {
        let budget = RetryBudget { attempts: 3, within: Duration::from_secs(3600) };
        let mut a = Attempts::default();
        assert_eq!(
            a.fail("bulk", "503", None, &budget, t(0)),
            Retry::After { attempt: 1, after: Duration::from_secs(1) }
        );
        let hint = Some(Duration::from_secs(7));
        assert_eq!(
            a.fail("bulk", "429", hint, &budget, t(1)),
            Retry::After { attempt: 2, after: Duration::from_secs(7) }
        );
        let Retry::GiveUp(why) = a.fail("bulk", "503", None, &budget, t(9)) else { panic!("budget spent") };
        assert!(why.contains("gave up after 3 attempts over 9s"), "{why}");
        assert!(why.contains("attempts = 3, within = 3600s"), "{why}");
    }

    #[test]
    fn the_time_budget_ends_exactly_at_its_length_and_a_success_resets_both() {
        let budget = RetryBudget { attempts: 100, within: Duration::from_secs(60) };
        let mut a = Attempts::default();
        assert!(matches!(a.fail("x", "503", None, &budget, t(0)), Retry::After { .. }));
        assert!(matches!(a.fail("x", "503", None, &budget, t(59)), Retry::After { attempt: 2, .. }));
        assert!(matches!(a.fail("x", "503", None, &budget, t(60)), Retry::GiveUp(_)));
        a.reset();
        assert!(matches!(a.fail("x", "503", None, &budget, t(1000)), Retry::After { attempt: 1, .. }));
    }
}
