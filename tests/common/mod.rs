//! The end-to-end harness: a sandbox in this process, the real `xaas`
//! binary as worker processes, the real broker. Each `Env` has its own
//! queue prefix, so tests run in parallel on one broker.

#![allow(dead_code)]

pub mod console;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use xaas_broker::{Broker, BrokerConfig};
use xaas_core::RunEvent;
use xaas_core::mapping::{MapOutcome, MappingRules, map_user};
use xaas_core::{Op, SyncName};
use xaas_sim::SimConfig;
use xaas_sim::app::RunningSim;

pub const GRAPH_SECRET: &str = "e2e-graph-secret-value-7f3a";
pub const OKTA_TOKEN: &str = "e2e-okta-token-value-91c2";

/// The broker the tests use, chosen once per test process (`choose_broker`):
/// the one at `AMQP_URL` when it answers, else a RabbitMQ that
/// testcontainers starts when a Docker daemon answers, else the process
/// stops at once with one line saying how to start a broker.
pub fn amqp_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let url = std::env::var("AMQP_URL").unwrap_or_else(|_| BrokerConfig::DEFAULT_URL.to_string());
        match choose_broker(&url, answers(&url), docker_answers()) {
            BrokerChoice::Use(url) => url,
            BrokerChoice::StartContainer => std::thread::spawn(start_rabbitmq).join().unwrap_or_else(|_| {
                advise(&format!("nothing answers at AMQP_URL={url} and testcontainers could not start RabbitMQ"))
            }),
            BrokerChoice::Advise(line) => advise(&line),
        }
    })
    .clone()
}

/// What the tests' broker is.
#[derive(Debug, PartialEq, Eq)]
pub enum BrokerChoice {
    Use(String),
    StartContainer,
    /// Neither: the one line to print.
    Advise(String),
}

/// The image testcontainers starts: the tag the compose file uses (a local
/// stand-in where no registry is reachable).
pub const RABBITMQ_TAG: &str = "4.2-management";

pub fn choose_broker(url: &str, url_answers: bool, docker: bool) -> BrokerChoice {
    match (url_answers, docker) {
        (true, _) => BrokerChoice::Use(url.to_string()),
        (false, true) => BrokerChoice::StartContainer,
        (false, false) => BrokerChoice::Advise(format!(
            "no RabbitMQ answers at AMQP_URL={} and no Docker daemon answers: start a broker (`docker run -d -p 5672:5672 rabbitmq:{RABBITMQ_TAG}`, or Debian's rabbitmq-server) and set AMQP_URL",
            xaas_core::redact::redact(url)
        )),
    }
}

/// Prints the advice and ends the test process: every test would fail the same way.
fn advise(line: &str) -> ! {
    use std::io::Write as _;
    // Not `eprintln!`: the test harness captures that, and exit would lose it.
    let _ = writeln!(std::io::stderr(), "{line}");
    std::process::exit(2)
}

/// Whether something accepts TCP at the first broker address of `url`, within a second.
fn answers(url: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(addresses) = xaas_core::broker_address::BrokerAddresses::parse(url) else { return false };
    addresses.iter().any(|a| {
        let target = format!("{}:{}", a.host(), a.port());
        target
            .to_socket_addrs()
            .ok()
            .into_iter()
            .flatten()
            .any(|sock| std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(1)).is_ok())
    })
}

