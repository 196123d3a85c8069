//! The sandbox's time: what its rules are given, and the one clock it reads.
//!
//! The rules never read a clock; they are passed a [`Moment`], which carries
//! two readings. `elapsed` is monotonic time since the
//! clock's origin, which is what the rules measure (cooldown, idle expiry,
//! import duration), so a wall-clock jump cannot reopen a cooldown. `wall` is
//! Okta's wall clock, which is what the API reports (timestamps, `Date`).
//! The sandbox reads both from its [`Clock`] (Okta for everything, Graph for
//! delta-token lifetimes); a simulation builds moments from a virtual clock
//! with [`Moment::origin`] and [`Moment::plus`], so five-minute cooldowns
//! cost nothing and the same calls give the same answers.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::format_description;
use tokio::time::Instant;

/// A point in time on Okta's two clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// Monotonic time since the clock's origin.
    pub elapsed: Duration,
    /// Okta's wall clock at that moment.
    pub wall: OffsetDateTime,
}

impl Moment {
    /// The origin of a virtual clock whose wall clock then reads `wall`.
    pub fn origin(wall: OffsetDateTime) -> Self {
        Self { elapsed: Duration::ZERO, wall }
    }

    /// `d` later, on both clocks.
    pub fn plus(self, d: Duration) -> Self {
        Self { elapsed: self.elapsed + d, wall: self.wall + d }
    }

    /// The wall clock as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`), the
    /// `Date` header of every Okta answer.
    pub fn http_date(self) -> String {
        http_date(self.wall)
    }
}

/// `t` as an IMF-fixdate (RFC 9110 §5.6.7), always in GMT.
pub fn http_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"))
        .unwrap_or_default()
}

/// The sandbox's clock: tokio's monotonic clock (so a paused test runtime
/// pauses Okta too) and the system's wall clock, unless a test pins it.
#[derive(Debug)]
pub struct Clock {
    origin: Instant,
    pinned: Mutex<Option<Moment>>,
}

impl Clock {
    /// A running clock whose origin is now.
    pub fn start() -> Self {
        Self { origin: Instant::now(), pinned: Mutex::new(None) }
    }

    pub fn now(&self) -> Moment {
        match *crate::app::lock(&self.pinned) {
            Some(at) => at,
            None => Moment { elapsed: self.origin.elapsed(), wall: OffsetDateTime::now_utc() },
        }
    }

    /// Stops the clock at `at`: every reading gives `at` until the next
    /// `pin` or [`Clock::resume`]. Lets a test hand the sandbox exactly the
    /// moments it hands the plain functions, and compare the answers whole.
    pub fn pin(&self, at: Moment) {
        *crate::app::lock(&self.pinned) = Some(at);
    }

    /// Back to the real clocks.
    pub fn resume(&self) {
        *crate::app::lock(&self.pinned) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn http_dates_are_imf_fixdates_in_gmt() {
        assert_eq!(http_date(datetime!(1994-11-06 08:49:37.250 UTC)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(datetime!(1994-11-06 09:49:37 +01:00)), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn a_pinned_clock_stands_still_until_resumed() {
        let clock = Clock::start();
        let at = Moment::origin(datetime!(2030-01-01 00:00 UTC)).plus(Duration::from_secs(5));
        clock.pin(at);
        assert_eq!((clock.now(), clock.now()), (at, at));
        clock.resume();
        assert!(clock.now().wall > datetime!(2025-01-01 00:00 UTC));
    }

    #[test]
    fn moments_move_both_clocks() {
        let t0 = Moment::origin(datetime!(2024-01-01 00:00 UTC));
        let t1 = t0.plus(Duration::from_secs(90));
        assert_eq!(t1.elapsed, Duration::from_secs(90));
        assert_eq!(t1.wall, datetime!(2024-01-01 00:01:30 UTC));
    }
}
