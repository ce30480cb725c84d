//! The manager's store: cluster objects held in memory, changed only by applying Raft log
//! entries ([`Proposal`]s), and watched by the other manager components.
//!
//! Writers call [`Store::propose`]; the Raft loop (`crate::raft`) commits the proposal, applies
//! it to [`StoreState`] in log order and answers the writer. Readers take [`Store::view`], a
//! consistent read of the applied state. Watchers get every applied proposal through
//! [`Store::subscribe`] and reconcile from it.

pub mod state;

use std::sync::{Arc, RwLock};

use shoal_proto::{Proposal, StoreAction};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use state::{ApplyError, StoreState};

/// What the entries applied in one round of the Raft loop changed, as watchers see it: the
/// actions of every accepted entry, in log order, up to the entry at `index`. One event per
/// round rather than per entry: a watcher that reads the whole state on each wake-up (a worker
/// session, the writer roles) then does so once per batch of writes, not once per write.
#[derive(Debug)]
pub struct Applied {
    pub index: u64,
    pub actions: Vec<StoreAction>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    #[error("this node is not the swarm leader (leader: {leader})")]
    NotLeader { leader: String },
    #[error("the Raft log is not running on this manager")]
    Stopped,
    #[error(
        "no quorum: the change was not confirmed within {0:?}, so it may or may not take effect; \
         check (e.g. `shoal service ls`) before retrying. Are a majority of managers reachable?"
    )]
    Timeout(std::time::Duration),
    #[error(
        "the leader lost its office before this change was confirmed (the leader is now \
         {leader}): it may or may not take effect; check before retrying"
    )]
    Indeterminate { leader: String },
    #[error("raft storage failed: {0}")]
    Storage(String),
}

/// A proposal waiting for the Raft loop to commit and apply it.
pub struct ProposeRequest {
    pub proposal: Proposal,
    /// Answered with the log index once applied, or why it was not.
    pub reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// Cheap to clone; every manager component holds one.
#[derive(Clone)]
pub struct Store {
    state: Arc<RwLock<StoreState>>,
    events: broadcast::Sender<Arc<Applied>>,
    proposals: mpsc::Sender<ProposeRequest>,
}

/// The Raft loop's side of a [`Store`]: it applies committed entries through this, and
/// publishes what they changed once per round ([`StoreApplier::publish`]).
pub struct StoreApplier {
    state: Arc<RwLock<StoreState>>,
    events: broadcast::Sender<Arc<Applied>>,
    /// Applied since the last [`StoreApplier::publish`]: the last index and the actions.
    unpublished: Option<Applied>,
}

/// Creates a store around `initial` (restored from a snapshot, or empty) plus the receiver the
/// Raft loop reads proposals from and the applier it writes through.
pub fn new_store(initial: StoreState) -> (Store, StoreApplier, mpsc::Receiver<ProposeRequest>) {
    let state = Arc::new(RwLock::new(initial));
    // Large enough that a slow watcher lags only under a burst; a lagged watcher resyncs from
    // a full view (reconcile, don't replay). Not larger: the channel keeps its last entries,
    // actions and all, whether watched or not (4,096 entries of 500 actions were hundreds of
    // MiB with 1,000 nodes starting tasks).
    let (events, _) = broadcast::channel(256);
    let (tx, rx) = mpsc::channel(1024);
    (
        Store {
            state: state.clone(),
            events: events.clone(),
            proposals: tx,
        },
        StoreApplier {
            state,
            events,
            unpublished: None,
        },
        rx,
    )
}

impl Store {
    /// Reads the applied state. Keep `f` short: the Raft loop waits for the lock to apply.
    pub fn view<R>(&self, f: impl FnOnce(&StoreState) -> R) -> R {
        let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.events.subscribe()
    }

