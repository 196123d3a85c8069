//! Regression tests of issue 8's defects 3 and 6, against the real broker,
//! the `xaas` binary and the sandbox: an uploader whose broker connection
//! is closed while it waits out the cooldown must stop acting, and an Okta
//! outage must fail its run within the sync's retry budget instead of
//! hanging it. Both failed on the code before the fixes (3dfd50b;
//! `XAAS_TEST_BIN` runs them against another build).

mod common;
mod sync_support;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, Options};
use serde_json::json;
use sync_support::{completed, report};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use xaas_core::{EventKind, RunEvent};

/// A transparent TCP pipe between one uploader and the sandbox, noting when
/// each chunk that uploader sent went through: which uploader called Okta,
/// and when, is otherwise invisible (both use the same token).
struct OktaTap {
    port: u16,
    sent: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl OktaTap {
    async fn start(target: SocketAddr) -> OktaTap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&sent);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                            log.lock().unwrap().push((Instant::now(), first_line(&buf[..n])));
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_server.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        OktaTap { port, sent }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What went through at or after `t`.
    fn since(&self, t: Instant) -> Vec<String> {
        self.sent.lock().unwrap().iter().filter(|(at, _)| *at >= t).map(|(_, line)| line.clone()).collect()
    }
}

/// The request line of an HTTP request chunk, or its size when it is the
/// rest of a body.
fn first_line(chunk: &[u8]) -> String {
    let text = String::from_utf8_lossy(&chunk[..chunk.len().min(200)]);
    let line = text.lines().next().unwrap_or_default();
    if line.ends_with("HTTP/1.1") { line.to_string() } else { format!("({} bytes of a body)", chunk.len()) }
}

/// The vhost of the test broker, for `rabbitmqctl -p`.
fn vhost(amqp: &str) -> String {
    let path = amqp.rsplit_once('/').map_or("", |(_, v)| v);
    if path.is_empty() { "/".into() } else { path.replace("%2f", "/").replace("%2F", "/") }
}

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The broker connection that carries the active consumer of this test's
/// batches queue (the queue's name holds the test's own prefix, so no other
/// test's connection can match), found through its channel.
fn active_uploader_connection(env: &Env) -> String {
    let vhost = vhost(&env.amqp);
    let queue = env.broker.names().batches(&xaas_core::SyncName::parse("demo").unwrap());
    let consumers = rabbitmqctl(&[
        "-q",
        "-p",
        &vhost,
        "list_consumers",
        "--no-table-headers",
        "queue_name",
        "channel_pid",
        "active",
    ]);
    let channels: Vec<&str> = consumers
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.len() == 3 && cols[0] == queue && cols[2] == "true").then_some(cols[1])
        })
        .collect();
    assert_eq!(channels.len(), 1, "one active consumer on {queue}:\n{consumers}");
    let list = rabbitmqctl(&["-q", "-p", &vhost, "list_channels", "--no-table-headers", "pid", "connection"]);
    list.lines()
        .find_map(|l| l.split_once('\t').filter(|(pid, _)| *pid == channels[0]).map(|(_, conn)| conn.to_string()))
        .unwrap_or_else(|| panic!("the connection of channel {} in:\n{list}", channels[0]))
}

fn count(events: &[RunEvent], pred: impl Fn(&EventKind) -> bool) -> usize {
    events.iter().filter(|e| pred(&e.kind)).count()
}

