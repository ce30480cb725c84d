//! The node's outbound bridge, docker_gwbridge's role: every task has a veth into it, an
//! address of its subnet and its default route through the bridge's address; nftables
//! masquerades what leaves the node. A task whose networks are all `--internal` is attached
//! too, for the node's DNS server, but gets no default route and is never forwarded. The ports are isolated from each other (docker's
//! `icc=false` there), so tasks on different overlays cannot meet through this bridge.
//!
//! Addresses on it are the node's own business (docker allocates them locally too): handed
//! out serially here, and found again on the task's interface after a restart.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_netns::{Netlink, Netns, Route};
use tracing::info;

use super::config::NetworkConfig;
use super::lb::PortForward;
use super::{nft, short_id, NetworkError};

pub(super) struct Outbound {
    bridge: String,
    bip: Ipv4Net,
    table: String,
    used: BTreeSet<Ipv4Addr>,
    /// Addresses of tasks on internal networks only.
    internal: BTreeSet<Ipv4Addr>,
    /// The node's published ports and where they go (see [`nft::bridge_script`]).
    ports: Vec<PortForward>,
    /// The last address handed out: the next search starts after it, so a freed address is the
    /// last to be reused.
    last: u32,
}

impl Outbound {
    /// Creates the bridge, its address, the masquerading table and IP forwarding.
    pub(super) async fn ensure(host: &Netlink, cfg: &NetworkConfig) -> Result<Self, NetworkError> {
        host.ensure_bridge(&cfg.bridge, None).await?;
        host.ensure_address(&cfg.bridge, cfg.bip).await?;
        host.set_up(&cfg.bridge).await?;
        // Per network namespace: this enables forwarding where the daemon runs, as dockerd does.
        write_sysctl("/proc/sys/net/ipv4/ip_forward")?;
        // Published ports answer on 127.0.0.1 too: DNATed to the bridge, the packet keeps its
        // loopback source until the table masquerades it, which the kernel only routes with
        // this (kube-proxy sets it for node ports on localhost).
        write_sysctl(&format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            cfg.bridge
        ))?;
        let outbound = Self {
            bridge: cfg.bridge.clone(),
            bip: cfg.bip,
            table: cfg.nft_table(),
            used: BTreeSet::new(),
            internal: BTreeSet::new(),
            ports: Vec::new(),
            last: u32::from(cfg.bip.addr()),
        };
        outbound.write_rules()?;
        info!(bridge = %cfg.bridge, address = %cfg.bip, "outbound bridge ready");
        Ok(outbound)
    }

    /// Writes the bridge's nftables table as it should be now, in one transaction.
    fn write_rules(&self) -> Result<(), NetworkError> {
        nft::apply(
            &nft::bridge_script(
                &self.table,
                &self.bridge,
                self.bip,
                &self.internal,
                &self.ports,
            ),
            None,
        )
    }

    /// Publishes `ports` on the node (replacing what was published); rewrites the table only
    /// when they changed.
    pub(super) fn set_ports(&mut self, mut ports: Vec<PortForward>) -> Result<(), NetworkError> {
        // One port, one destination: a host-mode port that another service publishes on the
        // mesh too loses (the caller lists the mesh's ports first).
        let mut seen = BTreeSet::new();
        ports.retain(|p| {
            let first = seen.insert((p.protocol, p.port));
            if !first {
                tracing::warn!(
                    port = p.port,
                    protocol = p.protocol,
                    "port published twice on this node; the second is ignored"
                );
            }
            first
        });
        ports.sort();
        if ports != self.ports {
            self.ports = ports;
            self.write_rules()?;
        }
        Ok(())
    }

    /// The bridge's address: the tasks' default gateway and where the DNS server listens.
    pub(super) fn gateway(&self) -> Ipv4Addr {
        self.bip.addr()
    }

    /// The host end of a task's veth.
    fn host_link(task_id: &str) -> String {
        format!("gw{}", short_id(task_id))
    }

    /// Plugs the task's veth into `bridge` as its interface `ifname` (its last one), port
    /// isolated, the ingress load balancer's too: its replies go through the node, which undoes
    /// its DNAT. Touches nothing shared, so tasks are wired in parallel, outside the node's lock.
    pub(super) async fn wire(
        host: &Netlink,
        bridge: &str,
        task: &Netns,
        task_id: &str,
        ifname: &str,
    ) -> Result<(), NetworkError> {
        let link = Self::host_link(task_id);
        host.ensure_veth(&link, task, ifname, None).await?;
        host.attach_to_bridge(&link, bridge).await?;
        host.isolate_bridge_port(&link).await?;
        host.set_up(&link).await?;
        Ok(())
    }

    /// The address in `bip` (the bridge's subnet) that the task's `ifname` already has: it
    /// keeps it after a daemon restart. Reads the task's namespace only, so it runs outside the
    /// node's lock.
    pub(super) async fn found(
        inside: &Netlink,
        ifname: &str,
        bip: Ipv4Net,
    ) -> Result<Option<Ipv4Addr>, NetworkError> {
        Ok(inside
            .addresses(ifname)
            .await?
            .into_iter()
            .map(|a| a.addr())
            .find(|a| bip.contains(a)))
    }

    /// Books the task's address, the one `found` on it or the next free one, and, when
    /// `internal`, keeps it from being forwarded. The shared part of addressing a task: under
    /// the node's lock, in memory but for an internal task's rules.
    pub(super) fn reserve(
        &mut self,
        found: Option<Ipv4Addr>,
        internal: bool,
    ) -> Result<Ipv4Addr, NetworkError> {
        let addr = match found {
            Some(a) => {
                self.used.insert(a);
                a
            }
            None => self.allocate()?,
        };
        if internal && self.internal.insert(addr) {
            self.write_rules()?;
        }
        Ok(addr)
    }

    /// Puts the `reserve`d `addr` on the task's `ifname`, up, with the default route through
    /// `bip`'s address unless `internal`. The task's namespace only: outside the node's lock.
    pub(super) async fn configure(
        inside: &Netlink,
        ifname: &str,
        addr: Ipv4Addr,
        bip: Ipv4Net,
        internal: bool,
    ) -> Result<(), NetworkError> {
        // The prefix comes from a valid Ipv4Net, so it is at most 32.
        let net = Ipv4Net::new_assert(addr, bip.prefix_len());
        inside.ensure_address(ifname, net).await?;
        inside.set_up(ifname).await?;
        if !internal {
            inside.ensure_route(&Route::default_via(bip.addr())).await?;
        }
        Ok(())
    }

    /// [`Self::wire`], then the address ([`Self::found`], [`Self::reserve`],
    /// [`Self::configure`]): for what is attached under the node's lock.
    pub(super) async fn attach(
        &mut self,
        host: &Netlink,
        task: &Netns,
        inside: &Netlink,
        task_id: &str,
        ifname: &str,
        internal: bool,
    ) -> Result<Ipv4Addr, NetworkError> {
        Self::wire(host, &self.bridge, task, task_id, ifname).await?;
        let found = Self::found(inside, ifname, self.bip).await?;
        let addr = self.reserve(found, internal)?;
        Self::configure(inside, ifname, addr, self.bip, internal).await?;
        Ok(addr)
    }

    /// Removes the task's veth (both ends) and frees its address.
    pub(super) async fn detach(
        &mut self,
        host: &Netlink,
        task_id: &str,
        addr: Option<Ipv4Addr>,
    ) -> Result<(), NetworkError> {
        host.delete_link(&Self::host_link(task_id)).await?;
        if let Some(a) = addr {
            self.used.remove(&a);
            if self.internal.remove(&a) {
                self.write_rules()?;
            }
        }
        Ok(())
    }

    /// The next free host address after the last one given, wrapping around.
    fn allocate(&mut self) -> Result<Ipv4Addr, NetworkError> {
        let net = self.bip.trunc();
        let first = u32::from(net.network()) + 1;
        let last = u32::from(net.broadcast()).saturating_sub(1);
        if last < first {
            return Err(NetworkError::OutboundFull(self.bip.to_string()));
        }
        let span = last - first + 1;
        let start = self.last.clamp(first, last);
        for step in 1..=span {
            let candidate = first + (start - first + step) % span;
            let ip = Ipv4Addr::from(candidate);
            if ip != self.gateway() && !self.used.contains(&ip) {
                self.used.insert(ip);
                self.last = candidate;
                return Ok(ip);
            }
        }
        Err(NetworkError::OutboundFull(self.bip.to_string()))
    }
}

