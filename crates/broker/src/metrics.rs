//! Metric names (through the `metrics` facade; the binary installs the
//! Prometheus recorder).

use xaas_core::run_metrics::MetricDoc;

/// Messages confirmed by the broker. Label `queue` (routing key).
pub const PUBLISHED: &str = "xaas_amqp_published_total";
/// Messages sent to a delay tier. Labels `queue` (origin), `tier`.
pub const RETRIED: &str = "xaas_amqp_retried_total";
/// Messages parked. Labels `queue` (origin), `reason`.
pub const PARKED: &str = "xaas_amqp_parked_total";
/// Acks/rejects that could not reach the broker; those messages come again.
pub const ACK_LOST: &str = "xaas_amqp_ack_lost_total";
/// Handlers that panicked; their message was requeued.
pub const HANDLER_PANICS: &str = "xaas_amqp_handler_panics_total";
/// Connection events: label `event` = connected | blocked | unblocked | error.
pub const CONNECTION_EVENTS: &str = "xaas_amqp_connection_events_total";

/// What this crate exports.
pub const METRICS: &[MetricDoc] = &[
    MetricDoc::counter(PUBLISHED, "Messages the broker confirmed, by queue (routing key)"),
    MetricDoc::counter(RETRIED, "Messages sent to a delay tier to be tried again, by origin queue and tier"),
    MetricDoc::counter(PARKED, "Messages this process parked, by origin queue and reason"),
    MetricDoc::counter(ACK_LOST, "Acks and rejects that could not reach the broker (those messages come again)"),
    MetricDoc::counter(HANDLER_PANICS, "Handlers that panicked; their message was requeued"),
    MetricDoc::counter(CONNECTION_EVENTS, "Broker connection events: connected, blocked, unblocked, error"),
];
