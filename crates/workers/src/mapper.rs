//! The mapper: stateless, scaled by adding consumers. It filters each page,
//! maps users to Okta profiles, rejects bad records one by one with their
//! reason, and cuts the rest into batches that each fit one bulk request.
//! A page that maps to nothing still yields one empty batch, so the uploader
//! can count pages. Batch ids derive from (run, page, part): a redelivered
//! page produces the same batches, which the uploader recognises.

use serde_json::Value;
use xaas_broker::Outcome;
use xaas_core::mapping::{MappingRules, map_page};
use xaas_core::packing::cut;
use xaas_core::{Batch, EventKind, ExternalId, Mode, OktaProfile, Op, Page, Rejected};

use crate::deps::Deps;
use crate::events::emit;
use crate::stage::{self, Ctx};

/// The batches one page becomes, and the page's accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedPage {
    pub batches: Vec<Batch>,
    pub profiles: u32,
    pub filtered_out: u32,
    pub rejected: Vec<Rejected>,
}

/// Which bulk endpoint a user of this mode goes to.
fn op_for(mode: Mode, user: &Value) -> Op {
    match mode {
        Mode::Full => Op::Upsert,
        Mode::Deactivate => Op::Delete,
        // In a delta round a user disabled since the last run is deactivated;
        // everyone else, re-enabled users included, is upserted (reactivated).
        Mode::Delta if user.get("accountEnabled") == Some(&Value::Bool(false)) => Op::Delete,
        Mode::Delta => Op::Upsert,
    }
}

/// Maps one page into batches. Pure: the handler publishes the result.
pub fn map(rules: &MappingRules, limits: &xaas_core::limits::Limits, page: &Page) -> MappedPage {
    let mode = page.options.mode;
    let (upserts, deletes): (Vec<Value>, Vec<Value>) =
        page.users.iter().cloned().partition(|u| op_for(mode, u) == Op::Upsert);
    let up = map_page(rules, &upserts, Op::Upsert);
    let mut down = map_page(rules, &deletes, Op::Delete);
    let mut rejected = up.rejected;
    rejected.append(&mut down.rejected);

    // Users Graph reports as removed carry only their Graph id.
    for removed in &page.removed {
        if rules.mapping.external_id_field() != "id" {
            rejected.push(Rejected {
                external_id: Some(removed.id.clone()),
                reason: format!(
                    "removed from the source, but Graph names removed users by id only and externalId is {}: deactivate it in Okta by hand",
                    rules.mapping.external_id_field()
                ),
            });
            continue;
        }
        match ExternalId::parse(removed.id.as_str()) {
            Ok(external_id) => down.profiles.push(OktaProfile { external_id, profile: None }),
            Err(e) => rejected.push(Rejected { external_id: Some(removed.id.clone()), reason: e.to_string() }),
        }
    }

    let profiles = (up.profiles.len() + down.profiles.len()) as u32;
    let mut parts: Vec<(Op, Vec<OktaProfile>)> = Vec::new();
    for (op, list) in [(Op::Upsert, up.profiles), (Op::Delete, down.profiles)] {
        if list.is_empty() {
            continue;
        }
        let cut = cut(list, limits);
        rejected.extend(cut.too_large);
        parts.extend(cut.batches.into_iter().filter(|b| !b.is_empty()).map(|b| (op, b)));
    }
    if parts.is_empty() {
        parts.push((Op::Upsert, Vec::new()));
    }

    let count = parts.len() as u32;
    let total_pages = page.last.then_some(page.seq + 1);
    let batches = parts
        .into_iter()
        .enumerate()
        .map(|(i, (op, profiles))| Batch {
            v: xaas_core::MESSAGE_VERSION,
            run_id: page.run_id.clone(),
            sync: page.sync.clone(),
            options: page.options.clone(),
            page_seq: page.seq,
            part: i as u32,
            parts: count,
            total_pages,
            op,
            profiles,
            // Reported once, with the page's first part.
            rejected: if i == 0 { rejected.clone() } else { Vec::new() },
            delta_link: page.delta_link.clone(),
        })
        .collect();
    MappedPage { batches, profiles, filtered_out: up.filtered_out + down.filtered_out, rejected }
}

/// Maps a page and publishes its batches to the sync's uploader queue.
pub async fn handle(deps: &Deps, page: Page, ctx: &Ctx) -> Outcome {
    let Some(clients) = deps.sync(&page.sync) else {
        let error = format!("no sync named {:?} is configured", page.sync.as_str());
        return stage::fail(deps, &page.run_id, &page.sync, "mapper", error).await;
    };
    let sync = &clients.config;
    let mapped = map(&sync.rules, &sync.limits, &page);
    let queue = deps.broker.names().batches(&page.sync);
    let publish = async {
        for batch in &mapped.batches {
            deps.broker.publish(&queue, batch).await?;
            crate::failpoint::hit("mapper.after_batch_published");
        }
        let kind = EventKind::PageMapped {
            seq: page.seq,
            parts: mapped.batches.len() as u32,
            profiles: mapped.profiles,
            filtered_out: mapped.filtered_out,
            rejected: mapped.rejected.clone(),
        };
        emit(&deps.broker, &page.run_id, &page.sync, kind).await
    };
    match publish.await {
        Ok(_) => {
            metrics::counter!("xaas_pages_mapped_total").increment(1);
            metrics::counter!("xaas_profiles_rejected_total").increment(mapped.rejected.len() as u64);
            Outcome::Ack
        }
        Err(e) => stage::retry(deps, ctx, &page.run_id, &page.sync, "mapper", e.to_string()).await,
    }
}
