//! Keeps the run index up to date: one reader follows the events stream
//! from its first retained entry and files every event, so that pages and
//! progress streams never read the stream themselves.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use xaas_broker::{Broker, StreamOffset};
use xaas_core::RunEvent;

use crate::index::RunIndex;

/// The index shared by the reader and the HTTP handlers, and a signal
/// that moves with every event filed.
#[derive(Debug)]
pub struct LiveIndex {
    index: Mutex<RunIndex>,
    changed: watch::Sender<u64>,
}

impl Default for LiveIndex {
    fn default() -> Self {
        Self { index: Mutex::new(RunIndex::default()), changed: watch::Sender::new(0) }
    }
}

impl LiveIndex {
    /// Reads the index. Keep `f` short: the reader waits meanwhile.
    pub fn read<R>(&self, f: impl FnOnce(&RunIndex) -> R) -> R {
        f(&self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn apply(&self, offset: u64, e: &RunEvent) {
        let version = {
            let mut index = self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            index.apply(offset, e);
            index.version()
        };
        self.changed.send_replace(version);
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Follows the events stream into `live` until `shutdown`. A broken read
/// is resumed from the entry after the last one filed, after a pause.
pub async fn follow(broker: Broker, live: std::sync::Arc<LiveIndex>, shutdown: CancellationToken) {
    let mut failures: u32 = 0;
    loop {
        let from = live.read(RunIndex::next_offset).map_or(StreamOffset::First, StreamOffset::Offset);
        match broker.events_since(from).await {
            Ok(mut stream) => loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        stream.close().await;
                        return;
                    }
                    next = stream.next() => match next {
                        Some(Ok((offset, event))) => {
                            failures = 0;
                            live.apply(offset, &event);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "console: reading the events stream failed; resuming");
                            break;
                        }
                        None => {
                            tracing::warn!("console: the events stream reader closed; resuming");
                            break;
                        }
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "console: cannot read the events stream; retrying"),
        }
        failures = failures.saturating_add(1);
        let pause = Duration::from_millis(500u64.saturating_mul(1 << failures.min(5)));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
