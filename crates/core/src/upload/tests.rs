//! Table tests of the upload machine's rules: each feeds inputs and reads
//! the commands back, with Okta's answers scripted by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::*;
use crate::ids::ExternalId;
use crate::lineage::CopyId;
use crate::messages::{Batch, OktaProfile, Op, RunOptions, SessionStatus};

fn t(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
}

fn sync() -> SyncName {
    SyncName::parse("demo").unwrap()
}

fn run() -> RunId {
    RunId::parse("r1").unwrap()
}

/// 2 profiles a request, 2 requests a session, a 300 s cooldown.
fn settings() -> Settings {
    let limits = Limits {
        profiles_per_request: 2,
        bytes_per_request: 204_800,
        requests_per_session: 2,
        cooldown: Duration::from_secs(300),
    };
    Settings {
        sync: sync(),
        limits,
        guards: Guards::DEFAULT,
        retry: RetryBudget { attempts: 3, within: Duration::from_secs(600) },
        sabotage: Sabotage::NONE,
    }
}

fn profile(id: &str) -> OktaProfile {
    OktaProfile {
        external_id: ExternalId::parse(id).unwrap(),
        profile: Some(BTreeMap::from([("email".to_string(), format!("{id}@x.example"))])),
    }
}

/// Page `seq` of a chain of single copies (copy id = 100 + seq), as one batch.
fn page(seq: u32, last: bool, ids: &[&str]) -> Batch {
    Batch {
        v: 1,
        run_id: run(),
        sync: sync(),
        options: RunOptions::default(),
        page_seq: seq,
        part: 0,
        parts: 1,
        total_pages: last.then_some(seq + 1),
        op: Op::Upsert,
        profiles: ids.iter().map(|id| profile(id)).collect(),
        rejected: vec![],
        delta_link: None,
        copy: CopyId::from_u64(100 + u64::from(seq)),
        parent: (seq > 0).then(|| CopyId::from_u64(100 + u64::from(seq) - 1)),
    }
}

/// A machine, its clock and the keys it was given.
struct Rig {
    m: Uploader,
    now: OffsetDateTime,
    keys: u64,
}

impl Rig {
    fn active(events: Vec<RunEvent>) -> (Rig, Vec<Command>) {
        let mut rig = Rig { m: Uploader::new(settings()), now: t(0), keys: 0 };
        let out = rig.m.handle(rig.now, Input::Gained { events, roster: vec![] });
        (rig, out)
    }

    fn batch(&mut self, b: Batch) -> (Key, Vec<Command>) {
        self.keys += 1;
        let key = Key(self.keys);
        (key, self.m.handle(self.now, Input::Message { key, message: UploaderMessage::Batch(b) }))
    }

    /// Answers the outstanding call (the last command of `out`).
    fn answer(&mut self, out: &[Command], result: Result<Answer, Failure>) -> Vec<Command> {
        let call = last_call(out).0;
        self.m.handle(self.now, Input::Okta { call, reply: Reply { result, okta_date: Some(self.now) } })
    }

    /// Answers the takeover's look at Okta's sessions: none open.
    fn none_open(&mut self, out: &[Command]) -> Vec<Command> {
        assert_eq!(last_call(out).1, Call::ListSessions, "the first create of a term looks first");
        self.answer(out, Ok(Answer::Sessions(vec![])))
    }

    /// Lets the outstanding sleep end.
    fn wake(&mut self, out: &[Command]) -> Vec<Command> {
        let Some(Command::Sleep { timer, until, .. }) = out.last() else { panic!("no sleep in {out:#?}") };
        self.now = self.now.max(*until);
        self.m.handle(self.now, Input::Timer { timer: *timer })
    }
}

fn last_call(out: &[Command]) -> (CallId, Call) {
    match out.last() {
        Some(Command::Okta { call, request }) => (*call, request.clone()),
        other => panic!("expected an Okta call last, got {other:?} in {out:#?}"),
    }
}

fn session(id: &str, status: SessionStatus) -> Result<Answer, Failure> {
    Ok(Answer::Session(SessionInfo { id: id.into(), status }))
}

fn events(out: &[Command]) -> Vec<&EventKind> {
    out.iter().filter_map(|c| if let Command::Record(e) = c { Some(&e.kind) } else { None }).collect()
}

fn acks(out: &[Command]) -> Vec<Key> {
    out.iter().filter_map(|c| if let Command::Ack(k) = c { Some(*k) } else { None }).collect()
}

