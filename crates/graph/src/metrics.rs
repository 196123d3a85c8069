//! The Graph client's metrics, through the `metrics` facade (the worker
//! installs the Prometheus recorder; without one they cost nothing).

use std::time::Instant;

use xaas_core::run_metrics::{MetricDoc, RETRIES};

pub const REQUEST_DURATION: &str = "xaas_graph_request_duration_seconds";
pub const TOKEN_REFRESHES: &str = "xaas_graph_token_refreshes_total";

/// What this crate exports (`xaas_retries_total` is listed by the workers).
pub const METRICS: &[MetricDoc] = &[
    MetricDoc::histogram(
        REQUEST_DURATION,
        "Time from sending a request to Microsoft Graph or its token endpoint to its answer's status, by op \
         (page, create, token) and HTTP status (or transport)",
    ),
    MetricDoc::counter(TOKEN_REFRESHES, "Access tokens obtained from the Microsoft identity platform"),
];

/// One request's latency, labelled with its HTTP status, or `transport`
/// when no answer came; returns the label.
pub(crate) fn observe<T>(op: &'static str, sent: &Result<reqwest::Response, T>, since: Instant) -> String {
    let status = sent.as_ref().map_or_else(|_| "transport".to_owned(), |r| r.status().as_str().to_owned());
    metrics::histogram!(REQUEST_DURATION, "op" => op, "status" => status.clone()).record(since.elapsed().as_secs_f64());
    status
}

/// A retry inside the client; `reason` is `GraphError::kind`.
pub(crate) fn retry(reason: &'static str) {
    metrics::counter!(RETRIES, "stage" => "graph", "reason" => reason).increment(1);
}
