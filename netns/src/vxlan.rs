//! VXLAN devices for overlay networks: one per network and node, with the network's VNI, the
//! node's underlay address, UDP 4789, learning off and proxy ARP on. Learning is off because
//! the managers' peer tables are the truth (programmed as static FDB and neighbour entries, see
//! `fdb.rs`); proxy ARP lets the device answer a task's ARP from those neighbour entries, so no
//! broadcast ever crosses the underlay.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use rtnetlink::LinkVxlan;

use crate::error::Result;
use crate::link::validate_ifname;
use crate::namespace::Netns;
use crate::netlink::Netlink;

/// The IANA port for VXLAN (the kernel's own default is the older 8472).
pub const VXLAN_PORT: u16 = 4789;

/// What a VXLAN device should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub name: String,
    /// The VXLAN network identifier (24 bits).
    pub vni: u32,
    /// This node's underlay address, the source of encapsulated packets.
    pub local: Ipv4Addr,
    /// UDP destination port; [`VXLAN_PORT`] unless a test needs another.
    pub port: u16,
    /// The overlay MTU (underlay MTU − 50); the kernel derives one if `None`.
    pub mtu: Option<u32>,
}

impl Vxlan {
    /// A device on the standard port with the kernel's MTU.
    pub fn new(name: impl Into<String>, vni: u32, local: Ipv4Addr) -> Self {
        Self {
            name: name.into(),
            vni,
            local,
            port: VXLAN_PORT,
            mtu: None,
        }
    }
}

impl Netlink {
    /// Creates the VXLAN device `spec` and returns once it exists. With `into`, the device is
    /// created straight into that namespace (Swarm's layout: a per-network namespace holding
    /// the bridge and the VXLAN device) while its UDP socket stays in this one, where the
    /// underlay address is. Devices start down; attach and set them up where they live.
    ///
    /// A device of that name is taken as done: in this namespace it must be a VXLAN device;
    /// in `into` it cannot be inspected from here (use a handle there to check it).
    pub async fn ensure_vxlan(&self, spec: &Vxlan, into: Option<&Netns>) -> Result<()> {
        validate_ifname(&spec.name)?;
        let target = match into {
            Some(ns) => Some(ns.open()?),
            None => {
                if self.existing(&spec.name, "vxlan").await?.is_some() {
                    return Ok(());
                }
                None
            }
        };
        let mut device = LinkVxlan::new(&spec.name, spec.vni)
            .local(spec.local)
            .port(spec.port)
            .learning(false)
            .proxy(true)
            .l2miss(false)
            .l3miss(false);
        if let Some(mtu) = spec.mtu {
            device = device.mtu(mtu);
        }
        if let Some(file) = &target {
            device = device.setns_by_fd(file.as_raw_fd());
        }
        self.create(&spec.name, device.build()).await?;
        drop(target);
        tracing::info!(netns = %self.netns, link = %spec.name, vni = spec.vni,
            local = %spec.local, port = spec.port, into = ?into.map(Netns::name),
            "ensured vxlan device");
        Ok(())
    }
}