/// Whether a Docker daemon answers `docker version` within a few seconds.
fn docker_answers() -> bool {
    let Ok(mut child) = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    for _ in 0..30 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Starts RabbitMQ once for this process; the container lives as long as it.
fn start_rabbitmq() -> String {
    use testcontainers_modules::rabbitmq::RabbitMq;
    use testcontainers_modules::testcontainers::ImageExt;
    use testcontainers_modules::testcontainers::runners::SyncRunner;
    static CONTAINER: std::sync::OnceLock<testcontainers_modules::testcontainers::Container<RabbitMq>> =
        std::sync::OnceLock::new();
    let container = CONTAINER
        .get_or_init(|| RabbitMq::default().with_tag(RABBITMQ_TAG).start().expect("testcontainers starts RabbitMQ"));
    let port = container.get_host_port_ipv4(5672).expect("RabbitMQ's port is published");
    eprintln!("no broker at AMQP_URL: started rabbitmq:{RABBITMQ_TAG} with testcontainers on port {port}");
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// How a test wants its world.
#[derive(Clone)]
pub struct Options {
    pub seed_csv: bool,
    pub generate: Option<usize>,
    pub other_dept_share: f64,
    /// Share of generated users that are disabled; `None` keeps the sandbox's 10 %.
    pub disabled_share: Option<f64>,
    pub cooldown: Duration,
    pub import_duration: Duration,
    pub page_size: u16,
    /// The broker of this test when it is not the shared one at `AMQP_URL`
    /// (tests/broker_restart.rs runs its own node).
    pub amqp_url: Option<String>,
    /// The sandbox's Okta rate-limit window (Okta's is 60 s), so that an
    /// injected 429's reset is seconds away.
    pub rate_limit_window: Option<Duration>,
    /// Okta auth by an OAuth service app (private_key_jwt) instead of an API token.
    pub service_app: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed_csv: true,
            generate: None,
            other_dept_share: 0.3,
            disabled_share: None,
            cooldown: Duration::from_secs(2),
            import_duration: Duration::from_millis(300),
            page_size: 999,
            amqp_url: None,
            rate_limit_window: None,
            service_app: false,
        }
    }
}

pub struct Env {
    pub sim: RunningSim,
    pub prefix: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub broker: Broker,
    pub http: reqwest::Client,
    /// The broker the test and its workers use.
    pub amqp: String,
    workers: Vec<(String, Child)>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `xaas` binary under test. `XAAS_TEST_BIN` runs the suites against
/// another build, e.g. the code before a fix, to see a regression test fail.
pub fn bin() -> PathBuf {
    std::env::var_os("XAAS_TEST_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_xaas")))
}

impl Env {
    pub async fn start(name: &str, opts: Options) -> Env {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("t-{name}-{}", &id[..8]);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();

        let mut cfg = SimConfig::defaults();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.cooldown = opts.cooldown;
        cfg.import_duration = opts.import_duration;
        cfg.graph_client_secret = GRAPH_SECRET.into();
        cfg.okta_token = OKTA_TOKEN.into();
        cfg.rate_limit_per_minute = 100_000;
        if let Some(window) = opts.rate_limit_window {
            cfg.rate_limit_window = window;
        }
        cfg.generate_other_dept_share = opts.other_dept_share;
        if let Some(share) = opts.disabled_share {
            cfg.generate_disabled_share = share;
        }
        if opts.service_app {
            cfg.okta_public_key = Some(repo().join("crates/sim/tests/fixtures/okta-test-service-app.pub.pem"));
        }
        if opts.generate.is_some() {
            cfg.generate = opts.generate;
        } else if opts.seed_csv {
            cfg.seed_csv = Some(repo().join("examples/sampleUsers.csv"));
        }
        let sim = xaas_sim::app::spawn(cfg).await.expect("sandbox starts");

        let amqp = opts.amqp_url.clone().unwrap_or_else(amqp_url);
        let config = dir.join("xaas.toml");
        std::fs::write(&config, config_text(&sim.base_url(), &prefix, &opts, &amqp)).unwrap();

        let mut bcfg = BrokerConfig::new(amqp.parse().expect("AMQP_URL is a valid broker address"));
        bcfg.prefix.clone_from(&prefix);
        bcfg.connection_name = format!("{prefix}-test");
        // The workers' tiers, so that `finish` deletes the retry queues they declared.
        bcfg.retry_tiers = retry_tiers();
        let broker = Broker::connect(bcfg).await.expect("broker answers");
        broker.declare().await.unwrap();
        let http = reqwest::Client::new();
        Env { sim, prefix, dir, config, broker, http, amqp, workers: Vec::new() }
    }

    pub fn base(&self) -> String {
        self.sim.base_url()
    }

    /// The `xaas` binary with this test's config and secrets.
    pub fn xaas(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env("XAAS_CONFIG", &self.config)
            .env("AMQP_URL", &self.amqp)
            .env("XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET", GRAPH_SECRET)
            .env("XAAS_SYNC_DEMO_OKTA_TOKEN", OKTA_TOKEN)
            .env("RUST_LOG", "info,lapin=warn")
            .current_dir(repo());
        cmd
    }

