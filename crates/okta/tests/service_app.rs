//! The OAuth service-app flow: the client assertion Okta verifies, and the
//! access token's caching and refresh.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use support::{FakeOkta, IDENTITY_SOURCE, Reply, Seen, within_a_minute};
use xaas_okta::{OktaAuth, OktaClient, OktaError, OktaSettings};

const CLIENT_ID: &str = "0oaServiceApp123";
const KEY_ID: &str = "test-kid-1";
const PRIVATE_KEY: &str = include_str!("fixtures/service-app-key.pem");
const PRIVATE_KEY_PKCS1: &str = include_str!("fixtures/service-app-key.pkcs1.pem");
const PUBLIC_KEY: &str = include_str!("fixtures/service-app-key.pub.pem");
const OTHER_PUBLIC_KEY: &str = include_str!("fixtures/other-key.pub.pem");
const SESSIONS: &str = "/api/v1/identity-sources/0oa3l6l6WK6h0R0QW0g4/sessions";

fn settings(fake: &FakeOkta, key_pem: &str, key_id: Option<&str>) -> OktaSettings {
    let mut settings = OktaSettings::new(
        fake.base.clone(),
        IDENTITY_SOURCE,
        OktaAuth::ServiceApp {
            client_id: CLIENT_ID.to_string(),
            key_id: key_id.map(str::to_string),
            private_key_pem: SecretString::from(key_pem),
        },
    );
    settings.timeout = Duration::from_secs(10);
    settings
}

fn client(fake: &FakeOkta) -> OktaClient {
    OktaClient::new(settings(fake, PRIVATE_KEY, Some(KEY_ID))).unwrap()
}

fn token(value: &str, expires_in: u64) -> Reply {
    Reply::json(
        200,
        json!({"token_type": "Bearer", "expires_in": expires_in, "access_token": value,
               "scope": "okta.identitySources.manage okta.identitySources.read"}),
    )
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// Verifies the assertion the way Okta does: RS256 with the registered
/// public key, audience = the token endpoint, issuer = the client id.
fn verify(assertion: &str, public_pem: &str, token_url: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();
    jsonwebtoken::decode::<Claims>(assertion, &key, &validation).map(|t| t.claims)
}

fn is_token_request(seen: &Seen) -> bool {
    seen.path == "/oauth2/v1/token"
}

#[tokio::test]
async fn the_client_assertion_is_signed_and_addressed_as_okta_requires() {
    let fake = FakeOkta::start(vec![token("at-1", 3600), Reply::json(200, json!([]))]).await;
    let okta = client(&fake);

    within_a_minute(okta.list_sessions()).await.unwrap();

    let seen = fake.seen();
    let request = &seen[0];
    assert!(is_token_request(request), "{}", request.path);
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(request.header("authorization"), None, "the assertion is the credential");
    let form = request.form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "okta.identitySources.manage okta.identitySources.read");
    assert_eq!(form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assert_eq!(form.len(), 4, "{form:?}");

    let assertion = &form["client_assertion"];
    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(KEY_ID));

    let token_url = format!("{}oauth2/v1/token", fake.base);
    let claims = verify(assertion, PUBLIC_KEY, &token_url).unwrap();
    assert_eq!(claims.iss, CLIENT_ID);
    assert_eq!(claims.sub, CLIENT_ID);
    assert_eq!(claims.aud, token_url);
    assert_eq!(claims.exp - claims.iat, 300);
    assert_eq!(uuid::Uuid::parse_str(&claims.jti).unwrap().get_version_num(), 4);
    assert!(verify(assertion, OTHER_PUBLIC_KEY, &token_url).is_err(), "a different key must not verify");

    assert_eq!(seen[1].path, SESSIONS);
    assert_eq!(seen[1].header("authorization"), Some("Bearer at-1"));
}

#[tokio::test]
async fn a_pkcs1_key_without_a_kid_works_too() {
    let fake = FakeOkta::start(vec![token("at-1", 3600), Reply::json(200, json!([]))]).await;
    let okta = OktaClient::new(settings(&fake, PRIVATE_KEY_PKCS1, None)).unwrap();

    within_a_minute(okta.list_sessions()).await.unwrap();

    let assertion = fake.seen()[0].form()["client_assertion"].clone();
    assert_eq!(jsonwebtoken::decode_header(&assertion).unwrap().kid, None);
    verify(&assertion, PUBLIC_KEY, &format!("{}oauth2/v1/token", fake.base)).unwrap();
}

#[tokio::test]
async fn the_access_token_is_cached_across_calls_and_clones() {
    let fake = FakeOkta::start(vec![
        token("at-1", 3600),
        Reply::json(200, json!([])),
        Reply::json(200, json!([])),
        Reply::empty(202),
    ])
    .await;
    let okta = client(&fake);
    let clone = okta.clone();

    within_a_minute(okta.list_sessions()).await.unwrap();
    within_a_minute(clone.list_sessions()).await.unwrap();
    within_a_minute(okta.bulk_delete("aps1", &[])).await.unwrap();

    let seen = fake.seen();
    assert_eq!(seen.iter().filter(|s| is_token_request(s)).count(), 1);
    let api: Vec<_> = seen.iter().filter(|s| !is_token_request(s)).map(|s| s.header("authorization")).collect();
    assert_eq!(api, vec![Some("Bearer at-1"); 3]);
}

