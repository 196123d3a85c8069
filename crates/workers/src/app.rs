//! Start-up: the configuration and the broker connection, with errors that
//! name the setting to fix (the binary exits 2 on them, never crash-loops).

use std::path::Path;

use secrecy::ExposeSecret;
use xaas_broker::{Broker, BrokerConfig};
use xaas_core::config::Config;

use crate::error::StartupError;

/// Reads `xaas.toml` with the process environment as overrides.
pub fn load_config(path: &Path) -> Result<Config, StartupError> {
    load_config_with(path, &|k| std::env::var(k).ok())
}

/// Reads `xaas.toml` with `env` as the environment (the demo adds its own).
pub fn load_config_with(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, StartupError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StartupError::Other(format!("config file {}: {e} (pass --config PATH or set XAAS_CONFIG)", path.display()))
    })?;
    Ok(Config::parse_with_files(&text, env, &|p| std::fs::read_to_string(p))?)
}

/// Connects to the broker the configuration names.
pub async fn connect(config: &Config, connection_name: &str) -> Result<Broker, StartupError> {
    let mut cfg = BrokerConfig::new(config.broker.url.expose_secret());
    cfg.prefix.clone_from(&config.broker.prefix);
    cfg.retry_tiers.clone_from(&config.broker.retry_tiers);
    cfg.max_attempts = config.broker.max_attempts;
    cfg.connection_name = connection_name.to_string();
    // Long enough for a broker that is still starting, short enough that a
    // wrong URL is reported promptly.
    cfg.connect_timeout = std::time::Duration::from_secs(20);
    Broker::connect(cfg).await.map_err(|e| StartupError::Other(format!("broker.url: {e}")))
}
