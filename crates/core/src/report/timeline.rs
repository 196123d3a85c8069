//! Where a run's time went, as spans: the source pages it read, the
//! sessions it held open, each bulk
//! request from its announcement to Okta's answer, the triggers, the waits
//! for Okta's cooldown and Okta's processing of each import. The console
//! draws these; this module only says what the events mean in time.
//!
//! Events can repeat (a redelivered message, a successor uploader), so
//! spans are keyed (sessions by id, requests by session and number) and a
//! repeat changes nothing. Event kinds that say nothing about time are
//! ignored, so new kinds need no change here unless they should be drawn.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use time::OffsetDateTime;

use crate::messages::{EventKind, RunEvent, SessionStatus};

/// What a span stands for; each kind gets a lane of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// A source page was read: an instant.
    Page,
    /// A session taking bulk loads: opened → triggered (or cancelled).
    Session,
    /// One bulk request: announced (`BulkSending`) → loaded, or failed.
    Request,
    /// A session's import was started: an instant.
    Trigger,
    /// Waiting out Okta's cooldown before the next session.
    Cooldown,
    /// Okta processing a triggered import: triggered → finished.
    Import,
}

impl SpanKind {
    pub const ALL: [SpanKind; 6] =
        [Self::Page, Self::Session, Self::Request, Self::Trigger, Self::Cooldown, Self::Import];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Session => "session",
            Self::Request => "request",
            Self::Trigger => "trigger",
            Self::Cooldown => "cooldown",
            Self::Import => "import",
        }
    }
}

/// One stretch of time (or an instant, when `end == Some(start)`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    pub kind: SpanKind,
    /// What it was, for a person: `request 3 of session s1: 200 upsert`.
    pub label: String,
    pub start: OffsetDateTime,
    /// `None` while it lasts.
    pub end: Option<OffsetDateTime>,
    /// A request that got no 202, or an import that did not complete.
    pub failed: bool,
}

/// A run's spans, in the order they began.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// The run's first `RunStarted` (or `RunQueued`).
    pub started: Option<OffsetDateTime>,
    /// When it completed or failed.
    pub ended: Option<OffsetDateTime>,
    pub spans: Vec<Span>,
}

impl Timeline {
    /// Folds one run's events (others are skipped).
    pub fn from_events<'a>(run_id: &crate::RunId, events: impl IntoIterator<Item = &'a RunEvent>) -> Self {
        let mut fold = TimelineFold::default();
        for e in events.into_iter().filter(|e| &e.run_id == run_id) {
            fold.apply(e);
        }
        fold.timeline
    }
}

/// The timeline built one event at a time (part of `RunFold`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TimelineFold {
    timeline: Timeline,
    pages: HashSet<u32>,
    sessions: HashMap<String, usize>,
    requests: HashMap<(String, u32), usize>,
    /// Requests announced and not yet answered.
    open_requests: HashSet<usize>,
    imports: HashMap<String, usize>,
    cooldowns: HashSet<OffsetDateTime>,
}

impl TimelineFold {
    pub(crate) fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    fn push(&mut self, kind: SpanKind, label: String, start: OffsetDateTime, end: Option<OffsetDateTime>) -> usize {
        self.timeline.spans.push(Span { kind, label, start, end, failed: false });
        self.timeline.spans.len() - 1
    }

    fn end(&mut self, index: usize, at: OffsetDateTime, failed: bool) {
        let span = &mut self.timeline.spans[index];
        if span.end.is_none() {
            span.end = Some(at.max(span.start));
            span.failed = failed;
        }
    }

    /// Requests still waiting for an answer when another one is announced,
    /// or a retry or refusal is recorded, got none: they failed then.
    fn fail_open_requests(&mut self, at: OffsetDateTime) {
        for index in std::mem::take(&mut self.open_requests) {
            self.end(index, at, true);
        }
    }

