//! Sending bulk requests.
//!
//! - A request is announced (`BulkSending`) before it is sent, so that a
//!   crash in between makes the session's count err high (an early
//!   rollover), never low (a 51st request).
//! - The session must be open and have room; otherwise the request waits
//!   for an `Open` or a `Trigger` (see `session`).
//! - The request that brings a session to its limit triggers it.
//! - A 400 costs only the refused profiles (`refusal`); a 400 because the
//!   session is full or gone rolls over and sends again.
//! - Okta's 5xx, 429s and network failures are retried within the sync's
//!   budget (`budget`), each retry recorded; then the run fails.
//! - A dry run goes through every step but Okta.

use std::collections::VecDeque;

use crate::ids::RunId;
use crate::messages::{EventKind, SessionStatus};
use crate::packing::Packed;

use super::budget::{Attempts, Retry};
use super::okta::{Answer, Call, Failure, Reply};
use super::refusal::{assemble, isolate, refused_report, says_session_full};
use super::session::{Open, Trigger};
use super::{Cx, Event, Step, Task, Why};

#[derive(Debug)]
pub(crate) struct Send {
    pub run: RunId,
    /// Requests still to send, in order.
    pending: VecDeque<Packed>,
    attempts: Attempts,
    state: State,
}

#[derive(Debug)]
enum State {
    Ready,
    /// Announced and sent; waiting for Okta.
    Sent {
        packed: Packed,
        session: String,
        request_no: u32,
    },
    /// Okta refused it: is the session still taking loads?
    Checking {
        packed: Packed,
        summary: String,
        causes: Vec<String>,
    },
    /// Waiting to send it again.
    Backoff {
        packed: Packed,
    },
}

impl Send {
    pub fn new(run: RunId, requests: Vec<Packed>) -> Self {
        Self { run, pending: requests.into(), attempts: Attempts::default(), state: State::Ready }
    }

    pub fn step(&mut self, cx: &mut Cx<'_>, event: Event) -> Step {
        match (std::mem::replace(&mut self.state, State::Ready), event) {
            (State::Sent { packed, session, request_no }, Event::Reply(reply)) => {
                self.sent(cx, packed, session, request_no, reply)
            }
            (State::Checking { packed, summary, causes }, Event::Reply(reply)) => {
                self.checked(cx, packed, &summary, &causes, reply)
            }
            (State::Backoff { packed }, Event::Timer) => {
                self.pending.push_front(packed);
                self.next(cx)
            }
            (state, _) => {
                debug_assert!(matches!(state, State::Ready), "a send resumed without the outcome it waits for");
                self.next(cx)
            }
        }
    }

    /// Sends the next request, or says what must happen first.
    fn next(&mut self, cx: &mut Cx<'_>) -> Step {
        let run = self.run.clone();
        while let Some(packed) = self.pending.pop_front() {
            if cx.state.runs.get(&run).is_some_and(|b| b.options.dry_run) {
                pretend(cx, &run, packed);
                continue;
            }
            let Some(open) = cx.state.ledger.open_session().cloned() else {
                self.pending.push_front(packed);
                return Step::After(vec![Task::Open(Open::new(run))]);
            };
            if open.requests >= cx.limits().requests_per_session {
                self.pending.push_front(packed);
                return Step::After(vec![Task::Trigger(Trigger::new(run, open.id))]);
            }
            let request_no = open.requests + 1;
            if !cx.settings.sabotage.count_after_send {
                cx.record(&run, sending(&open.id, request_no, &packed));
            }
            let call = Call::Bulk { session: open.id.clone(), op: packed.op, profiles: packed.profiles.clone() };
            self.state = State::Sent { packed, session: open.id, request_no };
            return cx.call(call);
        }
        Step::Done
    }

