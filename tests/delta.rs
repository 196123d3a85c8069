//! Sending only what changed (issue 5): delta runs from Graph's
//! `/users/delta`, change detection in full runs, reconciliation of users
//! who left the source, the dry-run plan, and the fallback to a full
//! resync when the delta token expired. Every count comes from the
//! sandbox's own record of what Okta received.

mod common;
mod sync_support;

use common::{Env, Options, check_invariants, expected_store, rules};
use sync_support::{assert_applied, change_set, completed, plan_ids, sent};
use xaas_core::EventKind;

fn world(users: usize) -> Options {
    Options { seed_csv: false, generate: Some(users), ..Options::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_users_then_a_change_set_a_delta_run_sends_exactly_the_changes() {
    let mut env = Env::start("delta-10k", world(10_000)).await;
    env.spawn_worker("all", "worker");

    // The first delta run has no deltaLink yet: it reads the full state,
    // uploads it and keeps the deltaLink.
    let seed = completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    assert!(seed["delta_link"].as_str().is_some_and(|l| l.contains("deltatoken")), "{seed}");
    let before = env.okta_users().await;
    let expected = expected_store(&rules(&env), &env.source_users().await);
    assert_eq!(before.len(), expected.len());
    assert!(before.iter().all(|(id, (s, p))| s == "ACTIVE" && p == &expected[id]), "the seed uploaded everyone");
    let seeded = env.sessions().await.len();

    let set = change_set(&env, 100, 20, 5).await;

    // A dry run sends nothing, and its plan is exactly the change set.
    let dry = completed(&env.enqueue_wait(&["--mode", "delta", "--dry-run"]).await);
    assert_eq!(env.sessions().await.len(), seeded, "a dry run opens no session");
    assert_eq!(env.okta_users().await, before, "a dry run changes nothing in Okta");
    let plan = &dry["plan"];
    let mut changed = set.changed.clone();
    changed.sort();
    assert_eq!(plan_ids(plan, "update"), changed, "the 100 changed profiles are updates");
    assert_eq!(plan_ids(plan, "deactivate"), set.gone(), "the 20 disabled and 5 deleted are deactivations");
    assert_eq!(
        (plan["create"].as_u64(), plan["update"].as_u64(), plan["deactivate"].as_u64()),
        (Some(0), Some(100), Some(25))
    );
    for u in plan["users"].as_array().unwrap().iter().filter(|u| u["action"] == "update") {
        assert_eq!(u["changed"], serde_json::json!(["city"]), "the changed attribute is named: {u}");
    }
    // The same plan, read back by `xaas status RUN --plan --json`.
    let run = dry["run_id"].as_str().unwrap();
    let out = env.run_xaas(&["status", run, "--plan", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status_plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&status_plan, plan);
    let text = env.run_xaas(&["status", run, "--plan"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("0 create, 100 update, 25 deactivate"), "{text}");
    assert!(text.contains(&format!("update     {}  (city)", changed[0])), "{text}");

    // The delta run: exactly 100 upserts and 25 deletes reach Okta.
    let delta = completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    let sessions = env.sessions().await;
    assert_eq!(sent(&sessions, seeded), (100, 25), "upserts and deletes of the delta run");
    check_invariants(&sessions, std::time::Duration::from_secs(2));
    assert_eq!((delta["upserted"].as_u64(), delta["deactivated"].as_u64()), (Some(100), Some(25)), "{delta}");
    assert_ne!(delta["delta_link"], seed["delta_link"], "the run kept a new deltaLink");
    assert_applied(&env, &before, &set).await;

    // Nothing changed since: the next delta run opens no session at all.
    let after = sessions.len();
    let quiet = completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    assert_eq!(env.sessions().await.len(), after, "no change, no session");
    assert_eq!((quiet["upserted"].as_u64(), quiet["deactivated"].as_u64()), (Some(0), Some(0)), "{quiet}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_run_after_the_change_set_sends_the_same_changes_and_deactivates_who_left() {
    let mut env = Env::start("full-10k", world(10_000)).await;
    env.spawn_worker("all", "worker");
    completed(&env.enqueue_wait(&[]).await);
    let before = env.okta_users().await;
    let seeded = env.sessions().await.len();

    let set = change_set(&env, 100, 20, 5).await;
    let full = completed(&env.enqueue_wait(&[]).await);
    let sessions = env.sessions().await;
    // Graph's filter returns enabled users only: the disabled and the
    // deleted are missing from the source, and are deactivated as such.
    assert_eq!(sent(&sessions, seeded), (100, 25), "not 10,000 profiles: the changes");
    check_invariants(&sessions, std::time::Duration::from_secs(2));
    assert!(full["unchanged"].as_u64().unwrap() > 5_500, "the rest was unchanged: {full}");
    assert_applied(&env, &before, &set).await;

    // --force sends everyone again.
    let forced = completed(&env.enqueue_wait(&["--force"]).await);
    let active = env.okta_users().await.values().filter(|(s, _)| s == "ACTIVE").count() as u64;
    assert_eq!(forced["upserted"].as_u64(), Some(active), "{forced}");
    assert_eq!(forced["deactivated"].as_u64(), Some(0));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_delta_token_falls_back_to_a_full_resync_with_the_right_result() {
    let mut env = Env::start("delta-expired", world(1_000)).await;
    env.spawn_worker("all", "worker");
    completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    let before = env.okta_users().await;
    let seeded = env.sessions().await.len();

    let set = change_set(&env, 3, 2, 1).await;
    assert!(env.post("/sim/graph/expire-delta-tokens", serde_json::json!({})).await.is_success());
    let resync = completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    let why = resync["full_resync"].as_str().unwrap_or_else(|| panic!("the report says it resynced: {resync}"));
    assert!(why.contains("delta token"), "{why}");
    // The full state came back, yet only the changes were sent: the roster
    // knew everyone else; and who left was reconciled away.
    assert_eq!(sent(&env.sessions().await, seeded), (3, 3));
    assert_applied(&env, &before, &set).await;
    let events = env.events().await;
    let run = resync["run_id"].as_str().unwrap();
    assert!(events.iter().any(|e| e.run_id.as_str() == run && matches!(e.kind, EventKind::DeltaResync { .. })));

    // The resync stored a fresh deltaLink: the next delta run reads changes only.
    let after = env.sessions().await.len();
    let next = completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    assert!(next["full_resync"].is_null(), "{next}");
    assert_eq!(next["users_read"].as_u64(), Some(0), "an unchanged directory has no delta: {next}");
    assert_eq!(env.sessions().await.len(), after);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_run_deactivates_users_who_moved_out_of_the_filter() {
    let mut env = Env::start("delta-moved", Options::default()).await;
    env.spawn_worker("all", "worker");
    completed(&env.enqueue_wait(&["--mode", "delta"]).await);
    let before = env.okta_users().await;
    assert_eq!(before.len(), 299);
    let seeded = env.sessions().await.len();

    // Three synced users change department: they leave the sync's scope.
    let moved: Vec<String> = before.keys().take(3).cloned().collect();
    for id in &moved {
        let status = env.patch(&format!("/sim/users/{id}"), serde_json::json!({"department": "Sales"})).await;
        assert!(status.is_success(), "{status}");
    }
    completed(&env.enqueue_wait(&["--mode", "delta"]).await);

    let after = env.okta_users().await;
    for (id, (status, profile)) in &after {
        if moved.contains(id) {
            assert_eq!(status, "DEACTIVATED", "{id} left the filter's department");
        } else {
            assert_eq!((status, profile), (&before[id].0, &before[id].1), "{id} must not change");
        }
    }
    assert_eq!(sent(&env.sessions().await, seeded), (0, 3), "exactly the 3 moved users, as bulk-delete");
    env.finish().await;
}
