//! What `deploy/` ships (issue 11): the Prometheus alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and
//! the rules and the Grafana dashboard use only metrics the binary exports,
//! so neither can drift from the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rules_dir() -> PathBuf {
    repo().join("deploy/prometheus")
}

/// `promtool`, or a failure that says how to get it: these checks must not
/// pass by being skipped.
fn promtool() -> Command {
    let found = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool is not installed: `apt-get install -y --no-install-recommends prometheus` (Debian) provides it; \
         .ci/run installs it when missing"
    );
    Command::new("promtool")
}

fn run(mut cmd: Command, dir: &Path) {
    let out = cmd.current_dir(dir).output().expect("promtool runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let mut check = promtool();
    check.args(["check", "rules", "xaas-rules.yml"]);
    run(check, &rules_dir());
    let mut test = promtool();
    test.args(["test", "rules", "xaas-rules.test.yml"]);
    run(test, &rules_dir());
}

/// The metric names a PromQL expression uses: identifiers that start with
/// `xaas_`, with a histogram's `_bucket`, `_sum` and `_count` taken off.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("xaas_") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |n| start + n);
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

fn exported() -> Vec<xaas_core::run_metrics::MetricDoc> {
    xaas_workers::telemetry::metric_catalogue()
}

/// Whether `name` (maybe a histogram's series) is an exported metric.
fn is_exported(name: &str) -> bool {
    use xaas_core::run_metrics::MetricKind;
    exported().iter().any(|d| {
        d.name == name
            || (d.kind == MetricKind::Histogram
                && ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(d.name)))
    })
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/xaas-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(e)) = map.get("expr") {
                    out.push(e.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    exprs
}

#[test]
fn the_dashboard_and_the_rules_use_only_metrics_the_binary_exports() {
    assert!(metric_names("rate(xaas_a_total[5m]) / foo_xaas_b").contains("xaas_a_total"));
    assert!(!metric_names("foo_xaas_b").contains("xaas_b"), "only whole identifiers");
    assert!(is_exported("xaas_run_duration_seconds_bucket") && !is_exported("xaas_no_such_metric"));

    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "the dashboard has its panels' queries: {exprs:?}");
    let rules = std::fs::read_to_string(rules_dir().join("xaas-rules.yml")).unwrap();
    let mut used = BTreeSet::new();
    for expr in exprs.iter().map(String::as_str).chain([rules.as_str()]) {
        used.extend(metric_names(expr));
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !is_exported(n)).collect();
    assert!(unknown.is_empty(), "deploy/ uses metrics the binary does not export: {unknown:?}");
    // The per-sync view the issue asks for is on the dashboard.
    for needed in [
        "xaas_graph_request_duration_seconds_bucket",
        "xaas_okta_request_duration_seconds_bucket",
        "xaas_run_duration_seconds_bucket",
        "xaas_sync_last_run_status",
        "xaas_sync_last_success_timestamp_seconds",
        "xaas_sync_roster_users",
        "xaas_sync_runs_in_flight",
        "xaas_sync_cooldown_seconds",
        "xaas_queue_messages",
        "xaas_parked_messages",
        "xaas_retries_total",
    ] {
        assert!(used.contains(needed), "the dashboard shows {needed}");
    }
}
