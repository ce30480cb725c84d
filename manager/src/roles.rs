//! Starting and stopping a manager: the Raft log, plus the writer roles that run beside it
//! while — and only while — this manager leads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::{
    store_action::Action, Cluster, ManagerStatus, Meta, Node, NodeAvailability, NodeDescription,
    NodeRole, NodeState, StoreAction,
};
use shoal_tls::RootCa;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::allocator::{self, PoolConfig};
use crate::autoscaler::{self, AutoscalerStats};
use crate::dispatcher::Dispatcher;
use crate::ids::now_ms;
use crate::orchestrator::reaper::DEFAULT_TASK_HISTORY_LIMIT;
use crate::raft::grpc::{ChannelFactory, GrpcTransport};
use crate::raft::keys::{self, UnlockKey};
use crate::raft::storage::DATA_FILE;
use crate::raft::{self, RaftConfig, RaftHandle, RaftStatus};
use crate::store::{Store, StoreError};
use crate::usage::UsageStore;
use crate::{orchestrator, scheduler, tokens};

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Raft(#[from] raft::RaftError),
    #[error("cannot set up the Raft transport: {0}")]
    Transport(#[from] raft::grpc::TransportError),
    #[error("this manager did not become the Raft leader within {0:?}")]
    NoLeader(Duration),
    #[error("could not write the initial cluster state: {0}")]
    Bootstrap(#[from] StoreError),
    #[error("could not create the cluster CA: {0}")]
    Ca(#[from] shoal_tls::TlsError),
    #[error(
        "could not allocate the ingress network from the address pool: {0}; choose another \
         --default-addr-pool"
    )]
    Ingress(String),
}

/// What `swarm init` decides for the new cluster.
#[derive(Debug, Clone)]
pub struct InitSettings {
    /// Lifetime of the node certificates the CA signs (`--cert-expiry`).
    pub cert_expiry: Duration,
    /// Where network subnets come from (`--default-addr-pool`…).
    pub addr_pool: PoolConfig,
    /// `--dispatcher-heartbeat` in ms; 0 = each manager's own `shoal daemon` setting.
    pub dispatcher_heartbeat_ms: u64,
    /// `--autolock`: the unlock key every manager's log is to be wrapped with.
    pub unlock_key: Option<UnlockKey>,
}

pub struct ManagerConfig {
    pub raft_dir: PathBuf,
    pub raft_id: u64,
    /// host:port where this manager's gRPC services (Raft among them) listen for peers.
    pub addr: String,
    /// Join an existing cluster (a new data dir waits for the leader's snapshot).
    pub join: bool,
    /// `swarm init --force-new-cluster`: restart this manager's existing Raft log as a
    /// one-manager cluster keeping all state. Set for that one start only, never when resuming.
    pub force_new_cluster: bool,
    pub heartbeat_period: Duration,
    /// Channels for the Raft transport to the other managers (mutual TLS and keepalive pings
    /// in the daemon).
    pub channels: Arc<dyn ChannelFactory>,
    /// The cluster's unlock key, for a Raft log locked with it (`swarm unlock`); a new log is
    /// wrapped with it from the start.
    pub unlock_key: Option<UnlockKey>,
}

pub struct Manager {
    store: Store,
    raft: RaftHandle,
    transport: GrpcTransport,
    dispatcher: Dispatcher,
    shutdown: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
    key_keeper: JoinHandle<()>,
    usage: UsageStore,
    autoscaler_stats: Arc<AutoscalerStats>,
}

/// The writer roles; started when this manager becomes leader, stopped when it stops being
/// one, so that exactly one manager writes (reconciling from the whole state each time).
async fn supervise(
    store: Store,
    dispatcher: Dispatcher,
    usage: UsageStore,
    autoscaler_stats: Arc<AutoscalerStats>,
    mut status: watch::Receiver<RaftStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut running: Option<(watch::Sender<bool>, Vec<JoinHandle<()>>)> = None;
    loop {
        // A new leader plans only from a complete store: once it has applied its term's first
        // entry, everything committed under earlier leaders is applied too. Planning earlier
        // would, for example, create again a task whose creation it has not applied yet.
        let leading = status.borrow_and_update().leader_ready;
        match (leading, running.is_some()) {
            (true, false) => {
                info!(
                    "leading: starting orchestrator, allocator, scheduler, autoscaler and \
                     dispatcher"
                );
                let (tx, rx) = watch::channel(false);
                let roles = vec![
                    tokio::spawn(orchestrator::run(store.clone(), rx.clone())),
                    tokio::spawn(allocator::role::run(store.clone(), rx.clone())),
                    tokio::spawn(scheduler::run(store.clone(), rx.clone())),
                    tokio::spawn(autoscaler::run(
                        store.clone(),
                        usage.clone(),
                        autoscaler_stats.clone(),
                        rx.clone(),
                    )),
                    tokio::spawn(dispatcher.clone().monitor(rx)),
                ];
                running = Some((tx, roles));
            }
            (false, true) => {
                info!("no longer leading: stopping the writer roles");
                if let Some((tx, roles)) = running.take() {
                    stop_roles(tx, roles).await;
                }
            }
            _ => {}
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    if let Some((tx, roles)) = running.take() {
        stop_roles(tx, roles).await;
    }
}

async fn stop_roles(tx: watch::Sender<bool>, roles: Vec<JoinHandle<()>>) {
    let _ = tx.send(true);
    for r in roles {
        let _ = r.await;
    }
}

impl Manager {
    /// Opens (or creates, or joins) the Raft log and supervises the writer roles.
    pub async fn start(cfg: ManagerConfig) -> Result<Manager, ManagerError> {
        let mut rc = RaftConfig::new(cfg.raft_dir.clone(), cfg.raft_id);
        rc.addr = cfg.addr.clone();
        rc.join = cfg.join;
        rc.force_new_cluster = cfg.force_new_cluster;
        let (dir, unlock) = (cfg.raft_dir.clone(), cfg.unlock_key.clone());
        let dek = tokio::task::spawn_blocking(move || {
            keys::open_data_key(&dir, unlock.as_ref(), dir.join(DATA_FILE).exists())
        })
        .await
        .map_err(|e| raft::RaftError::Failed {
            reason: format!("reading the raft key files did not finish: {e}"),
        })?
        .map_err(raft::RaftError::from)?;
        rc.data_key = Some(dek.clone());
        let transport = GrpcTransport::new(cfg.raft_id, cfg.channels.clone())?;
        let (store, raft) = raft::start_with_transport(rc, Box::new(transport.clone())).await?;
        let status = raft.status();
        if status.voters == [cfg.raft_id] {
            // A sole voter elects itself at once; waiting here means the first request after
            // `swarm init` or a restart does not race the election.
            let wait = Duration::from_secs(10);
            raft.wait_leader(wait)
                .await
                .map_err(|_| ManagerError::NoLeader(wait))?;
        }
        let (shutdown, rx) = watch::channel(false);
        let usage = UsageStore::default();
        let dispatcher = Dispatcher::new(
            store.clone(),
            cfg.heartbeat_period,
            raft.subscribe_status(),
            usage.clone(),
        );
        let autoscaler_stats = Arc::new(AutoscalerStats::default());
        let key_keeper = tokio::spawn(crate::key_keeper::run(
            store.clone(),
            cfg.raft_dir.clone(),
            dek,
            cfg.unlock_key.clone(),
            rx.clone(),
        ));
        let supervisor = tokio::spawn(supervise(
            store.clone(),
            dispatcher.clone(),
            usage.clone(),
            autoscaler_stats.clone(),
            raft.subscribe_status(),
            rx,
        ));
        info!(dir = %cfg.raft_dir.display(), raft_id = cfg.raft_id, "manager started");
        Ok(Manager {
            store,
            raft,
            transport,
            dispatcher,
            shutdown,
            usage,
            supervisor,
            key_keeper,
            autoscaler_stats,
        })
    }

    /// Writes the cluster object (with its root CA), this node as its first manager and the
    /// ingress network (docker's `ingress`, the routing mesh's), in one entry, once: a manager
    /// that restarts from its log already has them.
    pub async fn bootstrap(
        &self,
        node_id: &str,
        addr: &str,
        description: NodeDescription,
        ca: &RootCa,
        settings: &InitSettings,
    ) -> Result<(), ManagerError> {
        if self.store.view(|st| st.cluster.is_some()) {
            return Ok(());
        }
        let (cert_expiry, addr_pool) = (settings.cert_expiry, settings.addr_pool);
        let ingress = crate::controlapi::initial_ingress(addr_pool)
            .map_err(|e| ManagerError::Ingress(e.message().to_string()))?;
        let now = now_ms();
        let meta = Some(Meta {
            version: 0,
            created_at_ms: now,
            updated_at_ms: now,
        });
        let cluster = Cluster {
            id: ca.cluster_id().to_string(),
            meta,
            worker_join_token: tokens::new_join_token(&ca.digest()),
            manager_join_token: tokens::new_join_token(&ca.digest()),
            task_history_limit: DEFAULT_TASK_HISTORY_LIMIT,
            root_ca_cert_pem: ca.cert_pem().to_string(),
            root_ca_key_pem: ca.key_pem().to_string(),
            node_cert_expiry_ms: cert_expiry.as_millis() as u64,
            prometheus_url: String::new(),
            default_addr_pool: addr_pool.base().to_string(),
            default_addr_pool_mask_len: u32::from(addr_pool.subnet_len()),
            removed_nodes: Default::default(),
            autolock: settings.unlock_key.is_some(),
            unlock_key: settings
                .unlock_key
                .as_ref()
                .map(|k| k.to_string())
                .unwrap_or_default(),
            dispatcher_heartbeat_ms: settings.dispatcher_heartbeat_ms,
        };
        let node = Node {
            id: node_id.to_string(),
            meta,
            role: NodeRole::Manager as i32,
            availability: NodeAvailability::Active as i32,
            labels: Default::default(),
            description: Some(description),
            state: NodeState::Unknown as i32,
            status_message: String::new(),
            addr: addr.to_string(),
            attachments: Vec::new(),
            manager_status: Some(ManagerStatus {
                raft_id: self.raft.id(),
                addr: addr.to_string(),
                leader: true,
                reachability: "reachable".into(),
            }),
        };
        self.store
            .propose(vec![
                StoreAction {
                    action: Some(Action::PutCluster(cluster.into())),
                },
                StoreAction {
                    action: Some(Action::PutNode(node.into())),
                },
                StoreAction {
                    action: Some(Action::CreateNetwork(ingress.into())),
                },
            ])
            .await?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What node-to-node callers are checked against (`crate::authority`).
    pub fn authority(&self) -> crate::authority::Authority {
        crate::authority::Authority::new(self.store.clone(), self.raft.subscribe_status())
    }

    pub fn dispatcher(&self) -> Dispatcher {
        self.dispatcher.clone()
    }

    /// Per-task resource usage the workers report (leader's memory only).
    pub fn usage(&self) -> &UsageStore {
        &self.usage
    }

    /// The autoscaler's counters and gauges, for the metrics endpoint (see `autoscaler::stats`).
    pub fn autoscaler_stats(&self) -> Arc<AutoscalerStats> {
        self.autoscaler_stats.clone()
    }

    pub fn raft(&self) -> &RaftHandle {
        &self.raft
    }

    /// The transport, for telling a joining manager where the leader is before the leader's
    /// snapshot tells it everything else.
    pub fn transport(&self) -> &GrpcTransport {
        &self.transport
    }

    /// Stops the roles, then the Raft loop; the log stays on disk.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.supervisor.await;
        let _ = self.key_keeper.await;
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft loop did not stop cleanly");
        }
    }
}
