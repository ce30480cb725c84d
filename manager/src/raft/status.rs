//! What the Raft node looks like now ([`RaftStatus`]): the loop publishes it after every round,
//! and every other part of the manager reads it through [`super::RaftHandle::status`].

use raft::StateRole;
use tokio::time::Instant;
use tracing::info;

use super::members::Members;
use super::raft_loop::RaftLoop;

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

impl RaftLoop {
    /// Heard from within an election timeout, and not reported unreachable since.
    fn reachable(&self, id: u64, now: Instant) -> bool {
        let Some(&heard) = self.last_heard.get(&id) else {
            return false;
        };
        let recent = now.saturating_duration_since(heard) <= self.election_timeout;
        let failed_since = self.unreachable_at.get(&id).is_some_and(|&at| at > heard);
        recent && !failed_since
    }

    /// Publishes the status when it changed, counting and logging leader changes.
    pub(super) fn publish_status(&self) {
        let raft = &self.node.raft;
        let storage = self.node.store();
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
                    reachable: self.reachable(id, now),
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
            applied: self.applied,
            is_leader,
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
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}
