//! Calling a node's mutual-TLS port as another node would: its certificate as the daemon
//! stored it, client configs that present it, and gRPC clients over them. The trust tests use
//! these to present chosen (valid, stale, forged) certificates.

use std::path::PathBuf;
use std::sync::Arc;

use shoal_proto::control_client::ControlClient;
use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::raft_client::RaftClient;
use shoal_tls::{NodeCert, Role};
use tonic::transport::Channel;
use tonic::Status;

use crate::cluster::ClusterHost;

/// A single-threaded runtime for the test's own gRPC calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Where `host`'s daemon keeps its certificate, key and the cluster CA.
pub fn certs_dir(host: &ClusterHost) -> PathBuf {
    host.data_dir().join("certificates")
}

/// The node's own certificate, key and CA, as its daemon stored them.
pub fn node_cert(host: &ClusterHost) -> NodeCert {
    let dir = certs_dir(host);
    NodeCert::load(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// A config that presents `cert` (and trusts its CA), as a node's own would.
pub fn node_client_config(cert: &NodeCert) -> Arc<rustls::ClientConfig> {
    Arc::new(shoal_tls::client_config(cert).expect("client config"))
}

/// A channel over mutual TLS to the manager at `addr`, verifying it as a manager.
async fn manager_channel(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<Channel, Status> {
    shoal_tls::connect(addr, config, Role::Manager.server_name())
        .await
        .map_err(|e| Status::unavailable(format!("connect: {e}")))
}

/// A control API client to the manager at `addr`.
pub async fn control(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<ControlClient<Channel>, Status> {
    Ok(ControlClient::new(manager_channel(addr, config).await?))
}

/// A dispatcher client (worker sessions) to the manager at `addr`.
pub async fn dispatcher(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<DispatcherClient<Channel>, Status> {
    Ok(DispatcherClient::new(manager_channel(addr, config).await?))
}

/// A Raft transport client to the manager at `addr`.
pub async fn raft(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<RaftClient<Channel>, Status> {
    Ok(RaftClient::new(manager_channel(addr, config).await?))
}
