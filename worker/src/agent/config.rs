//! What the agent is given ([`AgentConfig`]) and the errors it returns: the bottom of the
//! agent's modules, imported by all of them and importing none.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::NodeDescription;

/// Longest wait for one dispatcher call.
pub(super) const RPC_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentConfig {
    pub node_id: String,
    /// Address other nodes reach this one at, told to the dispatcher.
    pub addr: String,
    pub description: NodeDescription,
    /// The worker data directory; the same one the [`crate::executor::Executor`] was given.
    pub data_dir: PathBuf,
    /// Told of every session message: the managers' addresses and whether the node's role
    /// changed are the daemon's business, not the agent's.
    pub on_session_message: Option<SessionObserver>,
}

/// See [`AgentConfig::on_session_message`].
pub type SessionObserver = Arc<dyn Fn(&shoal_proto::SessionMessage) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the dispatcher at {target}: {reason}; is a manager running?")]
    Connect { target: String, reason: String },
    #[error(
        "the agent's data directory {} does not match the executor's {}; give both the same \
         worker data directory", .agent.display(), .executor.display()
    )]
    DataDirMismatch { agent: PathBuf, executor: PathBuf },
}
