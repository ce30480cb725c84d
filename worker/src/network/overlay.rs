//! Overlay networks on a node, in Swarm's layout: one network namespace per overlay network
//! the node has tasks of, holding a bridge (`br0`) that the tasks' veths join and, once a task
//! of the network runs on another node, a VXLAN device (`vxlan0`: the network's VNI, UDP 4789,
//! learning off, proxy ARP) whose UDP socket stays in the node's namespace. Keeping the
//! network's layer 2 in its own namespace keeps overlays apart from each other and from the
//! node (no route on the node leads into an overlay), and lets two overlays use the same
//! device names.
//!
//! Nothing is learnt or flooded: for every task of the network on another node, the managers'
//! peer table gives its IP and node; its MAC follows from the IP ([`mac_of`]), and a static FDB
//! entry (MAC → node) plus a permanent neighbour entry (IP → MAC, which the device's proxy
//! ARP answers from) are written on `vxlan0`. Entries of tasks that left are removed.
//!
//! The VXLAN device is created only when a remote task exists: a node alone on a network needs
//! no tunnel (and several test daemons sharing one namespace can then use the same VNI).

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_netns::{MacAddr, Netlink, Netns, NetnsDir, Vxlan};
use shoal_proto::{Network, NetworkPeers};
use tracing::{debug, info};

use super::{mac_of, short_id, NetworkError};

const BRIDGE: &str = "br0";
const VXLAN: &str = "vxlan0";

/// One overlay network's namespace on this node.
pub(super) struct OverlayNs {
    ns: Netns,
    nl: Netlink,
    vxlan: bool,
}

impl OverlayNs {
    /// Creates (or finds) the network's namespace and bridge.
    pub(super) async fn ensure(
        dir: &NetnsDir,
        network_id: &str,
        mtu: u32,
    ) -> Result<Self, NetworkError> {
        let ns = dir.ensure(network_id)?;
        let nl = Netlink::open(&ns)?;
        nl.set_up("lo").await?;
        nl.ensure_bridge(BRIDGE, Some(mtu)).await?;
        nl.set_up(BRIDGE).await?;
        let vxlan = nl.link(VXLAN).await?.is_some();
        Ok(Self { ns, nl, vxlan })
    }

    /// The network side of a task's veth in this namespace.
    fn task_link(task_id: &str, index: usize) -> String {
        format!("v{}-{index}", short_id(task_id))
    }

    /// Wires the task in as `ifname` with `address` (and the MAC derived from it).
    pub(super) async fn attach_task(
        &self,
        task: &Netns,
        inside: &Netlink,
        task_id: &str,
        index: usize,
        address: Ipv4Net,
        mtu: u32,
    ) -> Result<(), NetworkError> {
        let ifname = format!("eth{index}");
        let link = Self::task_link(task_id, index);
        self.nl.ensure_veth(&link, task, &ifname, Some(mtu)).await?;
        self.nl.attach_to_bridge(&link, BRIDGE).await?;
        self.nl.set_up(&link).await?;
        inside.set_mac(&ifname, mac_of(address.addr())).await?;
        inside.ensure_address(&ifname, address).await?;
        inside.set_up(&ifname).await?;
        Ok(())
    }

    /// Removes the network side of a task's veth (which takes the task's end with it).
    pub(super) async fn detach_task(
        &self,
        task_id: &str,
        index: usize,
    ) -> Result<(), NetworkError> {
        self.nl
            .delete_link(&Self::task_link(task_id, index))
            .await?;
        Ok(())
    }

    /// Makes the tunnel's entries those of `peers`' tasks on other nodes than `underlay`.
    pub(super) async fn program(
        &mut self,
        host: &Netlink,
        network: &Network,
        peers: &NetworkPeers,
        underlay: Option<Ipv4Addr>,
        mtu: u32,
    ) -> Result<(), NetworkError> {
        let Some(local) = underlay else {
            return Ok(());
        };
        let remote: BTreeSet<(Ipv4Addr, Ipv4Addr)> = peers
            .endpoints
            .iter()
            .filter_map(|e| Some((e.address.parse().ok()?, e.node_addr.parse().ok()?)))
            .filter(|(_, node): &(Ipv4Addr, Ipv4Addr)| *node != local)
            .collect();
        if remote.is_empty() && !self.vxlan {
            return Ok(());
        }
        if !self.vxlan {
            let spec = Vxlan {
                mtu: Some(mtu),
                ..Vxlan::new(VXLAN, network.vni, local)
            };
            host.ensure_vxlan(&spec, Some(&self.ns)).await?;
            self.nl.attach_to_bridge(VXLAN, BRIDGE).await?;
            self.nl.set_up(VXLAN).await?;
            self.vxlan = true;
            info!(network = %network.id, vni = network.vni, "VXLAN tunnel up");
        }
        let want_fdb: HashSet<(MacAddr, Ipv4Addr)> = remote
            .iter()
            .map(|(ip, node)| (mac_of(*ip), *node))
            .collect();
        for entry in self.nl.fdb_entries(VXLAN).await? {
            if !want_fdb.contains(&(entry.mac, entry.remote)) {
                self.nl.delete_fdb(VXLAN, entry.mac, entry.remote).await?;
            }
        }
        let want_neigh: BTreeSet<Ipv4Addr> = remote.iter().map(|(ip, _)| *ip).collect();
        for entry in self.nl.neighbour_entries(VXLAN).await? {
            if !want_neigh.contains(&entry.ip) {
                self.nl.delete_neighbour(VXLAN, entry.ip).await?;
            }
        }
        for (ip, node) in &remote {
            self.nl.ensure_fdb(VXLAN, mac_of(*ip), *node).await?;
            self.nl.ensure_neighbour(VXLAN, *ip, mac_of(*ip)).await?;
        }
        debug!(network = %network.id, remote = remote.len(), "peer table programmed");
        Ok(())
    }
}
