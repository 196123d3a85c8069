//! Bad source records and profiles Okta refuses, end to end: each bad record
//! costs only itself, is reported with its reason in the run report, and
//! everyone else is uploaded exactly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, Options, check_invariants, json_report, rules};
use serde_json::{Value, json};
use xaas_core::Op;
use xaas_core::mapping::{MapOutcome, map_user};

/// A source user that passes the demo filter and maps cleanly.
fn good_user(id: &str, given: &str) -> Value {
    json!({
        "id": id,
        "accountEnabled": true,
        "department": "Okta Workflows",
        "givenName": given,
        "surname": "Tester",
        "displayName": format!("{given} Tester"),
        "userPrincipalName": format!("{id}@sandbox.example.com"),
        "mail": format!("{id}@sandbox.example.com"),
        "jobTitle": "Azure AD User",
        "companyName": "Okta",
        "city": "Dublin",
    })
}

/// What the store must hold: every enabled source user that maps, the first
/// one of each externalId.
fn first_of_each(env: &Env, source: &[Value]) -> BTreeMap<String, Value> {
    let rules = rules(env);
    let mut expected = BTreeMap::new();
    for user in source.iter().filter(|u| u["accountEnabled"] == Value::Bool(true)) {
        if let MapOutcome::Mapped(p) = map_user(&rules, user, Op::Upsert) {
            let profile = serde_json::to_value(p.profile.unwrap_or_default()).unwrap();
            expected.entry(p.external_id.to_string()).or_insert(profile);
        }
    }
    expected
}

/// Reasons the report gives for `id`, from the mapper's rejections and from
/// the uploader's (Okta's refusals, duplicates across pages).
fn reasons(report: &Value, id: &str) -> Vec<String> {
    ["rejected", "refused_by_okta"]
        .iter()
        .flat_map(|list| report[list].as_array().cloned().unwrap_or_default())
        .filter(|r| r["external_id"] == id)
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_are_rejected_one_by_one_and_everyone_else_is_uploaded() {
    // Small pages, so that a duplicate can sit on another page than its twin.
    let mut env = Env::start("bad-records", Options { page_size: 50, ..Options::default() }).await;
    let sample = env.source_users().await;

    // Appended after the 299 sample users (Graph pages 0-5), in this order.
    let mut missing_mail = good_user("bad-missing-mail", "Nomail");
    missing_mail.as_object_mut().unwrap().remove("mail");
    let mut long_name = good_user("bad-long-given-name", &"G".repeat(60));
    long_name["displayName"] = json!("Long Name");
    let mut not_a_string = good_user("bad-not-a-string", "Numeric");
    not_a_string["jobTitle"] = json!(42);
    let mut empty_upn = good_user("bad-empty-upn", "Noupn");
    empty_upn["userPrincipalName"] = json!("");
    for user in [&missing_mail, &long_name, &not_a_string, &empty_upn] {
        assert_eq!(env.post("/sim/users", user.clone()).await, 201, "create {}", user["id"]);
    }
    // Graph ids are unique, but a source is not always Graph: plant
    // duplicates the way only a broken source could hold them (the admin
    // API refuses them). Two adjacent ones share a page; the third repeats
    // a sample user of page 0.
    let twin_of_sample = sample.iter().find(|u| u["accountEnabled"] == true).unwrap()["id"].as_str().unwrap();
    {
        let mut dir = xaas_sim::app::lock(&env.sim.state.directory);
        dir.insert(good_user("dup-same-page", "First")).unwrap();
        dir.insert(good_user("dup-same-page", "Second")).unwrap();
        dir.insert(good_user(twin_of_sample, "Latecomer")).unwrap();
    }

    env.spawn_worker("all", "worker");
    let out = env.enqueue_wait(&[]).await;
    let report = json_report(&out);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["state"]["state"], "completed", "rejections do not fail the run");

    // Each bad record is reported once, with a reason that says what to fix.
    let expect = [
        ("bad-missing-mail", "mail"),
        ("bad-long-given-name", "givenName"),
        ("bad-not-a-string", "jobTitle is a number"),
        ("bad-empty-upn", "userPrincipalName"),
        ("dup-same-page", "duplicate externalId"),
    ];
    for (id, why) in expect {
        let r = reasons(&report, id);
        assert_eq!(r.len(), 1, "{id} reported once: {r:?}");
        assert!(r[0].contains(why), "{id}: {:?} should mention {why:?}", r[0]);
    }
    let rejected = report["rejected"].as_array().unwrap().len() + report["refused_by_okta"].as_array().unwrap().len();

    // Everyone else is in Okta, exactly; of a duplicate, the first.
    let source = env.source_users().await;
    let expected = first_of_each(&env, &source);
    let store = env.okta_users().await;
    assert_eq!(store.len(), expected.len(), "299 sample users + the first dup-same-page");
    assert_eq!(store.len(), 300);
    for (id, profile) in &expected {
        let (status, got) = store.get(id).unwrap_or_else(|| panic!("{id} missing from Okta"));
        assert_eq!((status.as_str(), got), ("ACTIVE", profile), "{id}");
    }
    assert_eq!(store["dup-same-page"].1["firstName"], "First", "the first of a page's duplicates is kept");
    for id in ["bad-missing-mail", "bad-long-given-name", "bad-not-a-string", "bad-empty-upn"] {
        assert!(!store.contains_key(id), "{id} was never sent");
    }

    // Okta never refused a whole batch because of one record.
    let refused = env.get("/sim/okta/refused").await;
    assert_eq!(refused, json!([]), "Okta refused nothing");
    let (profiles, requests, _) = check_invariants(&env.sessions().await, Duration::from_secs(2));
    assert_eq!(requests, profiles.div_ceil(200), "bad records cost no extra request");

    // The duplicate of a sample user that arrives pages later is the
    // uploader's to catch: the first is kept, the later one reported.
    let late = reasons(&report, twin_of_sample);
    assert_eq!(store[twin_of_sample].1["firstName"], expected[twin_of_sample]["firstName"], "the first one is kept");
    assert_eq!(late.len(), 1, "the duplicate across pages is reported once: {late:?}");
    assert!(late[0].contains("duplicate externalId"), "{late:?}");
    assert_eq!(profiles, store.len() as u64, "each externalId sent once");
    assert_eq!(rejected, 6, "{report}");
    env.finish().await;
}

