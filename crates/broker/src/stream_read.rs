//! Reading a whole stream "up to now".
//!
//! A stream has no end a reader can see: waiting until nothing new comes
//! for a while ends early on a slow broker, and a state rebuilt from a
//! truncated read is wrong (an uploader that missed its last `BulkSending`
//! would count low). So the reader first appends a marker of its own,
//! confirmed, and reads from the start until the marker comes back: then it
//! has seen everything that was in the stream when it started.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::de::DeserializeOwned;

use crate::broker::{Broker, close_quietly, json_props};
use crate::consumer::{self, decode};
use crate::error::BrokerError;
use crate::events::StreamOffset;
use crate::headers;

/// Message ids of end markers start with this; every reader skips them.
pub(crate) const MARKER_PREFIX: &str = "xaas-end-marker:";
/// Unacknowledged entries in flight per reader.
const PREFETCH: u16 = 500;
/// A read that does not meet its marker within this long fails rather than
/// returning a partial history.
const READ_LIMIT: Duration = Duration::from_secs(180);

pub(crate) fn is_marker(props: &BasicProperties) -> bool {
    props.message_id().as_ref().is_some_and(|id| id.as_str().starts_with(MARKER_PREFIX))
}

impl Broker {
    /// Every entry of `stream` from `from` up to now, as `T`, oldest first.
    /// Entries that are not a `T` this build can read are skipped with a
    /// warning.
    pub(crate) async fn read_stream_to_end<T: DeserializeOwned>(
        &self,
        stream: &str,
        from: StreamOffset,
    ) -> Result<Vec<T>, BrokerError> {
        let marker = format!("{MARKER_PREFIX}{}", uuid::Uuid::new_v4());
        self.publish_raw("", stream, b"{}", json_props(marker.clone())).await?;

        let ch = self.channel(format!("opening a channel to read {stream}")).await?;
        let read = async {
            ch.basic_qos(PREFETCH, BasicQosOptions::default())
                .await
                .map_err(BrokerError::amqp(format!("setting prefetch on {stream}")))?;
            let mut args = FieldTable::default();
            args.insert("x-stream-offset".into(), from.to_arg());
            let mut inner = ch
                .basic_consume(stream.into(), "".into(), BasicConsumeOptions::default(), args)
                .await
                .map_err(BrokerError::amqp(format!("reading {stream}")))?;
            let max_bytes = self.config().max_message_bytes;
            let mut out = Vec::new();
            let mut last_offset: Option<u64> = None;
            while let Some(next) = inner.next().await {
                let d = next.map_err(BrokerError::amqp(format!("reading {stream}")))?;
                consumer::ack(&d).await;
                // After a recovery the consumer starts over; skip what was read.
                let offset = headers::get_u64(&d.properties, "x-stream-offset");
                if offset.is_some_and(|o| last_offset.is_some_and(|last| o <= last)) {
                    continue;
                }
                last_offset = offset.or(last_offset);
                if is_marker(&d.properties) {
                    if d.properties.message_id().as_ref().is_some_and(|id| id.as_str() == marker) {
                        return Ok(out);
                    }
                    continue;
                }
                match decode::<T>(&d.data, max_bytes) {
                    Ok(entry) => out.push(entry),
                    Err(e) => tracing::warn!(%stream, ?offset, error = %e, "unreadable stream entry skipped"),
                }
            }
            Err(BrokerError::StreamEnded { stream: stream.to_string() })
        };
        let result = match tokio::time::timeout(READ_LIMIT, read).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::StreamReadTimeout { stream: stream.to_string(), after: READ_LIMIT }),
        };
        close_quietly(ch).await;
        result
    }
}
