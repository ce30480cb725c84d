//! Links: bridges, veth pairs whose far end lives in another namespace, bridge membership,
//! up/down, MAC and deletion. "Ensure" calls converge (creating what exists is not an error)
//! and deletes report whether anything was there, so the worker's reconcile loop can call them
//! after a restart without knowing what survived.

use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::error::{errno, Error, Result};
use crate::mac::MacAddr;
use crate::namespace::Netns;
use crate::netlink::Netlink;

/// Longest interface name the kernel takes (IFNAMSIZ − 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// What a link looks like from netlink, reduced to what the worker reconciles on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The kernel's kind ("bridge", "veth", "vxlan" …); `None` for a plain device such as `lo`.
    pub kind: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// The bridge this link is a port of.
    pub controller: Option<u32>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            controller: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(bytes) => link.mac = MacAddr::from_slice(bytes),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        link
    }
}

/// Refuses names the kernel would refuse, with a message that says why.
pub(crate) fn validate_ifname(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_IFNAME_LEN {
        "longer than 15 bytes"
    } else if name == "."
        || name == ".."
        || name.contains(['/', ':', '\0'])
        || name.contains(char::is_whitespace)
    {
        "not a valid interface name"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_string(),
        reason,
    })
}

impl Netlink {
    /// All links in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|err| self.err("listing links", err))?;
        Ok(messages.iter().map(Link::from_message).collect())
    }

    /// The link called `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        validate_ifname(name)?;
        Ok(self
            .link_message(name)
            .await?
            .as_ref()
            .map(Link::from_message))
    }

    /// A bridge called `name` with the given MTU (the kernel's default if `None`), up. Returns its
    /// index. An existing bridge is brought to that state; an existing link of another kind is
    /// an error.
    pub async fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<u32> {
        validate_ifname(name)?;
        if self.existing(name, "bridge").await?.is_none() {
            let mut bridge = LinkBridge::new(name);
            if let Some(mtu) = mtu {
                bridge = bridge.mtu(mtu);
            }
            self.create(name, bridge.build()).await?;
            tracing::info!(netns = %self.netns, link = name, ?mtu, "created bridge");
        }
        let index = self.index_of(name).await?;
        let mut change = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = mtu {
            change = change.mtu(mtu);
        }
        self.change(name, "setting up", change.build()).await?;
        Ok(index)
    }

    /// A veth pair: `name` in this namespace, its peer `peer_name` created directly in `peer`
    /// (so the peer never needs a temporary name here, and no half-moved state can be left).
    /// Both ends start down. Returns the index of `name`. If a veth `name` exists already it
    /// is taken as done.
    pub async fn ensure_veth(
        &self,
        name: &str,
        peer: &Netns,
        peer_name: &str,
        mtu: Option<u32>,
    ) -> Result<u32> {
        validate_ifname(name)?;
        validate_ifname(peer_name)?;
        if let Some(index) = self.existing(name, "veth").await? {
            return Ok(index);
        }
        let peer_file = peer.open()?;
        let mut peer_msg = LinkUnspec::new_with_name(peer_name).setns_by_fd(peer_file.as_raw_fd());
        let mut veth =
            LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(name);
        if let Some(mtu) = mtu {
            peer_msg = peer_msg.mtu(mtu);
            veth = veth.mtu(mtu);
        }
        let veth = veth
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
            .build();
        match self.handle.link().add(veth).execute().await {
            Ok(()) => {}
            // `name` was free a moment ago, so the name taken is the peer's (or a racing
            // creator's): not something to paper over.
            Err(err) => {
                return Err(self.err(
                    format!(
                        "creating veth {name} with peer {peer_name} in {}",
                        peer.name()
                    ),
                    err,
                ))
            }
        }
        // The kernel has read the fd by now; keep it open until here so it surely had it.
        drop(peer_file);
        tracing::info!(
            netns = %self.netns, link = name, peer_netns = peer.name(), peer = peer_name,
            "created veth pair"
        );
        self.index_of(name).await
    }

    /// Makes `link` a port of `bridge` (both in this namespace).
    pub async fn attach_to_bridge(&self, link: &str, bridge: &str) -> Result<()> {
        validate_ifname(link)?;
        validate_ifname(bridge)?;
        let bridge_index = self.index_of(bridge).await?;
        let index = self.index_of(link).await?;
        let msg = LinkUnspec::new_with_index(index)
            .controller(bridge_index)
            .build();
        self.change(link, &format!("attaching to bridge {bridge}"), msg)
            .await
    }

    /// Makes `link`, a bridge port, an isolated one: it can talk to the bridge itself and to
    /// ports that are not isolated, never to another isolated port (docker's `icc=false` on
    /// docker_gwbridge, done in the bridge rather than with br_netfilter and iptables).
    pub async fn isolate_bridge_port(&self, link: &str) -> Result<()> {
        validate_ifname(link)?;
        let index = self.index_of(link).await?;
        let msg = LinkUnspec::new_with_index(index)
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                true,
            )]))
            .build();
        self.change(link, "isolating the bridge port", msg).await
    }

    /// Sets `link` administratively up.
    pub async fn set_up(&self, link: &str) -> Result<()> {
        validate_ifname(link)?;
        let index = self.index_of(link).await?;
        self.change(
            link,
            "setting up",
            LinkUnspec::new_with_index(index).up().build(),
        )
        .await
    }

    /// Sets `link` administratively down.
    pub async fn set_down(&self, link: &str) -> Result<()> {
        validate_ifname(link)?;
        let index = self.index_of(link).await?;
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.change(link, "setting down", msg).await
    }

    /// Sets the MAC address of `link` (a task's interface gets the MAC the peer tables announce).
    pub async fn set_mac(&self, link: &str, mac: MacAddr) -> Result<()> {
        validate_ifname(link)?;
        let index = self.index_of(link).await?;
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.octets().to_vec())
            .build();
        self.change(link, &format!("setting MAC {mac}"), msg).await
    }

    /// Deletes `link`; returns whether it existed. Deleting one end of a veth deletes both.
    pub async fn delete_link(&self, link: &str) -> Result<bool> {
        validate_ifname(link)?;
        let Some(msg) = self.link_message(link).await? else {
            return Ok(false);
        };
        match self.handle.link().del(msg.header.index).execute().await {
            Ok(()) => {
                tracing::info!(netns = %self.netns, link, "deleted link");
                Ok(true)
            }
            // Gone between the lookup and the delete: someone else's delete won.
            Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(false),
            Err(err) => Err(self.err(format!("deleting link {link}"), err)),
        }
    }

    /// The index of an existing link `name` of kind `kind`, or `None` if there is no such link;
    /// an error if there is a link of another kind.
    pub(crate) async fn existing(&self, name: &str, kind: &'static str) -> Result<Option<u32>> {
        let Some(msg) = self.link_message(name).await? else {
            return Ok(None);
        };
        let link = Link::from_message(&msg);
        match link.kind.as_deref() {
            Some(actual) if actual == kind => Ok(Some(link.index)),
            actual => Err(Error::WrongKind {
                name: name.to_string(),
                netns: self.netns.clone(),
                expected: kind,
                actual: actual.unwrap_or("plain device").to_string(),
            }),
        }
    }

    /// Creates a link; one that appeared meanwhile (EEXIST) counts as created.
    pub(crate) async fn create(&self, name: &str, msg: LinkMessage) -> Result<()> {
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(err) if errno(&err) == Some(libc::EEXIST) => Ok(()),
            Err(err) => Err(self.err(format!("creating link {name}"), err)),
        }
    }

    async fn change(&self, link: &str, what: &str, msg: LinkMessage) -> Result<()> {
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|err| self.err(format!("{what} link {link}"), err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("shl-0123456789a").is_ok());
        for bad in ["", "shl-0123456789ab", "a/b", "a b", "a:b", ".."] {
            assert!(validate_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }
}
