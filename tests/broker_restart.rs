//! RabbitMQ restarts mid-run: the workers reconnect, re-send what was in
//! flight, and the run completes with every guarantee (DESIGN §6.6).
//!
//! Restarting the shared broker would break every other test running at the
//! same time, so this test starts a RabbitMQ node of its own: its own node
//! name, AMQP and distribution ports, data and log directories and Erlang
//! cookie, all under a temporary directory, bound to loopback. Only this
//! test's workers talk to it. The node is started with RabbitMQ's own
//! scripts, run as the current user (Debian's `/usr/sbin` wrappers would
//! `su` to the `rabbitmq` user, which needs root); if they are missing the
//! test fails and says so, it never passes without having restarted a broker.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Env, Options};
use xaas_core::{EventKind, RunEvent};

const COOLDOWN: Duration = Duration::from_secs(1);

/// A private RabbitMQ node; stopped and deleted on drop.
struct PrivateNode {
    name: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    scripts: PathBuf,
}

/// Where RabbitMQ's server scripts are: Debian's package keeps the real
/// ones (not the `su` wrappers) in /usr/lib/rabbitmq/bin; elsewhere the ones
/// on PATH run as the calling user anyway.
fn scripts_dir() -> PathBuf {
    let debian = Path::new("/usr/lib/rabbitmq/bin");
    if debian.join("rabbitmq-server").exists() {
        return debian.to_path_buf();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("rabbitmq-server").exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "tests/broker_restart.rs starts a RabbitMQ node of its own and needs RabbitMQ's server \
             scripts (rabbitmq-server, rabbitmqctl): install the rabbitmq-server package"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PrivateNode {
    fn start() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("xaas-rabbit-{}", &id[..8]));
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let node = PrivateNode {
            name: format!("xaas-test-{}@localhost", &id[..8]),
            port: free_port(),
            dist_port: free_port(),
            dir,
            scripts: scripts_dir(),
        };
        // Its own config file, so that the shared node's (which names port
        // 5672) is never read; an empty env file for the same reason.
        std::fs::write(node.dir.join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{}\n", node.port))
            .unwrap();
        std::fs::write(node.dir.join("rabbitmq-env.conf"), "").unwrap();
        node.launch();
        node
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, script: &str) -> Command {
        let d = &self.dir;
        let mut cmd = Command::new(self.scripts.join(script));
        cmd.env("HOME", d.join("home")) // the Erlang cookie of this node and its CLI
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}");
        cmd
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.command("rabbitmqctl").args(["-n", &self.name]).args(args).output().expect("rabbitmqctl runs")
    }

    fn ctl_ok(&self, args: &[&str]) {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} on {}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the Erlang VM and the broker, and waits until it takes AMQP.
    fn launch(&self) {
        let out = self.command("rabbitmq-server").arg("-detached").output().expect("rabbitmq-server runs");
        assert!(out.status.success(), "rabbitmq-server -detached: {}", String::from_utf8_lossy(&out.stderr));
        // await_startup fails until the node has registered; retry.
        for _ in 0..90 {
            if self.ctl(&["await_startup", "--timeout", "60"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("the private RabbitMQ node {} did not start; see its logs in {}", self.name, self.dir.display());
    }

    /// Stops the broker application; the VM stays up (like a broker that
    /// is restarting). Connections are closed with CONNECTION_FORCED.
    fn stop_app(&self) {
        self.ctl_ok(&["stop_app"]);
    }

    fn start_app(&self) {
        self.ctl_ok(&["start_app"]);
        self.ctl_ok(&["await_startup", "--timeout", "60"]);
    }

    /// Stops the whole node (the process exits), then starts it again on
    /// the same data: a real broker restart.
    fn restart(&self) {
        self.ctl_ok(&["stop"]);
        self.launch();
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The run's events, read through a broker that may be recovering: errors
/// are retried until `timeout`.
async fn run_events(env: &Env, run: &str, timeout: Duration) -> Vec<RunEvent> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match env.broker.read_all_events().await {
            Ok(all) => return all.into_iter().filter(|e| e.run_id.as_str() == run).collect(),
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "cannot read the events stream: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the run completed or failed; returns its events.
async fn wait_end(env: &Env, run: &str) -> Vec<RunEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let events = run_events(env, run, Duration::from_secs(120)).await;
        if events.iter().any(|e| matches!(e.kind, EventKind::RunCompleted { .. } | EventKind::RunFailed { .. })) {
            return events;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for the run to end");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Bulk requests Okta has accepted so far. Progress is read from the
/// sandbox rather than the events stream: a stream read lasts until the
/// stream goes quiet, which it does not while a run is busy.
async fn accepted(env: &Env) -> usize {
    env.sessions().await.iter().map(|s| s["requests"].as_array().unwrap().len()).sum()
}

async fn wait_accepted(env: &Env, n: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let now = accepted(env).await;
        if now >= n {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {n} bulk requests");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_run_survives_two_broker_restarts() {
    let node = tokio::task::spawn_blocking(PrivateNode::start).await.unwrap();
    let opts = Options {
        seed_csv: false,
        generate: Some(20_000),
        cooldown: COOLDOWN,
        import_duration: Duration::from_millis(200),
        page_size: 500,
        amqp_url: Some(node.url()),
        ..Options::default()
    };
    let mut env = Env::start("broker-restart", opts).await;
    // Okta a little slow, so that the run is still uploading at the restarts.
    assert!(env.put("/sim/faults", serde_json::json!({"okta": {"latency_ms": 250}})).await.is_success());
    for role in ["fetcher", "mapper", "uploader"] {
        env.spawn_worker(role, role);
    }
    let run = env.enqueue(&[]).await;
    let node = std::sync::Arc::new(node);

    // 1. The broker application stops and comes back, mid-upload.
    let first = wait_accepted(&env, 10).await;
    let n = node.clone();
    tokio::task::spawn_blocking(move || {
        n.stop_app();
        std::thread::sleep(Duration::from_secs(3));
        n.start_app();
    })
    .await
    .unwrap();

    // 2. The whole node stops and starts again, later in the run.
    let second = wait_accepted(&env, first + 15).await;
    let n = node.clone();
    tokio::task::spawn_blocking(move || n.restart()).await.unwrap();

    let events = wait_end(&env, &run).await;
    let (_, requests, _) = env.assert_synced_exactly(&events, COOLDOWN).await;
    assert!(second < requests as usize, "the upload went on after the second restart ({second} of {requests})");
    for role in ["fetcher", "mapper", "uploader"] {
        // An idle worker may still be reconnecting when the run ends.
        wait_reconnects(&env, role, 2).await;
        assert!(env.worker_running(role), "{role} rode out the restarts instead of exiting:\n{}", env.log(role));
    }
    env.finish().await;
    drop(node);
}

/// Recoveries in a worker's log: a re-established connection after lapin
/// reported the old one lost. (The first connection may or may not be
/// logged as "established" too, so plain counting would be off by one.)
fn reconnects(env: &Env, label: &str) -> usize {
    let mut lost = false;
    let mut n = 0;
    for line in env.log(label).lines() {
        if line.contains("lapin::") {
            lost = true;
        } else if line.contains("connection (re)established") && lost {
            n += 1;
            lost = false;
        }
    }
    n
}

async fn wait_reconnects(env: &Env, label: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while reconnects(env, label) < n {
        assert!(tokio::time::Instant::now() < deadline, "{label} did not reconnect {n} times:\n{}", env.log(label));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The uploader holds the deliveries of a partly filled request while it
/// waits for more batches. When the broker restarts, those deliveries come
/// again on the new channel (the old channel's acks can no longer reach the
/// broker). The uploader must keep the new deliveries unacked until their
/// profiles are loaded: if it acked them as duplicates and then died, their
/// profiles would be lost and the run could never finish.
#[tokio::test(flavor = "multi_thread")]
async fn batches_held_across_a_broker_restart_survive_an_uploader_crash() {
    let node = std::sync::Arc::new(tokio::task::spawn_blocking(PrivateNode::start).await.unwrap());
    let opts = Options {
        seed_csv: false,
        generate: Some(6_000),
        cooldown: COOLDOWN,
        import_duration: Duration::from_millis(200),
        page_size: 500,
        amqp_url: Some(node.url()),
        ..Options::default()
    };
    let mut env = Env::start("broker-held", opts).await;
    let batches = format!("{}.batches.demo", env.prefix);
    // The pages stop mid-run: the fetcher dies after publishing its 4th.
    env.spawn_worker_env("fetcher", "fetcher", &[("XAAS_CRASH_AT", Some("fetcher.after_page_published:4"))]);
    env.spawn_worker("mapper", "mapper");
    env.spawn_worker("uploader", "uploader");
    let run = env.enqueue(&[]).await;
    env.wait_worker_exit("fetcher", Duration::from_secs(120)).await;

    // The four pages are mapped (and acked by the mapper); the uploader sends
    // the whole requests and holds the batches of the partial one, unacked.
    let pages = format!("{}.pages", env.prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let held = loop {
        let before = (queue(&node, &pages).await, queue(&node, &batches).await, accepted(&env).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = (queue(&node, &pages).await, queue(&node, &batches).await, accepted(&env).await);
        let (p, b, _) = after;
        if before == after && p.ready + p.unacked == 0 && b.ready == 0 && b.unacked > 0 {
            break b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the uploader never settled holding a partial request: {after:?}"
        );
    };
    let so_far = run_events(&env, &run, Duration::from_secs(10)).await;
    assert!(!so_far.iter().any(|e| matches!(e.kind, EventKind::RunCompleted { .. })), "the run is not over");

    let before = reconnects(&env, "uploader");
    let n = node.clone();
    tokio::task::spawn_blocking(move || {
        n.stop_app();
        std::thread::sleep(Duration::from_secs(2));
        n.start_app();
    })
    .await
    .unwrap();
    wait_reconnects(&env, "uploader", before + 1).await;
    // The broker hands the held batches to the uploader again...
    queue_until(&node, &batches, "the uploader to consume again", |q| q.consumers == 1 && q.ready == 0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // ...and the uploader must keep them unacked: their profiles are not loaded.
    let after = queue(&node, &batches).await;
    assert_eq!(after.unacked, held.unacked, "the held batches stay unacked after the restart ({after:?})");

    // The uploader dies; its successor gets the batches, and the run finishes.
    env.kill_worker("uploader");
    env.spawn_worker("fetcher", "fetcher-2");
    env.spawn_worker("uploader", "uploader-2");
    let events = wait_end(&env, &run).await;
    env.assert_synced_exactly(&events, COOLDOWN).await;
    env.finish().await;
}

/// A queue's counts, as `rabbitmqctl list_queues` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct QueueState {
    ready: u64,
    unacked: u64,
    consumers: u64,
}

async fn queue(node: &std::sync::Arc<PrivateNode>, name: &str) -> QueueState {
    let (node, name) = (node.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let out = node.ctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() == 4 && f[0] == name)
            .map(|f| QueueState {
                ready: f[1].parse().unwrap(),
                unacked: f[2].parse().unwrap(),
                consumers: f[3].parse().unwrap(),
            })
            .unwrap_or_default()
    })
    .await
    .unwrap()
}

async fn queue_until(
    node: &std::sync::Arc<PrivateNode>,
    name: &str,
    what: &str,
    pred: impl Fn(&QueueState) -> bool,
) -> QueueState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let q = queue(node, name).await;
        if pred(&q) {
            return q;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {name} is {q:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
