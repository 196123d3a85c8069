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
    Fetcher,
    Mapper,
    Uploader,
    /// The three stages in one process: the newcomer's and the demo's setup.
    All,
}

impl Role {
    fn runs(self, stage: Role) -> bool {
        self == Role::All || self == stage
    }
}

/// Handlers run at once per stateless consumer. Graph and the mapper are
/// I/O- and CPU-light per page; more processes scale further.
const CONCURRENCY: usize = 4;

/// Declares the topology, starts the role's consumers and runs them until
/// `shutdown`. Returns when every consumer has stopped.
pub async fn run(deps: Deps, role: Role, shutdown: CancellationToken) -> Result<(), StartupError> {
    deps.broker.declare().await?;
    for sync in deps.sync_names() {
        deps.broker.declare_sync(sync).await?;
    }
    let names = deps.broker.names().clone();
    let mut tasks = JoinSet::new();
    if role.runs(Role::Fetcher) {
        let d = deps.clone();
        tasks.spawn(consume(deps.clone(), names.requests(), shutdown.clone(), move |incoming| {
            let d = d.clone();
            async move {
                let ctx = Ctx::of(&incoming);
                match decode::<SyncRequest>(&incoming) {
                    Ok(req) => fetcher::handle_request(&d, req, &ctx).await,
                    Err(outcome) => outcome,
                }
            }
        }));
        let d = deps.clone();
        tasks.spawn(consume(deps.clone(), names.fetch(), shutdown.clone(), move |incoming| {
            let d = d.clone();
            async move {
                let ctx = Ctx::of(&incoming);
                match decode::<FetchPage>(&incoming) {
                    Ok(msg) => fetcher::handle_fetch(&d, msg, &ctx).await,
                    Err(outcome) => outcome,
                }
            }
        }));
    }
    if role.runs(Role::Mapper) {
        let d = deps.clone();
        tasks.spawn(consume(deps.clone(), names.pages(), shutdown.clone(), move |incoming| {
            let d = d.clone();
            async move {
                let ctx = Ctx::of(&incoming);
                match decode::<Page>(&incoming) {
                    Ok(page) => mapper::handle(&d, page, &ctx).await,
                    Err(outcome) => outcome,
                }
            }
        }));
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
        Some(e) => Err(StartupError::Other(e)),
        None => Ok(()),
    }
}

async fn consume<F, Fut>(deps: Deps, queue: String, shutdown: CancellationToken, handler: F) -> Result<(), String>
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let prefetch = (CONCURRENCY * 2) as u16;
    run_consumer(&deps.broker, &queue, prefetch, CONCURRENCY, shutdown, handler).await.map_err(|e| e.to_string())
}
