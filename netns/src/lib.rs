//! shoal-netns: the netlink layer under task networking. It gives the worker the building blocks
//! to wire each task into its networks: network namespaces (named and mounted, or held by an
//! open descriptor and mounted nowhere), bridges, veth pairs, IPv4 addresses and routes, VXLAN
//! devices and their static FDB and neighbour entries.
//!
//! Everything goes through netlink (the `rtnetlink` crate); nothing shells out to `ip` or
//! `bridge`. Calls that create take "ensure" semantics and deletes report whether anything was
//! there, so that the worker reconciles (startup, changes, cleanup after a kill -9) instead of
//! replaying.
//!
//! **Architecture Invariant:** netns never talks to containerd and knows nothing about tasks,
//! services or networks as the cluster sees them: it takes names, addresses and MACs.
//!
//! Typical use, for one task on a bridge:
//! ```no_run
//! # async fn wire() -> shoal_netns::Result<()> {
//! use shoal_netns::{Netlink, NetnsDir, Route};
//! let dir = NetnsDir::new("/run/shoal/netns")?;
//! let task = dir.ensure("web.1.abc")?;
//! let host = Netlink::current()?;
//! host.ensure_bridge("shl-br0", Some(1450)).await?;
//! host.ensure_veth("shl-abc", &task, "eth0", Some(1450)).await?;
//! host.attach_to_bridge("shl-abc", "shl-br0").await?;
//! host.set_up("shl-abc").await?;
//! let inside = Netlink::open(&task)?;
//! inside.ensure_address("eth0", "198.18.0.2/24".parse().expect("a CIDR")).await?;
//! inside.set_up("eth0").await?;
//! inside.set_up("lo").await?;
//! inside.ensure_route(&Route::default_via("198.18.0.1".parse().expect("an IP"))).await?;
//! # Ok(()) }
//! ```

mod address;
mod error;
mod fdb;
mod link;
mod mac;
mod namespace;
mod netlink;
mod route;
mod rule;
mod vxlan;

pub use error::{Error, Result};
pub use fdb::{FdbEntry, NeighbourEntry};
pub use ipnet::Ipv4Net;
pub use link::{Link, MAX_IFNAME_LEN};
pub use mac::MacAddr;
pub use namespace::{Netns, NetnsDir};
pub use netlink::Netlink;
pub use route::Route;
pub use rule::FwmarkRule;
pub use vxlan::{Vxlan, VXLAN_PORT};
