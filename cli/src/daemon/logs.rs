//! Task logs for `service logs`: read where the task ran. Every task of a single-node swarm
//! runs here; a task recorded on another node is refused with a clear message until nodes can
//! reach each other's Agent service (the multi-node issue).

use std::sync::Arc;

use shoal_manager::controlapi::{LogSource, LogStream};
use shoal_proto::TaskLogsRequest;
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
        if node_id != local {
            return Err(Status::unimplemented(format!(
                "logs of tasks on node {node_id} cannot be read from this node yet"
            )));
        }
        shoal_worker::agent_service::task_logs(&self.daemon.executor, req)
    }
}
