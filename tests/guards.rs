//! The deactivation guards (issue 5): a source read that cannot be trusted
//! never deactivates anybody, and a run that would deactivate more than the
//! sync allows fails with the numbers, until an operator lets one run
//! through with `--allow-mass-deactivation`. What is asserted is what the
//! sandbox's Okta holds and received.

mod common;
mod sync_support;

use std::time::Duration;

use common::{Env, Options};
use serde_json::json;
use sync_support::{completed, configure, failed, sent};
use xaas_core::EventKind;

fn world() -> Options {
    Options { seed_csv: false, generate: Some(1_000), page_size: 100, ..Options::default() }
}

fn deactivated(store: &std::collections::BTreeMap<String, (String, serde_json::Value)>) -> usize {
    store.values().filter(|(s, _)| s == "DEACTIVATED").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emptied_source_trips_the_guard_and_deactivates_nobody() {
    let mut env = Env::start("guard-empty", world()).await;
    env.spawn_worker("all", "worker");
    completed(&env.enqueue_wait(&[]).await);
    let before = env.okta_users().await;
    let seeded = env.sessions().await.len();

    // A source that suddenly returns nobody (a wrong filter, a broken tenant).
    let emptied = env.post("/sim/seed", json!({ "generate": 0 })).await;
    assert!(emptied.is_success(), "{emptied}");
    assert!(env.source_users().await.is_empty());
    let r = failed(&env.enqueue_wait(&[]).await);
    let why = r["guard_tripped"].as_str().unwrap_or_else(|| panic!("the guard is reported: {r}"));
    assert!(why.contains(&format!("the source returned no users, but {} are active in Okta", before.len())), "{why}");
    assert!(r["state"]["reason"].as_str().unwrap().contains("nothing was deactivated"), "{r}");
    assert_eq!(env.okta_users().await, before, "nobody was deactivated");
    assert_eq!(sent(&env.sessions().await, seeded), (0, 0), "no request reached Okta");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_thirty_percent_with_a_ten_percent_limit_trips_and_the_override_works_once() {
    let mut env = Env::start("guard-share", world()).await;
    configure(&env, "[syncs.demo.guards]\nmax_deactivations_percent = 10");
    env.spawn_worker("all", "worker");
    completed(&env.enqueue_wait(&[]).await);
    let before = env.okta_users().await;
    let active = before.len();
    let seeded = env.sessions().await.len();

    let leaving: Vec<String> = before.keys().take(active * 3 / 10).cloned().collect();
    for id in &leaving {
        assert!(env.post(&format!("/sim/users/{id}/disable"), json!({})).await.is_success());
    }
    let r = failed(&env.enqueue_wait(&[]).await);
    let why = r["guard_tripped"].as_str().unwrap_or_else(|| panic!("the guard is reported: {r}"));
    let share = leaving.len() as f64 * 100.0 / active as f64;
    let numbers = format!("{} deactivations are {share:.1}% of the {active} users active in Okta", leaving.len());
    assert!(why.contains(&numbers), "{why}\nexpected: {numbers}");
    assert!(why.contains("max_deactivations_percent = 10%"), "{why}");
    assert!(why.contains("--allow-mass-deactivation"), "says what to do: {why}");
    assert_eq!(deactivated(&env.okta_users().await), 0, "nobody was deactivated");
    assert_eq!(sent(&env.sessions().await, seeded).1, 0, "no bulk-delete was sent");

    // The operator confirms: one run may deactivate them.
    let allowed = completed(&env.enqueue_wait(&["--allow-mass-deactivation"]).await);
    assert_eq!(allowed["mass_deactivation_allowed"], true, "{allowed}");
    assert!(allowed["guard_overridden"].as_str().is_some_and(|g| g.contains(&numbers)), "{allowed}");
    assert_eq!(allowed["deactivated"].as_u64(), Some(leaving.len() as u64));
    let store = env.okta_users().await;
    for (id, (status, _)) in &store {
        let expected = if leaving.contains(id) { "DEACTIVATED" } else { "ACTIVE" };
        assert_eq!(status, expected, "{id}");
    }

    // Once: the next mass removal trips the guard again.
    let more: Vec<String> =
        store.iter().filter(|(_, (s, _))| s == "ACTIVE").map(|(id, _)| id.clone()).take(200).collect();
    for id in &more {
        assert!(env.post(&format!("/sim/users/{id}/disable"), json!({})).await.is_success());
    }
    let again = failed(&env.enqueue_wait(&[]).await);
    assert!(again["guard_tripped"].as_str().is_some(), "{again}");
    assert_eq!(again["mass_deactivation_allowed"], false);
    assert_eq!(deactivated(&env.okta_users().await), leaving.len(), "the override did not carry over");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_fails_permanently_mid_full_run_deactivates_nobody() {
    let mut env = Env::start("guard-partial", world()).await;
    // Page 3 of this one run crashes its handler every time (the stage's
    // test hook), so the broker parks it: the run never sees pages 3 and on.
    let run = format!("partial-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let poisoned = format!("fetch:demo:{run}:3");
    env.spawn_worker_env("all", "crashy", &[("XAAS_PANIC_ON", Some(poisoned.as_str()))]);
    completed(&env.enqueue_wait(&[]).await);
    let before = env.okta_users().await;
    let seeded = env.sessions().await.len();

    // Five users leave: a complete run would deactivate them (within the guard).
    let leaving: Vec<String> = before.keys().rev().take(5).cloned().collect();
    for id in &leaving {
        assert!(env.delete(&format!("/sim/users/{id}")).await.is_success());
    }
    env.enqueue(&["--run-id", &run]).await;
    let parked = env.wait_parked(1, Duration::from_secs(120)).await;
    assert_eq!(parked[0].message_id.as_deref(), Some(poisoned.as_str()));
    // Everything before the failed page is accounted for by the uploader.
    env.wait_for_events("pages 0-2 accounted for", Duration::from_secs(120), |events| {
        (0..3).all(|page| {
            events.iter().any(|e| {
                e.run_id.as_str() == run
                    && match &e.kind {
                        EventKind::ProfilesUnchanged { pieces, .. } | EventKind::BulkLoaded { pieces, .. } => {
                            pieces.iter().any(|p| p.page_seq == page)
                        }
                        _ => false,
                    }
            })
        })
    })
    .await;
    let events = env.events().await;
    let mine: Vec<_> = events.iter().filter(|e| e.run_id.as_str() == run).collect();
    assert!(
        !mine.iter().any(|e| matches!(
            e.kind,
            EventKind::DeactivationsPlanned { .. } | EventKind::RunCompleted { .. } | EventKind::GuardTripped { .. }
        )),
        "partial data decides nothing"
    );
    assert_eq!(env.okta_users().await, before, "nobody was deactivated");
    assert_eq!(sent(&env.sessions().await, seeded).1, 0, "no bulk-delete was sent");

    // Once the page can be read, the same run completes and only then deactivates.
    assert_eq!(env.terminate_worker("crashy").and_then(|s| s.code()), Some(0));
    env.spawn_worker("all", "fixed");
    let replay = env.run_xaas(&["parked", "replay", "--all"]).await;
    assert!(String::from_utf8_lossy(&replay.stdout).contains("replayed 1"));
    let events = env.wait_run_end(&run, Duration::from_secs(120)).await;
    assert!(events.iter().any(|e| e.run_id.as_str() == run && matches!(e.kind, EventKind::RunCompleted { .. })));
    let after = env.okta_users().await;
    for (id, (status, _)) in &after {
        let expected = if leaving.contains(id) { "DEACTIVATED" } else { "ACTIVE" };
        assert_eq!(status, expected, "{id}");
    }
    assert_eq!(sent(&env.sessions().await, seeded).1, 5);
    env.finish().await;
}
