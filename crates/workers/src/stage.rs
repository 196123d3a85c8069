//! What the stateless stages share: how a delivery becomes a typed message
//! and a handler context, and how a failure becomes an `Outcome` that also
//! leaves a trace in the run's history.

use xaas_broker::{Incoming, Outcome};
use xaas_core::{EventKind, RunId, SyncName};

use crate::deps::Deps;
use crate::events::emit;

/// What a handler knows about the delivery besides its message.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// Failed attempts before this one.
    pub attempt: u32,
    pub message_id: Option<String>,
}

impl Ctx {
    pub fn of(incoming: &Incoming) -> Self {
        Self { attempt: incoming.attempt(), message_id: incoming.message_id() }
    }
}

/// Decodes a delivery for a handler, or says why it must be parked.
pub fn decode<T: serde::de::DeserializeOwned>(incoming: &Incoming) -> Result<T, Outcome> {
    panic_hook(incoming.message_id().as_deref());
    incoming.decode().map_err(|e| Outcome::Park { reason: "undecodable".into(), error: e.to_string() })
}

/// The environment variable of the test hook below.
pub const PANIC_ON_VAR: &str = "XAAS_PANIC_ON";

/// TEST HOOK, not a feature: with `XAAS_PANIC_ON=<text>` set, the stateless
/// stages panic on every delivery whose message id contains `<text>`. It
/// exists so the fault suite can prove, against the real binary, that a
/// message which crashes its handler every time is parked by the queue's
/// delivery limit instead of looping. Read once; unset (the default) it costs
/// one branch per delivery and changes nothing.
fn panic_hook(message_id: Option<&str>) {
    static PANIC_ON: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| std::env::var(PANIC_ON_VAR).ok().filter(|s| !s.is_empty()));
    if let (Some(needle), Some(id)) = (PANIC_ON.as_deref(), message_id)
        && id.contains(needle)
    {
        panic!("{PANIC_ON_VAR} test hook: message {id} makes this handler panic");
    }
}

/// A failure worth retrying: recorded as `Retrying`, and as `RunFailed` when
/// this was the last attempt (the broker then parks the message), so that a
/// run never hangs silently. `reason` is the metric's fixed label.
pub async fn retry(
    deps: &Deps,
    ctx: &Ctx,
    (run, sync): (&RunId, &SyncName),
    (stage, reason): (&'static str, &'static str),
    error: String,
) -> Outcome {
    let attempt = ctx.attempt + 1;
    let _ = emit(&deps.broker, run, sync, EventKind::Retrying { stage: stage.into(), attempt, reason: error.clone() })
        .await;
    if attempt >= deps.config.broker.max_attempts {
        let reason = format!(
            "{stage} gave up after {attempt} attempts: {error}; the message is parked, fix the cause and run `xaas parked replay`"
        );
        let _ = emit(&deps.broker, run, sync, EventKind::RunFailed { reason }).await;
    }
    metrics::counter!(xaas_core::run_metrics::RETRIES, "stage" => stage, "reason" => reason).increment(1);
    Outcome::Retry { error }
}

/// A failure that cannot pass by waiting: the run fails with the reason and
/// the message is parked for the operator.
pub async fn fail(deps: &Deps, run: &RunId, sync: &SyncName, stage: &str, error: String) -> Outcome {
    let reason = format!("{stage}: {error}");
    let _ = emit(&deps.broker, run, sync, EventKind::RunFailed { reason: reason.clone() }).await;
    Outcome::Park { reason: format!("{stage} failed permanently"), error }
}
