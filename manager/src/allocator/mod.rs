//! The allocator, swarmkit's manager role that gives networks their resources: a subnet from
//! the default address pool (or the user's own, checked against the others), a VXLAN ID, a
//! gateway, and one address per task attachment.
//!
//! The bookkeeping is pure, with no I/O and no clock, so that it is deterministic and tested
//! on its own; [`role`] is the leader-only writer role that hands out task addresses with it.
//! The allocations themselves are recorded in Raft; every allocator here can be rebuilt from those records (`from_allocated`), which is how a new
//! leader continues without ever handing out an address, subnet or VNI that is already given.
//!
//! - [`pool`]: subnets for networks ([`SubnetPool`], [`PoolConfig`]);
//! - [`ipam`]: the gateway and task addresses of one network ([`NetworkAddresses`]);
//! - [`vni`]: VXLAN IDs ([`VniAllocator`]);
//! - [`endpoint`]: a service's published ports and VIPs ([`allocate_endpoint`]);
//! - [`role`]: the writer role giving NEW tasks their addresses ([`TaskAllocator`]).
//!
//! Input checks shared with the CLI (names, CIDRs, gateways) live in
//! `shoal_proto::validate::network`; the allocators reuse them for what they are given.

pub mod endpoint;
pub mod ipam;
pub mod pool;
pub mod role;
mod serial;
pub mod vni;

pub use endpoint::{allocate_endpoint, EndpointAllocError};
pub use ipam::{IpamError, NetworkAddresses};
pub use pool::{PoolConfig, PoolError, SubnetPool};
pub use role::TaskAllocator;
pub use vni::{VniAllocator, VniError, VNI_FIRST, VNI_LAST};