    /// Starts `xaas worker <role>`, its log in `<dir>/<label>.log`.
    pub fn spawn_worker(&mut self, role: &str, label: &str) {
        self.spawn_xaas(label, &["worker", role], &[]);
    }

    pub fn log_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.log"))
    }

    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.log_path(label)).unwrap_or_default()
    }

    /// `kill -9` the worker.
    pub fn kill_worker(&mut self, label: &str) {
        if let Some((_, child)) = self.workers.iter_mut().find(|(l, _)| l == label) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the worker and wait for its exit status.
    pub fn terminate_worker(&mut self, label: &str) -> Option<std::process::ExitStatus> {
        let (_, child) = self.workers.iter_mut().find(|(l, _)| l == label)?;
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().ok()?;
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// `xaas enqueue --sync demo --wait --json <extra>`, in a blocking task.
    pub async fn enqueue_wait(&self, extra: &[&str]) -> Output {
        let mut cmd = self.xaas();
        cmd.args(["enqueue", "--sync", "demo", "--wait", "--json", "--timeout", "15m"]).args(extra);
        tokio::task::spawn_blocking(move || cmd.output().expect("enqueue runs")).await.unwrap()
    }

    /// `xaas enqueue --sync demo <extra>` without waiting; returns the run id.
    pub async fn enqueue(&self, extra: &[&str]) -> String {
        let mut cmd = self.xaas();
        cmd.args(["enqueue", "--sync", "demo"]).args(extra);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("enqueue runs")).await.unwrap();
        assert!(out.status.success(), "enqueue failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base())).send().await.unwrap().json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::StatusCode {
        self.http.post(format!("{}{path}", self.base())).json(&body).send().await.unwrap().status()
    }

    pub async fn patch(&self, path: &str, body: Value) -> reqwest::StatusCode {
        self.http.patch(format!("{}{path}", self.base())).json(&body).send().await.unwrap().status()
    }

    pub async fn delete(&self, path: &str) -> reqwest::StatusCode {
        self.http.delete(format!("{}{path}", self.base())).send().await.unwrap().status()
    }

    /// externalId → (status, profile) of the sandbox's Okta store.
    pub async fn okta_users(&self) -> BTreeMap<String, (String, Value)> {
        let users = self.get("/sim/okta/users").await;
        users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["externalId"].as_str().unwrap().to_string(),
                    (u["status"].as_str().unwrap().to_string(), u["profile"].clone()),
                )
            })
            .collect()
    }

    pub async fn sessions(&self) -> Vec<Value> {
        self.get("/sim/okta/sessions").await.as_array().unwrap().clone()
    }

    pub async fn source_users(&self) -> Vec<Value> {
        self.get("/sim/users").await.as_array().unwrap().clone()
    }

    pub async fn events(&self) -> Vec<RunEvent> {
        self.broker.read_all_events().await.unwrap()
    }

    /// Waits until `pred` holds over the events stream, or panics.
    pub async fn wait_for_events(&self, what: &str, timeout: Duration, pred: impl Fn(&[RunEvent]) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let events = self.events().await;
            if pred(&events) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Stops the workers and removes the test's queues.
    pub async fn finish(mut self) {
        for (_, child) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The workers declared the sync's batches queue and roster stream.
        self.broker.delete_sync(&SyncName::parse("demo").unwrap());
        let _ = self.broker.delete_everything().await;
        self.broker.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (_, child) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // A failed test never reaches `finish`: remove its queues anyway.
            // Left behind, they pile up on the shared broker, and each quorum
            // queue holds file handles; a broker out of them stops accepting
            // connections, failing every test after. The log dir is kept.
            let (amqp, prefix) = (self.amqp.clone(), self.prefix.clone());
            let _ = std::thread::spawn(move || delete_topology(&amqp, &prefix)).join();
        }
    }
}

/// Deletes the queues and exchanges of `prefix`, on a runtime of its own
/// (the test's may be unwinding). Best effort, bounded in time.
fn delete_topology(amqp: &str, prefix: &str) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        let Ok(addresses) = amqp.parse() else { return };
        let mut cfg = BrokerConfig::new(addresses);
        cfg.prefix = prefix.to_string();
        cfg.connection_name = format!("{prefix}-cleanup");
        cfg.retry_tiers = retry_tiers();
        cfg.connect_timeout = Duration::from_secs(10);
        let Ok(broker) = Broker::connect(cfg).await else { return };
        if let Ok(demo) = SyncName::parse("demo") {
            broker.delete_sync(&demo);
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), broker.delete_everything()).await;
        broker.close().await;
    });
}

