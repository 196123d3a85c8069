//! Credentials: a wrong Graph secret or Okta token fails the run with a
//! reason that says what to check, and nothing reaches Okta; known secret
//! values never appear in any log line, event or error message; and each
//! process holds only the secrets its role uses.

mod common;

use std::process::Output;

use common::{Env, GRAPH_SECRET, OKTA_TOKEN, Options, json_report};
use serde_json::json;

/// Every text the run left behind: worker logs, the command's output, and
/// the events stream (as JSON, every field).
async fn everything_said(env: &Env, outputs: &[&Output]) -> Vec<(String, String)> {
    let mut texts = env.all_logs();
    for (i, out) in outputs.iter().enumerate() {
        texts.push((format!("command {i} stdout"), String::from_utf8_lossy(&out.stdout).into_owned()));
        texts.push((format!("command {i} stderr"), String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let events = env.events().await;
    assert!(!events.is_empty(), "the run left events");
    texts.push(("events".into(), serde_json::to_string(&events).unwrap()));
    texts
}

fn assert_never_said(texts: &[(String, String)], secrets: &[&str]) {
    for (source, text) in texts {
        for secret in secrets {
            assert!(!secret.is_empty());
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                panic!("a secret appears in {source}: {line}");
            }
        }
    }
}

fn failed_run(out: &Output) -> (serde_json::Value, String) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed run exits 1:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_report(out);
    assert_eq!(report["state"]["state"], "failed", "{report}");
    let reason = report["state"]["reason"].as_str().unwrap().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().any(|l| l.starts_with("error: run") && l.contains("failed")), "{stderr}");
    (report, reason)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_graph_secret_fails_the_run_saying_what_to_check_and_sends_nothing_to_okta() {
    let mut env = Env::start("wrong-graph", Options::default()).await;
    let wrong = "wrong-graph-secret-3b7e";
    env.spawn_worker_env("all", "worker", &[("XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET", Some(wrong))]);
    let out = env.enqueue_wait(&[]).await;
    let (_, reason) = failed_run(&out);
    assert!(reason.contains("client secret") || reason.contains("client_secret"), "says what to check: {reason}");
    assert!(reason.contains("sandbox-client"), "names the app whose secret was refused: {reason}");

    assert!(env.sessions().await.is_empty(), "no session was opened");
    assert!(env.okta_users().await.is_empty(), "nothing reached Okta");
    assert_eq!(env.get("/sim/okta/refused").await, json!([]), "Okta was not even asked");
    assert_never_said(&everything_said(&env, &[&out]).await, &[wrong, GRAPH_SECRET, OKTA_TOKEN]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_okta_token_fails_the_run_saying_what_to_check_and_loads_nothing() {
    let mut env = Env::start("wrong-okta", Options::default()).await;
    let wrong = "wrong-okta-token-8d1c";
    env.spawn_worker_env("all", "worker", &[("XAAS_SYNC_DEMO_OKTA_TOKEN", Some(wrong))]);
    let out = env.enqueue_wait(&[]).await;
    let (report, reason) = failed_run(&out);
    assert!(reason.contains("API token"), "says what to check: {reason}");
    assert_eq!(report["upserted"], 0);

    assert!(env.sessions().await.is_empty(), "Okta opened no session for a wrong token");
    assert!(env.okta_users().await.is_empty(), "nothing was loaded");
    let refused = env.get("/sim/okta/refused").await;
    let refused = refused.as_array().unwrap();
    assert!(!refused.is_empty() && refused.iter().all(|r| r["status"] == 401), "only 401s: {refused:?}");
    assert_never_said(&everything_said(&env, &[&out]).await, &[wrong, GRAPH_SECRET, OKTA_TOKEN]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_sync_never_writes_a_secret_anywhere() {
    let mut env = Env::start("secrets", Options::default()).await;
    // As chatty as it gets: every crate at debug, the uploader in JSON.
    let debug = [("RUST_LOG", Some("debug"))];
    env.spawn_worker_env("fetcher", "fetcher", &debug);
    env.spawn_worker_env("mapper", "mapper", &debug);
    env.spawn_worker_env("uploader", "uploader", &[("RUST_LOG", Some("debug")), ("XAAS_LOG_FORMAT", Some("json"))]);
    let out = env.enqueue_wait(&[]).await;
    let report = json_report(&out);
    assert_eq!(report["state"]["state"], "completed", "{report}");
    assert_eq!(env.okta_users().await.len(), 299);
    let status = env.run_xaas(&["status", "--json"]).await;
    assert!(status.status.success());

    // The logs are real: they cover the work that handled the secrets.
    let texts = everything_said(&env, &[&out, &status]).await;
    let logs: String = texts.iter().map(|(_, t)| t.as_str()).collect();
    for step in ["connected to RabbitMQ", "uploader is active", "DEBUG", "\"level\":\"DEBUG\""] {
        assert!(logs.contains(step), "the logs show {step:?}");
    }
    let mut secrets = vec![GRAPH_SECRET.to_string(), OKTA_TOKEN.to_string()];
    // The Graph access tokens the fetcher got are secrets too.
    let tokens: Vec<String> = xaas_sim::app::lock(&env.sim.state.entra).issued().map(String::from).collect();
    assert!(!tokens.is_empty(), "the fetcher got a Graph token");
    secrets.extend(tokens);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_never_said(&texts, &secrets);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_reads_only_its_own_secret_and_the_commands_none() {
    let mut env = Env::start("per-role", Options::default()).await;
    const GRAPH: &str = "XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET";
    const OKTA: &str = "XAAS_SYNC_DEMO_OKTA_TOKEN";
    let none = [(GRAPH, None), (OKTA, None)];
    env.spawn_worker_env("fetcher", "fetcher", &[(OKTA, None)]);
    env.spawn_worker_env("mapper", "mapper", &none);
    env.spawn_worker_env("uploader", "uploader", &[(GRAPH, None)]);

    // An operator's laptop or a CI job holds neither key.
    let out = env.enqueue_wait_env(&none).await;
    let report = json_report(&out);
    assert_eq!(report["state"]["state"], "completed", "{report}");
    assert_eq!(env.okta_users().await.len(), 299);
    for args in [&["status"][..], &["status", "--json"], &["parked", "list"], &["enqueue", "--sync", "demo"]] {
        let out = env.run_xaas_env(args, &none).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "xaas {} without secrets: {stderr}", args.join(" "));
        assert!(!stderr.contains("error"), "xaas {}: {stderr}", args.join(" "));
    }
    let run = report["run_id"].as_str().unwrap();
    let status = env.run_xaas_env(&["status"], &none).await;
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(listed.lines().any(|l| l.starts_with(run) && l.contains("completed")), "{listed}");
    for label in ["fetcher", "mapper", "uploader"] {
        assert!(env.worker_running(label), "the {label} runs without the other roles' secrets: {}", env.log(label));
    }
    env.finish().await;
}
