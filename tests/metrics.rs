//! The metrics (issue 11), scraped from `/metrics` of a real `xaas worker
//! all --health-listen` during real runs against the sandbox: the latency
//! histograms of Graph and Okta, the run's duration and outcome, the
//! per-sync gauges, queue depths, parked messages and a tripped guard.

mod common;
mod sync_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, Options};
use serde_json::json;
use sync_support::{completed, configure, failed};
use xaas_broker::BasicProperties;
use xaas_core::EventKind;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One sample of the exposition format: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scraped `/metrics` page.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a value: {l}"));
                let (name, labels) = match series.split_once('{') {
                    None => (series.to_string(), BTreeMap::new()),
                    Some((name, rest)) => {
                        let rest = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {l}"));
                        let labels = rest
                            .split("\",")
                            .filter(|kv| !kv.is_empty())
                            .map(|kv| {
                                let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label in {l}"));
                                (k.to_string(), v.trim_end_matches('"').to_string())
                            })
                            .collect();
                        (name.to_string(), labels)
                    }
                };
                Sample { name, labels, value }
            })
            .collect();
        Self { text, samples }
    }

    /// The samples of `name` whose labels include every pair of `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .collect()
    }

    /// The one sample of `name` with `labels`, or a panic that shows the page.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(name, labels)[..] {
            [one] => one.value,
            ref other => panic!("{} samples of {name}{labels:?}, expected one:\n{}", other.len(), self.text),
        }
    }

    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).iter().map(|s| s.value).sum()
    }

    /// The `# TYPE` of a metric family.
    fn type_of(&self, family: &str) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix(&format!("# TYPE {family} ")))
    }
}

