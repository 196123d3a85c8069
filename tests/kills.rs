//! Killed workers lose nothing and break none of Okta's limits (DESIGN §6.6).
//!
//! Each test runs a 20,000-user sync through separate fetcher, mapper and
//! uploader processes, kills one of them at a chosen step, restarts it, and
//! then checks what the sandbox recorded: the run completed, Okta holds
//! exactly the mapped users, no session took (or was even offered) a 51st
//! request, and no session was opened while another was open or inside the
//! cooldown.
//!
//! The exact steps are reached with the workers' crash points
//! (`XAAS_CRASH_AT=<point>[:<nth>]`, crates/workers/src/failpoint.rs), which
//! abort the process as abruptly as `kill -9`; one more test sends real
//! `kill -9`s at moments it observes in the events stream, and one sends
//! SIGTERM to each role mid-run.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{Env, Options};
use xaas_core::{EventKind, RunEvent};

const COOLDOWN: Duration = Duration::from_secs(1);
const SIGABRT: i32 = 6;

/// 20,000 users, 500 per Graph page (~36 pages of enabled users), ~63 full
/// bulk requests: two sessions, so a trigger at 50 and a cooldown mid-run.
fn world() -> Options {
    Options {
        seed_csv: false,
        generate: Some(20_000),
        cooldown: COOLDOWN,
        import_duration: Duration::from_millis(200),
        page_size: 500,
        ..Options::default()
    }
}

/// Every profile reached Okta exactly once, in full requests: the
/// duplicates a crash upstream of the uploader causes were all recognised.
async fn assert_sent_once(env: &Env) {
    let expected = common::expected_store(&common::rules(env), &env.source_users().await).len() as u64;
    let (profiles, requests, sessions) = common::check_invariants(&env.sessions().await, COOLDOWN);
    assert_eq!(profiles, expected, "each user sent exactly once");
    assert_eq!(requests, profiles.div_ceil(200), "requests = ⌈profiles / 200⌉");
    assert_eq!(sessions, requests.div_ceil(50), "sessions = ⌈requests / 50⌉");
}

fn count(events: &[RunEvent], pred: impl Fn(&EventKind) -> bool) -> usize {
    events.iter().filter(|e| pred(&e.kind)).count()
}

/// Runs the sync with `role` armed to crash at `point` (`name[:nth]`),
/// checks that it crashed there, restarts it unarmed, and checks the
/// guarantees. Returns the run's events and the sandbox's sessions.
async fn crash_at(test: &str, role: &str, point: &str) -> (Env, Vec<RunEvent>) {
    crash_in(test, world(), role, point).await
}

async fn crash_in(test: &str, opts: Options, role: &str, point: &str) -> (Env, Vec<RunEvent>) {
    let cooldown = opts.cooldown;
    let mut env = Env::start(test, opts).await;
    for r in ["fetcher", "mapper", "uploader"] {
        let armed = if r == role { Some(point) } else { None };
        env.spawn_worker_env(r, r, &[("XAAS_CRASH_AT", armed)]);
    }
    let run = env.enqueue(&[]).await;

    let status = env.wait_worker_exit(role, Duration::from_secs(240)).await;
    let name = point.split(':').next().unwrap();
    assert_eq!(status.signal(), Some(SIGABRT), "{role} died by its crash point, not otherwise: {status:?}");
    assert!(env.log(role).contains(&format!("crash point {name} reached")), "{}", env.log(role));
    let before = env.events().await;
    assert!(
        !before.iter().any(|e| e.run_id.as_str() == run && matches!(e.kind, EventKind::RunCompleted { .. })),
        "the crash happened mid-run"
    );

    env.spawn_worker_env(role, &format!("{role}-restarted"), &[("XAAS_CRASH_AT", None)]);
    let events = env.wait_run_end(&run, Duration::from_secs(300)).await;
    env.assert_synced_exactly(&events, cooldown).await;
    (env, events)
}

