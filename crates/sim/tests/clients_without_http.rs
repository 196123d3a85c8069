//! The clients' own request builders and decoders, wired straight to the
//! sandbox's plain functions: no socket, no runtime, no clock. This is how a
//! deterministic simulation drives the pipeline, and it proves the pieces fit:
//! the URLs and bodies the clients build are the requests `respond` and
//! `handle` serve, and their answers decode into what the workers get.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use time::macros::datetime;
use url::Url;
use xaas_core::{ExternalId, OktaProfile, Op, SessionStatus};
use xaas_graph::{GraphEndpoints, GraphPage, UsersQuery, decode_page};
use xaas_okta::{OktaApi, OktaError};
use xaas_sim::SimConfig;
use xaas_sim::directory::Directory;
use xaas_sim::graph::{GraphRequest, respond};
use xaas_sim::okta::{self, IdSource, Moment, OktaRequest, OktaState, store::UserStatus};

/// One page, asked for as the Graph client would and read as it would.
fn page(endpoints: &GraphEndpoints, dir: &Directory, link: &str, size: Option<u16>) -> GraphPage {
    let request = endpoints.page_request(link, size).unwrap();
    let mut asked = GraphRequest::get(request.url.as_str()).unwrap();
    asked.headers = request.headers;
    let now = datetime!(2031-02-03 04:05:06 UTC);
    let answer = respond(dir, &asked, now);
    decode_page(request.url.path(), answer.status, &answer.headers, &answer.body).unwrap()
}

#[test]
fn a_full_read_and_a_delta_round_through_the_graph_clients_functions() {
    let mut dir = Directory::default();
    for i in 0..25 {
        let user = json!({"id": format!("u{i:02}"), "displayName": format!("User {i}"), "accountEnabled": i % 5 != 0});
        dir.insert_at(user, datetime!(2031-01-01 00:00 UTC)).unwrap();
    }
    let endpoints = GraphEndpoints::new(&Url::parse("http://graph.sim").unwrap()).unwrap();
    let query = UsersQuery {
        page_size: 10,
        select: vec!["id".into(), "displayName".into()],
        filter: Some("accountEnabled eq true".into()),
    };

    let mut link = endpoints.users_url(&query).to_string();
    let mut ids = Vec::new();
    loop {
        let p = page(&endpoints, &dir, &link, None);
        ids.extend(p.users.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
        match p.next_link {
            Some(next) => link = next,
            None => break,
        }
    }
    assert_eq!(ids.len(), 20, "the disabled fifth is filtered out by Graph: {ids:?}");

    let mut link = endpoints.delta_url(&query).to_string();
    let delta_link = loop {
        let p = page(&endpoints, &dir, &link, Some(query.page_size));
        assert!(p.users.len() <= 10, "Prefer: odata.maxpagesize reached the sandbox");
        match (p.next_link, p.delta_link) {
            (Some(next), _) => link = next,
            (None, Some(delta)) => break delta,
            (None, None) => panic!("a delta round ends with a deltaLink"),
        }
    };
    dir.remove("u03", xaas_sim::directory::Removal::Deleted).unwrap();
    let changes = page(&endpoints, &dir, &delta_link, Some(query.page_size));
    assert_eq!(changes.removed.len(), 1);
    assert_eq!((changes.removed[0].id.as_str(), changes.removed[0].reason.as_str()), ("u03", "deleted"));
}

fn profile(id: &str) -> OktaProfile {
    let email = format!("{id}@example.com");
    OktaProfile {
        external_id: ExternalId::parse(id).unwrap(),
        profile: Some(BTreeMap::from([("userName".to_owned(), email.clone()), ("email".to_owned(), email)])),
    }
}

#[test]
fn a_session_through_the_okta_clients_functions() {
    let mut cfg = SimConfig::defaults();
    cfg.cooldown = Duration::from_secs(300);
    cfg.import_duration = Duration::from_secs(2);
    let mut state = OktaState::new(&cfg).with_ids(IdSource::seeded(1));
    let api = OktaApi::new(Url::parse("https://acme.okta.test").unwrap(), &cfg.identity_source_id).unwrap();
    let t0 = Moment::origin(datetime!(2031-02-03 04:05:06 UTC));
    // Sends what the client would send, at `now`.
    let mut send = |request: xaas_okta::ApiRequest, now: Moment| {
        let asked = OktaRequest::new(request.method, request.url.as_str(), request.body.unwrap_or_default());
        okta::handle(&mut state, &asked, now)
    };

    let r = send(api.create_session(), t0);
    let session = api.decode_create(r.status, &r.headers, &r.body).unwrap();
    assert_eq!(session.status, SessionStatus::Created);
    assert_eq!(session.okta_date, Some(t0.wall), "Okta's clock, read from its Date header");

    let t1 = t0.plus(Duration::from_secs(1));
    let r = send(api.bulk(&session.id, Op::Upsert, &[profile("a"), profile("b")]), t1);
    api.decode_bulk(Op::Upsert, r.status, &r.headers, &r.body).unwrap();
    let r = send(api.bulk(&session.id, Op::Delete, &[profile("a")]), t1);
    api.decode_bulk(Op::Delete, r.status, &r.headers, &r.body).unwrap();

    let r = send(api.start_import(&session.id), t1);
    let triggered = api.decode_start_import(&session.id, r.status, &r.headers, &r.body).unwrap();
    assert_eq!((triggered.status, triggered.okta_date), (SessionStatus::Triggered, Some(t1.wall)));

    let r = send(api.create_session(), t1.plus(Duration::from_secs(299)));
    assert!(matches!(api.decode_create(r.status, &r.headers, &r.body), Err(OktaError::CreateRefused { .. })));

    let done = t1.plus(Duration::from_secs(2));
    let r = send(api.get_session(&session.id), done);
    let completed = api.decode_get(r.status, &r.headers, &r.body).unwrap();
    assert_eq!((completed.status, completed.okta_date), (SessionStatus::Completed, Some(done.wall)));
    let r = send(api.list_sessions(), done);
    assert_eq!(api.decode_list(r.status, &r.headers, &r.body).unwrap().len(), 1);
    let r = send(api.delete_session(&session.id), done);
    assert!(matches!(api.decode_delete(r.status, &r.headers, &r.body), Err(OktaError::Validation { status: 400, .. })));

    let users: Vec<(&str, UserStatus)> = state.users.iter().map(|(id, u)| (id, u.status)).collect();
    assert_eq!(users, [("a", UserStatus::Deactivated), ("b", UserStatus::Active)]);
    let records = state.sessions.records();
    assert_eq!(records[0].requests.iter().map(|r| r.profiles).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(state.refused.len(), 2, "the create inside the cooldown and the cancel after the import");
}
