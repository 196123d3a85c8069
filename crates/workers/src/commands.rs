//! What an operator runs besides the workers: start a run and follow it,
//! read a run's report back, manage parked messages.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use xaas_broker::{Broker, ParkedMessage, Replay, StreamOffset};
use xaas_core::report::{Plan, RunReport, RunState};
use xaas_core::{EventKind, Mode, RunEvent, RunId, SyncName, SyncRequest};

use crate::render::{moment, plan_text, report_text};

/// How `xaas enqueue` was asked to start a run.
#[derive(Debug, Clone)]
pub struct EnqueueArgs {
    pub sync: SyncName,
    pub mode: Mode,
    pub dry_run: bool,
    /// Send every profile, even unchanged ones.
    pub force: bool,
    /// Let this one run past the deactivation guards.
    pub allow_mass_deactivation: bool,
    /// With mode deactivate: exactly these users (`xaas users deactivate`).
    pub users: Vec<xaas_core::ExternalId>,
    pub run_id: Option<RunId>,
    pub wait: bool,
    /// Give up waiting after this long (the run goes on).
    pub timeout: Option<Duration>,
    pub json: bool,
}

/// Why a command failed, and what its exit code is.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Broker(#[from] xaas_broker::BrokerError),
    #[error("{0}")]
    Usage(String),
    #[error("run {run} failed: {reason}")]
    RunFailed { run: RunId, reason: String },
    #[error("gave up waiting for run {0} after the timeout; it goes on, follow it with `xaas status {0}`")]
    Timeout(RunId),
}

/// Publishes a `SyncRequest`, prints the run id, and with `wait` follows
/// the run to its end and prints the report.
pub async fn enqueue(broker: &Broker, args: EnqueueArgs) -> Result<Option<RunReport>, CommandError> {
    let run_id = args.run_id.clone().unwrap_or_else(RunId::generate);
    broker.declare().await?;
    // Start reading a little before the request exists, so no event of the
    // run is missed however fast the workers are.
    let since = OffsetDateTime::now_utc() - time::Duration::seconds(2);
    let mut stream = if args.wait { Some(broker.events_since(StreamOffset::Timestamp(since)).await?) } else { None };
    let request = SyncRequest {
        v: xaas_core::MESSAGE_VERSION,
        sync: args.sync.clone(),
        mode: args.mode,
        dry_run: args.dry_run,
        run_id: Some(run_id.clone()),
        force: args.force,
        allow_mass_deactivation: args.allow_mass_deactivation,
        users: args.users.clone(),
    };
    broker.publish(&broker.names().requests(), &request).await?;
    println!("{run_id}");
    let _ = std::io::stdout().flush();
    let Some(stream) = stream.as_mut() else { return Ok(None) };

    let bar = progress_bar();
    let mut events: Vec<RunEvent> = Vec::new();
    // A request merged into a waiting run is served by that run: follow it.
    let mut following = run_id.clone();
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    bar.abandon();
                    return Err(CommandError::Timeout(run_id));
                }
            },
            None => stream.next().await,
        };
        let event = match next {
            Some(Ok((_, event))) => event,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(CommandError::Usage("the events stream ended unexpectedly".into())),
        };
        // Every event is kept: a run this one is merged into may have
        // started before the merge was recorded.
        let done = event.run_id == following
            && matches!(event.kind, EventKind::RunCompleted { .. } | EventKind::RunFailed { .. });
        if let EventKind::RunMerged { into } = &event.kind
            && event.run_id == run_id
        {
            bar.println(format!("run {run_id} is merged into the waiting run {into}; following it"));
            following = into.clone();
        }
        let ours = event.run_id == following;
        events.push(event);
        if ours && let Some(report) = RunReport::from_events(&following, &events) {
            update_bar(&bar, &report);
        }
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    if following != run_id {
        // Its own report says "merged into"; the outcome is the other run's.
        eprintln!("run {run_id} was merged into run {following}; this is the report of {following}");
    }
    // `events` holds at least the run's final event, so there is a report.
    let report = RunReport::with_plan(&following, &events)
        .ok_or_else(|| CommandError::Usage(format!("no events of run {following}")))?;
    print_report(&report, args.json);
    match &report.state {
        RunState::Failed { reason } => Err(CommandError::RunFailed { run: following, reason: reason.clone() }),
        _ => Ok(Some(report)),
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} pages {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn update_bar(bar: &ProgressBar, r: &RunReport) {
    let (fetched, total) = r.progress();
    bar.set_length(u64::from(total.unwrap_or(fetched.max(1))));
    bar.set_position(u64::from(fetched));
    bar.set_message(format!(
        "· {} upserted · {} deactivated · {} requests · {} sessions",
        r.upserted,
        r.deactivated,
        r.bulk_requests,
        r.sessions.len()
    ));
}

fn print_report(report: &RunReport, json: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("could not encode the report: {e}"),
        }
    } else {
        print!("{}", report_text(report));
    }
}

