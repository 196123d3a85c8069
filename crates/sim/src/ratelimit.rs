//! Okta's `X-Rate-Limit-*` accounting.
//!
//! Okta counts requests in windows that "typically reset every 60 seconds" and
//! are not aligned to wall-clock minutes: a window opens with the first request
//! after the previous one ended. Every response, errors included, says where the
//! caller stands; going over the limit is a 429 `E0000047` with the same headers,
//! so a client can sleep until `X-Rate-Limit-Reset` instead of guessing.

use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;
use tokio::time::Instant;

/// Length of one counting window, unless the sandbox is told otherwise.
pub const WINDOW: Duration = Duration::from_secs(60);

pub const LIMIT_HEADER: HeaderName = HeaderName::from_static("x-rate-limit-limit");
pub const REMAINING_HEADER: HeaderName = HeaderName::from_static("x-rate-limit-remaining");
pub const RESET_HEADER: HeaderName = HeaderName::from_static("x-rate-limit-reset");

/// Where a caller stands in the current window, as the three headers say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u32,
    pub remaining: u32,
    /// When the window ends, in UTC epoch seconds (rounded up, so waiting until
    /// then is always enough).
    pub reset_epoch: i64,
    /// Whether this request was over the limit.
    pub exceeded: bool,
}

impl Standing {
    /// Writes the three `X-Rate-Limit-*` headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT_HEADER, HeaderValue::from(self.limit));
        headers.insert(REMAINING_HEADER, HeaderValue::from(self.remaining));
        headers.insert(RESET_HEADER, HeaderValue::from(self.reset_epoch));
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Wall-clock end of the window, kept next to `started` so the header is
    /// stable for the whole window.
    reset_epoch: i64,
    used: u32,
}

/// One bucket (Okta keeps separate buckets per endpoint family).
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    length: Duration,
    window: Mutex<Option<Window>>,
}

impl RateLimiter {
    /// Okta's window: `limit_per_minute` requests per 60 s.
    pub fn new(limit_per_minute: u32) -> Self {
        Self::with_window(limit_per_minute, WINDOW)
    }

    /// `limit` requests per window of `length` (a zero length counts as a
    /// millisecond, so that a window always ends).
    pub fn with_window(limit: u32, length: Duration) -> Self {
        Self { limit, length: length.max(Duration::from_millis(1)), window: Mutex::new(None) }
    }

    /// Counts one request and says whether it is allowed.
    pub fn hit(&self, now: Instant) -> Standing {
        let mut guard = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let window = current(&mut guard, now, self.length);
        window.used = window.used.saturating_add(1);
        Standing {
            limit: self.limit,
            remaining: self.limit.saturating_sub(window.used),
            reset_epoch: window.reset_epoch,
            exceeded: window.used > self.limit,
        }
    }

    /// The standing without counting a request, for responses the sandbox
    /// injects (faults) rather than serves.
    pub fn peek(&self, now: Instant) -> Standing {
        let mut guard = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let window = current(&mut guard, now, self.length);
        Standing {
            limit: self.limit,
            remaining: self.limit.saturating_sub(window.used),
            reset_epoch: window.reset_epoch,
            exceeded: window.used > self.limit,
        }
    }

    /// Forgets the current window (sandbox reset).
    pub fn reset(&self) {
        *self.window.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The window `now` falls in, opening a new one when the last has ended.
fn current(slot: &mut Option<Window>, now: Instant, length: Duration) -> &mut Window {
    if slot.as_ref().is_some_and(|w| now.duration_since(w.started) >= length) {
        *slot = None;
    }
    slot.get_or_insert_with(|| {
        let end = OffsetDateTime::now_utc() + length;
        // Round up: a client that sleeps until the header's second must not
        // wake up inside the old window.
        let reset_epoch = end.unix_timestamp() + i64::from(end.nanosecond() > 0);
        Window { started: now, reset_epoch, used: 0 }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_then_refuses_until_the_window_ends() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        let first = limiter.hit(t0);
        assert_eq!((first.remaining, first.exceeded), (1, false));
        let second = limiter.hit(t0);
        assert_eq!((second.remaining, second.exceeded), (0, false));
        let third = limiter.hit(t0 + Duration::from_secs(59));
        assert_eq!((third.remaining, third.exceeded), (0, true));
        assert_eq!(third.reset_epoch, first.reset_epoch, "one window, one reset time");

        let next = limiter.hit(t0 + WINDOW);
        assert_eq!((next.remaining, next.exceeded), (1, false));
    }

    #[test]
    fn reset_is_about_a_minute_ahead_in_epoch_seconds() {
        let limiter = RateLimiter::new(10);
        let now_epoch = OffsetDateTime::now_utc().unix_timestamp();
        let s = limiter.hit(Instant::now());
        assert!((now_epoch + 59..=now_epoch + 62).contains(&s.reset_epoch), "{s:?}");
    }

    #[test]
    fn a_shorter_window_resets_sooner() {
        let limiter = RateLimiter::with_window(1, Duration::from_secs(2));
        let t0 = Instant::now();
        let now_epoch = OffsetDateTime::now_utc().unix_timestamp();
        let first = limiter.hit(t0);
        assert!((now_epoch + 2..=now_epoch + 4).contains(&first.reset_epoch), "{first:?}");
        assert!(limiter.hit(t0 + Duration::from_secs(1)).exceeded);
        assert!(!limiter.hit(t0 + Duration::from_secs(2)).exceeded, "a new window");
    }

    #[test]
    fn peek_does_not_count() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        assert_eq!(limiter.peek(t0).remaining, 1);
        assert_eq!(limiter.hit(t0).remaining, 0);
    }
}
