//! Configuration changes in the Raft loop: proposing one step of a membership change (leader
//! only), applying committed changes with the member list they carry, and keeping the
//! transport's peers in step with the members (`peers.rs`). The handle's side (add a voter as
//! a learner first, wait for it to catch up, promote it) is `membership.rs`. The loop
//! (`raft_loop.rs`) calls in here with the parts of its state a change needs; nothing here
//! knows the loop.
//!
//! A member joins with an empty log and must start from a snapshot, because the first
//! configuration of a cluster is not in its log (it was written straight into the first
//! manager's storage) — a node replaying the log from entry 1 would not know the first voter.
//! So before the first member is added the leader compacts its log, and a snapshot it sends
//! always names the receiver (see [`super::RaftStorage`]'s `snapshot`); as a second line of
//! defence, a node with no configuration yet refuses appends that would replay the log from
//! entry 1 (`raft_loop.rs`).
//!
//! A node that forced a new cluster ([`super::RaftConfig::force_new_cluster`]) refuses to add
//! the members it retired again: they hold the old configuration, and heeding them would hand
//! the recovered cluster back to it.

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::members;
use super::peers::Peers;
use super::proposals::{not_leader, Pending, PendingProposals, Waiter};
use super::requests::{ChangeReply, MemberChange};
use super::snapshots::Snapshots;
use super::storage::RaftStorage;
use super::{MembershipError, RaftError};
use crate::store::{StoreApplier, StoreError};

/// This manager's own Raft address, which it replicates when it leads.
pub(super) struct OwnAddress {
    /// As configured now.
    addr: String,
    /// The term in which this leader last proposed it.
    announced_term: u64,
}

impl OwnAddress {
    pub(super) fn new(addr: String) -> Self {
        OwnAddress {
            addr,
            announced_term: 0,
        }
    }

    /// As leader, makes sure the replicated member list has this manager's current address
    /// (it may have restarted with a new one): other managers need it once another leads.
    pub(super) fn announce(
        &mut self,
        node: &mut RawNode<RaftStorage>,
        proposals: &mut PendingProposals,
        snapshots: &mut Snapshots,
        applier: &StoreApplier,
        applied: u64,
    ) -> Result<(), RaftError> {
        let me = node.raft.id;
        let term = node.raft.term;
        if self.addr.is_empty()
            || self.announced_term == term
            || node.raft.state != StateRole::Leader
            || node.raft.has_pending_conf()
            || !node.store().conf_state().voters.contains(&me)
            || node.store().members().get(&me) == Some(&self.addr)
        {
            return Ok(());
        }
        // Once per term: should the change be refused, trying again at once would only repeat.
        self.announced_term = term;
        info!(addr = %self.addr, "replicating this manager's new raft address");
        // Nobody waits for this change: its outcome shows in the member list.
        let (reply, _) = oneshot::channel();
        let change = MemberChange::SetAddress {
            id: me,
            addr: self.addr.clone(),
        };
        change_membership(node, proposals, snapshots, applier, applied, change, reply)
    }
}

