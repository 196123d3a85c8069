//! Crash points, so that tests can kill a worker at an exact step instead of
//! hoping a `kill -9` lands there.
//!
//! `XAAS_CRASH_AT=<name>[:<nth>]` makes the `nth` (default 1st) call of
//! [`hit`] with that name abort the process: no destructors, no flushing, no
//! goodbye to the broker — as abrupt as `kill -9`, which is what the
//! guarantees are about. Unset (production), a hit costs one atomic load: the
//! variable is read once, on the first hit.
//!
//! The names in use, each placed where a crash is most awkward:
//! - `fetcher.after_page_published`: the `Page` is confirmed, the next
//!   `FetchPage` is not, the `FetchPage` is unacked ("mid-page");
//! - `mapper.after_batch_published`: some batches of a page are out, not all;
//! - `uploader.after_bulk_accepted`: Okta answered 202, `BulkLoaded` is not
//!   recorded and the batches are unacked;
//! - `uploader.cooldown_wait`: waiting out Okta's cooldown after a trigger;
//! - `uploader.after_trigger`: start-import returned, `SessionTriggered` is
//!   not recorded.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a crash point.
pub const ENV: &str = "XAAS_CRASH_AT";

#[derive(Debug)]
struct Armed {
    name: String,
    nth: u64,
    hits: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

/// Passes the crash point `name`; aborts the process if it is the armed one
/// and this is its `nth` pass.
#[inline]
pub fn hit(name: &str) {
    let Some(armed) = ARMED.get_or_init(|| std::env::var(ENV).ok().and_then(|v| parse(&v))) else {
        return;
    };
    if armed.name != name {
        return;
    }
    let pass = armed.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if pass == armed.nth {
        // stderr is unbuffered: this line reaches the log before the abort.
        eprintln!("{ENV}: crash point {name} reached (pass {pass}); aborting");
        std::process::abort();
    }
}

/// `name` or `name:nth`; `None` (nothing armed) when empty or malformed, so
/// that a typo never crashes a production worker.
fn parse(value: &str) -> Option<Armed> {
    let value = value.trim();
    let (name, nth) = match value.rsplit_once(':') {
        Some((name, nth)) => (name, nth.parse::<u64>().ok().filter(|n| *n > 0)?),
        None => (value, 1),
    };
    (!name.is_empty()).then(|| Armed { name: name.to_string(), nth, hits: AtomicU64::new(0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_and_without_a_count() {
        let a = parse("uploader.after_trigger").unwrap();
        assert_eq!((a.name.as_str(), a.nth), ("uploader.after_trigger", 1));
        let b = parse(" mapper.after_batch_published:7 ").unwrap();
        assert_eq!((b.name.as_str(), b.nth), ("mapper.after_batch_published", 7));
    }

    #[test]
    fn malformed_values_arm_nothing() {
        assert!(parse("").is_none());
        assert!(parse("x:0").is_none());
        assert!(parse("x:many").is_none());
        assert!(parse(":3").is_none());
    }

    #[test]
    fn an_unarmed_point_is_passed() {
        // The test process does not set XAAS_CRASH_AT.
        hit("uploader.after_trigger");
    }
}
