//! Closing a run.
//!
//! `Settle` runs after every batch: once every part of one lineage of the
//! run has arrived, the last partial request goes out; once the run is
//! loaded, its `FinishRun` is queued; held batches that are accounted for
//! are acked. `FinishRun` is published **before** those acks, so that a
//! crash in between leaves a message in the queue to wake a standby.
//!
//! `Finish` closes a loaded run: it decides the deactivations against the
//! roster and the guards (`reconcile`) and records the list before sending
//! any, so that a successor sends the rest of exactly that list; triggers
//! the run's open session; follows each of its sessions to the end; saves
//! to the roster what Okta confirmed; and records the outcome. Its
//! `FinishRun` is acked only then. A run found loaded at takeover is
//! finished the same way, whether or not its `FinishRun` was ever queued.

use std::time::Duration;

use crate::ids::{ExternalId, RunId};
use crate::ledger::{DEACTIVATION_PAGE, Fate};
use crate::messages::{
    Action, Batch, EventKind, FinishRun, Mode, OktaProfile, Op, ProfileChange, RunOptions, SessionStatus,
};
use crate::packing::{Packed, PieceMeta};
use crate::reconcile;
use crate::roster::RosterEntry;

use super::budget::{Attempts, Retry};
use super::okta::{Answer, Call, Failure};
use super::send::Send;
use super::session::Trigger;
use super::{Cx, Event, Step, Task, Why};

/// externalIds per `DeactivationsPlanned` event (about 80 KB).
const DEACTIVATIONS_PER_EVENT: usize = 2_000;

#[derive(Debug)]
pub(crate) struct Settle {
    pub run: RunId,
}

impl Settle {
    pub fn new(run: RunId) -> Self {
        Self { run }
    }

    pub fn step(&mut self, cx: &mut Cx<'_>) -> Step {
        let run = self.run.clone();
        let Some(buffer) = cx.state.runs.get_mut(&run) else { return Step::Done };
        if buffer.all_received(&run, &cx.state.ledger) {
            let mut requests = Vec::new();
            while let Some(packed) = buffer.packer.drain() {
                requests.push(packed);
            }
            if !requests.is_empty() {
                return Step::After(vec![Task::Send(Send::new(run, requests))]);
            }
        }
        let loaded = cx.state.ledger.run(&run).is_some_and(|r| r.is_loaded());
        if loaded {
            queue_finish(cx, &run);
        }
        for key in cx.state.settle_held(&run) {
            cx.ack(key);
        }
        Step::Done
    }
}

/// Publishes the run's `FinishRun` once.
fn queue_finish(cx: &mut Cx<'_>, run: &RunId) {
    let sync = cx.settings.sync.clone();
    let Some(buffer) = cx.state.runs.get_mut(run) else { return };
    if buffer.finish_queued {
        return;
    }
    buffer.finish_queued = true;
    let finish = FinishRun {
        v: crate::MESSAGE_VERSION,
        run_id: run.clone(),
        sync,
        options: buffer.options.clone(),
        finish_run: true,
        delta_link: buffer.delta_link.clone(),
    };
    cx.publish(finish);
}

#[derive(Debug)]
pub(crate) struct Finish {
    pub run: RunId,
    stage: Stage,
    /// Why a guard refused the run's deactivations.
    tripped: Option<String>,
    attempts: Attempts,
}

#[derive(Debug)]
enum Stage {
    Start,
    /// The deactivations are sent (or refused by a guard).
    Deactivated,
    /// The run's open session is triggered; its sessions are followed.
    Following,
    /// Waiting for Okta's answer about `session`, after `polls` looks.
    Polling {
        session: String,
        polls: u32,
    },
    /// Between two looks at `session`.
    Resting {
        session: String,
        polls: u32,
    },
}

impl Finish {
    pub fn new(run: RunId) -> Self {
        Self { run, stage: Stage::Start, tripped: None, attempts: Attempts::default() }
    }

