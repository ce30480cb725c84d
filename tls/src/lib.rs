//! The cluster's trust, as Docker Swarm builds it.
//!
//! Every swarm has one root CA ([`RootCa`], ECDSA P-256, made by `swarm init`). Every node holds
//! a certificate the CA signed ([`NodeCert`]) that names it: the subject's CN is the node ID, the
//! OU its role (`swarm-manager` / `swarm-worker`, swarmkit's values) and the O the cluster ID.
//! Nodes talk to each other only over mutual TLS with those certificates, so a request's
//! verified peer certificate *is* the caller's identity ([`PeerIdentity`]) and its role decides
//! what it may call ([`require_role`]).
//!
//! A node that has no certificate yet joins with a token that carries the SHA-256 digest of the
//! CA certificate ([`CaDigest`]): it connects with [`bootstrap_client_config`], which accepts the
//! manager only if the manager presents that exact CA, then sends a CSR made from a fresh
//! [`NodeKey`] and the token's secret, and gets its certificate back.
//!
//! Host names and IP addresses play no part: a client checks that the server's certificate
//! carries the SAN of the role it wants to reach ([`Role::server_name`], e.g. `swarm-manager`)
//! or the node ID it wants to reach. Managers are reached at whatever address they advertise,
//! which may change, while their certificates stay valid.
//!
//! All crypto goes through rustls' `ring` provider, passed explicitly, so the process-wide
//! default provider does not matter.

mod auth;
mod ca;
mod config;
mod digest;
mod error;
mod files;
mod identity;
mod node;
mod pem;
mod transport;
mod x509;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use auth::{peer_identity, require_node, require_role, Caller, RequireRole};
pub use ca::RootCa;
pub use config::{
    bootstrap_client_config, client_config, client_config_live, server_config, server_config_live,
    ClientAuth, LiveCert,
};
pub use digest::CaDigest;
pub use error::TlsError;
pub use identity::PeerIdentity;
pub use node::{NodeCert, NodeKey};
pub use rustls::ClientConfig;
pub use transport::{
    connect, connect_lazy, PeerInfo, TlsConn, TlsConnector, TlsIncoming, HANDSHAKE_TIMEOUT,
};

/// How long a node certificate is valid by default (swarmkit's default too).
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// How long the root CA certificate is valid (swarmkit: 20 years).
pub const ROOT_CA_EXPIRY: Duration = Duration::from_secs(20 * 365 * 24 * 60 * 60);

/// A node's role, as its certificate states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    /// The certificate's OU for this role, swarmkit's spelling.
    pub fn ou(self) -> &'static str {
        match self {
            Role::Manager => "swarm-manager",
            Role::Worker => "swarm-worker",
        }
    }

    /// The role named by a certificate's OU.
    pub fn from_ou(ou: &str) -> Option<Role> {
        match ou {
            "swarm-manager" => Some(Role::Manager),
            "swarm-worker" => Some(Role::Worker),
            _ => None,
        }
    }

    /// The DNS SAN every certificate of this role carries, which clients verify instead of a
    /// host name: "any manager of this cluster" is `swarm-manager`. Same string as the OU, as
    /// swarmkit does.
    pub fn server_name(self) -> &'static str {
        self.ou()
    }

    /// `manager` / `worker`, as the CLI spells roles.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manager" => Ok(Role::Manager),
            "worker" => Ok(Role::Worker),
            other => Err(TlsError::UnknownRole(other.to_string())),
        }
    }
}
