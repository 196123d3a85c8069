//! A stand-in for Entra's token endpoint and Graph, on 127.0.0.1:0, that
//! records every request and answers Graph requests from a script.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use url::Url;

/// The secret the fake accepts.
pub const SECRET: &str = "right-secret-Value~123";

/// One scripted Graph answer.
#[derive(Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self { status, headers: vec![("content-type", "application/json".into())], body: body.to_string() }
    }

    /// A users page; `next` is a nextLink.
    pub fn page(users: Value, next: Option<&str>) -> Self {
        let mut body = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": users});
        if let Some(next) = next {
            body["@odata.nextLink"] = json!(next);
        }
        Self::json(200, body)
    }

    /// Graph's OData error body.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            json!({"error": {"code": code, "message": message, "innerError": {"date": "2021-05-18T19:03:10"}}}),
        )
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::from_u16(self.status).unwrap(), self.body).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        response
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Path and query exactly as received.
    pub uri: String,
    pub authorization: Option<String>,
    pub prefer: Option<String>,
    pub at: Instant,
}

/// A token request: the tenant path segment and the form.
#[derive(Debug, Clone)]
pub struct TokenHit {
    pub tenant: String,
    pub form: HashMap<String, String>,
}

#[derive(Default)]
struct Script {
    token_lifetime: u64,
    token_delay: Duration,
    tokens_issued: usize,
    token_hits: Vec<TokenHit>,
    replies: VecDeque<Reply>,
    fallback: Option<Reply>,
    hits: Vec<Hit>,
}

type Shared = Arc<Mutex<Script>>;

pub struct Fake {
    /// `http://127.0.0.1:port/`: both the authority and the Graph URL.
    pub base: Url,
    script: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fake {
    pub async fn start() -> Self {
        let script: Shared = Arc::new(Mutex::new(Script { token_lifetime: 3599, ..Script::default() }));
        let app =
            Router::new().route("/{tenant}/oauth2/v2.0/token", post(token)).fallback(graph).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, script, server }
    }

    /// An absolute URL on this server, e.g. a nextLink.
    pub fn link(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path_and_query)
    }

    pub fn reply(&self, reply: Reply) {
        self.script.lock().unwrap().replies.push_back(reply);
    }

    /// The answer once the scripted ones are used up.
    pub fn always(&self, reply: Reply) {
        self.script.lock().unwrap().fallback = Some(reply);
    }

    pub fn token_lifetime(&self, seconds: u64) {
        self.script.lock().unwrap().token_lifetime = seconds;
    }

    pub fn token_delay(&self, delay: Duration) {
        self.script.lock().unwrap().token_delay = delay;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.script.lock().unwrap().hits.clone()
    }

    pub fn token_hits(&self) -> Vec<TokenHit> {
        self.script.lock().unwrap().token_hits.clone()
    }
}

async fn token(
    State(script): State<Shared>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let delay = {
        let mut s = script.lock().unwrap();
        s.token_hits.push(TokenHit { tenant, form: form.clone() });
        s.token_delay
    };
    tokio::time::sleep(delay).await;
    let sent = form.get("client_secret").cloned().unwrap_or_default();
    if sent != SECRET {
        // The real endpoint does not echo the secret; this one does, so the
        // tests prove the client scrubs whatever comes back.
        let description = format!(
            "AADSTS7000215: Invalid client secret provided ({sent}). Ensure the secret being sent in the request is the client secret value, not the client secret ID.\r\nTrace ID: 1\r\nCorrelation ID: 2"
        );
        let body = json!({"error": "invalid_client", "error_description": description, "error_codes": [7000215]});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    let mut s = script.lock().unwrap();
    s.tokens_issued += 1;
    let body = json!({
        "token_type": "Bearer",
        "expires_in": s.token_lifetime,
        "ext_expires_in": s.token_lifetime,
        "access_token": format!("tok-{}", s.tokens_issued),
    });
    axum::Json(body).into_response()
}

async fn graph(State(script): State<Shared>, headers: HeaderMap, request: Request) -> Response {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let mut s = script.lock().unwrap();
    s.hits.push(Hit {
        uri: request.uri().to_string(),
        authorization: header("authorization"),
        prefer: header("prefer"),
        at: Instant::now(),
    });
    match s.replies.pop_front().or_else(|| s.fallback.clone()) {
        Some(reply) => reply.into_response(),
        None => Reply::error(500, "noScript", "the test scripted no reply for this request").into_response(),
    }
}
