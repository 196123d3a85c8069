//! The promises, checked after every step and at the end of every run.
//!
//! 1. No request carries more than the limit's profiles or bytes.
//! 2. No session receives more than the limit's requests.
//! 3. Never two open sessions, and no create inside the cooldown, measured
//!    on Okta's clock.
//! 4. Every user present, enabled and in scope in the source from a run's
//!    start to its end is ACTIVE in Okta when the run reports success, with
//!    the mapped profile if the user did not change meanwhile.
//! 5. Nobody present, enabled and in scope throughout a run is deactivated
//!    by it.
//! 6. Every run ends, completed or failed with a reason, within bounded
//!    virtual time (checked by the world's loop).
//! 7. Every rejected user is reported.
//!
//! 1-3 are read off the sandbox's Okta, which refuses what breaks them and
//! keeps every refusal: a refusal for one of these reasons is a violation,
//! as is anything in its session records beyond the limits.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use time::OffsetDateTime;
use xaas_core::limits::Limits;
use xaas_core::mapping::{MapOutcome, MappingRules};
use xaas_core::{EventKind, RunEvent, RunId, RunOptions};
use xaas_sim::directory::Directory;
use xaas_sim::okta::OktaState;
use xaas_sim::okta::session::Status;
use xaas_sim::okta::store::UserStatus;

use crate::world::{Broken, expected};

/// What one run started from, and what happened to it.
#[derive(Debug, Clone)]
pub struct RunWatch {
    pub run: RunId,
    pub options: RunOptions,
    pub started: OffsetDateTime,
    pub ended: Option<OffsetDateTime>,
    /// `Some(true)` completed, `Some(false)` failed.
    pub completed: Option<bool>,
    pub failure: Option<String>,
    /// The source's users at the start, by id.
    pub at_start: BTreeMap<String, Value>,
    /// Users created, changed or removed while the run was in flight.
    pub changed: BTreeSet<String>,
    /// Okta's ACTIVE users at the start.
    pub active_at_start: BTreeSet<String>,
}

impl RunWatch {
    pub fn start(
        run: RunId,
        options: RunOptions,
        now: OffsetDateTime,
        dir: &Directory,
        _rules: &MappingRules,
        okta: &OktaState,
    ) -> Self {
        let at_start =
            dir.users().filter_map(|u| Some((u.get("id")?.as_str()?.to_string(), Value::Object(u.clone())))).collect();
        let active_at_start =
            okta.users.iter().filter(|(_, u)| u.status == UserStatus::Active).map(|(id, _)| id.to_string()).collect();
        Self {
            run,
            options,
            started: now,
            ended: None,
            completed: None,
            failure: None,
            at_start,
            changed: BTreeSet::new(),
            active_at_start,
        }
    }

    /// Users who stayed in the source, enabled and unchanged, the whole run,
    /// with what the mapping makes of them.
    fn steady<'a>(&'a self, rules: &'a MappingRules) -> impl Iterator<Item = (&'a str, MapOutcome)> + 'a {
        self.at_start
            .iter()
            .filter(|(id, _)| !self.changed.contains(*id))
            .filter(|(_, u)| u.get("accountEnabled") == Some(&Value::Bool(true)))
            .map(move |(id, u)| (id.as_str(), expected(rules, u)))
    }
}

