//! The pipeline end to end: the real `xaas` binary as workers, the real
//! broker, the sandbox. What each test asserts is what the sandbox recorded:
//! its Okta user store and its session and request log.

mod common;

use std::time::Duration;

use common::{Env, Options, check_invariants, expected_store, rules};
use serde_json::{Value, json};
use xaas_core::EventKind;

fn report(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "enqueue --wait failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The first line is the run id; the JSON report follows.
    let json_start = stdout.find('{').expect("a JSON report");
    serde_json::from_str(&stdout[json_start..]).expect("the report is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_299_sample_users_arrive_mapped_exactly_and_a_second_run_changes_nothing() {
    let mut env = Env::start("sample", Options::default()).await;
    env.spawn_worker("all", "worker");

    let first = report(&env.enqueue_wait(&[]).await);
    assert_eq!(first["state"]["state"], "completed");

    let source = env.source_users().await;
    assert_eq!(source.len(), 300, "the sample table has 300 rows");
    let expected = expected_store(&rules(&env), &source);
    assert_eq!(expected.len(), 299, "299 real users; the blank row is not a user");
    let store = env.okta_users().await;
    assert_eq!(store.len(), 299, "exactly the 299 users, the blank row was never sent");
    for (id, profile) in &expected {
        let (status, got) = store.get(id).unwrap_or_else(|| panic!("{id} missing from Okta"));
        assert_eq!(status, "ACTIVE");
        assert_eq!(got, profile, "profile of {id}");
    }
    // The original workflow's table, field by field, for one known row.
    let neil = source.iter().find(|u| u["givenName"] == "Neil" && u["surname"] == "Gilbert").unwrap();
    let (_, p) = &store[neil["id"].as_str().unwrap()];
    assert_eq!(p["firstName"], "Neil");
    assert_eq!(p["lastName"], "Gilbert");
    assert_eq!(p["userName"], neil["userPrincipalName"]);
    assert_eq!(p["email"], neil["mail"]);
    assert_eq!(p["city"], "Tullamore");
    assert_eq!(p["countryCode"], "Ireland");
    assert_eq!(p["zipCode"], "40971");
    assert_eq!(p["title"], "Azure AD User");
    assert_eq!(p["organization"], "Okta");
    assert_eq!(p["department"], "Okta Workflows");
    assert_eq!(p["streetAddress"], "7897 South Street");

    let sessions = env.sessions().await;
    let (profiles, requests, used) = check_invariants(&sessions, Duration::from_secs(2));
    assert_eq!((profiles, requests, used), (299, 2, 1), "299 profiles packed in ⌈299/200⌉ requests, one session");
    assert_eq!(first["upserted"], 299);
    assert_eq!(first["bulk_requests"], 2);
    assert_eq!(first["sessions"][0]["status"], "COMPLETED");

    let second = report(&env.enqueue_wait(&[]).await);
    assert_eq!(second["state"]["state"], "completed");
    assert_eq!(env.okta_users().await, store, "a second full sync leaves every profile unchanged");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_five_thousand_users_keep_every_invariant() {
    let opts =
        Options { seed_csv: false, generate: Some(25_000), cooldown: Duration::from_secs(2), ..Options::default() };
    let mut env = Env::start("25k", opts).await;
    env.spawn_worker("fetcher", "fetcher");
    env.spawn_worker("mapper", "mapper-1");
    env.spawn_worker("mapper", "mapper-2");
    env.spawn_worker("uploader", "uploader");

    let out = report(&env.enqueue_wait(&[]).await);
    assert_eq!(out["state"]["state"], "completed");

    let source = env.source_users().await;
    let outside = source.iter().filter(|u| u["department"] != "Okta Workflows").count();
    assert!((6_500..8_500).contains(&outside), "about 30% outside the filter's department, got {outside}");
    let expected = expected_store(&rules(&env), &source);
    let store = env.okta_users().await;
    assert_eq!(store.len(), expected.len());
    for (id, profile) in &expected {
        let (status, got) = &store[id];
        assert_eq!((status.as_str(), got), ("ACTIVE", profile), "user {id}");
    }

    let sessions = env.sessions().await;
    let (profiles, requests, used) = check_invariants(&sessions, Duration::from_secs(2));
    assert_eq!(profiles, expected.len() as u64, "each user sent exactly once");
    assert_eq!(requests, profiles.div_ceil(200), "requests = ⌈profiles / 200⌉");
    assert_eq!(used, requests.div_ceil(50), "sessions = ⌈requests / 50⌉");
    assert!(used >= 2, "the run rolled over at least once");
    assert!(sessions.iter().all(|s| s["status"] == "COMPLETED"), "every session completed");
    assert!(out["cooldown_seconds"].as_f64().unwrap() > 0.0, "the cooldown was waited out and reported");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_uploader_takes_over_when_the_active_one_dies() {
    let opts =
        Options { seed_csv: false, generate: Some(20_000), cooldown: Duration::from_secs(1), ..Options::default() };
    let mut env = Env::start("failover", opts).await;
    env.spawn_worker("fetcher", "fetcher");
    env.spawn_worker("mapper", "mapper");
    env.spawn_worker("uploader", "uploader-a");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.spawn_worker("uploader", "uploader-b");
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let run = env.enqueue(&[]).await;
    // Mid-run: some requests loaded, the run not finished.
    env.wait_for_events("the first bulk loads", Duration::from_secs(120), |events| {
        events.iter().filter(|e| matches!(e.kind, EventKind::BulkLoaded { .. })).count() >= 10
    })
    .await;
    let active = ["uploader-a", "uploader-b"]
        .into_iter()
        .filter(|l| env.log(l).contains("uploader is active"))
        .collect::<Vec<_>>();
    assert_eq!(active.len(), 1, "exactly one uploader is active: {active:?}");
    let active = active[0];
    env.kill_worker(active);

    env.wait_for_events("the run to end", Duration::from_secs(300), |events| {
        events.iter().any(|e| {
            e.run_id.as_str() == run && matches!(e.kind, EventKind::RunCompleted { .. } | EventKind::RunFailed { .. })
        })
    })
    .await;
    let events = env.events().await;
    assert!(
        events.iter().any(|e| e.run_id.as_str() == run && matches!(e.kind, EventKind::RunCompleted { .. })),
        "the run completed"
    );
    let standby = if active == "uploader-a" { "uploader-b" } else { "uploader-a" };
    assert!(env.log(standby).contains("uploader is active"), "the standby took over");

    let expected = expected_store(&rules(&env), &env.source_users().await);
    let store = env.okta_users().await;
    assert_eq!(store.len(), expected.len());
    for (id, profile) in &expected {
        assert_eq!(&store[id].1, profile, "user {id}");
    }
    let (profiles, _, _) = check_invariants(&env.sessions().await, Duration::from_secs(1));
    assert!(profiles >= expected.len() as u64, "nothing lost");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deactivate_mode_deactivates_disabled_users_and_nobody_else() {
    let opts = Options { seed_csv: false, generate: Some(1_500), ..Options::default() };
    let mut env = Env::start("deactivate", opts).await;
    env.spawn_worker("all", "worker");
    assert_eq!(report(&env.enqueue_wait(&[]).await)["state"]["state"], "completed");
    let before = env.okta_users().await;

    // Disable 20 synced users in the source.
    let disabled: Vec<String> = before.keys().take(20).cloned().collect();
    for id in &disabled {
        assert!(env.post(&format!("/sim/users/{id}/disable"), json!({})).await.is_success());
    }
    let out = report(&env.enqueue_wait(&["--mode", "deactivate"]).await);
    assert_eq!(out["state"]["state"], "completed");

    let after = env.okta_users().await;
    assert_eq!(after.len(), before.len(), "deactivation keeps users, it does not create any");
    for (id, (status, profile)) in &after {
        if disabled.contains(id) {
            assert_eq!(status, "DEACTIVATED", "{id} was disabled in the source");
        } else {
            assert_eq!((status, profile), (&before[id].0, &before[id].1), "{id} must not change");
        }
    }
    let sessions = env.sessions().await;
    check_invariants(&sessions, Duration::from_secs(2));
    let deletes: u64 = sessions
        .iter()
        .flat_map(|s| s["requests"].as_array().unwrap().clone())
        .filter(|r| r["kind"] == "delete")
        .map(|r| r["profiles"].as_u64().unwrap())
        .sum();
    assert!(deletes >= 20, "the disabled users were sent as bulk-delete");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_newcomers_demo_prints_the_report() {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(common::bin())
            .args(["demo"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("AMQP_URL", common::amqp_url())
            .env_remove("XAAS_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    assert!(stdout.contains("Upserted           299"), "{stdout}");
    assert!(stdout.contains("holds 299 users"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oauth_service_app_with_private_key_jwt_syncs_too() {
    let mut env = Env::start("svcapp", Options { service_app: true, ..Options::default() }).await;
    env.spawn_worker("all", "worker");
    let out = report(&env.enqueue_wait(&[]).await);
    assert_eq!(out["state"]["state"], "completed");
    let expected = expected_store(&rules(&env), &env.source_users().await);
    let store = env.okta_users().await;
    assert_eq!(store.len(), 299);
    assert!(expected.iter().all(|(id, p)| &store[id].1 == p));
    env.finish().await;
}
