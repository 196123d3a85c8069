//! A broker password never reaches the output, whatever form `AMQP_URL`
//! takes: `xaas status`, `xaas worker uploader` and `xaas demo` are run with a
//! list of brokers whose passwords are random, and none of their stdout or
//! stderr holds them, at the default log level or at trace. In one list no
//! broker listens; in the other the second address is the test broker, which
//! refuses the login, so that the AMQP client logs its whole handshake.

mod common;

use std::process::{Command, Output};

use common::{GRAPH_SECRET, OKTA_TOKEN, amqp_url, bin};
use xaas_core::broker_address::BrokerAddresses;

/// Where nobody listens: privileged ports, which no process of the tests
/// (the demo's sandbox, say) is handed as a free port.
const CLOSED: [&str; 2] = ["127.0.0.1:1", "127.0.0.1:2"];

/// Percent-encodes everything but letters and digits.
fn encode(raw: &str) -> String {
    raw.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A password's random part. Letters and digits only, so it reads the same
/// raw, percent-encoded, percent-decoded and JSON-escaped, and long enough
/// that no other text holds it by chance.
fn marker() -> String {
    format!("pw{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// One list-form `AMQP_URL` and what must and must not be shown.
struct Case {
    url: String,
    markers: Vec<String>,
    /// `host:port` of each address the final error must name.
    named: Vec<String>,
}

impl Case {
    /// Two addresses where nothing listens: reserved characters around the
    /// marker, percent-encoded in the first address and, in the second, raw
    /// where a URL allows them.
    fn unreachable(separator: &str) -> Self {
        let markers = vec![marker(), marker()];
        let first = format!("amqp://guest:{}@{}/%2f", encode(&format!("a/{}#?@", markers[0])), CLOSED[0]);
        let second = format!("amqp://ops:{}%40!$@{}/%2f?heartbeat=5", markers[1], CLOSED[1]);
        let named = CLOSED.iter().map(|a| a.to_string()).collect();
        Self { url: format!("{first}{separator}{second}"), markers, named }
    }

    /// Nothing listens at the first address; the test broker, at the second,
    /// refuses the random user and password.
    fn refused(separator: &str) -> Self {
        let markers = vec![marker(), marker()];
        let broker = BrokerAddresses::parse(&amqp_url()).expect("AMQP_URL is valid");
        let (host, port) = (broker.first().host(), broker.first().port());
        let first = format!("amqp://guest:{}@{}/%2f", markers[0], CLOSED[0]);
        let second = format!("amqp://nobody:{}%2C@{host}:{port}/%2f", markers[1]);
        Self { url: format!("{first}{separator}{second}"), markers, named: vec![format!("{host}:{port}")] }
    }
}

/// `xaas <args>` with the test secrets, the repository's config and
/// `AMQP_URL` = `case.url`, at `rust_log` (None: the default level).
fn run(args: &[&str], case: &Case, rust_log: Option<&str>) -> Output {
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("XAAS_CONFIG", format!("{repo}/xaas.toml"))
        .env("AMQP_URL", &case.url)
        .env("XAAS__BROKER__CONNECT_TIMEOUT", "2s")
        .env("XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET", GRAPH_SECRET)
        .env("XAAS_SYNC_DEMO_OKTA_TOKEN", OKTA_TOKEN)
        .env_remove("XAAS__BROKER__URL")
        .current_dir(repo);
    match rust_log {
        Some(level) => cmd.env("RUST_LOG", level),
        None => cmd.env_remove("RUST_LOG"),
    };
    cmd.output().expect("xaas runs")
}

#[test]
fn a_list_of_brokers_never_shows_a_password() {
    let commands: [&[&str]; 3] = [&["status"], &["worker", "uploader"], &["demo", "--cooldown", "1s"]];
    let mut runs = Vec::new();
    for (separator, refused) in [(",", false), (" ", false), (";", false), (" , ", false), (" ; ", true)] {
        for args in commands {
            for level in [None, Some("trace")] {
                runs.push((separator, refused, args, level));
            }
        }
    }
    // In parallel: each waits out its connect timeout.
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|&(separator, refused, args, level)| {
                s.spawn(move || {
                    let case = if refused { Case::refused(separator) } else { Case::unreachable(separator) };
                    let out = run(args, &case, level);
                    (format!("{separator:?}-separated, refused: {refused}"), args, level, case, out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // Every problem of every run, so one failure shows the whole picture.
    let mut problems = Vec::new();
    let mut traced = false;
    for (form, args, level, case, out) in &results {
        let what = format!("xaas {} with AMQP_URL {form}, RUST_LOG={level:?}", args.join(" "));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        for marker in &case.markers {
            for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
                if let Some(line) = text.lines().find(|l| l.contains(marker.as_str())) {
                    problems.push(format!("{what}: a broker password appears in {name}: {line}"));
                }
            }
        }
        if out.status.code() != Some(2) {
            problems.push(format!("{what}: exit {:?}, not 2 (a start-up failure); stderr:\n{stderr}", out.status));
        }
        // At trace level the AMQP client may still log after the error line.
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        match errors[..] {
            [error] if error.starts_with("error: broker.url: ") => {
                for address in &case.named {
                    if !error.contains(address.as_str()) {
                        problems.push(format!("{what}: the error does not name the address {address}: {error}"));
                    }
                }
            }
            _ => problems.push(format!("{what}: not one error line naming broker.url: {errors:?}")),
        }
        traced |= stderr.contains("TRACE") && stderr.contains("lapin");
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    assert!(traced, "at trace level, the AMQP client's handshake is logged (the check above is not vacuous)");
}
