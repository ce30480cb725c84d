//! The Membership service: how nodes join (a join token buys a certificate signed by the
//! cluster CA), renew their certificates, and how a new manager becomes a Raft voter.
//!
//! Only the leader signs and writes; other managers forward, so a joining node may name any
//! manager.

use std::time::Duration;

use shoal_proto::leader_hint;
use shoal_proto::{
    membership_client::MembershipClient, membership_server, store_action::Action,
    IssueCertificateRequest, IssueCertificateResponse, JoinRaftRequest, JoinRaftResponse,
    ManagerStatus, Meta, Node, NodeAvailability, NodeRole, NodeState, RaftMember, StoreAction,
};
use shoal_tls::{require_node, Caller, Role, RootCa, DEFAULT_CERT_EXPIRY};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// How often JoinRaft reads the node again after losing a compare-and-set to another write.
const JOIN_CONFLICT_RETRIES: usize = 8;

use crate::controlapi::{self, store_status, ActiveManager, ManagerSlot, NOT_A_MANAGER};
use crate::ids::{new_id, now_ms};
use crate::store::{ApplyError, StoreError};
use crate::tokens;

pub struct MembershipApi {
    manager: ManagerSlot,
}

/// The lifetime of node certificates the cluster's CA signs.
pub fn cert_expiry(cluster: &shoal_proto::Cluster) -> Duration {
    match cluster.node_cert_expiry_ms {
        0 => DEFAULT_CERT_EXPIRY,
        ms => Duration::from_millis(ms),
    }
}

impl MembershipApi {
    pub fn new(manager: ManagerSlot) -> Self {
        MembershipApi { manager }
    }

    fn active(&self) -> Result<ActiveManager, Status> {
        controlapi::active(&self.manager)
    }
}