/// The mapping plus one attribute Okta's schema lacks (`costCenter`), and a
/// sandbox whose Okta declares the schema strictly, and the uploader's
/// session limit lowered to `requests_per_session`. Three sample users get
/// an `employeeId`, so their profiles carry `costCenter` and Okta refuses
/// them; they sit in both bulk requests of the 299.
async fn schema_drift(name: &str, causes: &str, requests_per_session: u32) -> (Env, Vec<String>) {
    let env = Env::start(name, Options::default()).await;
    let mut attributes: Vec<String> = xaas_core::mapping::ORIGINAL_WORKFLOW_ATTRIBUTES
        .iter()
        .map(|(okta, graph)| format!("{okta} = \"{graph}\""))
        .collect();
    attributes.push("costCenter = \"employeeId\"".into());
    let mut config = std::fs::read_to_string(&env.config).unwrap().replace(
        "[syncs.demo.limits]\n",
        &format!("[syncs.demo.limits]\nrequests_per_session = {requests_per_session}\n"),
    );
    assert!(config.contains("requests_per_session"));
    config.push_str(&format!("\n[syncs.demo.mapping.attributes]\n{}\n", attributes.join("\n")));
    std::fs::write(&env.config, config).unwrap();

    let known: Vec<&str> = xaas_core::mapping::ORIGINAL_WORKFLOW_ATTRIBUTES.iter().map(|(okta, _)| *okta).collect();
    assert_eq!(env.put("/sim/okta/schema", json!({"attributes": known, "causes": causes})).await, 200);

    let source = env.source_users().await;
    let enabled: Vec<&Value> = source.iter().filter(|u| u["accountEnabled"] == true).collect();
    let mut drifted = Vec::new();
    for (n, i) in [10, 150, 250].into_iter().enumerate() {
        let id = enabled[i]["id"].as_str().unwrap().to_string();
        let patched = env.patch(&format!("/sim/users/{id}"), json!({"employeeId": format!("E-{n}")})).await;
        assert!(patched.is_success());
        drifted.push(id);
    }
    (env, drifted)
}

