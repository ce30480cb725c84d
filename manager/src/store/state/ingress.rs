//! The rules for the ingress network (the routing mesh's) and nodes' own addresses on it.
//!
//! There is at most one ingress network; it is not removed while a service publishes a port
//! through the routing mesh. Every node gets an address of its own on it (`allocate_node`),
//! for its routing-mesh load balancer: applied only if the address is a host address of the
//! network that no live task, no service's VIP and no other node holds. Task allocations and
//! VIPs are checked against node addresses in turn, so one address is never given twice,
//! whoever proposed first. A node's addresses go with the node, or with the network.

use std::net::Ipv4Addr;

use shoal_proto::validate::endpoint::is_ingress as is_ingress_port;
use shoal_proto::{Network, NetworkAttachment, NodeAllocation, Service};

use super::attachments::{attachment_network_id, holder_of};
use super::{service_name, usable_address, ApplyError, StoreState, Undo};

/// Whether `n` is an ingress network (`network create --ingress`, or swarm init's `ingress`).
pub fn is_ingress_network(n: &Network) -> bool {
    n.spec.as_ref().is_some_and(|s| s.ingress)
}

/// Whether the service publishes a port through the routing mesh (its tasks join ingress).
pub fn has_ingress_ports(s: &Service) -> bool {
    s.endpoint
        .as_ref()
        .is_some_and(|e| e.ports.iter().any(is_ingress_port))
}

impl StoreState {
    /// The ingress network, if there is one.
    pub fn ingress_network(&self) -> Option<&Network> {
        self.networks.values().find(|n| is_ingress_network(n))
    }

    /// The node (other than `except`) whose own address on `network_id` is `ip`.
    pub fn node_address_holder(
        &self,
        network_id: &str,
        ip: Ipv4Addr,
        except: &str,
    ) -> Option<String> {
        holder_of(
            self.nodes
                .values()
                .filter(|n| n.id != except)
                .map(|n| (n.id.as_str(), n.attachments.as_slice())),
            network_id,
            ip,
        )
    }

    /// A second ingress network is refused: the routing mesh has one.
    pub(super) fn check_one_ingress(&self, n: &Network) -> Result<(), ApplyError> {
        match self.ingress_network().filter(|_| is_ingress_network(n)) {
            Some(other) => Err(ApplyError::IngressExists(
                other
                    .spec
                    .as_ref()
                    .map_or(other.id.clone(), |s| s.name.clone()),
            )),
            None => Ok(()),
        }
    }

    /// The ingress network stays while a service publishes a port through it.
    pub(super) fn check_ingress_unused(&self, network_id: &str) -> Result<(), ApplyError> {
        let Some(network) = self
            .networks
            .get(network_id)
            .filter(|n| is_ingress_network(n))
        else {
            return Ok(());
        };
        let services: Vec<String> = self
            .services
            .values()
            .filter(|s| has_ingress_ports(s))
            .map(|s| service_name(s).to_string())
            .collect();
        if services.is_empty() {
            return Ok(());
        }
        Err(ApplyError::IngressInUse {
            network: network
                .spec
                .as_ref()
                .map_or(network_id.to_string(), |s| s.name.clone()),
            services: services.join(", "),
        })
    }

    /// The attachments `alloc` gives its node, checked, with each network copied from the store.
    pub(super) fn checked_node_allocation(
        &self,
        alloc: &NodeAllocation,
    ) -> Result<Vec<NetworkAttachment>, ApplyError> {
        let node_id = alloc.node_id.as_str();
        if !self.nodes.contains_key(node_id) {
            return Err(ApplyError::NoSuchNode(node_id.to_string()));
        }
        let mut out: Vec<NetworkAttachment> = Vec::with_capacity(alloc.attachments.len());
        for a in &alloc.attachments {
            let network_id = attachment_network_id(a);
            let (network, name, subnet) = self.network_for_addresses(network_id)?;
            let bad = |why: &'static str| ApplyError::BadNodeAddress {
                node: node_id.to_string(),
                address: a.address.clone(),
                network: name.to_string(),
                subnet: subnet.to_string(),
                why,
            };
            if !is_ingress_network(network) {
                return Err(bad("on a network that is not the ingress network"));
            }
            if out.iter().any(|o| attachment_network_id(o) == network_id) {
                return Err(bad("a second address of the node on the network"));
            }
            let addr = usable_address(network, subnet, &a.address).map_err(bad)?;
            let ip = addr.addr();
            self.check_address_free(network_id, name, ip, "", node_id)?;
            out.push(NetworkAttachment {
                network: Some(network.clone()),
                address: addr.to_string(),
                aliases: Vec::new(),
            });
        }
        Ok(out)
    }

    /// Frees every node's address on a network being removed: a new ingress network gets new
    /// ones from the allocator.
    pub(super) fn drop_node_attachments(
        &mut self,
        index: u64,
        network_id: &str,
        undo: &mut Vec<Undo>,
    ) {
        for (id, node) in self.nodes.iter_mut() {
            if !node
                .attachments
                .iter()
                .any(|a| attachment_network_id(a) == network_id)
            {
                continue;
            }
            let before = node.clone();
            node.attachments
                .retain(|a| attachment_network_id(a) != network_id);
            super::stamp(&mut node.meta, index);
            undo.push(Undo::Node(id.clone(), Some(before.into())));
        }
    }
}

#[cfg(test)]
mod tests;
