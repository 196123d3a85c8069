//! What becomes of a delivery: a batch is sorted profile by profile
//! (`changes`) and its profiles queued into full requests; a `FinishRun`
//! starts closing its run.

use crate::changes::sort_batch;
use crate::messages::{Batch, EventKind, FinishRun, Rejected, UploaderMessage};
use crate::packing::PieceMeta;

use super::finish::{Finish, Settle};
use super::refusal::pieces_at;
use super::send::Send;
use super::{Cx, Key, Task};

/// Takes one delivery in; returns the work it makes.
pub(super) fn take(cx: &mut Cx<'_>, key: Key, message: UploaderMessage) -> Vec<Task> {
    let sync = match &message {
        UploaderMessage::Batch(b) => &b.sync,
        UploaderMessage::FinishRun(f) => &f.sync,
    };
    if sync != &cx.settings.sync {
        let error = format!("a message of sync {sync} arrived on the batches queue of {}", cx.settings.sync);
        cx.park(key, "wrong queue", &error);
        return Vec::new();
    }
    match message {
        UploaderMessage::Batch(batch) => take_batch(cx, key, batch),
        UploaderMessage::FinishRun(finish) => take_finish(cx, key, finish),
    }
}

fn take_finish(cx: &mut Cx<'_>, key: Key, finish: FinishRun) -> Vec<Task> {
    let run = finish.run_id.clone();
    if cx.state.ledger.is_run_closed(&run) {
        cx.ack(key);
        return Vec::new();
    }
    let limits = *cx.limits();
    let buffer = cx.state.buffer(&run, &finish.options, &limits);
    buffer.finish_keys.push(key);
    buffer.finish_queued = true;
    if finish.delta_link.is_some() && buffer.delta_link.is_none() {
        buffer.delta_link = finish.delta_link;
    }
    if buffer.finishing {
        // Already being finished (a copy, or a run found loaded at takeover).
        return Vec::new();
    }
    buffer.finishing = true;
    vec![Task::Finish(Finish::new(run))]
}

fn take_batch(cx: &mut Cx<'_>, key: Key, mut batch: Batch) -> Vec<Task> {
    if cx.settings.sabotage.ignore_copies {
        batch.copy = Default::default();
        batch.parent = None;
    }
    let run = batch.run_id.clone();
    if cx.state.ledger.is_run_closed(&run) || cx.state.ledger.is_batch_done(&batch) {
        // A duplicate, or a late batch of a run that already ended.
        cx.ack(key);
        return Vec::new();
    }
    let remaining = cx.state.ledger.remaining(&batch);
    let limits = *cx.limits();
    let meta = PieceMeta {
        page_seq: batch.page_seq,
        part: batch.part,
        parts: batch.parts,
        len: batch.profiles.len() as u32,
        total_pages: batch.total_pages,
        copy: batch.copy,
        parent: batch.parent,
    };
    let buffer = cx.state.buffer(&run, &batch.options, &limits);
    if let Some(held) = buffer.held_copy((batch.page_seq, batch.copy), batch.part) {
        // A second copy of a batch this process holds: the mapper published
        // it twice (its page was redelivered). Hold the newer delivery until
        // the profiles are loaded, and settle the older one.
        let older = std::mem::replace(&mut held.key, key);
        cx.ack(older);
        return Vec::new();
    }
    buffer.options.full_state |= batch.options.full_state;
    buffer.receive(&meta);
    buffer.held.push(super::run::Held { key, page: (batch.page_seq, batch.copy), part: batch.part });
    cx.state.ledger.note_options(&run, &batch.options);
    note_source_facts(cx, &batch);

    let mut tasks = Vec::new();
    if batch.profiles.is_empty() {
        let kind = EventKind::BatchEmpty {
            page_seq: batch.page_seq,
            part: batch.part,
            parts: batch.parts,
            total_pages: batch.total_pages,
            copy: batch.copy,
            parent: batch.parent,
        };
        cx.record(&run, kind);
    } else {
        let sorted = {
            let buffer = cx.state.runs.get(&run).expect("made above");
            sort_batch(&batch, remaining, cx.state.ledger.run(&run), &cx.state.roster, &buffer.queued, &buffer.lineage)
        };
        if !sorted.refused.is_empty() {
            let pieces = pieces_at(meta, sorted.refused.iter().map(|(i, _, _)| *i));
            let refused = sorted
                .refused
                .into_iter()
                .map(|(_, id, reason)| Rejected { external_id: Some(id.to_string()), reason })
                .collect();
            cx.record(&run, EventKind::ProfilesRefused { refused, pieces });
        }
        if !sorted.unchanged.is_empty() {
            let pieces = pieces_at(meta, sorted.unchanged.iter().map(|(i, _)| *i));
            let external_ids = sorted.unchanged.into_iter().map(|(_, id)| id).collect();
            cx.record(&run, EventKind::ProfilesUnchanged { pieces, external_ids });
        }
        if !sorted.queued_deletes.is_empty() {
            let pieces = pieces_at(meta, sorted.queued_deletes.iter().map(|(i, _)| *i));
            let external_ids = sorted.queued_deletes.into_iter().map(|(_, id)| id).collect();
            cx.record(&run, EventKind::DeactivationsQueued { pieces, external_ids });
        }
        let buffer = cx.state.runs.get_mut(&run).expect("made above");
        let mut requests = Vec::new();
        if sorted.flush_first {
            // An older copy of one of these is still queued: it goes first,
            // so no request carries one externalId twice.
            while let Some(packed) = buffer.packer.drain() {
                requests.push(packed);
            }
        }
        if !sorted.send.is_empty() {
            buffer.enqueue(batch.op, meta, sorted.send);
        }
        while let Some(packed) = buffer.packer.next_full() {
            requests.push(packed);
        }
        if !requests.is_empty() {
            tasks.push(Task::Send(Send::new(run.clone(), requests)));
        }
    }
    tasks.push(Task::Settle(Settle::new(run)));
    tasks
}

/// Records what a batch says about the source besides its profiles, the
/// first time the run meets it: the deltaLink of the last page, and the
/// users the mapper rejected (still in the source: not to deactivate).
fn note_source_facts(cx: &mut Cx<'_>, batch: &Batch) {
    let run = &batch.run_id;
    if let Some(link) = &batch.delta_link {
        if let Some(buffer) = cx.state.runs.get_mut(run) {
            buffer.delta_link.get_or_insert_with(|| link.clone());
        }
        if cx.state.ledger.run(run).and_then(|r| r.delta_link()).is_none() {
            cx.record(run, EventKind::DeltaLinkReceived { delta_link: link.clone() });
        }
    }
    let progress = cx.state.ledger.run(run);
    let rejected: Vec<String> = batch
        .rejected
        .iter()
        .filter_map(|r| r.external_id.clone())
        .filter(|id| !progress.is_some_and(|p| p.rejected_in_source().contains(id)))
        .collect();
    if !rejected.is_empty() {
        cx.record(run, EventKind::RejectedInSource { external_ids: rejected });
    }
}
