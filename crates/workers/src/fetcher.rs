//! The fetcher: turns a `SyncRequest` into the first `FetchPage`, and each
//! `FetchPage` into one `Page` plus the next `FetchPage` — the original
//! workflow's "flow calls itself with the nextLink", made durable. A killed
//! fetcher loses nothing: the unacked `FetchPage` comes back and the page is
//! read again. In a live directory that second read may differ from the
//! first; each read is a copy with its own id and parent, and the uploader
//! takes their union (`xaas_core::lineage`), so nobody is skipped and the
//! chain's forks cost only reads.
//!
//! A delta run starts from the deltaLink its sync's last completed run left
//! (`admission`). When Graph refuses that token (expired after 7 days, or
//! reset), the run does not fail: it records `DeltaResync` and reads Graph's
//! full state from the same page on, then reconciles like a full run.

use xaas_broker::Outcome;
use xaas_core::{EventKind, FetchPage, Mode, RunId, SyncRequest};
use xaas_graph::GraphError;

use crate::deps::Deps;
use crate::events::emit;
use crate::stage::{self, Ctx};

/// Starts a run: once no other run of its sync is in flight, records
/// `RunStarted` and asks for the first page (see `admission`).
pub async fn handle_request(deps: &Deps, req: SyncRequest, ctx: &Ctx) -> Outcome {
    let run_id = req.run_id.clone().unwrap_or_else(|| run_id_for(ctx));
    if deps.sync(&req.sync).is_none() {
        let known: Vec<String> = deps.sync_names().map(|s| s.to_string()).collect();
        let error = format!("no sync named {:?} is configured (configured: {})", req.sync.as_str(), known.join(", "));
        return stage::fail(deps, &run_id, &req.sync, "fetcher", error).await;
    }
    if !req.users.is_empty() && req.mode != Mode::Deactivate {
        let error = format!("a request naming users must have mode deactivate, not {}", req.mode);
        return stage::fail(deps, &run_id, &req.sync, "fetcher", error).await;
    }
    crate::admission::start(deps, req, run_id).await
}

/// A request without a run id gets one derived from its message id, so a
/// redelivered request does not start a second run.
fn run_id_for(ctx: &Ctx) -> RunId {
    match &ctx.message_id {
        Some(id) => RunId::parse(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes()).to_string())
            .unwrap_or_else(|_| RunId::generate()),
        None => RunId::generate(),
    }
}

/// Reads one Graph page and passes it on.
pub async fn handle_fetch(deps: &Deps, msg: FetchPage, ctx: &Ctx) -> Outcome {
    let Some(clients) = deps.sync(&msg.sync) else {
        let error = format!("no sync named {:?} is configured", msg.sync.as_str());
        return stage::fail(deps, &msg.run_id, &msg.sync, "fetcher", error).await;
    };
    if !msg.options.users.is_empty() {
        // `xaas users deactivate`: the run's one page is the named users,
        // which the mapper turns into bulk-deletes; the source is not read.
        return publish_page(deps, &msg, Vec::new(), Vec::new(), None, None).await;
    }
    let Some(graph) = clients.graph() else {
        // `Needs::of` gives every fetching process its Graph clients.
        let error = "this worker was started without a Graph client; run the fetcher role".to_string();
        return stage::fail(deps, &msg.run_id, &msg.sync, "fetcher", error).await;
    };
    let mode = msg.options.mode;
    if let (Mode::Delta, Some(Err(e))) = (mode, &clients.config.source.delta_filter) {
        let error = format!(
            "{}: a delta run applies it to each record itself (Graph's delta takes no $filter), and cannot: {e}; \
             use `property eq 'value'` clauses joined by and (or by or), or run this sync in full mode",
            clients.config.setting("source.filter")
        );
        return stage::fail(deps, &msg.run_id, &msg.sync, "fetcher", error).await;
    }
    let query = clients.users_query(mode);
    let url = match &msg.link {
        Some(link) => link.clone(),
        None if mode == Mode::Delta => graph.delta_url(&query).to_string(),
        None => graph.users_url(&query).to_string(),
    };
    let result = if mode == Mode::Delta {
        graph.get_delta_page(&url, query.page_size).await
    } else {
        graph.get_page(&url).await
    };
    let page = match result {
        Ok(page) => page,
        Err(e @ GraphError::DeltaExpired { .. }) if mode == Mode::Delta && !msg.options.full_state => {
            return resync(deps, &msg, &e).await;
        }
        Err(e) if e.is_retryable() => {
            let error = format!("reading Graph page {}: {e}", msg.seq);
            return stage::retry(deps, ctx, (&msg.run_id, &msg.sync), ("fetcher", e.kind()), error).await;
        }
        Err(e) => {
            let error = format!("reading Graph page {}: {e}", msg.seq);
            return stage::fail(deps, &msg.run_id, &msg.sync, "fetcher", error).await;
        }
    };

    publish_page(deps, &msg, page.users, page.removed, page.next_link, page.delta_link).await
}

/// Publishes what reading `msg`'s page brought, and asks for the next one.
async fn publish_page(
    deps: &Deps,
    msg: &FetchPage,
    users: Vec<serde_json::Value>,
    removed: Vec<xaas_core::RemovedUser>,
    next_link: Option<String>,
    delta_link: Option<String>,
) -> Outcome {
    let (n_users, n_removed) = (users.len() as u32, removed.len() as u32);
    let (out, next) = msg.answer(users, removed, next_link, delta_link);
    let last = out.last;
    let names = deps.broker.names();
    let publish = async {
        deps.broker.publish(&names.pages(), &out).await?;
        crate::failpoint::hit("fetcher.after_page_published");
        if let Some(next) = &next {
            deps.broker.publish(&names.fetch(), next).await?;
        }
        emit(
            &deps.broker,
            &msg.run_id,
            &msg.sync,
            EventKind::PageFetched { seq: msg.seq, users: n_users, removed: n_removed, last },
        )
        .await
    };
    match publish.await {
        Ok(_) => {
            metrics::counter!(crate::run_metrics::PAGES_FETCHED).increment(1);
            Outcome::Ack
        }
        Err(e) => Outcome::Retry { error: e.to_string() },
    }
}

/// Graph refused the delta token: record why, and read the full state from
/// this page on. Pages already read stay valid (they are changes that
/// happened); the full state that follows makes the run complete.
async fn resync(deps: &Deps, msg: &FetchPage, error: &GraphError) -> Outcome {
    let reason = format!("Graph refused the stored delta token ({error}); the run reads the full state instead");
    tracing::warn!(sync = %msg.sync, run_id = %msg.run_id, %reason, "full resync");
    let mut options = msg.options.clone();
    options.full_state = true;
    let restart = FetchPage { options, link: None, ..msg.clone() };
    let done = async {
        emit(&deps.broker, &msg.run_id, &msg.sync, EventKind::DeltaResync { reason }).await?;
        deps.broker.publish(&deps.broker.names().fetch(), &restart).await
    };
    match done.await {
        Ok(()) => Outcome::Ack,
        Err(e) => Outcome::Retry { error: e.to_string() },
    }
}
