//! The operator's web console: what Okta's Import Monitoring shows, for
//! xaas-sync's runs. Runs per sync with their state, one run's live
//! progress, numbers, rejected users, plan and timeline, parked messages,
//! and the configured syncs.
//!
//! Server-rendered (axum and askama, whose templates escape every value)
//! with a little plain JavaScript for live updates over Server-Sent Events.
//! The pages read one in-memory index (`index`) that a single reader keeps
//! up to date from the events stream (`tail`); nothing re-reads the stream
//! per request. Read-only for everyone; actions need the admin token
//! (`auth`).

pub mod auth;
mod http;
pub mod index;
mod pages;
pub mod tail;
pub mod timeline;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use xaas_broker::Broker;
use xaas_core::config::Config;

pub use auth::{ADMIN_TOKEN_ENV, Access};

/// The default address: loopback, so that nothing outside the machine sees
/// the console unless it is told to listen elsewhere.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8088";

/// Starts the console on `listen`: the events reader and the web server,
/// both until `shutdown`. Returns the bound address (`:0` picks a port).
pub async fn start(
    config: Config,
    broker: Broker,
    listen: SocketAddr,
    access: Access,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "the console listens beyond loopback: anyone who reaches it can read every page");
    }
    if !access.enabled() {
        tracing::info!("no {ADMIN_TOKEN_ENV} set: the console is read-only");
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    if let Err(e) = broker.declare().await {
        tracing::warn!(error = %e, "console: could not declare the topology; pages may show broker errors");
    }
    let live = Arc::new(tail::LiveIndex::default());
    tokio::spawn(tail::follow(broker.clone(), live.clone(), shutdown.clone()));
    let app = http::router(live, broker, config, access, shutdown.clone());
    tokio::spawn(async move {
        let stopped = shutdown.clone();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move { stopped.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "console: the web server stopped");
        }
    });
    tracing::info!(%bound, "console serving");
    Ok(bound)
}
