//! `xaas users deactivate` (the original workflow's "Remove All Users from
//! Okta" and "Remove Single User from Okta") against the sandbox: it asks
//! for `--yes`, touches only users this sync's roster holds, sends exactly
//! whom it was told through the uploader, and a dry run sends nothing.

mod common;
mod sync_support;

use std::process::Output;

use common::{Env, Options};
use sync_support::{completed, sent};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

async fn deactivate(env: &Env, args: &[&str]) -> Output {
    let mut cmd = env.xaas();
    cmd.args(["users", "deactivate", "--sync", "demo", "--json", "--timeout", "5m"]).args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("xaas runs")).await.unwrap()
}

fn active(store: &std::collections::BTreeMap<String, (String, serde_json::Value)>) -> Vec<String> {
    store.iter().filter(|(_, (s, _))| s == "ACTIVE").map(|(id, _)| id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn it_refuses_without_yes_and_for_a_user_the_sync_does_not_own_and_a_dry_run_sends_nothing() {
    let mut env = Env::start("users-refuse", Options::default()).await;
    env.spawn_worker("all", "worker");
    completed(&env.enqueue_wait(&[]).await);
    let before = env.okta_users().await;
    let synced = active(&before);
    assert!(synced.len() > 2, "the sync left users active: {}", synced.len());
    let sessions = env.sessions().await.len();

    // Without --yes: the count, and how to confirm.
    let out = deactivate(&env, &["--all"]).await;
    assert!(!out.status.success(), "refused without --yes");
    let why = stderr(&out);
    assert!(why.contains(&format!("would deactivate {} user(s)", synced.len())) && why.contains("--yes"), "{why}");

    // A source user the filter keeps out of this sync is not its to touch,
    // even next to one it owns, even with --yes.
    let stranger = env
        .source_users()
        .await
        .into_iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .find(|id| !before.contains_key(id))
        .expect("the sample table has users outside the filter");
    let out = deactivate(&env, &["--user", &synced[0], "--user", &stranger, "--yes"]).await;
    assert!(!out.status.success(), "refused: {}", stderr(&out));
    let why = stderr(&out);
    assert!(why.contains(&format!("{stranger}: not in the roster of sync demo")), "{why}");

    // A dry run lists whom it would deactivate.
    let out = deactivate(&env, &["--user", &synced[1], "--dry-run"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("would deactivate 1 user(s)") && listed.contains(&synced[1]), "{listed}");

    assert_eq!(env.okta_users().await, before, "Okta is unchanged");
    assert_eq!(env.sessions().await.len(), sessions, "no session was opened");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_deactivates_exactly_that_user_and_all_deactivates_the_rest_of_the_roster() {
    let mut env = Env::start("users-deactivate", Options::default()).await;
    env.spawn_worker("all", "worker");
    completed(&env.enqueue_wait(&[]).await);
    let synced = active(&env.okta_users().await);
    let seeded = env.sessions().await.len();

    let one = synced[0].clone();
    let r = completed(&deactivate(&env, &["--user", &one, "--yes"]).await);
    assert_eq!(r["deactivated"].as_u64(), Some(1), "{r}");
    let store = env.okta_users().await;
    for id in &synced {
        let expected = if *id == one { "DEACTIVATED" } else { "ACTIVE" };
        assert_eq!(store[id].0, expected, "{id}");
    }
    assert_eq!(sent(&env.sessions().await, seeded), (0, 1), "one bulk-delete of one profile");

    // The roster no longer holds that user: naming them again is refused.
    let again = deactivate(&env, &["--user", &one, "--yes"]).await;
    assert!(!again.status.success() && stderr(&again).contains("not in the roster"), "{}", stderr(&again));

    let r = completed(&deactivate(&env, &["--all", "--yes"]).await);
    assert_eq!(r["deactivated"].as_u64(), Some(synced.len() as u64 - 1), "{r}");
    let store = env.okta_users().await;
    assert!(active(&store).is_empty(), "every user of the roster is deactivated: {:?}", active(&store));
    assert_eq!(sent(&env.sessions().await, seeded), (0, synced.len() as u64), "each sent once, as deletes");
    common::check_invariants(&env.sessions().await, Options::default().cooldown);

    let nothing = deactivate(&env, &["--all", "--yes"]).await;
    assert!(!nothing.status.success() && stderr(&nothing).contains("no active users"), "{}", stderr(&nothing));
    env.finish().await;
}
