//! What the node's networking is given by the daemon's flags.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// docker_gwbridge's name and subnet have these roles; ours are named after Shoal.
pub const DEFAULT_BRIDGE: &str = "shoal_gwbridge";
/// docker_gwbridge's default subnet, with the bridge's own address.
pub const DEFAULT_BIP: &str = "172.18.0.1/16";

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The outbound bridge (`shoal daemon --bridge`).
    pub bridge: String,
    /// The outbound bridge's address and subnet (`shoal daemon --bip`), e.g. 172.18.0.1/16:
    /// tasks get the other addresses of the subnet and route out through the bridge's.
    pub bip: Ipv4Net,
    /// Where task and overlay namespaces are mounted (`<data dir>/netns`).
    pub netns_dir: PathBuf,
    /// This node's underlay address: the VXLAN tunnels' local end. `None` before the node
    /// knows it (no overlay can then reach other nodes).
    pub underlay: Option<Ipv4Addr>,
    /// The port the node's DNS server listens on at the bridge's address (53; tests may move
    /// it).
    pub dns_port: u16,
}

impl NetworkConfig {
    /// The nftables table holding the bridge's rules: one per bridge, so that several
    /// daemons sharing a network namespace (tests) never touch each other's.
    pub fn nft_table(&self) -> String {
        let safe: String = self
            .bridge
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("shoal_{safe}")
    }
}
