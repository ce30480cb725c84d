//! The loop every writer role runs: reconcile once at start, again after each burst of store
//! changes, and at least every `tick` (restart delays and heartbeats expire with time, not with
//! log entries).
//!
//! Watchers are woken, and told what woke them: the entries applied since the last round
//! ([`Wake::Changes`]), or [`Wake::Everything`] (the first round, a tick, a lagged receiver).
//! A role may plan only what the entries touched, but it reads the current state, not the
//! entries: a lagged receiver or a leader change needs no replay, only a full round.
//!
//! A burst of entries is coalesced into one round: a round starts no sooner than [`COALESCE`],
//! and than as long as the last round read the store, after the last round ended. A change
//! after a quiet spell is handled at once (a lone `service create` waits for no timer in each
//! of the orchestrator, allocator and scheduler). A round's read costs time in proportion to
//! the store (a hundred thousand tasks take tens of milliseconds to read), and entries keep
//! coming while thousands of tasks start; without the second rule every role would re-read the
//! store back to back and leave no CPU to the Raft loop and the sessions. Only the read counts
//! ([`read`]), not the wait for the round's proposals to commit: that wait costs no CPU, and
//! counting it made a round that proposed 20,000 assignments sit idle as long again before the
//! next.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;

use crate::store::{Applied, Store, StoreState};

/// Why a round runs.
pub enum Wake {
    /// Reconcile everything: the first round, a tick, or changes were missed (lagged).
    Everything,
    /// These entries were applied since the last round (and nothing was missed).
    Changes(Vec<Arc<Applied>>),
}

/// The shortest time between the end of a round and the start of the next one.
const COALESCE: Duration = Duration::from_millis(5);

/// A round's read of the store: `f`'s result and how long it took, which the round returns
/// so that the loop paces the next round by it.
pub fn read<R>(store: &Store, f: impl FnOnce(&StoreState) -> R) -> (R, Duration) {
    let started = Instant::now();
    let r = store.view(f);
    (r, started.elapsed())
}

pub async fn run<F, Fut>(
    store: Store,
    tick: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut reconcile: F,
) where
    F: FnMut(Wake) -> Fut,
    // How long the round read the store (see [`read`]).
    Fut: Future<Output = Duration>,
{
    let mut events = store.subscribe();
    let mut wake = Wake::Everything;
    loop {
        let took = reconcile(wake).await;
        let ended = tokio::time::Instant::now();
        wake = tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(tick) => Wake::Everything,
            ev = events.recv() => {
                let mut changes = match ev {
                    Err(RecvError::Closed) => return,
                    Err(RecvError::Lagged(_)) => None,
                    Ok(applied) => Some(vec![applied]),
                };
                // Coalesce a burst of entries into one round (see the module documentation).
                tokio::time::sleep_until(ended + COALESCE.max(took)).await;
                loop {
                    match events.try_recv() {
                        Ok(applied) => {
                            if let Some(c) = changes.as_mut() {
                                c.push(applied);
                            }
                        }
                        Err(TryRecvError::Lagged(_)) => changes = None,
                        Err(_) => break,
                    }
                }
                changes.map_or(Wake::Everything, Wake::Changes)
            }
        };
        if *shutdown.borrow() {
            return;
        }
    }
}