/// The retry tiers `config_text` gives the workers.
fn retry_tiers() -> Vec<Duration> {
    vec![Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(2)]
}

fn config_text(base: &str, prefix: &str, opts: &Options, amqp: &str) -> String {
    let cooldown_ms = opts.cooldown.as_millis();
    let page_size = opts.page_size;
    let auth = if opts.service_app {
        let key = repo().join("crates/sim/tests/fixtures/okta-test-service-app.key.pem");
        format!(
            "auth = \"service_app\"\nclient_id = \"{}\"\nkey_id = \"sandbox-key-1\"\nprivate_key_file = \"{}\"",
            SimConfig::defaults().okta_client_id,
            key.display()
        )
    } else {
        "auth = \"api_token\"".to_string()
    };
    format!(
        r#"[broker]
url = "{amqp}"
prefix = "{prefix}"
retry_tiers = ["200ms", "1s", "2s"]
max_attempts = 8

[syncs.demo.source]
tenant = "sandbox-tenant"
client_id = "sandbox-client"
authority_url = "{base}"
graph_url = "{base}"
page_size = {page_size}
filter = "accountEnabled eq true"

[syncs.demo.filter]
department = "Okta Workflows"

[syncs.demo.target]
okta_url = "{base}"
identity_source_id = "0oasandbox00000000001"
{auth}

[syncs.demo.limits]
cooldown = "{cooldown_ms}ms"
"#
    )
}

/// The demo sync's mapping rules, as the workers parse them.
pub fn rules(env: &Env) -> MappingRules {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let config = xaas_core::config::Config::parse(&text, &|_| None).unwrap();
    config.sync(&SyncName::parse("demo").unwrap()).unwrap().rules.clone()
}

