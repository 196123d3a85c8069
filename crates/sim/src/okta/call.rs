//! The Identity Sources API as one plain function: a request and a moment
//! in, Okta's answer out, the state changed as Okta would change it.
//!
//! This is the sandbox's Okta without HTTP. `api` serves it over axum; a
//! simulation calls [`handle`] directly with a virtual clock and a seeded
//! [`IdSource`](super::ids::IdSource), so the same calls give the same
//! answers, byte for byte. Nothing here sleeps, spawns, or reads a clock.
//!
//! Authentication and rate limiting are not part of it: the HTTP layer
//! enforces them before a request gets here. Everything else is: routing,
//! the session and bulk rules, the answers (status, body, `Date`), and the
//! record of every refusal (`OktaState::refused`).
//!
//! Status codes follow the spec: create 200 (Okta has been seen answering
//! 201; the spec says 200), list/get 200, cancel 204, bulk loads 202 with no
//! body, start-import 200 with the single session. Checks run in the order a
//! caller can act on: identity source, session, session state, then the body.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;
use serde::Serialize;

use super::bulk::{self, BulkKind, Load};
use super::error::OktaError;
use super::session::SessionView;
use super::{OktaState, RefusedRequest};
use crate::clock::Moment;

/// One call to the Identity Sources API, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaRequest {
    pub method: Method,
    /// The path as sent, percent-encoding included
    /// (`/api/v1/identity-sources/0oa…/sessions/aps…/bulk-upsert`).
    pub path: String,
    pub body: Vec<u8>,
}

impl OktaRequest {
    /// `url` is a full URL, as a client requests it, or only its path; a
    /// query or fragment is ignored (no route takes one).
    pub fn new(method: Method, url: &str, body: impl Into<Vec<u8>>) -> Self {
        let path = match url::Url::parse(url) {
            Ok(url) => url.path().to_owned(),
            Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
        };
        Self { method, path, body: body.into() }
    }
}

/// Okta's answer: what goes on the wire, minus what the HTTP layer adds
/// (`X-Rate-Limit-*`, `Content-Length`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaResponse {
    pub status: StatusCode,
    /// `Date` (Okta's clock, the moment's wall clock) always;
    /// `Content-Type: application/json` with a body.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The operations of the API, routed from method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    CreateSession,
    ListSessions,
    GetSession { session: String },
    CancelSession { session: String },
    Bulk { session: String, kind: BulkKind },
    StartImport { session: String },
}

impl Operation {
    /// The identity source and operation `method path` names. `Err` is the
    /// bare status an HTTP router answers with: 404 for an unknown path,
    /// 405 for a known path and another method, 400 for a segment that is
    /// not UTF-8 once decoded.
    pub fn route(method: &Method, path: &str) -> Result<(String, Operation), StatusCode> {
        let segments: Vec<&str> = path.strip_prefix('/').ok_or(StatusCode::NOT_FOUND)?.split('/').collect();
        let (source, rest) = match segments.as_slice() {
            ["api", "v1", "identity-sources", source, "sessions", rest @ ..] if !source.is_empty() => (*source, rest),
            _ => return Err(StatusCode::NOT_FOUND),
        };
        let source = decode(source)?;
        // HEAD is served wherever GET is, as axum's `get` does.
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        let op = match rest {
            [] if post => Operation::CreateSession,
            [] if get => Operation::ListSessions,
            [] => return Err(StatusCode::METHOD_NOT_ALLOWED),
            [session, tail @ ..] if !session.is_empty() => {
                let session = decode(session)?;
                match tail {
                    [] if get => Operation::GetSession { session },
                    [] if *method == Method::DELETE => Operation::CancelSession { session },
                    ["bulk-upsert"] if post => Operation::Bulk { session, kind: BulkKind::Upsert },
                    ["bulk-delete"] if post => Operation::Bulk { session, kind: BulkKind::Delete },
                    ["start-import"] if post => Operation::StartImport { session },
                    [] | ["bulk-upsert" | "bulk-delete" | "start-import"] => {
                        return Err(StatusCode::METHOD_NOT_ALLOWED);
                    }
                    _ => return Err(StatusCode::NOT_FOUND),
                }
            }
            _ => return Err(StatusCode::NOT_FOUND),
        };
        Ok((source, op))
    }
}

