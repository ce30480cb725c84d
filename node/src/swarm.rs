//! The swarm lifecycle of this node: init, join, resume after a restart, leave, stop.
//!
//! In a swarm every node serves its mutual-TLS port (`net.rs`) and runs the worker agent. A
//! manager also runs the manager (Raft + roles) and serves the dispatcher on a private unix
//! socket too: its own agent uses that while the local manager leads, and otherwise reaches the
//! leader over mutual TLS like any worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use shoal_manager::controlapi::ActiveManager;
use shoal_manager::leader::LeaderLink;
use shoal_manager::raft::keys::{self, UnlockKey};
use shoal_manager::roles::InitSettings;
use shoal_manager::{Manager, ManagerConfig};
use shoal_proto::{membership_client::MembershipClient, IssueCertificateRequest};
use shoal_tls::{LiveCert, NodeKey, Role, RootCa};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::describe::{advertise_addr, describe};
use super::identity::{Identity, Membership};
use crate::manager_link::{dispatcher_connector, join_raft, serve_local_dispatcher};
use crate::{net, renew, Daemon};

pub const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use `shoal swarm \
     leave` to leave this swarm and join another one.";
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm.";
pub const LEAVE_LAST_MANAGER: &str = "You are attempting to leave the swarm on a node that is \
     participating as a manager. Removing the last manager erases all current state of the \
     swarm. Use `--force` to ignore this message.";
pub const LEAVE_MANAGER: &str = "You are attempting to leave the swarm on a node that is \
     participating as a manager. Demote it first (`shoal node demote` on another manager) so \
     the remaining managers keep their quorum, or use `--force` to ignore this message.";

/// What runs while the node is in a swarm.
struct Running {
    manager: Option<Manager>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct SwarmState {
    pub identity: Identity,
    running: Option<Running>,
    /// The unlock key this manager was unlocked with (autolock), for restarting its manager.
    unlock_key: Option<UnlockKey>,
}

impl SwarmState {
    pub fn new(identity: Identity) -> Self {
        SwarmState {
            identity,
            running: None,
            unlock_key: None,
        }
    }

