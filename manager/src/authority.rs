//! Who may call a manager: the caller's certificate proves *which* node it is; the store says
//! *whether* that node is still a member and what it may do.
//!
//! A certificate alone is not enough: it stays CA-signed and unexpired for up to 90 days after
//! the node was demoted or removed. So every node-to-node call (control API, dispatcher,
//! membership, Raft) is checked here against the replicated store: the node must exist, must
//! not be on the revocation list (`node rm`), and for manager-only calls must be a manager
//! *in the store* as well as by its certificate. A demotion or removal therefore takes effect
//! on every manager from the next call on. Local callers (the unix API socket) are this host's
//! own and pass.

use std::sync::Arc;

use shoal_proto::leader_hint;
use shoal_proto::NodeRole;
use shoal_tls::{Caller, PeerIdentity, Role};
use tokio::sync::watch;
use tonic::service::Interceptor;
use tonic::{Request, Status};
use tracing::warn;

use crate::raft::grpc::SenderCheck;
use crate::raft::RaftStatus;
use crate::store::{Store, StoreState};

/// Why the store refuses a caller whose certificate is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "node {0} was removed from the swarm and its certificates are revoked: on that node, \
         run `shoal swarm leave --force`, then join again with a join token"
    )]
    Removed(String),
    #[error(
        "node {0} is not a member of this swarm (its certificate names a node the managers do \
         not know): join the swarm with a join token"
    )]
    Unknown(String),
    #[error(
        "node {0} is a worker in this swarm (demoted, or never promoted), and only managers may \
         make this call: run it on a manager, or `shoal node promote {0}` first"
    )]
    NotManager(String),
}

impl Refusal {
    /// The gRPC status: an unknown node may only be unknown *here* (this follower has not yet
    /// applied the entry that made it a member), so it is sent to the leader; the others are
    /// final.
    pub fn into_status(self, raft: &RaftStatus) -> Status {
        match self {
            Refusal::Unknown(_) if !raft.is_leader => leader_hint::not_leader_with(
                raft.leader_addr(),
                &format!("{}; ask the leader: {self}", leader_hint::NOT_LEADER),
            ),
            other => Status::permission_denied(other.to_string()),
        }
    }
}

/// What the store says about `peer` acting as `role`.
pub fn check(state: &StoreState, peer: &PeerIdentity, role: Role) -> Result<(), Refusal> {
    let id = &peer.node_id;
    if state.is_removed_node(id) {
        return Err(Refusal::Removed(id.clone()));
    }
    let node = state
        .nodes
        .get(id)
        .ok_or_else(|| Refusal::Unknown(id.clone()))?;
    if role == Role::Manager && node.role != NodeRole::Manager as i32 {
        return Err(Refusal::NotManager(id.clone()));
    }
    Ok(())
}

/// The store and Raft status a manager checks callers against.
#[derive(Clone)]
pub struct Authority {
    store: Store,
    raft: watch::Receiver<RaftStatus>,
}

impl Authority {
    pub fn new(store: Store, raft: watch::Receiver<RaftStatus>) -> Self {
        Authority { store, raft }
    }

    /// `caller` may act as `role`: a local caller always, a node if its certificate and the
    /// store both allow it. Refusals are logged: they are either an attack or a stale node.
    pub fn admit(&self, caller: &Caller, role: Role) -> Result<(), Status> {
        let Caller::Node(peer) = caller else {
            return Ok(());
        };
        self.store
            .view(|st| check(st, peer, role))
            .map_err(|refusal| {
                warn!(node_id = %peer.node_id, reason = %refusal, "call refused");
                refusal.into_status(&self.raft.borrow())
            })
    }

    /// [`shoal_tls::require_role`] (the certificate), then [`Authority::admit`] (the store).
    pub fn require<T>(&self, request: &Request<T>, role: Role) -> Result<Caller, Status> {
        let caller = shoal_tls::require_role(request, role)?;
        self.admit(&caller, role)?;
        Ok(caller)
    }

    /// The Raft service's check of each batch's and snapshot's sender
    /// ([`check_raft_sender`]); a call without a certificate is refused.
    pub fn raft_sender_check(&self) -> SenderCheck {
        let this = self.clone();
        Arc::new(move |peer, from| {
            let peer = peer.ok_or_else(|| {
                "Raft messages are accepted only from managers presenting a certificate".to_string()
            })?;
            let status = this.raft.borrow().clone();
            this.store
                .view(|st| check_raft_sender(st, &status, peer, from))
        })
    }

    /// An interceptor admitting callers as `role` to a whole gRPC service.
    pub fn interceptor(&self, role: Role) -> AdmitRole {
        AdmitRole {
            authority: self.clone(),
            role,
        }
    }
}

/// [`Authority::require`] for every call of a service.
#[derive(Clone)]
pub struct AdmitRole {
    authority: Authority,
    role: Role,
}

impl Interceptor for AdmitRole {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.authority.require(&request, self.role)?;
        Ok(request)
    }
}

