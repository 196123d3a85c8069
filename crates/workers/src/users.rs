//! `xaas users deactivate`: the original workflow's "Remove All Users from
//! Okta" and "Remove Single User from Okta". Who may be deactivated is
//! decided in `xaas_core::removal`; the deactivations go out as a run of
//! mode `deactivate` naming its users, so the uploader sends them with the
//! same session rules, cooldown and 50-request limit as any run.

use std::time::Duration;

use xaas_broker::Broker;
use xaas_core::removal::{Action, Selection, decide};
use xaas_core::roster::Roster;
use xaas_core::{Mode, SyncName};

use crate::commands::{CommandError, EnqueueArgs, enqueue};

/// How `xaas users deactivate` was called.
#[derive(Debug, Clone)]
pub struct DeactivateArgs {
    pub sync: SyncName,
    pub selection: Selection,
    /// The operator confirmed.
    pub yes: bool,
    /// List who would be deactivated; send nothing.
    pub dry_run: bool,
    /// Give up waiting for the run after this long (the run goes on).
    pub timeout: Option<Duration>,
    pub json: bool,
}

/// Reads the sync's roster, decides, and either refuses, lists, or starts
/// the run and follows it to its report.
pub async fn deactivate(broker: &Broker, args: DeactivateArgs) -> Result<(), CommandError> {
    broker.declare().await?;
    // The roster stream exists once an uploader of the sync has run; declaring
    // it here makes a fresh sync read as unknown instead of failing.
    broker.declare_sync(&args.sync).await?;
    let records = broker.read_roster(&args.sync).await?;
    let roster = Roster::replay(args.sync.clone(), &records);
    match decide(&roster, &args.selection, args.yes, args.dry_run) {
        Action::Refuse(why) => Err(CommandError::Usage(why)),
        Action::Show(users) => {
            println!("dry run: would deactivate {} user(s) of sync {}; nothing was sent", users.len(), args.sync);
            for id in users {
                println!("  {id}");
            }
            Ok(())
        }
        Action::Send(users) => {
            eprintln!("deactivating {} user(s) of sync {}", users.len(), args.sync);
            let run = EnqueueArgs {
                sync: args.sync,
                mode: Mode::Deactivate,
                dry_run: false,
                force: false,
                // The operator named these users and confirmed with --yes:
                // that is the confirmation the guards would otherwise ask for.
                allow_mass_deactivation: true,
                users,
                run_id: None,
                wait: true,
                timeout: args.timeout,
                json: args.json,
            };
            enqueue(broker, run).await.map(drop)
        }
    }
}