    pub fn manager(&self) -> Option<&Manager> {
        self.running.as_ref().and_then(|r| r.manager.as_ref())
    }
}

/// How `start` came about.
enum Start<'a> {
    /// `swarm init`: write the cluster, its CA, certificate lifetime, address pool and unlock
    /// key.
    Init(&'a RootCa, InitSettings),
    /// `swarm join` as a manager: become a Raft voter.
    JoinManager,
    /// `swarm init --force-new-cluster`: this manager alone, keeping the state.
    ForceNewCluster,
    /// A restart, or a worker's join: just run.
    Resume,
}

/// Starts what a swarm member runs; see the module documentation.
async fn start(daemon: &Arc<Daemon>, state: &mut SwarmState, how: Start<'_>) -> anyhow::Result<()> {
    let Some(membership) = state.identity.swarm.clone() else {
        return Ok(());
    };
    let node_id = state.identity.node_id.clone();
    let description = describe(
        &daemon.containerd.version().await.unwrap_or_default(),
        &daemon.args.containerd.display().to_string(),
    );
    let cert = LiveCert::new(net::load_cert(&daemon.args.data_dir)?)?;
    // Raft's streams need keepalive pings to notice a peer that vanished (see the manager's
    // `raft/grpc.rs`); forwarded calls have their own deadlines (`leader.rs`).
    let raft_channels = net::manager_channels(&cert, Some(shoal_manager::raft::grpc::KEEPALIVE))?;
    let channels = net::manager_channels(&cert, None)?;
    *daemon.cert.write().unwrap_or_else(|e| e.into_inner()) = Some(cert.clone());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut manager = None;
    if membership.manager {
        let m = Manager::start(ManagerConfig {
            raft_dir: daemon.raft_dir(),
            raft_id: membership.raft_id,
            addr: membership.advertise_addr.clone(),
            join: matches!(how, Start::JoinManager),
            force_new_cluster: matches!(how, Start::ForceNewCluster),
            heartbeat_period: daemon.args.dispatcher_heartbeat,
            channels: raft_channels,
            // With `init --autolock` the new log is wrapped with the key from the start.
            unlock_key: match &how {
                Start::Init(_, settings) => settings.unlock_key.clone(),
                _ => state.unlock_key.clone(),
            },
        })
        .await
        .with_context(|| {
            format!(
                "cannot start the manager from {}",
                daemon.raft_dir().display()
            )
        })?;
        tasks.push(serve_local_dispatcher(daemon, &m, stop_rx.clone())?);
        if let Start::Init(ca, settings) = &how {
            // Before the agent registers this node as a plain worker.
            m.bootstrap(
                &node_id,
                &membership.advertise_addr,
                description.clone(),
                ca,
                settings,
            )
            .await?;
        }
        *daemon
            .manager_slot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(ActiveManager {
            store: m.store().clone(),
            node_id: node_id.clone(),
            leader: LeaderLink::new(m.raft().clone(), channels.clone()),
        });
        manager = Some(m);
    }
    tasks.push(
        net::serve(
            daemon,
            &membership.listen_addr,
            cert.clone(),
            manager.as_ref(),
            stop_rx.clone(),
        )
        .await?,
    );
    if let (Start::JoinManager, Some(m)) = (&how, manager.as_ref()) {
        join_raft(&membership, &node_id, m, &cert).await?;
    }

    let managers = Arc::new(Mutex::new(membership.managers.clone()));
    let role_changed = Arc::new(tokio::sync::Notify::new());
    let observer: shoal_worker::agent::SessionObserver = {
        let (managers, role_changed) = (managers.clone(), role_changed.clone());
        let known = daemon.managers.clone();
        Arc::new(move |msg: &shoal_proto::SessionMessage| {
            if !msg.managers.is_empty() {
                *managers.lock().unwrap_or_else(|e| e.into_inner()) = msg.managers.clone();
            }
            if msg.renew_certificate {
                role_changed.notify_one();
            }
            known.replace(&msg.manager_ids);
        })
    };
    let local_raft = manager.as_ref().map(|m| m.raft().clone());
    let renewal = renew::run(
        daemon.clone(),
        cert.clone(),
        local_raft.clone(),
        managers.clone(),
        role_changed,
        stop_rx.clone(),
    );
    let renewing = daemon.clone();
    tasks.push(tokio::spawn(async move {
        if let Some(role) = renewal.await {
            // Restarting the swarm services stops this task too: do it from another.
            tokio::spawn(async move {
                if let Err(e) = switch_role(&renewing, role).await {
                    warn!(error = %e, "could not switch to the new role");
                }
            });
        }
    }));
    let cfg = shoal_worker::agent::AgentConfig {
        node_id: node_id.clone(),
        addr: membership.advertise_addr.clone(),
        description,
        data_dir: daemon.args.data_dir.join("worker"),
        on_session_message: Some(observer),
    };
    let connector = dispatcher_connector(daemon, node_id.clone(), local_raft, managers, cert)?;
    let executor = daemon.executor.clone();
    let network = task_network(daemon, &membership.advertise_addr).await?;
    tasks.push(tokio::spawn(async move {
        if let Err(e) = shoal_worker::agent::run(cfg, executor, network, connector, stop_rx).await {
            warn!(error = %e, "agent stopped");
        }
    }));
    // Last, once nothing can fail: `halt`, which detaches, only undoes a start that finished.
    if let Some(m) = &manager {
        daemon.metrics.attach_manager(m);
    }
    state.running = Some(Running {
        manager,
        stop,
        tasks,
    });
    info!(node = %node_id, manager = membership.manager, "swarm services started");
    Ok(())
}

/// The node's task networking, built once: the outbound bridge and the DNS server outlive role
/// changes, as the tasks do.
async fn task_network(
    daemon: &Daemon,
    advertise_addr: &str,
) -> anyhow::Result<Arc<shoal_worker::network::NodeNetwork>> {
    let underlay = advertise_addr
        .parse::<std::net::SocketAddr>()
        .ok()
        .and_then(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        });
    let cfg = shoal_worker::network::NetworkConfig {
        bridge: daemon.args.bridge.clone(),
        bip: daemon.args.bip,
        netns_dir: daemon.args.data_dir.join("netns"),
        underlay,
        dns_port: 53,
    };
    let network = daemon
        .network
        .get_or_try_init(|| shoal_worker::network::NodeNetwork::start(cfg))
        .await
        .with_context(|| {
            format!(
                "cannot set up task networking (outbound bridge {} with {})",
                daemon.args.bridge, daemon.args.bip
            )
        })?;
    Ok(network.clone())
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
    daemon.metrics.detach_manager();
    if let Some(m) = running.manager {
        m.shutdown().await;
    }
    *daemon.cert.write().unwrap_or_else(|e| e.into_inner()) = None;
    let _ = std::fs::remove_file(daemon.dispatcher_socket());
}