#[test]
fn nothing_is_opened_until_there_is_a_full_request_or_the_run_is_all_in() {
    let (mut rig, out) = Rig::active(vec![]);
    assert!(out.is_empty());
    // One profile of a two-profile request, and the run goes on.
    let (_, out) = rig.batch(page(0, false, &["a"]));
    assert!(!out.iter().any(|c| matches!(c, Command::Okta { .. })), "{out:#?}");
    assert!(rig.m.is_idle());
    // The last page: the partial request goes out, into a new session.
    let (_, out) = rig.batch(page(1, true, &["b"]));
    let out = rig.none_open(&out);
    assert_eq!(last_call(&out).1, Call::CreateSession);
}

#[test]
fn every_request_is_announced_before_it_is_sent_and_the_limit_triggers() {
    let (mut rig, _) = Rig::active(vec![]);
    let (k1, out) = rig.batch(page(0, false, &["a", "b"]));
    let out = rig.none_open(&out);
    assert_eq!(last_call(&out).1, Call::CreateSession);
    let out = rig.answer(&out, session("s1", SessionStatus::Created));
    // SessionOpened, then BulkSending #1, then the call.
    assert!(matches!(
        events(&out)[..],
        [EventKind::SessionOpened { .. }, EventKind::BulkSending { request_no: 1, .. }]
    ));
    assert!(
        matches!(last_call(&out).1, Call::Bulk { ref session, op: Op::Upsert, ref profiles } if session == "s1" && profiles.len() == 2)
    );
    let out = rig.answer(&out, Ok(Answer::Accepted));
    assert!(matches!(events(&out)[..], [EventKind::BulkLoaded { request_no: 1, .. }]));
    assert_eq!(acks(&out), vec![k1], "a batch is acked once all of it is loaded");
    // Request 2 is the session's last: it is triggered before anything else.
    let (_, out) = rig.batch(page(1, false, &["c", "d"]));
    let out = rig.answer(&out, Ok(Answer::Accepted));
    assert_eq!(last_call(&out).1, Call::StartImport { session: "s1".into() });
    let out = rig.answer(&out, session("s1", SessionStatus::Triggered));
    assert!(matches!(events(&out)[..], [EventKind::SessionTriggered { requests: 2, okta_at: Some(_), .. }]));
}

#[test]
fn the_next_session_waits_out_the_cooldown_on_oktas_clock() {
    let (mut rig, _) = Rig::active(vec![]);
    let (_, out) = rig.batch(page(0, false, &["a", "b"]));
    let out = rig.none_open(&out);
    let out = rig.answer(&out, session("s1", SessionStatus::Created));
    rig.answer(&out, Ok(Answer::Accepted));
    let (_, out) = rig.batch(page(1, false, &["c", "d"]));
    let out = rig.answer(&out, Ok(Answer::Accepted));
    rig.answer(&out, session("s1", SessionStatus::Triggered)); // triggered at t(0) on both clocks
    assert!(rig.m.is_idle());
    // The next full request must wait: 300 s + 1 s for the Date's resolution.
    let (_, out) = rig.batch(page(2, false, &["e", "f"]));
    assert!(
        matches!(out.last(), Some(Command::Sleep { until, why: Why::Cooldown, .. }) if *until == t(301)),
        "{out:#?}"
    );
    let out = rig.wake(&out);
    assert!(matches!(events(&out)[..], [EventKind::CooldownWaited { .. }]));
    assert_eq!(last_call(&out).1, Call::CreateSession);
}

#[test]
fn an_open_session_the_log_does_not_know_is_adopted_not_refused() {
    // A predecessor opened s0 and crashed before recording it: the first
    // create of the term looks first, and adopts it.
    let (mut rig, _) = Rig::active(vec![]);
    let (_, out) = rig.batch(page(0, false, &["a", "b"]));
    assert_eq!(last_call(&out).1, Call::ListSessions);
    let list = Ok(Answer::Sessions(vec![
        SessionInfo { id: "old".into(), status: SessionStatus::Completed },
        SessionInfo { id: "s0".into(), status: SessionStatus::InProgress },
    ]));
    let out = rig.answer(&out, list);
    assert!(matches!(events(&out)[0], EventKind::SessionOpened { session_id } if session_id == "s0"));
    assert!(matches!(last_call(&out).1, Call::Bulk { ref session, .. } if session == "s0"));
}