    pub fn step(&mut self, cx: &mut Cx<'_>, event: Event) -> Step {
        let mut event = Some(event);
        loop {
            let event = event.take().unwrap_or(Event::Start);
            let step = match (std::mem::replace(&mut self.stage, Stage::Following), event) {
                (Stage::Start, _) => self.start(cx),
                (Stage::Deactivated, _) => self.trigger(cx),
                (Stage::Following, _) => self.follow(cx),
                (Stage::Polling { session, polls }, Event::Reply(reply)) => {
                    Some(self.polled(cx, session, polls, reply.result))
                }
                // A timer, or (never expected) a turn without the answer:
                // look at the session (again).
                (Stage::Polling { session, polls } | Stage::Resting { session, polls }, _) => {
                    self.stage = Stage::Polling { session: session.clone(), polls };
                    Some(cx.call(Call::GetSession { session }))
                }
            };
            // `None`: the stage moved on without waiting; go on.
            if let Some(step) = step {
                return step;
            }
        }
    }

    /// The run is closed already, is not loaded, or its deactivations are
    /// decided and (if any) handed to a `Send`.
    fn start(&mut self, cx: &mut Cx<'_>) -> Option<Step> {
        let run = self.run.clone();
        if cx.state.ledger.is_run_closed(&run) {
            close_buffer(cx, &run);
            return Some(Step::Done);
        }
        if !cx.state.ledger.run(&run).is_some_and(|r| r.is_loaded()) {
            let error = "FinishRun for a run whose pages are not all loaded (events missing from the stream?)";
            // The batches it holds stay held: they are still to be loaded.
            if let Some(buffer) = cx.state.runs.get_mut(&run) {
                let keys = std::mem::take(&mut buffer.finish_keys);
                buffer.finishing = false;
                buffer.finish_queued = false;
                for key in keys {
                    cx.park(key, "inconsistent", error);
                }
            }
            return Some(Step::Done);
        }
        // Before anything is acked, a FinishRun must be in the queue, so
        // that a crash from here on wakes a standby to finish the run.
        queue_finish(cx, &run);
        let options = self.options(cx);
        let delta_link = self.delta_link(cx);
        match deactivations(cx, &run, &options, delta_link.as_deref()) {
            Err(reason) => {
                // Nobody is deactivated, but what the run loaded is still
                // imported and saved to the roster.
                self.tripped = Some(reason);
                self.stage = Stage::Deactivated;
                None
            }
            Ok(requests) => {
                self.stage = Stage::Deactivated;
                if requests.is_empty() { None } else { Some(Step::After(vec![Task::Send(Send::new(run, requests))])) }
            }
        }
    }

    /// Triggers the run's open session (unless a dry run).
    fn trigger(&mut self, cx: &mut Cx<'_>) -> Option<Step> {
        self.stage = Stage::Following;
        if self.options(cx).dry_run {
            return None;
        }
        let sessions = cx.state.ledger.run(&self.run).map(|r| r.sessions.clone()).unwrap_or_default();
        match cx.state.ledger.open_session() {
            Some(open) if sessions.contains(&open.id) => {
                Some(Step::After(vec![Task::Trigger(Trigger::new(self.run.clone(), open.id.clone()))]))
            }
            _ => None,
        }
    }

    /// Looks at the next session of the run Okta is still importing, or
    /// closes the run once there is none.
    fn follow(&mut self, cx: &mut Cx<'_>) -> Option<Step> {
        if !self.options(cx).dry_run {
            let sessions = cx.state.ledger.run(&self.run).map(|r| r.sessions.clone()).unwrap_or_default();
            let awaiting = sessions.into_iter().find(|s| cx.state.ledger.awaiting().contains(s));
            if let Some(session) = awaiting {
                self.stage = Stage::Polling { session: session.clone(), polls: 0 };
                return Some(cx.call(Call::GetSession { session }));
            }
        }
        Some(self.close(cx))
    }

