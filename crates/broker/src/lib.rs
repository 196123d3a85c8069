//! Everything RabbitMQ for xaas-sync (DESIGN §3, §4, §8): one connection per
//! process with automatic recovery, the topology, confirmed publishing,
//! consumers with manual acks, delayed retries and parking, and the events
//! stream.
//!
//! The delivery guarantees, in one place:
//! - a publish returns `Ok` only once the broker confirmed the message and
//!   routed it somewhere (mandatory); after a connection recovery the
//!   message is sent again, so it may arrive twice: consumers recognise
//!   duplicates by `message_id`;
//! - a message is acknowledged only after whatever replaces it (its retry
//!   copy, its parked copy, the next stage's message) is confirmed;
//! - a message whose handler keeps crashing is parked by the broker's
//!   delivery limit; one that keeps failing is parked after `max_attempts`
//!   retries. Nothing is dropped silently.
//!
//! Workers either run [`run_consumer`] with a handler returning an
//! [`Outcome`], or (the uploader, which holds several deliveries while it
//! coalesces them) read a [`Consumer`] themselves and settle with [`ack`],
//! [`Broker::retry_later`] and [`Broker::park`].

mod broker;
mod config;
mod consumer;
mod depth;
mod error;
mod events;
pub mod headers;
mod lease;
pub mod metrics;
mod names;
mod parked;
mod publisher;
mod roster;
mod run;
mod stream_read;
mod topology;

pub use broker::{Broker, RetryDecision};
pub use config::BrokerConfig;
pub use consumer::{Consumer, Incoming, ack, attempt, reject};
pub use error::{BrokerError, DecodeError};
pub use events::{EventStream, StreamOffset};
pub use lease::Lease;
pub use names::{Names, tier_label};
pub use parked::{ParkedMessage, Replay, ReplayReport};
pub use run::{Outcome, run_consumer};
pub use topology::Topology;

/// lapin types that appear in this crate's API.
pub use lapin::BasicProperties;
pub use lapin::message::Delivery;
