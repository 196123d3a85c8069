//! The messages the stages exchange over RabbitMQ (DESIGN §3), and the run
//! events every stage appends to the events stream.
//!
//! Every message carries `v` (the schema version), `run_id` and `sync`. A
//! consumer that meets a version it does not know parks the message rather
//! than guessing. Message ids are derived from content (`message_id()`), so a
//! redelivered or re-published message keeps its id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{ExternalId, RunId, SyncName};
use crate::lineage::CopyId;
use crate::roster::Digest;

/// The one message schema version this build speaks.
pub const MESSAGE_VERSION: u32 = 1;

fn current_version() -> u32 {
    MESSAGE_VERSION
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Read every enabled user and upsert them.
    #[default]
    Full,
    /// Read only what changed since the last run (Graph `/users/delta`).
    Delta,
    /// Read disabled users and deactivate them with bulk-delete (the original
    /// workflow's second main flow).
    Deactivate,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Full => "full",
            Mode::Delta => "delta",
            Mode::Deactivate => "deactivate",
        })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The options of a run, carried from the request through every stage.
/// The flags added after version 1 are left out of the JSON when false, so
/// messages without them read and write exactly as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunOptions {
    #[serde(default)]
    pub mode: Mode,
    /// Run the pipeline but send nothing to Okta.
    #[serde(default)]
    pub dry_run: bool,
    /// Send every profile, even those unchanged since their last confirmed upload.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// Let this one run past `max_deactivations` and
    /// `max_deactivations_percent`; never past an empty source or untrusted data.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_mass_deactivation: bool,
    /// Set by the fetcher, never by a caller: this delta run reads Graph's
    /// full state (its initial round, or a resync after an expired token), so
    /// the uploader reconciles it like a full run.
    #[serde(default, skip_serializing_if = "is_false")]
    pub full_state: bool,
    /// Deactivate exactly these users (`xaas users deactivate`; mode
    /// `deactivate` only): the fetcher reads nothing from the source, and
    /// the run goes through the uploader's session rules like any other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<ExternalId>,
}

impl RunOptions {
    /// Whether the run reads every user the source holds, so that a user it
    /// does not return has left.
    pub fn reads_full_state(&self) -> bool {
        self.mode == Mode::Full || (self.mode == Mode::Delta && self.full_state)
    }
}

/// Starts a run. Published to `xaas.requests` by `xaas enqueue`, the scheduler
/// or any AMQP client (its JSON Schema is published in `schemas/`).
/// Unknown fields are refused, so a misspelt option (`"dryrun"`) cannot
/// silently start a real run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    #[serde(default = "current_version")]
    pub v: u32,
    pub sync: SyncName,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub dry_run: bool,
    /// Given by the caller to follow the run; generated when absent.
    #[serde(default)]
    pub run_id: Option<RunId>,
    /// Send every profile, even those unchanged since their last upload.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// Override the sync's deactivation guards for this one run.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_mass_deactivation: bool,
    /// With mode `deactivate`: deactivate exactly these externalIds instead
    /// of reading disabled users from the source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<ExternalId>,
}

impl SyncRequest {
    pub fn options(&self) -> RunOptions {
        RunOptions {
            mode: self.mode,
            dry_run: self.dry_run,
            force: self.force,
            allow_mass_deactivation: self.allow_mass_deactivation,
            full_state: false,
            users: self.users.clone(),
        }
    }
}

/// Asks the fetcher for one Graph page. `link` absent means the first page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchPage {
    #[serde(default = "current_version")]
    pub v: u32,
    pub run_id: RunId,
    pub sync: SyncName,
    pub options: RunOptions,
    pub seq: u32,
    #[serde(default)]
    pub link: Option<String>,
    /// The copy of page `seq - 1` whose next link `link` is (`lineage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<CopyId>,
}

impl FetchPage {
    /// What reading this page brought: the `Page` to map, with its copy id
    /// (`lineage`), and the request for the next page unless this one is
    /// the last. Both go out before this request is acked.
    pub fn answer(
        &self,
        users: Vec<serde_json::Value>,
        removed: Vec<RemovedUser>,
        next_link: Option<String>,
        delta_link: Option<String>,
    ) -> (Page, Option<FetchPage>) {
        let mut page = Page {
            v: MESSAGE_VERSION,
            run_id: self.run_id.clone(),
            sync: self.sync.clone(),
            options: self.options.clone(),
            seq: self.seq,
            last: next_link.is_none(),
            users,
            removed,
            delta_link,
            copy: CopyId::LEGACY,
            parent: self.parent,
        };
        page.copy = page.copy_id(next_link.as_deref());
        let next = next_link.map(|link| FetchPage {
            seq: self.seq + 1,
            link: Some(link),
            parent: Some(page.copy),
            ..self.clone()
        });
        (page, next)
    }
}

