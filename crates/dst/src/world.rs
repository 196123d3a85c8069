//! One schedule: the world, the steps the seed chooses, and the checks
//! after every step.
//!
//! Every worker is a pure machine or a pure function: the fetcher reads the
//! sandbox's Graph through the Graph client's own request builder and
//! decoder and answers with `FetchPage::answer`; the mapper is the worker's
//! `mapper::map`; the uploader is `xaas_core::upload` driven the way
//! `xaas-workers`' driver drives it (commands in order, one per step, a
//! record confirmed before the next command, the fence before every Okta
//! call). Okta is the sandbox's `okta::handle` on a virtual clock. Nothing
//! sleeps, nothing opens a socket; time moves only when the schedule says.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use xaas_core::history::SyncHistory;
use xaas_core::limits::Limits;
use xaas_core::mapping::{Filter, MapOutcome, Mapping, MappingRules, map_user};
use xaas_core::reconcile::Guards;
use xaas_core::upload::{self, Answer, Call, CallId, Command, Failure, Input, Key, Reply, SessionInfo, TimerId};
use xaas_core::{EventKind, FetchPage, Mode, Op, RunEvent, RunId, RunOptions, SyncName, UploaderMessage};
use xaas_graph::{GraphEndpoints, UsersQuery, decode_page};
use xaas_okta::{OktaApi, OktaError};
use xaas_sim::clock::Moment;
use xaas_sim::directory::{Directory, Removal};
use xaas_sim::okta::{OktaRequest, OktaState, handle};

use crate::broker::{ConsumerId, Msg, QueueName, SimBroker, Tag};
use crate::invariants::{self, RunWatch};
use crate::rng::Rng;
use crate::scenario::Scenario;

/// The base URLs the clients are built with; nothing listens there.
const GRAPH_URL: &str = "https://graph.sim.invalid";
const OKTA_URL: &str = "https://okta.sim.invalid";
const IDENTITY_SOURCE: &str = "0oasim0000000000001";
/// A newly active uploader waits this long before reading the log.
const GRACE: Duration = xaas_workers::uploader::TAKEOVER_GRACE;
/// An uploader learns its connection is gone within this long.
const DETECT: Duration = Duration::from_secs(2);
/// A request reaches Okta within this long of being sent.
const REACH: Duration = Duration::from_millis(500);
/// Steps before a schedule is declared stuck.
const MAX_STEPS: u64 = 200_000;
/// A run must end within this much virtual time.
pub const RUN_DEADLINE: Duration = Duration::from_secs(6 * 3600);

/// What went wrong in a schedule.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub invariant: &'static str,
    pub detail: String,
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}: invariant {} broken: {}", self.seed, self.invariant, self.detail)?;
        writeln!(f, "re-run this schedule alone with XAAS_SIM_SEED={} (last steps of its trace below)", self.seed)?;
        let from = self.trace.len().saturating_sub(60);
        for line in &self.trace[from..] {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What a schedule that kept every invariant did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub steps: u64,
    pub runs_completed: usize,
    pub runs_failed: usize,
    pub sessions: usize,
    pub requests: usize,
    /// The full trace, for reproducibility checks.
    pub trace: Vec<String>,
}

/// Runs the schedule of `scenario` to its end. A schedule that breaks an
/// invariant is run again with its trace kept (the same seed, the same
/// schedule), so that the common case formats nothing.
pub fn run(scenario: &Scenario) -> Result<Summary, Violation> {
    match play(scenario, false) {
        Ok(summary) => Ok(summary),
        Err(_) => play(scenario, true),
    }
}

/// Runs the schedule of `scenario`, keeping its trace.
pub fn run_traced(scenario: &Scenario) -> Result<Summary, Violation> {
    play(scenario, true)
}

fn play(scenario: &Scenario, tracing: bool) -> Result<Summary, Violation> {
    let mut world = World::new(scenario.clone());
    world.tracing = tracing;
    match world.play() {
        Ok(()) => Ok(world.summary()),
        Err((invariant, detail)) => {
            Err(Violation { seed: scenario.seed, invariant, detail, trace: std::mem::take(&mut world.trace) })
        }
    }
}

