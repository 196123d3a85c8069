//! `xaas`: the one binary. A thin clap front over the library crates.

mod cli;
mod demo;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, ParkedArg, SampleArg, UsersArg};
use tokio_util::sync::CancellationToken;
use xaas_core::removal::Selection;
use xaas_workers::commands::{self, CommandError, EnqueueArgs, ParkedCommand};
use xaas_workers::deps::{Clients, Needs};
use xaas_workers::runtime::RunError;
use xaas_workers::telemetry;
use xaas_workers::users::DeactivateArgs;
use xaas_workers::{Deps, StartupError, app};

/// Exit codes: 0 done, 1 a run failed or a command failed at run time,
/// 2 bad configuration or unreachable services at start.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Startup(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
        Err(Failure::Command(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// An error as one line: supervisors and log collectors show a failed
/// start by its first line, and some errors (TOML's, with their source
/// snippet) span several. Lines that only draw the snippet's frame go.
fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let drawing = |l: &str| l.chars().all(|c| c.is_whitespace() || matches!(c, '|' | '^' | '-' | '~'));
    text.lines().map(str::trim).filter(|l| !drawing(l)).collect::<Vec<_>>().join("; ")
}

enum Failure {
    Startup(StartupError),
    Command(CommandError),
}

impl From<StartupError> for Failure {
    fn from(e: StartupError) -> Self {
        Self::Startup(e)
    }
}

impl From<CommandError> for Failure {
    fn from(e: CommandError) -> Self {
        Self::Command(e)
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Sim(cfg) => {
            xaas_sim::app::serve(*cfg).await.map_err(|e| StartupError::Other(format!("sim: {e}")))?;
            Ok(())
        }
        Command::Schema => {
            print!("{}", include_str!("../schemas/sync-request.schema.json"));
            Ok(())
        }
        Command::Demo(args) => demo::run(&cli.config, args).await,
        Command::Console { listen } => {
            let config = app::load_config(&cli.config)?;
            let broker = app::connect(&config, "console").await?;
            let shutdown = CancellationToken::new();
            start_console(config, broker.clone(), listen, shutdown.clone()).await?;
            stop_on_signal(shutdown).await;
            broker.close().await;
            Ok(())
        }
        Command::Worker { role, health_listen, console_listen } => {
            let config = app::load_config(&cli.config)?;
            // Every setting and secret of the role is checked before the
            // broker is contacted.
            let clients = Clients::build(&config, Needs::of(role), &app::process_env)?;
            let name = format!("{role:?}@{}", hostname()).to_lowercase();
            let broker = app::connect(&config, &name).await?;
            let shutdown = CancellationToken::new();
            if let Some(addr) = console_listen {
                start_console(config.clone(), broker.clone(), addr, shutdown.clone()).await?;
            }
            let deps = Deps::new(config, broker.clone(), clients);
            if let Some(addr) = health_listen {
                let bound = telemetry::serve_health(addr, broker.clone(), telemetry::install_metrics())
                    .await
                    .map_err(|e| StartupError::Other(format!("--health-listen {addr}: {e}")))?;
                tracing::info!(%bound, "serving /healthz and /metrics");
                if xaas_workers::run_metrics::runs_in(role) {
                    tokio::spawn(xaas_workers::run_metrics::run(broker.clone(), deps.config.clone(), shutdown.clone()));
                }
            }
            tokio::spawn(stop_on_signal(shutdown.clone()));
            tracing::info!(?role, "worker starting");
            let result = xaas_workers::runtime::run(deps, role, shutdown).await;
            broker.close().await;
            tracing::info!("worker stopped");
            match result {
                Ok(()) => Ok(()),
                Err(RunError::Startup(e)) => Err(e.into()),
                // Not a configuration problem: exit 1 so a supervisor restarts it.
                Err(e @ RunError::Stopped(_)) => Err(CommandError::Usage(e.to_string()).into()),
            }
        }
        Command::Enqueue { sync, mode, dry_run, force, allow_mass_deactivation, wait, run_id, timeout, json } => {
            let config = app::load_config(&cli.config)?;
            config.sync(&sync).map_err(StartupError::Config)?;
            let broker = app::connect(&config, "enqueue").await?;
            let args = EnqueueArgs {
                sync,
                mode: mode.into(),
                dry_run,
                force,
                allow_mass_deactivation,
                users: Vec::new(),
                run_id,
                wait,
                timeout,
                json,
            };
            let result = commands::enqueue(&broker, args).await;
            broker.close().await;
            result?;
            Ok(())
        }
        Command::Status { run, plan, json } => {
            let config = app::load_config(&cli.config)?;
            let broker = app::connect(&config, "status").await?;
            let result = commands::status(&broker, run, plan, json).await;
            broker.close().await;
            Ok(result?)
        }
        Command::Users { command: UsersArg::Deactivate { sync, all, user, yes, dry_run, timeout, json } } => {
            let config = app::load_config(&cli.config)?;
            config.sync(&sync).map_err(StartupError::Config)?;
            let broker = app::connect(&config, "users").await?;
            let selection = if all { Selection::All } else { Selection::Users(user) };
            let args = DeactivateArgs { sync, selection, yes, dry_run, timeout, json };
            let result = xaas_workers::users::deactivate(&broker, args).await;
            broker.close().await;
            Ok(result?)
        }
        Command::Sample { command: SampleArg::Upload { sync, csv, domain } } => {
            let config = app::load_config(&cli.config)?;
            let source = &config.sync(&sync).map_err(StartupError::Config)?.source;
            let domain = match domain.or_else(|| Some(source.tenant.clone()).filter(|t| t.contains('.'))) {
                Some(d) => d,
                None => {
                    let why = format!("say which verified domain of tenant {} the users get: --domain", source.tenant);
                    return Err(CommandError::Usage(why).into());
                }
            };
            let users = xaas_sim::seed::load_sample_csv(&csv, &domain)
                .map_err(|e| StartupError::Other(format!("--csv {}: {e}", csv.display())))?;
            // Only the source's secret: this command never talks to Okta.
            let clients = Clients::build(&config, Needs { graph: true, okta: false }, &app::process_env)?;
            let graph = clients
                .sync(&sync)
                .and_then(|c| c.graph())
                .ok_or_else(|| CommandError::Usage(format!("sync {sync} has no Graph client")))?;
            let report = xaas_workers::sample::upload(graph, &users).await?;
            for upn in &report.created {
                println!("created  {upn}");
            }
            for upn in &report.existing {
                println!("exists   {upn} (skipped)");
            }
            for row in &report.unusable {
                println!("skipped  {row}: no email, so no userPrincipalName");
            }
            println!(
                "{} created, {} already existed, {} unusable rows",
                report.created.len(),
                report.existing.len(),
                report.unusable.len()
            );
            Ok(())
        }
        Command::Health { addr } => health(addr).await.map_err(|e| CommandError::Usage(e).into()),
        Command::Parked { command } => {
            let config = app::load_config(&cli.config)?;
            let broker = app::connect(&config, "parked").await?;
            let cmd = match command {
                ParkedArg::List { limit } => ParkedCommand::List { limit },
                ParkedArg::Show { position } => ParkedCommand::Show { position },
                ParkedArg::Replay { all: true, .. } => ParkedCommand::Replay { which: xaas_broker::Replay::All },
                ParkedArg::Replay { position: Some(p), .. } => {
                    ParkedCommand::Replay { which: xaas_broker::Replay::Position(p) }
                }
                ParkedArg::Replay { position: None, all: false } => {
                    return Err(
                        CommandError::Usage("say which: a position from `xaas parked list`, or --all".into()).into()
                    );
                }
                ParkedArg::Purge => ParkedCommand::Purge,
            };
            let result = commands::parked(&broker, cmd).await;
            broker.close().await;
            Ok(result?)
        }
    }
}

/// Starts the web console; its admin token comes from the environment.
async fn start_console(
    config: xaas_core::config::Config,
    broker: xaas_broker::Broker,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let access = xaas_console::Access::from_env();
    xaas_console::start(config, broker, listen, access, shutdown)
        .await
        .map_err(|e| StartupError::Other(format!("console listen address {listen}: {e}")))?;
    Ok(())
}

/// SIGTERM or Ctrl-C: stop consuming, finish or requeue, exit 0.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested; finishing in-flight work");
    shutdown.cancel();
}

/// GET /healthz on `addr` (0.0.0.0 means this machine), 200 within 5 s.
async fn health(mut addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), check)
        .await
        .map_err(|_| format!("{addr}/healthz did not answer within 5 s"))?
        .map_err(|e| format!("{addr}/healthz: {e}"))?;
    let status = String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_string();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!("{addr}/healthz answered {status:?}"))
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "local".into())
}