fn decode(segment: &str) -> Result<String, StatusCode> {
    percent_decode_str(segment).decode_utf8().map(|s| s.into_owned()).map_err(|_| StatusCode::BAD_REQUEST)
}

/// Serves one request at `now`: brings the state up to `now` first
/// (expiries, completed imports), then answers as Okta does. A refusal is
/// recorded in `state.refused`; its `errorId` comes from `state.ids`.
pub fn handle(state: &mut OktaState, req: &OktaRequest, now: Moment) -> OktaResponse {
    state.advance(now);
    let answer = match Operation::route(&req.method, &req.path) {
        Ok((source, op)) => respond(state, &source, &op, &req.body, now),
        Err(status) => Ok(Answer::Bare(status)),
    };
    let mut response = match answer {
        Ok(answer) => answer.render(now),
        Err(refused) => {
            state.record_refusal(RefusedRequest {
                at: now.wall,
                method: req.method.to_string(),
                path: req.path.clone(),
                status: refused.status.as_u16(),
                error_code: refused.code.to_owned(),
                error_summary: refused.summary.clone(),
                error_causes: refused.causes.clone(),
            });
            let body = refused.body(state.ids.error_id());
            json(refused.status, body, now)
        }
    };
    if req.method == Method::HEAD {
        response.body.clear();
    }
    response
}

/// A successful answer, before it is rendered.
enum Answer {
    Session(SessionView),
    Sessions(Vec<SessionView>),
    /// 202 or 204, no body; also the router's 404/405.
    Bare(StatusCode),
}

