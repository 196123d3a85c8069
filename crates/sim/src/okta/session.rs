//! Identity source sessions: the state machine of reference §1.3 and the
//! per-session limits of §2.
//!
//! ```text
//!            first accepted bulk load          start-import             import done
//!  CREATED ───────────────────────────▶ IN_PROGRESS ─────────▶ TRIGGERED ───────────▶ COMPLETED
//!     │  \________ DELETE ________________│_____________▶ CLOSED
//!     └──────── idle for `idle_expiry` ───┴─────────────▶ EXPIRED
//! ```
//!
//! Time is passed in (`Moment`), never read here, and ids come from the
//! caller's [`IdSource`], so every rule is a plain function of the calls made
//! and the times they were made at. Imports are
//! scheduled, not run: a triggered session's import starts when the previous
//! one ends (Okta processes one session at a time per identity source) and
//! completes `import_duration` later; `advance` settles whatever is due.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::bulk::Load;
use super::error::OktaError;
use super::ids::IdSource;
use crate::clock::Moment;

/// "At most 50 bulk requests per session" (reference §2).
pub const MAX_REQUESTS_PER_SESSION: usize = 50;

/// The spec's `IdentitySourceSessionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Created,
    InProgress,
    Triggered,
    Completed,
    Closed,
    Expired,
    Error,
}

impl Status {
    /// CREATED or IN_PROGRESS: the states that accept data and block a new session.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Created | Status::InProgress)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "CREATED",
            Status::InProgress => "IN_PROGRESS",
            Status::Triggered => "TRIGGERED",
            Status::Completed => "COMPLETED",
            Status::Closed => "CLOSED",
            Status::Expired => "EXPIRED",
            Status::Error => "ERROR",
        }
    }
}

/// How long things take; from the sandbox's flags.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub cooldown: Duration,
    pub import_duration: Duration,
    pub idle_expiry: Duration,
    /// Bulk requests one session takes.
    pub requests_per_session: usize,
}

/// One accepted bulk request, as the inspection API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub kind: &'static str,
    pub profiles: usize,
    pub body_bytes: usize,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub status: Status,
    pub created: OffsetDateTime,
    pub last_updated: OffsetDateTime,
    last_activity: Moment,
    pub triggered_at: Option<OffsetDateTime>,
    import_start: Option<Moment>,
    import_due: Option<Moment>,
    pub completed_at: Option<OffsetDateTime>,
    pub requests: Vec<RequestRecord>,
    /// The data, until the import applies it or a cancel/expiry discards it.
    loads: Vec<Load>,
}

/// The spec's `IdentitySourceSession`, as the Okta API returns it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: String,
    pub identity_source_id: String,
    pub status: Status,
    pub import_type: &'static str,
    pub created: String,
    pub last_updated: String,
}

/// Every session with its requests, for `GET /sim/okta/sessions`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub id: String,
    pub identity_source_id: String,
    pub status: Status,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_updated: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub triggered_at: Option<OffsetDateTime>,
    /// When Okta began processing it (after the sessions queued before it).
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub import_started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<OffsetDateTime>,
    pub requests: Vec<RequestRecord>,
}

/// Okta's timestamps: milliseconds, UTC, `Z`.
pub fn okta_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A session that finished importing: its data, to apply in this order.
#[derive(Debug)]
pub struct CompletedImport {
    pub session_id: String,
    pub at: OffsetDateTime,
    pub loads: Vec<Load>,
}

/// All sessions of the one identity source the sandbox has.
#[derive(Debug)]
pub struct Sessions {
    identity_source_id: String,
    rules: Rules,
    /// In creation order.
    sessions: Vec<Session>,
    last_trigger: Option<Moment>,
    /// When the last queued import finishes; the next one starts there.
    queue_end: Option<Moment>,
}

impl Sessions {
    pub fn new(identity_source_id: String, rules: Rules) -> Self {
        Self { identity_source_id, rules, sessions: Vec::new(), last_trigger: None, queue_end: None }
    }

    /// Forgets every session, the cooldown and the import queue.
    pub fn reset(&mut self) {
        self.sessions.clear();
        self.last_trigger = None;
        self.queue_end = None;
    }

