//! Status reports of many workers in one log entry. Each `UpdateTaskStatus` call used to be an
//! entry of its own, so a thousand workers each reporting a few tasks made a thousand entries,
//! each written, replicated and applied (and each waking every watcher) one after the other.
//!
//! Calls hand their actions to one loop, which proposes whatever has queued up while the
//! previous entries were in flight, up to [`MAX_STATUS_ACTIONS`] actions, as one entry, and
//! answers every call with its outcome. There is no added delay: a lone report goes out at
//! once. Up to [`IN_FLIGHT`] entries are in flight at a time: with a hundred thousand tasks
//! starting (four reports each) one entry at a time, each waiting for its commit, could not
//! keep up. Entries commit in the order they were proposed, and a report that is not a forward
//! move is a no-op anyway, so overlapping entries cannot move a task backwards. Status updates are never refused as a whole
//! (a report that is not a forward move is a no-op), so one worker's report cannot fail
//! another's.

use std::sync::Arc;

use shoal_proto::StoreAction;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Status;

use super::store_status;
use crate::store::{Store, StoreError};

/// Actions per status entry: a status update is ~100 bytes, so an entry stays far below the
/// Raft message limit (1 MiB).
const MAX_STATUS_ACTIONS: usize = 2_000;
/// Status entries proposed and not yet applied, at most.
const IN_FLIGHT: usize = 2;

/// One call's actions and where its answer goes.
type Job = (Vec<StoreAction>, oneshot::Sender<Result<(), Status>>);

/// How many calls may wait for the loop before callers wait to hand theirs over.
const QUEUE: usize = 4096;

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub(super) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the loop on the current runtime; it ends when every `Batcher` is dropped.
    pub(super) fn start(store: Store) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Batcher { jobs }
    }

    /// Proposes `actions` with whatever else is queued; answers once their entry is applied.
    pub(super) async fn propose(&self, actions: Vec<StoreAction>) -> Result<(), Status> {
        let stopped = || store_status(StoreError::Stopped);
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((actions, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first, so that what queues meanwhile joins this entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (mut actions, first_reply) = first;
        let mut replies = vec![first_reply];
        // Whatever queued meanwhile goes in the same entry, up to the entry's bound; a call
        // is never split, so its answer is one entry's.
        while actions.len() < MAX_STATUS_ACTIONS {
            match rx.try_recv() {
                Ok((more, reply)) => {
                    actions.extend(more);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            let outcome = store
                .propose(actions)
                .await
                .map(|_| ())
                .map_err(store_status);
            drop(permit);
            for reply in replies {
                // The caller may have gone (its RPC was cancelled): nothing to tell.
                let _ = reply.send(outcome.clone());
            }
        });
    }
}
