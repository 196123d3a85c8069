//! Appending to a run's history in the events stream.

use time::OffsetDateTime;
use xaas_broker::{Broker, BrokerError};
use xaas_core::{EventKind, RunEvent, RunId, SyncName};

/// Records one event, confirmed by the broker before this returns.
pub async fn emit(broker: &Broker, run_id: &RunId, sync: &SyncName, kind: EventKind) -> Result<RunEvent, BrokerError> {
    let event = RunEvent::new(run_id.clone(), sync.clone(), OffsetDateTime::now_utc(), kind);
    broker.publish_event(&event).await?;
    Ok(event)
}