#[test]
fn a_create_whose_answer_was_lost_is_looked_up_before_it_is_tried_again() {
    let (mut rig, _) = Rig::active(vec![]);
    let (_, out) = rig.batch(page(0, false, &["a", "b"]));
    let out = rig.none_open(&out);
    let lost = Err(Failure::Transient { reason: "connection reset".into(), retry_after: None });
    let out = rig.answer(&out, lost);
    let out = rig.wake(&out);
    assert_eq!(last_call(&out).1, Call::ListSessions, "the create may have been applied");
    let out =
        rig.answer(&out, Ok(Answer::Sessions(vec![SessionInfo { id: "s1".into(), status: SessionStatus::Created }])));
    assert!(matches!(events(&out)[0], EventKind::SessionOpened { session_id } if session_id == "s1"));
}

#[test]
fn a_refused_create_with_nothing_open_waits_and_tries_again() {
    // Okta's cooldown is longer than the configured one.
    let (mut rig, _) = Rig::active(vec![]);
    let (_, out) = rig.batch(page(0, false, &["a", "b"]));
    let out = rig.none_open(&out);
    let out = rig.answer(&out, Err(Failure::CreateRefused { summary: "within the cooldown".into() }));
    assert_eq!(last_call(&out).1, Call::ListSessions);
    let out = rig.answer(&out, Ok(Answer::Sessions(vec![])));
    assert!(matches!(events(&out)[..], [EventKind::Retrying { attempt: 1, .. }]));
    let out = rig.wake(&out);
    assert_eq!(last_call(&out).1, Call::CreateSession);
}

#[test]
fn transient_failures_are_retried_within_the_budget_then_the_run_fails() {
    let (mut rig, _) = Rig::active(vec![]);
    rig.m.settings.limits.requests_per_session = 50;
    let (key, out) = rig.batch(page(0, false, &["a", "b"]));
    let out = rig.none_open(&out);
    let mut out = rig.answer(&out, session("s1", SessionStatus::Created));
    let down = || Err(Failure::Transient { reason: "503".into(), retry_after: None });
    for attempt in 1..=2 {
        out = rig.answer(&out, down());
        assert!(matches!(events(&out)[..], [EventKind::Retrying { attempt: a, .. }] if *a == attempt), "{out:#?}");
        out = rig.wake(&out);
        // The same request again, announced again (it may have arrived).
        assert!(matches!(events(&out)[..], [EventKind::BulkSending { request_no: r, .. }] if *r == attempt + 1));
    }
    let out = rig.answer(&out, down());
    let failed: Vec<_> = events(&out).into_iter().filter(|e| matches!(e, EventKind::RunFailed { .. })).collect();
    assert!(
        matches!(failed[..], [EventKind::RunFailed { reason }] if reason.contains("gave up after 3 attempts")),
        "{out:#?}"
    );
    assert_eq!(acks(&out), vec![key], "the failed run's deliveries are settled");
    assert!(rig.m.is_idle());
}

#[test]
fn an_uploader_that_lost_its_consumer_does_nothing_more() {
    let (mut rig, _) = Rig::active(vec![]);
    let (_, out) = rig.batch(page(0, false, &["a", "b"]));
    assert!(rig.m.handle(rig.now, Input::Lost).is_empty());
    assert!(!rig.m.is_active());
    // Okta's late answer, a timer, a delivery: all ignored.
    assert!(rig.answer(&out, session("s1", SessionStatus::Created)).is_empty());
    assert!(rig.batch(page(1, true, &["c"])).1.is_empty());
}

/// The log of a predecessor that opened s1 and loaded part 0 (two users)
/// of page 0's `parts` (copy 100; the run's last page when `total_pages`
/// says so) into it, then died.
fn predecessor_loaded_page_zero(parts: u32, total_pages: Option<u32>) -> Vec<RunEvent> {
    let piece = crate::messages::Piece {
        page_seq: 0,
        part: 0,
        parts,
        len: 2,
        total_pages,
        from: 0,
        to: 2,
        copy: CopyId::from_u64(100),
        parent: None,
    };
    let loaded = EventKind::BulkLoaded {
        session_id: "s1".into(),
        request_no: 1,
        op: Op::Upsert,
        profiles: 2,
        bytes: 10,
        pieces: vec![piece],
        changes: vec![],
    };
    vec![
        RunEvent::new(run(), sync(), t(0), EventKind::RunStarted { options: RunOptions::default() }),
        RunEvent::new(run(), sync(), t(1), EventKind::SessionOpened { session_id: "s1".into() }),
        RunEvent::new(run(), sync(), t(2), loaded),
    ]
}

