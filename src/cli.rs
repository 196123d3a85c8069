//! The command line: what `xaas` accepts, and the help it prints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xaas_core::{Mode, RunId, SyncName};
use xaas_workers::Role;
use xaas_workers::telemetry::LogFormat;

use crate::demo::DemoArgs;

/// Keeps an Okta org in step with Microsoft Entra ID through Okta's
/// Identity Sources API.
#[derive(Parser)]
#[command(name = "xaas", version)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "XAAS_CONFIG", default_value = "xaas.toml")]
    pub config: PathBuf,
    /// Log lines as text for people, or as JSON for log collectors (on stderr).
    #[arg(long, global = true, env = "XAAS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the sandbox: Entra's token endpoint, Graph users and Okta Identity Sources.
    Sim(Box<xaas_sim::SimConfig>),
    /// Run a worker: fetcher, mapper, uploader, all three, or the scheduler.
    Worker {
        /// Which stage this process runs.
        #[arg(value_enum)]
        role: Role,
        /// Serve /healthz and /metrics here.
        #[arg(long, env = "XAAS_HEALTH_LISTEN")]
        health_listen: Option<SocketAddr>,
        /// Also serve the web console here (see `xaas console`).
        #[arg(long)]
        console_listen: Option<SocketAddr>,
    },
    /// Serve the web console: runs, live progress, timeline, parked messages, syncs.
    /// Read-only unless XAAS_CONSOLE_ADMIN_TOKEN is set.
    Console {
        /// Where to listen; loopback by default.
        #[arg(long, env = "XAAS_CONSOLE_LISTEN", default_value = xaas_console::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
    /// Start a run of a configured sync.
    Enqueue {
        /// The sync to run: a [syncs.<name>] table of the configuration.
        #[arg(long)]
        sync: SyncName,
        /// What the run reads: every enabled user, the changes since the last run, or disabled users only.
        #[arg(long, value_enum, default_value_t = ModeArg::Full)]
        mode: ModeArg,
        /// Run the pipeline but send nothing to Okta; the report holds the plan.
        #[arg(long)]
        dry_run: bool,
        /// Send every profile, even those unchanged since their last upload.
        #[arg(long)]
        force: bool,
        /// Let this one run past max_deactivations and max_deactivations_percent (never past an empty source or untrusted data).
        #[arg(long)]
        allow_mass_deactivation: bool,
        /// Follow the run and print its report.
        #[arg(long)]
        wait: bool,
        /// The run's id (up to 64 letters, digits, '-', '_' or '.'); a random UUID by default.
        #[arg(long)]
        run_id: Option<RunId>,
        /// With --wait: stop waiting after this long (e.g. 30m).
        #[arg(long, value_parser = xaas_sim::config::parse_duration)]
        timeout: Option<Duration>,
        /// With --wait: print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recent runs, or one run's report, read back from the events stream.
    Status {
        /// The run to report on; without it, the recent runs.
        run: Option<RunId>,
        /// With RUN: what the run did (a dry run: would do) with each user.
        #[arg(long, requires = "run")]
        plan: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Messages that could not be processed.
    Parked {
        #[command(subcommand)]
        command: ParkedArg,
    },
    /// Act on the users a sync holds in Okta.
    Users {
        #[command(subcommand)]
        command: UsersArg,
    },
    /// The original workflow's sample users.
    Sample {
        #[command(subcommand)]
        command: SampleArg,
    },
    /// Exit 0 when the worker on this machine answers /healthz with 200 (a
    /// container healthcheck that needs no shell).
    Health {
        /// The worker's --health-listen address.
        #[arg(long, env = "XAAS_HEALTH_LISTEN", default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
    },
    /// The newcomer's tour: sandbox + workers + a full sync of the sample users.
    Demo(DemoArgs),
    /// Print the JSON Schema of SyncRequest, for starting runs from any AMQP client.
    Schema,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    /// Every enabled user; deactivates those the source no longer returns.
    Full,
    /// What changed since the last completed run (Graph's delta query).
    Delta,
    /// Disabled users only, sent as deactivations.
    Deactivate,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Full => Mode::Full,
            ModeArg::Delta => Mode::Delta,
            ModeArg::Deactivate => Mode::Deactivate,
        }
    }
}

#[derive(Subcommand)]
pub enum UsersArg {
    /// Deactivate users of this sync in Okta (bulk-delete, through the
    /// uploader's session rules). Only users the sync's roster holds.
    #[command(group = clap::ArgGroup::new("who").required(true).args(["all", "user"]))]
    Deactivate {
        /// The sync whose users are deactivated.
        #[arg(long)]
        sync: SyncName,
        /// Every user the sync's roster holds.
        #[arg(long)]
        all: bool,
        /// This user's externalId (repeat for more).
        #[arg(long = "user", value_name = "ID")]
        user: Vec<String>,
        /// Confirm: without it the command only says how many it would deactivate.
        #[arg(long)]
        yes: bool,
        /// List who would be deactivated, and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Stop waiting for the run after this long (e.g. 30m).
        #[arg(long, value_parser = xaas_sim::config::parse_duration)]
        timeout: Option<Duration>,
        /// Print the run's report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum SampleArg {
    /// Create the sample table's users in the sync's source (Graph POST
    /// /v1.0/users); users whose userPrincipalName exists are skipped.
    Upload {
        /// The sync whose source (Graph tenant) receives the users.
        #[arg(long)]
        sync: SyncName,
        /// The sample table: the original workflow's sampleUsers.csv.
        #[arg(long, default_value = "examples/sampleUsers.csv")]
        csv: PathBuf,
        /// A verified domain of the tenant: replaces example.com in
        /// userPrincipalName and mail. Defaults to the sync's tenant when it is a domain name.
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ParkedArg {
    /// List parked messages (they stay parked).
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one parked message in full.
    Show {
        /// A position from `xaas parked list`.
        position: usize,
    },
    /// Send parked messages back to the queue they came from.
    Replay {
        /// A position from `list`; omit with --all.
        position: Option<usize>,
        /// Replay every parked message.
        #[arg(long, conflicts_with = "position")]
        all: bool,
    },
    /// Delete every parked message.
    Purge,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every argument of `cmd` and of its subcommands, with its command path,
    /// that has no help text, and every value of an enum that has none.
    fn without_help(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let name = arg.get_id().as_str();
            if matches!(name, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {name}"));
            }
            // A flag's true/false are not values anyone types.
            let values = if arg.get_action().takes_values() { arg.get_possible_values() } else { Vec::new() };
            for value in values {
                if value.get_help().is_none() && !value.is_hide_set() {
                    missing.push(format!("{path} {name}={}", value.get_name()));
                }
            }
        }
        for sub in cmd.get_subcommands() {
            without_help(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }

    #[test]
    fn every_argument_and_value_has_help() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        without_help(&cmd, "xaas", &mut missing);
        assert!(missing.is_empty(), "no help text for:\n{}", missing.join("\n"));
    }

    #[test]
    fn worker_help_lists_every_role() {
        let mut cmd = Cli::command();
        let help = cmd.find_subcommand_mut("worker").unwrap().render_long_help().to_string();
        for role in ["fetcher", "mapper", "uploader", "all", "scheduler"] {
            assert!(help.contains(&format!("- {role}")), "{role} is listed: {help}");
        }
        let short = cmd.find_subcommand_mut("worker").unwrap().render_help().to_string();
        assert!(short.contains("scheduler"), "{short}");
    }
}