/// `xaas status [RUN] [--plan]`: one run's report (or its plan: what it did,
/// or would do, with each user), or the recent runs, read back from the
/// events stream.
pub async fn status(broker: &Broker, run: Option<RunId>, plan: bool, json: bool) -> Result<(), CommandError> {
    broker.declare().await?;
    let events = broker.read_all_events().await?;
    match run {
        Some(run) if plan => {
            if !events.iter().any(|e| e.run_id == run) {
                return Err(CommandError::Usage(format!("no events of run {run} in the events stream")));
            }
            let plan = Plan::from_events(&run, &events);
            if json {
                match serde_json::to_string_pretty(&plan) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("could not encode the plan: {e}"),
                }
            } else {
                print!("{}", plan_text(&run, &plan));
            }
        }
        Some(run) => {
            let report = RunReport::with_plan(&run, &events)
                .ok_or_else(|| CommandError::Usage(format!("no events of run {run} in the events stream")))?;
            print_report(&report, json);
        }
        None if plan => {
            return Err(CommandError::Usage("--plan needs a run: xaas status RUN --plan".into()));
        }
        None => {
            let mut order: Vec<RunId> = Vec::new();
            for e in &events {
                if !order.contains(&e.run_id) {
                    order.push(e.run_id.clone());
                }
            }
            let now = OffsetDateTime::now_utc();
            let recent: Vec<RunReport> =
                order.iter().rev().take(20).filter_map(|run| RunReport::from_events(run, &events)).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&recent).unwrap_or_default());
            } else if recent.is_empty() {
                println!("no runs in the events stream");
            } else {
                for r in recent {
                    let state = match &r.state {
                        RunState::Running => "running".to_string(),
                        RunState::Completed => "completed".to_string(),
                        RunState::Failed { reason } => format!("failed: {reason}"),
                        RunState::Merged { into } => format!("merged into {into}"),
                    };
                    let started = r.started_at.map(|t| moment(t, now)).unwrap_or_default();
                    println!(
                        "{}  {:<12} {:<10} {started}  {} upserted, {} deactivated  {state}",
                        r.run_id,
                        r.sync.as_str(),
                        r.options.as_ref().map(|o| o.mode.to_string()).unwrap_or_default(),
                        r.upserted,
                        r.deactivated
                    );
                }
            }
        }
    }
    Ok(())
}

/// `xaas parked …`
#[derive(Debug, Clone)]
pub enum ParkedCommand {
    List { limit: usize },
    Show { position: usize },
    Replay { which: Replay },
    Purge,
}

pub async fn parked(broker: &Broker, cmd: ParkedCommand) -> Result<(), CommandError> {
    broker.declare().await?;
    match cmd {
        ParkedCommand::List { limit } => {
            let list = broker.parked_list(limit).await?;
            if list.is_empty() {
                println!("nothing is parked");
            }
            for m in list {
                println!(
                    "{:>4}  {:<28} {:<20} {}",
                    m.position,
                    m.origin_queue.as_deref().unwrap_or("?"),
                    m.reason,
                    m.error.as_deref().unwrap_or("").lines().next().unwrap_or("")
                );
            }
        }
        ParkedCommand::Show { position } => {
            let m = broker
                .parked_get(position)
                .await?
                .ok_or_else(|| CommandError::Usage(format!("no parked message at position {position}")))?;
            show(&m);
        }
        ParkedCommand::Replay { which } => {
            let report = broker.parked_replay(which).await?;
            println!("replayed {}", report.replayed);
            for (id, why) in report.skipped {
                println!("left parked {}: {why}", id.unwrap_or_else(|| "(no id)".into()));
            }
        }
        ParkedCommand::Purge => {
            let n = broker.parked_purge().await?;
            println!("purged {n}");
        }
    }
    Ok(())
}

fn show(m: &ParkedMessage) {
    println!("position:     {}", m.position);
    println!("message id:   {}", m.message_id.as_deref().unwrap_or("-"));
    println!("origin queue: {}", m.origin_queue.as_deref().unwrap_or("-"));
    println!("reason:       {}", m.reason);
    println!("error:        {}", m.error.as_deref().unwrap_or("-"));
    println!("parked at:    {}", m.parked_at.as_deref().unwrap_or("-"));
    println!("attempts:     {}", m.attempt);
    let body = String::from_utf8_lossy(&m.body);
    let shown: String = body.chars().take(2000).collect();
    println!("body ({} bytes):\n{shown}", m.body.len());
}