/// Sets a sysctl of the daemon's own network namespace to 1.
fn write_sysctl(path: &str) -> Result<(), NetworkError> {
    std::fs::write(path, "1").map_err(|source| NetworkError::Io {
        what: "cannot set",
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(bip: &str) -> Outbound {
        let bip: Ipv4Net = bip.parse().expect("cidr");
        Outbound {
            bridge: "gw".into(),
            bip,
            table: "shoal_gw".into(),
            used: BTreeSet::new(),
            internal: BTreeSet::new(),
            ports: Vec::new(),
            last: u32::from(bip.addr()),
        }
    }

    #[test]
    fn addresses_skip_the_gateway_and_are_reused_last() {
        let mut o = outbound("198.19.0.1/29");
        let got: Vec<Ipv4Addr> = (0..5).map(|_| o.allocate().expect("free")).collect();
        assert_eq!(
            got,
            [
                "198.19.0.2",
                "198.19.0.3",
                "198.19.0.4",
                "198.19.0.5",
                "198.19.0.6"
            ]
            .map(|s| s.parse::<Ipv4Addr>().expect("ip"))
        );
        assert!(matches!(o.allocate(), Err(NetworkError::OutboundFull(_))));
        o.used.remove(&"198.19.0.3".parse().expect("ip"));
        assert_eq!(o.allocate().expect("free").to_string(), "198.19.0.3");
    }
}
