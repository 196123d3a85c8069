//! Every queue and exchange name, in one place, derived from one prefix.

use std::time::Duration;

use xaas_core::SyncName;

/// The names of the topology for one prefix `P` (DESIGN §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P`: the direct exchange the work queues are bound to, each by its own name.
    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }

    /// `P.requests`: `SyncRequest`s start runs.
    pub fn requests(&self) -> String {
        format!("{}.requests", self.prefix)
    }

    /// `P.fetch`: `FetchPage`s, one per Graph page to read.
    pub fn fetch(&self) -> String {
        format!("{}.fetch", self.prefix)
    }

    /// `P.pages`: raw Graph `Page`s for the mapper.
    pub fn pages(&self) -> String {
        format!("{}.pages", self.prefix)
    }

    /// `P.batches.<sync>`: Okta-format `Batch`es; single active consumer.
    pub fn batches(&self, sync: &SyncName) -> String {
        format!("{}.batches.{sync}", self.prefix)
    }

    /// `P.roster.<sync>`: the stream that keeps who the sync left active in
    /// Okta (see `xaas_core::roster`).
    pub fn roster(&self, sync: &SyncName) -> String {
        format!("{}.roster.{sync}", self.prefix)
    }

    /// `P.parked`: messages that gave up; nobody consumes it.
    pub fn parked(&self) -> String {
        format!("{}.parked", self.prefix)
    }

    /// `P.events`: the run history stream.
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// `P.retry`: the headers exchange that routes a retry to its delay tier.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// `P.retry.<tier>`, e.g. `xaas.retry.5s`.
    pub fn retry(&self, tier: Duration) -> String {
        format!("{}.retry.{}", self.prefix, tier_label(tier))
    }
}

/// A short, stable label for a delay: `250ms`, `5s`, `5m`, `2h`.
pub fn tier_label(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0ms".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design() {
        let n = Names::new("xaas");
        let sync = SyncName::parse("entra-main").unwrap();
        assert_eq!(n.exchange(), "xaas");
        assert_eq!(n.requests(), "xaas.requests");
        assert_eq!(n.batches(&sync), "xaas.batches.entra-main");
        assert_eq!(n.retry(Duration::from_secs(300)), "xaas.retry.5m");
        assert_eq!(n.retry(Duration::from_millis(1500)), "xaas.retry.1500ms");
        assert_eq!(tier_label(Duration::from_secs(7200)), "2h");
        assert_eq!(tier_label(Duration::from_secs(30)), "30s");
    }
}
