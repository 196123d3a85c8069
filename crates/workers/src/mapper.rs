//! The mapper: stateless, scaled by adding consumers. It filters each page,
//! maps users to Okta profiles, rejects bad records one by one with their
//! reason, and cuts the rest into batches that each fit one bulk request.
//! A page that maps to nothing still yields one empty batch, so the uploader
//! can count pages. Batch ids derive from (run, page, part): a redelivered
//! page produces the same batches, which the uploader recognises.

use serde_json::Value;
use xaas_broker::Outcome;
use xaas_core::mapping::{Filter, MappingRules, map_page};
use xaas_core::odata;
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

/// Which bulk endpoint a user of this mode goes to; `None` when the mode
/// sends nothing for them.
fn op_for(mode: Mode, user: &Value) -> Option<Op> {
    let disabled = user.get("accountEnabled") == Some(&Value::Bool(false));
    match mode {
        // A full run never upserts a disabled user, even when the source's
        // $filter lets them through: an upsert would (re)activate them. If
        // they were synced before, reconciliation deactivates them.
        Mode::Full if disabled => None,
        Mode::Full => Some(Op::Upsert),
        Mode::Deactivate => Some(Op::Delete),
        // In a delta round a user disabled since the last run is deactivated;
        // everyone else, re-enabled users included, is upserted (reactivated).
        Mode::Delta if disabled => Some(Op::Delete),
        Mode::Delta => Some(Op::Upsert),
    }
}