/// Raft's rule on top: the caller may speak as Raft node `from` only if `from` is a current
/// member and the store gives that Raft ID to the caller's own node. A manager that holds no
/// configuration yet (it joined and waits for its first snapshot) knows neither, and takes
/// messages from any manager certificate of its cluster until it does.
pub fn check_raft_sender(
    state: &StoreState,
    raft: &RaftStatus,
    peer: &PeerIdentity,
    from: u64,
) -> Result<(), String> {
    if raft.voters.is_empty() && raft.learners.is_empty() {
        return Ok(());
    }
    if !raft.is_member(from) {
        return Err(format!(
            "node {} sent Raft messages as raft node {from:x}, which is not a member of the \
             Raft cluster",
            peer.node_id
        ));
    }
    let owner = state
        .nodes
        .values()
        .find(|n| n.manager_status.as_ref().is_some_and(|m| m.raft_id == from));
    match owner {
        Some(n) if n.id == peer.node_id => Ok(()),
        Some(n) => Err(format!(
            "node {} sent Raft messages as raft node {from:x}, which belongs to node {}",
            peer.node_id, n.id
        )),
        // The entry that records a member's Raft ID is committed before it is added, so a
        // member without one is only possible before this manager has the store at all.
        None if state.cluster.is_none() => Ok(()),
        None => Err(format!(
            "node {} sent Raft messages as raft node {from:x}, which no manager in the store has",
            peer.node_id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::StoreAction;
    use shoal_proto::{store_action::Action, Cluster, ManagerStatus, Node, NodeRemoval, Proposal};

    fn peer(id: &str, role: Role) -> PeerIdentity {
        PeerIdentity {
            node_id: id.into(),
            role,
            cluster_id: "c".into(),
        }
    }

    fn apply(st: &mut StoreState, a: Action) {
        let index = st.applied_index + 1;
        st.apply(
            index,
            &Proposal {
                actions: vec![StoreAction { action: Some(a) }],
            },
        )
        .unwrap();
    }

    /// A cluster with manager "m" (raft ID 1) and worker "w".
    fn cluster() -> StoreState {
        let mut st = StoreState::default();
        apply(&mut st, Action::PutCluster(Cluster::default().into()));
        let m = Node {
            id: "m".into(),
            role: NodeRole::Manager as i32,
            manager_status: Some(ManagerStatus {
                raft_id: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        apply(&mut st, Action::PutNode(m.into()));
        let w = Node {
            id: "w".into(),
            role: NodeRole::Worker as i32,
            ..Default::default()
        };
        apply(&mut st, Action::PutNode(w.into()));
        st
    }

    #[test]
    fn the_store_decides_membership_and_role() {
        let mut st = cluster();
        assert_eq!(check(&st, &peer("m", Role::Manager), Role::Manager), Ok(()));
        assert_eq!(check(&st, &peer("w", Role::Worker), Role::Worker), Ok(()));
        // A CA-signed manager certificate for a node the store has never seen.
        assert_eq!(
            check(&st, &peer("ghost", Role::Manager), Role::Manager),
            Err(Refusal::Unknown("ghost".into()))
        );
        // A manager certificate of a node the store now says is a worker (demoted).
        assert_eq!(
            check(&st, &peer("w", Role::Manager), Role::Manager),
            Err(Refusal::NotManager("w".into()))
        );
        let removal = NodeRemoval {
            node_id: "w".into(),
            removed_at_ms: 1,
            revoked_until_ms: u64::MAX,
        };
        apply(&mut st, Action::RemoveNode(removal));
        assert_eq!(
            check(&st, &peer("w", Role::Worker), Role::Worker),
            Err(Refusal::Removed("w".into()))
        );
    }

    #[test]
    fn an_unknown_node_is_sent_to_the_leader_by_a_follower_only() {
        let follower = RaftStatus {
            is_leader: false,
            leader_id: 1,
            members: [(1, "198.18.0.1:2377".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let status = Refusal::Unknown("n".into()).into_status(&follower);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            leader_hint::leader_hint(&status),
            Some(Some("198.18.0.1:2377"))
        );
        let leader = RaftStatus {
            is_leader: true,
            ..Default::default()
        };
        let status = Refusal::Unknown("n".into()).into_status(&leader);
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn raft_senders_speak_only_for_their_own_member_id() {
        let st = cluster();
        let raft = RaftStatus {
            voters: vec![1, 2],
            ..Default::default()
        };
        let m = peer("m", Role::Manager);
        assert_eq!(check_raft_sender(&st, &raft, &m, 1), Ok(()));
        // Raft ID 2 is a member, but the store does not give it to node m.
        assert!(check_raft_sender(&st, &raft, &m, 2).is_err());
        // Not a member at all.
        assert!(check_raft_sender(&st, &raft, &m, 3).is_err());
        // Another node claiming m's Raft ID.
        assert!(check_raft_sender(&st, &raft, &peer("w", Role::Manager), 1).is_err());
        // A manager still waiting for its first configuration cannot check yet.
        let fresh = RaftStatus::default();
        assert_eq!(
            check_raft_sender(&StoreState::default(), &fresh, &m, 7),
            Ok(())
        );
    }
}
