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
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{RawNode, StateRole};
use shoal_proto::Proposal;
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
    /// The store change the entry carries, when it is one: the loop applies it from here
    /// rather than decoding the entry it was just encoded into (see `RaftLoop::apply_entries`).
    pub(super) proposal: Option<Proposal>,
    pub(super) deadline: Instant,
    /// For the proposal latency metric.
    pub(super) proposed_at: Instant,
}

impl Pending {
    /// Proposed now; its waiter is told [`StoreError::Timeout`] after [`PROPOSE_TIMEOUT`].
    pub(super) fn new(waiter: Waiter) -> Pending {
        Pending {
            waiter,
            proposal: None,
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

    /// Proposes store changes to `node` (leader only) as consecutive entries of one raft-rs
    /// proposal; each proposer is answered once its entry is applied. One proposal message for
    /// the whole batch, not one each: raft-rs sends each follower an append per proposal
    /// message, so a batch proposed entry by entry cost every follower an append, an answer
    /// and a step per entry (and the leader a step per answer) instead of one per batch.
    pub(super) fn propose(&mut self, node: &mut RawNode<RaftStorage>, reqs: Vec<ProposeRequest>) {
        if reqs.is_empty() {
            return;
        }
        if node.raft.state != StateRole::Leader {
            let error = not_leader(node);
            for req in reqs {
                let _ = req.reply.send(Err(error.clone()));
            }
            return;
        }
        let mut entries = Vec::with_capacity(reqs.len());
        let mut waiters = Vec::with_capacity(reqs.len());
        for req in reqs {
            let (id, context) = self.tags.next_context();
            entries.push(Entry {
                data: req.proposal.encode_to_vec().into(),
                context: context.into(),
                ..Default::default()
            });
            waiters.push((id, req.reply, req.proposal));
        }
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = node.raft.id;
        message.set_entries(entries.into());
        let error = match node.step(message) {
            Ok(()) => {
                for (id, reply, proposal) in waiters {
                    let pending = Pending {
                        proposal: Some(proposal),
                        ..Pending::new(Waiter::Proposal(reply))
                    };
                    self.waiting.insert(id, pending);
                }
                return;
            }
            // Leadership is moving (a transfer is under way): the proposers retry against the
            // new leader.
            Err(raft::Error::ProposalDropped) => not_leader(node),
            Err(e) => StoreError::Storage(e.to_string()),
        };
        for (_, reply, _) in waiters {
            let _ = reply.send(Err(error.clone()));
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

#[cfg(test)]
mod tests {
    use raft::eraftpb::ConfState;
    use tokio::sync::oneshot;

    use super::*;
    use crate::raft::logger::raft_logger;

    /// Node 1 of three voters, a follower that knows no leader yet.
    fn member_of_three(dir: &std::path::Path) -> RawNode<RaftStorage> {
        let mut storage = RaftStorage::open_unlocked(dir, 1).expect("open the log");
        storage
            .bootstrap(ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            })
            .expect("bootstrap");
        let cfg = raft::Config {
            id: 1,
            // As `open.rs` sets them: raft-rs's default size sends one entry a message.
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        RawNode::new(&cfg, storage, &raft_logger(1)).expect("raft node")
    }

    /// Node 1 as the leader, its followers having acknowledged its log, so raft-rs streams
    /// appends to them (rather than probing one at a time).
    fn leader_replicating(dir: &std::path::Path) -> RawNode<RaftStorage> {
        let mut node = member_of_three(dir);
        node.raft.become_candidate();
        node.raft.become_leader();
        let (term, last) = (node.raft.term, node.raft.raft_log.last_index());
        for from in [2, 3] {
            let mut ack = Message::default();
            ack.set_msg_type(MessageType::MsgAppendResponse);
            (ack.from, ack.to, ack.term, ack.index) = (from, 1, term, last);
            node.step(ack).expect("step the acknowledgement");
        }
        let mut ready = node.ready();
        let hs = ready.hs().cloned();
        node.mut_store()
            .persist(ready.entries(), hs.as_ref())
            .expect("persist");
        let _ = ready.take_messages();
        let _ = node.advance(ready);
        node
    }

    #[test]
    fn a_batch_of_proposals_reaches_each_follower_in_one_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = leader_replicating(dir.path());
        let mut pending = PendingProposals::new();
        let (requests, _answers): (Vec<_>, Vec<_>) = (0..5)
            .map(|_| {
                let (reply, answer) = oneshot::channel();
                let proposal = shoal_proto::Proposal { actions: vec![] };
                (ProposeRequest { proposal, reply }, answer)
            })
            .unzip();

        pending.propose(&mut node, requests);

        let mut ready = node.ready();
        let appends: Vec<(u64, usize)> = ready
            .take_messages()
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgAppend)
            .map(|m| (m.to, m.entries.len()))
            .collect();
        assert_eq!(appends, vec![(2, 5), (3, 5)]);
        assert_eq!(pending.waiting.len(), 5);
    }

    #[test]
    fn proposals_to_a_follower_are_answered_with_the_leader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = member_of_three(dir.path());
        let mut pending = PendingProposals::new();
        let (reply, mut answer) = oneshot::channel();
        let proposal = shoal_proto::Proposal { actions: vec![] };

        pending.propose(&mut node, vec![ProposeRequest { proposal, reply }]);

        assert!(matches!(
            answer.try_recv(),
            Ok(Err(StoreError::NotLeader { .. }))
        ));
        assert!(pending.waiting.is_empty());
    }
}
