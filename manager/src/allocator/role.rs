//! The allocator role: a leader-only writer that gives each new task one address on each of its
//! networks, as swarmkit's allocator does, before the scheduler may place the task.
//!
//! Each round reads the whole store: every NEW task (still wanted) with an attachment that has
//! no address gets the next free address of each of its networks, and the role proposes
//! `allocate_task` entries, several tasks per proposal. Applying one moves the task to PENDING;
//! applying also re-checks every address, so nothing handed out twice ever reaches the log.
//!
//! The per-network [`NetworkAddresses`] live in the role between rounds, so allocation stays
//! serial (an address freed by a finished task is the last one handed out again), and are
//! synced with the store at the start of each round: what live tasks hold is reserved, what
//! they no longer hold (the task finished or was deleted, or a proposal was refused) released.
//! A new leader starts with an empty role and rebuilds everything from the store.
//!
//! A task that cannot be allocated (its network was removed, or has no free address) stays NEW
//! with the reason as its status error, which `service ps` shows, and is tried again each round.
//!
//! Nodes get their own address on the ingress network the same way (`allocate_node`), one per
//! node, for their routing-mesh load balancer: node and task addresses share the network's
//! address space, so each counts as taken for the other. A node's address is freed with the
//! node (`node rm`) or the network; a new ingress network gives every node a new one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use shoal_proto::{
    store_action::Action, Network, NetworkAttachment, Node, NodeAllocation, StoreAction, Task,
    TaskAllocation,
};
use tokio::sync::watch;
use tracing::warn;

use super::ipam::rebuild;
use super::{IpamError, NetworkAddresses};
use crate::ids::now_ms;
use crate::store::state::{attachment_ip, attachment_network_id, holds_addresses};
use crate::store::{Store, StoreState};

/// Tasks per proposal: a refused entry is retried whole, so keep each one modest.
const BATCH: usize = 32;

/// The addresses of every network, kept between rounds.
#[derive(Debug, Default)]
pub struct TaskAllocator {
    networks: BTreeMap<String, Tracked>,
    /// Why each node last got no ingress address, so that it is logged once, not every round
    /// (a thousand nodes on a full network would log a thousand lines per log entry).
    node_refusals: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Tracked {
    /// The network's subnet and gateway as stored: a change (a network removed and another
    /// created with the same ID cannot happen, but be safe) rebuilds the addresses.
    key: (String, String),
    addresses: NetworkAddresses,
}

/// Whether a task waits for the allocator: NEW, still wanted, and some attachment has no address.
pub fn needs_allocation(t: &Task) -> bool {
    crate::store::state::unallocated(t)
}

impl TaskAllocator {
    /// The entries for this round: one `allocate_task` per task allocated or refused, oldest
    /// task first. The addresses handed out are held by the allocator from now on; if the entry
    /// is refused the next round's sync releases them.
    pub fn plan(&mut self, st: &StoreState) -> Vec<StoreAction> {
        self.sync(st);
        let mut actions = self.plan_nodes(st);
        // The store's index of the tasks waiting for addresses: no walk of every task, nor of
        // the (many more, while services start) tasks waiting for a node.
        let waiting: Vec<&Task> = st
            .tasks
            .unallocated_ids()
            .ids()
            .filter_map(|id| st.tasks.get(id))
            .filter(|t| needs_allocation(t))
            .collect();
        for task in waiting {
            let alloc = match self.allocate(st, task) {
                Ok(networks) => TaskAllocation {
                    task_id: task.id.clone(),
                    networks,
                    error: String::new(),
                    timestamp_ms: now_ms(),
                },
                Err(why) => {
                    // Said once: the same reason again would add a log entry every round.
                    if task.status.as_ref().is_some_and(|s| s.err == why) {
                        continue;
                    }
                    TaskAllocation {
                        task_id: task.id.clone(),
                        networks: Vec::new(),
                        error: why,
                        timestamp_ms: now_ms(),
                    }
                }
            };
            actions.push(StoreAction {
                action: Some(Action::AllocateTask(alloc)),
            });
        }
        actions
    }

    /// An `allocate_node` for every node without an address on the ingress network (if there
    /// is one), nodes by ID.
    fn plan_nodes(&mut self, st: &StoreState) -> Vec<StoreAction> {
        let Some(ingress) = st.ingress_network() else {
            return Vec::new();
        };
        let missing = |n: &&Node| {
            !n.attachments
                .iter()
                .any(|a| attachment_network_id(a) == ingress.id && attachment_ip(a).is_some())
        };
        let mut actions = Vec::new();
        for node in st.nodes.values().filter(missing) {
            let wanted = NetworkAttachment {
                network: Some(Network {
                    id: ingress.id.clone(),
                    ..Default::default()
                }),
                address: String::new(),
                aliases: Vec::new(),
            };
            match self.allocate_one(st, &wanted) {
                Ok((attachment, _)) => {
                    self.node_refusals.remove(&node.id);
                    actions.push(StoreAction {
                        action: Some(Action::AllocateNode(NodeAllocation {
                            node_id: node.id.clone(),
                            attachments: vec![attachment],
                        })),
                    })
                }
                // Tried again next round; the network may get addresses back meanwhile.
                Err(why) => {
                    if self.node_refusals.get(&node.id) != Some(&why) {
                        warn!(node = %node.id, error = %why, "no ingress address for the node");
                        self.node_refusals.insert(node.id.clone(), why);
                    }
                }
            }
        }
        actions
    }

