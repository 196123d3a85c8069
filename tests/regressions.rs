//! Regression tests of issue 8's defects 4 to 7, against the real broker,
//! the `xaas` binary and the sandbox: two syncs on one identity source, a
//! delta run with an unknown roster, an Okta outage that must fail its run,
//! and hosts whose clocks disagree with Okta's. Each failed on the code
//! before the fixes (`XAAS_TEST_BIN` runs them against another build).

mod common;
mod sync_support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Env, Options};
use xaas_core::SyncName;

/// Runs `cmd` to its end, or kills it after `limit` (a command that should
/// have refused to start but serves instead); `None` then.
fn output_within(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("xaas starts");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait_with_output();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

/// Defect 4: two syncs loading into one identity source would load into
/// each other's sessions. Every command that reads the configuration
/// refuses it at start: exit 2, one line naming both syncs.
#[tokio::test(flavor = "multi_thread")]
async fn two_syncs_on_one_identity_source_are_refused_by_every_command() {
    let env = Env::start("reg-one-source", Options::default()).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    let demo = &text[text.find("[syncs.demo.source]").expect("the demo sync's tables")..];
    let twice = format!("{text}\n{}", demo.replace("syncs.demo", "syncs.other"));
    assert!(twice.matches("identity_source_id = \"0oasandbox00000000001\"").count() == 2, "{twice}");
    std::fs::write(&env.config, twice).unwrap();
    // A build that accepts the configuration declares the other sync's queues.
    env.broker.delete_sync(&SyncName::parse("other").unwrap());

    let commands: [&[&str]; 6] = [
        &["worker", "all"],
        &["worker", "uploader"],
        &["enqueue", "--sync", "demo"],
        &["status"],
        &["parked", "list"],
        &["console", "--listen", "127.0.0.1:0"],
    ];
    for args in commands {
        let mut cmd = env.xaas();
        cmd.env("XAAS_SYNC_OTHER_GRAPH_CLIENT_SECRET", common::GRAPH_SECRET)
            .env("XAAS_SYNC_OTHER_OKTA_TOKEN", common::OKTA_TOKEN)
            .args(args);
        let out = tokio::task::spawn_blocking(move || output_within(cmd, Duration::from_secs(15))).await.unwrap();
        let Some(out) = out else { panic!("xaas {args:?} started with two syncs on one identity source") };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "xaas {args:?} exits 2; stderr:\n{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "xaas {args:?}: one line on stderr, got:\n{stderr}");
        assert!(
            lines[0].starts_with(
                "error: syncs.other.target.identity_source_id: the identity source 0oasandbox00000000001 is \
                 already synced by syncs.demo;"
            ),
            "xaas {args:?} names both syncs: {stderr}"
        );
    }
    env.finish().await;
}
