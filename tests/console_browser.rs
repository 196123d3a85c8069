//! The web console in a real browser (headless Chromium over WebDriver),
//! during a real run: an operator logs in, starts a run from the Syncs
//! page, watches its progress bar move and the run reach COMPLETED, finds
//! a rejected user by name, sees a `<script>` name shown as text, and
//! replays a parked message. Each page is saved as a screenshot.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::console::{ADMIN_TOKEN, free_port};
use common::{Env, Options};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use xaas_broker::BasicProperties;

const HOSTILE: &str = "O'Brien <script>alert(1)</script>";
const PARKED_ID: &str = "console-browser-junk-1";

/// Chromium's flags: headless, and quiet on a machine without internet
/// (without the background-networking ones it keeps opening connections
/// that are refused).
const CHROMIUM_ARGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
];

/// chromedriver on a free port, and a browser session through it.
struct Browser {
    driver: Child,
    client: Client,
    shots: PathBuf,
    closed: bool,
}

impl Browser {
    async fn start(dir: &Path, shots: PathBuf) -> Browser {
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("chromedriver runs (apt-get install chromium chromium-driver; .ci/run does)");
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut options = json!({ "args": args });
        if Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("waiting for chromedriver: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("no browser session through chromedriver: {e}"),
            }
        };
        std::fs::create_dir_all(&shots).unwrap();
        Browser { driver, client, shots, closed: false }
    }

    /// Saves the page as `<name>.png` and prints where.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` returns true.
    async fn wait_until(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.client.execute(script, vec![]).await.ok() != Some(Value::Bool(true)) {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.closed = true;
    }
}

