//! The uploader: the only stage with state, all of it recoverable from its
//! own events (DESIGN §5).
//!
//! One uploader is active per sync (the batches queue has a single active
//! consumer); others stand by and take over on failure. It
//! - coalesces batches into full bulk requests (the `Packer`), holding their
//!   deliveries unacked until every profile of a batch is loaded;
//! - opens a session only when it has something to send, counts bulk
//!   requests, and at the session limit triggers the import, waits out
//!   Okta's cooldown and opens the next;
//! - records each step as a `RunEvent`, confirmed before the batch is acked:
//!   `BulkSending` before a request (so a crash errs towards an early
//!   rollover, never a 51st request), `BulkLoaded` after Okta's 202;
//! - skips profiles unchanged since their last confirmed upload (the
//!   roster, see `xaas_core::roster`) and refuses a second user with an
//!   externalId the run already had (`xaas_core::changes`);
//! - holds every deactivation back until the run is fully loaded; then
//!   decides them against the roster and the guards (`xaas_core::reconcile`),
//!   records the list and sends it through the same packing and session
//!   rules as everything else;
//! - once a run is fully loaded, queues a `FinishRun` for itself, then
//!   deactivates, triggers, follows each session to its end, saves what Okta
//!   confirmed to the roster and reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures_lite::StreamExt;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use xaas_broker::{BrokerError, Delivery, Incoming};
use xaas_core::changes::{Queued, sort_batch};
use xaas_core::ledger::{DEACTIVATION_PAGE, Fate, Ledger};
use xaas_core::limits::Limits;
use xaas_core::packing::{Packed, Packer, PieceMeta, bulk_body_len};
use xaas_core::reconcile::{self, Guards};
use xaas_core::roster::{Roster, RosterEntry};
use xaas_core::{
    Action, Batch, EventKind, ExternalId, FinishRun, Mode, OktaProfile, Op, Piece, ProfileChange, Rejected, RunId,
    RunOptions, SessionStatus, SyncName, UploaderMessage,
};
use xaas_okta::{OktaClient, OktaError};

use crate::deps::Deps;
use crate::events::emit;

/// externalIds per `DeactivationsPlanned` event (about 80 KB).
const DEACTIVATIONS_PER_EVENT: usize = 2_000;

/// Deliveries the uploader may hold unacked. A partial request holds at most
/// `profiles_per_request - 1` profiles, so this bounds nothing in practice
/// but keeps a misbehaving producer from flooding memory.
pub const PREFETCH: u16 = 1000;

/// Why the uploader stopped working on a message.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// SIGTERM: leave everything unacked; the successor resumes from the events.
    #[error("shutting down")]
    Shutdown,
    /// The broker could not record a step; nothing may be acked without it.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Okta refused in a way waiting cannot fix (credentials, identity source).
    #[error("{0}")]
    Fatal(String),
}

struct Held {
    delivery: Delivery,
    batch: Batch,
}

/// What this process has received of one run but not yet settled.
struct RunBuffer {
    options: RunOptions,
    packer: Packer,
    held: Vec<Held>,
    /// Parts received per page, and how many parts each page has.
    seen: BTreeMap<u32, (u32, BTreeSet<u32>)>,
    total_pages: Option<u32>,
    delta_link: Option<String>,
    finish_queued: bool,
    dry_run_requests: u32,
    /// Why each queued position is sent, by (page, part, position).
    pending: HashMap<(u32, u32, u32), ProfileChange>,
    /// externalIds queued in the packer and not loaded yet.
    queued: HashMap<ExternalId, Queued>,
}

impl RunBuffer {
    fn new(options: RunOptions, limits: Limits) -> Self {
        Self {
            options,
            packer: Packer::new(limits),
            held: Vec::new(),
            seen: BTreeMap::new(),
            total_pages: None,
            delta_link: None,
            finish_queued: false,
            dry_run_requests: 0,
            pending: HashMap::new(),
            queued: HashMap::new(),
        }
    }

    /// Queues profiles for bulk requests, remembering why each is sent.
    fn enqueue(&mut self, op: Op, meta: PieceMeta, items: Vec<(u32, OktaProfile, ProfileChange)>) {
        let mut profiles = Vec::with_capacity(items.len());
        for (index, profile, change) in items {
            let digest = change.digest.clone();
            self.queued.insert(change.external_id.clone(), Queued { page: meta.page_seq, digest });
            self.pending.insert((meta.page_seq, meta.part, index), change);
            profiles.push((index, profile));
        }
        self.packer.push(op, meta, profiles);
    }

    /// Why each profile of `p` is sent, in order; forgets them as queued.
    fn take_changes(&mut self, p: &Packed) -> Vec<ProfileChange> {
        let mut out = Vec::with_capacity(p.profiles.len());
        for (profile, pos) in explode(p) {
            let change = self.pending.remove(&(pos.page_seq, pos.part, pos.from));
            if self.queued.get(&profile.external_id).is_some_and(|q| q.page == pos.page_seq) {
                self.queued.remove(&profile.external_id);
            }
            out.push(change.unwrap_or_else(|| ProfileChange {
                external_id: profile.external_id.clone(),
                action: if p.op == Op::Delete { Action::Deactivate } else { Action::Create },
                changed: Vec::new(),
                digest: None,
            }));
        }
        out
    }

    fn note(&mut self, b: &Batch) {
        self.options.full_state |= b.options.full_state;
        let entry = self.seen.entry(b.page_seq).or_insert_with(|| (b.parts, BTreeSet::new()));
        entry.0 = b.parts;
        entry.1.insert(b.part);
        if let Some(total) = b.total_pages {
            self.total_pages = Some(total);
        }
        if b.delta_link.is_some() {
            self.delta_link.clone_from(&b.delta_link);
        }
    }

