//! The node's side of the cluster network: its certificate, the mutual-TLS port other nodes
//! call, and the channels it opens to managers.
//!
//! Every node serves the Agent service (task logs, for managers only). A manager also serves
//! Control and Raft (managers only), the Dispatcher (any node, for itself) and Membership
//! (joining needs no certificate: the join token is the credential).

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Channels to other managers, verified as managers of this cluster, presenting our cert.
pub fn manager_channels(cert: &Arc<LiveCert>) -> anyhow::Result<Arc<dyn ChannelFactory>> {
    let config = Arc::new(shoal_tls::client_config_live(cert.clone())?);
    Ok(Arc::new(move |addr: &str| {
        shoal_tls::connect_lazy(addr, config.clone(), Role::Manager.server_name()).map_err(|e| {
            TransportError::Channel {
                addr: addr.to_string(),
                reason: e.to_string(),
            }
        })
    }))
}

/// Serves the node's TCP port until `stop` flips.
pub async fn serve(
    daemon: &Arc<Daemon>,
    listen: &str,
    cert: Arc<LiveCert>,
    manager: Option<&Manager>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--listen-addr)"))?;
    let config = Arc::new(shoal_tls::server_config_live(cert, ClientAuth::Optional)?);
    let incoming = TlsIncoming::new(listener, config);
    let agent = shoal_worker::agent_service::AgentService::new(daemon.executor.clone());
    let mut router = tonic::transport::Server::builder()
        .layer(daemon.metrics.api_layer("cluster"))
        .add_service(InterceptedService::new(
            AgentServer::new(agent).max_decoding_message_size(MAX_REQUEST_BYTES),
            RequireRole(Role::Manager),
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
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            warn!(error = %e, "cluster port server failed");
        }
    }))
}
