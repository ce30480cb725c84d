//! Keeps this manager's Raft data key wrapped as the cluster says: with the cluster's unlock
//! key while autolock is on (the `kek` file deleted), with a random key-encryption key in `kek`
//! while it is off. Every manager runs it, leader or not: each holds its own key files, and the
//! unlock key reaches all of them through the replicated cluster object.

use std::path::PathBuf;

use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::raft::keys::{self, UnlockKey};
use crate::raft::DataKey;
use crate::store::Store;

/// Re-wraps `dek` in `dir` whenever the cluster's autolock setting or unlock key differs from
/// `current` (what the key files hold now: the unlock key, or `None` for the `kek` file).
pub(crate) async fn run(
    store: Store,
    dir: PathBuf,
    dek: DataKey,
    mut current: Option<UnlockKey>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut events = store.subscribe();
    loop {
        // No cluster object yet (a joining manager before the leader's snapshot): nothing to do.
        let wanted = store.view(|st| {
            st.cluster
                .as_ref()
                .map(|c| c.autolock.then(|| c.unlock_key.clone()))
        });
        if let Some(wanted) = wanted {
            let wanted = match wanted.map(|k| k.parse::<UnlockKey>()).transpose() {
                Ok(key) => Some(key),
                Err(e) => {
                    warn!(error = %e, "the cluster's unlock key is malformed; the raft data key keeps its current wrapping");
                    None
                }
            };
            if let Some(wanted) = wanted.filter(|w| *w != current) {
                let (dir, dek, key) = (dir.clone(), dek.clone(), wanted.clone());
                let done = tokio::task::spawn_blocking(move || {
                    keys::wrap_data_key(&dir, &dek, key.as_ref())
                })
                .await;
                match done {
                    Ok(Ok(())) => {
                        info!(
                            autolock = wanted.is_some(),
                            "raft data key re-wrapped for the cluster's autolock setting"
                        );
                        current = wanted;
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "could not re-wrap the raft data key; retrying at the next change")
                    }
                    Err(e) => warn!(error = %e, "re-wrapping the raft data key did not finish"),
                }
            }
        }
        tokio::select! {
            event = events.recv() => match event {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}
