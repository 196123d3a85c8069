//! The client's counters, through the `metrics` facade: the worker's
//! Prometheus exporter (or none, in tests) decides where they go.

use metrics::{Unit, counter, describe_counter};

pub(crate) const REQUESTS: &str = "okta_requests_total";
pub(crate) const RATE_LIMITED: &str = "okta_rate_limited_total";
pub(crate) const RETRIES: &str = "okta_retries_total";

/// Registers the descriptions; call once after installing the recorder.
pub fn describe_metrics() {
    describe_counter!(REQUESTS, Unit::Count, "HTTP requests to Okta, by operation and status (or `transport`)");
    describe_counter!(RATE_LIMITED, Unit::Count, "Okta 429 answers, by operation");
    describe_counter!(RETRIES, Unit::Count, "Requests to Okta repeated in process, by operation and reason");
}

/// One answer (or transport failure) for `op`.
pub(crate) fn request(op: &'static str, status: &str) {
    counter!(REQUESTS, "op" => op, "status" => status.to_string()).increment(1);
}

pub(crate) fn rate_limited(op: &'static str) {
    counter!(RATE_LIMITED, "op" => op).increment(1);
}

pub(crate) fn retry(op: &'static str, reason: &'static str) {
    counter!(RETRIES, "op" => op, "reason" => reason).increment(1);
}
