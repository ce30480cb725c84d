//! Who is calling: the verified certificate of the connection a request came on, and the role
//! checks gRPC handlers make with it.
//!
//! [`crate::TlsIncoming`] puts a [`PeerInfo`] into every request's extensions; requests that
//! came over the local unix API socket carry tonic's `UdsConnectInfo` instead and count as
//! [`Caller::Local`] (the socket is root-only: the CLI and the daemon's own agent). A request
//! that has neither came over a listener without mutual TLS and is refused, so forgetting to
//! wrap a TCP listener fails closed.

use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::identity::PeerIdentity;
use crate::transport::PeerInfo;
use crate::Role;

/// The caller of a request that passed [`require_node`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The local API socket: this host's CLI or daemon, trusted with everything.
    Local,
    /// A node of the cluster, over mutual TLS.
    Node(PeerIdentity),
}

impl Caller {
    /// The calling node's ID, `None` for a local caller.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Caller::Local => None,
            Caller::Node(id) => Some(&id.node_id),
        }
    }
}

/// The verified identity of the remote node, if the request came over mutual TLS with a
/// client certificate.
pub fn peer_identity<T>(request: &Request<T>) -> Option<&PeerIdentity> {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|info| info.identity.as_ref())
}

/// Any node of the cluster (or a local caller) may go on; anyone else gets `UNAUTHENTICATED`.
pub fn require_node<T>(request: &Request<T>) -> Result<Caller, Status> {
    if let Some(info) = request.extensions().get::<PeerInfo>() {
        return match &info.identity {
            Some(identity) => Ok(Caller::Node(identity.clone())),
            None => Err(Status::unauthenticated(
                "this call needs the certificate of a node of this swarm, and the connection \
                 presented none: join the swarm first (`shoal swarm join --token …`)",
            )),
        };
    }
    if request.extensions().get::<UdsConnectInfo>().is_some() {
        return Ok(Caller::Local);
    }
    Err(Status::unauthenticated(
        "this call is served only over the swarm's mutual-TLS port or the local API socket",
    ))
}

/// Lets the call through if the caller may act as `role`: every node may act as a worker, only
/// managers (and local callers) as managers. Otherwise `PERMISSION_DENIED` naming the node.
pub fn require_role<T>(request: &Request<T>, role: Role) -> Result<Caller, Status> {
    let caller = require_node(request)?;
    match (&caller, role) {
        (Caller::Local, _) | (Caller::Node(_), Role::Worker) => Ok(caller),
        (Caller::Node(id), Role::Manager) if id.role == Role::Manager => Ok(caller),
        (Caller::Node(id), Role::Manager) => {
            tracing::warn!(node_id = %id.node_id, "worker certificate refused on a manager-only call");
            Err(Status::permission_denied(format!(
                "node {} holds a worker certificate, and a worker certificate cannot call the \
                 control API or any other manager-only method: run this on a manager node, or \
                 promote the node first",
                id.node_id
            )))
        }
    }
}

/// [`require_role`] for a whole service: `ControlServer::with_interceptor(api,
/// RequireRole(Role::Manager))`.
#[derive(Clone, Copy, Debug)]
pub struct RequireRole(pub Role);

impl Interceptor for RequireRole {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        require_role(&request, self.0)?;
        Ok(request)
    }
}
