//! `node update` (availability, role, labels) and `node rm`, and finding a node by ID, ID
//! prefix, hostname or "self".

use shoal_proto::control_client::ControlClient;
use shoal_proto::{
    store_action::Action, Node, NodeAvailability, NodeRemoval, NodeRole, NodeState,
    RemoveNodeRequest, UpdateNodeRequest,
};
use tonic::{Response, Status};

use super::{act, lookup, store_status, ActiveManager};
use crate::ids::now_ms;
use crate::store::StoreState;

pub(super) fn find_node(st: &StoreState, key: &str, self_id: &str) -> Result<Node, Status> {
    let key = if key == "self" { self_id } else { key };
    lookup(
        &st.nodes,
        key,
        |n| &n.id,
        |n| n.description.as_ref().map_or("", |d| &d.hostname),
        "node",
    )
    .cloned()
}

/// `node rm`'s entry: the node goes, and its certificates stay refused for as long as one
/// issued just before could live.
fn removal(m: &ActiveManager, node_id: String) -> NodeRemoval {
    let lifetime = m
        .store
        .view(|st| st.cluster.as_ref().map(crate::membership::cert_expiry))
        .unwrap_or_default();
    let now = u64::try_from(now_ms()).unwrap_or(0);
    NodeRemoval {
        node_id,
        removed_at_ms: now,
        revoked_until_ms: now
            .saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// `node update`: availability, role (a demoted manager leaves Raft first) and labels.
pub(super) async fn update(m: &ActiveManager, req: UpdateNodeRequest) -> Result<Node, Status> {
    let (node, managers) = m.store.view(|st| {
        let node = find_node(st, &req.node, &m.node_id)?;
        let managers = st
            .nodes
            .values()
            .filter(|n| n.role == NodeRole::Manager as i32)
            .count();
        Ok::<_, Status>((node, managers))
    })?;
    let mut updated = node.clone();
    match req.availability.as_str() {
        "" => {}
        "active" => updated.availability = NodeAvailability::Active as i32,
        "pause" => updated.availability = NodeAvailability::Pause as i32,
        "drain" => updated.availability = NodeAvailability::Drain as i32,
        other => {
            return Err(Status::invalid_argument(format!(
                "invalid availability {other:?}: use active, pause or drain"
            )))
        }
    }
    match req.role.as_str() {
        "" => {}
        "manager" => updated.role = NodeRole::Manager as i32,
        "worker" => {
            if node.role == NodeRole::Manager as i32 && managers <= 1 {
                return Err(Status::failed_precondition(format!(
                    "attempting to demote the last manager of the swarm (node {}); promote \
                         another node first",
                    node.id
                )));
            }
            if let Some(raft_id) = node
                .manager_status
                .as_ref()
                .map(|ms| ms.raft_id)
                .filter(|&id| id != 0 && node.role == NodeRole::Manager as i32)
            {
                let raft = m.leader.raft();
                if raft_id == raft.id() {
                    // The leader cannot remove itself: hand leadership over, then let the
                    // new leader carry out the demotion.
                    raft.transfer_leadership(None)
                        .await
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    let ch = m.leader.forward()?.ok_or_else(|| {
                        Status::unavailable("leadership did not move; run the command again")
                    })?;
                    let mut fwd = req.clone();
                    fwd.node = node.id.clone();
                    return ControlClient::new(ch)
                        .update_node(fwd)
                        .await
                        .map(Response::into_inner);
                }
                // Shrink the Raft configuration first, so quorum never counts a manager
                // that is about to stop voting.
                raft.remove_voter(raft_id)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
            }
            updated.role = NodeRole::Worker as i32;
            updated.manager_status = None;
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "invalid role {other:?}: use worker or manager"
            )))
        }
    }
    for key in &req.label_rm {
        if updated.labels.remove(key).is_none() {
            return Err(Status::invalid_argument(format!(
                "key {key} doesn't exist in node's labels"
            )));
        }
    }
    updated.labels.extend(req.label_add);
    let id = updated.id.clone();
    m.store
        .propose(vec![act(Action::PutNode(updated.into()))])
        .await
        .map_err(store_status)?;
    let stored = m
        .store
        .view(|st| st.nodes.get(&id).cloned())
        .ok_or_else(|| Status::not_found(format!("node {id} was removed meanwhile")))?;
    Ok(stored)
}

/// `node rm`: refused for a manager, and for a node that is up unless forced.
pub(super) async fn remove(m: &ActiveManager, req: RemoveNodeRequest) -> Result<(), Status> {
    let node = m.store.view(|st| find_node(st, &req.node, &m.node_id))?;
    if node.role == NodeRole::Manager as i32 {
        return Err(Status::failed_precondition(format!(
            "rejected removal of node {}: it is a swarm manager and a member of the Raft \
                 cluster; demote it first (`shoal node demote {}`)",
            node.id, node.id
        )));
    }
    if node.state == NodeState::Ready as i32 && !req.force {
        return Err(Status::failed_precondition(format!(
            "node {} is not down and can't be removed; drain it, stop its daemon, or use \
                 --force",
            node.id
        )));
    }
    m.store
        .propose(vec![act(Action::RemoveNode(removal(m, node.id)))])
        .await
        .map_err(store_status)?;
    Ok(())
}