    pub fn identity_source_id(&self) -> &str {
        &self.identity_source_id
    }

    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Every session, in creation order, with the requests it took.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter()
    }

    /// When the last session was triggered; no session may be created
    /// within `rules().cooldown` of it.
    pub fn last_trigger(&self) -> Option<Moment> {
        self.last_trigger
    }

    /// Settles what time has decided: idle sessions expire, due imports complete.
    pub fn advance(&mut self, now: Moment) -> Vec<CompletedImport> {
        let idle = self.rules.idle_expiry;
        for s in self.sessions.iter_mut().filter(|s| s.status.is_open()) {
            if now.elapsed >= s.last_activity.elapsed + idle {
                s.status = Status::Expired;
                s.last_updated = s.last_activity.plus(idle).wall;
                s.loads.clear();
                tracing::info!(session = %s.id, "identity source session expired after {}", humantime::format_duration(idle));
            }
        }
        let mut done: Vec<CompletedImport> = Vec::new();
        for s in self.sessions.iter_mut().filter(|s| s.status == Status::Triggered) {
            if let Some(due) = s.import_due.filter(|d| now.elapsed >= d.elapsed) {
                s.status = Status::Completed;
                s.last_updated = due.wall;
                s.completed_at = Some(due.wall);
                tracing::info!(session = %s.id, requests = s.requests.len(), "import completed");
                done.push(CompletedImport {
                    session_id: s.id.clone(),
                    at: due.wall,
                    loads: std::mem::take(&mut s.loads),
                });
            }
        }
        // The queue is first-triggered, first-done, whatever the creation order.
        done.sort_by_key(|c| c.at);
        done
    }

    /// The next moment `advance` would change something, if any, as
    /// [`Moment::elapsed`].
    pub fn next_deadline(&self) -> Option<Duration> {
        self.sessions
            .iter()
            .filter_map(|s| match s.status {
                Status::Created | Status::InProgress => Some(s.last_activity.elapsed + self.rules.idle_expiry),
                Status::Triggered => s.import_due.map(|d| d.elapsed),
                _ => None,
            })
            .min()
    }

    /// Opens a session named by the next id of `ids`, unless another is open
    /// or the cooldown after the last trigger has not passed.
    pub fn create(&mut self, now: Moment, ids: &mut IdSource) -> Result<SessionView, OktaError> {
        if let Some(open) = self.sessions.iter().find(|s| s.status.is_open()) {
            return Err(OktaError::validation(
                "identity source session",
                vec![format!(
                    "Identity source {} already has session {} in status {}; only one CREATED or IN_PROGRESS \
                     session is allowed at a time. Trigger or cancel it first.",
                    self.identity_source_id,
                    open.id,
                    open.status.as_str()
                )],
            ));
        }
        if let Some(t) = self.last_trigger {
            let ready = t.elapsed + self.rules.cooldown;
            if now.elapsed < ready {
                return Err(OktaError::validation(
                    "identity source session",
                    vec![format!(
                        "A new identity source session cannot be created within the cooldown of {} after \
                         triggering a session; try again in {}.",
                        humantime::format_duration(self.rules.cooldown),
                        humantime::format_duration(round_up_ms(ready - now.elapsed))
                    )],
                ));
            }
        }
        let session = Session {
            id: ids.session_id(),
            status: Status::Created,
            created: now.wall,
            last_updated: now.wall,
            last_activity: now,
            triggered_at: None,
            import_start: None,
            import_due: None,
            completed_at: None,
            requests: Vec::new(),
            loads: Vec::new(),
        };
        tracing::info!(session = %session.id, "identity source session created");
        let view = self.view(&session);
        self.sessions.push(session);
        Ok(view)
    }

    fn find_mut(&mut self, id: &str, now: Moment) -> Result<&mut Session, OktaError> {
        find_in(&mut self.sessions, id, now)
    }

    pub fn get(&mut self, id: &str, now: Moment) -> Result<SessionView, OktaError> {
        let s = find_in(&mut self.sessions, id, now)?;
        Ok(view_of(&self.identity_source_id, s))
    }

    pub fn list(&self) -> Vec<SessionView> {
        self.sessions.iter().map(|s| self.view(s)).collect()
    }

    /// Checks that a bulk request may go into this session, before its body
    /// is looked at.
    pub fn check_loadable(&mut self, id: &str, now: Moment) -> Result<(), OktaError> {
        let s = self.find_mut(id, now)?;
        if !s.status.is_open() {
            return Err(OktaError::validation(
                "identity source session",
                vec![format!(
                    "Session {} has status {}; bulk data can only be loaded into a CREATED or IN_PROGRESS session.",
                    s.id,
                    s.status.as_str()
                )],
            ));
        }
        let max = self.rules.requests_per_session;
        let s = find_in(&mut self.sessions, id, now)?;
        if s.requests.len() >= max {
            return Err(OktaError::validation(
                "identity source session",
                vec![format!(
                    "Session {} already has {max} bulk requests, the most a session can take; \
                     trigger it and create a new session.",
                    s.id
                )],
            ));
        }
        Ok(())
    }

    /// Records an accepted bulk request. `moves_forward` is false for a load
    /// that changes nothing in Okta (a delete naming no known user), which
    /// Okta accepts but which leaves a CREATED session CREATED.
    pub fn load(
        &mut self,
        id: &str,
        now: Moment,
        load: Load,
        body_bytes: usize,
        moves_forward: bool,
    ) -> Result<(), OktaError> {
        self.check_loadable(id, now)?;
        let s = self.find_mut(id, now)?;
        s.requests.push(RequestRecord { kind: load.kind().as_str(), profiles: load.len(), body_bytes, at: now.wall });
        if moves_forward && s.status == Status::Created {
            s.status = Status::InProgress;
        }
        s.last_updated = now.wall;
        s.loads.push(load);
        Ok(())
    }

    pub fn trigger(&mut self, id: &str, now: Moment) -> Result<SessionView, OktaError> {
        let rules = self.rules;
        let queue_end = self.queue_end;
        let s = find_in(&mut self.sessions, id, now)?;
        match s.status {
            Status::InProgress => {}
            Status::Created => {
                return Err(OktaError::validation(
                    "identity source session",
                    vec![format!(
                        "Session {} has no data to import (status CREATED); only IN_PROGRESS sessions can be triggered.",
                        s.id
                    )],
                ));
            }
            other => {
                return Err(OktaError::validation(
                    "identity source session",
                    vec![format!(
                        "Session {} has status {}; only IN_PROGRESS sessions can be triggered.",
                        s.id,
                        other.as_str()
                    )],
                ));
            }
        }
        let start = match queue_end {
            Some(end) if end.elapsed > now.elapsed => end,
            _ => now,
        };
        let due = start.plus(rules.import_duration);
        s.status = Status::Triggered;
        s.last_updated = now.wall;
        s.triggered_at = Some(now.wall);
        s.import_start = Some(start);
        s.import_due = Some(due);
        tracing::info!(session = %s.id, requests = s.requests.len(), "identity source session triggered");
        let view = view_of(&self.identity_source_id, s);
        self.last_trigger = Some(now);
        self.queue_end = Some(due);
        Ok(view)
    }

    /// Cancels a session (DELETE): CLOSED, data discarded, record kept.
    pub fn cancel(&mut self, id: &str, now: Moment) -> Result<(), OktaError> {
        let s = self.find_mut(id, now)?;
        if !s.status.is_open() {
            return Err(OktaError::validation(
                "identity source session",
                vec![format!(
                    "Session {} has status {}; only CREATED or IN_PROGRESS sessions can be cancelled.",
                    s.id,
                    s.status.as_str()
                )],
            ));
        }
        s.status = Status::Closed;
        s.last_updated = now.wall;
        s.loads.clear();
        tracing::info!(session = %s.id, "identity source session cancelled");
        Ok(())
    }

    pub fn records(&self) -> Vec<SessionRecord> {
        self.sessions
            .iter()
            .map(|s| SessionRecord {
                id: s.id.clone(),
                identity_source_id: self.identity_source_id.clone(),
                status: s.status,
                created: s.created,
                last_updated: s.last_updated,
                triggered_at: s.triggered_at,
                import_started_at: s.import_start.map(|m| m.wall),
                completed_at: s.completed_at,
                requests: s.requests.clone(),
            })
            .collect()
    }

    fn view(&self, s: &Session) -> SessionView {
        view_of(&self.identity_source_id, s)
    }
}

