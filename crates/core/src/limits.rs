//! Okta's Identity Sources limits (DESIGN §1), and the only way to change them:
//! downwards.

use std::time::Duration;

/// The limits a sync respects when it cuts, packs and sends bulk requests.
///
/// Build one with [`Limits::OKTA`] or [`Limits::lowered`]; the fields are
/// public so the packing code can read them, but a hand-built value that
/// raises a limit is outside the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Profiles in one bulk-upsert / bulk-delete request.
    pub profiles_per_request: usize,
    /// Bytes of one encoded bulk request body (`{"entityType":"USERS","profiles":[…]}`).
    pub bytes_per_request: usize,
    /// Bulk requests in one import session before it must be triggered.
    pub requests_per_session: u32,
    /// How long after triggering a session no new one may be created.
    pub cooldown: Duration,
}

/// The smallest byte limit accepted: below this, most real profiles could not
/// be sent at all and would all be rejected as too large.
pub const MIN_BYTES_PER_REQUEST: usize = 1024;

/// Why a limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{value} is above Okta's limit of {max}; limits can only be lowered")]
    AboveOkta { field: &'static str, value: u64, max: u64 },
    #[error("{value} is below the minimum of {min}")]
    BelowMinimum { field: &'static str, value: u64, min: u64 },
}

impl LimitError {
    /// The limit's setting name (`profiles_per_request`, …).
    pub fn field(&self) -> &'static str {
        match self {
            Self::AboveOkta { field, .. } | Self::BelowMinimum { field, .. } => field,
        }
    }
}

impl Limits {
    /// What Okta documents: 200 profiles and 200 KB per bulk request, 50 bulk
    /// requests per session, 5 minutes between a trigger and the next session.
    pub const OKTA: Limits = Limits {
        profiles_per_request: 200,
        bytes_per_request: 204_800,
        requests_per_session: 50,
        cooldown: Duration::from_secs(5 * 60),
    };

    /// Checks `wanted` against Okta's limits: each count may be lowered (a
    /// smaller batch, an earlier rollover) but never raised, since Okta would
    /// refuse what lies above.
    ///
    /// The cooldown is taken as given, in both directions. Okta's 5 minutes is
    /// a minimum the product must respect against a real org, but the sandbox
    /// runs with a cooldown of seconds in tests, and the product must match
    /// it. Setting it below 5 minutes only makes sense against the sandbox;
    /// against real Okta it costs nothing worse than retries, because a 400 on
    /// session create during the cooldown is treated as "wait and retry".
    pub fn lowered(wanted: Limits) -> Result<Limits, LimitError> {
        let okta = Self::OKTA;
        check("profiles_per_request", wanted.profiles_per_request as u64, 1, okta.profiles_per_request as u64)?;
        check(
            "bytes_per_request",
            wanted.bytes_per_request as u64,
            MIN_BYTES_PER_REQUEST as u64,
            okta.bytes_per_request as u64,
        )?;
        check("requests_per_session", u64::from(wanted.requests_per_session), 1, u64::from(okta.requests_per_session))?;
        Ok(wanted)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::OKTA
    }
}

fn check(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), LimitError> {
    if value > max {
        return Err(LimitError::AboveOkta { field, value, max });
    }
    if value < min {
        return Err(LimitError::BelowMinimum { field, value, min });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn okta_limits_are_the_documented_ones() {
        assert_eq!(Limits::OKTA.profiles_per_request, 200);
        assert_eq!(Limits::OKTA.bytes_per_request, 200 * 1024);
        assert_eq!(Limits::OKTA.requests_per_session, 50);
        assert_eq!(Limits::OKTA.cooldown, Duration::from_secs(300));
        assert_eq!(Limits::lowered(Limits::OKTA), Ok(Limits::OKTA));
    }

    #[test]
    fn limits_can_be_lowered() {
        let wanted = Limits {
            profiles_per_request: 10,
            bytes_per_request: 4096,
            requests_per_session: 3,
            cooldown: Duration::from_secs(5),
        };
        assert_eq!(Limits::lowered(wanted), Ok(wanted));
    }

    #[test]
    fn limits_cannot_be_raised() {
        let raised = Limits { profiles_per_request: 201, ..Limits::OKTA };
        let err = Limits::lowered(raised).unwrap_err();
        assert_eq!(err, LimitError::AboveOkta { field: "profiles_per_request", value: 201, max: 200 });
        assert_eq!(err.to_string(), "201 is above Okta's limit of 200; limits can only be lowered");

        let raised = Limits { bytes_per_request: 204_801, ..Limits::OKTA };
        assert_eq!(Limits::lowered(raised).unwrap_err().field(), "bytes_per_request");
        let raised = Limits { requests_per_session: 51, ..Limits::OKTA };
        assert_eq!(Limits::lowered(raised).unwrap_err().field(), "requests_per_session");
    }

    #[test]
    fn limits_that_make_no_progress_are_refused() {
        let zero = Limits { profiles_per_request: 0, ..Limits::OKTA };
        assert_eq!(
            Limits::lowered(zero),
            Err(LimitError::BelowMinimum { field: "profiles_per_request", value: 0, min: 1 })
        );
        let tiny = Limits { bytes_per_request: 100, ..Limits::OKTA };
        assert_eq!(Limits::lowered(tiny).unwrap_err().field(), "bytes_per_request");
        let zero = Limits { requests_per_session: 0, ..Limits::OKTA };
        assert_eq!(Limits::lowered(zero).unwrap_err().field(), "requests_per_session");
    }

    #[test]
    fn any_cooldown_is_accepted() {
        for secs in [0, 5, 300, 3600] {
            let l = Limits { cooldown: Duration::from_secs(secs), ..Limits::OKTA };
            assert_eq!(Limits::lowered(l), Ok(l));
        }
    }
}
