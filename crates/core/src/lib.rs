//! The xaas-sync domain. Everything here is pure: no HTTP, no AMQP, no clock
//! reads except where a caller passes the time in. The other crates speak to
//! the outside world and hand their results to these types.

pub mod alerts;
pub mod broker_address;
pub mod changes;
pub mod config;
pub mod history;
pub mod ids;
pub mod ledger;
pub mod limits;
pub mod lineage;
pub mod mapping;
pub mod messages;
pub mod odata;
pub mod packing;
pub mod reconcile;
pub mod redact;
pub mod removal;
pub mod report;
pub mod roster;
pub mod run_metrics;
pub mod secret;
pub mod upload;
pub mod validate;

pub use ids::{ExternalId, IdError, RunId, SyncName};
pub use messages::*;