    pub(crate) fn apply(&mut self, e: &RunEvent) {
        let at = e.at;
        match &e.kind {
            EventKind::RunStarted { .. } | EventKind::RunQueued { .. } => {
                self.timeline.started = Some(self.timeline.started.map_or(at, |t| t.min(at)));
            }
            EventKind::RunCompleted { .. } | EventKind::RunFailed { .. } | EventKind::RunMerged { .. } => {
                self.timeline.ended = Some(at);
            }
            EventKind::PageFetched { seq, users, removed, .. } if self.pages.insert(*seq) => {
                let label = format!("page {seq}: {users} users, {removed} removed");
                self.push(SpanKind::Page, label, at, Some(at));
            }
            EventKind::SessionOpened { session_id } if !self.sessions.contains_key(session_id) => {
                let i = self.push(SpanKind::Session, format!("session {session_id}"), at, None);
                self.sessions.insert(session_id.clone(), i);
            }
            EventKind::BulkSending { session_id, request_no, op, profiles, .. } => {
                let key = (session_id.clone(), *request_no);
                if !self.requests.contains_key(&key) {
                    self.fail_open_requests(at);
                    let label = format!("request {request_no} of session {session_id}: {profiles} {op:?}");
                    let i = self.push(SpanKind::Request, label.to_lowercase(), at, None);
                    self.requests.insert(key, i);
                    self.open_requests.insert(i);
                }
            }
            EventKind::BulkLoaded { session_id, request_no, op, profiles, .. } => {
                let key = (session_id.clone(), *request_no);
                match self.requests.get(&key).copied() {
                    Some(i) => {
                        self.open_requests.remove(&i);
                        self.end(i, at, false);
                    }
                    // A dry run announces nothing: its requests are instants.
                    None => {
                        let label = format!("request {request_no} of session {session_id}: {profiles} {op:?}");
                        let i = self.push(SpanKind::Request, label.to_lowercase(), at, Some(at));
                        self.requests.insert(key, i);
                    }
                }
            }
            EventKind::Retrying { .. } | EventKind::ProfilesRefused { .. } => self.fail_open_requests(at),
            EventKind::SessionTriggered { session_id, requests, .. } => {
                if self.imports.contains_key(session_id) {
                    return;
                }
                if let Some(&i) = self.sessions.get(session_id) {
                    self.end(i, at, false);
                }
                self.push(
                    SpanKind::Trigger,
                    format!("trigger of session {session_id} ({requests} requests)"),
                    at,
                    Some(at),
                );
                let i = self.push(SpanKind::Import, format!("import of session {session_id}"), at, None);
                self.imports.insert(session_id.clone(), i);
            }
            EventKind::SessionFinished { session_id, status, empty } => {
                let failed = !(*status == SessionStatus::Completed || *empty);
                match self.imports.get(session_id).copied() {
                    Some(i) => {
                        if self.timeline.spans[i].end.is_none() {
                            self.timeline.spans[i].label.push_str(&format!(": {}", status.as_str()));
                        }
                        self.end(i, at, failed);
                    }
                    // Never triggered (cancelled, expired): the session ends here.
                    None => {
                        if let Some(&i) = self.sessions.get(session_id) {
                            self.end(i, at, failed);
                        }
                    }
                }
            }
            // Recorded once the wait is over.
            EventKind::CooldownWaited { seconds } if self.cooldowns.insert(at) => {
                let start = at - time::Duration::seconds_f64(seconds.max(0.0));
                self.push(SpanKind::Cooldown, format!("cooldown wait {seconds:.1}s"), start, Some(at));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Op, RunOptions};
    use crate::{RunId, SyncName};

    fn ev(secs: i64, kind: EventKind) -> RunEvent {
        RunEvent::new(
            RunId::parse("r1").unwrap(),
            SyncName::parse("demo").unwrap(),
            OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap(),
            kind,
        )
    }

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    fn sending(secs: i64, n: u32) -> RunEvent {
        ev(
            secs,
            EventKind::BulkSending { session_id: "s1".into(), request_no: n, op: Op::Upsert, profiles: 200, bytes: 9 },
        )
    }

    fn loaded(secs: i64, n: u32) -> RunEvent {
        ev(
            secs,
            EventKind::BulkLoaded {
                session_id: "s1".into(),
                request_no: n,
                op: Op::Upsert,
                profiles: 200,
                bytes: 9,
                pieces: vec![],
                changes: vec![],
            },
        )
    }

    #[test]
    fn sessions_requests_triggers_cooldowns_and_imports_become_spans() {
        let events = vec![
            ev(0, EventKind::RunStarted { options: RunOptions::default() }),
            ev(1, EventKind::PageFetched { seq: 0, users: 300, removed: 0, last: true }),
            ev(2, EventKind::PageFetched { seq: 0, users: 300, removed: 0, last: true }),
            ev(3, EventKind::CooldownWaited { seconds: 2.0 }),
            ev(3, EventKind::SessionOpened { session_id: "s1".into() }),
            sending(4, 1),
            loaded(5, 1),
            loaded(5, 1),
            sending(6, 2),
            ev(7, EventKind::Retrying { stage: "uploader".into(), attempt: 1, reason: "503".into() }),
            sending(8, 3),
            loaded(9, 3),
            ev(10, EventKind::SessionTriggered { session_id: "s1".into(), requests: 3, okta_at: None }),
            ev(10, EventKind::SessionTriggered { session_id: "s1".into(), requests: 3, okta_at: None }),
            ev(
                14,
                EventKind::SessionFinished { session_id: "s1".into(), status: SessionStatus::Completed, empty: false },
            ),
            ev(15, EventKind::RunCompleted { delta_link: None }),
        ];
        let tl = Timeline::from_events(&RunId::parse("r1").unwrap(), &events);
        assert_eq!((tl.started, tl.ended), (Some(t(0)), Some(t(15))));
        let of = |kind| tl.spans.iter().filter(|s| s.kind == kind).collect::<Vec<_>>();
        let pages = of(SpanKind::Page);
        assert_eq!((pages.len(), pages[0].start, pages[0].end), (1, t(1), Some(t(1))), "a page read twice is one");
        let cooldown = of(SpanKind::Cooldown);
        assert_eq!((cooldown.len(), cooldown[0].start, cooldown[0].end), (1, t(1), Some(t(3))));
        let session = of(SpanKind::Session);
        assert_eq!((session.len(), session[0].start, session[0].end), (1, t(3), Some(t(10))));
        let requests = of(SpanKind::Request);
        assert_eq!(requests.len(), 3, "a repeated BulkLoaded adds nothing");
        assert_eq!((requests[0].end, requests[0].failed), (Some(t(5)), false));
        assert_eq!((requests[1].end, requests[1].failed), (Some(t(7)), true), "the retried request failed");
        assert_eq!(requests[2].label, "request 3 of session s1: 200 upsert");
        assert_eq!(of(SpanKind::Trigger).len(), 1, "a repeated trigger adds nothing");
        let import = of(SpanKind::Import);
        assert_eq!((import[0].start, import[0].end, import[0].failed), (t(10), Some(t(14)), false));
        assert!(import[0].label.ends_with("COMPLETED"), "{}", import[0].label);
    }

    #[test]
    fn open_spans_stay_open_and_a_failed_import_is_marked() {
        let events = vec![
            ev(0, EventKind::SessionOpened { session_id: "s1".into() }),
            sending(1, 1),
            ev(2, EventKind::SessionOpened { session_id: "s2".into() }),
            ev(3, EventKind::SessionTriggered { session_id: "s2".into(), requests: 1, okta_at: None }),
            ev(4, EventKind::SessionFinished { session_id: "s2".into(), status: SessionStatus::Error, empty: false }),
        ];
        let tl = Timeline::from_events(&RunId::parse("r1").unwrap(), &events);
        assert_eq!(tl.ended, None);
        assert_eq!(tl.spans[0].end, None, "s1 is still open");
        assert_eq!(tl.spans[1].end, None, "its request is unanswered");
        let import = tl.spans.iter().find(|s| s.kind == SpanKind::Import).unwrap();
        assert!(import.failed);
    }
}
