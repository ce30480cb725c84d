//! The swarm lifecycle of this node: init, resume after a restart, leave, stop.
//!
//! A manager node runs three things: the manager (Raft + roles), a dispatcher server on a
//! private unix socket, and the worker agent, which reaches that dispatcher through gRPC just
//! as a remote worker would.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_manager::controlapi::ActiveManager;
use shoal_manager::{Manager, ManagerConfig};
use shoal_proto::dispatcher_server::DispatcherServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

use super::describe::{advertise_addr, describe};
use super::identity::{Identity, Membership};
use super::Daemon;

pub const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use `shoal swarm \
     leave` to leave this swarm and join another one.";
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm.";
pub const LEAVE_LAST_MANAGER: &str = "You are attempting to leave the swarm on a node that is \
     participating as a manager. Removing the last manager erases all current state of the \
     swarm. Use `--force` to ignore this message.";

/// What runs while the node is in a swarm.
struct Running {
    manager: Option<Manager>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct SwarmState {
    pub identity: Identity,
    running: Option<Running>,
}

impl SwarmState {
    pub fn new(identity: Identity) -> Self {
        SwarmState {
            identity,
            running: None,
        }
    }
}

/// Starts the manager (when this node is one), its dispatcher server, and the agent.
async fn start(daemon: &Arc<Daemon>, state: &mut SwarmState) -> anyhow::Result<()> {
    let Some(membership) = state.identity.swarm.clone() else {
        return Ok(());
    };
    let node_id = state.identity.node_id.clone();
    let description = describe(
        &daemon.containerd.version().await.unwrap_or_default(),
        &daemon.args.containerd.display().to_string(),
    );
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut manager = None;
    if membership.manager {
        let m = Manager::start(ManagerConfig::new(daemon.raft_dir()))
            .await
            .with_context(|| {
                format!(
                    "cannot start the manager from {}",
                    daemon.raft_dir().display()
                )
            })?;
        let sock = daemon.dispatcher_socket();
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock)
            .with_context(|| format!("cannot listen on {}", sock.display()))?;
        let server =
            tonic::transport::Server::builder().add_service(DispatcherServer::new(m.dispatcher()));
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.changed().await;
            };
            if let Err(e) = server
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                .await
            {
                warn!(error = %e, "dispatcher server failed");
            }
        }));
        // Before the agent registers this node as a plain worker: the first manager writes
        // the cluster and itself (a no-op when the log already has them).
        m.bootstrap(&node_id, &membership.advertise_addr, description.clone())
            .await?;
        *daemon
            .manager_slot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(ActiveManager {
            store: m.store().clone(),
            node_id: node_id.clone(),
        });
        manager = Some(m);
    }

    let cfg = shoal_worker::agent::AgentConfig {
        node_id: node_id.clone(),
        addr: membership.advertise_addr.clone(),
        description,
        data_dir: daemon.args.data_dir.join("worker"),
    };
    let dispatcher = daemon.dispatcher_socket();
    let executor = daemon.executor.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = shoal_worker::agent::run(cfg, executor, dispatcher, stop_rx).await {
            warn!(error = %e, "agent stopped");
        }
    }));
    state.running = Some(Running {
        manager,
        stop,
        tasks,
    });
    info!(node = %node_id, manager = membership.manager, "swarm services started");
    Ok(())
}

/// Stops everything `start` started. Containers keep running; the log stays on disk.
async fn halt(daemon: &Daemon, state: &mut SwarmState) {
    let Some(running) = state.running.take() else {
        return;
    };
    let _ = running.stop.send(true);
    for t in running.tasks {
        if tokio::time::timeout(Duration::from_secs(15), t)
            .await
            .is_err()
        {
            warn!("a swarm task did not stop within 15s");
        }
    }
    *daemon
        .manager_slot
        .write()
        .unwrap_or_else(|e| e.into_inner()) = None;
    if let Some(m) = running.manager {
        m.shutdown().await;
    }
    let _ = std::fs::remove_file(daemon.dispatcher_socket());
}

/// At daemon start: rejoin the swarm recorded in node.json.
pub async fn resume(daemon: &Arc<Daemon>) -> anyhow::Result<()> {
    let mut state = daemon.swarm.lock().await;
    start(daemon, &mut state).await
}

pub async fn stop(daemon: &Daemon) {
    let mut state = daemon.swarm.lock().await;
    halt(daemon, &mut state).await;
}

