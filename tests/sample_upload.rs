//! `xaas sample upload` against the sandbox: it creates the sample table's
//! users through Graph `POST /v1.0/users`, a second run creates nothing, and
//! a sync then upserts those users into Okta.

mod common;
mod sync_support;

use std::process::Output;

use common::{Env, Options, expected_store, rules};
use sync_support::completed;

async fn upload(env: &Env, domain: &str) -> Output {
    let mut cmd = env.xaas();
    cmd.args(["sample", "upload", "--sync", "demo", "--domain", domain]);
    tokio::task::spawn_blocking(move || cmd.output().expect("xaas runs")).await.unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_users_are_created_once_and_a_sync_upserts_them() {
    let mut env = Env::start("sample-upload", Options { seed_csv: false, ..Options::default() }).await;
    assert!(env.source_users().await.is_empty(), "the source starts empty");

    let first = upload(&env, "sandbox.example.com").await;
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let users = env.source_users().await;
    // 300 rows, one of them blank (no email): 299 users.
    assert_eq!(users.len(), 299, "{}", stdout(&first));
    assert!(stdout(&first).contains("299 created, 0 already existed, 1 unusable rows"), "{}", stdout(&first));
    let neil = users
        .iter()
        .find(|u| u["userPrincipalName"] == "neil.gilbert@sandbox.example.com")
        .expect("example.com replaced");
    assert_eq!(neil["mail"], "neil.gilbert@sandbox.example.com");
    assert_eq!(neil["department"], "Okta Workflows");
    assert!(neil.get("passwordProfile").is_none(), "the sandbox keeps no password");

    let second = upload(&env, "sandbox.example.com").await;
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(stdout(&second).contains("0 created, 299 already existed"), "{}", stdout(&second));
    assert_eq!(env.source_users().await.len(), 299, "nothing more was created");

    // A domain the tenant has not verified is Graph's refusal, and exits 1.
    let refused = upload(&env, "unverified.example").await;
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("verified domain"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    env.spawn_worker("all", "worker");
    let r = completed(&env.enqueue_wait(&[]).await);
    let expected = expected_store(&rules(&env), &env.source_users().await);
    assert!(!expected.is_empty());
    assert_eq!(r["upserted"].as_u64(), Some(expected.len() as u64), "{r}");
    let store = env.okta_users().await;
    assert_eq!(store.len(), expected.len());
    for (id, profile) in &expected {
        assert_eq!(&store[id].1, profile, "{id}");
    }
    env.finish().await;
}
