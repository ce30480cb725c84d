//! The overlay's peer table in the kernel: static FDB entries on a VXLAN device (a remote
//! task's MAC → the VTEP, i.e. the underlay address of the node it runs on) and neighbour
//! entries (a remote task's IP → its MAC, answered locally by the device's proxy ARP). Both are
//! permanent, added with replace semantics (repeating converges, a moved task just gets its new
//! VTEP) and deleted without complaint when already gone.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;

use crate::error::{errno, Result};
use crate::link::validate_ifname;
use crate::mac::MacAddr;
use crate::netlink::Netlink;

/// A static FDB entry on a VXLAN device: frames for `mac` go to the VTEP `remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub remote: Ipv4Addr,
}

/// A permanent neighbour entry: `ip` is at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighbourEntry {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

impl Netlink {
    /// The static (permanent, device-own) FDB entries with a remote on `device`: what the
    /// reconcile loop compares with the managers' peer table. Entries the bridge learnt and the
    /// device's own address are not listed.
    pub async fn fdb_entries(&self, device: &str) -> Result<Vec<FdbEntry>> {
        let entries = self
            .permanent_entries(device, AddressFamily::Bridge)
            .await?
            .iter()
            .filter(|msg| msg.header.flags.contains(NeighbourFlags::Own))
            .filter_map(|msg| {
                Some(FdbEntry {
                    mac: mac_of(msg)?,
                    remote: ipv4_of(msg)?,
                })
            })
            .collect();
        Ok(entries)
    }

    /// The permanent IPv4 neighbour entries on `device`.
    pub async fn neighbour_entries(&self, device: &str) -> Result<Vec<NeighbourEntry>> {
        let entries = self
            .permanent_entries(device, AddressFamily::Inet)
            .await?
            .iter()
            .filter_map(|msg| {
                Some(NeighbourEntry {
                    ip: ipv4_of(msg)?,
                    mac: mac_of(msg)?,
                })
            })
            .collect();
        Ok(entries)
    }

    async fn permanent_entries(
        &self,
        device: &str,
        family: AddressFamily,
    ) -> Result<Vec<NeighbourMessage>> {
        validate_ifname(device)?;
        let index = self.index_of(device).await?;
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(|err| self.err(format!("listing {family:?} neighbours of {device}"), err))?;
        Ok(messages
            .into_iter()
            .filter(|msg| {
                msg.header.ifindex == index && msg.header.state == NeighbourState::Permanent
            })
            .collect())
    }

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

fn mac_of(msg: &NeighbourMessage) -> Option<MacAddr> {
    msg.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::LinkLayerAddress(bytes) => MacAddr::from_slice(bytes),
        _ => None,
    })
}

fn ipv4_of(msg: &NeighbourMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // In a bridge-family (FDB) reply the parser cannot know the remote's family and
        // keeps the raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })
}
