//! Metric names (through the `metrics` facade; the binary installs the
//! Prometheus recorder).

/// Messages confirmed by the broker. Label `queue` (routing key).
pub const PUBLISHED: &str = "amqp_published_total";
/// Messages sent to a delay tier. Labels `queue` (origin), `tier`.
pub const RETRIED: &str = "amqp_retried_total";
/// Messages parked. Labels `queue` (origin), `reason`.
pub const PARKED: &str = "amqp_parked_total";
/// Acks/rejects that could not reach the broker; those messages come again.
pub const ACK_LOST: &str = "amqp_ack_lost_total";
/// Handlers that panicked; their message was requeued.
pub const HANDLER_PANICS: &str = "amqp_handler_panics_total";
/// Connection events: label `event` = connected | blocked | unblocked | error.
pub const CONNECTION_EVENTS: &str = "amqp_connection_events_total";