impl Answer {
    fn render(self, now: Moment) -> OktaResponse {
        match self {
            Answer::Session(view) => json(StatusCode::OK, to_json(&view), now),
            Answer::Sessions(views) => json(StatusCode::OK, to_json(&views), now),
            Answer::Bare(status) => OktaResponse { status, headers: dated(now), body: Vec::new() },
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings: encoding cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn json(status: StatusCode, body: Vec<u8>, now: Moment) -> OktaResponse {
    let mut headers = dated(now);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    OktaResponse { status, headers, body }
}

/// Every Okta answer carries `Date`: clients measure Okta's clock by it
/// (rate-limit resets, the cooldown after a trigger).
fn dated(now: Moment) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(date) = HeaderValue::from_str(&now.http_date()) {
        headers.insert(header::DATE, date);
    }
    headers
}

fn respond(state: &mut OktaState, source: &str, op: &Operation, body: &[u8], now: Moment) -> Result<Answer, OktaError> {
    // The sandbox has exactly one identity source; any other id is Okta's 404.
    if source != state.sessions.identity_source_id() {
        return Err(OktaError::not_found(source, "IdentitySource"));
    }
    match op {
        Operation::CreateSession => state.sessions.create(now, &mut state.ids).map(Answer::Session),
        Operation::ListSessions => Ok(Answer::Sessions(state.sessions.list())),
        Operation::GetSession { session } => state.sessions.get(session, now).map(Answer::Session),
        Operation::CancelSession { session } => {
            state.sessions.cancel(session, now).map(|()| Answer::Bare(StatusCode::NO_CONTENT))
        }
        Operation::Bulk { session, kind } => {
            load(state, session, *kind, body, now).map(|()| Answer::Bare(StatusCode::ACCEPTED))
        }
        Operation::StartImport { session } => state.sessions.trigger(session, now).map(Answer::Session),
    }
}

fn load(state: &mut OktaState, session: &str, kind: BulkKind, body: &[u8], now: Moment) -> Result<(), OktaError> {
    // The body's verdict waits until the session has been checked.
    let parsed = bulk::parse_within(kind, body, state.schema.as_ref(), &state.limits);
    state.sessions.check_loadable(session, now)?;
    let load = parsed?;
    // Okta leaves a CREATED session CREATED after a bulk-delete that names no
    // user it knows (reference §1.3); triggering it is then a 400.
    let moves_forward = match &load {
        Load::Upsert(_) => true,
        Load::Delete(ids) => ids.iter().any(|id| state.users.contains(id)),
    };
    state.sessions.load(session, now, load, body.len(), moves_forward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimConfig;
    use crate::okta::ids::IdSource;
    use crate::okta::store::UserStatus;
    use serde_json::{Value, json};
    use std::time::Duration;

    const SOURCE: &str = "/api/v1/identity-sources/0oasandbox00000000001/sessions";

    fn state() -> OktaState {
        let mut cfg = SimConfig::defaults();
        cfg.cooldown = Duration::from_secs(60);
        cfg.import_duration = Duration::from_secs(2);
        OktaState::new(&cfg).with_ids(IdSource::seeded(3))
    }

    fn t0() -> Moment {
        Moment::origin(time::macros::datetime!(2024-05-06 07:08:09 UTC))
    }

    fn call(state: &mut OktaState, method: Method, path: &str, body: &[u8], now: Moment) -> (u16, Value) {
        let r = handle(state, &OktaRequest::new(method, path, body), now);
        assert_eq!(r.headers[header::DATE], now.http_date().as_str(), "every answer is dated on Okta's clock");
        (r.status.as_u16(), serde_json::from_slice(&r.body).unwrap_or(Value::Null))
    }

    #[test]
    fn routes_are_the_apis() {
        let route = |m: Method, p: &str| Operation::route(&m, p);
        assert_eq!(
            route(Method::POST, "/api/v1/identity-sources/0oa1/sessions"),
            Ok(("0oa1".into(), Operation::CreateSession))
        );
        assert_eq!(
            route(Method::POST, "/api/v1/identity-sources/0oa1/sessions/a%2Fb/bulk-delete"),
            Ok(("0oa1".into(), Operation::Bulk { session: "a/b".into(), kind: BulkKind::Delete }))
        );
        assert_eq!(
            route(Method::HEAD, "/api/v1/identity-sources/0oa1/sessions/aps1"),
            Ok(("0oa1".into(), Operation::GetSession { session: "aps1".into() }))
        );
        assert_eq!(route(Method::PUT, "/api/v1/identity-sources/0oa1/sessions"), Err(StatusCode::METHOD_NOT_ALLOWED));
        assert_eq!(
            route(Method::GET, "/api/v1/identity-sources/0oa1/sessions/aps1/start-import"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        for unknown in
            ["/api/v1/identity-sources//sessions", "/api/v1/identity-sources/0oa1/sessions/", "/sim/okta/users", "x"]
        {
            assert_eq!(route(Method::GET, unknown), Err(StatusCode::NOT_FOUND), "{unknown}");
        }
    }

    #[test]
    fn a_whole_session_on_a_virtual_clock() {
        let mut okta = state();
        let t0 = t0();
        let (status, created) = call(&mut okta, Method::POST, &format!("http://okta.test{SOURCE}"), b"", t0);
        assert_eq!((status, created["status"].as_str()), (200, Some("CREATED")));
        assert_eq!(created["created"], "2024-05-06T07:08:09.000Z");
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(id, state().sessions.create(t0, &mut IdSource::seeded(3)).unwrap().id, "ids come from the seed");

        let body = json!({"entityType": "USERS", "profiles": [{"externalId": "u1", "profile": {"email": "a@b.co"}}]});
        let t1 = t0.plus(Duration::from_secs(1));
        let (status, _) =
            call(&mut okta, Method::POST, &format!("{SOURCE}/{id}/bulk-upsert"), body.to_string().as_bytes(), t1);
        assert_eq!(status, 202);
        let (status, triggered) = call(&mut okta, Method::POST, &format!("{SOURCE}/{id}/start-import"), b"", t1);
        assert_eq!((status, triggered["status"].as_str()), (200, Some("TRIGGERED")));

        let (_, running) =
            call(&mut okta, Method::GET, &format!("{SOURCE}/{id}"), b"", t1.plus(Duration::from_secs(1)));
        assert_eq!(running["status"], "TRIGGERED");
        assert!(okta.users.get("u1").is_none(), "the import has not finished");
        let (_, done) = call(&mut okta, Method::GET, &format!("{SOURCE}/{id}"), b"", t1.plus(Duration::from_secs(2)));
        assert_eq!(done["status"], "COMPLETED");
        assert_eq!(okta.users.get("u1").unwrap().status, UserStatus::Active);

        let inside = t1.plus(Duration::from_secs(59));
        let (status, refused) = call(&mut okta, Method::POST, SOURCE, b"", inside);
        assert_eq!((status, refused["errorCode"].as_str()), (400, Some("E0000001")), "inside the cooldown: {refused}");
        assert!(refused["errorId"].as_str().unwrap().starts_with("oae"));
        assert_eq!(okta.refused.len(), 1);
        assert_eq!((okta.refused[0].path.as_str(), okta.refused[0].at), (SOURCE, inside.wall));
        let (status, _) = call(&mut okta, Method::POST, SOURCE, b"", t1.plus(Duration::from_secs(60)));
        assert_eq!(status, 200, "the cooldown is over");
    }

    #[test]
    fn unknown_sources_and_routes() {
        let mut okta = state();
        let (status, body) = call(&mut okta, Method::GET, "/api/v1/identity-sources/0oaother/sessions", b"", t0());
        assert_eq!((status, body["errorCode"].as_str()), (404, Some("E0000007")));
        let r = handle(&mut okta, &OktaRequest::new(Method::GET, "/api/v2/nothing", b""), t0());
        assert_eq!((r.status, r.body.len()), (StatusCode::NOT_FOUND, 0));
        assert_eq!(okta.refused.len(), 1, "a router 404 is not an Okta refusal");
    }

    #[test]
    fn the_same_calls_at_the_same_moments_give_the_same_answers() {
        let script = |okta: &mut OktaState| -> Vec<OktaResponse> {
            let t0 = t0();
            let mut answers = vec![handle(okta, &OktaRequest::new(Method::POST, SOURCE, b""), t0)];
            let id: Value = serde_json::from_slice(&answers[0].body).unwrap();
            let one = format!("{SOURCE}/{}", id["id"].as_str().unwrap());
            let body = json!({"entityType": "USERS", "profiles": [{"externalId": "u1", "profile": {}}]}).to_string();
            for (method, path, body, secs) in [
                (Method::POST, format!("{one}/bulk-upsert"), body.as_str(), 1),
                (Method::POST, format!("{one}/bulk-upsert"), "[]", 2),
                (Method::POST, format!("{one}/start-import"), "", 3),
                (Method::POST, SOURCE.to_owned(), "", 4),
                (Method::GET, SOURCE.to_owned(), "", 9),
            ] {
                let now = t0.plus(Duration::from_secs(secs));
                answers.push(handle(okta, &OktaRequest::new(method, &path, body), now));
            }
            answers
        };
        let (a, b) = (script(&mut state()), script(&mut state()));
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(), [200, 202, 400, 200, 400, 200]);
        // Every time in every answer is one of the moments given, none from
        // the real clock.
        let given = |t: &str| t.starts_with("2024-05-06T07:08:");
        for r in &a {
            assert!(r.headers[header::DATE].to_str().unwrap().starts_with("Mon, 06 May 2024 07:08:"));
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            for view in std::iter::once(&body).chain(body.as_array().into_iter().flatten()) {
                for field in ["created", "lastUpdated"] {
                    assert!(view[field].as_str().is_none_or(given), "{view}");
                }
            }
        }
    }
}
