//! A scripted stand-in for Okta: answers requests in order from a script
//! and records every request it saw, so tests assert on what really went
//! over the wire.

// Each test binary uses a different part of it.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use url::Url;

/// One scripted answer.
pub enum Reply {
    Answer {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering, after reading the request.
    HangUp,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: vec![(HeaderName::from_static("content-type"), HeaderValue::from_static("application/json"))],
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self::Answer { status: StatusCode::from_u16(status).unwrap(), headers: vec![], body: vec![] }
    }

    /// Okta's error body.
    pub fn error(status: u16, code: &str, summary: &str, causes: &[&str]) -> Self {
        let causes: Vec<_> = causes.iter().map(|c| serde_json::json!({ "errorSummary": c })).collect();
        Self::json(
            status,
            serde_json::json!({
                "errorCode": code, "errorSummary": summary, "errorLink": code,
                "errorId": "oaeTestErrorId", "errorCauses": causes,
            }),
        )
    }

    pub fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Self::Answer { headers, .. } = &mut self {
            headers.push((HeaderName::from_static(name), HeaderValue::from_str(&value.to_string()).unwrap()));
        }
        self
    }
}

/// A session as Okta's spec shows it.
pub fn session(id: &str, status: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "identitySourceId": IDENTITY_SOURCE, "status": status, "importType": "INCREMENTAL",
        "created": "2022-04-04T15:56:05.000Z", "lastUpdated": "2022-05-05T18:15:44.000Z",
    })
}

pub const IDENTITY_SOURCE: &str = "0oa3l6l6WK6h0R0QW0g4";

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

pub struct FakeOkta {
    pub base: Url,
    script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeOkta {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let script = Arc::new(Script { replies: Mutex::new(replies.into()), seen: Mutex::default() });
        let app = axum::Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, script, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.script.seen.lock().unwrap().len()
    }

    /// Replies the client never asked for: a test that scripts more than
    /// the client uses has found a missing request.
    pub fn unused(&self) -> usize {
        self.script.replies.lock().unwrap().len()
    }
}

impl Drop for FakeOkta {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(script): State<Arc<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    script.seen.lock().unwrap().push(Seen { method, path: uri.path().to_string(), headers, body: body.to_vec() });
    let next = script.replies.lock().unwrap().pop_front();
    match next {
        Some(Reply::Answer { status, headers, body }) => {
            let mut response = (status, body).into_response();
            response.headers_mut().extend(headers);
            response
        }
        // Unwinding ends the connection task before any response is
        // written, which is what a reset after sending looks like.
        Some(Reply::HangUp) => std::panic::resume_unwind(Box::new("scripted hang-up")),
        None => (StatusCode::IM_A_TEAPOT, "the test did not script this request").into_response(),
    }
}

/// Guards a test against hanging; not a timing assertion.
pub async fn within_a_minute<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut).await.expect("the test hung")
}

/// A `X-Rate-Limit-Reset` value `secs` from now.
pub fn reset_in(secs: i64) -> String {
    (time_now() + secs).to_string()
}

fn time_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}
