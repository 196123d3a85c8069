//! A run's report, folded from its events: what Okta's Import Monitoring
//! would show, plus what the pipeline did on the way.
//!
//! Events can repeat (a redelivered message re-announces its page), so
//! everything is keyed: pages by sequence, requests by session and number.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::{RunId, SyncName};
use crate::messages::{EventKind, Op, Rejected, RunEvent, RunOptions, SessionStatus};

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    Running,
    Completed,
    Failed { reason: String },
}

/// One session the run used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    pub id: String,
    pub requests: u32,
    pub profiles: u32,
    pub status: Option<SessionStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub run_id: RunId,
    pub sync: SyncName,
    pub options: Option<RunOptions>,
    pub state: RunState,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub pages_fetched: u32,
    pub total_pages: Option<u32>,
    pub users_read: u32,
    pub removed_read: u32,
    pub filtered_out: u32,
    pub rejected: Vec<Rejected>,
    pub refused_by_okta: Vec<Rejected>,
    pub upserted: u32,
    pub deactivated: u32,
    pub bulk_requests: u32,
    pub sessions: Vec<SessionReport>,
    pub cooldown_seconds: f64,
    pub retries: u32,
    pub delta_link: Option<String>,
}

impl RunReport {
    /// Folds the events of one run (others are skipped) into its report.
    pub fn from_events<'a>(run_id: &RunId, events: impl IntoIterator<Item = &'a RunEvent>) -> Option<Self> {
        let mut fold = Fold::default();
        for e in events.into_iter().filter(|e| &e.run_id == run_id) {
            fold.apply(e);
        }
        fold.finish(run_id.clone())
    }

    pub fn duration(&self) -> Option<time::Duration> {
        Some(self.finished_at? - self.started_at?)
    }

    /// Pages seen so far out of the total when known, for progress bars.
    pub fn progress(&self) -> (u32, Option<u32>) {
        (self.pages_fetched, self.total_pages)
    }
}

#[derive(Default)]
struct Fold {
    sync: Option<SyncName>,
    options: Option<RunOptions>,
    state: Option<RunState>,
    started: Option<OffsetDateTime>,
    finished: Option<OffsetDateTime>,
    fetched: BTreeMap<u32, (u32, u32)>,
    total_pages: Option<u32>,
    mapped: BTreeMap<u32, (u32, Vec<Rejected>)>,
    refused: Vec<Rejected>,
    loaded: BTreeMap<(String, u32), (Op, u32)>,
    session_order: Vec<String>,
    session_status: BTreeMap<String, SessionStatus>,
    cooldown: f64,
    retries: u32,
    delta_link: Option<String>,
    empty_pages: BTreeSet<u32>,
}

impl Fold {
    fn apply(&mut self, e: &RunEvent) {
        self.sync.get_or_insert_with(|| e.sync.clone());
        match &e.kind {
            EventKind::RunStarted { options } => {
                self.options = Some(options.clone());
                self.started = Some(self.started.map_or(e.at, |t| t.min(e.at)));
            }
            EventKind::PageFetched { seq, users, removed, last } => {
                self.fetched.insert(*seq, (*users, *removed));
                if *last {
                    self.total_pages = Some(seq + 1);
                }
            }
            EventKind::PageMapped { seq, filtered_out, rejected, .. } => {
                self.mapped.insert(*seq, (*filtered_out, rejected.clone()));
            }
            EventKind::SessionOpened { session_id } => self.note_session(session_id),
            EventKind::BulkSending { .. } => {}
            EventKind::BulkLoaded { session_id, request_no, op, profiles, .. } => {
                self.note_session(session_id);
                self.loaded.insert((session_id.clone(), *request_no), (*op, *profiles));
            }
            EventKind::BatchEmpty { page_seq, .. } => {
                self.empty_pages.insert(*page_seq);
            }
            EventKind::ProfilesRefused { refused, .. } => {
                for r in refused {
                    if !self.refused.contains(r) {
                        self.refused.push(r.clone());
                    }
                }
            }
            EventKind::SessionTriggered { session_id, .. } => self.note_session(session_id),
            EventKind::SessionFinished { session_id, status } => {
                self.note_session(session_id);
                self.session_status.insert(session_id.clone(), *status);
            }
            EventKind::CooldownWaited { seconds } => self.cooldown += seconds,
            EventKind::Retrying { .. } => self.retries += 1,
            EventKind::RunCompleted { delta_link } => {
                self.delta_link = delta_link.clone();
                self.finished = Some(e.at);
                if !matches!(self.state, Some(RunState::Failed { .. })) {
                    self.state = Some(RunState::Completed);
                }
            }
            EventKind::RunFailed { reason } => {
                self.finished = Some(e.at);
                self.state = Some(RunState::Failed { reason: reason.clone() });
            }
        }
    }

