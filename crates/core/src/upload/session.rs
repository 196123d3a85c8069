//! The session rules, in one place.
//!
//! - **One open session.** A session is opened only when there is something
//!   to send, and only when the log says none is open.
//! - **The cooldown.** Not before Okta's cooldown after the last trigger has
//!   passed, measured on Okta's clock (`clock`).
//! - **Adoption.** An open session the log does not know of was opened by a
//!   predecessor that crashed before it could record it (or by a create
//!   whose answer was lost): it is adopted. So that Okta never has to refuse
//!   a create for it, the sessions are listed before the first create of a
//!   term and before retrying a create that may have been applied. Only the
//!   active uploader acts at all (the driver stops one that lost its
//!   consumer before any further call), so an adopted session can only be
//!   this sync's own.
//! - **Refusals.** A refusal with no open session means Okta's cooldown is
//!   longer than the configured one: wait and try again, within the retry
//!   budget.
//! - **50 requests.** `send` counts each request before sending it and
//!   triggers the session that reaches the limit; `Trigger` is idempotent:
//!   a session already triggered counts as triggered, and one that took no
//!   data (every request was announced but none arrived) is cancelled.

use time::OffsetDateTime;

use crate::ids::RunId;
use crate::messages::{EventKind, SessionStatus};

use super::budget::{Attempts, Retry};
use super::clock::{Readiness, readiness};
use super::okta::{Answer, Call, Failure, Reply};
use super::{Cx, Event, Step, Why};

/// Opens the next session: waits out the cooldown, creates, or adopts.
#[derive(Debug)]
pub(crate) struct Open {
    pub run: RunId,
    attempts: Attempts,
    state: OpenState,
}

#[derive(Debug)]
enum OpenState {
    Ready,
    /// Listing the sessions, for one the log does not know of.
    Verifying,
    /// Asked Okta anything, to read its clock.
    ReadingClock,
    Cooling {
        since: OffsetDateTime,
    },
    Creating,
    /// Okta refused the create: is a session open?
    Listing {
        summary: String,
    },
    Backoff,
}

impl Open {
    pub fn new(run: RunId) -> Self {
        Self { run, attempts: Attempts::default(), state: OpenState::Ready }
    }

    pub fn step(&mut self, cx: &mut Cx<'_>, event: Event) -> Step {
        match (std::mem::replace(&mut self.state, OpenState::Ready), event) {
            (OpenState::ReadingClock, Event::Reply(reply)) => {
                if reply.okta_date.is_none() {
                    if let Err(Failure::Transient { reason, retry_after }) = reply.result {
                        return self.retry(cx, "reading Okta's clock", &reason, retry_after);
                    }
                    // An answer without a `Date`: this Okta does not tell.
                    cx.state.clock.observe(None, cx.now);
                }
                self.next(cx)
            }
            (OpenState::Cooling { since }, Event::Timer) => {
                let seconds = (cx.now - since).as_seconds_f64().max(0.0);
                cx.record(&self.run, EventKind::CooldownWaited { seconds });
                self.next(cx)
            }
            (OpenState::Verifying, Event::Reply(reply)) => match reply.result {
                Ok(Answer::Sessions(list)) => match list.into_iter().find(|s| s.status.is_open()) {
                    Some(open) => {
                        cx.record(&self.run, EventKind::SessionOpened { session_id: open.id });
                        Step::Done
                    }
                    None => {
                        cx.state.no_stray_session = true;
                        self.next(cx)
                    }
                },
                Ok(other) => {
                    Step::Fail { run: self.run.clone(), reason: format!("Okta answered a list with {other:?}") }
                }
                Err(Failure::Transient { reason, retry_after }) => {
                    self.retry(cx, "listing sessions", &reason, retry_after)
                }
                Err(
                    Failure::Fatal { reason }
                    | Failure::Invalid { summary: reason, .. }
                    | Failure::CreateRefused { summary: reason },
                ) => Step::Fail { run: self.run.clone(), reason },
            },
            (OpenState::Creating, Event::Reply(reply)) => self.created(cx, reply),
            (OpenState::Listing { summary }, Event::Reply(reply)) => self.listed(cx, &summary, reply),
            (_, _) => self.next(cx),
        }
    }

