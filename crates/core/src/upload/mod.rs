//! The uploader as a pure state machine: every decision the uploader makes,
//! with none of its I/O.
//!
//! `handle(now, input) -> commands`. The inputs are what happens to an
//! uploader: it becomes the batches queue's active consumer (with the log to
//! rebuild from) or stops being it, a delivery arrives, Okta answers, a sleep
//! ends. The commands are what it does about it: record an event, call Okta,
//! sleep, ack or park a delivery, publish its `FinishRun`, save the roster.
//! A driver (`xaas-workers`' uploader) carries the commands out **in order**,
//! and feeds the outcome of each Okta call and sleep back as an input; the
//! deterministic simulation drives the same machine over a simulated broker
//! and Okta.
//!
//! The contract with the driver:
//! - a `Record`, `SaveRoster` or `Publish` is confirmed by the broker before
//!   the next command runs; when one cannot be, the driver stops acting and
//!   says `Lost` (nothing may be acked or sent without its record);
//! - at most one Okta call or sleep is outstanding, always the last command
//!   of a batch; the machine waits for its outcome before it does anything
//!   else (deliveries that arrive meanwhile wait in its inbox);
//! - after `Lost`, the machine forgets everything and ignores every input
//!   but `Gained`: an uploader that lost its consumer must not act on what
//!   it thought it owned, since a standby may already be active. It learns
//!   its state again from the log when it is active again.
//!
//! The rules themselves live in one module each: `session` (when a session
//! is opened, adopted, triggered; the 50-request limit), `clock` (the
//! cooldown, on Okta's clock), `budget` (how long a failing call is
//! retried), `send` (a bulk request and what a refusal costs), `batch` (what
//! becomes of each arriving profile), `finish` (deactivations, triggers,
//! following the import, the roster, the report).

mod batch;
pub mod budget;
pub mod clock;
mod finish;
pub mod okta;
pub mod refusal;
mod run;
mod send;
mod session;

use std::collections::{BTreeMap, VecDeque};

use time::OffsetDateTime;

pub use budget::RetryBudget;
pub use okta::{Answer, Call, Failure, Reply, SessionInfo};

use crate::ids::{RunId, SyncName};
use crate::ledger::Ledger;
use crate::limits::Limits;
use crate::messages::{EventKind, FinishRun, RunEvent, UploaderMessage};
use crate::reconcile::Guards;
use crate::roster::{Roster, RosterRecord};
use clock::OktaClock;
use run::RunBuffer;

/// What one sync's uploader is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub sync: SyncName,
    pub limits: Limits,
    pub guards: Guards,
    pub retry: RetryBudget,
    /// Always [`Sabotage::NONE`] outside the simulation's own tests.
    pub sabotage: Sabotage,
}

/// Deliberate defects, each undoing one rule, so that the deterministic
/// simulation can prove it catches them. Nothing in the configuration or
/// the environment sets these: only code that builds [`Settings`] by hand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sabotage {
    /// Count a bulk request when Okta answers, not before it is sent.
    pub count_after_send: bool,
    /// Treat every read of a page as the same copy (positional duplicates,
    /// as before page identity).
    pub ignore_copies: bool,
    /// Do not finish, at takeover, a run the predecessor fully loaded.
    pub no_finish_at_takeover: bool,
}

impl Sabotage {
    pub const NONE: Sabotage = Sabotage { count_after_send: false, ignore_copies: false, no_finish_at_takeover: false };
}

/// The driver's handle on a delivery it holds unacked. Opaque here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub u64);

/// Names one Okta call, so that its answer finds the step that waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(u64);

/// Names one sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// What happens to the uploader.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// It is the active consumer of its sync's batches queue; `events` (the
    /// events stream) and `roster` (the roster stream) as they stand now.
    Gained { events: Vec<RunEvent>, roster: Vec<RosterRecord> },
    /// Its consumer or its connection is gone: stop acting at once.
    Lost,
    /// A delivery from the batches queue.
    Message { key: Key, message: UploaderMessage },
    /// Okta answered `call`.
    Okta { call: CallId, reply: Reply },
    /// The sleep `timer` is over.
    Timer { timer: TimerId },
}

/// Why the machine sleeps: the driver may log or instrument each differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Okta's cooldown after a trigger.
    Cooldown,
    /// Before retrying a failed call.
    Backoff,
    /// Between two looks at an import in progress.
    Poll,
}

/// What the uploader does.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Append to the events stream, confirmed.
    Record(RunEvent),
    /// Append to the sync's roster stream, confirmed.
    SaveRoster(RosterRecord),
    /// Publish to the sync's own batches queue, confirmed.
    Publish(FinishRun),
    Ack(Key),
    /// Move the delivery to the parked queue with the reason and error.
    Park {
        key: Key,
        reason: String,
        error: String,
    },
    /// Call Okta; answer with `Input::Okta { call, .. }`.
    Okta {
        call: CallId,
        request: Call,
    },
    /// Answer with `Input::Timer { timer }` at `until` (this host's clock).
    Sleep {
        timer: TimerId,
        until: OffsetDateTime,
        why: Why,
    },
}

