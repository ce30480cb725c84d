//! The loop every writer role runs: reconcile once at start, again after each burst of store
//! changes, and at least every `tick` (restart delays and heartbeats expire with time, not with
//! log entries).
//!
//! Watchers are woken, not fed: a role reads the whole current state each round, so a lagged
//! broadcast receiver or a leader change needs no replay.
//!
//! A burst of entries is coalesced into one round: the loop waits at least [`COALESCE`], and at
//! least as long as its last round took, before the next. A round costs time in proportion to
//! the store (a hundred thousand tasks take tens of milliseconds to read), and entries keep
//! coming while thousands of tasks start; without the second rule every role would re-read the
//! store back to back and leave no CPU to the Raft loop and the sessions.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast::error::RecvError, watch};

use crate::store::Store;

/// The shortest wait between a store change and the round it triggers.
const COALESCE: Duration = Duration::from_millis(5);

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
        let started = Instant::now();
        reconcile().await;
        let took = started.elapsed();
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(tick) => {}
            ev = events.recv() => {
                if matches!(ev, Err(RecvError::Closed)) {
                    return;
                }
                // Coalesce a burst of entries into one round (see the module documentation).
                tokio::time::sleep(COALESCE.max(took)).await;
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
