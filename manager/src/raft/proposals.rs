//! Proposals in the Raft loop: tagging each with a context so that its proposer is answered
//! when that very entry is applied, and answering proposers that waited too long or whose
//! leader lost its office.
//!
//! A context is this run's random nonce and a counter. The nonce keeps entries proposed by an
//! earlier run of the manager, re-applied at restart, from answering a new proposer. The same
//! tags name ReadIndex requests (`reads.rs`) and configuration changes (`conf_change.rs`).

use std::collections::HashMap;

use prost::Message as _;
use raft::StateRole;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::warn;

use super::raft_loop::RaftLoop;
use super::{MembershipError, PROPOSE_TIMEOUT};
use crate::store::{ProposeRequest, StoreError};

pub(super) type Reply = oneshot::Sender<Result<u64, StoreError>>;
pub(super) type ChangeReply = oneshot::Sender<Result<u64, MembershipError>>;

/// Who waits for an entry to be applied.
pub(super) enum Waiter {
    Proposal(Reply),
    Change(ChangeReply),
}

impl Waiter {
    pub(super) fn answer(self, result: Result<u64, StoreError>) {
        match self {
            Waiter::Proposal(reply) => {
                let _ = reply.send(result);
            }
            Waiter::Change(reply) => {
                let _ = reply.send(result.map_err(MembershipError::from));
            }
        }
    }
}

/// An entry proposed by this run, waiting to be applied.
pub(super) struct Pending {
    pub(super) waiter: Waiter,
    pub(super) deadline: Instant,
    /// For the proposal latency metric.
    pub(super) proposed_at: Instant,
}

impl Pending {
    /// Proposed now; its waiter is told [`StoreError::Timeout`] after [`PROPOSE_TIMEOUT`].
    pub(super) fn new(waiter: Waiter) -> Pending {
        Pending {
            waiter,
            deadline: Instant::now() + PROPOSE_TIMEOUT,
            proposed_at: Instant::now(),
        }
    }
}

impl RaftLoop {
    /// A new tag: the counter, and the context carrying it (see the module doc).
    pub(super) fn next_context(&mut self) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.nonce.to_be_bytes());
        context.extend_from_slice(&id.to_be_bytes());
        (id, context)
    }

    /// The counter in a context made by [`RaftLoop::next_context`] of this run.
    pub(super) fn context_id(&self, context: &[u8]) -> Option<u64> {
        let (nonce, id) = context.split_at_checked(8)?;
        let nonce = u64::from_be_bytes(nonce.try_into().ok()?);
        let id = u64::from_be_bytes(id.try_into().ok()?);
        (nonce == self.nonce).then_some(id)
    }

    /// The proposal of this run an applied entry answers, if any.
    pub(super) fn take_pending(&mut self, context: &[u8]) -> Option<Pending> {
        let id = self.context_id(context)?;
        self.pending.remove(&id)
    }

    pub(super) fn not_leader(&self) -> StoreError {
        StoreError::NotLeader {
            leader: self.leader_label(self.node.raft.leader_id),
        }
    }

    /// How a NotLeader answer names the leader: with its address when known, so the caller
    /// can forward.
    pub(super) fn leader_label(&self, leader_id: u64) -> String {
        let addr = self
            .node
            .store()
            .members()
            .get(&leader_id)
            .map(String::as_str);
        super::leader_label(leader_id, addr)
    }

    pub(super) fn propose(&mut self, req: ProposeRequest) {
        if self.node.raft.state != StateRole::Leader {
            let _ = req.reply.send(Err(self.not_leader()));
            return;
        }
        let (id, context) = self.next_context();
        match self.node.propose(context, req.proposal.encode_to_vec()) {
            Ok(()) => {
                self.pending
                    .insert(id, Pending::new(Waiter::Proposal(req.reply)));
            }
            Err(raft::Error::ProposalDropped) => {
                // Leadership is moving (a transfer is under way): the proposer retries against
                // the new leader.
                let _ = req.reply.send(Err(self.not_leader()));
            }
            Err(e) => {
                let _ = req.reply.send(Err(StoreError::Storage(e.to_string())));
            }
        }
    }

    /// Tells the proposers whose entries were not applied by their deadline.
    pub(super) fn expire_proposals(&mut self, now: Instant) {
        for (id, p) in take_expired(&mut self.pending, now, |p| p.deadline) {
            warn!(
                proposal = id,
                "proposal not committed in time; telling the proposer"
            );
            p.waiter.answer(Err(StoreError::Timeout(PROPOSE_TIMEOUT)));
        }
    }

    /// This node stopped leading (the new leader is `leader_id`, 0 when none is known yet).
    pub(super) fn fail_proposals_of_deposed_leader(&mut self, leader_id: u64) {
        if self.pending.is_empty() {
            return;
        }
        // Proposals of a deposed leader may never commit: tell their proposers now (they retry
        // against the new leader; a store change that did land is then refused as a duplicate
        // or a stale version) rather than after the full timeout.
        let leader = self.leader_label(leader_id);
        warn!(
            pending = self.pending.len(),
            leader, "lost raft leadership with proposals in flight"
        );
        for (_, p) in self.pending.drain() {
            p.waiter.answer(Err(StoreError::NotLeader {
                leader: leader.clone(),
            }));
        }
    }
}

/// Removes from `waiting` what is past its `deadline` at `now`, with its counter.
pub(super) fn take_expired<T>(
    waiting: &mut HashMap<u64, T>,
    now: Instant,
    deadline: impl Fn(&T) -> Instant,
) -> Vec<(u64, T)> {
    let expired: Vec<u64> = waiting
        .iter()
        .filter(|(_, w)| deadline(w) <= now)
        .map(|(id, _)| *id)
        .collect();
    expired
        .into_iter()
        .filter_map(|id| waiting.remove(&id).map(|w| (id, w)))
        .collect()
}
