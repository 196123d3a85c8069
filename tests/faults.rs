//! Misbehaving services: Graph and Okta answer 5xx and 429 (with their real
//! rate-limit headers), drop connections and jitter, and the run still
//! completes exactly (DESIGN §6), with the retries visible in the run's
//! events, in its report and in the workers' metrics.
//!
//! A 5xx or a dropped connection on a bulk request is ambiguous: Okta may or
//! may not have loaded it. The uploader counts it as sent (it announced it
//! with `BulkSending`) and sends the profiles again as the next request, so
//! its count can only err high. The sandbox can make such a fault strike
//! before Okta acts (the request loads nothing and does not count towards
//! the session's 50) or after (it loads and counts, only the answer is
//! lost); one test runs each, and both must keep every invariant.

mod common;

use std::time::Duration;

use common::{Env, Options, json_report};
use serde_json::json;
use xaas_core::EventKind;

const COOLDOWN: Duration = Duration::from_secs(1);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The sum of a Prometheus counter over all its label sets.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Like [`counter`], over the label sets that contain `label` (e.g. `stage="okta"`).
fn counter_with(metrics: &str, name: &str, label: &str) -> f64 {
    let lines: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#') && l.contains(label)).collect();
    counter(&lines.join("\n"), name)
}

async fn scrape(env: &Env, port: u16) -> String {
    env.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap()
}

async fn sync_through_faults(name: &str, after_acting: bool) {
    let opts = Options {
        seed_csv: false,
        generate: Some(20_000),
        cooldown: COOLDOWN,
        import_duration: Duration::from_millis(200),
        page_size: 500,
        // Okta's windows are a minute; an injected 429 says "wait until the
        // window resets", which here is at most a few seconds away.
        rate_limit_window: Some(Duration::from_secs(2)),
        ..Options::default()
    };
    let mut env = Env::start(name, opts).await;
    let mix = json!({
        "latency_ms": 0, "jitter_ms": 40,
        "rate_5xx": 0.10, "rate_429": 0.10, "rate_drop": 0.05,
        "after_acting": after_acting,
    });
    assert!(env.put("/sim/faults", json!({"okta": mix, "graph": mix, "seed": 11})).await.is_success());

    let (fetch_port, upload_port) = (free_port(), free_port());
    let listen = |port: u16| format!("127.0.0.1:{port}");
    env.spawn_xaas("fetcher", &["worker", "fetcher", "--health-listen", &listen(fetch_port)], &[]);
    env.spawn_worker("mapper", "mapper");
    env.spawn_xaas("uploader", &["worker", "uploader", "--health-listen", &listen(upload_port)], &[]);

    let out = env.enqueue_wait(&[]).await;
    let report = json_report(&out);
    let run = String::from_utf8_lossy(&out.stdout).lines().next().unwrap().trim().to_string();
    let events: Vec<_> = env.events().await.into_iter().filter(|e| e.run_id.as_str() == run).collect();
    assert_eq!(report["state"]["state"], "completed", "{report}");

    // Exactly the right users, within every limit, despite the faults.
    let (profiles, requests, _) = env.assert_synced_exactly(&events, COOLDOWN).await;
    assert!(profiles <= requests * 200);

    // The faults really happened, on both services.
    let injected = env.get("/sim/faults").await["injected"].clone();
    eprintln!("{name}: injected {injected}; {requests} requests accepted; report retries {}", report["retries"]);
    for service in ["okta", "graph"] {
        for kind in ["rate_429", "rate_5xx", "dropped"] {
            assert!(injected[service][kind].as_u64().unwrap() > 0, "no {kind} injected into {service}: {injected}");
        }
    }
    if after_acting {
        assert!(injected["okta"]["after_acting"].as_u64().unwrap() > 0, "{injected}");
    }

    // An ambiguous bulk failure was counted as a request: the uploader
    // announced more requests than Okta accepted (before acting), or as
    // many (after acting) — never fewer.
    let announced = events.iter().filter(|e| matches!(e.kind, EventKind::BulkSending { .. })).count() as u64;
    if after_acting {
        assert!(announced >= requests, "{announced} announced, {requests} accepted");
    } else {
        assert!(announced > requests, "failed bulk requests were announced too: {announced} vs {requests}");
    }

    // The retries show in the run's history and report...
    let retrying: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Retrying { stage, .. } => Some(stage.as_str()),
            _ => None,
        })
        .collect();
    assert!(retrying.contains(&"uploader"), "the uploader's retries are in the events: {retrying:?}");
    assert_eq!(report["retries"].as_u64().unwrap(), retrying.len() as u64, "{report}");

    // ...and in the metrics: in-process retries of both clients, and the
    // uploader's own re-sends.
    let fetcher = scrape(&env, fetch_port).await;
    assert!(counter_with(&fetcher, "xaas_retries_total", "stage=\"graph\"") > 0.0, "fetcher metrics:\n{fetcher}");
    let uploader = scrape(&env, upload_port).await;
    assert!(counter_with(&uploader, "xaas_retries_total", "stage=\"okta\"") > 0.0, "uploader metrics:\n{uploader}");
    assert!(counter(&uploader, "xaas_okta_rate_limited_total") > 0.0, "uploader metrics:\n{uploader}");
    assert!(counter_with(&uploader, "xaas_retries_total", "stage=\"uploader\"") > 0.0, "uploader metrics:\n{uploader}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_striking_before_the_service_acts() {
    sync_through_faults("faults-before", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_striking_after_the_service_acted() {
    sync_through_faults("faults-after", true).await;
}