    fn polled(&mut self, cx: &mut Cx<'_>, session: String, polls: u32, result: Result<Answer, Failure>) -> Step {
        match result {
            Ok(Answer::Session(s)) if s.status.is_final() => {
                self.attempts.reset();
                cx.record(
                    &self.run,
                    EventKind::SessionFinished { session_id: session, status: s.status, empty: false },
                );
                self.stage = Stage::Following;
                self.step(cx, Event::Start)
            }
            Ok(_) => {
                self.attempts.reset();
                self.rest(cx, session, polls + 1, None)
            }
            Err(Failure::Transient { reason, retry_after }) => {
                match self.attempts.fail("following the import", &reason, retry_after, &cx.settings.retry, cx.now) {
                    Retry::GiveUp(reason) => Step::Fail { run: self.run.clone(), reason },
                    Retry::After { attempt, after } => {
                        let kind = EventKind::Retrying { stage: "uploader".into(), attempt, reason };
                        cx.record(&self.run, kind);
                        self.rest(cx, session, polls, Some(after))
                    }
                }
            }
            Err(
                Failure::Fatal { reason }
                | Failure::Invalid { summary: reason, .. }
                | Failure::CreateRefused { summary: reason },
            ) => Step::Fail { run: self.run.clone(), reason },
        }
    }

    /// Waits before the next look: longer the longer the import takes.
    fn rest(&mut self, cx: &mut Cx<'_>, session: String, polls: u32, after: Option<Duration>) -> Step {
        let after = after.unwrap_or(Duration::from_millis(250 * u64::from(polls.clamp(1, 20))));
        self.stage = Stage::Resting { session, polls };
        cx.sleep(cx.now + after, Why::Poll)
    }

    /// Saves what Okta confirmed and records the outcome.
    fn close(&mut self, cx: &mut Cx<'_>) -> Step {
        let run = self.run.clone();
        let options = self.options(cx);
        let delta_link = self.delta_link(cx);
        let mut failed = Vec::new();
        if !options.dry_run {
            let ledger = &cx.state.ledger;
            let sessions = ledger.run(&run).map(|r| r.sessions.clone()).unwrap_or_default();
            for session in &sessions {
                match ledger.session_status(session) {
                    Some(SessionStatus::Completed) => {}
                    Some(SessionStatus::Closed) if ledger.was_cancelled_empty(session) => {}
                    Some(status) => failed.push(format!("session {session} ended {}", status.as_str())),
                    None => failed.push(format!("session {session} has no known outcome")),
                }
            }
        }
        if !options.dry_run {
            save_roster(cx, &run);
        }
        let kind = if let Some(reason) = &self.tripped {
            EventKind::RunFailed { reason: format!("deactivation guard: {reason}") }
        } else if failed.is_empty() {
            // A dry run changed nothing in Okta: the next real run must read
            // the same changes, so it keeps the previous deltaLink.
            EventKind::RunCompleted { delta_link: if options.dry_run { None } else { delta_link } }
        } else {
            EventKind::RunFailed {
                reason: format!(
                    "Okta did not complete the import: {}; check Import Monitoring in the Okta admin console, then run the sync again",
                    failed.join(", ")
                ),
            }
        };
        cx.record(&run, kind);
        close_buffer(cx, &run);
        Step::Done
    }

    fn options(&self, cx: &Cx<'_>) -> RunOptions {
        let progress = cx.state.ledger.run(&self.run);
        let mut options = cx
            .state
            .runs
            .get(&self.run)
            .map(|b| b.options.clone())
            .or_else(|| progress.and_then(|r| r.options.clone()))
            .unwrap_or_default();
        options.full_state |= progress.is_some_and(|r| r.reads_full_state());
        options
    }

    fn delta_link(&self, cx: &Cx<'_>) -> Option<String> {
        cx.state
            .runs
            .get(&self.run)
            .and_then(|b| b.delta_link.clone())
            .or_else(|| cx.state.ledger.run(&self.run).and_then(|r| r.delta_link().map(String::from)))
    }
}

/// Acks everything the run holds and forgets it.
fn close_buffer(cx: &mut Cx<'_>, run: &RunId) {
    if let Some(buffer) = cx.state.runs.remove(run) {
        for key in buffer.keys() {
            cx.ack(key);
        }
    }
}