impl Drop for Browser {
    /// A failed test never reaches `close`: end the browser session anyway
    /// (from another thread: this one may be the test's runtime, unwinding),
    /// so that Chromium quits, then chromedriver.
    fn drop(&mut self) {
        if !self.closed {
            let client = self.client.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(tokio::time::timeout(Duration::from_secs(10), client.close())).ok()
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A source user the mapper rejects: its mail is no address.
fn hostile_user() -> Value {
    json!({
        "id": HOSTILE,
        "accountEnabled": true,
        "department": "Okta Workflows",
        "givenName": "Brian",
        "surname": "O'Brien",
        "displayName": HOSTILE,
        "userPrincipalName": "obrien@sandbox.example.com",
        "mail": HOSTILE,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_follows_a_run_finds_a_rejected_user_and_replays_a_parked_message() {
    // Small pages fetched slowly, so that the run takes long enough for
    // its progress to be watched.
    let mut env = Env::start("console-browser", Options { page_size: 20, ..Options::default() }).await;
    assert_eq!(env.post("/sim/users", hostile_user()).await, 201);
    let latency = json!({"graph": {"latency_ms": 400}, "seed": 3});
    assert!(env.put("/sim/faults", latency).await.is_success());
    // The worker serves the console too (`--console-listen`).
    let console = env.spawn_worker_with_console("all", "worker", Some(ADMIN_TOKEN)).await;
    // Junk on the fetch queue, parked by the worker (as in tests/poison.rs).
    let props = BasicProperties::default().with_message_id(PARKED_ID.into()).with_delivery_mode(2);
    env.broker.publish_raw("", &env.broker.names().fetch(), b"{not json", props).await.unwrap();
    env.wait_parked(1, Duration::from_secs(60)).await;

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let browser = Browser::start(&env.dir, shots.clone()).await;
    let b = &browser;

    // Log in, then start a run from the Syncs page.
    b.client.goto(&format!("{console}/login")).await.unwrap();
    b.screenshot("login").await;
    b.client.find(Locator::Css("input[name=token]")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    b.client.find(Locator::Css("form.login button")).await.unwrap().click().await.unwrap();
    b.client.goto(&format!("{console}/syncs")).await.unwrap();
    let roster = b.text("#sync-demo .roster").await;
    // "none yet" until the uploader has declared the sync's roster stream, "unknown" after.
    let empty = roster.starts_with("unknown: no complete snapshot") || roster.starts_with("none yet");
    assert!(empty, "no run has uploaded yet: {roster}");
    assert!(b.text("#sync-demo .next-run").await.contains("none: no schedule"));
    b.screenshot("syncs").await;
    b.client.find(Locator::Css("#sync-demo form.enqueue button")).await.unwrap().click().await.unwrap();

    // The run page: it waits for the first event, then the bar moves by
    // Server-Sent Events, without the page being reloaded, to COMPLETED.
    b.wait_until("the run to start", "return location.pathname.startsWith('/runs/')", Duration::from_secs(30)).await;
    let run_url = b.client.current_url().await.unwrap().to_string();
    b.wait_until(
        "the first event",
        "var s = document.getElementById('state'); return !!s && s.textContent === 'RUNNING'",
        Duration::from_secs(60),
    )
    .await;
    b.js("window.xaasNotReloaded = true; return true").await;
    let mut moving = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let seen = b
            .js("var s = document.getElementById('state'); var p = document.getElementById('progress'); \
             return [s ? s.textContent : '', p ? p.value : -1, window.xaasNotReloaded === true]")
            .await;
        let (state, value, same_page) =
            (seen[0].as_str().unwrap_or("").to_string(), seen[1].as_f64().unwrap_or(-1.0), seen[2] == true);
        if state == "COMPLETED" {
            break;
        }
        if same_page && state == "RUNNING" && moving.last() != Some(&value) {
            moving.push(value);
            if moving.len() == 3 {
                b.screenshot("run-in-progress").await;
            }
        }
        assert!(state != "FAILED", "the run failed");
        assert!(tokio::time::Instant::now() < deadline, "the run did not complete; progress {moving:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("progress seen while running: {moving:?}");
    assert!(moving.len() >= 3, "the bar moved live at least twice: {moving:?}");
    assert!(moving.windows(2).all(|w| w[0] < w[1]), "and only forward: {moving:?}");
    // The end reloads the page with its final lists.
    b.wait_until("the final page", "var p = document.getElementById('progress'); return !!p && p.value === 100 && document.getElementById('run').dataset.over === 'true'", Duration::from_secs(30)).await;
    assert_eq!(b.text("#state").await, "COMPLETED");
    assert_eq!(b.text(r#"[data-count="upserted"]"#).await, "299");
    assert_eq!(b.text(r#"[data-count="rejected"]"#).await, "1");
    let bars = b.js("return document.querySelectorAll('#timeline svg rect.span-request').length").await;
    assert!(bars.as_u64().unwrap() >= 2, "the timeline draws the bulk requests: {bars}");
    let imports = b.js("return document.querySelectorAll('#timeline svg rect.span-import').length").await;
    assert!(imports.as_u64().unwrap() >= 1, "and the import: {imports}");
    b.screenshot("run").await;

    // Find the rejected user by name; the <script> in it is text.
    let search = b.client.find(Locator::Css("form.search input[name=q]")).await.unwrap();
    search.send_keys("o'brien").await.unwrap();
    b.client.find(Locator::Css("form.search button")).await.unwrap().click().await.unwrap();
    b.wait_until("the search", "return location.search.indexOf('q=') >= 0", Duration::from_secs(10)).await;
    let rows = b.client.find_all(Locator::Css("#rejected tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "one rejected user matches");
    assert_eq!(b.text("#rejected td.user").await, HOSTILE, "the name is shown as it is, as text");
    let reason = b.text("#rejected td.reason").await;
    assert!(reason.contains("not an email address") && reason.contains(HOSTILE), "{reason}");
    let scripts = b.js("return document.querySelectorAll('main script, #rejected script').length").await;
    assert_eq!(scripts, json!(0), "no script element came from the data");
    assert!(b.client.get_alert_text().await.is_err(), "no alert() ran");
    b.screenshot("run-search").await;

    // The runs list.
    b.client.goto(&format!("{console}/")).await.unwrap();
    let state = b.text("#runs tbody tr td:nth-child(3) .state").await;
    assert_eq!(state, "COMPLETED");
    assert!(b.text("#runs .last-success").await.contains(run_url.rsplit('/').next().unwrap()));
    b.screenshot("runs").await;
    // The list is live: a run started elsewhere shows up, and ends, without a reload.
    b.js("window.xaasNotReloaded = true; return true").await;
    let second = env.enqueue(&[]).await;
    let row = format!(r#"#runs tr[data-run="{second}"] .state"#);
    let ended = format!(
        "var s = document.querySelector('{row}'); return !!s && s.textContent === 'COMPLETED' && window.xaasNotReloaded === true"
    );
    b.wait_until("the second run in the live list", &ended, Duration::from_secs(120)).await;

    // Parked: show it, replay it.
    b.client.goto(&format!("{console}/parked")).await.unwrap();
    assert_eq!(b.text(".parked tbody tr .message-id").await, PARKED_ID);
    b.screenshot("parked").await;
    b.client.goto(&format!("{console}/parked/1")).await.unwrap();
    assert!(b.text("pre.body").await.contains("{not json"));
    b.screenshot("parked-message").await;
    b.client.find(Locator::Css("button.replay")).await.unwrap().click().await.unwrap();
    b.wait_until(
        "the replay",
        "var d = document.querySelector('.done'); return !!d && d.textContent.indexOf('Replayed 1.') >= 0",
        Duration::from_secs(30),
    )
    .await;
    b.screenshot("parked-replayed").await;
    // It was sent back to its queue, and parked again by the worker (it is still junk).
    let again = env.wait_parked(1, Duration::from_secs(60)).await;
    let replayed = xaas_broker::headers::get_str(&again[0].properties, xaas_broker::headers::REPLAYED_AT);
    assert!(replayed.is_some(), "the parked copy is the replayed one");

    // The Syncs page now knows the roster.
    b.client.goto(&format!("{console}/syncs")).await.unwrap();
    assert_eq!(b.text("#sync-demo .roster").await, "299 users active in Okta");
    browser.close().await;
    eprintln!("screenshots in {}", shots.display());
    env.finish().await;
}
