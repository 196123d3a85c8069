//! What can go wrong talking to RabbitMQ, split by what the caller should do
//! about it: retry later (the broker or the network hiccupped) or stop and fix
//! something (configuration, topology, a message that can never be sent).

use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPSoftError};

/// An error from the broker layer. [`BrokerError::is_retryable`] says whether
/// trying again later can help.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the broker configuration is invalid: {0}")]
    Config(String),

    #[error(
        "cannot connect to RabbitMQ at {url}: {source}. Check that the broker is running and \
         reachable from here, and that the user, password and vhost in AMQP_URL are right"
    )]
    Connect {
        /// The URL with its password removed.
        url: String,
        #[source]
        source: lapin::Error,
    },

    #[error(
        "no connection to RabbitMQ at {url} after {after:?} ({probe}). Check that the broker \
         is running, that host and port in AMQP_URL are right, and that user, password and \
         vhost are accepted"
    )]
    ConnectTimeout { url: String, after: Duration, probe: String },

    #[error(
        "declaring {what} failed: {source}. If it says PRECONDITION_FAILED, the object already \
         exists with other arguments: delete it (or use another prefix) and start again"
    )]
    Topology {
        what: String,
        #[source]
        source: lapin::Error,
    },

    #[error("{context}: {source}")]
    Amqp {
        context: String,
        #[source]
        source: lapin::Error,
    },

    #[error(
        "RabbitMQ could not route a message to exchange {exchange:?} with routing key \
         {routing_key:?} ({reply}); the queue does not exist or is not bound. Declare the \
         topology (every worker does at start) and check the queue name"
    )]
    Unroutable { exchange: String, routing_key: String, reply: String },

    #[error(
        "RabbitMQ refused (nacked) a message to exchange {exchange:?}, routing key \
         {routing_key:?}; it could not store it. Retry later and check the broker's logs"
    )]
    Nacked { exchange: String, routing_key: String },

    #[error(
        "RabbitMQ did not confirm a message to exchange {exchange:?}, routing key \
         {routing_key:?} within {after:?}; the broker may be blocked (memory or disk alarm)"
    )]
    ConfirmTimeout { exchange: String, routing_key: String, after: Duration },

    #[error(
        "the connection to RabbitMQ did not recover within {after:?}; the worker should exit \
         and be restarted by its supervisor"
    )]
    RecoveryTimeout { after: Duration },

    #[error(
        "a message of {size} bytes is over the {limit}-byte limit; it can never be published. \
         Make it smaller (or raise max_message_bytes, staying under the broker's \
         max_message_size)"
    )]
    TooLarge { size: usize, limit: usize },

    #[error("cannot encode the message as JSON: {0}")]
    Encode(#[source] serde_json::Error),

    #[error(
        "the broker cancelled the consumer on {queue:?} (queue deleted?); restart the worker \
         once the topology is declared again"
    )]
    ConsumerCancelled { queue: String },

    #[error("reading the stream {stream:?} ended before its end marker came back; retry the read")]
    StreamEnded { stream: String },

    #[error(
        "reading the stream {stream:?} did not reach its end marker within {after:?}; the broker \
         is slow or the stream is very large. Retry later"
    )]
    StreamReadTimeout { stream: String, after: Duration },
}

impl BrokerError {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config(_) | Self::TooLarge { .. } | Self::Encode(_) => false,
            Self::Connect { .. } | Self::ConnectTimeout { .. } => true,
            Self::Topology { source, .. } => !is_precondition_failed(source),
            Self::Amqp { source, .. } => is_transient(source),
            Self::Unroutable { .. }
            | Self::Nacked { .. }
            | Self::ConfirmTimeout { .. }
            | Self::RecoveryTimeout { .. }
            | Self::ConsumerCancelled { .. }
            | Self::StreamEnded { .. }
            | Self::StreamReadTimeout { .. } => true,
        }
    }

    pub(crate) fn amqp(context: impl Into<String>) -> impl FnOnce(lapin::Error) -> Self {
        move |source| Self::Amqp { context: context.into(), source }
    }

    pub(crate) fn topology(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> Self {
        move |source| Self::Topology { what: what.into(), source }
    }
}

/// Errors that a later attempt can get past: I/O, connection state, missed
/// heartbeats, and broker-side errors other than "this will never work"
/// (NOT_FOUND, PRECONDITION_FAILED, ACCESS_REFUSED...).
pub(crate) fn is_transient(e: &lapin::Error) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => !matches!(
            p.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
                    | AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::RESOURCELOCKED
            )
        ),
        _ => e.can_be_recovered(),
    }
}

pub(crate) fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
        if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// Why a message body could not be turned into the expected type. Each case
/// calls for parking the message: redelivering it cannot fix it.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the message is {size} bytes, over the {limit}-byte limit")]
    Oversize { size: usize, limit: usize },

    #[error("the message is not valid JSON for this type: {0}")]
    InvalidJson(#[source] serde_json::Error),

    #[error(
        "the message has schema version {found}, this build speaks version {supported}; \
         run a matching build of xaas-sync to process it"
    )]
    UnknownVersion { found: u64, supported: u32 },
}
