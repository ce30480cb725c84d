//! Proposals in the Raft loop: tagging each with a context so that its proposer is answered
//! when that very entry is applied, and answering proposers that waited too long or whose
//! leader lost its office.
//!
//! A context is this run's random nonce and a counter ([`Tags`]). The nonce keeps entries
//! proposed by an earlier run of the manager, re-applied at restart, from answering a new
//! proposer. The same tags name ReadIndex requests (`reads.rs`) and configuration changes
//! (`conf_change.rs`).
//!
//! The loop (`raft_loop.rs`) owns the [`PendingProposals`] and hands them the node to
//! propose to; nothing here knows the loop.

use std::collections::HashMap;

use prost::Message as _;
use raft::{RawNode, StateRole};
use tokio::time::Instant;
use tracing::warn;

use super::requests::{ChangeReply, Reply};
use super::storage::RaftStorage;
use super::{MembershipError, PROPOSE_TIMEOUT};
use crate::store::{ProposeRequest, StoreError};

/// An answer to send once the status shows what it answers.
pub(super) type Answer = Box<dyn FnOnce() + Send>;

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

/// The tags of this run: its random nonce and the next counter (see the module doc).
pub(super) struct Tags {
    nonce: u64,
    next_id: u64,
}

impl Tags {
    /// Tags of a new run: a fresh random nonce, counting from 1.
    pub(super) fn new() -> Tags {
        Tags {
            nonce: rand::random(),
            next_id: 1,
        }
    }

    /// A new tag: the counter, and the context carrying it (see the module doc).
    pub(super) fn next_context(&mut self) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.nonce.to_be_bytes());
        context.extend_from_slice(&id.to_be_bytes());
        (id, context)
    }

    /// The counter in a context made by [`Tags::next_context`] of this run.
    pub(super) fn context_id(&self, context: &[u8]) -> Option<u64> {
        let (nonce, id) = context.split_at_checked(8)?;
        let nonce = u64::from_be_bytes(nonce.try_into().ok()?);
        let id = u64::from_be_bytes(id.try_into().ok()?);
        (nonce == self.nonce).then_some(id)
    }
}

/// The proposals and configuration changes of this run waiting for their entry to be applied,
/// and the answers for applied ones waiting for the status to show them.
pub(super) struct PendingProposals {
    /// Tags this run's proposals, configuration changes and reads.
    pub(super) tags: Tags,
    /// Waiting for their entry to be applied, by counter.
    waiting: HashMap<u64, Pending>,
    /// Answers for applied entries, sent once the status shows them applied.
    answers: Vec<Answer>,
}

impl PendingProposals {
    pub(super) fn new() -> Self {
        PendingProposals {
            tags: Tags::new(),
            waiting: HashMap::new(),
            answers: Vec::new(),
        }
    }

    /// Proposes a store change to `node` (leader only); its proposer is answered once the
    /// entry is applied.
    pub(super) fn propose(&mut self, node: &mut RawNode<RaftStorage>, req: ProposeRequest) {
        if node.raft.state != StateRole::Leader {
            let _ = req.reply.send(Err(not_leader(node)));
            return;
        }
        let (id, context) = self.tags.next_context();
        match node.propose(context, req.proposal.encode_to_vec()) {
            Ok(()) => {
                self.waiting
                    .insert(id, Pending::new(Waiter::Proposal(req.reply)));
            }
            Err(raft::Error::ProposalDropped) => {
                // Leadership is moving (a transfer is under way): the proposer retries against
                // the new leader.
                let _ = req.reply.send(Err(not_leader(node)));
            }
            Err(e) => {
                let _ = req.reply.send(Err(StoreError::Storage(e.to_string())));
            }
        }
    }

    /// Waits for the entry tagged with counter `id` (proposed elsewhere, e.g. a configuration
    /// change) to be applied.
    pub(super) fn insert(&mut self, id: u64, pending: Pending) {
        self.waiting.insert(id, pending);
    }

    /// The proposal of this run an applied entry answers, if any.
    pub(super) fn take(&mut self, context: &[u8]) -> Option<Pending> {
        let id = self.tags.context_id(context)?;
        self.waiting.remove(&id)
    }

    /// Keeps `answer` until [`PendingProposals::send_answers`]: the status must show an entry
    /// applied before its proposer hears so.
    pub(super) fn queue_answer(&mut self, answer: Answer) {
        self.answers.push(answer);
    }

    /// Sends the answers queued since the last call; the status shows them applied by now.
    pub(super) fn send_answers(&mut self) {
        for answer in self.answers.drain(..) {
            answer();
        }
    }

    /// Tells the proposers whose entries were not applied by their deadline.
    pub(super) fn expire(&mut self, now: Instant) {
        for (id, p) in take_expired(&mut self.waiting, now, |p| p.deadline) {
            warn!(
                proposal = id,
                "proposal not committed in time; telling the proposer"
            );
            p.waiter.answer(Err(StoreError::Timeout(PROPOSE_TIMEOUT)));
        }
    }

    /// `node` stopped leading (the new leader is `leader_id`, 0 when none is known yet).
    pub(super) fn fail_of_deposed_leader(&mut self, node: &RawNode<RaftStorage>, leader_id: u64) {
        if self.waiting.is_empty() {
            return;
        }
        // Proposals of a deposed leader may or may not commit (the new leader may hold them in
        // its log): tell their proposers now that nobody knows, rather than after the full
        // timeout. The writer roles re-plan from the store, whatever landed; a user's retry
        // of a change that did land is refused as a duplicate or a stale version.
        let leader = leader_label(node, leader_id);
        warn!(
            pending = self.waiting.len(),
            leader, "lost raft leadership with proposals in flight"
        );
        for (_, p) in self.waiting.drain() {
            p.waiter.answer(Err(StoreError::Indeterminate {
                leader: leader.clone(),
            }));
        }
    }

    /// The loop stopped: every proposal still waiting is told `error()`.
    pub(super) fn fail_all(&mut self, error: impl Fn() -> StoreError) {
        for (_, p) in self.waiting.drain() {
            p.waiter.answer(Err(error()));
        }
    }
}

/// The answer for a request only the leader can serve, naming the leader `node` knows.
pub(super) fn not_leader(node: &RawNode<RaftStorage>) -> StoreError {
    StoreError::NotLeader {
        leader: leader_label(node, node.raft.leader_id),
    }
}

/// How a NotLeader answer names the leader: with its address when known, so the caller
/// can forward.
fn leader_label(node: &RawNode<RaftStorage>, leader_id: u64) -> String {
    let addr = node.store().members().get(&leader_id).map(String::as_str);
    super::leader_label(leader_id, addr)
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