/// 1-3, after every step.
pub fn check_okta(okta: &OktaState, limits: &Limits) -> Result<(), Broken> {
    for refusal in okta.refused.iter() {
        let text = format!("{} {}", refusal.error_summary, refusal.error_causes.join(" "));
        let broken = if text.contains("already has session") || text.contains("within the cooldown") {
            Some("3: one open session, never inside the cooldown")
        } else if text.contains("bulk requests, the most") {
            Some("2: at most the limit's requests per session")
        } else if text.contains("a bulk request may carry at most") {
            Some("1: requests within the limit's profiles and bytes")
        } else {
            None
        };
        if let Some(invariant) = broken {
            return Err((invariant, format!("Okta refused {} {}: {text}", refusal.method, refusal.path)));
        }
    }
    let sessions = okta.sessions.records();
    let open = sessions.iter().filter(|s| matches!(s.status, Status::Created | Status::InProgress)).count();
    if open > 1 {
        return Err(("3: one open session, never inside the cooldown", format!("{open} sessions are open")));
    }
    for s in &sessions {
        if s.requests.len() > limits.requests_per_session as usize {
            return Err((
                "2: at most the limit's requests per session",
                format!("session {} took {} requests", s.id, s.requests.len()),
            ));
        }
        if let Some(r) = s
            .requests
            .iter()
            .find(|r| r.profiles > limits.profiles_per_request || r.body_bytes > limits.bytes_per_request)
        {
            return Err((
                "1: requests within the limit's profiles and bytes",
                format!("session {}: a request of {} profiles, {} bytes", s.id, r.profiles, r.body_bytes),
            ));
        }
    }
    Ok(())
}

/// 4, 5 and 7, when a run ends.
pub fn check_run(
    w: &RunWatch,
    events: &[RunEvent],
    okta: &OktaState,
    _dir: &Directory,
    rules: &MappingRules,
) -> Result<(), Broken> {
    let reported: BTreeSet<String> = events
        .iter()
        .filter(|e| e.run_id == w.run)
        .flat_map(|e| match &e.kind {
            EventKind::PageMapped { rejected, .. } => rejected.iter().filter_map(|r| r.external_id.clone()).collect(),
            EventKind::ProfilesRefused { refused, .. } => {
                refused.iter().filter_map(|r| r.external_id.clone()).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    // A delta round reads only what changed: an unchanged user it never
    // read has nothing to be reported for.
    let reads_everyone = w.options.reads_full_state()
        || events.iter().any(|e| e.run_id == w.run && matches!(e.kind, EventKind::DeltaResync { .. }));
    for (id, outcome) in w.steady(rules) {
        let user = okta.users.get(id);
        let active = user.is_some_and(|u| u.status == UserStatus::Active);
        match outcome {
            MapOutcome::Mapped(p) => {
                if w.active_at_start.contains(id) && !active {
                    return Err((
                        "5: nobody in the source is deactivated",
                        format!("run {}: {id} was deactivated", w.run),
                    ));
                }
                if w.completed != Some(true) {
                    continue;
                }
                if !active {
                    return Err((
                        "4: everyone in the source is in Okta",
                        format!("run {} completed but {id} is {:?} in Okta", w.run, user.map(|u| u.status)),
                    ));
                }
                let want: BTreeMap<String, String> = p.profile.unwrap_or_default();
                let have: BTreeMap<String, String> = user
                    .map(|u| u.profile.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
                    .unwrap_or_default();
                if want != have {
                    return Err((
                        "4: everyone in the source is in Okta",
                        format!("run {} completed but {id} has the profile {have:?}, not {want:?}", w.run),
                    ));
                }
            }
            MapOutcome::Rejected(_) if reads_everyone && w.completed == Some(true) && !reported.contains(id) => {
                return Err((
                    "7: every rejected user is reported",
                    format!("run {}: {id} was rejected silently", w.run),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What only holds once everything is quiet.
pub fn check_end(
    okta: &OktaState,
    watches: &[RunWatch],
    _dir: &Directory,
    _rules: &MappingRules,
) -> Result<(), Broken> {
    let open: Vec<String> = okta
        .sessions
        .records()
        .iter()
        .filter(|s| matches!(s.status, Status::Triggered))
        .map(|s| s.id.clone())
        .collect();
    if !open.is_empty() && watches.iter().all(|w| w.completed == Some(true)) {
        return Err(("6: every run ends", format!("sessions {open:?} are still importing after every run completed")));
    }
    Ok(())
}
