//! Okta's rate limits: `X-Rate-Limit-Remaining` / `X-Rate-Limit-Reset`
//! (UTC epoch seconds) on every answer, 429 when a window is spent.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{DATE, HeaderMap};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use tokio::time::Instant;

/// When no reset is given: Okta's windows are 60 s.
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Shared by every clone of a client: once Okta reports the window spent
/// (`Remaining: 0`), hold the next requests until it resets instead of
/// spending them on 429s.
#[derive(Debug, Default)]
pub(crate) struct RateGate {
    until: Mutex<Option<Instant>>,
}

impl RateGate {
    /// How long requests are still being held, if at all.
    pub fn pause(&self) -> Option<Duration> {
        let until = (*self.lock())?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Notes the rate-limit headers of an answer.
    pub fn observe(&self, headers: &HeaderMap) {
        if remaining(headers) != Some(0) {
            return;
        }
        let Some(wait) = reset_wait(headers) else { return };
        if wait.is_zero() {
            return;
        }
        let until = Instant::now() + wait + jitter();
        let mut held = self.lock();
        if held.is_none_or(|h| h < until) {
            *held = Some(until);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // The guarded value is a plain Instant: a panic elsewhere cannot
        // leave it half-written, so a poisoned lock is still good.
        self.until.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn remaining(headers: &HeaderMap) -> Option<u64> {
    headers.get("x-rate-limit-remaining")?.to_str().ok()?.trim().parse().ok()
}

/// Until `X-Rate-Limit-Reset`, measured against the answer's own `Date`
/// (both are Okta's clock, so our clock's skew drops out), else ours.
pub(crate) fn reset_wait(headers: &HeaderMap) -> Option<Duration> {
    // Without a reset there is nothing to measure: no clock is read.
    headers.get("x-rate-limit-reset")?;
    xaas_http::okta_rate_limit_reset(headers, server_now(headers))
}

/// How long a 429 asks us to wait: the reset, else `Retry-After`, else a
/// whole window.
pub(crate) fn wait_after_429(headers: &HeaderMap) -> Duration {
    reset_wait(headers).or_else(|| xaas_http::retry_after(headers)).unwrap_or(DEFAULT_WINDOW)
}

fn server_now(headers: &HeaderMap) -> OffsetDateTime {
    headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| OffsetDateTime::parse(v, &Rfc2822).ok())
        .unwrap_or_else(OffsetDateTime::now_utc)
}

/// Up to a quarter second, so that clients released by the same reset do
/// not all arrive in the same instant.
pub(crate) fn jitter() -> Duration {
    Duration::from_millis(rand::random_range(0..250))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reset_is_measured_on_the_servers_clock() {
        // 1994-11-06T08:49:37Z = 784111777; the reset is 12 s later on
        // Okta's clock, whatever ours says.
        let h = headers(&[("date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("x-rate-limit-reset", "784111789")]);
        assert_eq!(reset_wait(&h), Some(Duration::from_secs(12)));
        assert_eq!(wait_after_429(&h), Duration::from_secs(12));
    }

    #[test]
    fn a_429_without_reset_falls_back_to_retry_after_then_a_window() {
        assert_eq!(wait_after_429(&headers(&[("retry-after", "3")])), Duration::from_secs(3));
        assert_eq!(wait_after_429(&HeaderMap::new()), DEFAULT_WINDOW);
    }

    #[test]
    fn the_gate_closes_only_when_the_window_is_spent() {
        let gate = RateGate::default();
        let far = (OffsetDateTime::now_utc().unix_timestamp() + 120).to_string();
        gate.observe(&headers(&[("x-rate-limit-remaining", "5"), ("x-rate-limit-reset", &far)]));
        assert_eq!(gate.pause(), None);
        gate.observe(&headers(&[("x-rate-limit-remaining", "0"), ("x-rate-limit-reset", &far)]));
        let pause = gate.pause().unwrap();
        assert!(pause > Duration::from_secs(100) && pause <= Duration::from_secs(122), "{pause:?}");
    }
}
