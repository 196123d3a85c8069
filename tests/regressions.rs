//! Regression tests of issue 8's defects 4 and 5, against the real broker,
//! the `xaas` binary and the sandbox: two syncs on one identity source, and a
//! delta run with an unknown roster; plus the override and the source filter
//! the issue also names. Each failed on the code before the fixes
//! (`XAAS_TEST_BIN` runs them against another build). Defects 1 to 3 and 6
//! to 7 are in `regressions_interleavings.rs`, `regressions_uploader.rs` and
//! `regressions_leadership.rs`.

mod common;
mod sync_support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Env, Options};
use sync_support::{completed, failed, sent};
use xaas_core::SyncName;

/// Runs `cmd` to its end, or kills it after `limit` (a command that should
/// have refused to start but serves instead); `None` then.
fn output_within(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("xaas starts");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait_with_output();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

/// Defect 4: two syncs loading into one identity source would load into
/// each other's sessions. Every command that reads the configuration
/// refuses it at start: exit 2, one line naming both syncs.
#[tokio::test(flavor = "multi_thread")]
async fn two_syncs_on_one_identity_source_are_refused_by_every_command() {
    let env = Env::start("reg-one-source", Options::default()).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    let demo = &text[text.find("[syncs.demo.source]").expect("the demo sync's tables")..];
    let twice = format!("{text}\n{}", demo.replace("syncs.demo", "syncs.other"));
    assert!(twice.matches("identity_source_id = \"0oasandbox00000000001\"").count() == 2, "{twice}");
    std::fs::write(&env.config, twice).unwrap();
    // A build that accepts the configuration declares the other sync's queues.
    env.broker.delete_sync(&SyncName::parse("other").unwrap());

    let commands: [&[&str]; 6] = [
        &["worker", "all"],
        &["worker", "uploader"],
        &["enqueue", "--sync", "demo"],
        &["status"],
        &["parked", "list"],
        &["console", "--listen", "127.0.0.1:0"],
    ];
    for args in commands {
        let mut cmd = env.xaas();
        cmd.env("XAAS_SYNC_OTHER_GRAPH_CLIENT_SECRET", common::GRAPH_SECRET)
            .env("XAAS_SYNC_OTHER_OKTA_TOKEN", common::OKTA_TOKEN)
            .args(args);
        let out = tokio::task::spawn_blocking(move || output_within(cmd, Duration::from_secs(15))).await.unwrap();
        let Some(out) = out else { panic!("xaas {args:?} started with two syncs on one identity source") };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "xaas {args:?} exits 2; stderr:\n{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "xaas {args:?}: one line on stderr, got:\n{stderr}");
        assert!(
            lines[0].starts_with(
                "error: syncs.other.target.identity_source_id: the identity source 0oasandbox00000000001 is \
                 already synced by syncs.demo;"
            ),
            "xaas {args:?} names both syncs: {stderr}"
        );
    }
    env.finish().await;
}

fn world(users: usize) -> Options {
    Options { seed_csv: false, generate: Some(users), page_size: 100, ..Options::default() }
}

/// The vhost of the test broker, for `rabbitmqctl -p`.
fn vhost(amqp: &str) -> String {
    let path = amqp.rsplit_once('/').map_or("", |(_, v)| v);
    if path.is_empty() { "/".into() } else { path.replace("%2f", "/").replace("%2F", "/") }
}

/// Deletes the sync's roster stream, as retention or an operator might.
fn lose_the_roster(env: &Env) {
    let stream = env.broker.names().roster(&SyncName::parse("demo").unwrap());
    let out = Command::new("rabbitmqctl")
        .args(["-p", &vhost(&env.amqp), "delete_queue", &stream])
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "deleting {stream}: {}", String::from_utf8_lossy(&out.stderr));
}

fn deactivated(store: &std::collections::BTreeMap<String, (String, serde_json::Value)>) -> Vec<String> {
    store.iter().filter(|(_, (s, _))| s == "DEACTIVATED").map(|(id, _)| id.clone()).collect()
}

/// Defect 5: a delta run whose roster is unknown (its stream lost, the
/// deltaLink kept) cannot tell who is active in Okta, and the share guard
/// has nothing to divide by. It fails closed, says to run a full sync, and
/// deactivates nobody, even with --allow-mass-deactivation.
#[tokio::test(flavor = "multi_thread")]
async fn a_delta_run_with_an_unknown_roster_fails_closed() {
    let mut env = Env::start("reg-unknown-roster", world(300)).await;
    env.spawn_worker("all", "worker");
    let seed = completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    assert!(seed["delta_link"].as_str().is_some(), "the first delta run keeps its deltaLink: {seed}");
    let before = env.okta_users().await;
    let seeded = env.sessions().await.len();

    // The roster stream is lost while the uploader is down; the events
    // stream still holds the deltaLink.
    assert_eq!(env.terminate_worker("worker").and_then(|s| s.code()), Some(0));
    lose_the_roster(&env);
    let leaving: Vec<String> = before.keys().take(3).cloned().collect();
    for id in &leaving {
        assert!(env.post(&format!("/sim/users/{id}/disable"), serde_json::json!({})).await.is_success());
    }
    env.spawn_worker("all", "restarted");

    for extra in [&["--mode", "delta"][..], &["--mode", "delta", "--allow-mass-deactivation"]] {
        let r = failed(&env.enqueue_wait(extra).await);
        let why = r["guard_tripped"].as_str().unwrap_or_else(|| panic!("the guard is reported: {r}"));
        assert!(why.contains("the roster of who this sync left active in Okta is unknown"), "{why}");
        assert!(why.contains("the 3 deactivations this run asked for"), "{why}");
        assert!(why.contains("Run a full sync (xaas enqueue --sync demo --mode full)"), "says what to do: {why}");
        assert!(r["state"]["reason"].as_str().is_some_and(|s| s.contains("is unknown")), "{r}");
        assert_eq!(deactivated(&env.okta_users().await), Vec::<String>::new(), "nobody was deactivated ({extra:?})");
        assert_eq!(sent(&env.sessions().await, seeded).1, 0, "no bulk-delete reached Okta ({extra:?})");
    }

    // What the reason says to do works: a full sync rebuilds the roster,
    // and delta runs complete again.
    completed(&env.enqueue_wait(&["--mode", "full"]).await);
    completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    env.finish().await;
}