    /// Every attachment of `task` with an address, or why not (then nothing stays taken).
    fn allocate(&mut self, st: &StoreState, task: &Task) -> Result<Vec<NetworkAttachment>, String> {
        let mut taken: Vec<(String, Ipv4Addr)> = Vec::new();
        let mut out = Vec::with_capacity(task.networks.len());
        for a in &task.networks {
            match self.allocate_one(st, a) {
                Ok((attachment, ip)) => {
                    if let Some(ip) = ip {
                        taken.push((attachment_network_id(&attachment).to_string(), ip));
                    }
                    out.push(attachment);
                }
                Err(why) => {
                    for (network, ip) in taken {
                        if let Some(t) = self.networks.get_mut(&network) {
                            let _ = t.addresses.release(ip);
                        }
                    }
                    return Err(why);
                }
            }
        }
        Ok(out)
    }

    /// One attachment with the network copied and an address (the new IP, if one was taken).
    fn allocate_one(
        &mut self,
        st: &StoreState,
        a: &NetworkAttachment,
    ) -> Result<(NetworkAttachment, Option<Ipv4Addr>), String> {
        let id = attachment_network_id(a);
        let network = st
            .networks
            .get(id)
            .ok_or_else(|| format!("network {id} not found"))?;
        let name = network.spec.as_ref().map_or(id, |s| s.name.as_str());
        let tracked = self
            .networks
            .get_mut(id)
            .ok_or_else(|| format!("network {name} has an unusable subnet or gateway"))?;
        let copy = |address: String| NetworkAttachment {
            network: Some(network.clone()),
            address,
            aliases: a.aliases.clone(),
        };
        if !a.address.is_empty() {
            return Ok((copy(a.address.clone()), None));
        }
        let subnet = tracked.addresses.subnet();
        let ip = tracked.addresses.allocate().map_err(|e| match e {
            IpamError::Exhausted { .. } => format!("no available IP addresses on network {name}"),
            other => format!("network {name}: {other}"),
        })?;
        let cidr = Ipv4Net::new(ip, subnet.prefix_len())
            .map_or_else(|_| ip.to_string(), |n| n.to_string());
        Ok((copy(cidr), Some(ip)))
    }

    /// Brings the addresses in line with the store: networks added and removed, addresses held
    /// by live tasks and services' VIPs reserved, the rest released.
    fn sync(&mut self, st: &StoreState) {
        let mut held: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for t in st.tasks.values().filter(|t| holds_addresses(t)) {
            for a in &t.networks {
                if let Some(ip) = attachment_ip(a) {
                    held.entry(attachment_network_id(a)).or_default().insert(ip);
                }
            }
        }
        // Services' VIPs and nodes' own addresses share the address space: no task may get one.
        for id in st.networks.keys() {
            let vips = super::endpoint::vips_on(st, id, "");
            let nodes = super::endpoint::node_addresses_on(st, id);
            held.entry(id.as_str())
                .or_default()
                .extend(vips.chain(nodes));
        }
        self.networks.retain(|id, _| st.networks.contains_key(id));
        for (id, network) in &st.networks {
            let held = held.get(id.as_str()).cloned().unwrap_or_default();
            let key = (network.subnet.clone(), network.gateway.clone());
            match self.networks.get_mut(id) {
                Some(t) if t.key == key => {
                    let stale: Vec<Ipv4Addr> = t
                        .addresses
                        .allocated()
                        .filter(|ip| !held.contains(ip))
                        .collect();
                    for ip in stale {
                        let _ = t.addresses.release(ip);
                    }
                    for ip in held {
                        if !t.addresses.is_allocated(ip) {
                            if let Err(e) = t.addresses.reserve(ip) {
                                warn!(network = %id, error = %e, "stored task address not reservable");
                            }
                        }
                    }
                }
                _ => match rebuild(network, held) {
                    Ok(addresses) => {
                        self.networks.insert(id.clone(), Tracked { key, addresses });
                    }
                    Err(e) => {
                        warn!(network = %id, error = %e, "cannot track the network's addresses");
                        self.networks.remove(id);
                    }
                },
            }
        }
    }
}

/// Runs until `shutdown` flips; only the leader runs it.
pub async fn run(store: Store, shutdown: watch::Receiver<bool>) {
    let allocator = Arc::new(Mutex::new(TaskAllocator::default()));
    let s = store.clone();
    crate::reconcile::run(store, Duration::from_secs(1), shutdown, move |_| {
        let store = s.clone();
        let allocator = allocator.clone();
        async move {
            let (actions, took) = crate::reconcile::read(&store, |st| {
                allocator.lock().unwrap_or_else(|e| e.into_inner()).plan(st)
            });
            if let Err(e) = store.propose_batched(actions, BATCH).await {
                warn!(error = %e, "allocator proposal failed; retrying next round");
            }
            took
        }
    })
    .await;
}

#[cfg(test)]
mod tests;