/// At daemon start: rejoin the swarm recorded in node.json. A manager whose log is locked with
/// the unlock key (autolock) waits, swarm side and all, for `swarm unlock`.
pub async fn resume(daemon: &Arc<Daemon>) -> anyhow::Result<()> {
    let mut state = daemon.swarm.lock().await;
    let manager = state.identity.swarm.as_ref().is_some_and(|m| m.manager);
    if manager && keys::is_locked(&daemon.raft_dir())? {
        daemon.locked.set(true);
        warn!("{}", crate::lock::LOCKED);
        return Ok(());
    }
    start(daemon, &mut state, Start::Resume).await
}

/// `swarm unlock`: checks `key` against the locked log's key file, then starts the manager and
/// the agent as a restart would. A wrong key changes nothing: the node stays locked.
pub async fn unlock(daemon: &Arc<Daemon>, key: &str) -> Result<(), tonic::Status> {
    let mut state = daemon.swarm.lock().await;
    if state.identity.swarm.is_none() {
        return Err(tonic::Status::failed_precondition(NOT_IN_SWARM));
    }
    if !daemon.locked.is_locked() {
        return Err(tonic::Status::failed_precondition(crate::lock::NOT_LOCKED));
    }
    let key: UnlockKey = key
        .parse()
        .map_err(|e: keys::KeyError| tonic::Status::invalid_argument(e.to_string()))?;
    let (dir, candidate) = (daemon.raft_dir(), key.clone());
    tokio::task::spawn_blocking(move || keys::open_data_key(&dir, Some(&candidate), true))
        .await
        .map_err(|e| tonic::Status::internal(format!("checking the unlock key failed: {e}")))?
        .map_err(|e| match e {
            keys::KeyError::WrongKey => tonic::Status::invalid_argument(e.to_string()),
            other => tonic::Status::internal(other.to_string()),
        })?;
    state.unlock_key = Some(key);
    if let Err(e) = start(daemon, &mut state, Start::Resume).await {
        halt(daemon, &mut state).await;
        return Err(tonic::Status::internal(format!(
            "the key is right but the swarm could not start: {e:#}"
        )));
    }
    daemon.locked.set(false);
    info!("swarm unlocked");
    Ok(())
}

pub async fn stop(daemon: &Daemon) {
    let mut state = daemon.swarm.lock().await;
    halt(daemon, &mut state).await;
}