/// A user Graph reports as removed (`@removed` in a delta round).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedUser {
    pub id: String,
    /// `changed` (soft delete) or `deleted` (hard delete).
    pub reason: String,
}

/// One Graph page, raw, as the fetcher read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    #[serde(default = "current_version")]
    pub v: u32,
    pub run_id: RunId,
    pub sync: SyncName,
    pub options: RunOptions,
    pub seq: u32,
    /// No page follows this one.
    pub last: bool,
    /// Raw Graph user objects; the mapper parses them.
    pub users: Vec<serde_json::Value>,
    #[serde(default)]
    pub removed: Vec<RemovedUser>,
    /// The `@odata.deltaLink` of the last page of a delta round.
    #[serde(default)]
    pub delta_link: Option<String>,
    /// This read of the page (`lineage`): the same read twice has the same id.
    #[serde(default)]
    pub copy: CopyId,
    /// The copy of page `seq - 1` this one was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<CopyId>,
}

impl Page {
    /// The id of this read: what was read, from where, and what it leads to,
    /// so that a re-read that saw the same users is the same copy.
    pub fn copy_id(&self, next_link: Option<&str>) -> CopyId {
        let users = serde_json::to_vec(&self.users).unwrap_or_default();
        let removed = serde_json::to_vec(&self.removed).unwrap_or_default();
        let parent = self.parent.map(|p| p.to_string()).unwrap_or_default();
        CopyId::of(&[
            self.run_id.as_str().as_bytes(),
            &self.seq.to_le_bytes(),
            parent.as_bytes(),
            &users,
            &removed,
            next_link.unwrap_or_default().as_bytes(),
            self.delta_link.as_deref().unwrap_or_default().as_bytes(),
        ])
    }
}

/// Which bulk endpoint a batch goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `bulk-upsert`: create or update, and (re)activate.
    Upsert,
    /// `bulk-delete`: deactivate.
    Delete,
}

/// One entry of a bulk request, in Okta's wire format
/// (`BulkUpsertRequestBody.profiles[]` / `BulkDeleteRequestBody.profiles[]`).
/// A delete carries no profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OktaProfile {
    #[serde(rename = "externalId")]
    pub external_id: ExternalId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<BTreeMap<String, String>>,
}

/// A source record the mapper refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The record's id when it had one (Graph `id`, or the configured key).
    pub external_id: Option<String>,
    pub reason: String,
}

/// What a run does, or would do in a dry run, with one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Upserted, and not in the roster before: new to Okta (or re-enabled).
    Create,
    /// Upserted because its mapped profile changed since its last confirmed upload.
    Update,
    /// Deactivated with bulk-delete.
    Deactivate,
    /// Not sent: the same profile as its last confirmed upload.
    Unchanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Deactivate => "deactivate",
            Self::Unchanged => "unchanged",
        }
    }
}

/// What the uploader sent for one profile of a bulk request, and why: the
/// plan of a dry run, and once Okta confirms the session, the roster's update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileChange {
    #[serde(rename = "externalId")]
    pub external_id: ExternalId,
    pub action: Action,
    /// For an update: the Okta attributes that differ from the last upload
    /// (added, changed or cleared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// For an upsert: the fingerprint the roster keeps once Okta confirms it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// Okta-format profiles cut from one page: part `part` of `parts`, each within
/// Okta's per-request limits. A page that maps to nothing still yields one
/// batch with no profiles, so the uploader can count pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    #[serde(default = "current_version")]
    pub v: u32,
    pub run_id: RunId,
    pub sync: SyncName,
    pub options: RunOptions,
    pub page_seq: u32,
    pub part: u32,
    pub parts: u32,
    /// Set on the batches of the last page: the number of pages in the run.
    #[serde(default)]
    pub total_pages: Option<u32>,
    pub op: Op,
    pub profiles: Vec<OktaProfile>,
    #[serde(default)]
    pub rejected: Vec<Rejected>,
    /// The deltaLink to keep once the run completes (last page of a delta run).
    #[serde(default)]
    pub delta_link: Option<String>,
    /// The copy of the page this batch was cut from, and its parent (`lineage`).
    #[serde(default)]
    pub copy: CopyId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<CopyId>,
}

