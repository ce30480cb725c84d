//! The loop every writer role runs: reconcile once at start, again after each burst of store
//! changes, and at least every `tick` (restart delays and heartbeats expire with time, not with
//! log entries).
//!
//! Watchers are woken, not fed: a role reads the whole current state each round, so a lagged
//! broadcast receiver or a leader change needs no replay.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{broadcast::error::RecvError, watch};

use crate::store::Store;

pub async fn run<F, Fut>(
    store: Store,
    tick: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut reconcile: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut events = store.subscribe();
    loop {
        reconcile().await;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(tick) => {}
            ev = events.recv() => {
                if matches!(ev, Err(RecvError::Closed)) {
                    return;
                }
                // Coalesce a burst of entries into one round.
                tokio::time::sleep(Duration::from_millis(5)).await;
                while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                    events.try_recv()
                {}
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