    /// The held copy of `b`, if this uploader already holds one.
    fn held_copy(&mut self, b: &Batch) -> Option<&mut Held> {
        self.held.iter_mut().find(|h| h.batch.page_seq == b.page_seq && h.batch.part == b.part)
    }
}

/// The uploader of one sync.
pub struct Uploader {
    deps: Deps,
    sync: SyncName,
    okta: OktaClient,
    limits: Limits,
    guards: Guards,
    shutdown: CancellationToken,
    ledger: Option<Ledger>,
    roster: Option<Roster>,
    runs: HashMap<RunId, RunBuffer>,
}

impl Uploader {
    pub fn new(deps: Deps, sync: SyncName, shutdown: CancellationToken) -> Result<Self, Stop> {
        let clients = deps.sync(&sync).ok_or_else(|| Stop::Fatal(format!("no sync named {sync} is configured")))?;
        let (okta, limits, guards) = (clients.okta.clone(), clients.config.limits, clients.config.guards);
        Ok(Self { deps, sync, okta, limits, guards, shutdown, ledger: None, roster: None, runs: HashMap::new() })
    }

    /// Consumes the sync's batches queue until shutdown. Returns an error
    /// only when the uploader cannot go on safely; its unacked deliveries
    /// then return to the queue for the standby.
    pub async fn run(mut self) -> Result<(), Stop> {
        let broker = self.deps.broker.clone();
        let queue = broker.names().batches(&self.sync);
        let tag = format!("{}/uploader/{}", broker.config().connection_name, self.sync);
        let mut consumer = broker.consume(&queue, PREFETCH, &tag).await?;
        tracing::info!(sync = %self.sync, %queue, "uploader waiting to become the active consumer");
        let result = loop {
            let next = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break Ok(()),
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(incoming)) => match self.on_delivery(incoming).await {
                    Ok(()) => {}
                    Err(Stop::Shutdown) => break Ok(()),
                    Err(e) => break Err(e),
                },
                Some(Err(e)) => break Err(e.into()),
                None => break Ok(()),
            }
        };
        // Unacked deliveries go back to the queue when the channel closes.
        consumer.close().await;
        result
    }

    /// Handles one delivery from the batches queue.
    pub async fn on_delivery(&mut self, incoming: Incoming) -> Result<(), Stop> {
        if self.ledger.is_none() {
            self.ledger = Some(self.rebuild().await?);
        }
        if self.roster.is_none() {
            let records = self.deps.broker.read_roster(&self.sync).await?;
            let roster = Roster::replay(self.sync.clone(), &records);
            tracing::info!(sync = %self.sync, records = records.len(), known = roster.is_known(), active = roster.len(), "roster read");
            self.roster = Some(roster);
        }
        let origin = incoming.queue().to_string();
        if let Err(e) = incoming.decode::<serde_json::Value>() {
            return self.park(&incoming.delivery, &origin, "undecodable", &e.to_string()).await;
        }
        let message = match UploaderMessage::from_json(incoming.body()) {
            Ok(m) => m,
            Err(e) => return self.park(&incoming.delivery, &origin, "undecodable", &e.to_string()).await,
        };
        if message_sync(&message) != &self.sync {
            let error = format!("a message of sync {} arrived on {origin}", message_sync(&message));
            return self.park(&incoming.delivery, &origin, "wrong queue", &error).await;
        }
        let delivery = incoming.into_delivery();
        let run = message.run_id().clone();
        let span = tracing::info_span!("upload", sync = %self.sync, run_id = %run);
        let result = match message {
            UploaderMessage::Batch(batch) => self.take_batch(batch, delivery).instrument(span).await,
            UploaderMessage::FinishRun(finish) => {
                let result = self.finish_run(finish, &delivery).instrument(span).await;
                if matches!(result, Err(Stop::Fatal(_))) {
                    xaas_broker::ack(&delivery).await;
                }
                result
            }
        };
        match result {
            // Okta refused for good (credentials, identity source): the run
            // fails with the reason instead of the worker crash-looping.
            Err(Stop::Fatal(reason)) => {
                tracing::error!(sync = %self.sync, run_id = %run, %reason, "run failed");
                self.fail_run(&run, reason).await
            }
            other => other,
        }
    }

    /// Replays the events stream into a fresh ledger: how a standby learns
    /// where its predecessor stopped.
    async fn rebuild(&self) -> Result<Ledger, Stop> {
        let events = self.deps.broker.read_all_events().await?;
        let ledger = Ledger::replay(self.sync.clone(), &events);
        tracing::info!(sync = %self.sync, events = events.len(), session = ?ledger.open_session(), "uploader is active; state rebuilt from the events stream");
        Ok(ledger)
    }

    fn ledger(&self) -> &Ledger {
        self.ledger.as_ref().expect("the ledger is rebuilt before the first message is handled")
    }

    fn roster(&self) -> &Roster {
        self.roster.as_ref().expect("the roster is read before the first message is handled")
    }

    /// Records an event (confirmed) and folds it into the ledger.
    async fn record(&mut self, run: &RunId, kind: EventKind) -> Result<(), Stop> {
        let event = emit(&self.deps.broker, run, &self.sync, kind).await?;
        if let Some(ledger) = self.ledger.as_mut() {
            ledger.apply(&event);
        }
        Ok(())
    }

    async fn park(&self, d: &Delivery, origin: &str, reason: &str, error: &str) -> Result<(), Stop> {
        tracing::warn!(sync = %self.sync, reason, error, "parking a message");
        self.deps.broker.park(d, origin, reason, error).await?;
        Ok(())
    }

    async fn take_batch(&mut self, batch: Batch, delivery: Delivery) -> Result<(), Stop> {
        let run = batch.run_id.clone();
        let ledger = self.ledger();
        if ledger.is_run_closed(&run) || ledger.is_batch_done(&batch) {
            // A duplicate, or a late batch of a run that already ended.
            xaas_broker::ack(&delivery).await;
            return Ok(());
        }
        let remaining = ledger.remaining(&batch);
        let limits = self.limits;
        let buffer = self.runs.entry(run.clone()).or_insert_with(|| RunBuffer::new(batch.options.clone(), limits));
        if let Some(held) = buffer.held_copy(&batch) {
            // A second copy: the mapper published the batch twice (its page
            // was redelivered), or the broker handed it out again after a
            // connection recovery, when the first copy's ack can no longer
            // reach it. Keep the newest delivery unacked until the profiles
            // are loaded, and settle the older one.
            let older = std::mem::replace(&mut held.delivery, delivery);
            xaas_broker::ack(&older).await;
            return Ok(());
        }
        buffer.note(&batch);
        if let Some(ledger) = self.ledger.as_mut() {
            ledger.note_options(&run, &batch.options);
        }
        self.note_source_facts(&batch).await?;
        if batch.profiles.is_empty() {
            let kind = EventKind::BatchEmpty {
                page_seq: batch.page_seq,
                part: batch.part,
                parts: batch.parts,
                total_pages: batch.total_pages,
            };
            self.hold(&run, delivery, batch);
            self.record(&run, kind).await?;
        } else {
            let meta = PieceMeta {
                page_seq: batch.page_seq,
                part: batch.part,
                parts: batch.parts,
                len: batch.profiles.len() as u32,
                total_pages: batch.total_pages,
            };
            let sorted = {
                let buffer = self.runs.get(&run).map(|b| &b.queued);
                let empty = HashMap::new();
                sort_batch(&batch, remaining, self.ledger().run(&run), self.roster(), buffer.unwrap_or(&empty))
            };
            let op = batch.op;
            self.hold(&run, delivery, batch);
            if !sorted.refused.is_empty() {
                let pieces = pieces_at(meta, sorted.refused.iter().map(|(i, _, _)| *i));
                let refused = sorted
                    .refused
                    .into_iter()
                    .map(|(_, id, reason)| Rejected { external_id: Some(id.to_string()), reason })
                    .collect();
                self.record(&run, EventKind::ProfilesRefused { refused, pieces }).await?;
            }
            if !sorted.unchanged.is_empty() {
                let pieces = pieces_at(meta, sorted.unchanged.iter().map(|(i, _)| *i));
                let external_ids = sorted.unchanged.into_iter().map(|(_, id)| id).collect();
                self.record(&run, EventKind::ProfilesUnchanged { pieces, external_ids }).await?;
            }
            if !sorted.queued_deletes.is_empty() {
                let pieces = pieces_at(meta, sorted.queued_deletes.iter().map(|(i, _)| *i));
                let external_ids = sorted.queued_deletes.into_iter().map(|(_, id)| id).collect();
                self.record(&run, EventKind::DeactivationsQueued { pieces, external_ids }).await?;
            }
            if sorted.flush_first {
                // An older copy of one of these is still queued: it goes first,
                // so no request carries one externalId twice.
                while let Some(packed) = self.runs.get_mut(&run).and_then(|b| b.packer.drain()) {
                    self.send(&run, packed).await?;
                }
            }
            if !sorted.send.is_empty()
                && let Some(buffer) = self.runs.get_mut(&run)
            {
                buffer.enqueue(op, meta, sorted.send);
            }
            while let Some(packed) = self.runs.get_mut(&run).and_then(|b| b.packer.next_full()) {
                self.send(&run, packed).await?;
            }
        }
        self.settle(&run).await
    }

    fn hold(&mut self, run: &RunId, delivery: Delivery, batch: Batch) {
        if let Some(buffer) = self.runs.get_mut(run) {
            buffer.held.push(Held { delivery, batch });
        }
    }

    /// Records what a batch says about the source besides its profiles, the
    /// first time the run meets it: the deltaLink of the last page, and the
    /// users the mapper rejected (still in the source: not to deactivate).
    async fn note_source_facts(&mut self, batch: &Batch) -> Result<(), Stop> {
        let run = &batch.run_id;
        let progress = self.ledger().run(run);
        if let Some(link) = &batch.delta_link
            && progress.and_then(|r| r.delta_link()).is_none()
        {
            self.record(run, EventKind::DeltaLinkReceived { delta_link: link.clone() }).await?;
        }
        let progress = self.ledger().run(run);
        let rejected: Vec<String> = batch
            .rejected
            .iter()
            .filter_map(|r| r.external_id.clone())
            .filter(|id| !progress.is_some_and(|p| p.rejected_in_source().contains(id)))
            .collect();
        if !rejected.is_empty() {
            self.record(run, EventKind::RejectedInSource { external_ids: rejected }).await?;
        }
        Ok(())
    }

    /// After progress on `run`: flush the last partial request once every
    /// page is in, queue the `FinishRun` once everything is loaded, and ack
    /// the batches that are fully accounted for. `FinishRun` is published
    /// before the last acks, so a crash in between cannot strand the run.
    async fn settle(&mut self, run: &RunId) -> Result<(), Stop> {
        if self.all_received(run) {
            while let Some(packed) = self.runs.get_mut(run).and_then(|b| b.packer.drain()) {
                self.send(run, packed).await?;
            }
        }
        let loaded = self.ledger().run(run).is_some_and(|r| r.is_loaded());
        let Some(buffer) = self.runs.get_mut(run) else { return Ok(()) };
        if loaded && !buffer.finish_queued {
            let finish = FinishRun {
                v: xaas_core::MESSAGE_VERSION,
                run_id: run.clone(),
                sync: self.sync.clone(),
                options: buffer.options.clone(),
                finish_run: true,
                delta_link: buffer.delta_link.clone(),
            };
            self.deps.broker.publish(&self.deps.broker.names().batches(&self.sync), &finish).await?;
            buffer.finish_queued = true;
        }
        let ledger = self.ledger.as_ref().expect("rebuilt");
        let (done, kept): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut buffer.held).into_iter().partition(|h| ledger.is_batch_done(&h.batch));
        buffer.held = kept;
        for h in done {
            xaas_broker::ack(&h.delivery).await;
        }
        Ok(())
    }

    /// Every page of the run has arrived here or was accounted for earlier.
    fn all_received(&self, run: &RunId) -> bool {
        let ledger = self.ledger();
        let Some(buffer) = self.runs.get(run) else { return false };
        let Some(total) = buffer.total_pages.or_else(|| ledger.run(run).and_then(|r| r.total_pages())) else {
            return false;
        };
        (0..total).all(|page| {
            let seen = buffer.seen.get(&page);
            let Some(parts) = seen.map(|s| s.0).or_else(|| ledger.page_parts(run, page)) else { return false };
            (0..parts).all(|part| seen.is_some_and(|s| s.1.contains(&part)) || ledger.part_done(run, page, part))
        })
    }

    /// Sends one packed request, isolating profiles Okta refuses and rolling
    /// sessions over as needed. Returns once every profile is loaded or
    /// reported as refused.
    async fn send(&mut self, run: &RunId, packed: Packed) -> Result<(), Stop> {
        let dry_run = self.runs.get(run).is_some_and(|b| b.options.dry_run);
        if dry_run {
            return self.pretend(run, packed).await;
        }
        let mut pending = vec![packed];
        let mut failures = 0u32;
        while let Some(p) = pending.pop() {
            let session = self.ensure_session(run).await?;
            let request_no = session.requests + 1;
            let bytes = p.body_bytes as u64;
            let profiles = p.profiles.len() as u32;
            let (op, sid) = (p.op, session.id.clone());
            self.record(run, EventKind::BulkSending { session_id: sid.clone(), request_no, op, profiles, bytes })
                .await?;
            let result = match op {
                Op::Upsert => self.okta.bulk_upsert(&sid, &p.profiles).await,
                Op::Delete => self.okta.bulk_delete(&sid, &p.profiles).await,
            };
            match result {
                Ok(()) => {
                    failures = 0;
                    crate::failpoint::hit("uploader.after_bulk_accepted");
                    let pieces = p.pieces.clone();
                    let changes = self.runs.get_mut(run).map(|b| b.take_changes(&p)).unwrap_or_default();
                    let kind = EventKind::BulkLoaded {
                        session_id: sid.clone(),
                        request_no,
                        op,
                        profiles,
                        bytes,
                        pieces,
                        changes,
                    };
                    self.record(run, kind).await?;
                    metrics::counter!("xaas_bulk_requests_total", "op" => op_label(op)).increment(1);
                    if request_no >= self.limits.requests_per_session {
                        self.trigger(run, &sid).await?;
                    }
                }
                Err(OktaError::Validation { summary, causes, .. }) => {
                    if !self.session_still_open(&sid).await? {
                        pending.push(p);
                        continue;
                    }
                    if says_session_full(&summary, &causes) {
                        // Our count was low, which recording BulkSending first
                        // should prevent; Okta's word wins: roll over, resend.
                        tracing::warn!(session = %sid, "Okta says the session is full; rolling over");
                        let limit = self.limits.requests_per_session;
                        if let Some(ledger) = self.ledger.as_mut() {
                            ledger.mark_session_full(limit);
                        }
                        pending.push(p);
                        continue;
                    }
                    let (refused, rest) = isolate(&p, &summary, &causes);
                    if !refused.is_empty() {
                        let (rejected, pieces) = refused_report(&refused, &summary, &causes);
                        self.record(run, EventKind::ProfilesRefused { refused: rejected, pieces }).await?;
                        if let Some(buffer) = self.runs.get_mut(run) {
                            buffer.take_changes(&assemble(p.op, refused));
                        }
                    }
                    pending.extend(rest);
                }
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    let reason = e.to_string();
                    metrics::counter!("xaas_retries_total", "stage" => "uploader").increment(1);
                    self.record(run, EventKind::Retrying { stage: "uploader".into(), attempt: failures, reason })
                        .await?;
                    self.sleep(e.retry_after().unwrap_or_else(|| backoff(failures))).await?;
                    pending.push(p);
                }
                Err(e) => return Err(Stop::Fatal(e.to_string())),
            }
        }
        Ok(())
    }

    /// A dry run goes through every step but Okta: its requests are counted
    /// and recorded as loaded into no session.
    async fn pretend(&mut self, run: &RunId, p: Packed) -> Result<(), Stop> {
        let Some(buffer) = self.runs.get_mut(run) else { return Ok(()) };
        buffer.dry_run_requests += 1;
        let changes = buffer.take_changes(&p);
        let kind = EventKind::BulkLoaded {
            session_id: "dry-run".into(),
            request_no: buffer.dry_run_requests,
            op: p.op,
            profiles: p.profiles.len() as u32,
            bytes: p.body_bytes as u64,
            pieces: p.pieces,
            changes,
        };
        self.record(run, kind).await
    }

    /// The session to load into: the open one while it has room, else a new
    /// one once the cooldown after the last trigger has passed.
    async fn ensure_session(&mut self, run: &RunId) -> Result<xaas_core::ledger::OpenSession, Stop> {
        let mut refusals = 0u32;
        loop {
            if let Some(open) = self.ledger().open_session().cloned() {
                if open.requests < self.limits.requests_per_session {
                    return Ok(open);
                }
                self.trigger(run, &open.id).await?;
                continue;
            }
            if let Some(at) = self.ledger().next_create_at(self.limits.cooldown) {
                let wait = at - OffsetDateTime::now_utc();
                if wait.is_positive() {
                    let wait = Duration::try_from(wait).unwrap_or_default();
                    tracing::info!(sync = %self.sync, seconds = wait.as_secs_f64(), "waiting out Okta's cooldown");
                    crate::failpoint::hit("uploader.cooldown_wait");
                    self.sleep(wait).await?;
                    self.record(run, EventKind::CooldownWaited { seconds: wait.as_secs_f64() }).await?;
                }
            }
            match self.okta.create_session().await {
                Ok(session) => {
                    self.record(run, EventKind::SessionOpened { session_id: session.id }).await?;
                }
                Err(OktaError::CreateRefused { summary }) => {
                    // Either a session is still open (ours, from before a
                    // crash) or Okta's cooldown is longer than ours.
                    match self.okta.list_sessions().await {
                        Ok(list) => {
                            if let Some(open) = list.into_iter().find(|s| s.status.is_open()) {
                                tracing::info!(session = %open.id, "adopting the open session");
                                self.record(run, EventKind::SessionOpened { session_id: open.id }).await?;
                                continue;
                            }
                        }
                        Err(e) if !e.is_retryable() => return Err(Stop::Fatal(e.to_string())),
                        Err(_) => {}
                    }
                    refusals += 1;
                    if refusals == 1 || refusals.is_multiple_of(10) {
                        let reason = format!("Okta refused a new session ({summary}); waiting for its cooldown");
                        self.record(run, EventKind::Retrying { stage: "uploader".into(), attempt: refusals, reason })
                            .await?;
                    }
                    self.sleep(backoff(refusals)).await?;
                }
                Err(e) if e.is_retryable() => {
                    refusals += 1;
                    self.sleep(e.retry_after().unwrap_or_else(|| backoff(refusals))).await?;
                }
                Err(e) => return Err(Stop::Fatal(e.to_string())),
            }
        }
    }

    /// Triggers the import of `session_id`. A trigger Okta refuses is looked
    /// up: already triggered counts as triggered; an empty session (a request
    /// was announced but never reached Okta) is cancelled instead.
    async fn trigger(&mut self, run: &RunId, session_id: &str) -> Result<(), Stop> {
        let requests = self.ledger().open_session().map_or(0, |s| s.requests);
        let mut failures = 0u32;
        loop {
            match self.okta.start_import(session_id).await {
                Ok(_) => break,
                Err(OktaError::Validation { .. }) => {
                    let session = self.okta.get_session(session_id).await.map_err(|e| Stop::Fatal(e.to_string()))?;
                    match session.status {
                        SessionStatus::Triggered | SessionStatus::Completed | SessionStatus::Error => break,
                        SessionStatus::Created => {
                            self.okta.delete_session(session_id).await.map_err(|e| Stop::Fatal(e.to_string()))?;
                            let kind = EventKind::SessionFinished {
                                session_id: session_id.into(),
                                status: SessionStatus::Closed,
                                empty: true,
                            };
                            return self.record(run, kind).await;
                        }
                        status => {
                            let kind =
                                EventKind::SessionFinished { session_id: session_id.into(), status, empty: false };
                            return self.record(run, kind).await;
                        }
                    }
                }
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    self.sleep(e.retry_after().unwrap_or_else(|| backoff(failures))).await?;
                }
                Err(e) => return Err(Stop::Fatal(e.to_string())),
            }
        }
        crate::failpoint::hit("uploader.after_trigger");
        self.record(run, EventKind::SessionTriggered { session_id: session_id.into(), requests }).await
    }

    /// After a 400 on a bulk request: is the session still taking loads?
    /// When it is not (expired, cancelled), the ledger forgets it.
    async fn session_still_open(&mut self, session_id: &str) -> Result<bool, Stop> {
        match self.okta.get_session(session_id).await {
            Ok(s) if s.status.is_open() => Ok(true),
            Ok(s) => {
                tracing::warn!(session = session_id, status = s.status.as_str(), "the session no longer takes loads");
                if let Some(ledger) = self.ledger.as_mut() {
                    ledger.drop_session();
                }
                Ok(false)
            }
            Err(e) if e.is_retryable() => Ok(true),
            Err(e) => Err(Stop::Fatal(e.to_string())),
        }
    }

    /// Closes a fully loaded run: triggers its open session, follows each of
    /// its sessions to the end, and records the outcome. Acked only after the
    /// outcome is recorded, so a successor finishes what this one started.
    async fn finish_run(&mut self, finish: FinishRun, delivery: &Delivery) -> Result<(), Stop> {
        let run = finish.run_id.clone();
        if self.ledger().is_run_closed(&run) {
            xaas_broker::ack(delivery).await;
            return Ok(());
        }
        if !self.ledger().run(&run).is_some_and(|r| r.is_loaded()) {
            let error = "FinishRun for a run whose pages are not all loaded (events missing from the stream?)";
            return self.park(delivery, &self.deps.broker.names().batches(&self.sync), "inconsistent", error).await;
        }
        let delta_link = finish
            .delta_link
            .clone()
            .or_else(|| self.ledger().run(&run).and_then(|r| r.delta_link().map(String::from)));
        let mut options = finish.options.clone();
        options.full_state |= self.ledger().run(&run).is_some_and(|r| r.reads_full_state());
        let tripped = self.deactivate(&run, &options, delta_link.as_deref()).await?;

        // The deactivations may have used sessions of their own: read again.
        let sessions = self.ledger().run(&run).map(|r| r.sessions.clone()).unwrap_or_default();
        let mut failed = Vec::new();
        if !options.dry_run {
            if let Some(open) = self.ledger().open_session().cloned()
                && sessions.contains(&open.id)
            {
                self.trigger(&run, &open.id).await?;
            }
            for session_id in
                sessions.iter().filter(|s| self.ledger().awaiting().contains(s)).cloned().collect::<Vec<_>>()
            {
                let status = self.follow(&session_id).await?;
                let kind = EventKind::SessionFinished { session_id: session_id.clone(), status, empty: false };
                self.record(&run, kind).await?;
            }
            for session_id in &sessions {
                match self.ledger().session_status(session_id) {
                    Some(SessionStatus::Completed) => {}
                    Some(SessionStatus::Closed) if self.ledger().was_cancelled_empty(session_id) => {}
                    Some(status) => failed.push(format!("session {session_id} ended {}", status.as_str())),
                    None => failed.push(format!("session {session_id} has no known outcome")),
                }
            }
            self.save_roster(&run).await?;
        }
        let kind = if let Some(reason) = tripped {
            EventKind::RunFailed { reason: format!("deactivation guard: {reason}") }
        } else if failed.is_empty() {
            // A dry run changed nothing in Okta: the next real run must read
            // the same changes, so it keeps the previous deltaLink.
            EventKind::RunCompleted { delta_link: if options.dry_run { None } else { delta_link } }
        } else {
            EventKind::RunFailed {
                reason: format!(
                    "Okta did not complete the import: {}; check Import Monitoring in the Okta admin console, then run the sync again",
                    failed.join(", ")
                ),
            }
        };
        self.record(&run, kind).await?;
        self.runs.remove(&run);
        xaas_broker::ack(delivery).await;
        Ok(())
    }

    /// Decides and sends the run's deactivations, once every page of it is
    /// accounted for. The list is recorded before the first request, so a
    /// successor sends the rest of exactly that list. Returns why a guard
    /// refused them, when one did (nothing is deactivated then).
    async fn deactivate(
        &mut self,
        run: &RunId,
        options: &RunOptions,
        delta_link: Option<&str>,
    ) -> Result<Option<String>, Stop> {
        let Some(progress) = self.ledger().run(run) else { return Ok(None) };
        if let Some(reason) = &progress.guard_tripped {
            return Ok(Some(reason.clone()));
        }
        let plan = match progress.deactivation_plan() {
            Some(plan) => plan,
            None => {
                let partial = (options.mode == Mode::Delta && delta_link.is_none())
                    .then(|| "the delta round ended without its deltaLink (the page chain ended early)".to_string());
                let decision = reconcile::decide(progress, options, self.roster(), &self.guards, partial);
                let (deactivations, roster) = (decision.candidates, decision.roster);
                if let Some(reason) = decision.tripped {
                    tracing::warn!(sync = %self.sync, run_id = %run, %reason, "deactivation guard tripped");
                    self.record(run, EventKind::GuardTripped { reason: reason.clone(), deactivations, roster }).await?;
                    return Ok(Some(reason));
                }
                if let Some(reason) = decision.overridden {
                    tracing::warn!(sync = %self.sync, run_id = %run, %reason, "deactivation guard overridden for this run");
                    self.record(run, EventKind::GuardOverridden { reason, deactivations, roster }).await?;
                }
                let mut plan: Vec<Vec<ExternalId>> =
                    decision.deactivate.chunks(DEACTIVATIONS_PER_EVENT).map(<[ExternalId]>::to_vec).collect();
                if plan.is_empty() {
                    plan.push(Vec::new());
                }
                let parts = plan.len() as u32;
                for (part, external_ids) in plan.iter().enumerate() {
                    let kind = EventKind::DeactivationsPlanned {
                        part: part as u32,
                        parts,
                        external_ids: external_ids.clone(),
                    };
                    self.record(run, kind).await?;
                }
                plan
            }
        };
        let limits = self.limits;
        self.runs.entry(run.clone()).or_insert_with(|| RunBuffer::new(options.clone(), limits));
        let parts = plan.len() as u32;
        for (part, ids) in plan.into_iter().enumerate() {
            let batch = Batch {
                v: xaas_core::MESSAGE_VERSION,
                run_id: run.clone(),
                sync: self.sync.clone(),
                options: options.clone(),
                page_seq: DEACTIVATION_PAGE,
                part: part as u32,
                parts,
                total_pages: None,
                op: Op::Delete,
                profiles: ids.into_iter().map(|external_id| OktaProfile { external_id, profile: None }).collect(),
                rejected: Vec::new(),
                delta_link: None,
            };
            let meta = PieceMeta {
                page_seq: DEACTIVATION_PAGE,
                part: part as u32,
                parts,
                len: batch.profiles.len() as u32,
                total_pages: None,
            };
            let items: Vec<(u32, OktaProfile, ProfileChange)> = self
                .ledger()
                .remaining(&batch)
                .into_iter()
                .map(|(i, profile)| {
                    let change = ProfileChange {
                        external_id: profile.external_id.clone(),
                        action: Action::Deactivate,
                        changed: Vec::new(),
                        digest: None,
                    };
                    (i, profile, change)
                })
                .collect();
            if let Some(buffer) = self.runs.get_mut(run) {
                buffer.enqueue(Op::Delete, meta, items);
            }
            while let Some(packed) = self.runs.get_mut(run).and_then(|b| b.packer.next_full()) {
                self.send(run, packed).await?;
            }
        }
        while let Some(packed) = self.runs.get_mut(run).and_then(|b| b.packer.drain()) {
            self.send(run, packed).await?;
        }
        Ok(None)
    }

    /// Saves to the roster what Okta confirmed of this run: users upserted
    /// or deactivated in sessions that completed. Profiles of a session that
    /// failed are left as they were, so the next run sends them again.
    async fn save_roster(&mut self, run: &RunId) -> Result<(), Stop> {
        let Some(progress) = self.ledger().run(run) else { return Ok(()) };
        if !self.roster().is_known() && !progress.reads_full_state() {
            // Without a base, only a run that read everything can start one.
            return Ok(());
        }
        let confirmed = |session: &str| self.ledger().session_status(session) == Some(SessionStatus::Completed);
        let deactivated: Vec<ExternalId> =
            progress.deactivated().iter().filter(|(_, session)| confirmed(session)).map(|(id, _)| id.clone()).collect();
        let upserted: Vec<RosterEntry> = progress
            .ids()
            .iter()
            .filter_map(|(id, seen)| match &seen.fate {
                Fate::Upserted { session, digest: Some(digest) }
                    if confirmed(session) && !progress.deactivated().contains_key(id) =>
                {
                    Some(RosterEntry { external_id: id.clone(), digest: digest.clone() })
                }
                _ => None,
            })
            .collect();
        let records = self.roster().records_for(run, OffsetDateTime::now_utc(), upserted, deactivated);
        for record in &records {
            self.deps.broker.publish_roster(record).await?;
            if let Some(roster) = self.roster.as_mut() {
                roster.apply(record);
            }
        }
        if !records.is_empty() {
            tracing::info!(sync = %self.sync, run_id = %run, entries = Roster::record_entries(&records), active = self.roster().len(), "roster saved");
        }
        Ok(())
    }

    /// Polls a triggered session until Okta is done with it.
    async fn follow(&mut self, session_id: &str) -> Result<SessionStatus, Stop> {
        let mut polls = 0u32;
        loop {
            match self.okta.get_session(session_id).await {
                Ok(s) if s.status.is_final() => return Ok(s.status),
                Ok(_) => {}
                Err(e) if !e.is_retryable() => return Err(Stop::Fatal(e.to_string())),
                Err(_) => {}
            }
            polls += 1;
            self.sleep(Duration::from_millis(250 * u64::from(polls.min(20)))).await?;
        }
    }

    /// Sleeps unless the worker is asked to stop.
    async fn sleep(&self, d: Duration) -> Result<(), Stop> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Stop::Shutdown),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Fails a run for good: recorded, and its held batches dropped (the
    /// source still holds every user; a new run sends them).
    async fn fail_run(&mut self, run: &RunId, reason: String) -> Result<(), Stop> {
        self.record(run, EventKind::RunFailed { reason }).await?;
        if let Some(buffer) = self.runs.remove(run) {
            for h in buffer.held {
                xaas_broker::ack(&h.delivery).await;
            }
        }
        Ok(())
    }
}