/// Scrapes until `ready` holds (the driver follows the events stream and
/// samples the queues in the background), or panics with the last page.
async fn scrape_until(env: &Env, port: u16, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(resp) = env.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await
            && let Ok(text) = resp.text().await
        {
            let page = Scrape::parse(text);
            if ready(&page) {
                return page;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}:\n{}", page.text);
        } else {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for /metrics to answer ({what})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn world() -> Options {
    Options { seed_csv: false, generate: Some(200), page_size: 50, ..Options::default() }
}

/// `promtool check metrics` on a scraped page (tests/deploy.rs says how to
/// install promtool when it is missing).
fn promtool_check_metrics(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian's prometheus package; .ci/run installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The work queues, as `xaas_queue_messages{queue}` names them.
const QUEUES: [&str; 5] = ["requests", "fetch", "pages", "parked", "batches.demo"];

/// Starts `xaas worker all --health-listen` and waits until it serves /metrics.
async fn start_worker(env: &mut Env) -> u16 {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    env.spawn_xaas("worker", &["worker", "all", "--health-listen", &listen], &[]);
    // The sampler counts every 5 s what the worker has declared by then.
    scrape_until(env, port, "the queue sampler", |s| {
        QUEUES.iter().all(|q| !s.find("xaas_queue_messages", &[("queue", q)]).is_empty())
    })
    .await;
    port
}

/// The base name of a sample (`_bucket`, `_sum`, `_count` of a histogram).
fn family(name: &str, page: &Scrape) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && page.type_of(base) == Some("histogram")
        {
            return base.to_string();
        }
    }
    name.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_run_fills_the_latency_run_sync_and_queue_metrics_and_a_parked_message_shows() {
    let mut env = Env::start("metrics-run", world()).await;
    let port = start_worker(&mut env).await;

    let report = completed(&env.enqueue_wait(&[]).await);
    let run_id = report["run_id"].as_str().unwrap_or_else(|| panic!("report has run_id: {report}")).to_string();
    let completed_at = env
        .events()
        .await
        .into_iter()
        .find(|e| e.run_id.as_str() == run_id && matches!(e.kind, EventKind::RunCompleted { .. }))
        .expect("the run completed")
        .at;
    let page = scrape_until(&env, port, "the run's end", |s| {
        !s.find("xaas_sync_last_success_timestamp_seconds", &[("sync", "demo")]).is_empty()
            && !s.find("xaas_sync_roster_users", &[("sync", "demo")]).is_empty()
    })
    .await;

    // Real histograms (buckets, not summaries), with op and status.
    for family in
        ["xaas_okta_request_duration_seconds", "xaas_graph_request_duration_seconds", "xaas_run_duration_seconds"]
    {
        assert_eq!(page.type_of(family), Some("histogram"), "{family}:\n{}", page.text);
    }
    let bulk = page.value("xaas_okta_request_duration_seconds_count", &[("op", "bulk_upsert"), ("status", "202")]);
    assert!(bulk > 0.0, "Okta bulk loads were timed:\n{}", page.text);
    assert!(
        !page.find("xaas_okta_request_duration_seconds_bucket", &[("op", "bulk_upsert"), ("le", "+Inf")]).is_empty()
    );
    let pages = page.value("xaas_graph_request_duration_seconds_count", &[("op", "page"), ("status", "200")]);
    // 200 users, 50 a page: at least 4 page reads.
    assert!(pages >= 4.0, "Graph page reads were timed ({pages}):\n{}", page.text);
    assert!(page.value("xaas_okta_request_duration_seconds_count", &[("op", "start_import")]) >= 1.0);

    // The run: observed once, completed; the sync's gauges.
    let runs = [("sync", "demo"), ("mode", "full"), ("outcome", "completed")];
    assert_eq!(page.value("xaas_run_duration_seconds_count", &runs), 1.0, "{}", page.text);
    assert_eq!(page.sum("xaas_run_duration_seconds_count", &[]), 1.0, "one run ended, so one observation");
    assert_eq!(page.value("xaas_sync_last_run_status", &[("sync", "demo")]), 1.0);
    let success = page.value("xaas_sync_last_success_timestamp_seconds", &[("sync", "demo")]);
    let expected = completed_at.unix_timestamp_nanos() as f64 / 1e9;
    assert!((success - expected).abs() < 0.01, "last success {success} is the RunCompleted event's time {expected}");
    let active = env.okta_users().await.values().filter(|(status, _)| status == "ACTIVE").count();
    assert!(active > 0);
    assert_eq!(report["upserted"].as_u64(), Some(active as u64), "{report}");
    assert_eq!(page.value("xaas_sync_roster_users", &[("sync", "demo")]), active as f64, "roster = users in Okta");
    assert_eq!(page.value("xaas_sync_runs_in_flight", &[("sync", "demo")]), 0.0);
    assert!(page.find("xaas_sync_schedule_interval_seconds", &[]).is_empty(), "the sync has no schedule");
    assert!(page.value("xaas_bulk_requests_total", &[("op", "upsert")]) >= 1.0);
    for guard in xaas_core::run_metrics::GUARD_LABELS {
        assert_eq!(page.value("xaas_guard_tripped_total", &[("sync", "demo"), ("guard", guard)]), 0.0);
    }

    // Queue depths, by logical queue name.
    for queue in QUEUES {
        assert_eq!(page.find("xaas_queue_messages", &[("queue", queue)]).len(), 1, "{queue}:\n{}", page.text);
    }
    assert_eq!(page.value("xaas_parked_messages", &[]), 0.0);

    // Every exported metric is xaas_-prefixed, catalogued and described.
    let catalogue = xaas_workers::telemetry::metric_catalogue();
    for s in &page.samples {
        let name = family(&s.name, &page);
        assert!(name.starts_with("xaas_"), "{name} has the xaas_ prefix");
        let doc = catalogue.iter().find(|d| d.name == name).unwrap_or_else(|| panic!("{name} is not catalogued"));
        assert!(page.text.contains(&format!("# HELP {name} ")), "{name} has HELP text");
        let kind = match doc.kind {
            xaas_core::run_metrics::MetricKind::Counter => "counter",
            xaas_core::run_metrics::MetricKind::Gauge => "gauge",
            xaas_core::run_metrics::MetricKind::Histogram => "histogram",
        };
        assert_eq!(page.type_of(&name), Some(kind), "{name}");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} ends in _total");
        }
    }

    // Prometheus's own linter agrees with the names, types and help.
    promtool_check_metrics(&page.text);

    // A message no worker can read is parked; the gauge sees it.
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id("metrics-poison".into());
    env.broker.publish_raw("", &env.broker.names().requests(), b"{not json", props).await.unwrap();
    env.wait_parked(1, Duration::from_secs(60)).await;
    let page = scrape_until(&env, port, "the parked gauge", |s| {
        s.find("xaas_parked_messages", &[]).first().is_some_and(|p| p.value >= 1.0)
    })
    .await;
    assert_eq!(page.value("xaas_queue_messages", &[("queue", "parked")]), page.value("xaas_parked_messages", &[]));
    assert!(page.sum("xaas_amqp_parked_total", &[("reason", "undecodable")]) >= 1.0, "{}", page.text);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tripped_guard_fails_the_run_and_is_counted_and_the_last_success_stays() {
    let mut env = Env::start("metrics-guard", world()).await;
    // Daily at 09:00 UTC: the alert on "no success in 2 x schedule" reads
    // this interval (`all` runs no scheduler, so nothing is enqueued by it).
    configure(&env, "[syncs.demo]\nschedule = \"0 9 * * *\"");
    let port = start_worker(&mut env).await;
    completed(&env.enqueue_wait(&[]).await);
    let first = scrape_until(&env, port, "the first run's end", |s| {
        !s.find("xaas_sync_last_success_timestamp_seconds", &[("sync", "demo")]).is_empty()
    })
    .await;
    let success = first.value("xaas_sync_last_success_timestamp_seconds", &[("sync", "demo")]);

    // A source that suddenly returns nobody: the empty-source guard trips.
    assert!(env.post("/sim/seed", json!({ "generate": 0 })).await.is_success());
    let r = failed(&env.enqueue_wait(&[]).await);
    assert!(r["guard_tripped"].as_str().is_some(), "{r}");
    let page = scrape_until(&env, port, "the failed run", |s| {
        s.find("xaas_sync_last_run_status", &[("sync", "demo")]).first().is_some_and(|p| p.value == 0.0)
    })
    .await;
    let tripped = [("sync", "demo"), ("guard", "empty_source")];
    assert_eq!(page.value("xaas_guard_tripped_total", &tripped), 1.0, "{}", page.text);
    assert_eq!(page.sum("xaas_guard_tripped_total", &[]), 1.0, "no other guard counted");
    let failed_runs = [("sync", "demo"), ("mode", "full"), ("outcome", "failed")];
    assert_eq!(page.value("xaas_run_duration_seconds_count", &failed_runs), 1.0);
    assert_eq!(page.sum("xaas_run_duration_seconds_count", &[("outcome", "completed")]), 1.0);
    assert_eq!(
        page.value("xaas_sync_last_success_timestamp_seconds", &[("sync", "demo")]),
        success,
        "a failed run leaves the last success where it was"
    );
    assert_eq!(page.value("xaas_sync_runs_in_flight", &[("sync", "demo")]), 0.0);
    assert_eq!(page.value("xaas_sync_schedule_interval_seconds", &[("sync", "demo")]), 86_400.0);
    env.finish().await;
}
