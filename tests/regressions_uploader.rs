//! Regression tests of issue 8's uploader defects 2 and 7, against the real
//! broker, the `xaas` binary and the sandbox: a takeover right after the
//! run's last trigger, and a successor whose clock runs ahead of Okta's.
//! Both failed on the code before the fixes (3dfd50b; `XAAS_TEST_BIN` runs
//! them against another build).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{Env, Options};
use xaas_core::{EventKind, RunEvent};

const SIGABRT: i32 = 6;

/// `users` generated users, all enabled and in the sync's filter.
fn world(users: usize, cooldown: Duration) -> Options {
    Options {
        seed_csv: false,
        generate: Some(users),
        other_dept_share: 0.0,
        disabled_share: Some(0.0),
        cooldown,
        import_duration: Duration::from_millis(200),
        page_size: 100,
        ..Options::default()
    }
}

/// Lowers the sync's request limits (before the workers start).
fn limits(env: &Env, profiles_per_request: u32, requests_per_session: u32) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let section = "[syncs.demo.limits]\n";
    assert!(text.contains(section), "the config has a limits table:\n{text}");
    let lowered = format!(
        "{section}profiles_per_request = {profiles_per_request}\nrequests_per_session = {requests_per_session}\n"
    );
    std::fs::write(&env.config, text.replace(section, &lowered)).unwrap();
}

