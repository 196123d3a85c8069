//! Where Okta's ids come from: session ids (`aps…`) and error ids (`oae…`).
//!
//! The sandbox draws them from entropy, as Okta's look random; a simulation
//! seeds the source, so that the same calls give the same ids and a failing
//! schedule can be replayed exactly.

use rand::distr::Alphanumeric;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A source of Okta-shaped ids.
#[derive(Debug, Clone)]
pub struct IdSource {
    rng: ChaCha8Rng,
}

impl IdSource {
    /// Unpredictable ids, as the sandbox hands out.
    pub fn random() -> Self {
        Self { rng: ChaCha8Rng::from_rng(&mut rand::rng()) }
    }

    /// The same ids, in the same order, for the same seed.
    pub fn seeded(seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// A session id shaped like Okta's: `aps` + 17 characters.
    pub fn session_id(&mut self) -> String {
        session_id(&mut self.rng)
    }

    /// An `errorId` shaped like Okta's: `oae` + 22 characters.
    pub fn error_id(&mut self) -> String {
        error_id(&mut self.rng)
    }
}

fn alphanumeric(rng: &mut impl Rng, prefix: &str, n: usize) -> String {
    let mut id = String::with_capacity(prefix.len() + n);
    id.push_str(prefix);
    id.extend(rng.sample_iter(Alphanumeric).take(n).map(char::from));
    id
}

pub(crate) fn session_id(rng: &mut impl Rng) -> String {
    alphanumeric(rng, "aps", 17)
}

pub(crate) fn error_id(rng: &mut impl Rng) -> String {
    alphanumeric(rng, "oae", 22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sources_repeat_and_ids_look_like_oktas() {
        let (mut a, mut b) = (IdSource::seeded(7), IdSource::seeded(7));
        let ids = [a.session_id(), a.error_id()];
        assert_eq!(ids, [b.session_id(), b.error_id()]);
        assert!(ids[0].starts_with("aps") && ids[0].len() == 20, "{}", ids[0]);
        assert!(ids[1].starts_with("oae") && ids[1].len() == 25, "{}", ids[1]);
        assert_ne!(IdSource::seeded(8).session_id(), ids[0]);
    }
}
