//! The client against a recording fake of Entra and Graph.

mod fake;

use std::time::Duration;

use serde_json::json;
use url::Url;
use xaas_core::RemovedUser;

use crate::{GraphClient, GraphError, GraphSettings, UsersQuery};
use fake::{Fake, Reply, SECRET};

const TENANT: &str = "contoso.onmicrosoft.com";

fn settings(fake: &Fake, secret: &str) -> GraphSettings {
    GraphSettings {
        authority_url: fake.base.clone(),
        graph_url: fake.base.clone(),
        tenant: TENANT.into(),
        client_id: "app-1".into(),
        client_secret: secret.into(),
        timeout: Duration::from_secs(10),
        max_in_process_retries: 3,
        max_retry_after: Duration::from_secs(5),
    }
}

/// A client whose own backoff is short, so that a wait the tests measure can
/// only come from `Retry-After`.
fn client(fake: &Fake) -> GraphClient {
    GraphClient::new(settings(fake, SECRET)).unwrap().with_min_backoff(Duration::from_millis(10))
}

fn query() -> UsersQuery {
    UsersQuery { page_size: 2, select: vec!["id".into(), "displayName".into()], filter: None }
}

fn users(ids: &[&str]) -> serde_json::Value {
    json!(ids.iter().map(|id| json!({"id": id, "displayName": format!("User {id}")})).collect::<Vec<_>>())
}

fn path_and_query(link: &str) -> &str {
    let start = link.find("://").unwrap() + 3;
    &link[start + link[start..].find('/').unwrap()..]
}

fn bearers(fake: &Fake) -> Vec<String> {
    fake.hits().into_iter().map(|h| h.authorization.unwrap_or_default()).collect()
}

#[tokio::test]
async fn paging_follows_next_links_verbatim_with_one_token() {
    let fake = Fake::start().await;
    // Links shaped like Graph's: an encoded $skiptoken, a lowercase %2c.
    let second = fake.link("/v1.0/users?$top=2&$skiptoken=X%274453707%27&$select=id%2cdisplayName");
    let third = fake.link("/v1.0/users?$skiptoken=RFNwdAIAAQAAAD8...AAAAAAAA");
    fake.reply(Reply::page(users(&["a", "b"]), Some(&second)));
    fake.reply(Reply::page(users(&["c", "d"]), Some(&third)));
    fake.reply(Reply::page(users(&["e"]), None));
    let client = client(&fake);

    let first = client.users_url(&query());
    let mut link = Some(first.to_string());
    let mut ids = Vec::new();
    while let Some(url) = link {
        let page = client.get_page(&url).await.unwrap();
        ids.extend(page.users.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
        link = page.next_link;
    }

    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    let uris: Vec<String> = fake.hits().into_iter().map(|h| h.uri).collect();
    assert_eq!(uris, ["/v1.0/users?$top=2&$select=id,displayName", path_and_query(&second), path_and_query(&third)]);
    assert_eq!(bearers(&fake), ["Bearer tok-1"; 3]);

    let tokens = fake.token_hits();
    assert_eq!(tokens.len(), 1, "one token serves every page");
    assert_eq!(tokens[0].tenant, TENANT);
    let form = &tokens[0].form;
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "app-1");
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(form["scope"], "https://graph.microsoft.com/.default");
}

#[tokio::test]
async fn an_expired_token_is_replaced() {
    let fake = Fake::start().await;
    fake.token_lifetime(0);
    fake.always(Reply::page(users(&["a"]), None));
    let client = client(&fake);
    let url = client.users_url(&query()).to_string();

    for _ in 0..3 {
        client.get_page(&url).await.unwrap();
    }

    assert_eq!(fake.token_hits().len(), 3);
    assert_eq!(bearers(&fake), ["Bearer tok-1", "Bearer tok-2", "Bearer tok-3"]);
}

#[tokio::test]
async fn concurrent_pages_share_one_token_request() {
    let fake = Fake::start().await;
    // Slow enough that every task asks while the first request is in flight.
    fake.token_delay(Duration::from_millis(300));
    fake.always(Reply::page(users(&["a"]), None));
    let client = client(&fake);
    let url = client.users_url(&query()).to_string();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move { client.get_page(&url).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }

    assert_eq!(fake.token_hits().len(), 1);
    assert_eq!(bearers(&fake), ["Bearer tok-1"; 8]);
}

