//! Linearizable reads through Raft's ReadIndex: a reader is answered once the leader has
//! confirmed, with a quorum, that it still led when asked, and this node has applied the log up
//! to the index the leader named. Works on followers: the leader is asked through Raft.
//!
//! A read goes through three states: asked (tagged like a proposal, see `proposals.rs`), then
//! confirmed by the leader with an index, then answered once that index is applied here. An
//! unconfirmed read is asked again every few heartbeats: the leader drops requests it cannot
//! serve yet (no entry committed in its term) and a forwarded request dies with the leader it
//! went to.

use raft::ReadState;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::warn;

use super::handle::{Control, RaftHandle};
use super::proposals::{take_expired, Reply};
use super::raft_loop::RaftLoop;
use super::PROPOSE_TIMEOUT;
use crate::store::StoreError;

/// A ReadIndex request not yet confirmed by the leader.
pub(super) struct PendingRead {
    pub(super) reply: Reply,
    context: Vec<u8>,
    deadline: Instant,
    /// When to ask again: the leader drops requests it cannot serve yet (no entry committed in
    /// its term) and a forwarded request dies with the leader it went to.
    retry_at: Instant,
}

impl RaftHandle {
    /// A linearizable read point: resolves with an index once the leader confirmed (with a
    /// quorum) that it was still the leader when asked, and this node has applied the log up to
    /// that index, so a [`crate::store::Store::view`] taken afterwards reflects every write
    /// acknowledged before the call. Works on followers (the leader is asked through Raft).
    pub async fn read_index(&self) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::ReadIndex(reply))
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

impl RaftLoop {
    pub(super) fn read_index(&mut self, reply: Reply) {
        if self.node.raft.leader_id == 0 {
            // Nobody can confirm the read: answer now rather than after the timeout.
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let (id, context) = self.next_context();
        self.node.read_index(context.clone());
        let now = Instant::now();
        self.reads.insert(
            id,
            PendingRead {
                reply,
                context,
                deadline: now + PROPOSE_TIMEOUT,
                retry_at: now + self.read_retry,
            },
        );
    }

    /// Asks again for the reads whose retry time has come.
    pub(super) fn retry_reads(&mut self) {
        if self.node.raft.leader_id == 0 || self.reads.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut again = Vec::new();
        for read in self.reads.values_mut() {
            if read.retry_at <= now {
                read.retry_at = now + self.read_retry;
                again.push(read.context.clone());
            }
        }
        for context in again {
            // raft-rs ignores a context it already holds, and an answer for a read already
            // answered finds nobody waiting.
            self.node.read_index(context);
        }
    }

    /// The leader changed: reads sent to a leader that is gone are lost, so every unconfirmed
    /// read is asked again (of the new one) at the next tick.
    pub(super) fn retry_reads_at_next_tick(&mut self) {
        let now = Instant::now();
        for read in self.reads.values_mut() {
            read.retry_at = now;
        }
    }

    /// The leader confirmed these reads: each waits until its index is applied here.
    pub(super) fn confirm_reads(&mut self, read_states: Vec<ReadState>) {
        for rs in read_states {
            if let Some(read) = self.take_read(&rs.request_ctx) {
                self.confirmed_reads.push((rs.index, read.reply));
            }
        }
    }

    fn take_read(&mut self, context: &[u8]) -> Option<PendingRead> {
        let id = self.context_id(context)?;
        self.reads.remove(&id)
    }

    /// Answers the confirmed reads whose index is applied.
    pub(super) fn answer_confirmed_reads(&mut self) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.confirmed_reads = waiting;
        for (index, reply) in ready {
            let _ = reply.send(Ok(index));
        }
    }

    /// Tells the readers whose reads no leader confirmed by their deadline.
    pub(super) fn expire_reads(&mut self, now: Instant) {
        for (id, r) in take_expired(&mut self.reads, now, |r| r.deadline) {
            warn!(
                read = id,
                "linearizable read not confirmed by a leader in time"
            );
            let _ = r.reply.send(Err(StoreError::Timeout(PROPOSE_TIMEOUT)));
        }
    }
}
