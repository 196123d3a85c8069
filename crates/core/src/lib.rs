//! The xaas-sync domain. Everything here is pure: no HTTP, no AMQP, no clock
//! reads except where a caller passes the time in. The other crates speak to
//! the outside world and hand their results to these types.

pub mod ids;
pub mod messages;

pub use ids::{ExternalId, IdError, RunId, SyncName};
pub use messages::*;
