//! The client's metrics, through the `metrics` facade: the worker's
//! Prometheus exporter (or none, in tests) decides where they go.

use std::time::Instant;

use metrics::{counter, histogram};
use xaas_core::run_metrics::{MetricDoc, RETRIES};

pub const REQUEST_DURATION: &str = "xaas_okta_request_duration_seconds";
pub const RATE_LIMITED: &str = "xaas_okta_rate_limited_total";

/// What this crate exports (`xaas_retries_total` is listed by the workers).
pub const METRICS: &[MetricDoc] = &[
    MetricDoc::histogram(
        REQUEST_DURATION,
        "Time from sending a request to Okta to its answer's status, by op (bulk_upsert, bulk_delete, \
         create_session, start_import, get_session, list_sessions, token, ...) and HTTP status (or transport)",
    ),
    MetricDoc::counter(RATE_LIMITED, "Okta 429 answers, by op"),
];

/// One answer (or transport failure) for `op`, `since` it was sent.
pub(crate) fn request(op: &'static str, status: &str, since: Instant) {
    histogram!(REQUEST_DURATION, "op" => op, "status" => status.to_string()).record(since.elapsed().as_secs_f64());
}

pub(crate) fn rate_limited(op: &'static str) {
    counter!(RATE_LIMITED, "op" => op).increment(1);
}

/// A request repeated in process; `reason` is a fixed label.
pub(crate) fn retry(reason: &'static str) {
    counter!(RETRIES, "stage" => "okta", "reason" => reason).increment(1);
}