/// Maps one page into batches. Pure: the handler publishes the result.
///
/// `source_filter` is the sync's `source.filter`, which Graph applied to a
/// full run's pages but cannot apply to a delta round's: here a delta
/// record outside it is out of scope, as it would be in a full run. The
/// round that reads the full state skips them (reconciliation deactivates
/// those who were synced); a round of changes deactivates them, because
/// they left the scope.
pub fn map(
    rules: &MappingRules,
    source_filter: Option<&odata::Filter>,
    limits: &xaas_core::limits::Limits,
    page: &Page,
) -> MappedPage {
    let mode = page.options.mode;
    let changes_only = mode == Mode::Delta && !page.options.full_state;
    let (mut upserts, mut deletes, mut skipped) = (Vec::new(), Vec::new(), 0u32);
    let in_source = |u: &Value| source_filter.is_none_or(|f| u.as_object().is_some_and(|o| f.matches(o)));
    for user in &page.users {
        if mode == Mode::Delta && !in_source(user) {
            if changes_only {
                deletes.push(user.clone());
            } else {
                skipped += 1;
            }
            continue;
        }
        match op_for(mode, user) {
            Some(Op::Upsert) => upserts.push(user.clone()),
            Some(Op::Delete) => deletes.push(user.clone()),
            None => skipped += 1,
        }
    }
    let mut up = map_page(rules, &upserts, Op::Upsert);
    up.filtered_out += skipped;
    // (Not in the round that reads the full state: there the filter just
    // filters, and reconciliation deactivates who is out of scope.)
    if changes_only {
        // A changed user who no longer passes the filter (moved to another
        // department) has left the sync's scope: deactivate them, as a full
        // run's reconciliation would. The uploader drops deletes for users
        // that are not active in Okta.
        let (left, _) = upserts.into_iter().partition::<Vec<_>, _>(|u| !rules.filter.matches(u));
        up.filtered_out -= left.len() as u32;
        deletes.extend(left);
    }
    let unfiltered = MappingRules { mapping: rules.mapping.clone(), filter: Filter::none() };
    let delete_rules = if changes_only { &unfiltered } else { rules };
    let mut down = map_page(delete_rules, &deletes, Op::Delete);
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

    // `xaas users deactivate` names its users; they come with the first page.
    if page.seq == 0 && mode == Mode::Deactivate {
        down.profiles
            .extend(page.options.users.iter().map(|id| OktaProfile { external_id: id.clone(), profile: None }));
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
            copy: page.copy,
            parent: page.parent,
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
    // A filter that cannot be applied to records failed the run in the fetcher.
    let source_filter = sync.source.delta_filter.as_ref().and_then(|f| f.as_ref().ok());
    let mapped = map(&sync.rules, source_filter, &sync.limits, &page);
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
            metrics::counter!(crate::run_metrics::PAGES_MAPPED).increment(1);
            metrics::counter!(crate::run_metrics::PROFILES_REJECTED).increment(mapped.rejected.len() as u64);
            Outcome::Ack
        }
        Err(e) => stage::retry(deps, ctx, (&page.run_id, &page.sync), ("mapper", "broker"), e.to_string()).await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use xaas_core::limits::Limits;
    use xaas_core::mapping::Mapping;
    use xaas_core::{RunId, RunOptions, SyncName};

    use super::*;

    fn rules() -> MappingRules {
        let filter = BTreeMap::from([("department".to_string(), json!("Okta Workflows"))]);
        MappingRules { mapping: Mapping::original_workflow("id").unwrap(), filter: Filter::new(filter).unwrap() }
    }

    fn user(id: &str, department: &str, enabled: bool) -> Value {
        json!({"id": id, "userPrincipalName": format!("{id}@x.example"), "mail": format!("{id}@x.example"),
               "givenName": "A", "surname": "B", "department": department, "accountEnabled": enabled})
    }

    fn page(mode: Mode, users: Vec<Value>) -> Page {
        Page {
            v: 1,
            run_id: RunId::parse("r").unwrap(),
            sync: SyncName::parse("demo").unwrap(),
            options: RunOptions { mode, ..RunOptions::default() },
            seq: 0,
            last: true,
            users,
            removed: vec![],
            delta_link: None,
            copy: Default::default(),
            parent: None,
        }
    }

    fn ops(m: &MappedPage) -> Vec<(Op, Vec<String>)> {
        m.batches.iter().map(|b| (b.op, b.profiles.iter().map(|p| p.external_id.to_string()).collect())).collect()
    }

    #[test]
    fn a_delta_user_who_left_the_filter_is_deactivated_and_a_full_run_just_filters() {
        let users = vec![
            user("stay", "Okta Workflows", true),
            user("moved", "Sales", true),
            user("off", "Okta Workflows", false),
        ];
        let delta = map(&rules(), None, &Limits::OKTA, &page(Mode::Delta, users.clone()));
        assert_eq!(
            ops(&delta),
            vec![(Op::Upsert, vec!["stay".into()]), (Op::Delete, vec!["off".into(), "moved".into()])]
        );
        assert_eq!(delta.filtered_out, 0);
        let full = map(&rules(), None, &Limits::OKTA, &page(Mode::Full, users));
        // Disabled users are never upserted, whatever the source's $filter.
        assert_eq!(ops(&full), vec![(Op::Upsert, vec!["stay".into()])]);
        assert_eq!(full.filtered_out, 2);
    }

    #[test]
    fn a_delta_round_applies_the_source_filter_graph_could_not() {
        let users = vec![user("member", "Okta Workflows", true), user("guest", "Okta Workflows", true)];
        let users: Vec<Value> = users
            .into_iter()
            .map(|mut u| {
                let kind = if u["id"] == "guest" { "Guest" } else { "Member" };
                u["userType"] = json!(kind);
                u
            })
            .collect();
        let filter = odata::Filter::parse("userType eq 'Member'").unwrap();
        // The round that reads the full state leaves the guest out, as Graph would have.
        let mut initial = page(Mode::Delta, users.clone());
        initial.options.full_state = true;
        let m = map(&rules(), Some(&filter), &Limits::OKTA, &initial);
        assert_eq!(ops(&m), vec![(Op::Upsert, vec!["member".into()])]);
        assert_eq!(m.filtered_out, 1);
        // A round of changes: the guest is out of scope, so deactivated if synced.
        let m = map(&rules(), Some(&filter), &Limits::OKTA, &page(Mode::Delta, users.clone()));
        assert_eq!(ops(&m), vec![(Op::Upsert, vec!["member".into()]), (Op::Delete, vec!["guest".into()])]);
        // Without a source filter, both are upserted.
        let m = map(&rules(), None, &Limits::OKTA, &page(Mode::Delta, users));
        assert_eq!(ops(&m), vec![(Op::Upsert, vec!["member".into(), "guest".into()])]);
    }
}