/// One sync's uploader.
#[derive(Debug)]
pub struct Uploader {
    settings: Settings,
    /// `None` while standing by.
    active: Option<Active>,
    next_id: u64,
}

/// What the active uploader knows and is doing.
#[derive(Debug)]
struct Active {
    state: State,
    /// Work in order; the front one runs, or waits for `waiting`.
    tasks: VecDeque<Task>,
    waiting: Option<Wait>,
    /// Deliveries taken in while busy, handled once the tasks are done.
    inbox: VecDeque<(Key, UploaderMessage)>,
}

/// The uploader's knowledge: the log folded, Okta's clock, and what this
/// process holds of each run.
#[derive(Debug)]
pub(crate) struct State {
    pub ledger: Ledger,
    pub roster: Roster,
    pub clock: OktaClock,
    pub runs: BTreeMap<RunId, RunBuffer>,
    /// Okta was seen to hold no open session the log does not know of.
    /// False at takeover and after a create whose outcome is unknown: the
    /// next create then lists the sessions first, and adopts an open one
    /// instead of being refused for it.
    pub no_stray_session: bool,
}

/// An outstanding call or sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Okta(CallId),
    Timer(TimerId),
}

/// A unit of work. Each runs until it waits for Okta or a timer, needs
/// other work done first, or is done.
#[derive(Debug)]
enum Task {
    Send(send::Send),
    Open(session::Open),
    Trigger(session::Trigger),
    Settle(finish::Settle),
    Finish(finish::Finish),
}

impl Task {
    fn run(&self) -> &RunId {
        match self {
            Task::Send(t) => &t.run,
            Task::Open(t) => &t.run,
            Task::Trigger(t) => &t.run,
            Task::Settle(t) => &t.run,
            Task::Finish(t) => &t.run,
        }
    }

    fn step(&mut self, cx: &mut Cx<'_>, event: Event) -> Step {
        match self {
            Task::Send(t) => t.step(cx, event),
            Task::Open(t) => t.step(cx, event),
            Task::Trigger(t) => t.step(cx, event),
            Task::Settle(t) => t.step(cx),
            Task::Finish(t) => t.step(cx, event),
        }
    }
}

/// What a task is stepped with.
#[derive(Debug)]
enum Event {
    /// Its turn (first, or again after the work it asked for).
    Start,
    Reply(Reply),
    Timer,
}

/// What a step leaves to do.
#[derive(Debug)]
enum Step {
    /// Waiting for the call or sleep it just asked for.
    Wait(Wait),
    Done,
    /// Do these first, in order; then step this task again.
    After(Vec<Task>),
    /// The run cannot go on: it fails with the reason.
    Fail {
        run: RunId,
        reason: String,
    },
}

/// What a step may read and do.
pub(crate) struct Cx<'a> {
    now: OffsetDateTime,
    settings: &'a Settings,
    state: &'a mut State,
    out: &'a mut Vec<Command>,
    next_id: &'a mut u64,
}

impl Cx<'_> {
    fn id(&mut self) -> u64 {
        *self.next_id += 1;
        *self.next_id
    }

    /// Records an event and folds it into the ledger at once: the driver
    /// confirms it before anything that follows happens.
    fn record(&mut self, run: &RunId, kind: EventKind) {
        let event = RunEvent::new(run.clone(), self.settings.sync.clone(), self.now, kind);
        self.state.ledger.apply(&event);
        self.out.push(Command::Record(event));
    }

    fn call(&mut self, request: Call) -> Step {
        let call = CallId(self.id());
        self.out.push(Command::Okta { call, request });
        Step::Wait(Wait::Okta(call))
    }

    fn sleep(&mut self, until: OffsetDateTime, why: Why) -> Step {
        let timer = TimerId(self.id());
        self.out.push(Command::Sleep { timer, until, why });
        Step::Wait(Wait::Timer(timer))
    }

    fn ack(&mut self, key: Key) {
        self.out.push(Command::Ack(key));
    }

    fn park(&mut self, key: Key, reason: &str, error: &str) {
        self.out.push(Command::Park { key, reason: reason.into(), error: error.into() });
    }

    fn publish(&mut self, finish: FinishRun) {
        self.out.push(Command::Publish(finish));
    }

    fn save_roster(&mut self, record: RosterRecord) {
        self.state.roster.apply(&record);
        self.out.push(Command::SaveRoster(record));
    }

    fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    /// Fails a run for good: recorded, and every delivery it holds acked
    /// (the source still holds every user; a new run sends them).
    fn fail_run(&mut self, run: &RunId, reason: String) {
        if !self.state.ledger.is_run_closed(run) {
            self.record(run, EventKind::RunFailed { reason });
        }
        if let Some(buffer) = self.state.runs.remove(run) {
            for key in buffer.keys() {
                self.ack(key);
            }
        }
    }
}

