//! The rules for tasks' network attachments: an allocation (`allocate_task`) is applied only if
//! every address is a task address of its network that no other live task (and no service's
//! VIP) holds, and a network
//! is removed only once no service names it and no live task is attached to it.
//!
//! These checks at apply time are what make the allocator safe across leader changes and
//! racing proposals: whatever the proposer believed, the log never records one address twice.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_proto::{NetworkAttachment, Service, Task, TaskAllocation, TaskState};

use super::{usable_address, ApplyError, StoreState};

/// Whether a task's addresses count as taken: until the task is terminal (COMPLETE, SHUTDOWN,
/// FAILED, REJECTED). The attachments stay on a finished task, for inspect, but are free.
pub fn holds_addresses(t: &Task) -> bool {
    !t.state().is_terminal()
}

/// The attachment's network ID ("" when it has none).
pub fn attachment_network_id(a: &NetworkAttachment) -> &str {
    a.network.as_ref().map_or("", |n| n.id.as_str())
}

/// The IP of an attachment's address ("198.18.128.5/24" → 198.18.128.5), if it has one.
/// Of `(ID, attachments)` pairs (tasks, nodes), the ID of the first holding `ip` on
/// `network_id`.
pub(super) fn holder_of<'a>(
    mut holders: impl Iterator<Item = (&'a str, &'a [NetworkAttachment])>,
    network_id: &str,
    ip: Ipv4Addr,
) -> Option<String> {
    holders
        .find(|(_, attachments)| {
            attachments
                .iter()
                .any(|a| attachment_network_id(a) == network_id && attachment_ip(a) == Some(ip))
        })
        .map(|(id, _)| id.to_string())
}

pub fn attachment_ip(a: &NetworkAttachment) -> Option<Ipv4Addr> {
    a.address.parse::<Ipv4Net>().ok().map(|n| n.addr())
}

impl StoreState {
    /// The attachments `alloc` gives its task, checked, with each network copied from the store
    /// (so a worker gets the network as allocated, whatever the proposer held).
    pub(super) fn checked_allocation(
        &self,
        alloc: &TaskAllocation,
    ) -> Result<Vec<NetworkAttachment>, ApplyError> {
        let task_id = alloc.task_id.as_str();
        let task = self
            .tasks
            .get(task_id)
            .ok_or_else(|| ApplyError::NoSuchTask(task_id.to_string()))?;
        if task.state() != TaskState::New {
            return Err(ApplyError::TaskNotNew {
                task: task_id.to_string(),
                state: task.state().display_name().to_string(),
            });
        }
        let wanted: Vec<&str> = task.networks.iter().map(attachment_network_id).collect();
        let given: Vec<&str> = alloc.networks.iter().map(attachment_network_id).collect();
        if wanted != given {
            return Err(ApplyError::AttachmentsMismatch {
                task: task_id.to_string(),
                wanted: wanted.join(","),
                given: given.join(","),
            });
        }
        let mut out: Vec<NetworkAttachment> = Vec::with_capacity(alloc.networks.len());
        for (a, current) in alloc.networks.iter().zip(&task.networks) {
            let network_id = attachment_network_id(a);
            let (network, name, subnet) = self.network_for_addresses(network_id)?;
            let bad = |why: &'static str| ApplyError::BadTaskAddress {
                task: task_id.to_string(),
                address: a.address.clone(),
                network: name.to_string(),
                subnet: subnet.to_string(),
                why,
            };
            let addr = usable_address(network, subnet, &a.address).map_err(bad)?;
            let ip = addr.addr();
            self.check_address_free(network_id, name, ip, task_id, "")?;
            if out
                .iter()
                .any(|o| attachment_network_id(o) == network_id && attachment_ip(o) == Some(ip))
            {
                return Err(ApplyError::AddressInUse {
                    address: ip.to_string(),
                    network: name.to_string(),
                    holder: task_id.to_string(),
                });
            }
            out.push(NetworkAttachment {
                network: Some(network.clone()),
                address: addr.to_string(),
                // The aliases are the service's, copied at creation; not the allocator's to change.
                aliases: current.aliases.clone(),
            });
        }
        Ok(out)
    }

    /// `ip` on network `network_id` (named `name`) is held by no live task but `except_task`,
    /// no VIP and no node but `except_node`: an address is given out once, whoever takes it.
    pub(super) fn check_address_free(
        &self,
        network_id: &str,
        name: &str,
        ip: Ipv4Addr,
        except_task: &str,
        except_node: &str,
    ) -> Result<(), ApplyError> {
        if let Some(holder) = self.address_holder(network_id, ip, except_task) {
            return Err(ApplyError::AddressInUse {
                address: ip.to_string(),
                network: name.to_string(),
                holder,
            });
        }
        if let Some(service) = self.vip_holder(network_id, ip, "") {
            return Err(ApplyError::AddressIsVip {
                address: ip.to_string(),
                network: name.to_string(),
                service: super::service_name(service).to_string(),
            });
        }
        if let Some(node) = self.node_address_holder(network_id, ip, except_node) {
            return Err(ApplyError::AddressOfNode {
                address: ip.to_string(),
                network: name.to_string(),
                node,
            });
        }
        Ok(())
    }

    /// Another live task holding `ip` on network `network_id`.
    pub(super) fn address_holder(
        &self,
        network_id: &str,
        ip: Ipv4Addr,
        except: &str,
    ) -> Option<String> {
        holder_of(
            self.tasks
                .values()
                .filter(|t| t.id != except && holds_addresses(t))
                .map(|t| (t.id.as_str(), t.networks.as_slice())),
            network_id,
            ip,
        )
    }

    /// A service names only networks that exist (by ID): a network removed while the service
    /// was being created or updated is refused here rather than left dangling.
    pub(super) fn check_service_networks(&self, s: &Service) -> Result<(), ApplyError> {
        let Some(spec) = s.spec.as_ref() else {
            return Ok(());
        };
        match spec
            .networks
            .iter()
            .find(|n| !self.networks.contains_key(&n.target))
        {
            Some(n) => Err(ApplyError::NoSuchNetwork(n.target.clone())),
            None => Ok(()),
        }
    }

    /// A network may go only when no service names it (nor, for the ingress network, publishes
    /// a port through it) and no live task is attached to it.
    pub fn check_network_unused(&self, network_id: &str) -> Result<(), ApplyError> {
        self.check_ingress_unused(network_id)?;
        let name = self
            .networks
            .get(network_id)
            .and_then(|n| n.spec.as_ref())
            .map_or(network_id, |s| s.name.as_str());
        if let Some(s) = self.services.values().find(|s| {
            s.spec
                .as_ref()
                .is_some_and(|sp| sp.networks.iter().any(|n| n.target == network_id))
        }) {
            return Err(ApplyError::NetworkInUseByService {
                network: name.to_string(),
                service: super::service_name(s).to_string(),
            });
        }
        // The lowest ID of them: the tasks are not kept in order, and every manager must
        // refuse the entry with the same error.
        if let Some(t) = self
            .tasks
            .values()
            .filter(|t| {
                holds_addresses(t)
                    && t.networks
                        .iter()
                        .any(|a| attachment_network_id(a) == network_id)
            })
            .min_by(|a, b| a.id.cmp(&b.id))
        {
            return Err(ApplyError::NetworkInUseByTask {
                network: name.to_string(),
                task: t.id.clone(),
            });
        }
        Ok(())
    }
}