    fn sent(&mut self, cx: &mut Cx<'_>, packed: Packed, session: String, request_no: u32, reply: Reply) -> Step {
        let run = self.run.clone();
        if cx.settings.sabotage.count_after_send {
            cx.record(&run, sending(&session, request_no, &packed));
        }
        match reply.result {
            Ok(_) => {
                self.attempts.reset();
                let changes = cx.state.take_changes(&run, &packed);
                let kind = EventKind::BulkLoaded {
                    session_id: session.clone(),
                    request_no,
                    op: packed.op,
                    profiles: packed.profiles.len() as u32,
                    bytes: packed.body_bytes as u64,
                    pieces: packed.pieces,
                    changes,
                };
                cx.record(&run, kind);
                if request_no >= cx.limits().requests_per_session {
                    return Step::After(vec![Task::Trigger(Trigger::new(run, session))]);
                }
                self.next(cx)
            }
            Err(Failure::Invalid { summary, causes }) => {
                self.state = State::Checking { packed, summary, causes };
                cx.call(Call::GetSession { session })
            }
            Err(Failure::CreateRefused { summary }) => {
                self.state = State::Checking { packed, summary, causes: Vec::new() };
                cx.call(Call::GetSession { session })
            }
            Err(Failure::Transient { reason, retry_after }) => {
                match self.attempts.fail("bulk load", &reason, retry_after, &cx.settings.retry, cx.now) {
                    Retry::GiveUp(reason) => Step::Fail { run, reason },
                    Retry::After { attempt, after } => {
                        cx.record(&run, EventKind::Retrying { stage: "uploader".into(), attempt, reason });
                        self.state = State::Backoff { packed };
                        cx.sleep(cx.now + after, Why::Backoff)
                    }
                }
            }
            Err(Failure::Fatal { reason }) => Step::Fail { run, reason },
        }
    }

    /// After a 400: a session that no longer takes loads is forgotten and
    /// the request goes again; a full one rolls over; otherwise the
    /// refused profiles are taken out.
    fn checked(&mut self, cx: &mut Cx<'_>, packed: Packed, summary: &str, causes: &[String], reply: Reply) -> Step {
        let open = match reply.result {
            Ok(Answer::Session(s))
                if matches!(s.status, SessionStatus::Triggered | SessionStatus::Completed | SessionStatus::Error) =>
            {
                // Triggered, and the log does not say so: a predecessor's
                // trigger reached Okta but not the log. The cooldown runs
                // from it; Okta's answer now is a safe upper bound of when.
                let session = cx.state.ledger.open_session().map(|s| (s.id.clone(), s.requests));
                if let Some((session_id, requests)) = session {
                    let kind = EventKind::SessionTriggered { session_id, requests, okta_at: reply.okta_date };
                    cx.record(&self.run, kind);
                }
                false
            }
            Ok(Answer::Session(s)) => s.status.is_open(),
            // Cannot tell: assume it is, and look at the refusal itself.
            Ok(_) | Err(Failure::Transient { .. }) => true,
            Err(Failure::Fatal { reason }) => return Step::Fail { run: self.run.clone(), reason },
            Err(Failure::Invalid { summary, .. } | Failure::CreateRefused { summary }) => {
                return Step::Fail {
                    run: self.run.clone(),
                    reason: format!("Okta refused to show the session: {summary}"),
                };
            }
        };
        if !open {
            cx.state.ledger.drop_session();
            self.pending.push_front(packed);
            return self.next(cx);
        }
        if says_session_full(summary, causes) {
            // Our count was low, which announcing each request first
            // prevents; Okta's word wins: roll over and send again.
            let limit = cx.limits().requests_per_session;
            cx.state.ledger.mark_session_full(limit);
            self.pending.push_front(packed);
            return self.next(cx);
        }
        let (refused, rest) = isolate(&packed, causes);
        if !refused.is_empty() {
            let (rejected, pieces) = refused_report(&refused, summary, causes);
            cx.record(&self.run, EventKind::ProfilesRefused { refused: rejected, pieces });
            let run = self.run.clone();
            cx.state.take_changes(&run, &assemble(packed.op, refused));
        }
        for request in rest.into_iter().rev() {
            self.pending.push_front(request);
        }
        self.next(cx)
    }
}

/// The announcement of a request.
fn sending(session: &str, request_no: u32, p: &Packed) -> EventKind {
    let (op, profiles, bytes) = (p.op, p.profiles.len() as u32, p.body_bytes as u64);
    EventKind::BulkSending { session_id: session.to_string(), request_no, op, profiles, bytes }
}

/// A dry run's request: counted, and recorded as loaded into no session.
fn pretend(cx: &mut Cx<'_>, run: &RunId, p: Packed) {
    let Some(buffer) = cx.state.runs.get_mut(run) else { return };
    buffer.dry_run_requests += 1;
    let request_no = buffer.dry_run_requests;
    let changes = buffer.take_changes(&p);
    let kind = EventKind::BulkLoaded {
        session_id: "dry-run".into(),
        request_no,
        op: p.op,
        profiles: p.profiles.len() as u32,
        bytes: p.body_bytes as u64,
        pieces: p.pieces,
        changes,
    };
    cx.record(run, kind);
}
