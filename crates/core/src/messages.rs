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

/// The options of a run, carried unchanged from the request through every stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunOptions {
    #[serde(default)]
    pub mode: Mode,
    /// Run the pipeline but send nothing to Okta.
    #[serde(default)]
    pub dry_run: bool,
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
}

impl SyncRequest {
    pub fn options(&self) -> RunOptions {
        RunOptions { mode: self.mode, dry_run: self.dry_run }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    },
    /// A batch with no profiles (its page mapped to nothing) was accounted
    /// for; recorded so a successor uploader knows the page was seen.
    BatchEmpty {
        page_seq: u32,
        part: u32,
        parts: u32,
        #[serde(default)]
        total_pages: Option<u32>,
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
    },
    SessionFinished {
        session_id: String,
        status: SessionStatus,
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
        format!("page:{}:{}:{}", self.sync, self.run_id, self.seq)
    }
}

impl MessageId for FinishRun {
    fn message_id(&self) -> String {
        format!("finish:{}:{}", self.sync, self.run_id)
    }
}

impl MessageId for Batch {
    fn message_id(&self) -> String {
        format!("batch:{}:{}:{}:{}", self.sync, self.run_id, self.page_seq, self.part)
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
        let f = FetchPage { v: 1, run_id: run, sync, options: RunOptions::default(), seq: 3, link: None };
        assert_eq!(f.message_id(), f.clone().message_id());
        assert_eq!(f.message_id(), "fetch:demo:r1:3");
    }
}
