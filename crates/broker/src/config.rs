//! How to reach the broker and how the topology is tuned.

use std::time::Duration;

use xaas_core::broker_address::BrokerAddresses;

use crate::error::BrokerError;

/// Everything the broker layer needs to know. `BrokerConfig::new(addresses)`
/// gives production defaults; tests shorten the retry tiers and use their
/// own prefix. `Debug` shows the addresses redacted.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `amqp://user:password@host:port/vhost` (`%2f` for the default vhost),
    /// one or more, tried in order. Append `?heartbeat=30` to tune heartbeats.
    pub addresses: BrokerAddresses,
    /// Starts every queue and exchange name, so several deployments (or
    /// tests) can share one vhost.
    pub prefix: String,
    /// Delay tiers for retries, shortest first: the n-th retry of a message
    /// waits `retry_tiers[n-1]` (the last tier repeats).
    pub retry_tiers: Vec<Duration>,
    /// `x-delivery-limit` of the work queues: how often the broker hands out
    /// a message whose consumer dies or rejects it before it is parked.
    pub delivery_limit: u32,
    /// How many times a message is retried through the delay tiers before
    /// it is parked.
    pub max_attempts: u32,
    /// Shown in RabbitMQ's connection list, e.g. `uploader@host-1`.
    pub connection_name: String,
    /// Bodies larger than this are refused on publish and on decode. Keep it
    /// well under the broker's `max_message_size` (16 MiB on RabbitMQ 4).
    pub max_message_bytes: usize,
    /// How long `connect` keeps trying before it gives up.
    pub connect_timeout: Duration,
    /// How long a publish waits for the broker's confirm.
    pub confirm_timeout: Duration,
    /// Retention of the events stream by age, in RabbitMQ's syntax (`7D`, `12h`).
    pub events_max_age: String,
    /// Retention of the events stream by size.
    pub events_max_bytes: u64,
}

impl BrokerConfig {
    pub const DEFAULT_URL: &'static str = "amqp://guest:guest@127.0.0.1:5672/%2f";

    /// Production defaults for the brokers at `addresses`.
    pub fn new(addresses: BrokerAddresses) -> Self {
        Self {
            addresses,
            prefix: "xaas".into(),
            retry_tiers: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(300),
            ],
            delivery_limit: 5,
            max_attempts: 8,
            connection_name: "xaas".into(),
            max_message_bytes: 4 * 1024 * 1024,
            connect_timeout: Duration::from_secs(60),
            confirm_timeout: Duration::from_secs(30),
            events_max_age: "7D".into(),
            events_max_bytes: 1024 * 1024 * 1024,
        }
    }

    /// Checks what the broker would otherwise refuse later, in a less
    /// readable way.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |why: String| Err(BrokerError::Config(why));
        if self.prefix.is_empty() || !self.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return bad(format!("prefix {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'", self.prefix));
        }
        if self.prefix.len() > 120 {
            return bad("prefix is longer than 120 characters".into());
        }
        if self.retry_tiers.is_empty() {
            return bad("retry_tiers must list at least one delay".into());
        }
        if let Some(t) = self.retry_tiers.iter().find(|t| t.is_zero() || t.as_millis() > u32::MAX as u128) {
            return bad(format!("retry tier {t:?} must be between 1ms and ~49 days"));
        }
        if self.delivery_limit == 0 {
            return bad("delivery_limit must be at least 1".into());
        }
        if self.max_message_bytes == 0 {
            return bad("max_message_bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// The local broker of the quick start, `DEFAULT_URL`.
impl Default for BrokerConfig {
    fn default() -> Self {
        Self::new(BrokerAddresses::parse(Self::DEFAULT_URL).expect("DEFAULT_URL is a valid AMQP URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_password() {
        let c = BrokerConfig::new("amqp://u:s3cret@h1/%2f,amqp://u:s3cret@h2/%2f".parse().unwrap());
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("h1") && shown.contains("h2"), "{shown}");
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let mut c = BrokerConfig::default();
        assert!(c.validate().is_ok());
        c.prefix = "has space".into();
        assert!(c.validate().unwrap_err().to_string().contains("prefix"));
        let mut c = BrokerConfig::default();
        c.retry_tiers.clear();
        assert!(c.validate().unwrap_err().to_string().contains("retry_tiers"));
    }
}
