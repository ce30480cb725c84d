//! Task networking on a worker: each task gets a network namespace of its own, named after the
//! task, that the worker builds before the container starts and hands to runc through the OCI
//! spec (`linux.namespaces[network].path`), so containerd never creates the network. The
//! daemon holds it by an open descriptor, not a mount (see `shoal_netns::Netns::new_held`), until
//! the task is detached; its container holds it too once started.
//!
//! * `outbound`: the node's outbound bridge (docker_gwbridge's role): one veth per task, a
//!   masquerading nftables table, the task's default route; also where the node's DNS server
//!   listens;
//! * `overlay`: one namespace per overlay network the node has tasks of, holding the bridge and
//!   (once a task of the network runs on another node) the VXLAN device with static FDB and
//!   neighbour entries from the managers' peer tables;
//! * `node`: [`NodeNetwork`], which composes them for the agent and keeps the DNS table current.
//!
//! The agent only sees the [`TaskNetworks`] trait, so its unit tests run without netlink.
//! Everything is reconciled: attaching what exists converges, a daemon restarted after a
//! kill -9 attaches its adopted tasks again (finding their namespaces through their
//! containers' pids, and their addresses in place) and removes what is left of tasks it no
//! longer has.

mod backends;
mod balancing;
mod config;
mod host_resolv;
mod ingress;
mod lb;
mod nft;
mod node;
mod outbound;
mod overlay;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use shoal_netns::Netns;
use shoal_proto::{NetworkPeers, Task};

pub use config::{NetworkConfig, DEFAULT_BIP, DEFAULT_BRIDGE};
pub use host_resolv::host_resolv_conf;
pub use node::NodeNetwork;

/// What a network call returns, boxed so the trait stays object safe.
pub type NetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, NetworkError>> + Send + 'a>>;

/// What the container needs to know about the network built for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskNetwork {
    /// The task's network namespace; `None` lets runc create an empty one (loopback only).
    /// Held here, not only named, so that it stays open until the container has joined it.
    pub netns: Option<Netns>,
    /// The task's own addresses, first network first (for `/etc/hosts`).
    pub addresses: Vec<Ipv4Addr>,
    /// The task's `/etc/resolv.conf`; `None` keeps the one derived from the host's.
    pub resolv_conf: Option<String>,
}

impl TaskNetwork {
    /// The path runc joins, if the task has a namespace of its own.
    pub fn netns_path(&self) -> Option<&Path> {
        self.netns.as_ref().map(Netns::path)
    }
}

/// The agent's view of task networking.
pub trait TaskNetworks: Send + Sync {
    /// Builds the task's namespace and its attachments; for a task whose container already
    /// runs (`running`: its pid, adopted after a restart), finds its namespace through the
    /// container and attaches it again.
    fn attach<'a>(&'a self, task: &'a Task, running: Option<u32>) -> NetFuture<'a, TaskNetwork>;
    /// Removes the task's namespace and everything of it; a task never attached is no error.
    fn detach<'a>(&'a self, task_id: &'a str) -> NetFuture<'a, ()>;
    /// The managers' peer tables, from a session message; replaces the previous ones.
    fn set_peers(&self, peers: Vec<NetworkPeers>) -> NetFuture<'_, ()>;
    /// Detaches every task not in `keep`, and removes the namespaces of overlays none of them
    /// is on: what a kill -9 left behind.
    fn retain<'a>(&'a self, keep: &'a [Task]) -> NetFuture<'a, ()>;
}

/// No networking: tasks get a private namespace with loopback only (runc makes it). For agent
/// tests that exercise the lifecycle, not the network.
pub struct Loopback;

impl TaskNetworks for Loopback {
    fn attach<'a>(&'a self, _task: &'a Task, _running: Option<u32>) -> NetFuture<'a, TaskNetwork> {
        Box::pin(async { Ok(TaskNetwork::default()) })
    }
    fn detach<'a>(&'a self, _task_id: &'a str) -> NetFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn set_peers(&self, _peers: Vec<NetworkPeers>) -> NetFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn retain<'a>(&'a self, _keep: &'a [Task]) -> NetFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Netlink(#[from] shoal_netns::Error),
    #[error("nftables: {0}")]
    Nft(String),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no free address on the outbound bridge's subnet {0}: too many tasks on this node for \
         it; start the daemon with a larger --bip"
    )]
    OutboundFull(String),
    #[error("task {task}: network {network} has no valid {what} ({value:?})")]
    BadAttachment {
        task: String,
        network: String,
        what: &'static str,
        value: String,
    },
    #[error("DNS server: {0}")]
    Dns(String),
}

/// A task's MAC on a network, derived from its IP as docker does (02:42 + the four bytes), so
/// every node knows a peer's MAC from its address alone and no MAC travels in the peer tables.
pub fn mac_of(ip: Ipv4Addr) -> shoal_netns::MacAddr {
    let [a, b, c, d] = ip.octets();
    shoal_netns::MacAddr::from([0x02, 0x42, a, b, c, d])
}

/// The first 12 characters of a task ID: enough to be unique among a node's tasks and short
/// enough for interface names (15 characters at most).
fn short_id(task_id: &str) -> &str {
    task_id.get(..12).unwrap_or(task_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_derived_from_addresses_as_docker_does() {
        assert_eq!(
            mac_of(Ipv4Addr::new(198, 18, 128, 5)).to_string(),
            "02:42:c6:12:80:05"
        );
    }

    #[test]
    fn short_ids_fit_interface_names() {
        assert_eq!(short_id("abcdefghijklmnopq"), "abcdefghijkl");
        assert_eq!(short_id("abc"), "abc");
    }
}
