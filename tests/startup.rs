//! Start-up failures: a bad setting or an unreachable service stops
//! `xaas worker` at once with one line on stderr, `error: …` naming the
//! setting to fix, and exit code 2 (so a supervisor does not mistake it for
//! a crash worth restarting in a loop).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{GRAPH_SECRET, OKTA_TOKEN, amqp_url, bin};
use xaas_workers::deps::Needs;

/// A working configuration (the broker of the tests, loopback http URLs).
fn config_text(prefix: &str) -> String {
    format!(
        r#"[broker]
url = "{amqp}"
prefix = "{prefix}"

[syncs.demo.source]
tenant = "sandbox-tenant"
client_id = "sandbox-client"
authority_url = "http://127.0.0.1:9"
graph_url = "http://127.0.0.1:9"
page_size = 999

[syncs.demo.target]
okta_url = "http://127.0.0.1:9"
identity_source_id = "0oasandbox00000000001"
auth = "api_token"
"#,
        amqp = amqp_url()
    )
}

struct Case {
    dir: PathBuf,
}

impl Case {
    fn new(name: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("t-startup-{name}-{}", &id[..8]));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn prefix(&self) -> String {
        self.dir.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn write(&self, text: &str) -> PathBuf {
        let path = self.dir.join("xaas.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `xaas worker all` with `config`, the test secrets, and `env` changes.
    fn worker(&self, config: &Path, env: &[(&str, Option<&str>)]) -> Output {
        self.worker_role("all", config, env)
    }

    /// `xaas worker <role>`, as [`Case::worker`].
    fn worker_role(&self, role: &str, config: &Path, env: &[(&str, Option<&str>)]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.args(["worker", role])
            .env("XAAS_CONFIG", config)
            .env("AMQP_URL", amqp_url())
            .env("XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET", GRAPH_SECRET)
            .env("XAAS_SYNC_DEMO_OKTA_TOKEN", OKTA_TOKEN)
            .env("RUST_LOG", "info")
            .current_dir(&self.dir);
        for (key, value) in env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.output().expect("xaas runs")
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Exit code 2 and exactly one stderr line, `error: …`, that names `setting`.
fn assert_refused(out: &Output, setting: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "exit code 2 for a start-up failure; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(setting), "the error names {setting:?}: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", String::from_utf8_lossy(&out.stdout));
    for secret in [GRAPH_SECRET, OKTA_TOKEN] {
        assert!(!stderr.contains(secret), "a secret leaked into the error: {stderr}");
    }
    stderr
}

#[test]
fn a_page_size_graph_refuses_names_the_setting() {
    let case = Case::new("page-size");
    let config = case.write(&config_text(&case.prefix()).replace("page_size = 999", "page_size = 5000"));
    let stderr = assert_refused(&case.worker(&config, &[]), "syncs.demo.source.page_size");
    assert!(stderr.contains("999"), "says what is allowed: {stderr}");
}

#[test]
fn a_missing_secret_names_the_variable_and_the_setting() {
    let case = Case::new("secret");
    let config = case.write(&config_text(&case.prefix()));
    let stderr =
        assert_refused(&case.worker(&config, &[("XAAS_SYNC_DEMO_OKTA_TOKEN", None)]), "syncs.demo.target.token_env");
    assert!(stderr.contains("XAAS_SYNC_DEMO_OKTA_TOKEN"), "names the variable to set: {stderr}");
}

#[test]
fn a_role_stops_at_start_without_the_secret_it_uses_and_only_that_one() {
    let case = Case::new("role-secret");
    let config = case.write(&config_text(&case.prefix()));
    let none = [("XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET", None), ("XAAS_SYNC_DEMO_OKTA_TOKEN", None)];
    let stderr = assert_refused(&case.worker_role("uploader", &config, &none), "syncs.demo.target.token_env");
    assert!(stderr.contains("XAAS_SYNC_DEMO_OKTA_TOKEN"), "names the variable to set: {stderr}");
    let stderr = assert_refused(&case.worker_role("fetcher", &config, &none), "syncs.demo.source.client_secret_env");
    assert!(stderr.contains("XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET"), "names the variable to set: {stderr}");
}

#[test]
fn an_unknown_key_names_it() {
    let case = Case::new("unknown-key");
    let text = config_text(&case.prefix()).replace("auth = \"api_token\"", "auth = \"api_token\"\ncolour = \"blue\"");
    let config = case.write(&text);
    assert_refused(&case.worker(&config, &[]), "syncs.demo.target.colour");
}

#[test]
fn plain_http_to_a_remote_okta_is_refused_unless_allowed() {
    let case = Case::new("http");
    let text = config_text(&case.prefix())
        .replace("okta_url = \"http://127.0.0.1:9\"", "okta_url = \"http://okta.example.com\"");
    let config = case.write(&text);
    let stderr = assert_refused(&case.worker(&config, &[]), "syncs.demo.target.okta_url");
    assert!(stderr.contains("https"), "says to use https: {stderr}");
    assert!(stderr.contains("allow_insecure_http"), "says how to allow it on purpose: {stderr}");
}

#[test]
fn allowing_plain_http_explicitly_lets_the_clients_build() {
    let case = Case::new("http-allowed");
    let text = config_text(&case.prefix()).replace(
        "okta_url = \"http://127.0.0.1:9\"",
        "okta_url = \"http://okta.test.internal\"\nallow_insecure_http = true",
    );
    let env = |k: &str| match k {
        "XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET" => Some(GRAPH_SECRET.into()),
        "XAAS_SYNC_DEMO_OKTA_TOKEN" => Some(OKTA_TOKEN.into()),
        _ => None,
    };
    let config = xaas_workers::app::load_config_with(&case.write(&text), &env).unwrap();
    xaas_workers::deps::Clients::build(&config, Needs::ALL, &env).expect("an explicit allow_insecure_http is honoured");
}

#[test]
fn an_unreachable_broker_names_broker_url_without_its_password() {
    let case = Case::new("broker");
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("amqp://guest:broker-password-5e1@127.0.0.1:{port}/%2f");
    let config = case.write(&config_text(&case.prefix()));
    let out = case.worker(&config, &[("AMQP_URL", Some(&url)), ("XAAS__BROKER__CONNECT_TIMEOUT", Some("2s"))]);
    let stderr = assert_refused(&out, "broker.url");
    assert!(stderr.contains("after 2s"), "broker.connect_timeout is honoured: {stderr}");
    assert!(!stderr.contains("broker-password-5e1"), "the broker password is not shown: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "says which broker: {stderr}");
}

#[test]
fn a_missing_config_file_names_the_option() {
    let case = Case::new("no-file");
    let stderr = assert_refused(&case.worker(&case.dir.join("nowhere.toml"), &[]), "nowhere.toml");
    assert!(stderr.contains("--config") && stderr.contains("XAAS_CONFIG"), "{stderr}");
}

#[test]
fn a_toml_syntax_error_is_one_line_too() {
    let case = Case::new("syntax");
    let config = case.write(&config_text(&case.prefix()).replace("page_size = 999", "page_size = = 999"));
    let stderr = assert_refused(&case.worker(&config, &[]), "line 10");
    assert!(stderr.contains("TOML"), "{stderr}");
}

#[test]
fn the_sandbox_listens_on_loopback_by_default() {
    let defaults = xaas_sim::SimConfig::defaults();
    assert!(defaults.listen.ip().is_loopback(), "{}", defaults.listen);
}

/// How the tests pick their broker (tests/common): the one at AMQP_URL, else
/// a testcontainers RabbitMQ when Docker answers, else one line of advice.
#[test]
fn the_test_broker_is_the_url_then_docker_then_one_line_of_advice() {
    use common::{BrokerChoice, choose_broker};
    let url = "amqp://guest:secret@127.0.0.1:1/%2f";
    assert_eq!(choose_broker(url, true, false), BrokerChoice::Use(url.into()));
    assert_eq!(choose_broker(url, false, true), BrokerChoice::StartContainer);
    let BrokerChoice::Advise(line) = choose_broker(url, false, false) else { panic!("advice") };
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("docker run") && line.contains("rabbitmq:4.2-management"), "{line}");
    assert!(!line.contains("secret"), "no password in the advice: {line}");
}

/// `xaas demo` without a broker: one line of advice, exit 2, at once.
#[test]
fn demo_without_a_broker_gives_one_line_of_advice_at_once() {
    let started = std::time::Instant::now();
    let out = Command::new(bin())
        .arg("demo")
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("RUST_BACKTRACE", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].starts_with("error: broker.url: no RabbitMQ answers at "), "{stderr}");
    assert!(errors[0].contains("127.0.0.1:1/") && errors[0].contains("docker"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

/// `xaas health` (the compose healthcheck): 0 on a 200 from /healthz, 1 otherwise.
#[test]
fn health_exits_0_only_on_a_200_from_healthz() {
    use std::io::{Read, Write};
    for (answer, code) in [("HTTP/1.1 200 OK\r\n\r\nok", 0), ("HTTP/1.1 503 Service Unavailable\r\n\r\n", 1)] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            s.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        let out = Command::new(bin()).args(["health", "--addr", &addr.to_string()]).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{answer}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(server.join().unwrap().starts_with("GET /healthz "));
    }
    let out = Command::new(bin()).args(["health", "--addr", "127.0.0.1:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}
