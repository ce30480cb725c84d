//! Changing who the managers are: adding and removing members and moving leadership, as seen
//! from a [`RaftHandle`] on the leader.
//!
//! A new member first joins as a non-voting learner and becomes a voter only once it has caught
//! up with the leader's log. Adding it as a voter at once would count it in every quorum from
//! that moment: a one-manager swarm adding a second manager that never comes up would stop
//! committing altogether. Each step is one ConfChangeV2 proposal that resolves when applied;
//! the loop refuses a step while another change is still being applied.

use tokio::sync::oneshot;
use tracing::info;

use super::handle::RaftHandle;
use super::requests::{Control, MemberChange};
use super::status::RaftStatus;
use super::MembershipError;
use crate::store::StoreError;

impl RaftHandle {
    /// Makes raft node `id`, whose Raft service listens at `addr`, a voting member. Call it on
    /// the leader. The node must run (started with [`super::RaftConfig::join`]) and be
    /// reachable: it is added as a learner, gets the leader's snapshot and log, and is promoted
    /// once it has caught up. Resolves with the log index of the promotion once it is applied
    /// here. A node that already votes keeps voting (with `addr` as its new address).
    pub async fn add_voter(&self, id: u64, addr: &str) -> Result<u64, MembershipError> {
        if id == 0 {
            return Err(MembershipError::InvalidId);
        }
        if addr.is_empty() {
            return Err(MembershipError::MissingAddress { id });
        }
        let status = self.leader_status()?;
        if status.voters.contains(&id) {
            return self.update_address(id, addr).await;
        }
        // A learner left behind by an earlier attempt carries on from where it is.
        let added_at = if status.learners.contains(&id) {
            self.update_address(id, addr).await?;
            status.applied
        } else {
            self.change(MemberChange::AddLearner {
                id,
                addr: addr.to_string(),
            })
            .await?
        };
        info!(
            raft_id = id,
            addr, added_at, "raft learner added; waiting for it to catch up"
        );
        self.wait_caught_up(id, addr, added_at).await?;
        let index = self.change(MemberChange::Promote { id }).await?;
        info!(raft_id = id, addr, index, "raft voter added");
        Ok(index)
    }

    /// Records that member `id` (this leader included) now listens at `addr`, and replicates
    /// that to every member. Call it on the leader, e.g. after a manager came back with a new
    /// address. Resolves with the log index of the change (or the applied index when the
    /// address was already known) once it is applied here.
    pub async fn update_address(&self, id: u64, addr: &str) -> Result<u64, MembershipError> {
        if id == 0 {
            return Err(MembershipError::InvalidId);
        }
        if addr.is_empty() {
            return Err(MembershipError::MissingAddress { id });
        }
        let status = self.leader_status()?;
        if status.members.get(&id).map(String::as_str) == Some(addr) {
            return Ok(status.applied);
        }
        let index = self
            .change(MemberChange::SetAddress {
                id,
                addr: addr.to_string(),
            })
            .await?;
        info!(raft_id = id, addr, index, "raft member address updated");
        Ok(index)
    }

    /// Removes raft node `id` (voter or learner) from the configuration. Call it on the leader;
    /// the leader cannot remove itself (see [`RaftHandle::transfer_leadership`]). Resolves with
    /// the log index of the change once it is applied here; removing a non-member does nothing.
    pub async fn remove_voter(&self, id: u64) -> Result<u64, MembershipError> {
        if id == 0 {
            return Err(MembershipError::InvalidId);
        }
        let status = self.leader_status()?;
        if id == status.id {
            return Err(MembershipError::RemovingLeader { id });
        }
        if !status.is_member(id) {
            return Ok(status.applied);
        }
        let index = self.change(MemberChange::Remove { id }).await?;
        info!(raft_id = id, index, "raft member removed");
        Ok(index)
    }

    /// Hands leadership to voter `to`, or (with `None`) to the reachable voter furthest along
    /// the log: what a leader does before it leaves or stops for maintenance, so the cluster
    /// does not wait out an election. Resolves with the new leader's ID once this node sees it
    /// lead.
    pub async fn transfer_leadership(&self, to: Option<u64>) -> Result<u64, MembershipError> {
        let status = self.leader_status()?;
        let target = match to {
            Some(id) if id == status.id => return Ok(id),
            Some(id) if status.voters.contains(&id) => id,
            Some(id) => {
                return Err(MembershipError::NoTransferTarget(format!(
                    "raft node {id} is not a voter"
                )))
            }
            None => status
                .peers
                .iter()
                .filter(|p| p.voter && p.reachable)
                .max_by_key(|p| p.matched)
                .map(|p| p.id)
                .ok_or_else(|| {
                    MembershipError::NoTransferTarget("no other voter is reachable".to_string())
                })?,
        };
        self.request(Control::TransferLeader(target))?;
        // raft-rs gives a transfer one election timeout; the new leader then needs a round of
        // messages before this node hears of it.
        let waited = self.election_timeout * 3;
        let mut watch = self.subscribe_status();
        let outcome = tokio::time::timeout(waited, async {
            watch.wait_for(|s| s.leader_id == target).await.map(|_| ())
        })
        .await;
        match outcome {
            Ok(Ok(())) => {
                info!(to = target, "raft leadership transferred");
                Ok(target)
            }
            Ok(Err(_)) => Err(StoreError::Stopped.into()),
            Err(_) => Err(MembershipError::TransferTimeout { to: target, waited }),
        }
    }

    /// The status, provided this node leads.
    fn leader_status(&self) -> Result<RaftStatus, MembershipError> {
        if !self.is_running() {
            return Err(StoreError::Stopped.into());
        }
        let status = self.status();
        if status.is_leader {
            return Ok(status);
        }
        let leader = super::leader_label(status.leader_id, status.leader_addr());
        Err(StoreError::NotLeader { leader }.into())
    }

    /// Proposes one membership step and waits until it is applied.
    async fn change(&self, change: MemberChange) -> Result<u64, MembershipError> {
        let (reply, rx) = oneshot::channel();
        self.request(Control::ChangeMembership { change, reply })?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Waits until the leader knows `id` holds the log up to `needed`.
    async fn wait_caught_up(
        &self,
        id: u64,
        addr: &str,
        needed: u64,
    ) -> Result<(), MembershipError> {
        let waited = self.catch_up_timeout;
        let mut watch = self.subscribe_status();
        let caught_up = |s: &RaftStatus| s.peers.iter().any(|p| p.id == id && p.matched >= needed);
        let outcome = tokio::time::timeout(waited, async {
            watch
                .wait_for(|s| !s.is_leader || caught_up(s))
                .await
                .map(|s| s.is_leader)
        })
        .await;
        match outcome {
            Ok(Ok(true)) => Ok(()),
            // Leadership moved while the learner caught up: the caller retries on the new
            // leader, which carries on with the learner as it is.
            Ok(Ok(false)) => match self.leader_status() {
                Err(e) => Err(e),
                Ok(_) => Err(MembershipError::ChangeInProgress),
            },
            Ok(Err(_)) => Err(StoreError::Stopped.into()),
            Err(_) => {
                let matched = self
                    .status()
                    .peers
                    .iter()
                    .find(|p| p.id == id)
                    .map_or(0, |p| p.matched);
                Err(MembershipError::NotCaughtUp {
                    id,
                    addr: addr.to_string(),
                    matched,
                    needed,
                    waited,
                })
            }
        }
    }
}
