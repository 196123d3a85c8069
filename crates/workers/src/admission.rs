//! Starting a run: at most one run per sync in flight; a request that
//! arrives while one runs waits its turn or is merged into a waiting run
//! with the same options (`xaas_core::history` has the rules and why).
//!
//! A waiting request is not retried (that would spend its attempts and
//! park it): it is re-published to come back after [`RECHECK`], and checks
//! again. It records `RunQueued` when it starts waiting and again every
//! [`HEARTBEAT`], which is how a newer request knows it is still there to
//! merge into.

use std::time::Duration;

use time::OffsetDateTime;
use xaas_broker::{BrokerError, Outcome, StreamOffset};
use xaas_core::history::{Admission, Life, SyncHistory};
use xaas_core::{EventKind, FetchPage, Mode, RunId, RunOptions, SyncName, SyncRequest};

use crate::deps::Deps;
use crate::events::emit;

/// A run that recorded nothing for this long no longer holds its sync
/// (its deployment died, or a page of it is parked): a run follows Okta's
/// import without events for at most minutes, so hours of silence mean it
/// is gone.
pub const STALE: Duration = Duration::from_secs(6 * 3600);
/// How often a waiting request looks again whether its sync is free.
pub const RECHECK: Duration = Duration::from_secs(5);
/// How often a waiting request says it still waits.
pub const HEARTBEAT: Duration = Duration::from_secs(60);
/// A waiting run silent for longer is not merged into (its request may be lost).
pub const ALIVE: Duration = Duration::from_secs(3 * 60);

/// Admits a request for `run_id` and, when the sync is free, starts it.
pub async fn start(deps: &Deps, req: SyncRequest, run_id: RunId) -> Outcome {
    match admit(deps, req, run_id).await {
        Ok(()) => Outcome::Ack,
        Err(e) => Outcome::Retry { error: e.to_string() },
    }
}

async fn admit(deps: &Deps, req: SyncRequest, run_id: RunId) -> Result<(), BrokerError> {
    let sync = req.sync.clone();
    let options = req.options();
    let now = OffsetDateTime::now_utc();
    let history = recent(deps, &sync, now).await?;
    match history.admit(&run_id, &options, now, STALE, ALIVE) {
        Admission::Over | Admission::Resume { fetching: true } => Ok(()),
        Admission::Resume { fetching: false } => {
            // Claimed before a crash; its first page may not have been asked
            // for. Asking twice is harmless: the duplicate is recognised.
            let options = history.options(&run_id).cloned().unwrap_or(options);
            let (first, _) = first_page(deps, &run_id, &sync, options).await?;
            deps.broker.publish(&deps.broker.names().fetch(), &first).await
        }
        Admission::Merge { into } => {
            tracing::info!(%sync, run_id = %run_id, into = %into, "request merged into a waiting run");
            emit(&deps.broker, &run_id, &sync, EventKind::RunMerged { into }).await.map(drop)
        }
        Admission::Queue { behind } => wait(deps, req, &run_id, behind, &history, options).await,
        Admission::Start => {
            let (first, options) = first_page(deps, &run_id, &sync, options).await?;
            emit(&deps.broker, &run_id, &sync, EventKind::RunStarted { options: options.clone() }).await?;
            // Another fetcher may have claimed the sync at the same moment:
            // the earlier claim in the stream wins.
            let now = OffsetDateTime::now_utc();
            let history = recent(deps, &sync, now).await?;
            match history.in_flight(now, STALE).into_iter().next() {
                Some(winner) if winner != run_id => wait(deps, req, &run_id, winner, &history, options).await,
                _ => deps.broker.publish(&deps.broker.names().fetch(), &first).await,
            }
        }
    }
}

/// Records that `run_id` waits behind `behind` (first time, then every
/// heartbeat) and re-publishes the request to look again later.
async fn wait(
    deps: &Deps,
    req: SyncRequest,
    run_id: &RunId,
    behind: RunId,
    history: &SyncHistory,
    options: RunOptions,
) -> Result<(), BrokerError> {
    let now = OffsetDateTime::now_utc();
    let waiting = history.life(run_id) == Some(Life::Queued);
    let quiet = history.last_event_at(run_id).is_none_or(|at| now - at > HEARTBEAT);
    if !waiting || quiet {
        if !waiting {
            tracing::info!(sync = %req.sync, run_id = %run_id, behind = %behind, "another run of the sync is in flight; queued");
        }
        emit(&deps.broker, run_id, &req.sync, EventKind::RunQueued { behind, options }).await?;
    }
    let again = SyncRequest { run_id: Some(run_id.clone()), ..req };
    deps.broker.publish_later(&deps.broker.names().requests(), &again, RECHECK).await
}

/// The run's first `FetchPage`, and its options as the run will carry them.
/// A delta run continues from the deltaLink the last completed run of the
/// sync left; without one it reads Graph's initial round (the full state),
/// which seeds the next delta.
async fn first_page(
    deps: &Deps,
    run_id: &RunId,
    sync: &SyncName,
    mut options: RunOptions,
) -> Result<(FetchPage, RunOptions), BrokerError> {
    let mut link = None;
    if options.mode == Mode::Delta && !options.full_state {
        let events = deps.broker.read_all_events().await?;
        link = SyncHistory::fold(sync, &events).last_delta_link().map(String::from);
        if link.is_none() {
            tracing::info!(%sync, run_id = %run_id, "no deltaLink stored yet: this delta run reads the full state and seeds the next");
            options.full_state = true;
        }
    }
    let first = FetchPage {
        v: xaas_core::MESSAGE_VERSION,
        run_id: run_id.clone(),
        sync: sync.clone(),
        options: options.clone(),
        seq: 0,
        link,
        parent: None,
    };
    Ok((first, options))
}

/// The sync's runs as the last `STALE` of the events stream tells them
/// (older runs cannot hold the sync anyway).
async fn recent(deps: &Deps, sync: &SyncName, now: OffsetDateTime) -> Result<SyncHistory, BrokerError> {
    let since = now - STALE;
    let events = deps.broker.read_events_to_end(StreamOffset::Timestamp(since)).await?;
    Ok(SyncHistory::fold(sync, &events))
}
