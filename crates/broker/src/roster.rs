//! The roster streams (`P.roster.<sync>`): who each sync left active in
//! Okta, written by the sync's active uploader and folded back by its
//! successor (`xaas_core::roster` says what the records mean and why they
//! live here). And a delayed re-publish for requests that must wait their
//! turn without spending a retry attempt.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::Serialize;
use xaas_core::roster::RosterRecord;
use xaas_core::{MessageId, SyncName};

use crate::broker::{Broker, json_props};
use crate::error::BrokerError;
use crate::headers::{self, RETRY_TIER};
use crate::names::tier_label;

/// Retention of a roster stream, by size only: an age limit would drop the
/// roster of a sync that runs rarely. The writer rewrites a snapshot long
/// before this fills (see `xaas_core::roster`).
const ROSTER_MAX_BYTES: i64 = 2 * 1024 * 1024 * 1024;
/// Small segments, so retention trims old snapshots in small steps.
const ROSTER_SEGMENT_BYTES: i64 = 64 * 1024 * 1024;

pub(crate) fn roster_args() -> FieldTable {
    let mut a = FieldTable::default();
    a.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("stream")));
    a.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(ROSTER_MAX_BYTES));
    a.insert("x-stream-max-segment-size-bytes".into(), AMQPValue::LongLongInt(ROSTER_SEGMENT_BYTES));
    a
}

impl Broker {
    /// Appends one roster record to its sync's stream, confirmed.
    pub async fn publish_roster(&self, record: &RosterRecord) -> Result<(), BrokerError> {
        let body = serde_json::to_vec(record).map_err(BrokerError::Encode)?;
        let props = json_props(record.message_id());
        self.publish_raw("", &self.names().roster(&record.sync), &body, props).await
    }

    /// Every retained record of `sync`'s roster stream, oldest first, up to
    /// the moment of the call (see `stream_read`). Records this build cannot
    /// read are skipped with a warning: the roster then stays unknown or
    /// misses a set, which costs a resend, never a deactivation.
    pub async fn read_roster(&self, sync: &SyncName) -> Result<Vec<RosterRecord>, BrokerError> {
        self.read_stream_to_end(&self.names().roster(sync), crate::StreamOffset::First).await
    }

    /// Publishes `msg` to come back to `queue` after about `wait` (the
    /// longest retry tier not over it, else the shortest), without counting
    /// a failed attempt: for work that must wait its turn, not work that failed.
    pub async fn publish_later<M: Serialize + MessageId>(
        &self,
        queue: &str,
        msg: &M,
        wait: Duration,
    ) -> Result<(), BrokerError> {
        let tiers = &self.config().retry_tiers;
        let tier = tiers.iter().copied().filter(|t| *t <= wait).max().or_else(|| tiers.iter().copied().min());
        let Some(tier) = tier else {
            return self.publish(queue, msg).await;
        };
        let body = serde_json::to_vec(msg).map_err(BrokerError::Encode)?;
        let mut h = FieldTable::default();
        h.insert(RETRY_TIER.into(), headers::long_str(tier_label(tier)));
        let props = json_props(msg.message_id()).with_headers(h);
        self.publish_raw(&self.names().retry_exchange(), queue, &body, props).await
    }
}