/// Removes what a swarm membership leaves on disk (Raft log, certificates).
fn forget_swarm(daemon: &Daemon) -> std::io::Result<()> {
    for dir in [daemon.raft_dir(), net::certs_dir(&daemon.args.data_dir)] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

/// Runs `start`; on failure undoes it, so a failed init or join leaves the node as it was.
async fn start_or_undo(
    daemon: &Arc<Daemon>,
    state: &mut SwarmState,
    how: Start<'_>,
) -> Result<(), tonic::Status> {
    let outcome = async {
        start(daemon, state, how).await?;
        state.identity.save(&daemon.args.data_dir)
    }
    .await;
    if let Err(e) = outcome {
        halt(daemon, state).await;
        state.identity.swarm = None;
        state.unlock_key = None;
        let _ = forget_swarm(daemon);
        return Err(tonic::Status::internal(format!("{e:#}")));
    }
    Ok(())
}

fn random_raft_id() -> u64 {
    rand::thread_rng().gen_range(1..u64::MAX)
}

pub struct InitOutcome {
    pub node_id: String,
    pub join_command: String,
    /// With `--autolock`: the key `swarm unlock` takes.
    pub unlock_key: String,
}

pub async fn init(
    daemon: &Arc<Daemon>,
    advertise: &str,
    listen: &str,
    settings: InitSettings,
    force_new_cluster: bool,
    autolock: bool,
) -> Result<InitOutcome, tonic::Status> {
    if force_new_cluster && autolock {
        return Err(tonic::Status::invalid_argument(
            "--autolock cannot be combined with --force-new-cluster: recover the swarm first, \
             then turn autolock on with `shoal swarm update --autolock=true`",
        ));
    }
    let cert_expiry = settings.cert_expiry;
    if force_new_cluster && daemon.swarm.lock().await.identity.swarm.is_some() {
        return force_new_cluster_here(daemon).await;
    }
    if cert_expiry < Duration::from_secs(3600) {
        return Err(tonic::Status::invalid_argument(format!(
            "--cert-expiry {} is too short: give at least 1h (the default is 90 days)",
            humantime::format_duration(cert_expiry)
        )));
    }
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
    // Leftovers of a crash mid-leave would resurrect the old swarm.
    forget_swarm(daemon)
        .map_err(|e| tonic::Status::internal(format!("cannot clear old swarm state: {e}")))?;
    let internal = |e: shoal_tls::TlsError| tonic::Status::internal(e.to_string());
    let ca = RootCa::generate(&shoal_manager::ids::new_id()).map_err(internal)?;
    ca.issue(&state.identity.node_id, Role::Manager, cert_expiry)
        .and_then(|cert| cert.save(&net::certs_dir(&daemon.args.data_dir)))
        .map_err(internal)?;
    state.identity.swarm = Some(Membership {
        manager: true,
        listen_addr: listen.to_string(),
        advertise_addr: addr.clone(),
        raft_id: random_raft_id(),
        managers: vec![addr.clone()],
    });
    let unlock_key = autolock
        .then(UnlockKey::generate)
        .transpose()
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let settings = InitSettings {
        unlock_key: unlock_key.clone(),
        ..settings
    };
    state.unlock_key = unlock_key.clone();
    start_or_undo(daemon, &mut state, Start::Init(&ca, settings)).await?;
    let mut outcome = init_outcome(&state, &addr);
    outcome.unlock_key = unlock_key.map(|k| k.to_string()).unwrap_or_default();
    Ok(outcome)
}

/// What `swarm init` answers: this node's ID and the command workers join with.
fn init_outcome(state: &SwarmState, manager_addr: &str) -> InitOutcome {
    let token = state
        .manager()
        .and_then(|m| {
            m.store()
                .view(|st| st.cluster.as_ref().map(|c| c.worker_join_token.clone()))
        })
        .unwrap_or_default();
    InitOutcome {
        node_id: state.identity.node_id.clone(),
        join_command: shoal_manager::tokens::join_command(&token, manager_addr),
        unlock_key: String::new(),
    }
}

/// `swarm join --token T MANAGER`: get a certificate with the token (the manager is trusted
/// by the CA digest the token carries), then run as a worker or a manager.
pub async fn join(
    daemon: &Arc<Daemon>,
    req: shoal_proto::SwarmJoinRequest,
) -> Result<(), tonic::Status> {
    let mut state = daemon.swarm.lock().await;
    if state.identity.swarm.is_some() {
        return Err(tonic::Status::failed_precondition(ALREADY_IN_SWARM));
    }
    let token = shoal_manager::tokens::parse(&req.token)
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let listen = if req.listen_addr.is_empty() {
        "0.0.0.0:2377"
    } else {
        &req.listen_addr
    };
    let addr = advertise_addr(&req.advertise_addr, listen)
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let remote = if req.remote_addr.contains(':') {
        req.remote_addr.clone()
    } else {
        format!("{}:2377", req.remote_addr)
    };
    let internal = |e: shoal_tls::TlsError| tonic::Status::internal(e.to_string());
    let config = Arc::new(shoal_tls::bootstrap_client_config(token.ca_digest).map_err(internal)?);
    let channel = shoal_tls::connect(&remote, config, Role::Manager.server_name())
        .await
        .map_err(|e| {
            tonic::Status::unavailable(format!(
                "cannot reach a manager of the swarm at {remote}: {e}; check the address and \
                 that the manager's port is reachable from this node"
            ))
        })?;
    let key = NodeKey::generate().map_err(internal)?;
    let description = describe(
        &daemon.containerd.version().await.unwrap_or_default(),
        &daemon.args.containerd.display().to_string(),
    );
    let resp = MembershipClient::new(channel)
        .issue_certificate(IssueCertificateRequest {
            token: req.token.clone(),
            csr_pem: key.csr_pem().map_err(internal)?,
            addr: addr.clone(),
            description: Some(description),
        })
        .await
        .map_err(|s| {
            tonic::Status::new(
                s.code(),
                format!("the manager refused to join this node: {}", s.message()),
            )
        })?
        .into_inner();
    token.ca_digest.check_pem(&resp.ca_pem).map_err(internal)?;
    let cert = key
        .into_node_cert(resp.cert_pem, resp.ca_pem)
        .map_err(internal)?;
    forget_swarm(daemon)
        .map_err(|e| tonic::Status::internal(format!("cannot clear old swarm state: {e}")))?;
    cert.save(&net::certs_dir(&daemon.args.data_dir))
        .map_err(internal)?;
    let manager = resp.role == "manager";
    state.identity.node_id = resp.node_id;
    let mut managers = resp.managers;
    if !managers.contains(&remote) {
        managers.insert(0, remote);
    }
    state.identity.swarm = Some(Membership {
        manager,
        listen_addr: listen.to_string(),
        advertise_addr: addr,
        raft_id: if manager { random_raft_id() } else { 0 },
        managers,
    });
    let how = if manager {
        Start::JoinManager
    } else {
        Start::Resume
    };
    start_or_undo(daemon, &mut state, how).await
}

pub async fn leave(daemon: &Arc<Daemon>, force: bool) -> Result<(), tonic::Status> {
    let mut state = daemon.swarm.lock().await;
    let Some(membership) = state.identity.swarm.clone() else {
        return Err(tonic::Status::failed_precondition(NOT_IN_SWARM));
    };
    if membership.manager && !force {
        let voters = state
            .manager()
            .map_or(1, |m| m.raft().status().voters.len());
        let msg = if voters <= 1 {
            LEAVE_LAST_MANAGER
        } else {
            LEAVE_MANAGER
        };
        return Err(tonic::Status::failed_precondition(msg));
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
    forget_swarm(daemon)
        .map_err(|e| tonic::Status::internal(format!("cannot remove swarm state: {e}")))?;
    state.identity.swarm = None;
    state.unlock_key = None;
    daemon.locked.set(false);
    state
        .identity
        .save(&daemon.args.data_dir)
        .map_err(|e| tonic::Status::internal(format!("{e:#}")))?;
    info!("left the swarm");
    Ok(())
}

/// After a promotion or demotion (the renewed certificate carries the new role): restart the
/// swarm services in the new role. A promoted node joins the Raft cluster with a new Raft ID;
/// a demoted one drops its copy of the log.
///
/// Boxed: it starts the renewal task that calls it, and the compiler needs the cycle cut.
pub fn switch_role(
    daemon: &Arc<Daemon>,
    role: Role,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + '_>> {
    Box::pin(switch_role_inner(daemon, role))
}

async fn switch_role_inner(daemon: &Arc<Daemon>, role: Role) -> anyhow::Result<()> {
    let mut state = daemon.swarm.lock().await;
    let Some(mut membership) = state.identity.swarm.clone() else {
        return Ok(());
    };
    let manager = role == Role::Manager;
    if membership.manager == manager {
        return Ok(());
    }
    info!(
        role = role.as_str(),
        "role changed; restarting swarm services"
    );
    halt(daemon, &mut state).await;
    membership.manager = manager;
    membership.raft_id = if manager { random_raft_id() } else { 0 };
    if !manager {
        let dir = daemon.raft_dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    state.identity.swarm = Some(membership);
    state.identity.save(&daemon.args.data_dir)?;
    let how = if manager {
        Start::JoinManager
    } else {
        Start::Resume
    };
    start(daemon, &mut state, how).await
}

/// `swarm init --force-new-cluster` on a manager that lost its quorum: restart its Raft log
/// as a cluster of this manager alone, keeping every service, task and node. The other
/// managers' old Raft IDs are retired; they can join again with a manager token.
async fn force_new_cluster_here(daemon: &Arc<Daemon>) -> Result<InitOutcome, tonic::Status> {
    let mut state = daemon.swarm.lock().await;
    let Some(mut membership) = state.identity.swarm.clone() else {
        return Err(tonic::Status::failed_precondition(NOT_IN_SWARM));
    };
    if !membership.manager {
        return Err(tonic::Status::failed_precondition(
            "--force-new-cluster recovers a swarm from one of its managers; this node is a \
             worker. Run it on a surviving manager.",
        ));
    }
    if daemon.locked.is_locked() {
        // Its log cannot be read until then.
        return Err(tonic::Status::failed_precondition(crate::lock::LOCKED));
    }
    halt(daemon, &mut state).await;
    membership.managers = vec![membership.advertise_addr.clone()];
    state.identity.swarm = Some(membership.clone());
    let started = async {
        start(daemon, &mut state, Start::ForceNewCluster).await?;
        state.identity.save(&daemon.args.data_dir)
    }
    .await;
    if let Err(e) = started {
        // The log is intact: a plain restart of the daemon resumes as before.
        halt(daemon, &mut state).await;
        return Err(tonic::Status::internal(format!(
            "could not recover the swarm: {e:#}"
        )));
    }
    Ok(init_outcome(&state, &membership.advertise_addr))
}