/// Proposes one step of a membership change (leader only); answered once it is applied.
pub(super) fn change_membership(
    node: &mut RawNode<RaftStorage>,
    proposals: &mut PendingProposals,
    snapshots: &mut Snapshots,
    applier: &StoreApplier,
    applied: u64,
    change: MemberChange,
    reply: ChangeReply,
) -> Result<(), RaftError> {
    if node.raft.state != StateRole::Leader {
        let _ = reply.send(Err(not_leader(node).into()));
        return Ok(());
    }
    let cs = node.store().conf_state().clone();
    if node.raft.has_pending_conf() || !cs.voters_outgoing.is_empty() {
        let _ = reply.send(Err(MembershipError::ChangeInProgress));
        return Ok(());
    }
    let is_voter = |id: u64| cs.voters.contains(&id);
    let is_learner = |id: u64| cs.learners.contains(&id);
    let mut list = node.store().members().clone();
    let single = match &change {
        MemberChange::AddLearner { id, addr } => {
            if node.store().retired().contains(id) {
                let _ = reply.send(Err(MembershipError::Retired { id: *id }));
                return Ok(());
            }
            if is_voter(*id) || is_learner(*id) {
                let _ = reply.send(Ok(applied));
                return Ok(());
            }
            if applied == 0 {
                // Nothing to snapshot yet: a brand-new leader has not applied its first
                // entry. It will have in a moment.
                let _ = reply.send(Err(MembershipError::ChangeInProgress));
                return Ok(());
            }
            if node.store().first_log_index() <= 1 {
                // The joining node must get a snapshot, not the log from entry 1 (see the
                // module doc): compact once before the first member joins.
                info!(
                    index = applied,
                    "compacting the raft log before the first member joins"
                );
                snapshots.start(node, applier, applied, true)?;
                snapshots.settle(node)?;
            }
            list.insert(*id, addr.clone());
            conf_change_single(*id, ConfChangeType::AddLearnerNode)
        }
        MemberChange::Promote { id } => {
            if is_voter(*id) {
                let _ = reply.send(Ok(applied));
                return Ok(());
            }
            if !is_learner(*id) {
                let _ = reply.send(Err(MembershipError::NotAMember { id: *id }));
                return Ok(());
            }
            conf_change_single(*id, ConfChangeType::AddNode)
        }
        MemberChange::SetAddress { id, addr } => {
            if list.get(id) == Some(addr) {
                let _ = reply.send(Ok(applied));
                return Ok(());
            }
            let change_type = if is_voter(*id) {
                ConfChangeType::AddNode
            } else if is_learner(*id) {
                ConfChangeType::AddLearnerNode
            } else {
                let _ = reply.send(Err(MembershipError::NotAMember { id: *id }));
                return Ok(());
            };
            list.insert(*id, addr.clone());
            conf_change_single(*id, change_type)
        }
        MemberChange::Remove { id } => {
            if *id == node.raft.id {
                let _ = reply.send(Err(MembershipError::RemovingLeader { id: *id }));
                return Ok(());
            }
            if !is_voter(*id) && !is_learner(*id) {
                let _ = reply.send(Ok(applied));
                return Ok(());
            }
            list.remove(id);
            conf_change_single(*id, ConfChangeType::RemoveNode)
        }
    };
    let mut cc = ConfChangeV2::default();
    cc.mut_changes().push(single);
    // The whole list, so every member (and a future leader) learns every address,
    // including this leader's own current one.
    cc.context = members::encode(&list).into();
    let (id, context) = proposals.tags.next_context();
    match node.propose_conf_change(context, cc) {
        Ok(()) => {
            info!(?change, "raft configuration change proposed");
            proposals.insert(id, Pending::new(Waiter::Change(reply)));
        }
        Err(raft::Error::ProposalDropped) => {
            let _ = reply.send(Err(not_leader(node).into()));
        }
        Err(e) => {
            let _ = reply.send(Err(MembershipError::Refused(e.to_string())));
        }
    }
    Ok(())
}

/// Applies a committed configuration change (with the member list it carries) and answers
/// its proposer.
pub(super) fn apply_conf_change(
    node: &mut RawNode<RaftStorage>,
    proposals: &mut PendingProposals,
    peers: &mut Peers,
    entry: &Entry,
) -> Result<(), RaftError> {
    let index = entry.index;
    let bad = |e: protobuf::ProtobufError| RaftError::CorruptEntry {
        index,
        reason: format!("not a configuration change: {e}"),
    };
    let (applied, context) = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
        // Empty data is raft-rs's own "leave the joint configuration" entry.
        let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(bad)?;
        (node.apply_conf_change(&cc), cc.context)
    } else {
        let cc = ConfChange::parse_from_bytes(&entry.data).map_err(bad)?;
        // Shoal never proposes these; their context is not a member list.
        (node.apply_conf_change(&cc), Default::default())
    };
    let result = match applied {
        Ok(cs) => {
            let mut list = node.store().members().clone();
            if !context.is_empty() {
                match members::decode(&context) {
                    Ok(replicated) => list = replicated,
                    // Every manager decodes the same bytes the same way, so they agree
                    // even on ignoring them.
                    Err(e) => {
                        warn!(index, error = %e, "member list of a raft configuration change cannot be decoded; addresses unchanged")
                    }
                }
            }
            let list = members::restrict(&list, &cs);
            info!(index, voters = ?cs.voters, learners = ?cs.learners, members = ?list, "raft configuration changed");
            let me = node.raft.id;
            if !members::conf_ids(&cs).any(|id| id == me) {
                warn!(
                    index,
                    raft_id = me,
                    "this manager was removed from the raft cluster"
                );
            }
            node.mut_store().set_membership(cs, list)?;
            peers.sync(me, node.store().members());
            Ok(index)
        }
        Err(e) => {
            // Every manager refuses the same change the same way, so skipping it keeps
            // them in agreement.
            warn!(index, error = %e, "raft configuration change refused");
            Err(MembershipError::Refused(e.to_string()))
        }
    };
    if let Some(p) = proposals.take(&entry.context) {
        proposals.queue_answer(Box::new(move || match p.waiter {
            Waiter::Change(reply) => {
                let _ = reply.send(result);
            }
            Waiter::Proposal(reply) => {
                let _ = reply.send(result.map_err(|e| StoreError::Storage(e.to_string())));
            }
        }));
    }
    Ok(())
}

fn conf_change_single(id: u64, change_type: ConfChangeType) -> ConfChangeSingle {
    ConfChangeSingle {
        node_id: id,
        change_type,
        ..Default::default()
    }
}