/// A session by id, counting the lookup as activity (any request that
/// names a session keeps it from expiring).
fn find_in<'a>(sessions: &'a mut [Session], id: &str, now: Moment) -> Result<&'a mut Session, OktaError> {
    let s =
        sessions.iter_mut().find(|s| s.id == id).ok_or_else(|| OktaError::not_found(id, "IdentitySourceSession"))?;
    if s.status.is_open() {
        s.last_activity = now;
    }
    Ok(s)
}

fn view_of(identity_source_id: &str, s: &Session) -> SessionView {
    SessionView {
        id: s.id.clone(),
        identity_source_id: identity_source_id.to_owned(),
        status: s.status,
        import_type: "INCREMENTAL",
        created: okta_timestamp(s.created),
        last_updated: okta_timestamp(s.last_updated),
    }
}

/// Whole milliseconds, rounded up, so "try again in" is never too early.
fn round_up_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okta::bulk::UpsertProfile;

    const SECOND: Duration = Duration::from_secs(1);

    fn rules() -> Rules {
        Rules {
            cooldown: 10 * SECOND,
            import_duration: 3 * SECOND,
            idle_expiry: 100 * SECOND,
            requests_per_session: MAX_REQUESTS_PER_SESSION,
        }
    }

    fn start() -> (Moment, IdSource) {
        (Moment::origin(time::macros::datetime!(2024-01-01 00:00 UTC)), IdSource::seeded(1))
    }

    fn one_user(id: &str) -> Load {
        Load::Upsert(vec![UpsertProfile { external_id: id.into(), profile: Default::default() }])
    }

    #[test]
    fn lifecycle_and_queue() {
        let mut s = Sessions::new("0oa1".into(), rules());
        let (t0, mut source) = start();
        let a = s.create(t0, &mut source).unwrap();
        assert_eq!(s.trigger(&a.id, t0).unwrap_err().code, "E0000001", "empty session");
        s.load(&a.id, t0, one_user("u1"), 10, true).unwrap();
        assert_eq!(s.get(&a.id, t0).unwrap().status, Status::InProgress);
        assert!(s.create(t0, &mut source).is_err(), "second open session");
        s.trigger(&a.id, t0).unwrap();
        assert!(s.trigger(&a.id, t0).is_err(), "second trigger");
        assert!(s.cancel(&a.id, t0).is_err(), "cancel after trigger");
        assert!(s.create(t0.plus(9 * SECOND), &mut source).is_err(), "inside the cooldown");

        let b = s.create(t0.plus(10 * SECOND), &mut source).unwrap();
        let t1 = t0.plus(10 * SECOND);
        s.load(&b.id, t1, one_user("u2"), 10, true).unwrap();
        s.trigger(&b.id, t1).unwrap();

        assert!(s.advance(t0.plus(2 * SECOND)).is_empty());
        let first = s.advance(t0.plus(3 * SECOND));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].session_id, a.id);
        // b was triggered at 10s, after a finished, so it runs 10s..13s.
        assert!(s.advance(t0.plus(12 * SECOND)).is_empty());
        assert_eq!(s.advance(t0.plus(13 * SECOND))[0].session_id, b.id);
    }

    #[test]
    fn imports_queue_behind_each_other() {
        let r = Rules { cooldown: Duration::ZERO, ..rules() };
        let mut s = Sessions::new("0oa1".into(), r);
        let (t0, mut source) = start();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let x = s.create(t0, &mut source).unwrap();
            s.load(&x.id, t0, one_user("u"), 1, true).unwrap();
            s.trigger(&x.id, t0).unwrap();
            ids.push(x.id);
        }
        assert_eq!(s.advance(t0.plus(3 * SECOND)).len(), 1);
        assert!(s.advance(t0.plus(5 * SECOND)).is_empty(), "second waits for the first");
        assert_eq!(s.advance(t0.plus(6 * SECOND))[0].session_id, ids[1]);
    }

    #[test]
    fn fifty_requests_then_refused_and_idle_sessions_expire() {
        let mut s = Sessions::new("0oa1".into(), rules());
        let (t0, mut source) = start();
        let a = s.create(t0, &mut source).unwrap();
        for _ in 0..MAX_REQUESTS_PER_SESSION {
            s.load(&a.id, t0, one_user("u"), 1, true).unwrap();
        }
        assert!(s.check_loadable(&a.id, t0).unwrap_err().causes[0].contains("50"));

        let idle = t0.plus(100 * SECOND);
        assert_eq!(s.next_deadline(), Some(idle.elapsed));
        s.advance(idle);
        assert_eq!(s.get(&a.id, idle).unwrap().status, Status::Expired);
        assert!(s.create(idle, &mut source).is_ok(), "an expired session no longer blocks");
    }

    #[test]
    fn a_load_that_changes_nothing_leaves_the_session_created() {
        let mut s = Sessions::new("0oa1".into(), rules());
        let (t0, mut source) = start();
        let a = s.create(t0, &mut source).unwrap();
        s.load(&a.id, t0, Load::Delete(vec!["ghost".into()]), 5, false).unwrap();
        assert_eq!(s.get(&a.id, t0).unwrap().status, Status::Created);
        assert_eq!(s.records()[0].requests.len(), 1);
    }

    #[test]
    fn timestamps_look_like_oktas() {
        let t = time::macros::datetime!(2022-04-04 15:56:05.123456 UTC);
        assert_eq!(okta_timestamp(t), "2022-04-04T15:56:05.123Z");
    }
}
