//! Reading the events stream (`P.events`), the runs' history and the
//! uploader's recovery log.
//!
//! A stream queue is read like a log: a consumer says where to start
//! (`x-stream-offset`) and every delivery carries its offset. Reading does
//! not remove anything; acknowledgements only keep the credit flowing.

use futures_lite::StreamExt;
use lapin::Channel;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use time::OffsetDateTime;
use xaas_core::RunEvent;

use crate::broker::{Broker, close_quietly};
use crate::consumer::{self, decode};
use crate::error::BrokerError;
use crate::headers;

/// Unacknowledged stream entries in flight per reader.
const STREAM_PREFETCH: u16 = 500;

/// Where to start reading the events stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOffset {
    /// The oldest entry still retained.
    First,
    /// Only entries appended from now on.
    Next,
    /// Entries from about this time (the stream's granularity is a chunk,
    /// so a few earlier entries may come too).
    Timestamp(OffsetDateTime),
    /// From this offset on.
    Offset(u64),
}

impl StreamOffset {
    pub(crate) fn to_arg(self) -> AMQPValue {
        match self {
            Self::First => AMQPValue::LongString(LongString::from("first")),
            Self::Next => AMQPValue::LongString(LongString::from("next")),
            Self::Timestamp(t) => AMQPValue::Timestamp(t.unix_timestamp().max(0).unsigned_abs()),
            Self::Offset(o) => AMQPValue::LongLongInt(i64::try_from(o).unwrap_or(i64::MAX)),
        }
    }
}

/// Events read from the stream, in order, with their offsets.
pub struct EventStream {
    inner: lapin::Consumer,
    channel: Channel,
    max_bytes: usize,
    /// After a connection recovery lapin re-registers the consumer with its
    /// original start offset, so entries come again; this skips them.
    last_offset: Option<u64>,
}

impl EventStream {
    /// The next event and its offset; `None` once the reader is closed.
    /// Entries that are not a `RunEvent` this build understands are skipped
    /// with a warning (the stream is shared history, not a work queue).
    pub async fn next(&mut self) -> Option<Result<(u64, RunEvent), BrokerError>> {
        loop {
            let d = match self.inner.next().await? {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "events reader interrupted, waiting for recovery");
                    if let Err(e) = self.channel.wait_for_recovery(e).await {
                        return Some(Err(BrokerError::amqp("reading the events stream")(e)));
                    }
                    continue;
                }
            };
            consumer::ack(&d).await;
            let Some(offset) = headers::get_u64(&d.properties, "x-stream-offset") else {
                tracing::warn!("stream entry without x-stream-offset; skipped");
                continue;
            };
            if self.last_offset.is_some_and(|last| offset <= last) {
                continue;
            }
            self.last_offset = Some(offset);
            if crate::stream_read::is_marker(&d.properties) {
                continue;
            }
            match decode::<RunEvent>(&d.data, self.max_bytes) {
                Ok(e) => return Some(Ok((offset, e))),
                Err(e) => tracing::warn!(offset, error = %e, "undecodable event skipped"),
            }
        }
    }

    /// Stops reading and closes the reader's channel.
    pub async fn close(self) {
        close_quietly(self.channel).await;
    }
}

impl Broker {
    /// Reads the events stream from `offset` on, following new entries as
    /// they are appended.
    pub async fn events_since(&self, offset: StreamOffset) -> Result<EventStream, BrokerError> {
        let events = self.names().events();
        let ch = self.channel("opening a channel to read the events stream").await?;
        // A stream consumer must have a prefetch; it is its credit.
        ch.basic_qos(STREAM_PREFETCH, BasicQosOptions::default())
            .await
            .map_err(BrokerError::amqp("setting prefetch on the events stream"))?;
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), offset.to_arg());
        let inner = ch
            .basic_consume(events.as_str().into(), "".into(), BasicConsumeOptions::default(), args)
            .await
            .map_err(BrokerError::amqp(format!("reading {events}")))?;
        Ok(EventStream { inner, channel: ch, max_bytes: self.config().max_message_bytes, last_offset: None })
    }

    /// Every retained event, oldest first, up to the moment of the call
    /// (see `stream_read`): how an uploader rebuilds its state and how
    /// reports are read back.
    pub async fn read_all_events(&self) -> Result<Vec<RunEvent>, BrokerError> {
        self.read_events_to_end(StreamOffset::First).await
    }

    /// The events from `from` up to the moment of the call.
    pub async fn read_events_to_end(&self, from: StreamOffset) -> Result<Vec<RunEvent>, BrokerError> {
        self.read_stream_to_end(&self.names().events(), from).await
    }
}
