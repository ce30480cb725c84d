//! Task logs for `service logs`: read where the task ran — here, or on another node through
//! its Agent service over mutual TLS (the node is verified by its node ID).

use std::sync::Arc;

use futures::StreamExt;
use shoal_manager::controlapi::{LogSource, LogStream};
use shoal_proto::{agent_client::AgentClient, TaskLogsRequest};
use tonic::Status;

use super::Daemon;

pub struct NodeLogs {
    daemon: Arc<Daemon>,
}

impl NodeLogs {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        NodeLogs { daemon }
    }
}

#[tonic::async_trait]
impl LogSource for NodeLogs {
    async fn task_logs(&self, node_id: &str, req: TaskLogsRequest) -> Result<LogStream, Status> {
        let local = self.daemon.swarm.lock().await.identity.node_id.clone();
        if node_id == local {
            return shoal_worker::agent_service::task_logs(&self.daemon.executor, req);
        }
        let addr = self
            .daemon
            .manager_slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|m| {
                m.store
                    .view(|st| st.nodes.get(node_id).map(|n| n.addr.clone()))
            })
            .filter(|a| !a.is_empty())
            .ok_or_else(|| Status::not_found(format!("node {node_id} has no known address")))?;
        let cert = self
            .daemon
            .cert
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Status::unavailable("this node has no certificate yet"))?;
        let config =
            shoal_tls::client_config_live(cert).map_err(|e| Status::internal(e.to_string()))?;
        let channel = shoal_tls::connect(&addr, Arc::new(config), node_id)
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach node {node_id}: {e}")))?;
        let stream = AgentClient::new(channel).task_logs(req).await?.into_inner();
        Ok(Box::pin(stream.boxed()))
    }
}