impl Uploader {
    pub fn new(settings: Settings) -> Self {
        Self { settings, active: None, next_id: 0 }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether it is the active consumer (and has rebuilt its state).
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Active, with nothing to do until the next delivery.
    pub fn is_idle(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.waiting.is_none() && a.tasks.is_empty() && a.inbox.is_empty())
    }

    /// The log as this uploader has folded it, while active.
    pub fn ledger(&self) -> Option<&Ledger> {
        self.active.as_ref().map(|a| &a.state.ledger)
    }

    /// The roster as this uploader knows it, while active.
    pub fn roster(&self) -> Option<&Roster> {
        self.active.as_ref().map(|a| &a.state.roster)
    }

    /// Takes one input at `now` (this host's clock) and returns what to do,
    /// in order.
    pub fn handle(&mut self, now: OffsetDateTime, input: Input) -> Vec<Command> {
        let mut out = Vec::new();
        let event = match input {
            Input::Lost => {
                self.active = None;
                return out;
            }
            Input::Gained { events, roster } => {
                self.become_active(now, &events, &roster, &mut out);
                None
            }
            _ if self.active.is_none() => return out,
            Input::Message { key, message } => {
                if let Some(active) = self.active.as_mut() {
                    active.inbox.push_back((key, message));
                }
                None
            }
            Input::Okta { call, reply } => self.resume(Wait::Okta(call)).then(|| {
                if let (Some(active), Some(date)) = (self.active.as_mut(), reply.okta_date) {
                    active.state.clock.observe(Some(date), now);
                }
                Event::Reply(reply)
            }),
            Input::Timer { timer } => self.resume(Wait::Timer(timer)).then_some(Event::Timer),
        };
        self.pump(now, event, &mut out);
        out
    }

    /// Whether `wait` is what the machine waits for; if so it waits no more.
    fn resume(&mut self, wait: Wait) -> bool {
        match self.active.as_mut() {
            Some(active) if active.waiting == Some(wait) => {
                active.waiting = None;
                true
            }
            _ => false,
        }
    }

    fn become_active(
        &mut self,
        now: OffsetDateTime,
        events: &[RunEvent],
        roster: &[RosterRecord],
        out: &mut Vec<Command>,
    ) {
        let sync = self.settings.sync.clone();
        let state = State {
            ledger: Ledger::replay(sync.clone(), events),
            roster: Roster::replay(sync, roster),
            clock: OktaClock::default(),
            runs: BTreeMap::new(),
            no_stray_session: false,
        };
        let mut active = Active { state, tasks: VecDeque::new(), waiting: None, inbox: VecDeque::new() };
        // A run its predecessor fully loaded but did not close is finished
        // now, whether or not its FinishRun is still in the queue.
        let runs = if self.settings.sabotage.no_finish_at_takeover {
            Vec::new()
        } else {
            active.state.ledger.loaded_unfinished_runs()
        };
        for run in runs {
            let options = active.state.ledger.run(&run).and_then(|r| r.options.clone()).unwrap_or_default();
            let buffer = active.state.buffer(&run, &options, &self.settings.limits);
            buffer.finishing = true;
            active.tasks.push_back(Task::Finish(finish::Finish::new(run)));
        }
        let _ = (now, out);
        self.active = Some(active);
    }

    /// Steps the work until it waits or there is none. `event` is for the
    /// front task, which was waiting for it.
    fn pump(&mut self, now: OffsetDateTime, mut event: Option<Event>, out: &mut Vec<Command>) {
        let Some(active) = self.active.as_mut() else { return };
        while active.waiting.is_none() {
            let mut cx =
                Cx { now, settings: &self.settings, state: &mut active.state, out, next_id: &mut self.next_id };
            let Some(mut task) = active.tasks.pop_front() else {
                match active.inbox.pop_front() {
                    Some((key, message)) => active.tasks.extend(batch::take(&mut cx, key, message)),
                    None => break,
                }
                continue;
            };
            let step = task.step(&mut cx, event.take().unwrap_or(Event::Start));
            match step {
                Step::Wait(wait) => {
                    active.tasks.push_front(task);
                    active.waiting = Some(wait);
                }
                Step::Done => {}
                Step::After(first) => {
                    active.tasks.push_front(task);
                    for t in first.into_iter().rev() {
                        active.tasks.push_front(t);
                    }
                }
                Step::Fail { run, reason } => {
                    active.tasks.retain(|t| t.run() != &run);
                    cx.fail_run(&run, reason);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
