//! The stages of xaas-sync — fetcher, mapper, uploader — each a handler that
//! tests can drive (`handle(&Deps, Msg) -> Outcome`, or the uploader's
//! `on_delivery`), plus the runtime that wires them to RabbitMQ and the
//! commands an operator runs.

pub mod admission;
pub mod alerts;
pub mod app;
pub mod commands;
pub mod deps;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod fetcher;
pub mod mapper;
pub mod render;
pub mod run_metrics;
pub mod runtime;
pub mod sample;
pub mod scheduler;
pub mod stage;
pub mod telemetry;
pub mod uploader;
pub mod users;

pub use deps::Deps;
pub use error::StartupError;
pub use runtime::Role;