/// Starts `xaas worker uploader` as `label` (with `env`) and waits until it
/// has subscribed, so that the next uploader started stands by behind it.
async fn spawn_uploader(env: &mut Env, label: &str, vars: &[(&str, Option<&str>)]) {
    env.spawn_worker_env("uploader", label, vars);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Both builds log "... the active consumer" once the consumer is registered.
    while !env.log(label).contains("the active consumer") {
        assert!(env.worker_running(label), "uploader {label} exited early; its log:\n{}", env.log(label));
        assert!(tokio::time::Instant::now() < deadline, "uploader {label} never subscribed:\n{}", env.log(label));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The events of `run` once it completed or failed, or `None` if it had not
/// within `limit`.
async fn ended_within(env: &Env, run: &str, limit: Duration) -> Option<Vec<RunEvent>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let events: Vec<RunEvent> = env.events().await.into_iter().filter(|e| e.run_id.as_str() == run).collect();
        if events.iter().any(|e| matches!(e.kind, EventKind::RunCompleted { .. } | EventKind::RunFailed { .. })) {
            return Some(events);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (status, requests) of each session, as the sandbox's Okta recorded it.
fn shape(sessions: &[serde_json::Value]) -> Vec<(String, usize)> {
    sessions
        .iter()
        .map(|s| (s["status"].as_str().unwrap_or("?").to_string(), s["requests"].as_array().map_or(0, Vec::len)))
        .collect()
}

/// Defect 2: the run's last request is the 50th of its session, so the
/// request itself triggers the session, and the uploader dies right after
/// Okta accepted that trigger (`uploader.after_trigger:2`, the second
/// session's), before it recorded it or queued the `FinishRun`. Its
/// successor receives only batches that are already loaded. Before the fix
/// `FinishRun` was published only on the way through a batch that loaded
/// something, so the successor never published it and the run never ended
/// (the sync stayed "in flight"), although both sessions COMPLETED in Okta.
/// Now a newly active uploader finishes every run the log shows loaded.
#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_after_the_last_trigger_still_ends_the_run() {
    let cooldown = Duration::from_secs(1);
    let mut env = Env::start("reg-last-trigger", world(1_000, cooldown)).await;
    // 1,000 profiles, 10 a request: 100 requests, two full sessions.
    limits(&env, 10, 50);
    env.spawn_worker("fetcher", "fetcher");
    env.spawn_worker("mapper", "mapper");
    spawn_uploader(&mut env, "uploader-armed", &[("XAAS_CRASH_AT", Some("uploader.after_trigger:2"))]).await;
    let run = env.enqueue(&[]).await;

    let status = env.wait_worker_exit("uploader-armed", Duration::from_secs(120)).await;
    assert_eq!(status.signal(), Some(SIGABRT), "the uploader died at its crash point: {status:?}");
    spawn_uploader(&mut env, "uploader-successor", &[("XAAS_CRASH_AT", None)]).await;

    // `enqueue --wait` gave up after 90 s in the reproduction.
    let limit = Duration::from_secs(90);
    let Some(events) = ended_within(&env, &run, limit).await else {
        panic!(
            "the run never ended: neither completed nor failed {limit:?} after the takeover; the sandbox's sessions \
             (status, requests): {:?}; successor's log:\n{}",
            shape(&env.sessions().await),
            env.log("uploader-successor")
        )
    };
    let (profiles, requests, sessions) = env.assert_synced_exactly(&events, cooldown).await;
    assert_eq!((profiles, requests, sessions), (1_000, 100, 2), "two sessions of 50 requests of 10 profiles");
    let sessions = env.sessions().await;
    assert_eq!(
        shape(&sessions),
        vec![("COMPLETED".to_string(), 50), ("COMPLETED".to_string(), 50)],
        "the setup: the run's last request was the 50th of its session"
    );
    env.finish().await;
}

/// How far ahead of Okta's clock the successor's clock runs: more than the
/// cooldown plus `LOCAL_CLOCK_MARGIN` (30 s), the margin the uploader adds
/// when Okta's answers carry no `Date`, so only Okta's clock keeps it out of
/// the cooldown.
const SKEW: Duration = Duration::from_secs(60);

/// libfaketime (Debian's `faketime` package), as its `faketime` command
/// preloads it; the loader expands `$LIB` (e.g. `lib/x86_64-linux-gnu`).
/// Preloaded directly rather than through the `faketime` command, which
/// forks: killing the command would leave the worker running.
const LIBFAKETIME: &str = "/usr/$LIB/faketime/libfaketimeMT.so.1";

/// Defect 7: the cooldown was recorded on one host's clock and checked on
/// another's. The first uploader triggers the first session and dies while
/// it waits out the cooldown (`uploader.cooldown_wait:1`); the uploader that
/// takes over (it stood by, so it is active at once) runs with its wall
/// clock `SKEW` ahead of Okta's, the sandbox's. Before the fix it measured
/// the cooldown from the trigger's recorded time on its own clock, found it
/// long over and asked for a session inside Okta's cooldown, which Okta
/// refused. Now the trigger carries the `Date` of Okta's start-import answer
/// and the wait is measured on Okta's clock.
///
/// The skew is libfaketime's, preloaded into that one worker only: the
/// sandbox runs in this test process on the real clock, as Okta would.
/// `FAKETIME_DONT_FAKE_MONOTONIC=1` keeps `CLOCK_MONOTONIC` (tokio's
/// `Instant`, its timers and the takeover grace) real: two hosts differ in
/// wall clock, and a monotonic clock only measures time within one process,
/// so its reading is no part of the skew. Whether the preload took effect is
/// checked: the successor's `SessionOpened` carries its skewed clock.
#[tokio::test(flavor = "multi_thread")]
async fn a_successor_whose_clock_runs_ahead_opens_no_session_inside_the_cooldown() {
    let probe = std::process::Command::new("faketime").args(["-f", "+60s", "true"]).status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "this test needs libfaketime: apt-get install faketime (.ci/run installs it)"
    );
    let cooldown = Duration::from_secs(8);
    let mut env = Env::start("reg-clock-skew", world(200, cooldown)).await;
    // 200 profiles, 10 a request: 20 requests, two sessions of 10.
    limits(&env, 10, 10);
    env.spawn_worker("fetcher", "fetcher");
    env.spawn_worker("mapper", "mapper");
    spawn_uploader(&mut env, "uploader-armed", &[("XAAS_CRASH_AT", Some("uploader.cooldown_wait:1"))]).await;
    let skew = format!("+{}s", SKEW.as_secs());
    spawn_uploader(
        &mut env,
        "uploader-ahead",
        &[
            ("XAAS_CRASH_AT", None),
            ("LD_PRELOAD", Some(LIBFAKETIME)),
            ("FAKETIME", Some(&skew)),
            ("FAKETIME_DONT_FAKE_MONOTONIC", Some("1")),
        ],
    )
    .await;
    let run = env.enqueue(&[]).await;

    let status = env.wait_worker_exit("uploader-armed", Duration::from_secs(120)).await;
    assert_eq!(status.signal(), Some(SIGABRT), "the first uploader died in the cooldown: {status:?}");
    let Some(events) = ended_within(&env, &run, Duration::from_secs(120)).await else {
        panic!("the run did not end; the successor's log:\n{}", env.log("uploader-ahead"))
    };

    let sessions = env.sessions().await;
    assert_eq!(sessions.len(), 2, "the setup: two sessions, the second opened by the successor: {sessions:?}");
    let created = |s: &serde_json::Value| {
        time::OffsetDateTime::parse(s["created"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let second = sessions[1]["id"].as_str().unwrap();
    let opened = events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::SessionOpened { session_id } if session_id == second))
        .unwrap_or_else(|| panic!("the successor recorded opening {second}"));
    assert!(
        opened.at - created(&sessions[1]) >= SKEW - Duration::from_secs(1),
        "the successor's clock runs {SKEW:?} ahead of Okta's (libfaketime preloaded): it recorded opening {second} \
         at {}, Okta created it at {}",
        opened.at,
        created(&sessions[1])
    );
    let early = env.refusals_citing("within the cooldown").await;
    assert!(early.is_empty(), "the successor asked Okta for a session inside the cooldown: {early:?}");
    // The first uploader died before its wait was over, so only the
    // successor records one: it took over inside the cooldown (else this
    // test would show nothing) and waited for the rest of it.
    assert!(
        events.iter().any(|e| matches!(e.kind, EventKind::CooldownWaited { .. })),
        "the successor took over inside the cooldown and waited out the rest; its log:\n{}",
        env.log("uploader-ahead")
    );
    env.assert_synced_exactly(&events, cooldown).await;
    env.finish().await;
}
