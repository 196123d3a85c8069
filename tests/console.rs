//! The web console over HTTP, against a real run: every page opens without
//! credentials, actions are refused without the admin token (401) or with
//! a wrong one, without the form's CSRF token or from another origin (403),
//! hostile user data is escaped on every page that shows it, secrets are
//! never shown, and the console keeps answering through a 20,000-user run.

mod common;

use std::time::Duration;

use common::console::{ADMIN_TOKEN, client, csrf_of, wait_for_page};
use common::{Env, GRAPH_SECRET, OKTA_TOKEN, Options, json_report};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use xaas_broker::BasicProperties;

/// A name as user data may hold it; rejected by the mapper (its mail is no
/// address), so it shows in the run's rejected list, as its id and in the reason.
const HOSTILE: &str = "O'Brien <script>alert(1)</script>";
/// How askama writes `HOSTILE`: shown, as text.
const HOSTILE_ESCAPED: &str = "O&#39;Brien &#60;script&#62;alert(1)&#60;/script&#62;";
/// A user that maps cleanly and is synced: it shows in a dry run's plan.
const HOSTILE_SYNCED: &str = "synced-<img src=x onerror=alert(2)>";
/// The id of a junk message that gets parked.
const HOSTILE_PARKED: &str = "poison-<script>alert(3)</script>";

fn user(id: &str, mail: &str) -> Value {
    json!({
        "id": id,
        "accountEnabled": true,
        "department": "Okta Workflows",
        "givenName": "O'Brien <script>alert(1)</script>",
        "surname": "Tester",
        "displayName": id,
        "userPrincipalName": format!("{}@sandbox.example.com", id.len()),
        "mail": mail,
        "city": "Dublin",
    })
}

/// No page may carry markup from the data as markup.
fn assert_escaped(page: &str, path: &str) {
    for raw in ["<script>alert(", "<img src=x"] {
        assert!(!page.contains(raw), "{path} shows {raw:?} unescaped:\n{page}");
    }
}

