//! IPv4 addresses on links (a task's address on its eth0, a gateway's on a bridge), added and
//! removed idempotently so that reconcile can repeat them.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};

use crate::error::{errno, Result};
use crate::link::validate_ifname;
use crate::netlink::Netlink;

impl Netlink {
    /// Adds `address` (e.g. 198.18.0.2/24) to `link`; an address already there is not an error.
    pub async fn ensure_address(&self, link: &str, address: Ipv4Net) -> Result<()> {
        validate_ifname(link)?;
        let index = self.index_of(link).await?;
        let added = self
            .handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await;
        match added {
            Ok(()) => {
                tracing::info!(netns = %self.netns, link, %address, "added address");
                Ok(())
            }
            Err(err) if errno(&err) == Some(libc::EEXIST) => Ok(()),
            Err(err) => Err(self.err(format!("adding address {address} to {link}"), err)),
        }
    }

    /// The IPv4 addresses on `link`.
    pub async fn addresses(&self, link: &str) -> Result<Vec<Ipv4Net>> {
        Ok(self
            .address_messages(link)
            .await?
            .iter()
            .filter_map(ipv4_of)
            .collect())
    }

    /// Removes `address` from `link`; returns whether it was there.
    pub async fn delete_address(&self, link: &str, address: Ipv4Net) -> Result<bool> {
        let found = self
            .address_messages(link)
            .await?
            .into_iter()
            .find(|msg| ipv4_of(msg) == Some(address));
        let Some(msg) = found else {
            return Ok(false);
        };
        match self.handle.address().del(msg).execute().await {
            Ok(()) => {
                tracing::info!(netns = %self.netns, link, %address, "deleted address");
                Ok(true)
            }
            Err(err) if errno(&err) == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(err) => Err(self.err(format!("deleting address {address} from {link}"), err)),
        }
    }

    async fn address_messages(&self, link: &str) -> Result<Vec<AddressMessage>> {
        validate_ifname(link)?;
        let index = self.index_of(link).await?;
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|err| self.err(format!("listing addresses of {link}"), err))?;
        // The filter is applied in user space by rtnetlink; check again to be sure.
        Ok(messages
            .into_iter()
            .filter(|msg| msg.header.index == index)
            .collect())
    }
}

fn ipv4_of(msg: &AddressMessage) -> Option<Ipv4Net> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on point-to-point
    // links, and the same as IFA_LOCAL elsewhere.
    let local = msg.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(IpAddr::V4(addr)) => Some(*addr),
        _ => None,
    });
    let address = local.or_else(|| {
        msg.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(IpAddr::V4(addr)) => Some(*addr),
            _ => None,
        })
    })?;
    Ipv4Net::new(address, msg.header.prefix_len).ok()
}
