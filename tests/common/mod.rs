//! The end-to-end harness: a sandbox in this process, the real `xaas`
//! binary as worker processes, the real broker. Each `Env` has its own
//! queue prefix, so tests run in parallel on one broker.

#![allow(dead_code)]

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

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| BrokerConfig::DEFAULT_URL.to_string())
}

/// How a test wants its world.
#[derive(Clone)]
pub struct Options {
    pub seed_csv: bool,
    pub generate: Option<usize>,
    pub other_dept_share: f64,
    pub cooldown: Duration,
    pub import_duration: Duration,
    pub page_size: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed_csv: true,
            generate: None,
            other_dept_share: 0.3,
            cooldown: Duration::from_secs(2),
            import_duration: Duration::from_millis(300),
            page_size: 999,
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
    workers: Vec<(String, Child)>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xaas"))
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
        cfg.generate_other_dept_share = opts.other_dept_share;
        if opts.generate.is_some() {
            cfg.generate = opts.generate;
        } else if opts.seed_csv {
            cfg.seed_csv = Some(repo().join("examples/sampleUsers.csv"));
        }
        let sim = xaas_sim::app::spawn(cfg).await.expect("sandbox starts");

        let config = dir.join("xaas.toml");
        std::fs::write(&config, config_text(&sim.base_url(), &prefix, &opts)).unwrap();

        let mut bcfg = BrokerConfig::new(amqp_url());
        bcfg.prefix.clone_from(&prefix);
        bcfg.connection_name = format!("{prefix}-test");
        let broker = Broker::connect(bcfg).await.expect("broker answers");
        broker.declare().await.unwrap();
        let http = reqwest::Client::new();
        Env { sim, prefix, dir, config, broker, http, workers: Vec::new() }
    }

    pub fn base(&self) -> String {
        self.sim.base_url()
    }

    /// The `xaas` binary with this test's config and secrets.
    pub fn xaas(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env("XAAS_CONFIG", &self.config)
            .env("AMQP_URL", amqp_url())
            .env("XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET", GRAPH_SECRET)
            .env("XAAS_SYNC_DEMO_OKTA_TOKEN", OKTA_TOKEN)
            .env("RUST_LOG", "info,lapin=warn")
            .current_dir(repo());
        cmd
    }

    /// Starts `xaas worker <role>`, its log in `<dir>/<label>.log`.
    pub fn spawn_worker(&mut self, role: &str, label: &str) {
        let log = std::fs::File::create(self.log_path(label)).unwrap();
        let child =
            self.xaas().args(["worker", role]).stdout(Stdio::null()).stderr(log).spawn().expect("worker starts");
        self.workers.push((label.to_string(), child));
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
        self.broker.read_all_events(Duration::from_millis(500)).await.unwrap()
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
    }
}

fn config_text(base: &str, prefix: &str, opts: &Options) -> String {
    let cooldown_ms = opts.cooldown.as_millis();
    let amqp = amqp_url();
    let page_size = opts.page_size;
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
auth = "api_token"

[syncs.demo.limits]
cooldown = "{cooldown_ms}ms"
"#
    )
}

/// The demo sync's mapping rules, as the workers parse them.
pub fn rules(env: &Env) -> MappingRules {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let config = xaas_core::config::Config::parse(&text, &|k| match k {
        "XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET" => Some(GRAPH_SECRET.into()),
        "XAAS_SYNC_DEMO_OKTA_TOKEN" => Some(OKTA_TOKEN.into()),
        _ => None,
    })
    .unwrap();
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