pub(crate) type Broken = (&'static str, String);

/// Adds a line to the trace, formatted only when the trace is kept: a
/// schedule runs without one, and only a failing seed is run again with it.
macro_rules! note {
    ($world:expr, $($arg:tt)*) => {
        if $world.tracing {
            let line = format!($($arg)*);
            $world.note_line(line);
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Fetcher,
    Mapper,
}

/// A step of a stateless stage, carried out one per schedule step.
#[derive(Debug, Clone)]
enum Effect {
    Publish(Msg),
    Record(RunEvent),
    Ack,
    RetryLater(Duration),
    Park,
}

/// A fetcher or a mapper.
struct Stage {
    name: String,
    role: Role,
    consumer: Option<ConsumerId>,
    down_until: Option<OffsetDateTime>,
    /// The delivery being handled, and what is left to do for it.
    current: Option<(Tag, Msg, VecDeque<Effect>)>,
    attempts: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq)]
enum UState {
    Down {
        until: OffsetDateTime,
    },
    Standby,
    /// Active on the broker's side; reads the log once the grace is over.
    Grace {
        until: OffsetDateTime,
    },
    Active,
}

#[derive(Debug, Clone)]
enum Flight {
    /// Sent; Okta has not seen it yet.
    Sent { by: OffsetDateTime },
    /// Okta acted; its answer is on the way.
    Answered(Reply),
}

/// An uploader process: the machine and what its driver holds.
struct UploaderNode {
    name: String,
    machine: upload::Uploader,
    state: UState,
    consumer: Option<ConsumerId>,
    commands: VecDeque<Command>,
    call: Option<(CallId, Call, Flight)>,
    timer: Option<(TimerId, OffsetDateTime)>,
    keys: BTreeMap<Key, Tag>,
    /// Deliveries received during the grace.
    early: Vec<(Tag, Msg)>,
    next_key: u64,
    /// This host's clock minus Okta's.
    skew: time::Duration,
    /// The broker closed its connection; the uploader learns at this time.
    lost: Option<OffsetDateTime>,
}

impl UploaderNode {
    fn local(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + self.skew
    }
}

/// One enabled step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    StartRun,
    StageTake(usize),
    StageStep(usize),
    UploaderTake(usize),
    UploaderCommand(usize),
    OktaArrives(usize),
    OktaAnswers(usize),
    TimerFires(usize),
    GraceEnds(usize),
    LearnsLost(usize),
    Crash(Target),
    LoseConnection(usize),
    ChangeDirectory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Stage(usize),
    Uploader(usize),
}

pub(crate) struct World {
    sc: Scenario,
    rng: Rng,
    origin: Moment,
    elapsed: Duration,
    broker: SimBroker,
    dir: Directory,
    okta: OktaState,
    okta_api: OktaApi,
    graph: GraphEndpoints,
    rules: MappingRules,
    sync: SyncName,
    stages: Vec<Stage>,
    uploaders: Vec<UploaderNode>,
    runs_left: VecDeque<Mode>,
    watches: Vec<RunWatch>,
    disruptions: u32,
    next_user: u64,
    step: u64,
    trace: Vec<String>,
    /// Events already checked.
    seen_events: usize,
    /// Okta was called since its state was last checked.
    okta_changed: bool,
    /// Keep a trace of every step (see `note!`).
    tracing: bool,
}

impl World {
    fn new(sc: Scenario) -> Self {
        let mut rng = Rng::new(sc.seed);
        let origin = Moment::origin(OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid time"));
        let mut okta_cfg = xaas_sim::SimConfig::defaults();
        okta_cfg.cooldown = sc.limits.cooldown;
        okta_cfg.import_duration = Duration::from_secs(rng.between(1, 40));
        okta_cfg.identity_source_id = IDENTITY_SOURCE.into();
        okta_cfg.okta_limits = xaas_sim::okta::bulk::OktaLimits {
            profiles_per_request: sc.limits.profiles_per_request,
            bytes_per_request: sc.limits.bytes_per_request,
            requests_per_session: sc.limits.requests_per_session as usize,
        };
        let mut okta = OktaState::new(&okta_cfg);
        okta.ids = xaas_sim::okta::ids::IdSource::seeded(sc.seed);
        let mapping = Mapping::original_workflow("id").expect("the original mapping is valid");
        let filter =
            Filter::new(BTreeMap::from([("department".to_string(), json!("Okta Workflows"))])).expect("a valid filter");
        let sync = SyncName::parse("sim").expect("a valid name");
        let mut world = World {
            okta_api: OktaApi::new(url::Url::parse(OKTA_URL).expect("a URL"), IDENTITY_SOURCE).expect("valid"),
            graph: GraphEndpoints::new(&url::Url::parse(GRAPH_URL).expect("a URL")).expect("valid"),
            rules: MappingRules { mapping, filter },
            broker: SimBroker::default(),
            dir: Directory::default(),
            runs_left: sc.runs.iter().copied().collect(),
            stages: Vec::new(),
            uploaders: Vec::new(),
            watches: Vec::new(),
            disruptions: 0,
            next_user: 0,
            step: 0,
            trace: Vec::new(),
            seen_events: 0,
            okta_changed: false,
            tracing: false,
            okta,
            origin,
            elapsed: Duration::ZERO,
            sync,
            rng,
            sc,
        };
        for _ in 0..world.sc.users {
            world.create_user();
        }
        for i in 0..world.sc.fetchers {
            world.add_stage(format!("fetcher-{i}"), Role::Fetcher);
        }
        for i in 0..world.sc.mappers {
            world.add_stage(format!("mapper-{i}"), Role::Mapper);
        }
        for i in 0..world.sc.uploaders {
            let skew = world.rng.between(0, 2 * world.sc.faults.max_skew.as_secs()) as i64
                - world.sc.faults.max_skew.as_secs() as i64;
            let mut node = UploaderNode {
                name: format!("uploader-{i}"),
                machine: upload::Uploader::new(world.settings()),
                state: UState::Standby,
                consumer: None,
                commands: VecDeque::new(),
                call: None,
                timer: None,
                keys: BTreeMap::new(),
                early: Vec::new(),
                next_key: 0,
                skew: time::Duration::seconds(skew),
                lost: None,
            };
            node.consumer = Some(world.broker.subscribe(QueueName::Batches, 50));
            world.uploaders.push(node);
        }
        world
    }

    fn settings(&self) -> upload::Settings {
        upload::Settings {
            sync: self.sync.clone(),
            limits: self.sc.limits,
            guards: Guards { max_deactivations: None, max_deactivations_percent: Some(50.0) },
            retry: self.sc.retry,
            sabotage: self.sc.sabotage,
        }
    }

    fn limits(&self) -> &Limits {
        &self.sc.limits
    }

    fn add_stage(&mut self, name: String, role: Role) {
        let queue = if role == Role::Fetcher { QueueName::Fetch } else { QueueName::Pages };
        let consumer = Some(self.broker.subscribe(queue, 1));
        self.stages.push(Stage { name, role, consumer, down_until: None, current: None, attempts: BTreeMap::new() });
    }

    pub(crate) fn now(&self) -> OffsetDateTime {
        self.moment().wall
    }

    fn moment(&self) -> Moment {
        self.origin.plus(self.elapsed)
    }

    fn note_line(&mut self, line: String) {
        let at = self.elapsed.as_secs_f64();
        self.trace.push(format!("{:>6} {at:>9.3}s {line}", self.step));
    }

    fn summary(&mut self) -> Summary {
        let records = self.okta.sessions.records();
        Summary {
            steps: self.step,
            runs_completed: self.watches.iter().filter(|w| w.completed == Some(true)).count(),
            runs_failed: self.watches.iter().filter(|w| w.completed == Some(false)).count(),
            sessions: records.len(),
            requests: records.iter().map(|s| s.requests.len()).sum(),
            trace: std::mem::take(&mut self.trace),
        }
    }

    // ---------------------------------------------------------------- the directory

    fn create_user(&mut self) {
        self.next_user += 1;
        let n = self.next_user;
        let id = format!("{:08x}-0000-4000-8000-{:012x}", n * 2_654_435_761 % 0xffff_ffff, n);
        let department = if self.rng.chance(0.75) { "Okta Workflows" } else { "Sales" };
        let mut user = json!({
            "id": id,
            "displayName": format!("User {n}"),
            "givenName": format!("Given{n}"),
            "surname": format!("Sur{n}"),
            "userPrincipalName": format!("user{n}@sim.example"),
            "mail": format!("user{n}@sim.example"),
            "department": department,
            "city": "Cork",
            "accountEnabled": !self.rng.chance(0.08),
        });
        if self.rng.chance(0.05) {
            // A record Okta would refuse: the mapper rejects it alone.
            user.as_object_mut().map(|u| u.remove("mail"));
        }
        let now = self.now();
        let _ = self.dir.insert_at(user, now);
        let id =
            self.dir.users().last().and_then(|u| u.get("id")).and_then(Value::as_str).unwrap_or_default().to_string();
        self.touch(&id);
    }

    /// Notes that `id` changed now, for the runs in flight.
    fn touch(&mut self, id: &str) {
        for w in self.watches.iter_mut().filter(|w| w.completed.is_none()) {
            w.changed.insert(id.to_string());
        }
    }

    fn change_directory(&mut self) {
        let ids: Vec<String> =
            self.dir.users().filter_map(|u| u.get("id").and_then(Value::as_str)).map(String::from).collect();
        if ids.is_empty() || self.rng.chance(0.25) {
            self.create_user();
            note!(self, "directory: a user is created");
            return;
        }
        let id = self.rng.pick(&ids).clone();
        let now = self.now();
        let what = match self.rng.below(4) {
            0 => {
                let _ = self.dir.remove_at(&id, Removal::Deleted, now);
                "deleted"
            }
            1 => {
                let enabled =
                    self.dir.get(&id).and_then(|u| u.get("accountEnabled")).and_then(Value::as_bool).unwrap_or(true);
                let _ = self.dir.set_enabled(&id, !enabled);
                if enabled { "disabled" } else { "enabled" }
            }
            2 => {
                let _ = self
                    .dir
                    .update(&id, json!({"department": if self.rng.chance(0.5) { "Okta Workflows" } else { "Sales" }}));
                "moved"
            }
            _ => {
                let _ = self.dir.update(&id, json!({"city": format!("City{}", self.rng.below(1000))}));
                "updated"
            }
        };
        self.touch(&id);
        note!(self, "directory: {id} {what}");
    }

    // ---------------------------------------------------------------- the loop

    fn play(&mut self) -> Result<(), Broken> {
        loop {
            self.step += 1;
            if self.step > MAX_STEPS {
                let actions = self.enabled();
                return Err((
                    "6: every run ends",
                    format!("the schedule did not settle within {MAX_STEPS} steps; still enabled: {actions:?}"),
                ));
            }
            self.broker.release(self.now());
            self.restarts();
            let moment = self.moment();
            self.okta.advance(moment);
            if self.okta_changed {
                self.okta_changed = false;
                invariants::check_okta(&self.okta, self.limits())?;
            }
            // A request reaches Okta within `REACH` of being sent.
            if let Some(i) = self
                .uploaders
                .iter()
                .position(|u| matches!(u.call, Some((_, _, Flight::Sent { by })) if by <= self.now()))
            {
                self.okta_arrives(i);
                continue;
            }
            let actions = self.enabled();
            if actions.is_empty() {
                match self.next_deadline() {
                    Some(at) if at > self.now() => {
                        self.elapsed += Duration::try_from(at - self.now()).unwrap_or_default();
                        continue;
                    }
                    Some(_) => continue,
                    None => break,
                }
            }
            let action = *self.rng.pick(&actions);
            self.act(action)?;
            self.check_events()?;
            // Time passes a little between most steps, but no request takes
            // longer than `REACH` to reach Okta.
            if self.rng.chance(0.5) {
                let mut later = self.elapsed + Duration::from_millis(self.rng.between(1, 400));
                for u in &self.uploaders {
                    if let Some((_, _, Flight::Sent { by })) = u.call {
                        let cap = Duration::try_from(by - self.origin.wall).unwrap_or_default();
                        later = later.min(cap.max(self.elapsed));
                    }
                }
                self.elapsed = later;
            }
            for w in self.watches.iter().filter(|w| w.completed.is_none()) {
                if self.now() - w.started > RUN_DEADLINE {
                    return Err(("6: every run ends", format!("run {} still open after {RUN_DEADLINE:?}", w.run)));
                }
            }
        }
        if let Some(w) = self.watches.iter().find(|w| w.completed.is_none()) {
            return Err(("6: every run ends", format!("run {} never ended; the world went quiet", w.run)));
        }
        if !self.runs_left.is_empty() {
            return Err(("6: every run ends", "runs were left unstarted".into()));
        }
        invariants::check_okta(&self.okta, self.limits())?;
        invariants::check_end(&self.okta, &self.watches, &self.dir, &self.rules)?;
        Ok(())
    }

    fn enabled(&mut self) -> Vec<Action> {
        let now = self.now();
        let mut out = Vec::new();
        let in_flight = self.watches.iter().any(|w| w.completed.is_none());
        if !in_flight && !self.runs_left.is_empty() {
            out.push(Action::StartRun);
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.down_until.is_some() {
                continue;
            }
            if s.current.is_some() {
                out.push(Action::StageStep(i));
            } else if s.consumer.is_some_and(|c| self.broker.can_deliver(c)) {
                out.push(Action::StageTake(i));
            }
        }
        for (i, u) in self.uploaders.iter().enumerate() {
            if matches!(u.state, UState::Down { .. }) {
                continue;
            }
            if u.consumer.is_some_and(|c| self.broker.can_deliver(c)) {
                out.push(Action::UploaderTake(i));
            }
            if let UState::Grace { until } = u.state
                && now >= until
            {
                out.push(Action::GraceEnds(i));
            }
            if u.lost.is_some_and(|at| now >= at) {
                out.push(Action::LearnsLost(i));
            }
            let records_blocked = u.lost.is_some() && !self.sc.harness.no_fence;
            let next_is_record =
                matches!(u.commands.front(), Some(Command::Record(_) | Command::SaveRoster(_) | Command::Publish(_)));
            let blocked = records_blocked && next_is_record;
            if !u.commands.is_empty() && !blocked {
                out.push(Action::UploaderCommand(i));
            }
            match &u.call {
                Some((_, _, Flight::Sent { .. })) => out.push(Action::OktaArrives(i)),
                Some((_, _, Flight::Answered(_))) => out.push(Action::OktaAnswers(i)),
                None => {}
            }
            if u.commands.is_empty()
                && let Some((_, until)) = u.timer
                && u.local(now) >= until
            {
                out.push(Action::TimerFires(i));
            }
        }
        if self.disruptions < self.sc.faults.max_disruptions {
            if self.rng.chance(self.sc.faults.crash) {
                let n = self.stages.len() + self.uploaders.len();
                let pick = self.rng.below(n);
                let target = if pick < self.stages.len() {
                    Target::Stage(pick)
                } else {
                    Target::Uploader(pick - self.stages.len())
                };
                out.push(Action::Crash(target));
            }
            if self.rng.chance(self.sc.faults.connection_loss)
                && let Some(i) = self.active_uploader()
                && self.uploaders[i].lost.is_none()
            {
                out.push(Action::LoseConnection(i));
            }
        }
        if in_flight && self.rng.chance(self.sc.faults.change) {
            out.push(Action::ChangeDirectory);
        }
        out
    }

    fn active_uploader(&self) -> Option<usize> {
        let active = self.broker.active_uploader()?;
        self.uploaders.iter().position(|u| u.consumer == Some(active))
    }

    /// The next time something is due when nothing can happen before it.
    fn next_deadline(&self) -> Option<OffsetDateTime> {
        let mut at: Vec<OffsetDateTime> = Vec::new();
        at.extend(self.broker.next_release());
        at.extend(self.stages.iter().filter_map(|s| s.down_until));
        for u in &self.uploaders {
            match u.state {
                UState::Down { until } | UState::Grace { until } => at.push(until),
                _ => {}
            }
            at.extend(u.lost);
            if let Some((_, _, Flight::Sent { by })) = u.call {
                at.push(by);
            }
            if let Some((_, until)) = u.timer {
                at.push(until - u.skew);
            }
        }
        if let Some(due) = self.okta.sessions.next_deadline() {
            let due = self.origin.wall + due;
            if due > self.now() {
                at.push(due);
            }
        }
        at.into_iter().min()
    }

    fn act(&mut self, action: Action) -> Result<(), Broken> {
        match action {
            Action::StartRun => self.start_run(),
            Action::StageTake(i) => self.stage_take(i),
            Action::StageStep(i) => self.stage_step(i),
            Action::UploaderTake(i) => self.uploader_take(i),
            Action::UploaderCommand(i) => self.uploader_command(i),
            Action::OktaArrives(i) => self.okta_arrives(i),
            Action::OktaAnswers(i) => {
                let Some((call, request, Flight::Answered(reply))) = self.uploaders[i].call.take() else {
                    return Ok(());
                };
                note!(
                    self,
                    "{}: Okta's answer to {} arrives: {:?}",
                    self.uploaders[i].name,
                    request.name(),
                    short(&reply)
                );
                self.feed(i, Input::Okta { call, reply });
            }
            Action::TimerFires(i) => {
                if let Some((timer, _)) = self.uploaders[i].timer.take() {
                    note!(self, "{}: timer", self.uploaders[i].name);
                    self.feed(i, Input::Timer { timer });
                }
            }
            Action::GraceEnds(i) => self.grace_ends(i),
            Action::LearnsLost(i) => self.learns_lost(i),
            Action::Crash(target) => self.crash(target),
            Action::LoseConnection(i) => self.lose_connection(i),
            Action::ChangeDirectory => self.change_directory(),
        }
        Ok(())
    }

    /// Workers whose restart time has come stand up again.
    fn restarts(&mut self) {
        let now = self.now();
        for i in 0..self.stages.len() {
            if self.stages[i].down_until.is_some_and(|t| now >= t) {
                let queue = if self.stages[i].role == Role::Fetcher { QueueName::Fetch } else { QueueName::Pages };
                self.stages[i].down_until = None;
                self.stages[i].consumer = Some(self.broker.subscribe(queue, 1));
                note!(self, "{} restarts", self.stages[i].name);
            }
        }
        for i in 0..self.uploaders.len() {
            if let UState::Down { until } = self.uploaders[i].state
                && now >= until
            {
                let settings = self.settings();
                let u = &mut self.uploaders[i];
                u.machine = upload::Uploader::new(settings);
                u.state = UState::Standby;
                u.consumer = Some(self.broker.subscribe(QueueName::Batches, 50));
                let name = u.name.clone();
                note!(self, "{name} restarts, standing by");
            }
        }
    }

    // ---------------------------------------------------------------- runs

    fn start_run(&mut self) {
        let Some(mode) = self.runs_left.pop_front() else { return };
        let run = RunId::parse(format!("run-{}", self.watches.len() + 1)).expect("a valid run id");
        let mut options = RunOptions { mode, ..RunOptions::default() };
        let mut link = None;
        if mode == Mode::Delta {
            link = SyncHistory::fold(&self.sync, &self.broker.events).last_delta_link().map(String::from);
            options.full_state = link.is_none();
        }
        let now = self.now();
        self.watches.push(RunWatch::start(run.clone(), options.clone(), now, &self.dir, &self.rules, &self.okta));
        let event =
            RunEvent::new(run.clone(), self.sync.clone(), now, EventKind::RunStarted { options: options.clone() });
        self.broker.events.push(event);
        let first = FetchPage {
            v: xaas_core::MESSAGE_VERSION,
            run_id: run.clone(),
            sync: self.sync.clone(),
            options,
            seq: 0,
            link,
            parent: None,
        };
        self.broker.publish(Msg::Fetch(first), 0.0, &mut self.rng);
        note!(self, "run {run} starts ({mode})");
    }

    /// Checks every event appended since the last step.
    fn check_events(&mut self) -> Result<(), Broken> {
        while self.seen_events < self.broker.events.len() {
            let event = self.broker.events[self.seen_events].clone();
            self.seen_events += 1;
            let ended = match &event.kind {
                EventKind::RunCompleted { .. } => Some(true),
                EventKind::RunFailed { .. } => Some(false),
                _ => None,
            };
            let Some(completed) = ended else { continue };
            let now = self.now();
            let Some(w) = self.watches.iter_mut().find(|w| w.run == event.run_id) else { continue };
            if w.completed.is_some() {
                continue;
            }
            w.completed = Some(completed);
            w.ended = Some(now);
            if let EventKind::RunFailed { reason } = &event.kind {
                w.failure = Some(reason.clone());
                if reason.trim().is_empty() {
                    return Err(("6: every run ends", format!("run {} failed without a reason", w.run)));
                }
            }
            let line = format!(
                "run {} ends: {}",
                event.run_id,
                if completed {
                    "completed".to_string()
                } else {
                    format!("failed: {}", w.failure.clone().unwrap_or_default())
                }
            );
            let w = w.clone();
            if self.tracing {
                self.note_line(line);
            }
            invariants::check_run(&w, &self.broker.events, &self.okta, &self.dir, &self.rules)?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- fetchers and mappers

    fn stage_take(&mut self, i: usize) {
        let Some(consumer) = self.stages[i].consumer else { return };
        let Some((tag, msg)) = self.broker.deliver(consumer) else { return };
        note!(self, "{} takes {}", self.stages[i].name, msg.label());
        let effects = match (&msg, self.stages[i].role) {
            (Msg::Fetch(f), Role::Fetcher) => self.fetch(i, f),
            (Msg::Page(p), Role::Mapper) => self.map(p),
            _ => VecDeque::from([Effect::Park]),
        };
        self.stages[i].current = Some((tag, msg, effects));
    }

    /// What the fetcher does with a `FetchPage` (`xaas-workers`' fetcher).
    fn fetch(&mut self, i: usize, msg: &FetchPage) -> VecDeque<Effect> {
        // What the product asks for by default: id, accountEnabled and every
        // field the mapping and the filter read.
        let mut select: Vec<String> = vec!["id".into(), "accountEnabled".into()];
        for field in self.rules.graph_fields() {
            if !select.iter().any(|s| s == field) {
                select.push(field.into());
            }
        }
        let query = UsersQuery { page_size: self.sc.page_size, select, filter: None };
        let url = match (&msg.link, msg.options.mode) {
            (Some(link), _) => link.clone(),
            (None, Mode::Delta) => self.graph.delta_url(&query).to_string(),
            (None, _) => self.graph.users_url(&query).to_string(),
        };
        let id = msg_id(msg);
        if self.rng.chance(self.sc.faults.graph_error) {
            return self.stage_retry(i, id, msg, "Graph answered 503");
        }
        let delta = msg.options.mode == Mode::Delta;
        let page =
            self.graph.page_request(&url, delta.then_some(self.sc.page_size)).map_err(|e| e.to_string()).and_then(
                |req| {
                    let mut sim = xaas_sim::graph::GraphRequest::get(req.url.as_str()).map_err(|e| e.to_string())?;
                    for (name, value) in &req.headers {
                        sim = sim.header(name.as_str(), value.to_str().unwrap_or_default());
                    }
                    let answer = xaas_sim::graph::respond(&self.dir, &sim, self.now());
                    decode_page(req.url.path(), answer.status, &answer.headers, &answer.body).map_err(|e| e.to_string())
                },
            );
        let page = match page {
            Ok(page) => page,
            Err(e) if e.contains("syncStateNotFound") || e.contains("expired") => {
                let mut options = msg.options.clone();
                options.full_state = true;
                let restart = FetchPage { options, link: None, ..msg.clone() };
                let resync = EventKind::DeltaResync { reason: e };
                return VecDeque::from([
                    Effect::Record(self.event(&msg.run_id, resync)),
                    Effect::Publish(Msg::Fetch(restart)),
                    Effect::Ack,
                ]);
            }
            Err(e) => return self.stage_fail(&msg.run_id, format!("fetcher: {e}")),
        };
        let (users, removed) = (page.users.len() as u32, page.removed.len() as u32);
        let (page, next) = msg.answer(page.users, page.removed, page.next_link, page.delta_link);
        let fetched = EventKind::PageFetched { seq: msg.seq, users, removed, last: page.last };
        let mut effects = VecDeque::from([Effect::Publish(Msg::Page(page))]);
        effects.extend(next.map(|n| Effect::Publish(Msg::Fetch(n))));
        effects.push_back(Effect::Record(self.event(&msg.run_id, fetched)));
        effects.push_back(Effect::Ack);
        effects
    }

    /// A failure that may pass: retried after a delay, parked (and the run
    /// failed) after the broker's attempts, as `stage::retry` does.
    fn stage_retry(&mut self, i: usize, id: String, msg: &FetchPage, error: &str) -> VecDeque<Effect> {
        let attempt = {
            let a = self.stages[i].attempts.entry(id).or_insert(0);
            *a += 1;
            *a
        };
        let retrying = EventKind::Retrying { stage: "fetcher".into(), attempt, reason: error.into() };
        let mut effects = VecDeque::from([Effect::Record(self.event(&msg.run_id, retrying))]);
        if attempt >= 8 {
            let reason = format!("fetcher gave up after {attempt} attempts: {error}");
            effects.push_back(Effect::Record(self.event(&msg.run_id, EventKind::RunFailed { reason })));
            effects.push_back(Effect::Park);
        } else {
            effects.push_back(Effect::RetryLater(Duration::from_secs(1 << attempt.min(5))));
        }
        effects
    }

    fn stage_fail(&mut self, run: &RunId, reason: String) -> VecDeque<Effect> {
        VecDeque::from([Effect::Record(self.event(run, EventKind::RunFailed { reason })), Effect::Park])
    }

    /// What a mapper does with a `Page` (`xaas-workers`' mapper).
    fn map(&mut self, page: &xaas_core::Page) -> VecDeque<Effect> {
        let mapped = xaas_workers::mapper::map(&self.rules, None, self.limits(), page);
        let mut effects: VecDeque<Effect> =
            mapped.batches.into_iter().map(|b| Effect::Publish(Msg::Upload(UploaderMessage::Batch(b)))).collect();
        let kind = EventKind::PageMapped {
            seq: page.seq,
            parts: effects.len() as u32,
            profiles: mapped.profiles,
            filtered_out: mapped.filtered_out,
            rejected: mapped.rejected,
        };
        effects.push_back(Effect::Record(self.event(&page.run_id, kind)));
        effects.push_back(Effect::Ack);
        effects
    }

    fn event(&self, run: &RunId, kind: EventKind) -> RunEvent {
        RunEvent::new(run.clone(), self.sync.clone(), self.now(), kind)
    }

    fn stage_step(&mut self, i: usize) {
        let Some((tag, msg, mut effects)) = self.stages[i].current.take() else { return };
        let Some(consumer) = self.stages[i].consumer else { return };
        let Some(effect) = effects.pop_front() else { return };
        let done = match effect {
            Effect::Publish(m) => {
                note!(self, "{} publishes {}", self.stages[i].name, m.label());
                let dup = self.sc.faults.duplicate;
                self.broker.publish(m, dup, &mut self.rng);
                false
            }
            Effect::Record(e) => {
                self.broker.events.push(e);
                false
            }
            Effect::Ack => {
                self.broker.ack(consumer, tag);
                true
            }
            Effect::RetryLater(after) => {
                let at = self.now() + after;
                self.broker.retry_later(consumer, tag, msg.clone(), at);
                true
            }
            Effect::Park => {
                note!(self, "{} parks {}", self.stages[i].name, msg.label());
                self.broker.park(consumer, tag, msg.clone());
                true
            }
        };
        if !done {
            self.stages[i].current = Some((tag, msg, effects));
        }
    }

    // ---------------------------------------------------------------- uploaders

    fn uploader_take(&mut self, i: usize) {
        let Some(consumer) = self.uploaders[i].consumer else { return };
        let Some((tag, msg)) = self.broker.deliver(consumer) else { return };
        let name = self.uploaders[i].name.clone();
        note!(self, "{name} receives {}", msg.label());
        let now = self.now();
        match self.uploaders[i].state {
            UState::Standby => {
                self.uploaders[i].state = UState::Grace { until: now + GRACE };
                self.uploaders[i].early.push((tag, msg));
            }
            UState::Grace { .. } => self.uploaders[i].early.push((tag, msg)),
            UState::Active => self.give(i, tag, msg),
            UState::Down { .. } => {}
        }
    }

    fn give(&mut self, i: usize, tag: Tag, msg: Msg) {
        let Msg::Upload(message) = msg else { return };
        let u = &mut self.uploaders[i];
        u.next_key += 1;
        let key = Key(u.next_key);
        u.keys.insert(key, tag);
        self.feed(i, Input::Message { key, message });
    }

    fn grace_ends(&mut self, i: usize) {
        let name = self.uploaders[i].name.clone();
        note!(
            self,
            "{name} is active: reads {} events and {} roster records",
            self.broker.events.len(),
            self.broker.roster.len()
        );
        self.uploaders[i].state = UState::Active;
        let input = Input::Gained { events: self.broker.events.clone(), roster: self.broker.roster.clone() };
        self.feed(i, input);
        for (tag, msg) in std::mem::take(&mut self.uploaders[i].early) {
            self.give(i, tag, msg);
        }
    }

    /// Hands an input to the machine; its commands are carried out one per step.
    fn feed(&mut self, i: usize, input: Input) {
        let local = self.uploaders[i].local(self.now());
        let commands = self.uploaders[i].machine.handle(local, input);
        self.uploaders[i].commands.extend(commands);
    }

    fn uploader_command(&mut self, i: usize) {
        let Some(command) = self.uploaders[i].commands.pop_front() else { return };
        let name = self.uploaders[i].name.clone();
        let consumer = self.uploaders[i].consumer;
        match command {
            Command::Record(event) => {
                note!(self, "{name} records {}", event_label(&event));
                self.broker.events.push(event);
            }
            Command::SaveRoster(record) => self.broker.roster.push(record),
            Command::Publish(finish) => {
                note!(self, "{name} publishes FinishRun {}", finish.run_id);
                self.broker.publish(Msg::Upload(UploaderMessage::FinishRun(finish)), 0.0, &mut self.rng);
            }
            Command::Ack(key) => {
                if let (Some(tag), Some(consumer)) = (self.uploaders[i].keys.remove(&key), consumer) {
                    self.broker.ack(consumer, tag);
                }
            }
            Command::Park { key, reason, .. } => {
                note!(self, "{name} parks a message: {reason}");
                if let (Some(tag), Some(consumer)) = (self.uploaders[i].keys.remove(&key), consumer) {
                    self.broker.ack(consumer, tag);
                }
            }
            Command::Okta { call, request } => {
                // The driver's fence: no call once it knows it lost its consumer.
                if self.uploaders[i].lost.is_some_and(|at| self.now() >= at) && !self.sc.harness.no_fence {
                    self.learns_lost(i);
                    return;
                }
                note!(self, "{name} calls {}", call_label(&request));
                let by = self.now() + REACH;
                self.uploaders[i].call = Some((call, request, Flight::Sent { by }));
            }
            Command::Sleep { timer, until, why } => {
                note!(
                    self,
                    "{name} sleeps ({why:?}) until {:.3}s",
                    (until - self.uploaders[i].skew - self.origin.wall).as_seconds_f64()
                );
                self.uploaders[i].timer = Some((timer, until));
            }
        }
    }

    /// Okta receives the call in flight and acts on it.
    fn okta_arrives(&mut self, i: usize) {
        let Some((call, request, Flight::Sent { .. })) = self.uploaders[i].call.take() else { return };
        let name = self.uploaders[i].name.clone();
        let reply = if self.rng.chance(self.sc.faults.okta_error) {
            note!(self, "{name}: Okta answers {} with 503 before acting", request.name());
            Reply::failed(
                Failure::Transient { reason: "Okta failed with 503".into(), retry_after: None },
                Some(self.now()),
            )
        } else {
            let answer = self.okta_call(&request);
            if self.rng.chance(self.sc.faults.okta_lost_reply) {
                note!(self, "{name}: Okta acts on {} and its answer is lost", request.name());
                Reply::failed(
                    Failure::Transient { reason: "connection reset after sending".into(), retry_after: None },
                    None,
                )
            } else {
                answer
            }
        };
        self.uploaders[i].call = Some((call, request, Flight::Answered(reply)));
    }

    /// One call through the Okta client's request builder, the sandbox's
    /// Okta and the client's decoder.
    fn okta_call(&mut self, call: &Call) -> Reply {
        let api = &self.okta_api;
        let req = match call {
            Call::CreateSession => api.create_session(),
            Call::ListSessions => api.list_sessions(),
            Call::GetSession { session } => api.get_session(session),
            Call::CancelSession { session } => api.delete_session(session),
            Call::Bulk { session, op, profiles } => api.bulk(session, *op, profiles),
            Call::StartImport { session } => api.start_import(session),
        };
        let method = Method::from_bytes(req.method.as_str().as_bytes()).unwrap_or(Method::GET);
        let sim_req = OktaRequest::new(method, req.url.as_str(), req.body.clone().unwrap_or_default());
        let moment = self.moment();
        let resp = handle(&mut self.okta, &sim_req, moment);
        self.okta_changed = true;
        let status = StatusCode::from_u16(resp.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let date = xaas_okta::okta_date(&resp.headers);
        let info = |s: xaas_okta::Session| SessionInfo { id: s.id, status: s.status };
        let result: Result<Answer, OktaError> = match call {
            Call::CreateSession => {
                api.decode_create(status, &resp.headers, &resp.body).map(|s| Answer::Session(info(s)))
            }
            Call::ListSessions => api
                .decode_list(status, &resp.headers, &resp.body)
                .map(|l| Answer::Sessions(l.into_iter().map(info).collect())),
            Call::GetSession { .. } => {
                api.decode_get(status, &resp.headers, &resp.body).map(|s| Answer::Session(info(s)))
            }
            Call::CancelSession { .. } => {
                api.decode_delete(status, &resp.headers, &resp.body).map(|()| Answer::Accepted)
            }
            Call::Bulk { op, .. } => api.decode_bulk(*op, status, &resp.headers, &resp.body).map(|()| Answer::Accepted),
            Call::StartImport { session } => {
                api.decode_start_import(session, status, &resp.headers, &resp.body).map(|s| Answer::Session(info(s)))
            }
        };
        Reply { result: result.map_err(xaas_workers::uploader::failure), okta_date: date }
    }

    fn learns_lost(&mut self, i: usize) {
        if self.sc.harness.no_fence {
            // Never told: its connection recovers and it goes on.
            self.uploaders[i].lost = None;
            return;
        }
        let name = self.uploaders[i].name.clone();
        note!(self, "{name} learns its connection is gone: stops acting, stands by again");
        let u = &mut self.uploaders[i];
        u.machine.handle(u.local(self.origin.wall + self.elapsed), Input::Lost);
        u.commands.clear();
        u.call = None;
        u.timer = None;
        u.keys.clear();
        u.early.clear();
        u.lost = None;
        u.state = UState::Standby;
        u.consumer = Some(self.broker.subscribe(QueueName::Batches, 50));
    }

    fn lose_connection(&mut self, i: usize) {
        self.disruptions += 1;
        let detect = self.now() + Duration::from_millis(self.rng.between(0, DETECT.as_millis() as u64));
        let name = self.uploaders[i].name.clone();
        note!(self, "the broker closes {name}'s connection; its deliveries go back");
        if let Some(consumer) = self.uploaders[i].consumer.take() {
            self.broker.unsubscribe(consumer, &mut self.rng);
        }
        if self.sc.harness.no_fence {
            // It reconnects and subscribes again, still thinking it is active.
            self.uploaders[i].consumer = Some(self.broker.subscribe(QueueName::Batches, 50));
        }
        self.uploaders[i].lost = Some(detect);
    }

    fn crash(&mut self, target: Target) {
        self.disruptions += 1;
        let now = self.now();
        let restart = now + Duration::from_millis(self.rng.between(100, 5_000));
        match target {
            Target::Stage(i) => {
                if self.stages[i].down_until.is_some() {
                    return;
                }
                note!(self, "{} crashes", self.stages[i].name);
                if let Some(c) = self.stages[i].consumer.take() {
                    self.broker.unsubscribe(c, &mut self.rng);
                }
                self.stages[i].current = None;
                self.stages[i].down_until = Some(restart);
            }
            Target::Uploader(i) => {
                if matches!(self.uploaders[i].state, UState::Down { .. }) {
                    return;
                }
                note!(self, "{} crashes", self.uploaders[i].name);
                if let Some(c) = self.uploaders[i].consumer.take() {
                    self.broker.unsubscribe(c, &mut self.rng);
                }
                let u = &mut self.uploaders[i];
                u.commands.clear();
                u.call = None;
                u.timer = None;
                u.keys.clear();
                u.early.clear();
                u.lost = None;
                u.state = UState::Down { until: restart };
            }
        }
    }
}

fn msg_id(f: &FetchPage) -> String {
    format!("{}:{}", f.run_id, f.seq)
}

fn short(reply: &Reply) -> String {
    match &reply.result {
        Ok(Answer::Session(s)) => format!("session {} {}", s.id, s.status.as_str()),
        Ok(Answer::Sessions(l)) => format!("{} sessions", l.len()),
        Ok(Answer::Accepted) => "accepted".into(),
        Err(f) => format!("{f:?}"),
    }
}

fn call_label(call: &Call) -> String {
    match call {
        Call::Bulk { session, op, profiles } => {
            let ids: Vec<&str> = profiles.iter().map(|p| p.external_id.as_str()).collect();
            format!("{} {session} [{}]", if *op == Op::Upsert { "bulk-upsert" } else { "bulk-delete" }, ids.join(" "))
        }
        Call::GetSession { session } | Call::CancelSession { session } | Call::StartImport { session } => {
            format!("{} {session}", call.name())
        }
        other => other.name().to_string(),
    }
}

fn event_label(e: &RunEvent) -> String {
    match &e.kind {
        EventKind::BulkSending { session_id, request_no, .. } => format!("BulkSending {session_id} #{request_no}"),
        EventKind::BulkLoaded { session_id, request_no, .. } => format!("BulkLoaded {session_id} #{request_no}"),
        EventKind::SessionOpened { session_id } => format!("SessionOpened {session_id}"),
        EventKind::SessionTriggered { session_id, .. } => format!("SessionTriggered {session_id}"),
        EventKind::SessionFinished { session_id, status, .. } => {
            format!("SessionFinished {session_id} {}", status.as_str())
        }
        EventKind::RunFailed { reason } => format!("RunFailed: {reason}"),
        _ => e.type_name().to_string(),
    }
}

/// The mapped profile of a source user, or why none.
pub(crate) fn expected(rules: &MappingRules, user: &Value) -> MapOutcome {
    map_user(rules, user, Op::Upsert)
}

#[allow(dead_code)]
fn ids(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}
