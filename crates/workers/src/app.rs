//! Start-up: the configuration and the broker connection, with errors that
//! name the setting to fix (the binary exits 2 on them, never crash-loops).

use std::path::Path;

use xaas_broker::{Broker, BrokerConfig};
use xaas_core::config::{Config, EnvLookup};

use crate::error::StartupError;

/// Reads `xaas.toml` with the process environment as overrides. No secret
/// is read: the roles that use one resolve it (`deps::Clients::build`).
pub fn load_config(path: &Path) -> Result<Config, StartupError> {
    load_config_with(path, &process_env)
}

/// Reads `xaas.toml` with `env` as the environment (the demo adds its own).
pub fn load_config_with(path: &Path, env: EnvLookup<'_>) -> Result<Config, StartupError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StartupError::Other(format!("config file {}: {e} (pass --config PATH or set XAAS_CONFIG)", path.display()))
    })?;
    Ok(Config::parse(&text, env)?)
}

/// The process environment, as `Config::parse` and secrets read it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Connects to the first broker of the configuration that answers.
pub async fn connect(config: &Config, connection_name: &str) -> Result<Broker, StartupError> {
    let mut cfg = BrokerConfig::new(config.broker.addresses.clone());
    cfg.prefix.clone_from(&config.broker.prefix);
    cfg.retry_tiers.clone_from(&config.broker.retry_tiers);
    cfg.max_attempts = config.broker.max_attempts;
    cfg.connection_name = connection_name.to_string();
    cfg.connect_timeout = config.broker.connect_timeout;
    Broker::connect(cfg).await.map_err(|e| StartupError::Other(format!("broker.url: {e}")))
}