/// Sent by the uploader to its own queue once every page of a run is
/// loaded: "trigger, follow the sessions, report". Acked only after
/// `RunCompleted` is recorded, so a successor uploader finishes a run that its
/// predecessor had fully loaded but not closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishRun {
    #[serde(default = "current_version")]
    pub v: u32,
    pub run_id: RunId,
    pub sync: SyncName,
    pub options: RunOptions,
    /// Always true; tells this message apart from a `Batch` on the same queue.
    pub finish_run: bool,
    /// The deltaLink the run ended with, kept in `RunCompleted`.
    #[serde(default)]
    pub delta_link: Option<String>,
}

/// What arrives on `xaas.batches.<sync>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploaderMessage {
    Batch(Batch),
    FinishRun(FinishRun),
}

impl UploaderMessage {
    /// Parses either message; `finish_run` tells them apart.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            finish_run: bool,
        }
        let probe: Probe = serde_json::from_slice(body)?;
        if probe.finish_run {
            serde_json::from_slice(body).map(Self::FinishRun)
        } else {
            serde_json::from_slice(body).map(Self::Batch)
        }
    }

    pub fn run_id(&self) -> &RunId {
        match self {
            Self::Batch(b) => &b.run_id,
            Self::FinishRun(f) => &f.run_id,
        }
    }
}

/// A contiguous slice `[from, to)` of one batch's profiles that went into a
/// bulk request. A batch can be split across two requests when packing.
/// It also carries what the batch said about its page (`parts`, `len`,
/// `total_pages`), so that replaying the events alone tells the uploader
/// which pages are complete and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Piece {
    pub page_seq: u32,
    pub part: u32,
    /// Parts the page was cut into.
    pub parts: u32,
    /// Profiles in this batch.
    pub len: u32,
    #[serde(default)]
    pub total_pages: Option<u32>,
    pub from: u32,
    pub to: u32,
    /// The copy of the page, and the copy it was read from (`lineage`).
    #[serde(default)]
    pub copy: CopyId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<CopyId>,
}

/// Import status of an Okta identity source session, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    Created,
    InProgress,
    Triggered,
    Completed,
    Closed,
    Expired,
    Error,
}

impl SessionStatus {
    /// The name Okta uses, e.g. `IN_PROGRESS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::InProgress => "IN_PROGRESS",
            Self::Triggered => "TRIGGERED",
            Self::Completed => "COMPLETED",
            Self::Closed => "CLOSED",
            Self::Expired => "EXPIRED",
            Self::Error => "ERROR",
        }
    }

    /// Still accepting bulk loads.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Created | Self::InProgress)
    }

    /// Okta is done with it, one way or another.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Closed | Self::Expired | Self::Error)
    }
}

/// One entry of a run's history in the `xaas.events` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    #[serde(default = "current_version")]
    pub v: u32,
    pub run_id: RunId,
    pub sync: SyncName,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. The uploader's `Session*`/`Bulk*` events double as its
