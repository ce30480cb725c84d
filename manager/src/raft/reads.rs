//! Linearizable reads through Raft's ReadIndex: a reader is answered once the leader has
//! confirmed, with a quorum, that it still led when asked, and this node has applied the log up
//! to the index the leader named. Works on followers: the leader is asked through Raft.
//!
//! A read goes through three states: asked (tagged like a proposal, see `proposals.rs`), then
//! confirmed by the leader with an index, then answered once that index is applied here. An
//! unconfirmed read is asked again every few heartbeats: the leader drops requests it cannot
//! serve yet (no entry committed in its term) and a forwarded request dies with the leader it
//! went to.
//!
//! The handle's side is [`RaftHandle::read_index`]; the loop's side is [`PendingReads`], which
//! the loop owns and hands the node to ask.

use std::collections::HashMap;
use std::time::Duration;

use raft::{RawNode, ReadState};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::warn;

use super::handle::RaftHandle;
use super::proposals::{not_leader, take_expired, Tags};
use super::requests::{Control, Reply};
use super::storage::RaftStorage;
use super::PROPOSE_TIMEOUT;
use crate::store::StoreError;

/// A ReadIndex request not yet confirmed by the leader.
struct PendingRead {
    reply: Reply,
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

/// The reads of this run in flight, asked or confirmed.
pub(super) struct PendingReads {
    /// ReadIndex requests waiting for the leader's confirmation, by counter.
    asked: HashMap<u64, PendingRead>,
    /// Confirmed reads waiting for the store to reach their index.
    confirmed: Vec<(u64, Reply)>,
    /// How long an unconfirmed read waits before it is asked again.
    retry: Duration,
}

impl PendingReads {
    /// No reads yet; an unconfirmed one is asked again every `retry`.
    pub(super) fn new(retry: Duration) -> Self {
        PendingReads {
            asked: HashMap::new(),
            confirmed: Vec::new(),
            retry,
        }
    }

    /// Asks the leader, through `node`, to confirm a read; tagged with `tags`.
    pub(super) fn read_index(
        &mut self,
        node: &mut RawNode<RaftStorage>,
        tags: &mut Tags,
        reply: Reply,
    ) {
        if node.raft.leader_id == 0 {
            // Nobody can confirm the read: answer now rather than after the timeout.
            let _ = reply.send(Err(not_leader(node)));
            return;
        }
        let (id, context) = tags.next_context();
        node.read_index(context.clone());
        let now = Instant::now();
        self.asked.insert(
            id,
            PendingRead {
                reply,
                context,
                deadline: now + PROPOSE_TIMEOUT,
                retry_at: now + self.retry,
            },
        );
    }

    /// Asks again for the reads whose retry time has come.
    pub(super) fn retry(&mut self, node: &mut RawNode<RaftStorage>) {
        if node.raft.leader_id == 0 || self.asked.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut again = Vec::new();
        for read in self.asked.values_mut() {
            if read.retry_at <= now {
                read.retry_at = now + self.retry;
                again.push(read.context.clone());
            }
        }
        for context in again {
            // raft-rs ignores a context it already holds, and an answer for a read already
            // answered finds nobody waiting.
            node.read_index(context);
        }
    }

    /// The leader changed: reads sent to a leader that is gone are lost, so every unconfirmed
    /// read is asked again (of the new one) at the next tick.
    pub(super) fn retry_at_next_tick(&mut self) {
        let now = Instant::now();
        for read in self.asked.values_mut() {
            read.retry_at = now;
        }
    }

    /// The leader confirmed these reads: each waits until its index is applied here.
    pub(super) fn confirm(&mut self, tags: &Tags, read_states: Vec<ReadState>) {
        for rs in read_states {
            if let Some(read) = self.take(tags, &rs.request_ctx) {
                self.confirmed.push((rs.index, read.reply));
            }
        }
    }

    fn take(&mut self, tags: &Tags, context: &[u8]) -> Option<PendingRead> {
        let id = tags.context_id(context)?;
        self.asked.remove(&id)
    }

    /// Answers the confirmed reads whose index is `applied` or below.
    pub(super) fn answer_applied(&mut self, applied: u64) {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.confirmed = waiting;
        for (index, reply) in ready {
            let _ = reply.send(Ok(index));
        }
    }

    /// Tells the readers whose reads no leader confirmed by their deadline.
    pub(super) fn expire(&mut self, now: Instant) {
        for (id, r) in take_expired(&mut self.asked, now, |r| r.deadline) {
            warn!(
                read = id,
                "linearizable read not confirmed by a leader in time"
            );
            let _ = r.reply.send(Err(StoreError::Timeout(PROPOSE_TIMEOUT)));
        }
    }

    /// The loop stopped: every read still waiting, asked or confirmed, is told `error()`.
    pub(super) fn fail_all(&mut self, error: impl Fn() -> StoreError) {
        for (_, r) in self.asked.drain() {
            let _ = r.reply.send(Err(error()));
        }
        for (_, reply) in self.confirmed.drain(..) {
            let _ = reply.send(Err(error()));
        }
    }
}
