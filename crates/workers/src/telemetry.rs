//! Logs, `/healthz` and `/metrics`.

use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use xaas_broker::Broker;
use xaas_core::run_metrics::{MetricDoc, MetricKind};

/// Log lines as text for people, JSON for containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// Installs the global subscriber (level from `RUST_LOG`, default `info`).
/// Logs go to stderr, so that stdout carries only a command's answer.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Buckets of the HTTP latency histograms, in seconds: Graph and Okta
/// answer in tens of milliseconds, a bulk load of 200 users in about a second.
pub const REQUEST_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets of `xaas_run_duration_seconds`: from a small delta run to a
/// 100,000-user full run's hours of cooldowns.
pub const RUN_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0];

/// Every metric this binary exports, with its type and help text.
pub fn metric_catalogue() -> Vec<MetricDoc> {
    [
        xaas_graph::metrics::METRICS,
        xaas_okta::metrics::METRICS,
        xaas_broker::metrics::METRICS,
        crate::run_metrics::METRICS,
        crate::alerts::METRICS,
    ]
    .concat()
}

/// Installs the Prometheus recorder for this process, with real histograms
/// (buckets, not summaries) and every metric described.
pub fn install_metrics() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(xaas_graph::metrics::REQUEST_DURATION.into()), REQUEST_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(xaas_okta::metrics::REQUEST_DURATION.into()), REQUEST_BUCKETS)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(crate::run_metrics::RUN_DURATION.into()), RUN_BUCKETS));
    let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics stays empty");
            return None;
        }
    };
    for doc in metric_catalogue() {
        match doc.kind {
            MetricKind::Counter => metrics::describe_counter!(doc.name, doc.help),
            MetricKind::Gauge => metrics::describe_gauge!(doc.name, doc.help),
            MetricKind::Histogram => metrics::describe_histogram!(doc.name, metrics::Unit::Seconds, doc.help),
        }
    }
    Some(handle)
}

/// Serves `/healthz` (200 while the broker connection is up) and `/metrics`
/// on `addr` until the process ends. Returns the bound address.
pub async fn serve_health(
    addr: SocketAddr,
    broker: Broker,
    metrics: Option<PrometheusHandle>,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route(
            "/healthz",
            get(move || {
                let up = broker.is_connected();
                async move {
                    if up {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "broker connection down")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default();
                async move { body }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok(bound)
}