/// recovery log: replaying them rebuilds its state after a takeover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    RunStarted {
        options: RunOptions,
    },
    PageFetched {
        seq: u32,
        users: u32,
        removed: u32,
        last: bool,
    },
    PageMapped {
        seq: u32,
        parts: u32,
        profiles: u32,
        filtered_out: u32,
        rejected: Vec<Rejected>,
    },
    SessionOpened {
        session_id: String,
    },
    /// Written *before* a bulk request is sent, so that a crash between the
    /// request and its record makes the count err high, never low.
    BulkSending {
        session_id: String,
        request_no: u32,
        op: Op,
        profiles: u32,
        bytes: u64,
    },
    BulkLoaded {
        session_id: String,
        request_no: u32,
        op: Op,
        profiles: u32,
        bytes: u64,
        pieces: Vec<Piece>,
        /// One per profile, in request order: who was sent and why. Lets a
        /// successor know which externalIds this run already loaded, and
        /// feeds the roster once the session completes. Absent in events
        /// written before change detection.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changes: Vec<ProfileChange>,
    },
    /// Batch positions not sent because each profile is the same as its
    /// last confirmed upload (or, in a delta run, as a later page of the
    /// same run already said). `external_ids` follow `pieces` in order.
    ProfilesUnchanged {
        pieces: Vec<Piece>,
        external_ids: Vec<ExternalId>,
    },
    /// Batch positions that ask for a deactivation. They are accounted for
    /// now and sent only once every page of the run is in and the guards
    /// pass. `external_ids` follow `pieces` in order.
    DeactivationsQueued {
        pieces: Vec<Piece>,
        external_ids: Vec<ExternalId>,
    },
    /// Users the source returned but the mapper rejected: a full run keeps
    /// them as they are in Okta instead of deactivating them as gone.
    RejectedInSource {
        external_ids: Vec<String>,
    },
    /// Part of the run's deactivation list, fixed once every page was
    /// accounted for and the guards passed; the successor of a crashed
    /// uploader sends the rest of exactly this list.
    DeactivationsPlanned {
        part: u32,
        parts: u32,
        external_ids: Vec<ExternalId>,
    },
    /// A safety guard refused the run's deactivations; nothing was deactivated.
    GuardTripped {
        reason: String,
        deactivations: u32,
        roster: u32,
    },
    /// A guard would have tripped, and `--allow-mass-deactivation` let the
    /// deactivations through for this run.
    GuardOverridden {
        reason: String,
        deactivations: u32,
        roster: u32,
    },
    /// Graph refused the stored delta token (expired or reset): the run
    /// reads the full state again instead, and reconciles like a full run.
    DeltaResync {
        reason: String,
    },
    /// The uploader received the deltaLink a delta round ended with; kept so
    /// that a successor can still store it in `RunCompleted`.
    DeltaLinkReceived {
        delta_link: String,
    },
    /// Another run of the same sync is in flight; this one waits for it.
    RunQueued {
        behind: RunId,
        options: RunOptions,
    },
    /// A run with the same options was already waiting; this request is
    /// served by it and ends here.
    RunMerged {
        into: RunId,
    },
    /// A batch with no profiles (its page mapped to nothing) was accounted
    /// for; recorded so a successor uploader knows the page was seen.
    BatchEmpty {
        page_seq: u32,
        part: u32,
        parts: u32,
        #[serde(default)]
        total_pages: Option<u32>,
        #[serde(default)]
        copy: CopyId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<CopyId>,
    },
    /// Profiles Okta refused even after the batch was split to isolate them.
    /// `pieces` says which batch positions they were, so they count as
    /// accounted for and the batch can be acked.
    ProfilesRefused {
        refused: Vec<Rejected>,
        pieces: Vec<Piece>,
    },
    SessionTriggered {
        session_id: String,
        requests: u32,
        /// Okta's clock (the `Date` of its start-import answer), which the
        /// cooldown is measured on (`upload::clock`).
        #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
        okta_at: Option<OffsetDateTime>,
    },
    SessionFinished {
        session_id: String,
        status: SessionStatus,
        /// Okta applied nothing from it (it stayed CREATED: every request was
        /// a delete of users Okta does not know), so the uploader cancelled
        /// it. Its CLOSED status then loses nothing.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        empty: bool,
    },
    /// Waiting out Okta's cooldown before the next session can be opened.
    CooldownWaited {
        seconds: f64,
    },
    /// A step failed in a way worth retrying; it will be retried.
    Retrying {
        stage: String,
        attempt: u32,
        reason: String,
    },
    RunCompleted {
        #[serde(default)]
        delta_link: Option<String>,
    },
    RunFailed {
        reason: String,
    },
}

impl RunEvent {
    pub fn new(run_id: RunId, sync: SyncName, at: OffsetDateTime, kind: EventKind) -> Self {
        Self { v: MESSAGE_VERSION, run_id, sync, at, kind }
    }

    /// The event's `type` tag, e.g. `"BulkLoaded"`.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            EventKind::RunStarted { .. } => "RunStarted",
            EventKind::PageFetched { .. } => "PageFetched",
            EventKind::PageMapped { .. } => "PageMapped",
            EventKind::SessionOpened { .. } => "SessionOpened",
            EventKind::BulkSending { .. } => "BulkSending",
            EventKind::BulkLoaded { .. } => "BulkLoaded",
            EventKind::ProfilesUnchanged { .. } => "ProfilesUnchanged",
            EventKind::DeactivationsQueued { .. } => "DeactivationsQueued",
            EventKind::RejectedInSource { .. } => "RejectedInSource",
            EventKind::DeactivationsPlanned { .. } => "DeactivationsPlanned",
            EventKind::GuardTripped { .. } => "GuardTripped",
            EventKind::GuardOverridden { .. } => "GuardOverridden",
            EventKind::DeltaResync { .. } => "DeltaResync",
            EventKind::DeltaLinkReceived { .. } => "DeltaLinkReceived",
            EventKind::RunQueued { .. } => "RunQueued",
            EventKind::RunMerged { .. } => "RunMerged",
            EventKind::BatchEmpty { .. } => "BatchEmpty",
            EventKind::ProfilesRefused { .. } => "ProfilesRefused",
            EventKind::SessionTriggered { .. } => "SessionTriggered",
            EventKind::SessionFinished { .. } => "SessionFinished",
            EventKind::CooldownWaited { .. } => "CooldownWaited",
            EventKind::Retrying { .. } => "Retrying",
            EventKind::RunCompleted { .. } => "RunCompleted",
            EventKind::RunFailed { .. } => "RunFailed",
        }
    }
}