#[tonic::async_trait]
impl membership_server::Membership for MembershipApi {
    async fn issue_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<IssueCertificateResponse>, Status> {
        let m = self.active()?;
        // Renewal proves who the node is by its current certificate; joining by the token.
        let renewing_node = if request.get_ref().token.is_empty() {
            let caller = require_node(&request)?;
            // A removed node's certificate buys no new one.
            m.authority().admit(&caller, Role::Worker)?;
            match caller {
                Caller::Node(peer) => Some(peer.node_id),
                Caller::Local => {
                    return Err(Status::invalid_argument(
                        "a certificate request needs a join token",
                    ))
                }
            }
        } else {
            None
        };
        if let Some(ch) = m.leader.forward()? {
            if renewing_node.is_some() {
                // The leader must see the renewing node's own certificate; a forwarded call
                // would carry ours. The node retries against the leader itself.
                let leader = m.leader.raft().status();
                return Err(leader_hint::not_leader_with(
                    leader.leader_addr(),
                    &format!("{}; renew against the leader", leader_hint::NOT_LEADER),
                ));
            }
            return MembershipClient::new(ch)
                .issue_certificate(request.into_inner())
                .await;
        }
        let req = request.into_inner();
        let cluster = m
            .store
            .view(|st| st.cluster.clone())
            .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))?;
        let ca = RootCa::from_pem(&cluster.root_ca_cert_pem, &cluster.root_ca_key_pem)
            .map_err(|e| Status::internal(format!("the cluster CA cannot be loaded: {e}")))?;
        let (node_id, role) = match renewing_node {
            Some(id) => {
                let role = m
                    .store
                    .view(|st| st.nodes.get(&id).map(|n| n.role))
                    .ok_or_else(|| {
                        Status::permission_denied(format!(
                            "node {id} is no longer part of the swarm; join it again"
                        ))
                    })?;
                let role = if role == NodeRole::Manager as i32 {
                    Role::Manager
                } else {
                    Role::Worker
                };
                (id, role)
            }
            None => {
                let role = tokens::role_for_token(
                    &req.token,
                    &cluster.worker_join_token,
                    &cluster.manager_join_token,
                )
                .map_err(|e| Status::permission_denied(e.to_string()))?;
                let id = new_id();
                let now = now_ms();
                let node = Node {
                    id: id.clone(),
                    meta: Some(Meta {
                        version: 0,
                        created_at_ms: now,
                        updated_at_ms: now,
                    }),
                    role: if role == Role::Manager {
                        NodeRole::Manager
                    } else {
                        NodeRole::Worker
                    } as i32,
                    availability: NodeAvailability::Active as i32,
                    description: req.description.clone(),
                    state: NodeState::Unknown as i32,
                    addr: req.addr.clone(),
                    ..Default::default()
                };
                m.store
                    .propose(vec![StoreAction {
                        action: Some(Action::PutNode(node.into())),
                    }])
                    .await
                    .map_err(store_status)?;
                info!(node = %id, role = role.as_str(), addr = %req.addr, "node joined");
                (id, role)
            }
        };
        let cert_pem = ca
            .sign_csr(&req.csr_pem, &node_id, role, cert_expiry(&cluster))
            .map_err(|e| Status::invalid_argument(format!("certificate request refused: {e}")))?;
        Ok(Response::new(IssueCertificateResponse {
            node_id,
            role: role.as_str().to_string(),
            cert_pem,
            ca_pem: ca.cert_pem().to_string(),
            managers: m.store.view(|st| st.manager_addrs()),
        }))
    }

    async fn join_raft(
        &self,
        request: Request<JoinRaftRequest>,
    ) -> Result<Response<JoinRaftResponse>, Status> {
        let m = self.active()?;
        let caller = m.authority().require(&request, Role::Manager)?;
        if let Caller::Node(peer) = &caller {
            if peer.node_id != request.get_ref().node_id {
                return Err(Status::permission_denied(format!(
                    "node {} cannot join the Raft cluster as node {}",
                    peer.node_id,
                    request.get_ref().node_id
                )));
            }
        }
        if let Some(ch) = m.leader.forward()? {
            return MembershipClient::new(ch)
                .join_raft(request.into_inner())
                .await;
        }
        let req = request.into_inner();
        if req.raft_id == 0 || req.addr.is_empty() {
            return Err(Status::invalid_argument(
                "joining the Raft cluster needs a non-zero raft ID and an address",
            ));
        }
        // The node is written compare-and-set: a status report or heartbeat of the node that
        // commits between our read and our write only means reading it again.
        let mut conflicts = 0;
        loop {
            let node = m
                .store
                .view(|st| st.nodes.get(&req.node_id).cloned())
                .ok_or_else(|| {
                    Status::not_found(format!("node {} is not in the swarm", req.node_id))
                })?;
            if node.role != NodeRole::Manager as i32 {
                return Err(Status::permission_denied(format!(
                    "node {} is not a manager; promote it first (`shoal node promote {}`)",
                    req.node_id, req.node_id
                )));
            }
            let mut updated = node;
            updated.manager_status = Some(ManagerStatus {
                raft_id: req.raft_id,
                addr: req.addr.clone(),
                leader: false,
                reachability: "reachable".into(),
            });
            match m
                .store
                .propose(vec![StoreAction {
                    action: Some(Action::PutNode(updated.into())),
                }])
                .await
            {
                Ok(_) => break,
                Err(StoreError::Rejected(ApplyError::VersionConflict { .. }))
                    if conflicts < JOIN_CONFLICT_RETRIES =>
                {
                    conflicts += 1;
                }
                Err(e) => return Err(store_status(e)),
            }
        }
        // The new member first catches up as a learner; that needs its Raft loop running,
        // which starts once this call answers with the members to talk to.
        let raft = m.leader.raft().clone();
        let (id, addr) = (req.raft_id, req.addr.clone());
        tokio::spawn(async move {
            match raft.add_voter(id, &addr).await {
                Ok(_) => info!(raft_id = id, addr = %addr, "manager added to the Raft cluster"),
                Err(e) => warn!(raft_id = id, addr = %addr, error = %e, "adding manager failed"),
            }
        });
        let status = m.leader.raft().status();
        let members = status
            .members
            .iter()
            .map(|(&raft_id, addr)| RaftMember {
                raft_id,
                addr: addr.clone(),
            })
            .collect();
        Ok(Response::new(JoinRaftResponse {
            raft_id: m.leader.raft().id(),
            members,
        }))
    }
}