fn form(body: &str) -> (reqwest::header::HeaderName, &'static str, String) {
    (CONTENT_TYPE, "application/x-www-form-urlencoded", body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_are_open_actions_need_the_admin_token_and_user_data_is_escaped() {
    let mut env = Env::start("console-http", Options::default()).await;
    assert_eq!(env.post("/sim/users", user(HOSTILE, HOSTILE)).await, 201);
    assert_eq!(env.post("/sim/users", user(HOSTILE_SYNCED, "synced@sandbox.example.com")).await, 201);
    env.spawn_worker("all", "worker");
    let console = env.spawn_console("console", Some(ADMIN_TOKEN)).await;
    let read_only = env.spawn_console("console-read-only", None).await;
    let http = client();

    // A junk message, parked by the worker that cannot read it.
    let props = BasicProperties::default().with_message_id(HOSTILE_PARKED.into()).with_delivery_mode(2);
    let junk = b"<script>alert(3)</script> is not JSON";
    env.broker.publish_raw("", &env.broker.names().requests(), junk, props).await.unwrap();
    env.wait_parked(1, Duration::from_secs(60)).await;

    let out = env.enqueue_wait(&[]).await;
    let report = json_report(&out);
    assert_eq!(report["state"]["state"], "completed", "{report}");
    let run = String::from_utf8_lossy(&out.stdout).lines().next().unwrap().trim().to_string();
    let run_url = format!("{console}/runs/{run}");
    let page = wait_for_page(&http, &run_url, "COMPLETED", Duration::from_secs(60)).await;
    assert!(page.contains(HOSTILE_ESCAPED), "the rejected user is shown, as text:\n{page}");

    // Every page opens without credentials, and escapes what it shows.
    let search = format!("/runs/{run}?q=o%27brien");
    for path in [
        "/",
        "/runs/table",
        &format!("/runs/{run}"),
        &search,
        &format!("/runs/{run}/timeline"),
        "/parked",
        "/parked/1",
        "/syncs",
        "/login",
    ] {
        let res = http.get(format!("{console}{path}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        let page = res.text().await.unwrap();
        assert_escaped(&page, path);
        for secret in [GRAPH_SECRET, OKTA_TOKEN, ADMIN_TOKEN] {
            assert!(!page.contains(secret), "{path} shows a secret");
        }
    }
    let found = http.get(format!("{console}{search}")).send().await.unwrap().text().await.unwrap();
    assert!(found.contains(HOSTILE_ESCAPED) && found.contains("(1 of 1)"), "search finds the user:\n{found}");
    let parked = http.get(format!("{console}/parked/1")).send().await.unwrap().text().await.unwrap();
    assert!(parked.contains("poison-&#60;script&#62;alert(3)"), "the parked message's id, as text:\n{parked}");
    assert!(parked.contains("&#60;script&#62;alert(3)&#60;/script&#62; is not JSON"), "its body, as text");
    let syncs = http.get(format!("{console}/syncs")).send().await.unwrap().text().await.unwrap();
    assert!(syncs.contains("source.client_secret") && syncs.contains("(secret, not shown)"), "{syncs}");
    assert!(syncs.contains(r#"class="roster">300 users active in Okta"#), "299 sample users and one more:\n{syncs}");
    assert!(!syncs.contains("<form method=\"post\""), "no action forms without a session");

    // Actions: no credentials 401, a malformed header 401, a wrong token 403.
    let purge = format!("{console}/parked/purge");
    let res = http.post(&purge).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let res = http.post(&purge).header(AUTHORIZATION, format!("Basic {ADMIN_TOKEN}")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "malformed");
    let res = http.post(&purge).bearer_auth("not-the-token").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "wrong token");
    let res = http.post(&purge).bearer_auth(format!("{ADMIN_TOKEN}x")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "a longer token is wrong too");
    assert_eq!(env.broker.parked_count().await.unwrap(), 1, "nothing was purged");

    // A person logs in; a wrong or empty token opens no session.
    let login = format!("{console}/login");
    let (k, v, _) = form("");
    let res = http.post(&login).header(k.clone(), v).body("token=").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = http.post(&login).header(k.clone(), v).body("token=wrong").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get(SET_COOKIE).is_none());
    let res = http.post(&login).header(k.clone(), v).body(format!("token={ADMIN_TOKEN}")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set_cookie = res.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains(ADMIN_TOKEN), "the cookie is a session id, not the token");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let page =
        http.get(format!("{console}/parked")).header(COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    let csrf = csrf_of(&page).expect("a logged-in page's forms carry a CSRF token");

    // With the session: no CSRF token, a wrong one, or another origin is 403.
    let replay = format!("{console}/parked/replay");
    for (body, origin) in [
        ("all=true", None),
        ("all=true&csrf=forged", None),
        (&*format!("all=true&csrf={csrf}"), Some("http://evil.example")),
    ] {
        let mut req = http.post(&replay).header(COOKIE, &cookie).header(k.clone(), v).body(body.to_string());
        if let Some(origin) = origin {
            req = req.header(ORIGIN, origin);
        }
        assert_eq!(req.send().await.unwrap().status(), StatusCode::FORBIDDEN, "{body} from {origin:?}");
    }
    let res = http.post(&replay).header(k.clone(), v).body(format!("all=true&csrf={csrf}")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "a CSRF token without its session is nothing");
    // With both: replayed (and parked again by the worker: it is still junk).
    let res = http.post(&replay).header(COOKIE, &cookie).header(k.clone(), v).body(format!("position=1&csrf={csrf}"));
    let page = res.send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Replayed 1."), "{page}");
    let again = env.wait_parked(1, Duration::from_secs(60)).await;
    assert!(xaas_broker::headers::get_str(&again[0].properties, xaas_broker::headers::REPLAYED_AT).is_some());
    // Logging out ends the session: its cookie and CSRF token act no more.
    let res = http
        .post(format!("{console}/logout"))
        .header(COOKIE, &cookie)
        .header(k.clone(), v)
        .body(format!("csrf={csrf}"));
    assert_eq!(res.send().await.unwrap().status(), StatusCode::SEE_OTHER);
    let res = http.post(&replay).header(COOKIE, &cookie).header(k.clone(), v).body(format!("all=true&csrf={csrf}"));
    assert_eq!(res.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // A script with the token starts a dry run; its plan shows what changed.
    let patched = env.source_users().await.into_iter().find(|u| u["department"] == "Okta Workflows").unwrap();
    let patched_id = patched["id"].as_str().unwrap().to_string();
    assert!(env.patch(&format!("/sim/users/{patched_id}"), json!({"city": "Cork"})).await.is_success());
    let res = http
        .post(format!("{console}/syncs/demo/enqueue"))
        .bearer_auth(ADMIN_TOKEN)
        .header(k.clone(), v)
        .body("mode=full&dry_run=true")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let dry_run = res.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(dry_run.starts_with("/runs/"), "{dry_run}");
    let plan = wait_for_page(&http, &format!("{console}{dry_run}"), "COMPLETED", Duration::from_secs(120)).await;
    assert!(plan.contains("Plan of this dry run"), "{plan}");
    let row =
        plan.lines().find(|l| l.contains(&patched_id)).unwrap_or_else(|| panic!("{patched_id} in the plan:\n{plan}"));
    assert!(row.contains(">update<") && row.contains(">city<"), "{row}");
    assert!(plan.contains("synced-&#60;img src=x onerror=alert(2)&#62;"), "the synced hostile id, as text");
    assert_escaped(&plan, &dry_run);
    let unknown = http.get(format!("{console}/runs/no-such-run")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::OK, "a run not seen yet is a waiting page");
    assert_eq!(http.get(format!("{console}/runs/bad%20id")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // A console without an admin token refuses every action, whoever asks.
    let res = http.post(format!("{read_only}/parked/purge")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = http.post(format!("{read_only}/login")).header(k, v).body(format!("token={ADMIN_TOKEN}")).send().await;
    assert_eq!(res.unwrap().status(), StatusCode::FORBIDDEN);
    let page = http.get(format!("{read_only}/login")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Actions are disabled"), "{page}");

    // The token never reaches a log.
    for (label, log) in env.all_logs() {
        assert!(!log.contains(ADMIN_TOKEN), "{label}'s log shows the admin token");
    }
    // Finally a script purges.
    let res = http.post(&purge).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Purged 1."));
    env.finish().await;
}

/// Reads an SSE response until the run's last progress event; returns the
/// progress percentages seen.
async fn follow_progress(mut res: reqwest::Response) -> Vec<f64> {
    let mut buffer = String::new();
    let mut seen = Vec::new();
    while let Some(chunk) = res.chunk().await.expect("the progress stream stays up") {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
            let live: Value = serde_json::from_str(data).unwrap();
            seen.push(live["progress"]["percent"].as_f64().unwrap());
            if live["over"] == true {
                assert_eq!(live["state"], "COMPLETED", "{live}");
                return seen;
            }
        }
    }
    panic!("the progress stream ended before the run did: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_answers_every_request_through_a_20000_user_run() {
    let opts = Options {
        seed_csv: false,
        generate: Some(20_000),
        page_size: 500,
        cooldown: Duration::from_secs(1),
        import_duration: Duration::from_millis(200),
        ..Options::default()
    };
    let mut env = Env::start("console-20k", opts).await;
    env.spawn_worker("fetcher", "fetcher");
    env.spawn_worker("mapper", "mapper");
    env.spawn_worker("uploader", "uploader");
    let console = env.spawn_console("console", Some(ADMIN_TOKEN)).await;
    let http = client();

    let run = env.enqueue(&[]).await;
    let progress = http.get(format!("{console}/runs/{run}/progress")).send().await.unwrap();
    assert_eq!(progress.headers()[CONTENT_TYPE], "text/event-stream");
    let progress = tokio::spawn(follow_progress(progress));

    // Poll every page while the run goes on; every request must be answered.
    let pages = [
        "/".to_string(),
        "/runs/table".into(),
        format!("/runs/{run}"),
        format!("/runs/{run}/timeline"),
        "/syncs".into(),
        "/parked".into(),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15 * 60);
    let mut answered = 0;
    let mut saw_running = false;
    loop {
        for path in &pages {
            let res = http.get(format!("{console}{path}")).send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            let page = res.text().await.unwrap_or_else(|e| panic!("{path}: {e}"));
            answered += 1;
            saw_running |= path.ends_with(&run) && page.contains(">RUNNING<");
        }
        let run_page = http.get(format!("{console}/runs/{run}")).send().await.unwrap().text().await.unwrap();
        if run_page.contains(">COMPLETED<") {
            break;
        }
        assert!(!run_page.contains(">FAILED<"), "the run failed:\n{run_page}");
        assert!(tokio::time::Instant::now() < deadline, "the run did not end within 15 min");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = progress.await.unwrap();
    eprintln!("console answered {answered} page requests during the run; progress went {seen:?}");
    assert!(saw_running, "a page showed the run while it ran");
    assert!(answered > pages.len(), "pages were polled throughout");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {seen:?}");
    assert!(seen.iter().filter(|p| **p > 0.0 && **p < 100.0).count() >= 2, "progress moved live: {seen:?}");
    assert_eq!(seen.last(), Some(&100.0));

    let events = env.events().await.into_iter().filter(|e| e.run_id.as_str() == run).collect::<Vec<_>>();
    env.assert_synced_exactly(&events, Duration::from_secs(1)).await;
    let page = http.get(format!("{console}/runs/{run}")).send().await.unwrap().text().await.unwrap();
    let upserted = env.okta_users().await.len();
    assert!(page.contains(&format!(r#"data-count="upserted">{upserted}<"#)), "the page shows {upserted} upserted");
    env.finish().await;
}
