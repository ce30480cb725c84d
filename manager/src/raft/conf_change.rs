//! Configuration changes in the Raft loop: proposing one step of a membership change (leader
//! only), applying committed changes with the member list they carry, and keeping the
//! transport's peers in step with the members. The handle's side (add a voter as a learner
//! first, wait for it to catch up, promote it) is `membership.rs`.
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
use raft::StateRole;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::members;
use super::proposals::{ChangeReply, Pending, Waiter};
use super::raft_loop::RaftLoop;
use super::{MembershipError, RaftError};
use crate::store::StoreError;

/// One step of a membership change, proposed as a ConfChangeV2.
#[derive(Debug, Clone)]
pub(crate) enum MemberChange {
    AddLearner {
        id: u64,
        addr: String,
    },
    Promote {
        id: u64,
    },
    Remove {
        id: u64,
    },
    /// A member's Raft address changed: re-state its role (a no-op for raft-rs) with the new
    /// member list in the context.
    SetAddress {
        id: u64,
        addr: String,
    },
}

impl RaftLoop {
    /// As leader, makes sure the replicated member list has this manager's current address
    /// (it may have restarted with a new one): other managers need it once another leads.
    pub(super) fn announce_own_address(&mut self) -> Result<(), RaftError> {
        let me = self.node.raft.id;
        let term = self.node.raft.term;
        if self.own_addr.is_empty()
            || self.announced_term == term
            || self.node.raft.state != StateRole::Leader
            || self.node.raft.has_pending_conf()
            || !self.node.store().conf_state().voters.contains(&me)
            || self.node.store().members().get(&me) == Some(&self.own_addr)
        {
            return Ok(());
        }
        // Once per term: should the change be refused, trying again at once would only repeat.
        self.announced_term = term;
        info!(addr = %self.own_addr, "replicating this manager's new raft address");
        // Nobody waits for this change: its outcome shows in the member list.
        let (reply, _) = oneshot::channel();
        let change = MemberChange::SetAddress {
            id: me,
            addr: self.own_addr.clone(),
        };
        self.change_membership(change, reply)
    }

    /// Proposes one step of a membership change (leader only); answered once it is applied.
    pub(super) fn change_membership(
        &mut self,
        change: MemberChange,
        reply: ChangeReply,
    ) -> Result<(), RaftError> {
        if self.node.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader().into()));
            return Ok(());
        }
        let cs = self.node.store().conf_state().clone();
        if self.node.raft.has_pending_conf() || !cs.voters_outgoing.is_empty() {
            let _ = reply.send(Err(MembershipError::ChangeInProgress));
            return Ok(());
        }
        let is_voter = |id: u64| cs.voters.contains(&id);
        let is_learner = |id: u64| cs.learners.contains(&id);
        let mut list = self.node.store().members().clone();
        let single = match &change {
            MemberChange::AddLearner { id, addr } => {
                if self.node.store().retired().contains(id) {
                    let _ = reply.send(Err(MembershipError::Retired { id: *id }));
                    return Ok(());
                }
                if is_voter(*id) || is_learner(*id) {
                    let _ = reply.send(Ok(self.applied));
                    return Ok(());
                }
                if self.applied == 0 {
                    // Nothing to snapshot yet: a brand-new leader has not applied its first
                    // entry. It will have in a moment.
                    let _ = reply.send(Err(MembershipError::ChangeInProgress));
                    return Ok(());
                }
                if self.node.store().first_log_index() <= 1 {
                    // The joining node must get a snapshot, not the log from entry 1 (see the
                    // module doc): compact once before the first member joins.
                    info!(
                        index = self.applied,
                        "compacting the raft log before the first member joins"
                    );
                    self.snapshot_at_applied(true)?;
                }
                list.insert(*id, addr.clone());
                conf_change_single(*id, ConfChangeType::AddLearnerNode)
            }
            MemberChange::Promote { id } => {
                if is_voter(*id) {
                    let _ = reply.send(Ok(self.applied));
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
                    let _ = reply.send(Ok(self.applied));
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
                if *id == self.node.raft.id {
                    let _ = reply.send(Err(MembershipError::RemovingLeader { id: *id }));
                    return Ok(());
                }
                if !is_voter(*id) && !is_learner(*id) {
                    let _ = reply.send(Ok(self.applied));
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
        let (id, context) = self.next_context();
        match self.node.propose_conf_change(context, cc) {
            Ok(()) => {
                info!(?change, "raft configuration change proposed");
                self.pending.insert(id, Pending::new(Waiter::Change(reply)));
            }
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(self.not_leader().into()));
            }
            Err(e) => {
                let _ = reply.send(Err(MembershipError::Refused(e.to_string())));
            }
        }
        Ok(())
    }

    /// Applies a committed configuration change (with the member list it carries) and answers
    /// its proposer.
    pub(super) fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), RaftError> {
        let index = entry.index;
        let bad = |e: protobuf::ProtobufError| RaftError::CorruptEntry {
            index,
            reason: format!("not a configuration change: {e}"),
        };
        let (applied, context) = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            // Empty data is raft-rs's own "leave the joint configuration" entry.
            let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(bad)?;
            (self.node.apply_conf_change(&cc), cc.context)
        } else {
            let cc = ConfChange::parse_from_bytes(&entry.data).map_err(bad)?;
            // Shoal never proposes these; their context is not a member list.
            (self.node.apply_conf_change(&cc), Default::default())
        };
        let result = match applied {
            Ok(cs) => {
                let mut list = self.node.store().members().clone();
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
                let me = self.node.raft.id;
                if !members::conf_ids(&cs).any(|id| id == me) {
                    warn!(
                        index,
                        raft_id = me,
                        "this manager was removed from the raft cluster"
                    );
                }
                self.node.mut_store().set_membership(cs, list)?;
                self.sync_peers();
                Ok(index)
            }
            Err(e) => {
                // Every manager refuses the same change the same way, so skipping it keeps
                // them in agreement.
                warn!(index, error = %e, "raft configuration change refused");
                Err(MembershipError::Refused(e.to_string()))
            }
        };
        if let Some(p) = self.take_pending(&entry.context) {
            self.answers.push(Box::new(move || match p.waiter {
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

    /// Gives the transport the address of every member (but us), and takes away those that
    /// left. Peers the transport was given by someone else are left alone.
    pub(super) fn sync_peers(&mut self) {
        let me = self.node.raft.id;
        let list = self.node.store().members().clone();
        for (&id, addr) in &list {
            if id == me || addr.is_empty() || self.peer_addrs.get(&id) == Some(addr) {
                continue;
            }
            debug!(peer = id, addr, "raft peer address known");
            self.transport.add_peer(id, addr);
            self.peer_addrs.insert(id, addr.clone());
        }
        let gone: Vec<u64> = self
            .peer_addrs
            .keys()
            .filter(|id| !list.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            debug!(peer = id, "raft peer left the configuration");
            self.transport.remove_peer(id);
            self.peer_addrs.remove(&id);
            self.last_heard.remove(&id);
            self.unreachable_at.remove(&id);
        }
    }
}

fn conf_change_single(id: u64, change_type: ConfChangeType) -> ConfChangeSingle {
    ConfChangeSingle {
        node_id: id,
        change_type,
        ..Default::default()
    }
}