pub struct InitOutcome {
    pub node_id: String,
    pub join_command: String,
}

pub async fn init(
    daemon: &Arc<Daemon>,
    advertise: &str,
    listen: &str,
) -> Result<InitOutcome, tonic::Status> {
    let mut state = daemon.swarm.lock().await;
    if state.identity.swarm.is_some() {
        return Err(tonic::Status::failed_precondition(ALREADY_IN_SWARM));
    }
    let listen = if listen.is_empty() {
        "0.0.0.0:2377"
    } else {
        listen
    };
    let addr = advertise_addr(advertise, listen)
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    if state.identity.node_id.is_empty() {
        state.identity.node_id = shoal_manager::ids::new_id();
    }
    // A raft dir left behind by a crash mid-leave would resurrect the old swarm.
    let raft_dir = daemon.raft_dir();
    if raft_dir.exists() {
        std::fs::remove_dir_all(&raft_dir).map_err(|e| {
            tonic::Status::internal(format!("cannot clear {}: {e}", raft_dir.display()))
        })?;
    }
    state.identity.swarm = Some(Membership {
        manager: true,
        listen_addr: listen.to_string(),
        advertise_addr: addr.clone(),
    });
    let outcome = async {
        start(daemon, &mut state).await?;
        let m = state.manager().context("manager did not start")?;
        let token = m
            .store()
            .view(|st| st.cluster.as_ref().map(|c| c.worker_join_token.clone()))
            .unwrap_or_default();
        state.identity.save(&daemon.args.data_dir)?;
        anyhow::Ok(InitOutcome {
            node_id: state.identity.node_id.clone(),
            join_command: format!("shoal swarm join --token {token} {addr}"),
        })
    }
    .await;
    match outcome {
        Ok(o) => Ok(o),
        Err(e) => {
            // Undo everything, so a failed init leaves the node as it was.
            halt(daemon, &mut state).await;
            state.identity.swarm = None;
            let _ = std::fs::remove_dir_all(&raft_dir);
            Err(tonic::Status::internal(format!("{e:#}")))
        }
    }
}

pub async fn leave(daemon: &Arc<Daemon>, force: bool) -> Result<(), tonic::Status> {
    let mut state = daemon.swarm.lock().await;
    let Some(membership) = state.identity.swarm.clone() else {
        return Err(tonic::Status::failed_precondition(NOT_IN_SWARM));
    };
    if membership.manager && !force {
        return Err(tonic::Status::failed_precondition(LEAVE_LAST_MANAGER));
    }
    halt(daemon, &mut state).await;
    // The node's tasks belong to the swarm it leaves: stop and remove them and their logs.
    let observed = daemon.executor.list().await.map_err(|e| {
        tonic::Status::unavailable(format!("cannot list this node's containers: {e}"))
    })?;
    for c in observed {
        let _ = daemon
            .executor
            .stop(&c.task_id, None, Duration::from_secs(10))
            .await;
        if let Err(e) = daemon.executor.remove(&c.task_id).await {
            warn!(task = %c.task_id, error = %e, "could not remove container");
        }
        let _ = daemon.executor.remove_logs(&c.task_id);
    }
    let raft_dir = daemon.raft_dir();
    if raft_dir.exists() {
        std::fs::remove_dir_all(&raft_dir).map_err(|e| {
            tonic::Status::internal(format!("cannot remove {}: {e}", raft_dir.display()))
        })?;
    }
    state.identity.swarm = None;
    state
        .identity
        .save(&daemon.args.data_dir)
        .map_err(|e| tonic::Status::internal(format!("{e:#}")))?;
    info!("left the swarm");
    Ok(())
}

impl SwarmState {
    pub fn manager(&self) -> Option<&Manager> {
        self.running.as_ref().and_then(|r| r.manager.as_ref())
    }
}

/// `swarm join`: not yet able to reach another manager (the multi-node issue).
pub async fn join(
    daemon: &Arc<Daemon>,
    req: shoal_proto::SwarmJoinRequest,
) -> Result<(), tonic::Status> {
    let state = daemon.swarm.lock().await;
    if state.identity.swarm.is_some() {
        return Err(tonic::Status::failed_precondition(ALREADY_IN_SWARM));
    }
    let _ = req;
    Err(tonic::Status::unimplemented(
        "joining another manager is not available in this build yet",
    ))
}
