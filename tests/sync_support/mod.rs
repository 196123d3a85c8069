//! What the delta, guards and scheduler suites share on top of `common`:
//! config additions, reading reports of runs that may fail, counting what
//! the sandbox's Okta received, and applying a change set to the source.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Output;

use serde_json::{Value, json};

use crate::common::{Env, expected_store, rules};

/// Appends TOML to the test's config (before the workers start).
pub fn configure(env: &Env, toml: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(&env.config).unwrap();
    writeln!(f, "\n{toml}").unwrap();
}

/// The JSON report of `enqueue --wait --json`, whatever the run's outcome.
pub fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout.find('{').unwrap_or_else(|| {
        panic!("no JSON report ({}):\nstdout: {stdout}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stderr))
    });
    serde_json::from_str(&stdout[start..]).expect("the report is JSON")
}

/// The report of a run that must have completed (exit 0).
pub fn completed(out: &Output) -> Value {
    let r = report(out);
    assert!(
        out.status.success(),
        "the run failed ({}): {r}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["state"]["state"], "completed", "{r}");
    r
}

/// The report of a run that must have failed (exit 1).
pub fn failed(out: &Output) -> Value {
    let r = report(out);
    assert_eq!(out.status.code(), Some(1), "a failed run exits 1: {r}");
    assert_eq!(r["state"]["state"], "failed", "{r}");
    r
}

/// Profiles sent with bulk-upsert and with bulk-delete in the sessions
/// from index `from` on, as the sandbox recorded them.
pub fn sent(sessions: &[Value], from: usize) -> (u64, u64) {
    let mut up = 0;
    let mut down = 0;
    for s in &sessions[from.min(sessions.len())..] {
        for r in s["requests"].as_array().unwrap() {
            let n = r["profiles"].as_u64().unwrap();
            match r["kind"].as_str() {
                Some("upsert") => up += n,
                Some("delete") => down += n,
                other => panic!("unexpected request kind {other:?}"),
            }
        }
    }
    (up, down)
}

/// Who a change set touched.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    pub changed: Vec<String>,
    pub disabled: Vec<String>,
    pub deleted: Vec<String>,
}

impl ChangeSet {
    pub fn gone(&self) -> Vec<String> {
        let mut v: Vec<String> = self.disabled.iter().chain(&self.deleted).cloned().collect();
        v.sort();
        v
    }
}

/// Among the users active in Okta: changes the city of `change`, disables
/// `disable` and deletes `delete` others, in the source.
pub async fn change_set(env: &Env, change: usize, disable: usize, delete: usize) -> ChangeSet {
    let store = env.okta_users().await;
    let active: Vec<String> = store.iter().filter(|(_, (s, _))| s == "ACTIVE").map(|(id, _)| id.clone()).collect();
    assert!(active.len() >= change + disable + delete, "not enough synced users for the change set");
    let mut set = ChangeSet::default();
    for (i, id) in active.iter().take(change).enumerate() {
        let status = env.patch(&format!("/sim/users/{id}"), json!({ "city": format!("Changed City {i}") })).await;
        assert!(status.is_success(), "patch {id}: {status}");
        set.changed.push(id.clone());
    }
    for id in active.iter().skip(change).take(disable) {
        assert!(env.post(&format!("/sim/users/{id}/disable"), json!({})).await.is_success());
        set.disabled.push(id.clone());
    }
    for id in active.iter().skip(change + disable).take(delete) {
        assert!(env.delete(&format!("/sim/users/{id}")).await.is_success());
        set.deleted.push(id.clone());
    }
    set
}

/// Checks the sandbox's Okta after `set` was synced: changed users carry
/// their new profile, the gone ones are deactivated, nobody else moved.
pub async fn assert_applied(env: &Env, before: &BTreeMap<String, (String, Value)>, set: &ChangeSet) {
    let after = env.okta_users().await;
    let expected = expected_store(&rules(env), &env.source_users().await);
    assert_eq!(after.len(), before.len(), "nobody was created or lost");
    for (id, (status, profile)) in &after {
        if set.changed.contains(id) {
            assert_eq!((status.as_str(), profile), ("ACTIVE", &expected[id]), "{id} carries its new profile");
            assert_ne!(profile, &before[id].1, "{id} changed");
        } else if set.disabled.contains(id) || set.deleted.contains(id) {
            assert_eq!(status, "DEACTIVATED", "{id} left the source");
        } else {
            assert_eq!((status, profile), (&before[id].0, &before[id].1), "{id} must not change");
        }
    }
}

/// The plan entries of `action`, by externalId.
pub fn plan_ids(plan: &Value, action: &str) -> Vec<String> {
    let mut ids: Vec<String> = plan["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["action"] == action)
        .map(|u| u["externalId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}