#[tokio::test]
async fn a_refused_token_is_replaced_once() {
    let fake = Fake::start().await;
    fake.reply(Reply::error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."));
    fake.reply(Reply::page(users(&["a"]), None));
    let client = client(&fake);

    let page = client.get_page(client.users_url(&query()).as_str()).await.unwrap();

    assert_eq!(page.users.len(), 1);
    assert_eq!(bearers(&fake), ["Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test]
async fn a_token_refused_twice_is_permanent() {
    let fake = Fake::start().await;
    fake.always(Reply::error(401, "InvalidAuthenticationToken", "Access token validation failure."));
    let client = client(&fake);

    let err = client.get_page(client.users_url(&query()).as_str()).await.unwrap_err();

    assert!(matches!(err, GraphError::Rejected { status: 401, .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("InvalidAuthenticationToken"), "{err}");
    assert_eq!(fake.hits().len(), 2, "one retry with a fresh token, no more");
    assert_eq!(fake.token_hits().len(), 2);
}

#[tokio::test]
async fn throttling_waits_for_a_fractional_retry_after() {
    let fake = Fake::start().await;
    fake.reply(Reply::error(429, "TooManyRequests", "Please retry again later.").header("retry-after", "0.2"));
    fake.reply(Reply::page(users(&["a"]), None));
    let client = client(&fake);

    let page = client.get_page(client.users_url(&query()).as_str()).await.unwrap();

    assert_eq!(page.users.len(), 1);
    let hits = fake.hits();
    assert_eq!(hits.len(), 2);
    // A lower bound only: the client's own backoff is 10 ms, so a gap of at
    // least 200 ms means Retry-After was honoured.
    let gap = hits[1].at - hits[0].at;
    assert!(gap >= Duration::from_millis(200), "retried after {gap:?}");
}

#[tokio::test]
async fn a_long_retry_after_is_left_to_the_broker() {
    let fake = Fake::start().await;
    fake.always(Reply::error(429, "TooManyRequests", "Please retry again later.").header("retry-after", "120"));
    let client = client(&fake);

    let err = client.get_page(client.users_url(&query()).as_str()).await.unwrap_err();

    assert!(matches!(err, GraphError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(fake.hits().len(), 1, "a wait beyond max_retry_after is not slept in-process");
}

#[tokio::test]
async fn unavailable_is_retried_with_backoff() {
    let fake = Fake::start().await;
    fake.reply(Reply::json(503, json!({"error": {"code": "serviceNotAvailable", "message": "try later"}})));
    fake.reply(Reply::page(users(&["a"]), None));
    let client = client(&fake);

    let page = client.get_page(client.users_url(&query()).as_str()).await.unwrap();

    assert_eq!(page.users.len(), 1);
    assert_eq!(fake.hits().len(), 2);
}

#[tokio::test]
async fn exhausted_retries_give_a_retryable_error_with_the_wait() {
    let fake = Fake::start().await;
    fake.always(Reply::error(503, "serviceNotAvailable", "try later").header("retry-after", "0.01"));
    let client = client(&fake);

    let err = client.get_page(client.users_url(&query()).as_str()).await.unwrap_err();

    assert!(matches!(err, GraphError::Unavailable { status: 503, .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_millis(10)));
    assert_eq!(fake.hits().len(), 1 + 3, "the first attempt and max_in_process_retries more");
}

#[tokio::test]
async fn an_unreachable_graph_is_retryable() {
    let fake = Fake::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut settings = settings(&fake, SECRET);
    settings.graph_url = Url::parse(&format!("http://{closed}/")).unwrap();
    let client = GraphClient::new(settings).unwrap().with_min_backoff(Duration::from_millis(10));

    let err = client.get_page(client.users_url(&query()).as_str()).await.unwrap_err();

    assert!(matches!(err, GraphError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(fake.token_hits().len(), 1, "the token was fetched once and reused across retries");
}

#[tokio::test]
async fn a_bad_request_is_permanent_and_says_why() {
    let fake = Fake::start().await;
    fake.always(Reply::error(400, "Request_BadRequest", "$count is not currently supported."));
    let client = client(&fake);

    let err = client.get_page(client.users_url(&query()).as_str()).await.unwrap_err();

    assert!(!err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("400 Request_BadRequest"), "{text}");
    assert!(text.contains("$count is not currently supported."), "{text}");
    assert_eq!(fake.hits().len(), 1);
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_that_does_not_repeat_it() {
    let fake = Fake::start().await;
    let wrong = "wrong-Secret~value-987";
    let client = GraphClient::new(settings(&fake, wrong)).unwrap();

    let err = client.get_page(client.users_url(&query()).as_str()).await.unwrap_err();

    assert!(matches!(err, GraphError::Auth(_)), "{err:?}");
    assert!(!err.is_retryable());
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    assert!(!text.contains(wrong) && !debug.contains(wrong), "{text}\n{debug}");
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(text.contains("not its Secret ID"), "{text}");
    assert_eq!(fake.token_hits().len(), 1, "a refused secret is not retried");
    assert!(fake.hits().is_empty(), "nothing reaches Graph without a token");
}

#[tokio::test]
async fn an_expired_delta_link_asks_for_a_full_resync() {
    let fake = Fake::start().await;
    fake.reply(
        Reply::error(410, "Gone", "The delta token is no longer valid.")
            .header("location", &fake.link("/v1.0/users/delta?$deltatoken=")),
    );
    fake.reply(Reply::error(400, "syncStateNotFound", "Sync state not found."));
    let client = client(&fake);
    let link = fake.link("/v1.0/users/delta?$deltatoken=oEcOySpF_hWYmTIU");

    for _ in 0..2 {
        let err = client.get_delta_page(&link, 100).await.unwrap_err();
        assert!(matches!(err, GraphError::DeltaExpired { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert_eq!(fake.hits().len(), 2, "neither is retried");
}

#[tokio::test]
async fn delta_pages_carry_the_page_size_and_split_removals() {
    let fake = Fake::start().await;
    let delta_link = fake.link("/v1.0/users/delta?$deltatoken=MF1LuFYbK6Lw4DtZ");
    fake.reply(Reply::json(
        200,
        json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
            "@odata.deltaLink": delta_link,
            "value": [
                {"displayName": "MOD Administrator", "id": "25dcffff-959e-4ece-9973-e5d9b800e8cc", "unknownField": 1},
                {"id": "8ffff70c-1c63-4860-b963-e34ec660931d", "@removed": {"reason": "changed"}},
                {"id": "86462606-fde0-4fc4-9e0c-a20eb73e54c6", "@removed": {"reason": "deleted"}}
            ]
        }),
    ));
    let client = client(&fake);
    let mut q = query();
    q.page_size = 50;
    q.filter = Some("accountEnabled eq true".into());

    let page = client.get_delta_page(client.delta_url(&q).as_str(), q.page_size).await.unwrap();

    let hit = &fake.hits()[0];
    assert_eq!(hit.uri, "/v1.0/users/delta?$select=id,displayName");
    assert_eq!(hit.prefer.as_deref(), Some("odata.maxpagesize=50"));
    assert_eq!(page.users.len(), 1);
    assert_eq!(page.users[0]["id"], "25dcffff-959e-4ece-9973-e5d9b800e8cc");
    assert_eq!(
        page.removed,
        [
            RemovedUser { id: "8ffff70c-1c63-4860-b963-e34ec660931d".into(), reason: "changed".into() },
            RemovedUser { id: "86462606-fde0-4fc4-9e0c-a20eb73e54c6".into(), reason: "deleted".into() },
        ]
    );
    assert_eq!(page.delta_link.as_deref(), Some(delta_link.as_str()));
    assert!(page.is_last());
}

#[tokio::test]
async fn a_link_to_another_origin_never_gets_the_token() {
    let fake = Fake::start().await;
    let elsewhere = Fake::start().await;
    elsewhere.always(Reply::page(users(&["a"]), None));
    let client = client(&fake);

    let err = client.get_page(&elsewhere.link("/v1.0/users?$skiptoken=x")).await.unwrap_err();

    assert!(matches!(err, GraphError::ForeignLink { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(elsewhere.hits().is_empty());
    assert!(fake.token_hits().is_empty() && fake.hits().is_empty());
    let not_a_url = client.get_page("/v1.0/users").await.unwrap_err();
    assert!(matches!(not_a_url, GraphError::BadLink { .. }), "{not_a_url:?}");
}

#[tokio::test]
async fn a_page_without_value_is_malformed_and_permanent() {
    let fake = Fake::start().await;
    fake.always(Reply::json(200, json!({"users": []})));
    let client = client(&fake);

    let err = client.get_page(client.users_url(&query()).as_str()).await.unwrap_err();

    assert!(matches!(err, GraphError::Malformed { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("`value` is missing"), "{err}");
    assert_eq!(fake.hits().len(), 1);
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let base = Url::parse("https://graph.microsoft.com").unwrap();
    let good = GraphSettings {
        authority_url: Url::parse("https://login.microsoftonline.com").unwrap(),
        graph_url: base,
        tenant: TENANT.into(),
        client_id: "app-1".into(),
        client_secret: SECRET.into(),
        timeout: Duration::from_secs(10),
        max_in_process_retries: 3,
        max_retry_after: Duration::from_secs(5),
    };
    assert!(GraphClient::new(good.clone()).is_ok());
    let no_secret = GraphSettings { client_secret: "".into(), ..good.clone() };
    assert!(matches!(GraphClient::new(no_secret), Err(GraphError::Config(_))));
    let no_client = GraphSettings { client_id: " ".into(), ..good.clone() };
    assert!(matches!(GraphClient::new(no_client), Err(GraphError::Config(_))));
    let bad_tenant = GraphSettings { tenant: "a/b".into(), ..good };
    assert!(matches!(GraphClient::new(bad_tenant), Err(GraphError::Config(_))));
}
