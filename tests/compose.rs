//! `docker compose up` as a newcomer runs it: the image builds, the demo
//! reports its 299 users upserted, every service is healthy, and a recreated
//! rabbitmq container keeps its data (a second run finds the roster: its
//! users are unchanged).
//!
//! It runs whenever a Docker daemon answers (`docker info`) and a compose CLI
//! is installed (`docker compose` or `docker-compose`); otherwise it prints
//! why it skipped. The first run builds the release image: many minutes.
//! XAAS_COMPOSE_TEST=0 opts out. Each run is its own compose project
//! (`xaas-test-<pid>`), publishes no fixed host port, and is torn down with
//! `down -v` at the end, also when it fails.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Which compose CLI answers: the v2 plugin, or the standalone v1.
#[derive(Clone, Copy, Debug)]
enum Cli {
    Plugin,
    Standalone,
}

fn answers(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// The compose CLI to use, or why the test cannot run here.
fn setup() -> Result<Cli, String> {
    if std::env::var("XAAS_COMPOSE_TEST").as_deref() == Ok("0") {
        return Err("XAAS_COMPOSE_TEST=0 opts out".into());
    }
    if !answers("docker", &["info"]) {
        return Err("no Docker daemon answers `docker info`".into());
    }
    if answers("docker", &["compose", "version"]) {
        Ok(Cli::Plugin)
    } else if answers("docker-compose", &["version"]) {
        Ok(Cli::Standalone)
    } else {
        Err("neither `docker compose` nor `docker-compose` is installed".into())
    }
}

/// One compose project; `down -v` when dropped, so a failed assertion leaves
/// no containers or volumes behind.
struct Project {
    cli: Cli,
    name: String,
}

impl Project {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = match self.cli {
            Cli::Plugin => {
                let mut c = Command::new("docker");
                c.arg("compose");
                c
            }
            Cli::Standalone => Command::new("docker-compose"),
        };
        cmd.args(["-p", &self.name])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            // No host port is published (Docker picks free ones), whatever
            // the caller's shell exports: a local broker on 5672 is no obstacle.
            .env_remove("XAAS_RABBITMQ_PORT")
            .env_remove("XAAS_RABBITMQ_MANAGEMENT_PORT")
            .env_remove("XAAS_SIM_PORT")
            .output()
            .expect("the compose CLI runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Every container of the project, by service, read with `docker
    /// inspect` (the same for compose v1 and v2).
    fn containers(&self) -> BTreeMap<String, Vec<Container>> {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let ids = docker(&["ps", "-a", "-q", "--filter", &label]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        let mut by_service: BTreeMap<String, Vec<Container>> = BTreeMap::new();
        if ids.is_empty() {
            return by_service;
        }
        // The JSON, not a --format template: a template's `.State.Health`
        // is an error on containers without a healthcheck.
        let mut args = vec!["inspect"];
        args.extend(&ids);
        let all: Vec<serde_json::Value> = serde_json::from_str(&docker(&args)).expect("docker inspect prints JSON");
        for c in all {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let service = text(&c["Config"]["Labels"]["com.docker.compose.service"]);
            by_service.entry(service).or_default().push(Container {
                id: text(&c["Id"]),
                status: text(&c["State"]["Status"]),
                exit_code: c["State"]["ExitCode"].as_i64().expect("an exit code"),
                health: c["State"]["Health"]["Status"].as_str().unwrap_or("none").to_string(),
            });
        }
        by_service
    }

    fn one(&self, service: &str) -> Container {
        let mut all = self.containers().remove(service).unwrap_or_default();
        assert_eq!(all.len(), 1, "one {service} container: {all:?}");
        all.remove(0)
    }

    /// Waits for the one-shot enqueue-demo to exit 0, and returns what it
    /// printed on stdout: the run's report.
    fn demo_report(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let demo = self.one("enqueue-demo");
            if demo.status == "exited" {
                let out = Command::new("docker").args(["logs", &demo.id]).output().expect("docker logs");
                let report = String::from_utf8_lossy(&out.stdout).to_string();
                assert_eq!(demo.exit_code, 0, "enqueue-demo failed: {report}{}", String::from_utf8_lossy(&out.stderr));
                return report;
            }
            assert!(Instant::now() < deadline, "the demo did not finish within {timeout:?}: {demo:?}");
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// Waits until every long-running service reports healthy (the sandbox,
    /// which has no healthcheck, is running), with the replicas the compose
    /// file asks for.
    fn all_healthy(&self, timeout: Duration) -> BTreeMap<String, Vec<Container>> {
        let expected = [("rabbitmq", 1), ("sim", 1), ("fetcher", 1), ("mapper", 2), ("uploader", 2), ("scheduler", 1)];
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.containers();
            let mut wrong = Vec::new();
            for (service, replicas) in expected {
                let cs = all.get(service).map(Vec::as_slice).unwrap_or_default();
                let want = if service == "sim" { "none" } else { "healthy" };
                if cs.len() != replicas || cs.iter().any(|c| c.status != "running" || c.health != want) {
                    wrong.push(format!("{service} (want {replicas} running, {want}): {cs:?}"));
                }
            }
            if wrong.is_empty() {
                return all;
            }
            assert!(Instant::now() < deadline, "not healthy within {timeout:?}: {wrong:#?}");
            std::thread::sleep(Duration::from_secs(3));
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.run(&["logs", "--tail", "40"]);
            eprintln!("last logs of {}:\n{}", self.name, String::from_utf8_lossy(&logs.stdout));
        }
        let down = self.run(&["down", "-v", "--remove-orphans"]);
        println!("torn down {} (down -v: {})", self.name, down.status);
    }
}

#[derive(Debug)]
#[allow(dead_code)] // Debug prints every field in assertion messages.
struct Container {
    id: String,
    status: String,
    exit_code: i64,
    health: String,
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A number of the text report, e.g. `  Upserted           299`.
fn count(report: &str, name: &str) -> Option<u64> {
    report.lines().find_map(|l| l.trim().strip_prefix(name)?.trim().parse().ok())
}

#[test]
fn compose_up_runs_the_demo_and_keeps_the_roster_across_a_rabbitmq_recreate() {
    let cli = match setup() {
        Ok(cli) => cli,
        Err(why) => {
            println!("compose test skipped: {why}");
            return;
        }
    };
    let project = Project { cli, name: format!("xaas-test-{}", std::process::id()) };
    println!("compose project {} with {cli:?}", project.name);
    let started = Instant::now();
    project.ok(&["build"]);
    println!("image built after {:.0?}", started.elapsed());

    project.ok(&["up", "-d"]);
    let first = project.demo_report(Duration::from_secs(300));
    println!("first run:\n{first}");
    assert!(first.contains(": COMPLETED"), "{first}");
    assert_eq!(count(&first, "Upserted"), Some(299), "the demo upserts the sample users: {first}");
    project.all_healthy(Duration::from_secs(120));

    let before = project.one("rabbitmq");
    project.ok(&["up", "-d", "--force-recreate", "--no-deps", "rabbitmq"]);
    let after = project.one("rabbitmq");
    assert_ne!(before.id, after.id, "rabbitmq was recreated");
    project.all_healthy(Duration::from_secs(180));

    project.ok(&["rm", "-f", "-s", "enqueue-demo"]);
    project.ok(&["up", "-d", "--no-deps", "enqueue-demo"]);
    let second = project.demo_report(Duration::from_secs(300));
    println!("second run, after recreating rabbitmq:\n{second}");
    assert!(second.contains(": COMPLETED"), "{second}");
    assert_eq!(count(&second, "Unchanged"), Some(299), "the roster survived the recreate: {second}");
    assert_eq!(count(&second, "Upserted"), Some(0), "{second}");
    println!("passed after {:.0?}", started.elapsed());
}