#[tokio::test]
async fn a_token_about_to_expire_is_refreshed_with_a_new_assertion() {
    // 30 s left is inside the refresh margin: each call needs a new token.
    let fake = FakeOkta::start(vec![
        token("at-1", 30),
        Reply::json(200, json!([])),
        token("at-2", 30),
        Reply::json(200, json!([])),
    ])
    .await;
    let okta = client(&fake);

    within_a_minute(okta.list_sessions()).await.unwrap();
    within_a_minute(okta.list_sessions()).await.unwrap();

    let seen = fake.seen();
    let paths: Vec<_> = seen.iter().map(is_token_request).collect();
    assert_eq!(paths, vec![true, false, true, false]);
    assert_eq!(seen[1].header("authorization"), Some("Bearer at-1"));
    assert_eq!(seen[3].header("authorization"), Some("Bearer at-2"));
    let jtis: HashSet<_> = [&seen[0], &seen[2]]
        .iter()
        .map(|s| {
            verify(&s.form()["client_assertion"], PUBLIC_KEY, &format!("{}oauth2/v1/token", fake.base)).unwrap().jti
        })
        .collect();
    assert_eq!(jtis.len(), 2, "each assertion is single use");
}

#[tokio::test]
async fn a_401_on_a_cached_token_refreshes_it_once_and_retries() {
    let fake = FakeOkta::start(vec![
        token("at-1", 3600),
        Reply::error(401, "E0000011", "Invalid token provided", &[]),
        token("at-2", 3600),
        Reply::empty(202),
    ])
    .await;
    let okta = client(&fake);

    within_a_minute(okta.bulk_delete("aps1", &[])).await.unwrap();

    let auth: Vec<_> = fake
        .seen()
        .iter()
        .filter(|s| !is_token_request(s))
        .map(|s| s.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(auth, vec![Some("Bearer at-1".to_string()), Some("Bearer at-2".to_string())]);
    assert_eq!(fake.hits(), 4);
}

#[tokio::test]
async fn a_second_401_after_refreshing_is_an_auth_error() {
    let fake = FakeOkta::start(vec![
        token("at-1", 3600),
        Reply::error(401, "E0000011", "Invalid token provided", &[]),
        token("at-2", 3600),
        Reply::error(401, "E0000011", "Invalid token provided", &[]),
    ])
    .await;
    let okta = client(&fake);

    let err = within_a_minute(okta.list_sessions()).await.unwrap_err();

    assert!(matches!(err, OktaError::Auth { status: 401, .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("at-2"), "{err}");
    assert_eq!(fake.hits(), 4);
    assert_eq!(fake.unused(), 0);
}

#[tokio::test]
async fn a_refused_token_request_says_so() {
    let fake = FakeOkta::start(vec![Reply::json(
        401,
        json!({"error": "invalid_client", "error_description": "The client_assertion signature is invalid."}),
    )])
    .await;
    let okta = client(&fake);

    let err = within_a_minute(okta.create_session()).await.unwrap_err();

    let OktaError::Auth { status, code, summary } = &err else { panic!("expected Auth, got {err:?}") };
    assert_eq!((*status, code.as_str()), (401, "invalid_client"));
    assert!(summary.contains("signature is invalid"), "{summary}");
    assert!(!err.is_retryable());
    assert_eq!(fake.hits(), 1, "nothing reached the API");
}

#[tokio::test]
async fn an_app_that_requires_dpop_is_reported_as_unsupported() {
    let fake = FakeOkta::start(vec![Reply::json(
        400,
        json!({"error": "invalid_dpop_proof", "error_description": "The DPoP proof JWT header is missing."}),
    )])
    .await;
    let okta = client(&fake);

    let err = within_a_minute(okta.list_sessions()).await.unwrap_err();

    assert!(matches!(err, OktaError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("DPoP"), "{err}");
}

#[test]
fn a_bad_key_is_refused_at_start_without_echoing_it() {
    let junk = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
    let settings = OktaSettings::new(
        url::Url::parse("https://acme.okta.com").unwrap(),
        IDENTITY_SOURCE,
        OktaAuth::ServiceApp { client_id: CLIENT_ID.into(), key_id: None, private_key_pem: SecretString::from(junk) },
    );
    let debug = format!("{settings:?}");
    assert!(!debug.contains("c2VjcmV0"), "{debug}");

    let err = OktaClient::new(settings).unwrap_err();

    assert!(matches!(err, OktaError::Config(_)), "{err:?}");
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    assert!(err.to_string().contains("private key"), "{err}");
}