/// The run around a refused batch: completes, reports exactly the refused
/// profiles, and loads everyone else exactly, within Okta's limits.
async fn check_refused_run(env: &Env, drifted: &[String], report: &Value) {
    assert_eq!(report["state"]["state"], "completed", "{report}");
    let refused = report["refused_by_okta"].as_array().unwrap();
    let mut ids: Vec<&str> = refused.iter().map(|r| r["external_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = drifted.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(ids, want, "exactly the drifted profiles are reported: {refused:?}");
    for r in refused {
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("costCenter"), "the reason names the attribute Okta does not know: {reason:?}");
    }
    assert!(report["rejected"].as_array().unwrap().is_empty(), "the mapper had nothing to reject");

    let source = env.source_users().await;
    let rules = rules(env);
    let store = env.okta_users().await;
    assert_eq!(store.len(), 299 - drifted.len());
    for user in source.iter().filter(|u| u["accountEnabled"] == true) {
        let id = user["id"].as_str().unwrap();
        if drifted.iter().any(|d| d == id) {
            assert!(!store.contains_key(id), "{id} was refused, not loaded");
            continue;
        }
        let MapOutcome::Mapped(p) = map_user(&rules, user, Op::Upsert) else { panic!("{id} maps") };
        let profile = serde_json::to_value(p.profile.unwrap()).unwrap();
        assert_eq!(store[id].1, profile, "{id} loaded exactly");
    }
    let sessions = env.sessions().await;
    let (profiles, _, _) = check_invariants(&sessions, Duration::from_secs(2));
    assert_eq!(profiles, store.len() as u64, "every other profile loaded once");
    assert!(sessions.iter().all(|s| s["status"] == "COMPLETED"), "every session completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_okta_refuses_is_split_by_the_profiles_its_causes_name() {
    let (mut env, drifted) = schema_drift("refused-named", "perProfile", 50).await;
    env.spawn_worker("all", "worker");
    let report = json_report(&env.enqueue_wait(&[]).await);
    check_refused_run(&env, &drifted, &report).await;

    // One refusal per original request that held a drifted profile, each
    // naming them; the rest of each went again in one request.
    let refused = env.get("/sim/okta/refused").await;
    let refused = refused.as_array().unwrap();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for r in refused {
        assert_eq!((r["status"].as_u64(), r["errorCode"].as_str()), (Some(400), Some("E0000001")));
        assert!(r["path"].as_str().unwrap().ends_with("/bulk-upsert"));
    }
    assert_eq!(report["bulk_requests"], 2, "the rest of each refused request was sent once more, whole");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_okta_refuses_without_naming_profiles_is_bisected_within_the_session_limit() {
    // A low session limit, so that the bisection's extra requests must roll
    // sessions over, and be counted right while doing so.
    let limit = 8;
    let (mut env, drifted) = schema_drift("refused-bisect", "perAttribute", limit).await;
    env.spawn_worker("all", "worker");
    let report = json_report(&env.enqueue_wait(&[]).await);
    check_refused_run(&env, &drifted, &report).await;

    // Okta's causes named no profile, so the requests were halved until
    // each refused profile stood alone.
    let refused = env.get("/sim/okta/refused").await;
    let refused = refused.as_array().unwrap();
    assert!(refused.len() > drifted.len(), "bisection takes several refused requests: {}", refused.len());
    for r in refused {
        let causes = r["errorCauses"].as_array().unwrap();
        assert!(causes.iter().all(|c| !drifted.iter().any(|d| c.as_str().unwrap().contains(d.as_str()))));
    }
    // Every request a session received, accepted or refused, counts towards
    // its limit: none took more than `limit`.
    let sessions = env.sessions().await;
    assert!(sessions.len() >= 2, "the bisection needed more than one session of {limit}");
    for s in &sessions {
        let id = s["id"].as_str().unwrap();
        let accepted = s["requests"].as_array().unwrap().len();
        let refused_here = refused.iter().filter(|r| r["path"].as_str().unwrap().contains(id)).count();
        assert!(
            accepted + refused_here <= limit as usize,
            "session {id}: {accepted} accepted + {refused_here} refused"
        );
    }
    env.finish().await;
}