fn message_sync(m: &UploaderMessage) -> &SyncName {
    match m {
        UploaderMessage::Batch(b) => &b.sync,
        UploaderMessage::FinishRun(f) => &f.sync,
    }
}

fn op_label(op: Op) -> &'static str {
    match op {
        Op::Upsert => "upsert",
        Op::Delete => "delete",
    }
}

/// Exponential backoff from 1 s, capped at 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// The pieces covering `positions` (ascending) of the batch `meta` describes.
fn pieces_at(meta: PieceMeta, positions: impl Iterator<Item = u32>) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    for i in positions {
        match pieces.last_mut() {
            Some(last) if last.to == i => last.to = i + 1,
            _ => pieces.push(Piece {
                page_seq: meta.page_seq,
                part: meta.part,
                parts: meta.parts,
                len: meta.len,
                total_pages: meta.total_pages,
                from: i,
                to: i + 1,
            }),
        }
    }
    pieces
}

/// One profile of a packed request with the batch position it came from.
fn explode(p: &Packed) -> Vec<(OktaProfile, Piece)> {
    let mut positions =
        p.pieces.iter().flat_map(|piece| (piece.from..piece.to).map(move |i| Piece { from: i, to: i + 1, ..*piece }));
    p.profiles.iter().cloned().filter_map(|profile| positions.next().map(|pos| (profile, pos))).collect()
}

