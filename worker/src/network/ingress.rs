//! The node's ingress load balancer (docker's `ingress_sbox`): a namespace of its own with one
//! leg on the outbound bridge (`eth1`) and one on the ingress overlay (`eth0`, the node's own
//! ingress address). The node DNATs a published port to the balancer's bridge address; the
//! balancer DNATs it again to a serving task's ingress address, anywhere in the cluster, and
//! forwards it over the overlay. Nobody SNATs, so the task sees the client's address; the task
//! routes its replies back here by connection mark (see `lb::MeshReturn`), where conntrack
//! undoes both DNATs on the way out.
//!
//! Keeping the balancer out of the node's namespace keeps the ingress subnet's routes out of it
//! too (several test daemons share one namespace, each swarm with its own ingress subnet).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_netns::{Netlink, Netns, NetnsDir};
use tracing::info;

use super::lb::{self, PortForward};
use super::nft;
use super::outbound::Outbound;
use super::overlay::OverlayNs;
use super::NetworkError;

/// The namespace's name in its directory.
const NAME: &str = "ingress_sbox";
/// Its table.
const TABLE: &str = "shoal_ingress";
/// Its leg on the outbound bridge (the one on the ingress overlay is `eth0`).
const BRIDGE_IF: &str = "eth1";

pub(super) struct IngressBalancer {
    ns: Netns,
    /// The ingress network it is on, and its address there.
    pub network_id: String,
    pub address: Ipv4Net,
    /// Its address on the outbound bridge, where the node sends published ports.
    pub bridge_addr: Ipv4Addr,
    /// The ID it is wired under (veth names), unique per daemon.
    wiring_id: String,
    /// The table last written, to write only changes.
    script: String,
}

impl IngressBalancer {
    /// Builds (or finds, after a restart) the balancer on `overlay` with `address`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn ensure(
        dir: &NetnsDir,
        host: &Netlink,
        outbound: &mut Outbound,
        overlay: &OverlayNs,
        network_id: &str,
        address: Ipv4Net,
        wiring_id: &str,
        mtu: u32,
    ) -> Result<Self, NetworkError> {
        let ns = dir.ensure(NAME)?;
        ns.write_sysctl("net/ipv4/ip_forward", "1")?;
        // Mesh clients come from anywhere and leave by the default route: never drop them for
        // arriving on the "wrong" interface (a new namespace has 0, unless the host makes new
        // namespaces inherit its own settings).
        for iface in ["all", "default"] {
            ns.write_sysctl(&format!("net/ipv4/conf/{iface}/rp_filter"), "0")?;
        }
        let inside = Netlink::open(&ns)?;
        inside.set_up("lo").await?;
        overlay
            .attach_task(&ns, &inside, wiring_id, 0, address, mtu)
            .await?;
        let bridge_addr = outbound
            .attach(host, &ns, &inside, wiring_id, BRIDGE_IF, false)
            .await?;
        info!(%address, %bridge_addr, "ingress load balancer ready");
        Ok(Self {
            ns,
            network_id: network_id.to_string(),
            address,
            bridge_addr,
            wiring_id: wiring_id.to_string(),
            script: String::new(),
        })
    }

    /// Makes the balancer forward `ports` to their serving tasks.
    pub(super) fn program(&mut self, ports: &[PortForward]) -> Result<(), NetworkError> {
        let script = balancer_script(ports);
        if script != self.script {
            nft::apply(&script, Some(self.ns.path()))?;
            self.script = script;
        }
        Ok(())
    }

    /// What the node forwards to the balancer: each port to the same port of its bridge leg.
    pub(super) fn node_forwards(&self, ports: &[PortForward]) -> Vec<PortForward> {
        ports
            .iter()
            .map(|p| PortForward {
                protocol: p.protocol,
                port: p.port,
                backends: vec![std::net::SocketAddrV4::new(self.bridge_addr, p.port)],
            })
            .collect()
    }

    /// Takes the balancer down: its legs, then its namespace.
    pub(super) async fn remove(
        self,
        dir: &NetnsDir,
        host: &Netlink,
        outbound: &mut Outbound,
        overlay: Option<&OverlayNs>,
    ) -> Result<(), NetworkError> {
        outbound
            .detach(host, &self.wiring_id, Some(self.bridge_addr))
            .await?;
        if let Some(ov) = overlay {
            ov.detach_task(&self.wiring_id, 0).await?;
        }
        dir.delete(NAME)?;
        info!("ingress load balancer removed");
        Ok(())
    }
}

/// The balancer's table: published ports arriving from the node are spread over the serving
/// tasks; a port without one is not DNATed, so the balancer's own stack refuses it.
fn balancer_script(ports: &[PortForward]) -> String {
    let mut s = lb::replace_header(TABLE);
    let (map, chains) = lb::port_chains(&format!("iifname \"{BRIDGE_IF}\" "), ports);
    if !map.is_empty() {
        s.push_str(&format!(
            "table ip {TABLE} {{\n\
             \tchain published {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\t{map}\n\
             \t}}\n\
             {chains}}}\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balancer_forwards_what_comes_from_the_node() {
        let s = balancer_script(&[PortForward {
            protocol: "tcp",
            port: 8080,
            backends: vec!["198.18.129.3:80".parse().expect("sa")],
        }]);
        assert!(s.starts_with("table ip shoal_ingress\ndelete table ip shoal_ingress\n"));
        assert!(
            s.contains(
                "iifname \"eth1\" meta l4proto . th dport vmap { tcp . 8080 : goto port_tcp_8080 }"
            ),
            "{s}"
        );
        assert!(s.contains("dnat ip to 198.18.129.3:80"), "{s}");
        assert_eq!(
            balancer_script(&[]),
            "table ip shoal_ingress\ndelete table ip shoal_ingress\n"
        );
    }
}
