//! Running the stages: which consumers a worker process starts, and how it
//! stops. `xaas worker <role>` is a thin call into `run`.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use xaas_broker::{Incoming, Outcome, run_consumer};
use xaas_core::{FetchPage, Page, SyncRequest};

use crate::deps::Deps;
use crate::error::StartupError;
use crate::stage::{Ctx, decode};
use crate::uploader::{Stop, Uploader};
use crate::{fetcher, mapper};

/// What a worker process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Reads the source page by page (needs the source's client secret).
    Fetcher,
    /// Maps pages into Okta-sized batches (needs no secret).
    Mapper,
    /// Owns each sync's Okta import sessions (needs Okta's token or key).
    Uploader,
    /// The three stages in one process: the newcomer's and the demo's setup.
    All,
    /// Starts each sync's runs on its cron `schedule` (not part of `all`:
    /// run one per deployment).
    Scheduler,
}

impl Role {
    fn runs(self, stage: Role) -> bool {
        (self == Role::All && stage != Role::Scheduler) || self == stage
    }
}

/// Why a worker ended other than by being asked to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// It could not start: the topology could not be declared.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A consumer stopped for good after the start (e.g. the broker stayed
    /// unreachable past lapin's reconnection attempts); a supervisor should
    /// restart the worker.
    #[error("worker stopped: {0}")]
    Stopped(String),
}

impl From<xaas_broker::BrokerError> for RunError {
    fn from(e: xaas_broker::BrokerError) -> Self {
        Self::Startup(StartupError::Broker(e))
    }
}

/// Handlers run at once per stateless consumer. Graph and the mapper are
/// I/O- and CPU-light per page; more processes scale further.
const CONCURRENCY: usize = 4;

/// Declares the topology, starts the role's consumers and runs them until
/// `shutdown`. Returns when every consumer has stopped.
pub async fn run(deps: Deps, role: Role, shutdown: CancellationToken) -> Result<(), RunError> {
    deps.broker.declare().await?;
    for sync in deps.sync_names() {
        deps.broker.declare_sync(sync).await?;
    }
    let names = deps.broker.names().clone();
    let mut tasks = JoinSet::new();
    if role == Role::Scheduler {
        // A bad schedule stops the worker at start, naming the setting.
        crate::scheduler::schedules(&deps)?;
        tasks.spawn(crate::scheduler::run(deps.clone(), shutdown.clone()));
    }
    // Alerts go out from one process per deployment (a lease decides which).
    if matches!(role, Role::All | Role::Scheduler)
        && let Some(alerts) = crate::alerts::Alerts::build(&deps.config, &crate::app::process_env)?
    {
        tasks.spawn(alerts.run(deps.broker.clone(), shutdown.clone()));
    }
    if role.runs(Role::Fetcher) {
        stage(&mut tasks, &deps, names.requests(), &shutdown, |d, req: SyncRequest, ctx| async move {
            fetcher::handle_request(&d, req, &ctx).await
        });
        stage(&mut tasks, &deps, names.fetch(), &shutdown, |d, msg: FetchPage, ctx| async move {
            fetcher::handle_fetch(&d, msg, &ctx).await
        });
    }
    if role.runs(Role::Mapper) {
        stage(&mut tasks, &deps, names.pages(), &shutdown, |d, page: Page, ctx| async move {
            mapper::handle(&d, page, &ctx).await
        });
    }
    if role.runs(Role::Uploader) {
        for sync in deps.sync_names().cloned().collect::<Vec<_>>() {
            let (d, stop) = (deps.clone(), shutdown.clone());
            tasks.spawn(async move {
                // An uploader that lost the broker restarts and rebuilds its
                // state from the events stream; its deliveries were requeued.
                while !stop.is_cancelled() {
                    let uploader = match Uploader::new(d.clone(), sync.clone(), stop.clone()) {
                        Ok(u) => u,
                        Err(e) => return Err(e.to_string()),
                    };
                    match uploader.run().await {
                        Ok(()) => break,
                        Err(Stop::Shutdown) => break,
                        Err(e) => {
                            tracing::error!(sync = %sync, error = %e, "uploader stopped; restarting in 2s");
                            tokio::select! {
                                () = stop.cancelled() => break,
                                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                            }
                        }
                    }
                }
                Ok(())
            });
        }
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let failure = match joined {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(format!("a consumer task crashed: {e}")),
        };
        if let Some(e) = failure {
            tracing::error!(error = %e, "consumer stopped; stopping the worker");
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(RunError::Stopped(e)),
        None => Ok(()),
    }
}

/// Starts a stateless stage: consume `queue`, decode each delivery as `M`
/// (parking what cannot be decoded) and hand it to `handle`.
fn stage<M, F, Fut>(
    tasks: &mut JoinSet<Result<(), String>>,
    deps: &Deps,
    queue: String,
    shutdown: &CancellationToken,
    handle: F,
) where
    M: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(Deps, M, Ctx) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let (d, broker, stop) = (deps.clone(), deps.broker.clone(), shutdown.clone());
    let handler = move |incoming: Incoming| {
        let d = d.clone();
        async move {
            let ctx = Ctx::of(&incoming);
            match decode::<M>(&incoming) {
                Ok(msg) => handle(d, msg, ctx).await,
                Err(outcome) => outcome,
            }
        }
    };
    tasks.spawn(async move {
        let prefetch = (CONCURRENCY * 2) as u16;
        run_consumer(&broker, &queue, prefetch, CONCURRENCY, stop, handler).await.map_err(|e| e.to_string())
    });
}
