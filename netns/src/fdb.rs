//! The overlay's peer table in the kernel: static FDB entries on a VXLAN device (a remote
//! task's MAC → the VTEP, i.e. the underlay address of the node it runs on) and neighbour
//! entries (a remote task's IP → its MAC, answered locally by the device's proxy ARP). Both are
//! permanent, added with replace semantics (repeating converges, a moved task just gets its new
//! VTEP) and deleted without complaint when already gone.

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;

use crate::error::{errno, Result};
use crate::link::validate_ifname;
use crate::mac::MacAddr;
use crate::netlink::Netlink;

impl Netlink {
    /// `bridge fdb replace MAC dev DEVICE dst REMOTE self permanent`: frames for `mac` leaving
    /// VXLAN device `device` are sent to the VTEP `remote`.
    pub async fn ensure_fdb(&self, device: &str, mac: MacAddr, remote: Ipv4Addr) -> Result<()> {
        validate_ifname(device)?;
        let index = self.index_of(device).await?;
        self.handle
            .neighbours()
            .add_bridge(index, &mac.octets())
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .destination(IpAddr::V4(remote))
            .replace()
            .execute()
            .await
            .map_err(|err| {
                self.err(
                    format!("adding FDB entry {mac} → {remote} on {device}"),
                    err,
                )
            })?;
        tracing::debug!(netns = %self.netns, device, %mac, %remote, "set FDB entry");
        Ok(())
    }

    /// Removes the FDB entry for `mac` → `remote` from `device`; returns whether it was there.
    pub async fn delete_fdb(&self, device: &str, mac: MacAddr, remote: Ipv4Addr) -> Result<bool> {
        validate_ifname(device)?;
        let index = self.index_of(device).await?;
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.flags = NeighbourFlags::Own;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(mac.octets().to_vec()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(remote)),
        ];
        self.delete_neighbour_message(msg, &format!("FDB entry {mac} → {remote} on {device}"))
            .await
    }

    /// `ip neigh replace IP lladdr MAC dev DEVICE nud permanent`.
    pub async fn ensure_neighbour(&self, device: &str, ip: Ipv4Addr, mac: MacAddr) -> Result<()> {
        validate_ifname(device)?;
        let index = self.index_of(device).await?;
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac.octets())
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|err| self.err(format!("adding neighbour {ip} → {mac} on {device}"), err))?;
        tracing::debug!(netns = %self.netns, device, %ip, %mac, "set neighbour entry");
        Ok(())
    }

    /// Removes the neighbour entry for `ip` from `device`; returns whether it was there.
    pub async fn delete_neighbour(&self, device: &str, ip: Ipv4Addr) -> Result<bool> {
        validate_ifname(device)?;
        let index = self.index_of(device).await?;
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))];
        self.delete_neighbour_message(msg, &format!("neighbour {ip} on {device}"))
            .await
    }

    async fn delete_neighbour_message(&self, msg: NeighbourMessage, what: &str) -> Result<bool> {
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => {
                tracing::debug!(netns = %self.netns, entry = what, "deleted");
                Ok(true)
            }
            Err(err) if errno(&err) == Some(libc::ENOENT) => Ok(false),
            Err(err) => Err(self.err(format!("deleting {what}"), err)),
        }
    }
}
