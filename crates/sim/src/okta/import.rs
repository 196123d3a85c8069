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
        let now = state.clock.now();
        let deadline = state.okta_at(now).sessions.next_deadline();
        let wait = async {
            match deadline {
                // Measured from `now` rather than as an instant, so that a
                // pinned clock makes this wait, not spin.
                Some(at) => tokio::time::sleep(at.saturating_sub(now.elapsed)).await,
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
