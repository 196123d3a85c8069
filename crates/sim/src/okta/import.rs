//! The import processor: completes triggered sessions when their time comes
//! and expires idle ones, even when nobody is asking.
//!
//! Correctness does not depend on it: every request brings the state up to
//! date first (`AppState::okta_at`). It exists so that imports land, and their
//! log lines appear, when Okta would have finished them.

use tokio::sync::watch;

use crate::app::Shared;

pub async fn run(state: Shared, mut shutdown: watch::Receiver<bool>) {
    loop {
        let deadline = state.okta_at(state.clock.now()).sessions.next_deadline();
        let wait = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(state.clock.instant(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => {}
            () = state.import_wakeup.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