/// Decides the run's deactivations (once: the list is recorded before any
/// is sent) and queues what is left of them. `Err` is why a guard refused
/// them: nothing is deactivated then.
fn deactivations(
    cx: &mut Cx<'_>,
    run: &RunId,
    options: &RunOptions,
    delta_link: Option<&str>,
) -> Result<Vec<Packed>, String> {
    let Some(progress) = cx.state.ledger.run(run) else { return Ok(Vec::new()) };
    if let Some(reason) = &progress.guard_tripped {
        return Err(reason.clone());
    }
    let plan = match progress.deactivation_plan() {
        Some(plan) => plan,
        None => {
            let partial = (options.mode == Mode::Delta && delta_link.is_none())
                .then(|| "the delta round ended without its deltaLink (the page chain ended early)".to_string());
            let decision = reconcile::decide(progress, options, &cx.state.roster, &cx.settings.guards, partial);
            let (deactivations, roster) = (decision.candidates, decision.roster);
            if let Some(reason) = decision.tripped {
                cx.record(run, EventKind::GuardTripped { reason: reason.clone(), deactivations, roster });
                return Err(reason);
            }
            if let Some(reason) = decision.overridden {
                cx.record(run, EventKind::GuardOverridden { reason, deactivations, roster });
            }
            let mut plan: Vec<Vec<ExternalId>> =
                decision.deactivate.chunks(DEACTIVATIONS_PER_EVENT).map(<[ExternalId]>::to_vec).collect();
            if plan.is_empty() {
                plan.push(Vec::new());
            }
            let parts = plan.len() as u32;
            for (part, external_ids) in plan.iter().enumerate() {
                let kind =
                    EventKind::DeactivationsPlanned { part: part as u32, parts, external_ids: external_ids.clone() };
                cx.record(run, kind);
            }
            plan
        }
    };
    let limits = *cx.limits();
    let parts = plan.len() as u32;
    let mut requests = Vec::new();
    for (part, ids) in plan.into_iter().enumerate() {
        let batch = Batch {
            v: crate::MESSAGE_VERSION,
            run_id: run.clone(),
            sync: cx.settings.sync.clone(),
            options: options.clone(),
            page_seq: DEACTIVATION_PAGE,
            part: part as u32,
            parts,
            total_pages: None,
            op: Op::Delete,
            profiles: ids.into_iter().map(|external_id| OktaProfile { external_id, profile: None }).collect(),
            rejected: Vec::new(),
            delta_link: None,
            copy: Default::default(),
            parent: None,
        };
        let meta = PieceMeta {
            page_seq: DEACTIVATION_PAGE,
            part: part as u32,
            parts,
            len: batch.profiles.len() as u32,
            ..Default::default()
        };
        let items: Vec<(u32, OktaProfile, ProfileChange)> = cx
            .state
            .ledger
            .remaining(&batch)
            .into_iter()
            .map(|(i, profile)| {
                let change = ProfileChange {
                    external_id: profile.external_id.clone(),
                    action: Action::Deactivate,
                    changed: Vec::new(),
                    digest: None,
                };
                (i, profile, change)
            })
            .collect();
        let buffer = cx.state.buffer(run, options, &limits);
        buffer.enqueue(Op::Delete, meta, items);
        while let Some(packed) = buffer.packer.next_full() {
            requests.push(packed);
        }
    }
    if let Some(buffer) = cx.state.runs.get_mut(run) {
        while let Some(packed) = buffer.packer.drain() {
            requests.push(packed);
        }
    }
    Ok(requests)
}

/// Saves to the roster what Okta confirmed of this run: users upserted or
/// deactivated in sessions that completed. Profiles of a session that
/// failed are left as they were, so the next run sends them again.
fn save_roster(cx: &mut Cx<'_>, run: &RunId) {
    let ledger = &cx.state.ledger;
    let Some(progress) = ledger.run(run) else { return };
    if !cx.state.roster.is_known() && !progress.reads_full_state() {
        // Without a base, only a run that read everything can start one.
        return;
    }
    let confirmed = |session: &str| ledger.session_status(session) == Some(SessionStatus::Completed);
    let deactivated: Vec<ExternalId> =
        progress.deactivated().iter().filter(|(_, session)| confirmed(session)).map(|(id, _)| id.clone()).collect();
    let upserted: Vec<RosterEntry> = progress
        .ids()
        .iter()
        .filter_map(|(id, seen)| match &seen.fate {
            Fate::Upserted { session, digest: Some(digest) }
                if confirmed(session) && !progress.deactivated().contains_key(id) =>
            {
                Some(RosterEntry { external_id: id.clone(), digest: digest.clone() })
            }
            _ => None,
        })
        .collect();
    let records = cx.state.roster.records_for(run, cx.now, upserted, deactivated);
    for record in records {
        cx.save_roster(record);
    }
}