    fn note_session(&mut self, id: &str) {
        if !self.session_order.iter().any(|s| s == id) {
            self.session_order.push(id.to_string());
        }
    }

    fn finish(self, run_id: RunId) -> Option<RunReport> {
        let sync = self.sync?;
        let count = |op: Op| self.loaded.values().filter(|(o, _)| *o == op).map(|(_, n)| n).sum();
        let sessions = self
            .session_order
            .iter()
            .map(|id| {
                let mine = self.loaded.iter().filter(|((s, _), _)| s == id);
                SessionReport {
                    id: id.clone(),
                    requests: mine.clone().count() as u32,
                    profiles: mine.map(|(_, (_, n))| n).sum(),
                    status: self.session_status.get(id).copied(),
                }
            })
            .collect();
        Some(RunReport {
            run_id,
            sync,
            options: self.options,
            state: self.state.unwrap_or(RunState::Running),
            started_at: self.started,
            finished_at: self.finished,
            pages_fetched: self.fetched.len() as u32,
            total_pages: self.total_pages,
            users_read: self.fetched.values().map(|(u, _)| u).sum(),
            removed_read: self.fetched.values().map(|(_, r)| r).sum(),
            filtered_out: self.mapped.values().map(|(f, _)| f).sum(),
            rejected: self.mapped.into_values().flat_map(|(_, r)| r).collect(),
            refused_by_okta: self.refused,
            upserted: count(Op::Upsert),
            deactivated: count(Op::Delete),
            bulk_requests: self.loaded.len() as u32,
            sessions,
            cooldown_seconds: self.cooldown,
            retries: self.retries,
            delta_link: self.delta_link,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(secs: i64, kind: EventKind) -> RunEvent {
        RunEvent::new(
            RunId::parse("r1").unwrap(),
            SyncName::parse("demo").unwrap(),
            OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap(),
            kind,
        )
    }

    #[test]
    fn folds_a_run_and_ignores_repeated_events() {
        let loaded = |s: &str, n, op, profiles| EventKind::BulkLoaded {
            session_id: s.into(),
            request_no: n,
            op,
            profiles,
            bytes: 0,
            pieces: vec![],
        };
        let rejected = Rejected { external_id: Some("x".into()), reason: "missing mail".into() };
        let events = vec![
            ev(0, EventKind::RunStarted { options: RunOptions::default() }),
            ev(1, EventKind::PageFetched { seq: 0, users: 300, removed: 0, last: false }),
            ev(1, EventKind::PageFetched { seq: 0, users: 300, removed: 0, last: false }),
            ev(2, EventKind::PageFetched { seq: 1, users: 50, removed: 2, last: true }),
            ev(
                2,
                EventKind::PageMapped {
                    seq: 0,
                    parts: 2,
                    profiles: 250,
                    filtered_out: 49,
                    rejected: vec![rejected.clone()],
                },
            ),
            ev(3, EventKind::PageMapped { seq: 1, parts: 1, profiles: 50, filtered_out: 0, rejected: vec![] }),
            ev(4, EventKind::SessionOpened { session_id: "s1".into() }),
            ev(5, loaded("s1", 1, Op::Upsert, 200)),
            ev(5, loaded("s1", 1, Op::Upsert, 200)),
            ev(6, loaded("s1", 2, Op::Upsert, 100)),
            ev(7, EventKind::SessionTriggered { session_id: "s1".into(), requests: 2 }),
            ev(8, EventKind::CooldownWaited { seconds: 1.5 }),
            ev(9, EventKind::SessionOpened { session_id: "s2".into() }),
            ev(10, loaded("s2", 1, Op::Delete, 2)),
            ev(11, EventKind::SessionFinished { session_id: "s1".into(), status: SessionStatus::Completed }),
            ev(20, EventKind::RunCompleted { delta_link: None }),
        ];
        let r = RunReport::from_events(&RunId::parse("r1").unwrap(), &events).unwrap();
        assert_eq!(r.state, RunState::Completed);
        assert_eq!((r.pages_fetched, r.total_pages), (2, Some(2)));
        assert_eq!((r.users_read, r.removed_read, r.filtered_out), (350, 2, 49));
        assert_eq!(r.rejected, vec![rejected]);
        assert_eq!((r.upserted, r.deactivated, r.bulk_requests), (300, 2, 3));
        assert_eq!(r.sessions.len(), 2);
        assert_eq!(r.sessions[0].requests, 2);
        assert_eq!(r.sessions[0].status, Some(SessionStatus::Completed));
        assert_eq!(r.sessions[1].status, None);
        assert_eq!(r.cooldown_seconds, 1.5);
        assert_eq!(r.duration(), Some(time::Duration::seconds(20)));
    }

    #[test]
    fn no_events_no_report() {
        assert!(RunReport::from_events(&RunId::parse("r1").unwrap(), &[]).is_none());
    }
}
