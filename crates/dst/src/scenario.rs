//! What one schedule is made of, drawn from its seed: the directory, the
//! limits, the workers, the runs and how hostile the world is.

use std::time::Duration;

use xaas_core::Mode;
use xaas_core::limits::Limits;
use xaas_core::upload::{RetryBudget, Sabotage};

use crate::rng::Rng;

/// How often things go wrong, per step where they can.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// A worker dies (its unacked deliveries go back).
    pub crash: f64,
    /// The active uploader's connection is closed by the broker.
    pub connection_loss: f64,
    /// An Okta call fails with a 5xx before Okta acts.
    pub okta_error: f64,
    /// Okta acts, and its answer is lost.
    pub okta_lost_reply: f64,
    /// A Graph read fails with a 5xx.
    pub graph_error: f64,
    /// A publish is delivered twice.
    pub duplicate: f64,
    /// The directory changes between two steps of a run.
    pub change: f64,
    /// At most this many crashes and connection losses in the schedule.
    pub max_disruptions: u32,
    /// Each uploader host's clock is off Okta's by up to this much.
    pub max_skew: Duration,
}

/// What the harness does wrong on purpose (the machine's own sabotage is
/// in [`Scenario::sabotage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HarnessSabotage {
    /// An uploader whose connection is lost is never told: it goes on
    /// acting on what it held, its records landing after the reconnect.
    pub no_fence: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub seed: u64,
    pub users: usize,
    pub page_size: u16,
    pub limits: Limits,
    pub retry: RetryBudget,
    pub runs: Vec<Mode>,
    pub fetchers: usize,
    pub mappers: usize,
    pub uploaders: usize,
    pub faults: Faults,
    pub sabotage: Sabotage,
    pub harness: HarnessSabotage,
}

impl Scenario {
    /// The schedule of `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5ce4_a210);
        let users = rng.between(6, 36) as usize;
        let limits = Limits {
            profiles_per_request: rng.between(1, 4) as usize,
            bytes_per_request: *rng.pick(&[204_800, 204_800, 204_800, 1_200]),
            requests_per_session: rng.between(1, 4) as u32,
            cooldown: Duration::from_secs(rng.between(20, 300)),
        };
        let mut runs = vec![Mode::Full];
        for _ in 0..rng.below(3) {
            runs.push(*rng.pick(&[Mode::Full, Mode::Delta, Mode::Delta]));
        }
        let calm = rng.chance(0.15);
        let scale = if calm { 0.0 } else { 1.0 };
        let faults = Faults {
            crash: 0.01 * scale,
            connection_loss: 0.008 * scale,
            okta_error: 0.04 * scale,
            okta_lost_reply: 0.03 * scale,
            graph_error: 0.03 * scale,
            duplicate: 0.03 * scale,
            change: 0.05 * scale,
            max_disruptions: rng.between(0, 4) as u32,
            max_skew: Duration::from_secs(rng.between(0, 90)),
        };
        Scenario {
            seed,
            users,
            page_size: rng.between(2, 8) as u16,
            limits,
            retry: RetryBudget { attempts: 6, within: Duration::from_secs(900) },
            runs,
            fetchers: rng.between(1, 2) as usize,
            mappers: rng.between(1, 3) as usize,
            uploaders: rng.between(1, 3) as usize,
            faults,
            sabotage: Sabotage::NONE,
            harness: HarnessSabotage::default(),
        }
    }
}