/// Deterministic message ids: the same logical message always gets the same
/// id, so duplicates are recognisable downstream.
pub trait MessageId {
    fn message_id(&self) -> String;
}

impl MessageId for SyncRequest {
    fn message_id(&self) -> String {
        match &self.run_id {
            Some(run) => format!("req:{}:{run}", self.sync),
            None => format!("req:{}:{}", self.sync, uuid::Uuid::new_v4()),
        }
    }
}

impl MessageId for FetchPage {
    fn message_id(&self) -> String {
        format!("fetch:{}:{}:{}", self.sync, self.run_id, self.seq)
    }
}

impl MessageId for Page {
    fn message_id(&self) -> String {
        format!("page:{}:{}:{}:{}", self.sync, self.run_id, self.seq, self.copy)
    }
}

impl MessageId for FinishRun {
    fn message_id(&self) -> String {
        format!("finish:{}:{}", self.sync, self.run_id)
    }
}

impl MessageId for Batch {
    fn message_id(&self) -> String {
        format!("batch:{}:{}:{}:{}:{}", self.sync, self.run_id, self.page_seq, self.copy, self.part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (RunId, SyncName) {
        (RunId::parse("r1").unwrap(), SyncName::parse("demo").unwrap())
    }

    #[test]
    fn a_minimal_sync_request_parses_with_defaults() {
        let req: SyncRequest = serde_json::from_str(r#"{"sync":"demo"}"#).unwrap();
        assert_eq!(req.v, MESSAGE_VERSION);
        assert_eq!(req.mode, Mode::Full);
        assert!(!req.dry_run);
        assert_eq!(req.run_id, None);
    }

    #[test]
    fn a_bad_mode_is_refused() {
        let err = serde_json::from_str::<SyncRequest>(r#"{"sync":"demo","mode":"all"}"#);
        assert!(err.is_err());
    }

    #[test]
    fn profiles_use_okta_wire_names() {
        let p = OktaProfile {
            external_id: ExternalId::parse("x1").unwrap(),
            profile: Some(BTreeMap::from([("email".into(), "a@b.c".into())])),
        };
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"externalId":"x1","profile":{"email":"a@b.c"}}"#);
        let d = OktaProfile { external_id: ExternalId::parse("x1").unwrap(), profile: None };
        assert_eq!(serde_json::to_string(&d).unwrap(), r#"{"externalId":"x1"}"#);
    }

    #[test]
    fn events_are_tagged_by_type_and_round_trip() {
        let (run, sync) = ids();
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let e = RunEvent::new(run, sync, at, EventKind::SessionOpened { session_id: "s1".into() });
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "SessionOpened");
        assert_eq!(json["session_id"], "s1");
        assert_eq!(json["at"], "2023-11-14T22:13:20Z");
        let back: RunEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.type_name(), "SessionOpened");
    }

    #[test]
    fn message_ids_are_deterministic() {
        let (run, sync) = ids();
        let f = FetchPage { v: 1, run_id: run, sync, options: RunOptions::default(), seq: 3, link: None, parent: None };
        assert_eq!(f.message_id(), f.clone().message_id());
        assert_eq!(f.message_id(), "fetch:demo:r1:3");
    }

    #[test]
    fn messages_written_before_delta_sync_read_and_write_the_same() {
        // RunOptions without the later flags: they default to false and are
        // left out again when written.
        let o: RunOptions = serde_json::from_str(r#"{"mode":"full","dry_run":false}"#).unwrap();
        assert_eq!(o, RunOptions::default());
        assert_eq!(serde_json::to_string(&o).unwrap(), r#"{"mode":"full","dry_run":false}"#);
        let old = r#"{"v":1,"run_id":"r1","sync":"demo","at":"2023-11-14T22:13:20Z","type":"BulkLoaded",
            "session_id":"s1","request_no":1,"op":"upsert","profiles":1,"bytes":10,"pieces":[]}"#;
        let e: RunEvent = serde_json::from_str(old).unwrap();
        assert!(matches!(e.kind, EventKind::BulkLoaded { ref changes, .. } if changes.is_empty()));
        let req: SyncRequest = serde_json::from_str(r#"{"sync":"demo","allow_mass_deactivation":true}"#).unwrap();
        assert!(req.options().allow_mass_deactivation && !req.options().force);
        assert!(RunOptions { mode: Mode::Delta, full_state: true, ..RunOptions::default() }.reads_full_state());
        assert!(!RunOptions { mode: Mode::Delta, ..RunOptions::default() }.reads_full_state());
    }
}
