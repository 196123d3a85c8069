//! Why a worker or command could not start. Every variant is permanent and
//! names what to fix; `main` turns them into exit code 2.

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(#[from] xaas_core::config::ConfigError),
    #[error("{0}")]
    Url(xaas_http::UrlError),
    #[error("syncs.{sync}: {error}")]
    Client { sync: String, error: String },
    #[error("{0}")]
    Broker(#[from] xaas_broker::BrokerError),
    #[error("{0}")]
    Other(String),
}
