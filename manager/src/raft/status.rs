//! What the Raft node looks like now ([`RaftStatus`]): the loop publishes it after every round
//! ([`StatusPublisher`]), and every other part of the manager reads it through
//! [`super::RaftHandle::status`].

use raft::{RawNode, StateRole};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use super::instruments::RaftInstruments;
use super::members::Members;
use super::peers::Peers;
use super::storage::RaftStorage;

/// What the Raft node looks like now; cheap to read through [`super::RaftHandle::status`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub term: u64,
    /// 0 while no leader is known.
    pub leader_id: u64,
    pub commit: u64,
    pub applied: u64,
    pub is_leader: bool,
    /// A leader that has applied an entry of its own term (the empty entry raft appends when
    /// it is elected), so everything committed before its term is applied too and the store
    /// is complete: only then may it plan from the store.
    pub leader_ready: bool,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// Voting members, sorted (the incoming ones while a joint change is under way).
    pub voters: Vec<u64>,
    /// Non-voting members catching up before they become voters, sorted.
    pub learners: Vec<u64>,
    /// The Raft address of every member known here.
    pub members: Members,
    /// Replication to each other member; only the leader tracks it, so it is empty elsewhere.
    pub peers: Vec<PeerStatus>,
}

impl RaftStatus {
    /// The leader's Raft address, when a leader is known and its address is.
    pub fn leader_addr(&self) -> Option<&str> {
        self.members
            .get(&self.leader_id)
            .map(String::as_str)
            .filter(|a| !a.is_empty())
    }

    /// Whether `id` is a voter or learner of the configuration.
    pub fn is_member(&self, id: u64) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

/// How the leader sees one other member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    /// Highest log index known to be replicated on it.
    pub matched: u64,
    /// Heard from within an election timeout, and not reported unreachable since.
    pub reachable: bool,
}

/// The loop's end of the status every handle watches.
pub(super) struct StatusPublisher {
    status: watch::Sender<RaftStatus>,
    /// Counts leader changes as they are published.
    instruments: RaftInstruments,
}

impl StatusPublisher {
    pub(super) fn new(status: watch::Sender<RaftStatus>, instruments: RaftInstruments) -> Self {
        StatusPublisher {
            status,
            instruments,
        }
    }

    /// Publishes the status of `node` (with the store applied up to `applied`) when it
    /// changed, counting and logging leader changes.
    pub(super) fn publish(&self, node: &RawNode<RaftStorage>, applied: u64, tracked: &Peers) {
        let raft = &node.raft;
        let storage = node.store();
        let cs = storage.conf_state();
        let is_leader = raft.state == StateRole::Leader;
        let now = Instant::now();
        let mut peers: Vec<PeerStatus> = if is_leader {
            raft.prs()
                .iter()
                .filter(|(&id, _)| id != raft.id)
                .map(|(&id, pr)| PeerStatus {
                    id,
                    addr: storage.members().get(&id).cloned().unwrap_or_default(),
                    voter: cs.voters.contains(&id) || cs.voters_outgoing.contains(&id),
                    matched: pr.matched,
                    reachable: tracked.reachable(id, now),
                })
                .collect()
        } else {
            Vec::new()
        };
        peers.sort_by_key(|p| p.id);
        let status = RaftStatus {
            id: raft.id,
            term: raft.term,
            leader_id: raft.leader_id,
            commit: raft.raft_log.committed,
            applied,
            is_leader,
            leader_ready: is_leader && raft.raft_log.term(applied).unwrap_or(0) == raft.term,
            last_index: raft.raft_log.last_index(),
            snapshot_index: storage.snapshot_index(),
            voters: sorted(&cs.voters),
            learners: sorted(&cs.learners),
            members: storage.members().clone(),
            peers,
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                return false;
            }
            if status.leader_id != 0 && current.leader_id != status.leader_id {
                self.instruments.leader_changes.inc();
            }
            if current.is_leader != status.is_leader || current.leader_id != status.leader_id {
                info!(
                    term = status.term,
                    leader_id = status.leader_id,
                    is_leader = status.is_leader,
                    "raft leadership changed"
                );
            }
            *current = status;
            true
        });
    }

    /// The loop stopped: this node neither leads nor knows a leader any more.
    pub(super) fn publish_stopped(&self) {
        let mut last = self.status.borrow().clone();
        last.is_leader = false;
        last.leader_id = 0;
        self.status.send_replace(last);
    }
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}
