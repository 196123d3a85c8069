//! `xaas worker scheduler` (issue 5): runs start on each sync's cron
//! schedule, and at most one run of a sync is in flight. Requests that come
//! while one runs wait (queued) or are served by a waiting run (merged),
//! and each report says which.

mod common;
mod sync_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, Options};
use serde_json::json;
use sync_support::configure;
use xaas_core::{EventKind, RunEvent};

/// Each run's life in stream positions: (claim that held, end).
fn intervals(events: &[RunEvent]) -> BTreeMap<String, (usize, usize)> {
    let mut start: BTreeMap<String, usize> = BTreeMap::new();
    let mut end: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let run = e.run_id.to_string();
        match &e.kind {
            EventKind::RunStarted { .. } => {
                start.insert(run, i);
            }
            // A claim that lost the race is followed by RunQueued: not a start.
            EventKind::RunQueued { .. } => {
                start.remove(&run);
            }
            EventKind::RunCompleted { .. } | EventKind::RunFailed { .. } => {
                end.insert(run, i);
            }
            _ => {}
        }
    }
    start.into_iter().filter_map(|(run, s)| end.get(&run).map(|e| (run, (s, *e)))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_every_two_seconds_produces_runs_that_never_overlap() {
    let opts = Options { page_size: 60, ..Options::default() };
    let mut env = Env::start("scheduler", opts).await;
    configure(&env, "[syncs.demo]\nschedule = \"*/2 * * * * *\"");
    // Slow Graph down so that each run outlasts the schedule's period.
    let slow = env.put("/sim/faults", json!({ "graph": { "latency_ms": 1000 } })).await;
    assert!(slow.is_success(), "{slow}");
    env.spawn_worker("all", "worker");
    env.spawn_worker("scheduler", "scheduler");

    env.wait_for_events("three scheduled runs, a queued and a merged request", Duration::from_secs(180), |events| {
        let completed = events.iter().filter(|e| matches!(e.kind, EventKind::RunCompleted { .. })).count();
        let queued = events.iter().any(|e| matches!(e.kind, EventKind::RunQueued { .. }));
        let merged = events.iter().any(|e| matches!(e.kind, EventKind::RunMerged { .. }));
        completed >= 3 && queued && merged
    })
    .await;
    assert_eq!(env.terminate_worker("scheduler").and_then(|s| s.code()), Some(0), "{}", env.log("scheduler"));

    // Let what was requested finish: every run that ever started or waited ends.
    env.wait_for_events("every requested run to end", Duration::from_secs(180), |events| {
        let mut open: BTreeMap<String, bool> = BTreeMap::new();
        for e in events {
            match e.kind {
                EventKind::RunCompleted { .. } | EventKind::RunFailed { .. } | EventKind::RunMerged { .. } => {
                    open.insert(e.run_id.to_string(), false);
                }
                _ => {
                    open.entry(e.run_id.to_string()).or_insert(true);
                }
            }
        }
        !open.values().any(|o| *o)
    })
    .await;

    let events = env.events().await;
    assert!(events.iter().all(|e| e.run_id.as_str().starts_with("sched-demo-")), "every run came from the schedule");
    let lives = intervals(&events);
    assert!(lives.len() >= 3, "{lives:?}");
    let mut ordered: Vec<(usize, usize, String)> = lives.iter().map(|(r, (s, e))| (*s, *e, r.clone())).collect();
    ordered.sort();
    for pair in ordered.windows(2) {
        let ((_, end, a), (start, _, b)) = ((pair[0].0, pair[0].1, &pair[0].2), (pair[1].0, pair[1].1, &pair[1].2));
        assert!(start > end, "run {b} started (event {start}) before run {a} ended (event {end})");
    }
    assert!(events.iter().filter(|e| matches!(e.kind, EventKind::RunFailed { .. })).count() == 0, "no run failed");

    // The reports say which requests waited and which were merged.
    let merged = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::RunMerged { into } => Some((e.run_id.to_string(), into.to_string())),
            _ => None,
        })
        .unwrap();
    let out = env.run_xaas(&["status", &merged.0, "--json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], json!({ "state": "merged", "into": merged.1 }));
    assert_eq!(report["merged_into"], merged.1.as_str());
    let into: serde_json::Value =
        serde_json::from_slice(&env.run_xaas(&["status", &merged.1, "--json"]).await.stdout).unwrap();
    assert!(into["queued_behind"].is_string(), "the run it was merged into had waited: {into}");
    assert_eq!(into["state"]["state"], "completed");
    env.finish().await;
}