/// What a full sync must leave in Okta: every enabled source user that
/// passes the filter, mapped.
pub fn expected_store(rules: &MappingRules, source: &[Value]) -> BTreeMap<String, Value> {
    source
        .iter()
        .filter(|u| u["accountEnabled"] == Value::Bool(true))
        .filter_map(|u| match map_user(rules, u, Op::Upsert) {
            MapOutcome::Mapped(p) => {
                Some((p.external_id.to_string(), serde_json::to_value(p.profile.unwrap_or_default()).unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// DESIGN §6 checked on the sandbox's session log. Returns the totals
/// (profiles, requests, sessions) for further assertions.
pub fn check_invariants(sessions: &[Value], cooldown: Duration) -> (u64, u64, u64) {
    let mut profiles = 0;
    let mut requests = 0;
    let mut used = 0;
    let ts = |v: &Value| -> Option<time::OffsetDateTime> {
        v.as_str().and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
    };
    let mut previous: Option<&Value> = None;
    for s in sessions {
        let reqs = s["requests"].as_array().unwrap();
        assert!(reqs.len() <= 50, "session {} got {} bulk requests", s["id"], reqs.len());
        for r in reqs {
            let n = r["profiles"].as_u64().unwrap();
            let bytes = r["bodyBytes"].as_u64().unwrap();
            assert!(n <= 200, "a request carried {n} profiles");
            assert!(bytes <= 204_800, "a request carried {bytes} bytes");
            profiles += n;
        }
        requests += reqs.len() as u64;
        if !reqs.is_empty() {
            used += 1;
        }
        let created = ts(&s["created"]).expect("created");
        if let Some(prev) = previous {
            // Never two open sessions: the previous one stopped taking loads
            // (triggered, or closed) before this one was created.
            let prev_end = ts(&prev["triggeredAt"]).or_else(|| ts(&prev["lastUpdated"])).expect("previous ended");
            assert!(created >= prev_end, "session {} created while {} was open", s["id"], prev["id"]);
            if let Some(triggered) = ts(&prev["triggeredAt"]) {
                assert!(
                    created - triggered >= cooldown,
                    "session {} created {} after the trigger of {}, inside the cooldown",
                    s["id"],
                    created - triggered,
                    prev["id"]
                );
            }
        }
        previous = Some(s);
    }
    (profiles, requests, used)
}

// --- helpers of the fault suite (tests/poison.rs, bad_input.rs, startup.rs) ---

impl Env {
    /// Starts `xaas worker <role>` like [`Env::spawn_worker`], with `env`
    /// changed: `Some(value)` sets a variable, `None` removes it.
    pub fn spawn_worker_env(&mut self, role: &str, label: &str, env: &[(&str, Option<&str>)]) {
        self.spawn_xaas(label, &["worker", role], env);
    }

    /// Whether the worker process is still running.
    pub fn worker_running(&mut self, label: &str) -> bool {
        self.workers.iter_mut().find(|(l, _)| l == label).is_some_and(|(_, child)| matches!(child.try_wait(), Ok(None)))
    }

    /// Every worker log of this test, by label.
    pub fn all_logs(&self) -> Vec<(String, String)> {
        self.workers.iter().map(|(label, _)| (label.clone(), self.log(label))).collect()
    }

    /// `xaas <args>` with this test's config and secrets, in a blocking task.
    pub async fn run_xaas(&self, args: &[&str]) -> Output {
        let mut cmd = self.xaas();
        cmd.args(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("xaas runs")).await.unwrap()
    }

    /// `xaas <args>` like [`Env::run_xaas`], with `env` changed as in
    /// [`Env::spawn_worker_env`].
    pub async fn run_xaas_env(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let mut cmd = self.xaas();
        for (key, value) in env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.args(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("xaas runs")).await.unwrap()
    }

    /// `xaas enqueue --sync demo --wait --json` with `env` changed as in
    /// [`Env::spawn_worker_env`].
    pub async fn enqueue_wait_env(&self, env: &[(&str, Option<&str>)]) -> Output {
        let mut cmd = self.xaas();
        for (key, value) in env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.args(["enqueue", "--sync", "demo", "--wait", "--json", "--timeout", "15m"]);
        tokio::task::spawn_blocking(move || cmd.output().expect("enqueue runs")).await.unwrap()
    }

    pub async fn put(&self, path: &str, body: Value) -> reqwest::StatusCode {
        self.http.put(format!("{}{path}", self.base())).json(&body).send().await.unwrap().status()
    }

    /// A second handle on this test's broker objects that may publish bodies
    /// up to `max_message_bytes` (to put oversize messages on the queues).
    pub async fn broker_with_limit(&self, max_message_bytes: usize) -> Broker {
        let mut cfg = BrokerConfig::new(self.amqp.parse().expect("AMQP_URL is a valid broker address"));
        cfg.prefix.clone_from(&self.prefix);
        cfg.connection_name = format!("{}-raw", self.prefix);
        cfg.max_message_bytes = max_message_bytes;
        Broker::connect(cfg).await.expect("broker answers")
    }

    /// Waits until the parked queue holds at least `n` messages; returns them.
    pub async fn wait_parked(&self, n: usize, timeout: Duration) -> Vec<xaas_broker::ParkedMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Counting is cheap; a listing moves every (maybe 4 MiB) body.
            let count = self.broker.parked_count().await.unwrap() as usize;
            if count >= n {
                return self.broker.parked_list(count + 100).await.unwrap();
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {n} parked messages, have {count}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The JSON report `xaas enqueue --wait --json` printed after the run id.
pub fn json_report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout.find('{').unwrap_or_else(|| {
        panic!("no JSON report in stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    serde_json::from_str(&stdout[start..]).expect("the report is JSON")
}

// --- helpers of the crash suite (tests/kills.rs, broker_restart.rs, faults.rs) ---

impl Env {
    /// Starts `xaas <args>` as a worker labelled `label` (log in
    /// `<dir>/<label>.log`), with `env` changed as in [`Env::spawn_worker_env`].
    pub fn spawn_xaas(&mut self, label: &str, args: &[&str], env: &[(&str, Option<&str>)]) {
        let log = std::fs::File::create(self.log_path(label)).unwrap();
        let mut cmd = self.xaas();
        for (key, value) in env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        let child = cmd.args(args).stdout(Stdio::null()).stderr(log).spawn().expect("worker starts");
        self.workers.push((label.to_string(), child));
    }

    /// Waits until the worker exits by itself; panics after `timeout`.
    pub async fn wait_worker_exit(&mut self, label: &str, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, child) = self.workers.iter_mut().find(|(l, _)| l == label).expect("a worker with this label");
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker {label} still running after {timeout:?}; its log:\n{}",
                self.log(label)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Follows the events stream live until the events of `run` satisfy
    /// `pred`, and returns them. Unlike [`Env::wait_for_events`], whose read
    /// lasts until the stream goes quiet (it does not while a run is busy),
    /// this returns as soon as the moment has come, so a test can act on it.
    pub async fn watch_run(
        &self,
        run: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[RunEvent]) -> bool,
    ) -> Vec<RunEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream = self.broker.events_since(xaas_broker::StreamOffset::First).await.unwrap();
        let mut seen = Vec::new();
        while !pred(&seen) {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => panic!("timed out waiting for {what}"),
                Ok(None) => panic!("the events stream closed while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("reading the events stream while waiting for {what}: {e}"),
                Ok(Some(Ok((_, event)))) if event.run_id.as_str() == run => seen.push(event),
                Ok(Some(Ok(_))) => {}
            }
        }
        stream.close().await;
        seen
    }

    /// Every request the sandbox's Okta refused (not injected faults).
    /// The sandbox's refusals whose error causes contain `text`.
    pub async fn refusals_citing(&self, text: &str) -> Vec<Value> {
        self.okta_refusals().await.into_iter().filter(|r| r["errorCauses"].to_string().contains(text)).collect()
    }

    pub async fn okta_refusals(&self) -> Vec<Value> {
        self.get("/sim/okta/refused").await.as_array().unwrap().clone()
    }

    /// Waits until `run` completed or failed; returns its events.
    pub async fn wait_run_end(&self, run: &str, timeout: Duration) -> Vec<RunEvent> {
        use xaas_core::EventKind;
        self.wait_for_events("the run to end", timeout, |events| {
            events.iter().any(|e| {
                e.run_id.as_str() == run
                    && matches!(e.kind, EventKind::RunCompleted { .. } | EventKind::RunFailed { .. })
            })
        })
        .await;
        self.events().await.into_iter().filter(|e| e.run_id.as_str() == run).collect()
    }

    /// The guarantees after any trouble: the run completed, Okta holds
    /// exactly the mapped source users, DESIGN §6 holds on the sandbox's
    /// session log, and the uploader never even tried a 51st request (the
    /// sandbox would refuse it, so its session log alone cannot show that).
    /// Returns (profiles, requests, sessions) as `check_invariants`.
    pub async fn assert_synced_exactly(&self, run_events: &[RunEvent], cooldown: Duration) -> (u64, u64, u64) {
        use xaas_core::EventKind;
        let failed: Vec<_> =
            run_events.iter().filter(|e| matches!(e.kind, EventKind::RunFailed { .. })).map(|e| &e.kind).collect();
        assert!(failed.is_empty(), "the run failed: {failed:?}");
        assert!(run_events.iter().any(|e| matches!(e.kind, EventKind::RunCompleted { .. })), "the run completed");
        let expected = expected_store(&rules(self), &self.source_users().await);
        let store = self.okta_users().await;
        let missing: Vec<&String> = expected.keys().filter(|id| !store.contains_key(*id)).take(5).collect();
        let extra: Vec<&String> = store.keys().filter(|id| !expected.contains_key(*id)).take(5).collect();
        assert!(missing.is_empty() && extra.is_empty(), "store differs: missing {missing:?}, unexpected {extra:?}");
        for (id, profile) in &expected {
            let (status, got) = &store[id];
            assert_eq!((status.as_str(), got), ("ACTIVE", profile), "user {id}");
        }
        let over = self.refusals_citing("bulk requests, the most a session can take").await;
        assert!(over.is_empty(), "the uploader tried more than 50 requests in a session: {over:?}");
        let early = self.refusals_citing("within the cooldown").await;
        assert!(early.is_empty(), "the uploader tried to open a session inside the cooldown: {early:?}");
        let totals = check_invariants(&self.sessions().await, cooldown);
        assert!(totals.0 >= expected.len() as u64, "every user was sent at least once");
        totals
    }
}