    fn next(&mut self, cx: &mut Cx<'_>) -> Step {
        if cx.state.ledger.open_session().is_some() {
            return Step::Done;
        }
        if !cx.state.no_stray_session {
            self.state = OpenState::Verifying;
            return cx.call(Call::ListSessions);
        }
        let last = cx.state.ledger.last_trigger();
        match readiness(last, &cx.state.clock, cx.limits().cooldown, cx.now) {
            Readiness::Ready => {
                self.state = OpenState::Creating;
                cx.call(Call::CreateSession)
            }
            Readiness::WaitUntil(until) => {
                self.state = OpenState::Cooling { since: cx.now };
                cx.sleep(until, Why::Cooldown)
            }
            Readiness::AskOkta => {
                let session = last.map(|t| t.session.clone()).unwrap_or_default();
                self.state = OpenState::ReadingClock;
                cx.call(Call::GetSession { session })
            }
        }
    }

    fn created(&mut self, cx: &mut Cx<'_>, reply: Reply) -> Step {
        match reply.result {
            Ok(Answer::Session(session)) => {
                cx.record(&self.run, EventKind::SessionOpened { session_id: session.id });
                Step::Done
            }
            Ok(other) => Step::Fail { run: self.run.clone(), reason: format!("Okta answered a create with {other:?}") },
            Err(Failure::CreateRefused { summary } | Failure::Invalid { summary, .. }) => {
                self.state = OpenState::Listing { summary };
                cx.call(Call::ListSessions)
            }
            Err(Failure::Transient { reason, retry_after }) => {
                // It may have been created all the same: look before trying again.
                cx.state.no_stray_session = false;
                self.retry(cx, "opening a session", &reason, retry_after)
            }
            Err(Failure::Fatal { reason }) => Step::Fail { run: self.run.clone(), reason },
        }
    }

    fn listed(&mut self, cx: &mut Cx<'_>, summary: &str, reply: Reply) -> Step {
        match reply.result {
            Ok(Answer::Sessions(list)) => match list.into_iter().find(|s| s.status.is_open()) {
                Some(open) => {
                    // Ours, opened by a predecessor that crashed before
                    // recording it: load into it.
                    cx.record(&self.run, EventKind::SessionOpened { session_id: open.id });
                    Step::Done
                }
                None => {
                    let reason = format!("Okta refused a new session ({summary}); waiting for its cooldown");
                    self.retry(cx, "opening a session", &reason, None)
                }
            },
            Ok(other) => Step::Fail { run: self.run.clone(), reason: format!("Okta answered a list with {other:?}") },
            Err(Failure::Transient { reason, retry_after }) => self.retry(cx, "listing sessions", &reason, retry_after),
            Err(
                Failure::Fatal { reason }
                | Failure::Invalid { summary: reason, .. }
                | Failure::CreateRefused { summary: reason },
            ) => Step::Fail { run: self.run.clone(), reason },
        }
    }

    fn retry(&mut self, cx: &mut Cx<'_>, what: &str, reason: &str, hint: Option<std::time::Duration>) -> Step {
        match self.attempts.fail(what, reason, hint, &cx.settings.retry, cx.now) {
            Retry::GiveUp(reason) => Step::Fail { run: self.run.clone(), reason },
            Retry::After { attempt, after } => {
                let kind = EventKind::Retrying { stage: "uploader".into(), attempt, reason: reason.to_string() };
                cx.record(&self.run, kind);
                self.state = OpenState::Backoff;
                cx.sleep(cx.now + after, Why::Backoff)
            }
        }
    }
}

/// Triggers the import of a session.
#[derive(Debug)]
pub(crate) struct Trigger {
    pub run: RunId,
    session: String,
    attempts: Attempts,
    state: TriggerState,
}

#[derive(Debug)]
enum TriggerState {
    Ready,
    Starting,
    /// Okta refused the trigger: what state is the session in?
    Checking,
    Cancelling,
    Backoff,
}

impl Trigger {
    pub fn new(run: RunId, session: String) -> Self {
        Self { run, session, attempts: Attempts::default(), state: TriggerState::Ready }
    }

