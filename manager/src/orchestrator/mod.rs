//! The orchestrator: turns services into tasks (replicated slots, restart policy) and reaps the
//! tasks nobody needs any more. It writes desired state only; the scheduler places tasks and
//! workers report what actually happens.

pub mod reaper;
pub mod replicated;

use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::ids::now_ms;
use crate::store::Store;

/// Runs until `shutdown` flips; only the leader runs it.
pub async fn run(store: Store, shutdown: watch::Receiver<bool>) {
    let s = store.clone();
    crate::reconcile::run(store, Duration::from_millis(500), shutdown, move || {
        let store = s.clone();
        async move {
            let mut actions = store.view(|st| {
                let mut a = replicated::plan(st, now_ms()).actions;
                a.extend(reaper::plan(st));
                a
            });
            if actions.is_empty() {
                return;
            }
            // Deletes and creates are independent of each other: one entry serves both.
            actions.dedup();
            if let Err(e) = store.propose(actions).await {
                warn!(error = %e, "orchestrator proposal failed; retrying next round");
            }
        }
    })
    .await;
}
