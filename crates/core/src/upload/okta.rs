//! What the upload machine asks of Okta and what it hears back, in the
//! domain's words: no HTTP types cross this line. The driver turns a
//! [`Call`] into a request with the Okta client, and the client's answer or
//! error into a [`Reply`].

use std::time::Duration;

use time::OffsetDateTime;

use crate::messages::{OktaProfile, Op, SessionStatus};

/// One call to Okta's Identity Sources API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    CreateSession,
    ListSessions,
    GetSession {
        session: String,
    },
    /// Cancels (deletes) a session that took no data.
    CancelSession {
        session: String,
    },
    /// `bulk-upsert` or `bulk-delete` into `session`.
    Bulk {
        session: String,
        op: Op,
        profiles: Vec<OktaProfile>,
    },
    /// `start-import`: the trigger.
    StartImport {
        session: String,
    },
}

impl Call {
    /// The operation, as the metrics and logs name it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreateSession => "create_session",
            Self::ListSessions => "list_sessions",
            Self::GetSession { .. } => "get_session",
            Self::CancelSession { .. } => "cancel_session",
            Self::Bulk { op: Op::Upsert, .. } => "bulk_upsert",
            Self::Bulk { op: Op::Delete, .. } => "bulk_delete",
            Self::StartImport { .. } => "start_import",
        }
    }
}

/// A session as Okta describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub status: SessionStatus,
}

/// What a successful call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Session(SessionInfo),
    Sessions(Vec<SessionInfo>),
    /// A bulk load or a cancel was accepted.
    Accepted,
}

/// Why a call failed, by what the machine does about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 400 on create-session: another session is open, or Okta's cooldown
    /// after the last trigger has not passed.
    CreateRefused { summary: String },
    /// Any other 400: the request is wrong as sent. `causes` are Okta's
    /// `errorCauses`, which name the refused profiles.
    Invalid { summary: String, causes: Vec<String> },
    /// Worth retrying as it is: 5xx, 429, the network. `retry_after` when
    /// Okta said how long to wait. A write may have been applied anyway.
    Transient { reason: String, retry_after: Option<Duration> },
    /// Waiting cannot fix it: credentials, a missing identity source, an
    /// answer this client cannot read.
    Fatal { reason: String },
}

/// Okta's answer to one call, with the time Okta's `Date` header gave
/// (whole seconds, rounded down), when it sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub result: Result<Answer, Failure>,
    pub okta_date: Option<OffsetDateTime>,
}

impl Reply {
    pub fn ok(answer: Answer, okta_date: Option<OffsetDateTime>) -> Self {
        Self { result: Ok(answer), okta_date }
    }

    pub fn failed(failure: Failure, okta_date: Option<OffsetDateTime>) -> Self {
        Self { result: Err(failure), okta_date }
    }
}
