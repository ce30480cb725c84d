//! Service discovery: the node's embedded DNS server, docker's 127.0.0.11 equivalent.
//!
//! One server per node answers every local task. A task's names come from the networks it is
//! on (service, `tasks.` and task names, from the peer tables the managers send), everything
//! else is forwarded to the task's `--dns` servers or the host's. The caller owns the socket
//! addresses, builds a [`DnsTable`] whenever the peer tables or the local tasks change and hands
//! it to [`DnsServer::update`]; it writes each task's resolv.conf with [`resolv_conf`].
//!
//! **Architecture Invariant:** this module knows nothing about netlink, containerd or the
//! session: it takes plain tables in and answers queries, so it is tested on loopback alone.

mod forward;
mod resolv_conf;
mod server;
mod table;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

pub use resolv_conf::{host_nameservers, resolv_conf};
pub use server::{DnsServer, DnsServerConfig};
pub use table::{Client, DnsTable, Resolution};

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listen address could not be bound for UDP or TCP (in use, or not on this host).
    #[error("cannot listen for DNS on {0} (UDP and TCP): {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
}