    /// Commits `actions` through Raft as one entry and returns its index once it is applied
    /// here. An action the state rejects (a duplicate name, a stale version) rejects the whole
    /// entry and nothing changes.
    pub async fn propose(&self, actions: Vec<StoreAction>) -> Result<u64, StoreError> {
        self.submit(actions).await?.await
    }

    /// Hands `actions` to the Raft loop as one entry; the returned future answers once the
    /// entry is applied (or why not). Entries are proposed in the order they were submitted.
    async fn submit(
        &self,
        actions: Vec<StoreAction>,
    ) -> Result<impl std::future::Future<Output = Result<u64, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.proposals
            .send(ProposeRequest {
                proposal: Proposal { actions },
                reply,
            })
            .await
            .map_err(|_| StoreError::Stopped)?;
        Ok(async move { rx.await.map_err(|_| StoreError::Stopped)? })
    }

    /// Commits independent `actions` in entries of at most `batch` actions, in order, with up
    /// to [`ENTRIES_IN_FLIGHT`] of them proposed and not yet applied; stops proposing at the
    /// first refusal (entries already proposed may still be applied). A role's plan can be as
    /// large as the cluster (scaling a service up by thousands of tasks); bounded entries keep
    /// each Raft message, each apply and each snapshot-free stretch of the log small, and
    /// several in flight share the Raft loop's fsyncs and append messages instead of each
    /// waiting for the one before to commit.
    pub async fn propose_batched(
        &self,
        actions: Vec<StoreAction>,
        batch: usize,
    ) -> Result<(), StoreError> {
        let mut actions = actions.into_iter().peekable();
        let mut in_flight = std::collections::VecDeque::new();
        while actions.peek().is_some() {
            if in_flight.len() >= ENTRIES_IN_FLIGHT {
                if let Some(applied) = in_flight.pop_front() {
                    applied.await?;
                }
            }
            let entry = actions.by_ref().take(batch.max(1)).collect();
            in_flight.push_back(self.submit(entry).await?);
        }
        for applied in in_flight {
            applied.await?;
        }
        Ok(())
    }
}

/// Entries of one [`Store::propose_batched`] in flight at once. One at a time, the scheduler
/// placing 100,000 tasks waited for 200 commits one after the other (each an fsync on two
/// managers and an apply behind the other roles' reads); eight let the Raft loop take several
/// per turn while keeping a refusal's waste small.
pub const ENTRIES_IN_FLIGHT: usize = 8;

/// Actions per entry for the writer roles' plans (task creations, assignments, status).
pub const MAX_ENTRY_ACTIONS: usize = 500;

impl StoreApplier {
    /// Applies one committed entry; returns whether it was accepted. Rejected entries change
    /// nothing and are not broadcast; accepted ones are, at the next [`StoreApplier::publish`].
    pub fn apply(&mut self, index: u64, proposal: Proposal) -> Result<(), ApplyError> {
        {
            let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
            guard.apply(index, &proposal)?;
        }
        let applied = self.unpublished.get_or_insert_with(|| Applied {
            index,
            actions: Vec::new(),
        });
        applied.index = index;
        applied.actions.extend(proposal.actions);
        Ok(())
    }

    /// Tells the watchers what was applied since the last call, as one [`Applied`]. The Raft
    /// loop calls it at the end of each round, before it answers the proposers.
    pub fn publish(&mut self) {
        if let Some(applied) = self.unpublished.take() {
            // No receivers is fine: nothing is watching yet.
            let _ = self.events.send(Arc::new(applied));
        }
    }

    /// The whole state, for a Raft snapshot.
    pub fn snapshot(&self) -> shoal_proto::StoreSnapshot {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_snapshot()
    }

    /// Replaces the state with a snapshot taken at log `index` (a leader's, for catch-up).
    /// What was applied before is published first, so watchers see it in order.
    pub fn restore(&mut self, snapshot: shoal_proto::StoreSnapshot, index: u64) {
        self.publish();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) =
            StoreState::from_snapshot(snapshot, index);
    }
}