/// `--allow-mass-deactivation` lifts the count guards only: a source that
/// suddenly returns nobody never deactivates everyone.
#[tokio::test(flavor = "multi_thread")]
async fn the_override_does_not_let_an_empty_source_deactivate_everyone() {
    let mut env = Env::start("reg-empty-override", world(300)).await;
    env.spawn_worker("all", "worker");
    completed(&env.enqueue_wait(&[]).await);
    let before = env.okta_users().await;
    let seeded = env.sessions().await.len();

    let emptied = env.post("/sim/seed", serde_json::json!({ "generate": 0 })).await;
    assert!(emptied.is_success(), "{emptied}");
    let r = failed(&env.enqueue_wait(&["--allow-mass-deactivation"]).await);
    let why = r["guard_tripped"].as_str().unwrap_or_else(|| panic!("the guard is reported: {r}"));
    assert!(why.contains(&format!("the source returned no users, but {} are active in Okta", before.len())), "{why}");
    assert!(why.contains("--allow-mass-deactivation does not lift this"), "{why}");
    assert_eq!(env.okta_users().await, before, "nobody was deactivated");
    assert_eq!(sent(&env.sessions().await, seeded), (0, 0), "no request reached Okta");
    env.finish().await;
}

/// What a full sync with the filter `country eq 'Canada'` leaves in Okta.
async fn in_canada(env: &Env) -> std::collections::BTreeMap<String, serde_json::Value> {
    let source: Vec<serde_json::Value> =
        env.source_users().await.into_iter().filter(|u| u["country"] == "Canada").collect();
    common::expected_store(&common::rules(env), &source)
}

/// Delta runs apply the sync's `source.filter` (Graph's delta takes none):
/// a delta run upserts nobody outside it, so the full run after it has
/// nobody to deactivate. Before, delta upserted everyone and full runs
/// deactivated them again: users outside a custom filter flapped.
#[tokio::test(flavor = "multi_thread")]
async fn a_delta_run_keeps_to_the_source_filter_and_a_full_run_after_it_deactivates_nobody() {
    let mut env = Env::start("reg-delta-filter", world(300)).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    let custom = "filter = \"accountEnabled eq true and country eq 'Canada'\"";
    std::fs::write(&env.config, text.replace("filter = \"accountEnabled eq true\"", custom)).unwrap();
    env.spawn_worker("all", "worker");
    let expected = in_canada(&env).await;
    assert!(expected.len() >= 5, "the world has users in the filter: {}", expected.len());

    // The first delta run reads the full state, without Graph's $filter.
    completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    let store = env.okta_users().await;
    let outside: Vec<&String> = store.keys().filter(|id| !expected.contains_key(*id)).take(5).collect();
    assert!(
        outside.is_empty(),
        "the delta run upserted {} users outside the filter, e.g. {outside:?}",
        store.len() - expected.len()
    );
    assert_eq!(store.len(), expected.len());

    // Changes to one user inside and one outside the filter.
    let source = env.source_users().await;
    let enabled = |u: &&serde_json::Value| u["accountEnabled"] == true && u["department"] == "Okta Workflows";
    let inside = source.iter().filter(enabled).find(|u| u["country"] == "Canada").unwrap()["id"].clone();
    let outsider = source.iter().filter(enabled).find(|u| u["country"] != "Canada").unwrap()["id"].clone();
    for id in [&inside, &outsider] {
        let id = id.as_str().unwrap();
        assert!(env.patch(&format!("/sim/users/{id}"), serde_json::json!({"city": "Changed"})).await.is_success());
    }
    let delta = completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    assert_eq!(delta["upserted"].as_u64(), Some(1), "only the user inside the filter: {delta}");
    let store = env.okta_users().await;
    assert!(!store.contains_key(outsider.as_str().unwrap()), "the changed user outside the filter was upserted");
    assert_eq!(store[inside.as_str().unwrap()].1["city"], "Changed");

    // A full run reads through Graph's $filter: nobody to deactivate.
    let full = completed(&env.enqueue_wait(&["--mode", "full"]).await);
    assert_eq!(full["deactivated"].as_u64(), Some(0), "{full}");
    let store = env.okta_users().await;
    assert_eq!(store.len(), in_canada(&env).await.len());
    assert!(store.values().all(|(status, _)| status == "ACTIVE"), "nobody was deactivated");
    env.finish().await;
}
