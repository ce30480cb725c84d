//! The worker agent, after swarmkit's: it holds a session with a manager's dispatcher, receives
//! the complete set of tasks assigned to this node, and drives each task through its lifecycle
//! on an [`Executor`], reporting every state it reaches. Its parts, each a module, import one
//! way (top to bottom):
//!
//! * [`run`] (here) composes them and owns the agent's start and stop;
//! * `session`: the dispatcher stream, heartbeats and reconnects;
//! * `worker`: the assignment set → one controller per task, adoption of what already runs,
//!   and removal of what left the set;
//! * `controller`: one task's lifecycle (prepare, start, wait, stop, remove);
//! * `dependencies`: the secrets and configs sent for the tasks, in memory only;
//! * `reporter`: status reports (batched, retried, only forward) and usage reports;
//! * `backoff` and `config`: what they all share.
//!
//! Containers keep running when the agent stops; the next start adopts them.

mod backoff;
mod config;
mod controller;
mod dependencies;
mod finished;
mod health;
mod reporter;
mod session;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::watch;
use tracing::info;

use crate::executor::Executor;
use crate::network::TaskNetworks;
use controller::Ctx;
use reporter::{Reporter, SessionHandle};
use worker::Worker;

pub use config::{AgentConfig, AgentError, SessionObserver};
pub use controller::DEFAULT_STOP_GRACE;
pub use reporter::USAGE_PERIOD;
pub use session::{Connect, ConnectFn};

/// Runs the agent until `shutdown` turns true (or its sender is dropped). Containers keep
/// running when it stops: the next start adopts them. `dispatcher` says how to reach the
/// dispatcher: a unix socket path, a client, or a [`ConnectFn`]; `network` builds the tasks'
/// networks.
pub async fn run(
    cfg: AgentConfig,
    executor: Arc<dyn Executor>,
    network: Arc<dyn TaskNetworks>,
    mut dispatcher: impl Connect,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    if cfg.data_dir != executor.data_dir() {
        return Err(AgentError::DataDirMismatch {
            agent: cfg.data_dir.clone(),
            executor: executor.data_dir().to_path_buf(),
        });
    }
    let reporter = Arc::new(Reporter::new(cfg.node_id.clone()));
    let ctx = Arc::new(Ctx::new(executor.clone(), network, reporter.clone()));
    let (session_tx, session_rx) = watch::channel::<Option<SessionHandle>>(None);
    let usage = tokio::spawn(reporter::usage_loop(
        cfg.node_id.clone(),
        executor.clone(),
        session_rx.clone(),
    ));
    let flusher = tokio::spawn(reporter.clone().flush_loop(session_rx));

    // What containerd already runs, before any session: those tasks must not start twice.
    let Some(adopted) = worker::adopt(executor.as_ref(), &mut shutdown).await else {
        flusher.abort();
        usage.abort();
        return Ok(());
    };
    info!(node = %cfg.node_id, containers = adopted.len(), "agent starting");
    let mut worker = Worker::new(ctx, adopted);

    session::run_sessions(
        &cfg,
        &mut dispatcher,
        &mut worker,
        &session_tx,
        &mut shutdown,
    )
    .await;

    info!(node = %cfg.node_id, "agent stopping; containers keep running");
    // Controllers stop first so that their last reports are in the final flush.
    worker.abort_all();
    let last_session = session_tx.borrow().clone();
    if let Some(handle) = last_session {
        reporter.final_flush(&handle).await;
    }
    flusher.abort();
    usage.abort();
    Ok(())
}