/// Defect 3: two uploaders, and the active one's broker connection is
/// closed while it waits out the cooldown. The standby takes over; the old
/// one must make no Okta call after that point. Before the fix its
/// connection recovered, it finished its sleep, had its create refused,
/// adopted the other's session and loaded into it, the two counting that
/// session's requests separately.
///
/// About 2,000 users in 20-profile requests: two sessions, and the
/// takeover happens in the cooldown between them.
#[tokio::test(flavor = "multi_thread")]
async fn an_uploader_whose_connection_is_closed_in_the_cooldown_stops_acting() {
    let cooldown = Duration::from_secs(10);
    let opts = Options {
        seed_csv: false,
        generate: Some(3_000),
        cooldown,
        import_duration: Duration::from_millis(300),
        page_size: 100,
        ..Options::default()
    };
    let mut env = Env::start("reg-fence", opts).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    let limits = "[syncs.demo.limits]\nprofiles_per_request = 20\n";
    std::fs::write(&env.config, text.replace("[syncs.demo.limits]\n", limits)).unwrap();

    // Each uploader reaches Okta through a tap of its own.
    let taps = [OktaTap::start(env.sim.addr).await, OktaTap::start(env.sim.addr).await];
    let labels = ["uploader-a", "uploader-b"];
    env.spawn_worker("fetcher", "fetcher");
    env.spawn_worker("mapper", "mapper");
    for (label, tap) in labels.iter().zip(&taps) {
        let url = tap.url();
        env.spawn_worker_env("uploader", label, &[("XAAS__SYNCS__DEMO__TARGET__OKTA_URL", Some(&url))]);
    }
    let run = env.enqueue(&[]).await;

    // The first session is open: the active consumer is settled.
    env.watch_run(&run, "the first session", Duration::from_secs(120), |e| {
        count(e, |k| matches!(k, EventKind::SessionOpened { .. })) >= 1
    })
    .await;
    let connection = tokio::task::block_in_place(|| active_uploader_connection(&env));

    // The moment the active uploader starts waiting out the cooldown.
    let deadline = Instant::now() + Duration::from_secs(120);
    let old = loop {
        if let Some(i) = labels.iter().position(|l| env.log(l).contains("waiting out Okta's cooldown")) {
            break i;
        }
        assert!(Instant::now() < deadline, "no uploader waited out a cooldown within 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sessions_then = env.sessions().await.len();
    tokio::task::block_in_place(|| {
        rabbitmqctl(&["close_connection", &connection, "regression test: the uploader's connection is lost"])
    });
    let closed = Instant::now();
    assert_eq!(env.sessions().await.len(), sessions_then, "the connection was closed inside the cooldown wait");

    // The run ends, or the bound passes.
    let deadline = Instant::now() + Duration::from_secs(150);
    let events = loop {
        let events: Vec<RunEvent> = env.events().await.into_iter().filter(|e| e.run_id.as_str() == run).collect();
        let ended = |k: &EventKind| matches!(k, EventKind::RunCompleted { .. } | EventKind::RunFailed { .. });
        if count(&events, ended) > 0 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let after = taps[old].since(closed);
    assert!(
        after.is_empty(),
        "{} called Okta {} times after its broker connection was closed, e.g. {:?}",
        labels[old],
        after.len(),
        &after[..after.len().min(5)]
    );
    let refused = env.okta_refusals().await;
    assert!(refused.is_empty(), "Okta refused {} requests: {refused:?}", refused.len());
    assert!(
        count(&events, |k| matches!(k, EventKind::RunCompleted { .. } | EventKind::RunFailed { .. })) > 0,
        "the run did not end within 150 s of the takeover"
    );
    let (_, requests, sessions) = env.assert_synced_exactly(&events, cooldown).await;
    assert!(sessions >= 2 && requests > 50, "a run of several sessions: {requests} requests, {sessions} sessions");
    assert!(!taps[1 - old].since(closed).is_empty(), "the standby took over");
    env.finish().await;
}

/// `xaas enqueue --sync demo --wait --json` that gives up after `limit`.
async fn enqueue_wait_within(env: &Env, limit: &str) -> Output {
    env.run_xaas(&["enqueue", "--sync", "demo", "--wait", "--json", "--timeout", limit]).await
}

fn run_id(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_string()
}

/// Defect 6: Okta answers 500 to everything. Its failures are retried in
/// place within the sync's budget, each retry recorded, and then the run
/// fails with a reason that names Okta's error and the budget. Before the
/// fix they were retried forever, recording nothing: the run never ended.
/// Once the outage is over, the next run completes exactly.
#[tokio::test(flavor = "multi_thread")]
async fn an_okta_outage_fails_the_run_within_the_retry_budget() {
    let cooldown = Duration::from_secs(1);
    let opts = Options { seed_csv: false, generate: Some(300), cooldown, page_size: 100, ..Options::default() };
    let mut env = Env::start("reg-outage", opts).await;
    // The budget as an override of `[syncs.demo.retry]`: a build that does
    // not know the setting ignores it, and so shows its own behaviour
    // rather than refusing the configuration.
    let budget = [("XAAS__SYNCS__DEMO__RETRY__ATTEMPTS", Some("3")), ("XAAS__SYNCS__DEMO__RETRY__WITHIN", Some("60s"))];
    let down = json!({"okta": {"rate_5xx": 1.0}, "seed": 6});
    assert!(env.put("/sim/faults", down).await.is_success());
    env.spawn_worker_env("all", "worker", &budget);

    // The budget ends the run within 60 s; 90 s is the bound.
    let out = enqueue_wait_within(&env, "90s").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains('{'),
        "the run did not end within 90 s of Okta failing every call ({}): {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(r["state"]["state"], "failed", "{r}");
    assert_eq!(out.status.code(), Some(1), "a failed run exits 1: {r}");
    let reason = r["state"]["reason"].as_str().unwrap_or_else(|| panic!("the failure has a reason: {r}"));
    assert!(reason.contains("Okta failed with 500"), "the reason names Okta's error: {reason}");
    assert!(reason.contains("gave up after 3 attempts"), "the reason names the attempts: {reason}");
    assert!(reason.contains("attempts = 3, within = 60s"), "the reason names the budget: {reason}");

    let run = run_id(&out);
    let events: Vec<RunEvent> = env.events().await.into_iter().filter(|e| e.run_id.as_str() == run).collect();
    let retries: Vec<(u32, &str)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Retrying { stage, attempt, reason } if stage == "uploader" => Some((*attempt, reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(retries.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [1, 2], "each retry recorded: {retries:?}");
    assert!(retries.iter().all(|(_, why)| why.contains("500")), "{retries:?}");
    assert_eq!(r["retries"].as_u64(), Some(retries.len() as u64), "the report counts them: {r}");
    let injected = env.get("/sim/faults").await["injected"]["okta"]["rate_5xx"].as_u64().unwrap();
    assert!(injected >= 3, "Okta failed {injected} calls");

    // The outage is over: the next run completes, exactly.
    assert!(env.delete("/sim/faults").await.is_success());
    let out = enqueue_wait_within(&env, "90s").await;
    completed(&out);
    let run = run_id(&out);
    let events: Vec<RunEvent> = env.events().await.into_iter().filter(|e| e.run_id.as_str() == run).collect();
    env.assert_synced_exactly(&events, cooldown).await;
    env.finish().await;
}