#[tokio::test(flavor = "multi_thread")]
async fn fetcher_killed_mid_page() {
    // Page 4 is confirmed, the FetchPage for page 5 is not, and the
    // FetchPage of page 4 is unacked: it comes back and page 4 is read again.
    let (env, events) = crash_at("kill-fetch", "fetcher", "fetcher.after_page_published:5").await;
    let fetched = count(&events, |k| matches!(k, EventKind::PageFetched { .. }));
    let distinct: std::collections::BTreeSet<u32> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::PageFetched { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(distinct.len() as u32, distinct.iter().max().unwrap() + 1, "every page fetched, none skipped");
    assert!(fetched >= distinct.len(), "{fetched} PageFetched for {} pages", distinct.len());
    // Page 4 went downstream twice; the second copy cost Okta nothing.
    let mapped_4 = count(&events, |k| matches!(k, EventKind::PageMapped { seq: 4, .. }));
    assert_eq!(mapped_4, 2, "page 4 was read and mapped again");
    assert_sent_once(&env).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mapper_killed_after_publishing_part_of_a_page() {
    // Pages map to two batches each: the 9th batch is the first half of a
    // page, whose delivery comes back and is mapped (and published) again.
    let (env, events) = crash_at("kill-map", "mapper", "mapper.after_batch_published:9").await;
    let pages = count(&events, |k| matches!(k, EventKind::PageFetched { .. }));
    assert!(pages >= 30, "a multi-page run ({pages} pages)");
    let mapped = count(&events, |k| matches!(k, EventKind::PageMapped { .. }));
    assert!(mapped >= pages, "{mapped} pages mapped of {pages}");
    // Batches published twice are recognised: no profile went to Okta twice.
    assert_sent_once(&env).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uploader_killed_between_oktas_202_and_the_ack() {
    // Request 20 reached Okta, BulkLoaded was never recorded, its batches
    // were never acked: they come back and are sent again (the count errs
    // high), and Okta ends up with the same profiles.
    let (env, events) = crash_at("kill-202", "uploader", "uploader.after_bulk_accepted:20").await;
    let sessions = env.sessions().await;
    let sent: u64 = sessions
        .iter()
        .flat_map(|s| s["requests"].as_array().unwrap().clone())
        .map(|r| r["profiles"].as_u64().unwrap())
        .sum();
    let loaded: u64 = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BulkLoaded { profiles, .. } => Some(u64::from(*profiles)),
            _ => None,
        })
        .sum();
    assert!(sent > loaded, "the request Okta took before the crash was sent again ({sent} sent, {loaded} recorded)");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uploader_killed_during_the_cooldown_wait() {
    // The first session is triggered; the uploader dies while it waits out
    // the cooldown. The cooldown outlasts the restart, so the successor,
    // knowing the trigger only from the events stream, must wait out the
    // rest: `assert_synced_exactly` checks that Okta never saw (and refused)
    // an early session, besides the session log's own timing.
    let opts = Options { cooldown: Duration::from_secs(10), ..world() };
    let (env, events) = crash_in("kill-cool", opts, "uploader", "uploader.cooldown_wait:1").await;
    assert!(count(&events, |k| matches!(k, EventKind::SessionTriggered { .. })) >= 2, "two sessions were triggered");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uploader_killed_just_after_the_rollover_trigger() {
    // start-import of the full first session returned, SessionTriggered was
    // never recorded: the successor finds the session triggered, records it,
    // and waits out the cooldown before opening the next.
    let (env, events) = crash_at("kill-trig1", "uploader", "uploader.after_trigger:1").await;
    let triggered_here: Vec<String> = env
        .sessions()
        .await
        .iter()
        .filter(|s| !s["triggeredAt"].is_null())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    for id in &triggered_here {
        assert!(
            events
                .iter()
                .any(|e| matches!(&e.kind, EventKind::SessionTriggered { session_id, .. } if session_id == id)),
            "the trigger of {id} is in the run's history"
        );
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uploader_killed_just_after_the_final_trigger() {
    // The run's last session is triggered by FinishRun; the uploader dies
    // before recording it. The FinishRun comes back and the run completes.
    let (env, events) = crash_at("kill-trig2", "uploader", "uploader.after_trigger:2").await;
    let sessions = env.sessions().await;
    let finished = count(&events, |k| matches!(k, EventKind::SessionFinished { .. }));
    assert_eq!(finished, sessions.iter().filter(|s| !s["requests"].as_array().unwrap().is_empty()).count());
    assert!(sessions.iter().all(|s| s["status"] == "COMPLETED"), "every session completed: {sessions:?}");
    env.finish().await;
}

/// Waits for the moment the events of `run` satisfy `pred`, and checks
/// that the run is still going then.
async fn when(env: &Env, run: &str, what: &str, pred: impl Fn(&[RunEvent]) -> bool) {
    let seen = env.watch_run(run, what, Duration::from_secs(240), pred).await;
    assert!(!seen.iter().any(|e| matches!(e.kind, EventKind::RunCompleted { .. })), "the run is still going at {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_each_role_at_observed_moments() {
    let mut env = Env::start("kill-9", world()).await;
    for r in ["fetcher", "mapper", "uploader"] {
        env.spawn_worker(r, r);
    }
    let run = env.enqueue(&[]).await;

    when(&env, &run, "page 3 fetched", |e| count(e, |k| matches!(k, EventKind::PageFetched { .. })) >= 3).await;
    env.kill_worker("fetcher");
    env.spawn_worker("fetcher", "fetcher-2");

    when(&env, &run, "10 pages mapped", |e| count(e, |k| matches!(k, EventKind::PageMapped { .. })) >= 10).await;
    env.kill_worker("mapper");
    env.spawn_worker("mapper", "mapper-2");

    when(&env, &run, "10 bulk loads", |e| count(e, |k| matches!(k, EventKind::BulkLoaded { .. })) >= 10).await;
    env.kill_worker("uploader");
    env.spawn_worker("uploader", "uploader-2");

    when(&env, &run, "the first trigger", |e| count(e, |k| matches!(k, EventKind::SessionTriggered { .. })) >= 1).await;
    env.kill_worker("uploader-2");
    env.spawn_worker("uploader", "uploader-3");

    let events = env.wait_run_end(&run, Duration::from_secs(300)).await;
    env.assert_synced_exactly(&events, COOLDOWN).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_each_role_cleanly_mid_run() {
    let mut env = Env::start("sigterm", world()).await;
    for r in ["fetcher", "mapper", "uploader"] {
        env.spawn_worker(r, r);
    }
    let run = env.enqueue(&[]).await;

    type Kind = fn(&EventKind) -> bool;
    let steps: [(&str, &str, Kind, usize); 3] = [
        ("fetcher", "pages fetched", |k| matches!(k, EventKind::PageFetched { .. }), 3),
        ("mapper", "pages mapped", |k| matches!(k, EventKind::PageMapped { .. }), 10),
        ("uploader", "bulk loads", |k| matches!(k, EventKind::BulkLoaded { .. }), 10),
    ];
    for (role, what, kind, n) in steps {
        when(&env, &run, what, |e| count(e, kind) >= n).await;
        let status = env.terminate_worker(role).expect("the worker exits within 30 s of SIGTERM");
        assert_eq!(status.code(), Some(0), "{role} exits 0 on SIGTERM; its log:\n{}", env.log(role));
        let log = env.log(role);
        assert!(log.contains("stop requested") && log.contains("worker stopped"), "{role} stopped in order:\n{log}");
        env.spawn_worker(role, &format!("{role}-2"));
    }

    let events = env.wait_run_end(&run, Duration::from_secs(300)).await;
    env.assert_synced_exactly(&events, COOLDOWN).await;
    env.finish().await;
}
