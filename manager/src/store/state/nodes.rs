//! The rules for a node's life in the store: a node exists once it has joined (the entry that
//! issues its first certificate creates it), a worker session only reports on a node that
//! exists, and `node rm` deletes it *and* revokes it.
//!
//! The revocation list (`Cluster.removed_nodes`, swarmkit's blacklisted certificates) is what
//! makes a removal final: a removed node's certificates are still CA-signed and unexpired, so
//! without it a removed worker would simply open a new session, and a status report would bring
//! it back as a node. Every manager refuses the listed IDs on every call (`crate::authority`),
//! and applying refuses any entry that would bring one back.

use shoal_proto::{Meta, Node, NodeRemoval, NodeStatusUpdate};

use super::{stamp, ApplyError, StoreState, Undo};

impl StoreState {
    /// Whether `node_id` was removed with `node rm` and its certificates are still refused.
    pub fn is_removed_node(&self, node_id: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.removed_nodes.contains_key(node_id))
    }

    /// A worker session's report about its node: the node must exist (it was created when it
    /// joined); role, availability and labels are the operator's and stay as they are.
    pub(super) fn apply_node_status(
        &mut self,
        index: u64,
        u: &NodeStatusUpdate,
        undo: &mut Vec<Undo>,
    ) -> Result<(), ApplyError> {
        if self.is_removed_node(&u.node_id) {
            return Err(ApplyError::NodeRemoved(u.node_id.clone()));
        }
        let old = self
            .nodes
            .get(&u.node_id)
            .cloned()
            .ok_or_else(|| ApplyError::NoSuchNode(u.node_id.clone()))?;
        let mut n: Node = old;
        if u.description.is_some() {
            n.description = u.description.clone();
        }
        if !u.addr.is_empty() {
            n.addr = u.addr.clone();
        }
        n.state = u.state;
        n.status_message = u.message.clone();
        n.meta.get_or_insert_with(Meta::default).updated_at_ms = u.timestamp_ms;
        stamp(&mut n.meta, index);
        undo.push(Undo::Node(
            u.node_id.clone(),
            self.nodes.insert(u.node_id.clone(), n).map(Box::new),
        ));
        Ok(())
    }

    /// `node rm`: the node goes (with its own addresses), and its ID joins the revocation list
    /// until every certificate it may hold has expired. Expired entries are dropped on the way,
    /// so the list stays as long as the removals of one certificate lifetime.
    pub(super) fn apply_remove_node(
        &mut self,
        r: &NodeRemoval,
        undo: &mut Vec<Undo>,
    ) -> Result<(), ApplyError> {
        let Some(cluster) = self.cluster.as_ref() else {
            return Err(ApplyError::NoSuchNode(r.node_id.clone()));
        };
        let mut cluster = cluster.clone();
        cluster
            .removed_nodes
            .retain(|_, until| *until > r.removed_at_ms);
        cluster
            .removed_nodes
            .insert(r.node_id.clone(), r.revoked_until_ms);
        undo.push(Undo::Cluster(self.cluster.replace(cluster).map(Box::new)));
        if let Some(old) = self.nodes.remove(&r.node_id) {
            undo.push(Undo::Node(r.node_id.clone(), Some(old.into())));
        }
        Ok(())
    }

    /// A node put back under a revoked ID would hold rights its certificates no longer have.
    pub(super) fn check_not_removed(&self, node: &Node) -> Result<(), ApplyError> {
        if self.is_removed_node(&node.id) {
            return Err(ApplyError::NodeRemoved(node.id.clone()));
        }
        Ok(())
    }
}