/// Packs single positions back into a request, merging adjacent ones.
fn assemble(op: Op, items: Vec<(OktaProfile, Piece)>) -> Packed {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut profiles = Vec::with_capacity(items.len());
    for (profile, pos) in items {
        match pieces.last_mut() {
            Some(last) if last.page_seq == pos.page_seq && last.part == pos.part && last.to == pos.from => {
                last.to = pos.to;
            }
            _ => pieces.push(pos),
        }
        profiles.push(profile);
    }
    let body_bytes = bulk_body_len(&profiles);
    Packed { op, profiles, pieces, body_bytes, oversized: false }
}

/// Splits a refused request: profiles Okta's causes name are refused; when
/// no cause names one, the request is halved until the culprit stands alone.
/// Returns the refused profiles and the requests still to send.
fn isolate(p: &Packed, summary: &str, causes: &[String]) -> (Vec<(OktaProfile, Piece)>, Vec<Packed>) {
    let items = explode(p);
    let named = |profile: &OktaProfile| causes.iter().any(|c| names_id(c, profile.external_id.as_str()));
    let (refused, rest): (Vec<_>, Vec<_>) = items.iter().cloned().partition(|(profile, _)| named(profile));
    if !refused.is_empty() {
        let rest = if rest.is_empty() { vec![] } else { vec![assemble(p.op, rest)] };
        return (refused, rest);
    }
    if items.len() <= 1 {
        tracing::warn!(summary, "Okta refused a single profile");
        return (items, vec![]);
    }
    let (left, right) = items.split_at(items.len() / 2);
    // Sent in order: `pending` is a stack, so the right half goes first onto it.
    (vec![], vec![assemble(p.op, right.to_vec()), assemble(p.op, left.to_vec())])
}

