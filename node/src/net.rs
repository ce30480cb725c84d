//! The node's side of the cluster network: its certificate, the mutual-TLS port other nodes
//! call, and the channels it opens to managers.
//!
//! Every node serves the Agent service (task logs, for managers only). A manager also serves
//! Control and Raft (managers only), the Dispatcher (any node, for itself) and Membership
//! (joining needs no certificate: the join token is the credential). On a manager, the
//! connections of other managers are served on the Raft transport's runtime, the others on
//! the daemon's (see [`serve`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_manager::raft::grpc::{ChannelFactory, RaftService, TransportError};
use shoal_manager::Manager;
use shoal_proto::{
    agent_server::AgentServer, control_server::ControlServer, dispatcher_server::DispatcherServer,
    membership_server::MembershipServer, MAX_REQUEST_BYTES,
};
use shoal_tls::{ClientAuth, LiveCert, NodeCert, RequireRole, Role, TlsIncoming};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tracing::warn;

use super::Daemon;

pub fn certs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("certificates")
}

pub fn load_cert(data_dir: &Path) -> anyhow::Result<NodeCert> {
    let dir = certs_dir(data_dir);
    NodeCert::load(&dir).with_context(|| {
        format!(
            "cannot load this node's certificate from {}; leave the swarm (`shoal swarm leave \
             --force`) and join again",
            dir.display()
        )
    })
}

/// Channels to other managers, verified as managers of this cluster, presenting our cert;
/// with HTTP/2 keepalive pings if `keepalive` (interval, timeout) is given.
pub fn manager_channels(
    cert: &Arc<LiveCert>,
    keepalive: Option<(Duration, Duration)>,
) -> anyhow::Result<Arc<dyn ChannelFactory>> {
    let config = Arc::new(shoal_tls::client_config_live(cert.clone())?);
    Ok(Arc::new(move |addr: &str| {
        shoal_tls::connect_lazy(addr, config.clone(), Role::Manager.server_name(), keepalive)
            .map_err(|e| TransportError::Channel {
                addr: addr.to_string(),
                reason: e.to_string(),
            })
    }))
}

/// The swarm's managers as this node last heard from the leader (node IDs).
#[derive(Clone, Default)]
pub struct ManagerIds(Arc<std::sync::RwLock<HashSet<String>>>);

impl ManagerIds {
    /// What the leader's latest session message says.
    pub fn replace(&self, ids: &[String]) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = ids.iter().cloned().collect();
    }

    fn contains(&self, id: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }
}

/// The Agent service's gate: a manager's certificate, of a node the swarm's store holds as a
/// manager now (relayed by the leader with each session message). A worker has no store of its
/// own, so this is how a demoted or removed manager's still-valid certificate is refused here.
#[derive(Clone)]
pub struct KnownManagers(pub ManagerIds);

impl tonic::service::Interceptor for KnownManagers {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let shoal_tls::Caller::Node(peer) = shoal_tls::require_role(&request, Role::Manager)? {
            if !self.0.contains(&peer.node_id) {
                warn!(node_id = %peer.node_id, "agent call from a node that is not a manager now");
                return Err(tonic::Status::permission_denied(format!(
                    "node {} is not a manager of this swarm (as its leader last said): only \
                     managers may read this node's task logs",
                    peer.node_id
                )));
            }
        }
        Ok(request)
    }
}

/// HTTP/2 keepalive of the node's TCP server (interval, timeout). A client that vanished
/// without closing its connection (a manager cut off while its Raft stream to this one was
/// open, a worker's session) is let go within 10 s rather than when TCP gives up, minutes
/// later. Slower than the managers' own channels' (`raft::grpc::KEEPALIVE`), so that the side
/// that sends notices first. 1,000 workers make 200 pings a second, which the scale benchmark
/// (bench/scale.sh) ran with.
const SERVER_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(5));

/// Serves the node's TCP port until `stop` flips.
pub async fn serve(
    daemon: &Arc<Daemon>,
    listen: &str,
    cert: Arc<LiveCert>,
    manager: Option<&Manager>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--listen-addr)"))?;
    let config = Arc::new(shoal_tls::server_config_live(cert, ClientAuth::Optional)?);
    let incoming = TlsIncoming::new(listener, config);
    let agent = shoal_worker::agent_service::AgentService::new(daemon.executor.clone());
    let mut router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(SERVER_KEEPALIVE.0))
        .http2_keepalive_timeout(Some(SERVER_KEEPALIVE.1))
        .layer(daemon.metrics.api_layer("cluster"))
        .add_service(InterceptedService::new(
            AgentServer::new(agent).max_decoding_message_size(MAX_REQUEST_BYTES),
            KnownManagers(daemon.managers.clone()),
        ));
    if let Some(m) = manager {
        let logs = Arc::new(super::logs::NodeLogs::new(daemon.clone()));
        let control = shoal_manager::controlapi::ControlApi::new(daemon.manager_slot.clone(), logs);
        let authority = m.authority();
        router = router
            .add_service(InterceptedService::new(
                ControlServer::new(control).max_decoding_message_size(MAX_REQUEST_BYTES),
                authority.interceptor(Role::Manager),
            ))
            .add_service(
                DispatcherServer::new(m.dispatcher()).max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                MembershipServer::new(shoal_manager::membership::MembershipApi::new(
                    daemon.manager_slot.clone(),
                ))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(InterceptedService::new(
                RaftService::new(m.raft().clone())
                    .with_sender_check(authority.raft_sender_check())
                    .into_server(),
                RequireRole(Role::Manager),
            ));
    }
    // One concrete type for the connection streams below, so one closure serves them all.
    type Conns = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<shoal_tls::TlsConn, std::io::Error>> + Send>,
    >;
    let serve = |router: tonic::transport::server::Router<_>,
                 incoming: Conns,
                 mut stop: watch::Receiver<bool>| async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            warn!(error = %e, "cluster port server failed");
        }
    };
    let Some(raft_runtime) = manager.map(|m| m.transport().runtime()) else {
        return Ok(tokio::spawn(serve(router, Box::pin(incoming), stop)));
    };
    // The other managers' connections carry their Raft messages (appends, votes, heartbeats
    // and the answers to ours): they are served on the Raft transport's own runtime, so they
    // do not wait behind the worker sessions and role rounds on this one (see the manager's
    // `raft/net_runtime.rs`). Everything else stays here.
    let (managers_tx, managers_rx) = tokio::sync::mpsc::channel(16);
    let (others_tx, others_rx) = tokio::sync::mpsc::channel(64);
    let split = tokio::spawn(async move {
        let mut incoming = incoming;
        while let Some(conn) = futures::StreamExt::next(&mut incoming).await {
            let from_manager = conn.as_ref().is_ok_and(|c| {
                c.peer_info()
                    .identity
                    .as_ref()
                    .is_some_and(|id| id.role == Role::Manager)
            });
            let to = if from_manager {
                &managers_tx
            } else {
                &others_tx
            };
            if to.send(conn).await.is_err() {
                return;
            }
        }
    });
    let managers = raft_runtime.spawn(serve(
        router.clone(),
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(managers_rx)),
        stop.clone(),
    ));
    Ok(tokio::spawn(async move {
        serve(
            router,
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(others_rx)),
            stop,
        )
        .await;
        split.abort();
        let _ = managers.await;
    }))
}