#[test]
fn a_run_loaded_before_a_takeover_is_finished_by_the_successor() {
    // The predecessor loaded everything into s1 and triggered it, then died
    // before it could queue the FinishRun.
    let mut log = predecessor_loaded_page_zero(1, Some(1));
    let triggered = EventKind::SessionTriggered { session_id: "s1".into(), requests: 1, okta_at: None };
    log.push(RunEvent::new(run(), sync(), t(3), triggered));
    let (mut rig, out) = Rig::active(log);
    // It queues the FinishRun first (so a crash now still wakes a standby),
    // then follows the session.
    assert!(matches!(out.first(), Some(Command::Publish(f)) if f.run_id == run()), "{out:#?}");
    assert_eq!(last_call(&out).1, Call::GetSession { session: "s1".into() });
    let out = rig.answer(&out, session("s1", SessionStatus::Completed));
    let kinds = events(&out);
    assert!(matches!(kinds[..], [EventKind::SessionFinished { .. }, EventKind::RunCompleted { .. }]), "{kinds:#?}");
}

#[test]
fn a_page_read_twice_is_taken_whole_and_the_run_ends_along_either_lineage() {
    let (mut rig, _) = Rig::active(vec![]);
    rig.m.settings.limits.profiles_per_request = 200;
    let (_, _) = rig.batch(page(0, false, &["a", "b"]));
    // Page 1 read twice: a second read (copy 21) saw "d" that the first missed.
    let (_, _) = rig.batch(page(1, false, &["c"]));
    let mut again = page(1, false, &["c", "d"]);
    again.copy = CopyId::from_u64(21);
    let (_, out) = rig.batch(again);
    assert!(!events(&out).iter().any(|e| matches!(e, EventKind::ProfilesRefused { .. })), "a re-read is no duplicate");
    // The chain goes on from the second read; the first read's lineage has no page 2.
    let mut last = page(2, true, &["e"]);
    last.parent = Some(CopyId::from_u64(21));
    let (_, out) = rig.batch(last);
    // Everyone of both reads goes out: a, b, c, d, e in one request.
    let out = rig.none_open(&out);
    let out = rig.answer(&out, session("s1", SessionStatus::Created));
    let Call::Bulk { profiles, .. } = last_call(&out).1 else { panic!() };
    let mut ids: Vec<&str> = profiles.iter().map(|p| p.external_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    let out = rig.answer(&out, Ok(Answer::Accepted));
    assert!(out.iter().any(|c| matches!(c, Command::Publish(_))), "the run is loaded: {out:#?}");
}

#[test]
fn a_successor_counts_the_pages_its_predecessor_loaded() {
    // The predecessor loaded page 0 (copy 100) into s1, then died; the
    // successor receives only page 1, the last. The log's lineage says page
    // 0 is in, so the run is all in and goes out at once.
    let log = predecessor_loaded_page_zero(1, None);
    let (mut rig, _) = Rig::active(log);
    rig.m.settings.limits.profiles_per_request = 200;
    let (_, out) = rig.batch(page(1, true, &["c"]));
    assert!(
        out.iter().any(|c| matches!(c, Command::Okta { .. })),
        "one profile short of a full request, but the run is all in: it is sent: {out:#?}"
    );
}

/// Opens s1 and sends page 0 (the last) into it; returns the bulk call's output.
fn loading_into_s1() -> (Rig, Vec<Command>) {
    let (mut rig, _) = Rig::active(vec![]);
    let (_, out) = rig.batch(page(0, true, &["a", "b"]));
    let out = rig.none_open(&out);
    let out = rig.answer(&out, session("s1", SessionStatus::Created));
    assert!(matches!(last_call(&out).1, Call::Bulk { ref session, .. } if session == "s1"));
    (rig, out)
}

fn refused(summary: &str) -> Result<Answer, Failure> {
    Err(Failure::Invalid { summary: summary.into(), causes: vec![] })
}

#[test]
fn a_refused_load_into_a_session_okta_closed_goes_into_a_new_one() {
    let (mut rig, out) = loading_into_s1();
    let out = rig.answer(&out, refused("The import session is not in a valid state"));
    assert_eq!(last_call(&out).1, Call::GetSession { session: "s1".into() }, "a 400: look at the session");
    let out = rig.answer(&out, session("s1", SessionStatus::Expired));
    assert_eq!(last_call(&out).1, Call::CreateSession, "s1 no longer takes loads: forgotten, and a new one made");
}

#[test]
fn a_load_okta_refuses_because_the_session_is_full_rolls_over() {
    let (mut rig, out) = loading_into_s1();
    let out = rig.answer(&out, refused("A session can have at most 50 bulk requests"));
    let out = rig.answer(&out, session("s1", SessionStatus::Created));
    assert_eq!(
        last_call(&out).1,
        Call::StartImport { session: "s1".into() },
        "Okta's count wins: s1 is triggered, not loaded again"
    );
}

#[test]
fn a_successor_waits_for_the_part_its_predecessor_did_not_load() {
    // The predecessor loaded part 0 of page 0's two parts, then died.
    let log = predecessor_loaded_page_zero(2, None);
    let (mut rig, _) = Rig::active(log);
    rig.m.settings.limits.profiles_per_request = 200;
    let (_, out) = rig.batch(page(1, true, &["c"]));
    assert!(!out.iter().any(|c| matches!(c, Command::Okta { .. })), "page 0's part 1 is still out: {out:#?}");
    let mut rest = page(0, false, &["b"]);
    (rest.part, rest.parts) = (1, 2);
    let (_, out) = rig.batch(rest);
    assert!(out.iter().any(|c| matches!(c, Command::Okta { .. })), "now the run is all in: {out:#?}");
}

#[test]
fn a_batchs_delta_link_and_rejected_users_are_recorded_once() {
    let (mut rig, _) = Rig::active(vec![]);
    let link = "https://graph.example/v1.0/users/delta?$deltatoken=t1";
    let mut b = page(0, false, &["a"]);
    b.delta_link = Some(link.into());
    b.rejected = vec![
        crate::messages::Rejected { external_id: Some("x".into()), reason: "no mail".into() },
        crate::messages::Rejected { external_id: None, reason: "no id".into() },
    ];
    let (_, out) = rig.batch(b.clone());
    let kinds = events(&out);
    let links = kinds.iter().filter(|k| matches!(k, EventKind::DeltaLinkReceived { delta_link } if delta_link == link));
    assert_eq!(links.count(), 1, "{kinds:#?}");
    let rejected = kinds.iter().filter_map(|k| match k {
        EventKind::RejectedInSource { external_ids } => Some(external_ids.clone()),
        _ => None,
    });
    assert_eq!(rejected.collect::<Vec<_>>(), [vec!["x".to_string()]], "still in the source: never to deactivate");
    // Delivered again: both are known already.
    let (_, out) = rig.batch(b);
    let kinds = events(&out);
    assert!(
        !kinds.iter().any(|k| matches!(k, EventKind::DeltaLinkReceived { .. } | EventKind::RejectedInSource { .. })),
        "{kinds:#?}"
    );
}

#[test]
fn the_finish_message_ends_the_run_once() {
    let (mut rig, _) = Rig::active(vec![]);
    let (_, out) = rig.batch(page(0, true, &["a", "b"]));
    let out = rig.none_open(&out);
    let out = rig.answer(&out, session("s1", SessionStatus::Created));
    let out = rig.answer(&out, Ok(Answer::Accepted));
    let finish = out
        .iter()
        .find_map(|c| if let Command::Publish(f) = c { Some(f.clone()) } else { None })
        .expect("a loaded run publishes its FinishRun");
    rig.keys += 1;
    let key = Key(rig.keys);
    let mut out = rig.m.handle(rig.now, Input::Message { key, message: UploaderMessage::FinishRun(finish.clone()) });
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.extend(events(&out).into_iter().cloned());
        if seen.iter().any(|e| matches!(e, EventKind::RunCompleted { .. })) {
            break;
        }
        out = match out.last() {
            Some(Command::Okta { request: Call::StartImport { session }, .. }) => {
                let s = session.clone();
                rig.answer(&out, self::session(&s, SessionStatus::Triggered))
            }
            Some(Command::Okta { request: Call::GetSession { session }, .. }) => {
                let s = session.clone();
                rig.answer(&out, self::session(&s, SessionStatus::Completed))
            }
            Some(Command::Sleep { .. }) => rig.wake(&out),
            other => panic!("the finish stalled at {other:?}; events so far {seen:#?}"),
        };
    }
    assert!(seen.iter().any(|e| matches!(e, EventKind::RunCompleted { .. })), "{seen:#?}");
    // The FinishRun delivered again: settled, and nothing else happens.
    let again = rig.m.handle(rig.now, Input::Message { key: Key(999), message: UploaderMessage::FinishRun(finish) });
    assert_eq!(acks(&again), vec![Key(999)]);
    assert!(events(&again).is_empty() && !again.iter().any(|c| matches!(c, Command::Okta { .. })), "{again:#?}");
}