/// Whether a 400 on a bulk request refuses the session rather than the
/// profiles: the request limit of the session was reached. Okta's exact text
/// is not documented; this matches the sandbox's ("already has 50 bulk
/// requests") and any wording that names the bulk request limit.
fn says_session_full(summary: &str, causes: &[String]) -> bool {
    std::iter::once(summary).chain(causes.iter().map(String::as_str)).any(|text| {
        let text = text.to_ascii_lowercase();
        text.contains("bulk request") && (text.contains("most") || text.contains("limit") || text.contains("maximum"))
    })
}

/// Whether an error cause names this externalId as a whole word.
fn names_id(cause: &str, id: &str) -> bool {
    let boundary =
        |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '@'));
    cause
        .match_indices(id)
        .any(|(at, _)| boundary(cause[..at].chars().next_back()) && boundary(cause[at + id.len()..].chars().next()))
}

fn refused_report(refused: &[(OktaProfile, Piece)], summary: &str, causes: &[String]) -> (Vec<Rejected>, Vec<Piece>) {
    let rejected = refused
        .iter()
        .map(|(profile, _)| {
            let id = profile.external_id.as_str();
            let why = causes.iter().filter(|c| names_id(c, id)).cloned().collect::<Vec<_>>();
            // A profile refused on its own with causes that name nobody
            // (per-attribute causes): those causes are about it.
            let reason = match (why.is_empty(), causes.is_empty()) {
                (false, _) => format!("Okta refused it: {}", why.join("; ")),
                (true, true) => format!("Okta refused it: {summary}"),
                (true, false) => format!("Okta refused it: {summary} ({})", causes.join("; ")),
            };
            Rejected { external_id: Some(id.to_string()), reason }
        })
        .collect();
    (rejected, refused.iter().map(|(_, piece)| *piece).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xaas_core::ExternalId;

    fn packed(n: u32) -> Packed {
        let profiles: Vec<OktaProfile> = (0..n)
            .map(|i| OktaProfile { external_id: ExternalId::parse(format!("user-{i}")).unwrap(), profile: None })
            .collect();
        let piece = Piece { page_seq: 0, part: 0, parts: 1, len: n, total_pages: Some(1), from: 0, to: n };
        Packed { op: Op::Upsert, body_bytes: bulk_body_len(&profiles), profiles, pieces: vec![piece], oversized: false }
    }

    #[test]
    fn named_profiles_are_refused_and_the_rest_resent_once() {
        let p = packed(10);
        let causes = vec!["profiles[3]: externalId 'user-3': firstName must be at most 50 characters".to_string()];
        let (refused, rest) = isolate(&p, "Api validation failed", &causes);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0.external_id.as_str(), "user-3");
        assert_eq!(refused[0].1, Piece { from: 3, to: 4, ..p.pieces[0] });
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].profiles.len(), 9);
        assert_eq!(rest[0].pieces.iter().map(|x| (x.from, x.to)).collect::<Vec<_>>(), vec![(0, 3), (4, 10)]);
        assert_eq!(rest[0].body_bytes, bulk_body_len(&rest[0].profiles));
    }

    #[test]
    fn without_names_the_request_is_halved_in_order() {
        let p = packed(5);
        let (refused, rest) = isolate(&p, "Api validation failed", &[]);
        assert!(refused.is_empty());
        // a stack: the left half is popped (sent) first
        assert_eq!(rest[1].profiles[0].external_id.as_str(), "user-0");
        assert_eq!(rest[1].profiles.len() + rest[0].profiles.len(), 5);
        let single = assemble(Op::Upsert, explode(&p)[..1].to_vec());
        let (refused, rest) = isolate(&single, "bad", &[]);
        assert_eq!(refused.len(), 1);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_full_session_is_told_apart_from_refused_profiles() {
        let full =
            "Session aps1 already has 50 bulk requests, the most a session can take; trigger it and open another";
        assert!(says_session_full("Api validation failed: session", &[full.to_string()]));
        let profile = "profiles[3] (externalId \"u3\"): costCenter is not an attribute of the profile".to_string();
        assert!(!says_session_full("Api validation failed: profiles", &[profile]));
    }

    #[test]
    fn ids_are_matched_as_whole_words() {
        assert!(names_id("externalId user-1 is bad", "user-1"));
        assert!(!names_id("externalId user-10 is bad", "user-1"));
        assert!(names_id("'a@b.example': bad email", "a@b.example"));
        assert!(!names_id("x.a@b.example", "a@b.example"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }
}
