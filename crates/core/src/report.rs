//! A run's report, folded from its events: what Okta's Import Monitoring
//! would show, plus what the pipeline did on the way.
//!
//! Events can repeat (a redelivered message re-announces its page), so
//! everything is keyed: pages by sequence, requests by session and number.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::{ExternalId, RunId, SyncName};
use crate::ledger::DEACTIVATION_PAGE;
use crate::messages::{Action, EventKind, Op, Piece, Rejected, RunEvent, RunOptions, SessionStatus};

pub mod timeline;

use timeline::TimelineFold;
pub use timeline::{Span, SpanKind, Timeline};

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    Running,
    Completed,
    Failed {
        reason: String,
    },
    /// Another waiting run with the same options serves this request.
    Merged {
        into: RunId,
    },
}

impl RunState {
    /// Nothing more will happen to the run.
    pub fn is_over(&self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// One user in a run's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    #[serde(rename = "externalId")]
    pub external_id: ExternalId,
    pub action: Action,
    /// For an update: the Okta attributes that changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

/// What a run does (a dry run: would do) with each user it met: the dry
/// run's deliverable, and `xaas status RUN --plan` for any run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub create: u32,
    pub update: u32,
    pub deactivate: u32,
    pub unchanged: u32,
    /// Sorted by action (create, update, deactivate, unchanged), then externalId.
    pub users: Vec<PlanEntry>,
}

impl Plan {
    /// Folds a run's plan from its events: the upserts and deactivations of
    /// its bulk requests (real or dry), and the users it left unchanged. A
    /// user met several times (a delta replay) counts once, as its last.
    pub fn from_events<'a>(run_id: &RunId, events: impl IntoIterator<Item = &'a RunEvent>) -> Self {
        let mut fold = PlanFold::default();
        for e in events.into_iter().filter(|e| &e.run_id == run_id) {
            fold.apply(e);
        }
        fold.plan()
    }
}

/// A plan folded one event at a time, for readers that follow the stream
/// (the console) instead of reading it whole. Feed it one run's events.
#[derive(Debug, Clone, Default)]
pub struct PlanFold {
    /// externalId -> (page, entry); deactivations rank after every page.
    last: BTreeMap<ExternalId, (u32, PlanEntry)>,
}

impl PlanFold {
    pub fn apply(&mut self, e: &RunEvent) {
        match &e.kind {
            EventKind::BulkLoaded { pieces, changes, .. } => {
                for (c, page) in changes.iter().zip(pages(pieces)) {
                    let page = if c.action == Action::Deactivate { DEACTIVATION_PAGE } else { page };
                    self.put(&c.external_id, page, c.action, c.changed.clone());
                }
            }
            EventKind::ProfilesUnchanged { pieces, external_ids } => {
                for (id, page) in external_ids.iter().zip(pages(pieces)) {
                    self.put(id, page, Action::Unchanged, Vec::new());
                }
            }
            _ => {}
        }
    }

    fn put(&mut self, id: &ExternalId, page: u32, action: Action, changed: Vec<String>) {
        if self.last.get(id).is_some_and(|(p, _)| *p > page) {
            return;
        }
        self.last.insert(id.clone(), (page, PlanEntry { external_id: id.clone(), action, changed }));
    }

    /// The plan so far.
    pub fn plan(&self) -> Plan {
        let mut plan = Plan::default();
        let mut users: Vec<PlanEntry> = self.last.values().map(|(_, entry)| entry.clone()).collect();
        users.sort_by(|a, b| (a.action, &a.external_id).cmp(&(b.action, &b.external_id)));
        for u in &users {
            match u.action {
                Action::Create => plan.create += 1,
                Action::Update => plan.update += 1,
                Action::Deactivate => plan.deactivate += 1,
                Action::Unchanged => plan.unchanged += 1,
            }
        }
        plan.users = users;
        plan
    }
}

fn pages(pieces: &[Piece]) -> impl Iterator<Item = u32> + '_ {
    pieces.iter().flat_map(|p| std::iter::repeat_n(p.page_seq, p.to.saturating_sub(p.from) as usize))
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
    /// Users not sent because their profile is unchanged since its last upload.
    pub unchanged: u32,
    /// Why the run re-read the full state instead of the changes (an
    /// expired or refused delta token), when it did.
    pub full_resync: Option<String>,
    /// The guard that refused the run's deactivations, with the numbers.
    pub guard_tripped: Option<String>,
    /// `--allow-mass-deactivation` was given for this run.
    pub mass_deactivation_allowed: bool,
    /// The guard the override let this run past, when one would have tripped.
    pub guard_overridden: Option<String>,
    /// The run waited for this one, of the same sync, to end first.
    pub queued_behind: Option<RunId>,
    /// This request was served by that waiting run.
    pub merged_into: Option<RunId>,
    /// A dry run's plan, in the final report (`with_plan`; for any run:
    /// `Plan::from_events`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

