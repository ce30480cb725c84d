//! `shoal daemon`: the per-host process (swarmkit's `node`). Serves the client API on a unix
//! socket, runs the worker agent against containerd, and — once the node is in a swarm as a
//! manager — the Raft log and the manager roles.
//!
//! This crate composes the manager and worker libraries into one process; the `shoal` binary
//! parses the daemon's flags into a [`Config`] and calls [`run`]. Like a binary, it reports
//! failures with `anyhow` and context: its errors end at the daemon's exit or in a gRPC status.

mod access;
pub use access::DEFAULT_GROUP;
mod api;
mod describe;
mod identity;
// Public for the hollow nodes of the scale benchmark (`shoal-tests`), which find the leader as
// the agent does.
pub mod leader_search;
mod limits;
mod lock;
mod logs;
mod manager_link;
mod metrics_http;
mod net;
mod renew;
mod swarm;
mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use shoal_manager::controlapi::{ControlApi, ManagerSlot};
use shoal_proto::{
    agent_server::AgentServer, control_server::ControlServer, daemon_server::DaemonServer,
};
use shoal_worker::containerd::Containerd;
use shoal_worker::image::RegistryTls;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::info;

/// How `shoal daemon` runs (its flags, parsed by the CLI).
#[derive(Debug, Clone)]
pub struct Config {
    /// The client API's unix socket.
    pub socket: PathBuf,
    /// Where the daemon keeps its state (Raft log, node identity, task logs).
    pub data_dir: PathBuf,
    /// containerd's gRPC socket.
    pub containerd: PathBuf,
    /// containerd namespace for Shoal's images and containers.
    pub containerd_namespace: String,
    /// How often workers heartbeat their manager (a node silent for three periods is down).
    pub dispatcher_heartbeat: std::time::Duration,
    /// Where to serve Prometheus metrics (`HOST:PORT`), when at all.
    pub metrics_addr: Option<String>,
    /// The outbound bridge tasks reach the outside through (`--bridge`).
    pub bridge: String,
    /// Its address and subnet (`--bip`).
    pub bip: ipnet::Ipv4Net,
    /// The group whose members may use the API socket (`--group`, docker's `-G`).
    pub group: String,
    /// Where registries' CA certificates are (`DIR/HOST:PORT/ca.crt`).
    pub registry_certs_dir: PathBuf,
}

/// Everything the API handlers and the swarm lifecycle share.
pub struct Daemon {
    pub args: Config,
    pub containerd: Containerd,
    pub executor: Arc<shoal_worker::executor::ContainerdExecutor>,
    /// Task networking, built when the node first starts its swarm services (a daemon outside a
    /// swarm runs no tasks and makes no bridge).
    pub network: tokio::sync::OnceCell<Arc<shoal_worker::network::NodeNetwork>>,
    pub manager_slot: ManagerSlot,
    /// The swarm this node belongs to, when it does. A mutex (not a lock per field) because
    /// init, leave and startup must each see and change the whole of it.
    pub swarm: tokio::sync::Mutex<swarm::SwarmState>,
    /// This node's certificate while it is in a swarm (renewed in place).
    pub cert: std::sync::RwLock<Option<Arc<shoal_tls::LiveCert>>>,
    /// The node's metrics registry (served with `--metrics-addr`; kept up to date either way).
    pub metrics: Arc<shoal_manager::metrics::NodeMetrics>,
    /// The swarm's managers as the leader last said (`SessionMessage.manager_ids`): the only
    /// callers this node's Agent service admits (`net::KnownManagers`).
    pub managers: net::ManagerIds,
    /// Set while this manager waits for `swarm unlock` (autolock).
    pub locked: lock::LockFlag,
}

impl Daemon {
    pub fn raft_dir(&self) -> PathBuf {
        self.args.data_dir.join("raft")
    }

    pub fn dispatcher_socket(&self) -> PathBuf {
        self.args.data_dir.join("dispatcher.sock")
    }

    /// The worker's data directory: task logs and `/etc` files, local volumes.
    pub fn worker_dir(&self) -> PathBuf {
        worker_dir(&self.args.data_dir)
    }
}

fn worker_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("worker")
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only where a person reads the log, not in files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Binds the API socket, refusing to steal it from a daemon that is still running, and gives
/// it to root and `group` only.
async fn bind(path: &Path, group: &str) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another shoal daemon is already listening on {}; stop it first or pass another \
                 `-H unix:///PATH`",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    access::api_socket(path, group)?;
    Ok(listener)
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(args: Config) -> anyhow::Result<()> {
    init_tracing();
    limits::raise_open_files();
    let sock = args.socket.clone();
    access::private_dir(&args.data_dir)?;
    let identity = identity::Identity::load(&args.data_dir)?;
    // Bound before anything starts, so a taken address fails the start rather than later.
    let metrics_listener = match &args.metrics_addr {
        Some(addr) => Some(metrics_http::bind(addr).await?),
        None => None,
    };

    let containerd = Containerd::connect(&args.containerd, &args.containerd_namespace).await?;
    let bin_dir = args.data_dir.join("bin");
    let log_driver = shoal_worker::logdriver::install(&bin_dir)
        .with_context(|| format!("cannot install the log driver in {}", bin_dir.display()))?;
    let executor = Arc::new(
        shoal_worker::executor::ContainerdExecutor::new(
            containerd.clone(),
            worker_dir(&args.data_dir),
            log_driver,
        )
        .context("cannot set up the worker")?
        .with_registry_tls(RegistryTls {
            certs_dir: args.registry_certs_dir.clone(),
        }),
    );

    let daemon = Arc::new(Daemon {
        args: args.clone(),
        containerd,
        executor,
        network: tokio::sync::OnceCell::new(),
        manager_slot: ManagerSlot::default(),
        swarm: tokio::sync::Mutex::new(swarm::SwarmState::new(identity)),
        cert: Default::default(),
        metrics: Arc::new(shoal_manager::metrics::NodeMetrics::new()),
        managers: Default::default(),
        locked: lock::LockFlag::default(),
    });
    let metrics_server = metrics_listener.map(|l| metrics_http::spawn(l, daemon.metrics.clone()));
    swarm::resume(&daemon).await?;

    let listener = bind(&sock, &args.group).await?;
    info!(socket = %sock.display(), data_dir = %args.data_dir.display(), "shoal daemon listening");

    let logs = Arc::new(logs::NodeLogs::new(daemon.clone()));
    let control = ControlApi::new(daemon.manager_slot.clone(), logs);
    let locked = daemon.locked.clone();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail in a running process");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down");
    };
    tonic::transport::Server::builder()
        .layer(daemon.metrics.api_layer("local"))
        .add_service(
            DaemonServer::new(api::DaemonApi::new(daemon.clone()))
                .max_decoding_message_size(shoal_proto::MAX_REQUEST_BYTES),
        )
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ControlServer::new(control).max_decoding_message_size(shoal_proto::MAX_REQUEST_BYTES),
            move |req| locked.refuse_while_locked(req),
        ))
        .add_service(
            AgentServer::new(shoal_worker::agent_service::AgentService::new(
                daemon.executor.clone(),
            ))
            .max_decoding_message_size(shoal_proto::MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("the API server failed")?;

    // Containers keep running: a restarted daemon adopts them.
    swarm::stop(&daemon).await;
    if let Some(server) = metrics_server {
        server.abort();
    }
    let _ = std::fs::remove_file(&sock);
    Ok(())
}