    pub fn step(&mut self, cx: &mut Cx<'_>, event: Event) -> Step {
        match (std::mem::replace(&mut self.state, TriggerState::Ready), event) {
            (TriggerState::Starting, Event::Reply(reply)) => match reply.result {
                Ok(_) => self.triggered(cx, reply.okta_date),
                Err(Failure::Invalid { .. } | Failure::CreateRefused { .. }) => {
                    self.state = TriggerState::Checking;
                    cx.call(Call::GetSession { session: self.session.clone() })
                }
                Err(Failure::Transient { reason, retry_after }) => self.retry(cx, &reason, retry_after),
                Err(Failure::Fatal { reason }) => Step::Fail { run: self.run.clone(), reason },
            },
            (TriggerState::Checking, Event::Reply(reply)) => match reply.result {
                Ok(Answer::Session(s)) => match s.status {
                    SessionStatus::Triggered | SessionStatus::Completed | SessionStatus::Error => {
                        self.triggered(cx, reply.okta_date)
                    }
                    SessionStatus::Created => {
                        // No request reached Okta: nothing to import.
                        self.state = TriggerState::Cancelling;
                        cx.call(Call::CancelSession { session: self.session.clone() })
                    }
                    status => {
                        let kind =
                            EventKind::SessionFinished { session_id: self.session.clone(), status, empty: false };
                        cx.record(&self.run, kind);
                        Step::Done
                    }
                },
                Ok(other) => {
                    Step::Fail { run: self.run.clone(), reason: format!("Okta answered a get with {other:?}") }
                }
                Err(Failure::Transient { reason, retry_after }) => self.retry(cx, &reason, retry_after),
                Err(
                    Failure::Fatal { reason }
                    | Failure::Invalid { summary: reason, .. }
                    | Failure::CreateRefused { summary: reason },
                ) => Step::Fail { run: self.run.clone(), reason },
            },
            (TriggerState::Cancelling, Event::Reply(reply)) => match reply.result {
                Ok(_) => {
                    let kind = EventKind::SessionFinished {
                        session_id: self.session.clone(),
                        status: SessionStatus::Closed,
                        empty: true,
                    };
                    cx.record(&self.run, kind);
                    Step::Done
                }
                Err(Failure::Transient { reason, retry_after }) => self.retry(cx, &reason, retry_after),
                Err(
                    Failure::Fatal { reason }
                    | Failure::Invalid { summary: reason, .. }
                    | Failure::CreateRefused { summary: reason },
                ) => Step::Fail { run: self.run.clone(), reason },
            },
            (_, _) => self.next(cx),
        }
    }

    fn next(&mut self, cx: &mut Cx<'_>) -> Step {
        let ledger = &cx.state.ledger;
        let open = ledger.open_session().is_some_and(|s| s.id == self.session);
        if !open && (ledger.awaiting().contains(&self.session) || ledger.session_status(&self.session).is_some()) {
            return Step::Done;
        }
        self.state = TriggerState::Starting;
        cx.call(Call::StartImport { session: self.session.clone() })
    }

    fn triggered(&mut self, cx: &mut Cx<'_>, okta_at: Option<OffsetDateTime>) -> Step {
        let requests = cx.state.ledger.open_session().filter(|s| s.id == self.session).map_or(0, |s| s.requests);
        let kind = EventKind::SessionTriggered { session_id: self.session.clone(), requests, okta_at };
        cx.record(&self.run, kind);
        Step::Done
    }

    fn retry(&mut self, cx: &mut Cx<'_>, reason: &str, hint: Option<std::time::Duration>) -> Step {
        match self.attempts.fail("triggering the import", reason, hint, &cx.settings.retry, cx.now) {
            Retry::GiveUp(reason) => Step::Fail { run: self.run.clone(), reason },
            Retry::After { attempt, after } => {
                let kind = EventKind::Retrying { stage: "uploader".into(), attempt, reason: reason.to_string() };
                cx.record(&self.run, kind);
                self.state = TriggerState::Backoff;
                cx.sleep(cx.now + after, Why::Backoff)
            }
        }
    }
}