impl RunReport {
    /// Folds the events of one run (others are skipped) into its report.
    pub fn from_events<'a>(run_id: &RunId, events: impl IntoIterator<Item = &'a RunEvent>) -> Option<Self> {
        let mut fold = RunFold::default();
        for e in events.into_iter().filter(|e| &e.run_id == run_id) {
            fold.apply(e);
        }
        fold.report(run_id)
    }

    /// The report with, for a dry run, its plan (heavier: one entry per user).
    pub fn with_plan<'a>(run_id: &RunId, events: impl IntoIterator<Item = &'a RunEvent> + Clone) -> Option<Self> {
        let mut report = Self::from_events(run_id, events.clone())?;
        if report.options.as_ref().is_some_and(|o| o.dry_run) {
            report.plan = Some(Plan::from_events(run_id, events));
        }
        Some(report)
    }

    pub fn duration(&self) -> Option<time::Duration> {
        Some(self.finished_at? - self.started_at?)
    }

    /// Pages seen so far out of the total when known, for progress bars.
    pub fn progress(&self) -> (u32, Option<u32>) {
        (self.pages_fetched, self.total_pages)
    }
}

/// A run's report folded one event at a time: what `RunReport::from_events`
/// does in one go, kept open for readers that follow the stream (the
/// console) so that each new event costs one step, not a re-read. Feed it
/// the events of one run, in stream order.
#[derive(Debug, Clone, Default)]
pub struct RunFold {
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
    unchanged: u32,
    full_resync: Option<String>,
    guard_tripped: Option<String>,
    guard_overridden: Option<String>,
    queued_behind: Option<RunId>,
    merged_into: Option<RunId>,
    timeline: TimelineFold,
}

impl RunFold {
    pub fn apply(&mut self, e: &RunEvent) {
        self.sync.get_or_insert_with(|| e.sync.clone());
        self.timeline.apply(e);
        match &e.kind {
            EventKind::RunStarted { options } => {
                self.options = Some(options.clone());
                self.started = Some(self.started.map_or(e.at, |t| t.min(e.at)));
            }
            EventKind::ProfilesUnchanged { external_ids, .. } => self.unchanged += external_ids.len() as u32,
            EventKind::DeactivationsQueued { .. }
            | EventKind::RejectedInSource { .. }
            | EventKind::DeactivationsPlanned { .. }
            | EventKind::DeltaLinkReceived { .. } => {}
            EventKind::GuardTripped { reason, .. } => self.guard_tripped = Some(reason.clone()),
            EventKind::GuardOverridden { reason, .. } => self.guard_overridden = Some(reason.clone()),
            EventKind::DeltaResync { reason } => self.full_resync = Some(reason.clone()),
            EventKind::RunQueued { behind, .. } => {
                self.queued_behind = Some(behind.clone());
                self.started = self.started.or(Some(e.at));
            }
            EventKind::RunMerged { into } => {
                self.merged_into = Some(into.clone());
                self.started = self.started.or(Some(e.at));
                self.finished = Some(e.at);
                self.state = Some(RunState::Merged { into: into.clone() });
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
            EventKind::SessionFinished { session_id, status, .. } => {
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

    /// The options the run was started (or queued) with, once known.
    pub fn options(&self) -> Option<&RunOptions> {
        self.options.as_ref()
    }

    /// Where the run stands; `None` before its first event.
    pub fn state(&self) -> Option<&RunState> {
        self.sync.as_ref().map(|_| self.state.as_ref().unwrap_or(&RunState::Running))
    }

    /// Where the run's time went: sessions, requests, cooldowns, imports.
    pub fn timeline(&self) -> &Timeline {
        self.timeline.timeline()
    }

    /// The report so far; `None` before the run's first event.
    pub fn report(&self, run_id: &RunId) -> Option<RunReport> {
        let sync = self.sync.clone()?;
        let mass_deactivation_allowed = self.options.as_ref().is_some_and(|o| o.allow_mass_deactivation);
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
            run_id: run_id.clone(),
            sync,
            options: self.options.clone(),
            state: self.state.clone().unwrap_or(RunState::Running),
            started_at: self.started,
            finished_at: self.finished,
            pages_fetched: self.fetched.len() as u32,
            total_pages: self.total_pages,
            users_read: self.fetched.values().map(|(u, _)| u).sum(),
            removed_read: self.fetched.values().map(|(_, r)| r).sum(),
            filtered_out: self.mapped.values().map(|(f, _)| f).sum(),
            rejected: self.mapped.values().flat_map(|(_, r)| r.iter().cloned()).collect(),
            refused_by_okta: self.refused.clone(),
            upserted: count(Op::Upsert),
            deactivated: count(Op::Delete),
            bulk_requests: self.loaded.len() as u32,
            sessions,
            cooldown_seconds: self.cooldown,
            retries: self.retries,
            delta_link: self.delta_link.clone(),
            unchanged: self.unchanged,
            full_resync: self.full_resync.clone(),
            guard_tripped: self.guard_tripped.clone(),
            mass_deactivation_allowed,
            guard_overridden: self.guard_overridden.clone(),
            queued_behind: self.queued_behind.clone(),
            merged_into: self.merged_into.clone(),
            plan: None,
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
            changes: vec![],
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
            ev(7, EventKind::SessionTriggered { session_id: "s1".into(), requests: 2, okta_at: None }),
            ev(8, EventKind::CooldownWaited { seconds: 1.5 }),
            ev(9, EventKind::SessionOpened { session_id: "s2".into() }),
            ev(10, loaded("s2", 1, Op::Delete, 2)),
            ev(
                11,
                EventKind::SessionFinished { session_id: "s1".into(), status: SessionStatus::Completed, empty: false },
            ),
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
