//! Starting and stopping a manager: the Raft log plus the writer roles that run beside it.

use std::path::PathBuf;
use std::time::Duration;

use shoal_proto::{
    store_action::Action, Cluster, ManagerStatus, Meta, Node, NodeAvailability, NodeDescription,
    NodeRole, NodeState, StoreAction,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::dispatcher::{Dispatcher, DEFAULT_HEARTBEAT_PERIOD};
use crate::ids::now_ms;
use crate::orchestrator::reaper::DEFAULT_TASK_HISTORY_LIMIT;
use crate::raft::{self, RaftConfig, RaftHandle};
use crate::store::{Store, StoreError};
use crate::{ids, orchestrator, scheduler, tokens};
use shoal_tls::RootCa;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Raft(#[from] raft::RaftError),
    #[error("this manager did not become the Raft leader within {0:?}")]
    NoLeader(Duration),
    #[error("could not write the initial cluster state: {0}")]
    Bootstrap(#[from] StoreError),
    #[error("could not create the cluster CA: {0}")]
    Ca(#[from] shoal_tls::TlsError),
}

pub struct ManagerConfig {
    pub raft_dir: PathBuf,
    pub raft_id: u64,
    pub heartbeat_period: Duration,
}

impl ManagerConfig {
    pub fn new(raft_dir: PathBuf) -> Self {
        ManagerConfig {
            raft_dir,
            raft_id: 1,
            heartbeat_period: DEFAULT_HEARTBEAT_PERIOD,
        }
    }
}

pub struct Manager {
    store: Store,
    raft: RaftHandle,
    dispatcher: Dispatcher,
    shutdown: watch::Sender<bool>,
    roles: Vec<JoinHandle<()>>,
}

impl Manager {
    /// Opens (or creates) the Raft log, waits to lead it, and starts the writer roles.
    pub async fn start(cfg: ManagerConfig) -> Result<Manager, ManagerError> {
        let mut rc = RaftConfig::new(cfg.raft_dir.clone(), cfg.raft_id);
        rc.raft_id = cfg.raft_id;
        let (store, raft) = raft::start(rc).await?;
        let wait = Duration::from_secs(10);
        raft.wait_leader(wait)
            .await
            .map_err(|_| ManagerError::NoLeader(wait))?;
        let (shutdown, rx) = watch::channel(false);
        let dispatcher = Dispatcher::new(store.clone(), cfg.heartbeat_period, rx.clone());
        let roles = vec![
            tokio::spawn(orchestrator::run(store.clone(), rx.clone())),
            tokio::spawn(scheduler::run(store.clone(), rx.clone())),
            tokio::spawn(dispatcher.clone().monitor()),
        ];
        info!(dir = %cfg.raft_dir.display(), "manager started");
        Ok(Manager {
            store,
            raft,
            dispatcher,
            shutdown,
            roles,
        })
    }

    /// Writes the cluster object and this node as its first manager, once: a manager that
    /// restarts from its log already has them.
    pub async fn bootstrap(
        &self,
        node_id: &str,
        addr: &str,
        description: NodeDescription,
    ) -> Result<(), ManagerError> {
        if self.store.view(|st| st.cluster.is_some()) {
            return Ok(());
        }
        let now = now_ms();
        let meta = Some(Meta {
            version: 0,
            created_at_ms: now,
            updated_at_ms: now,
        });
        let cluster_id = ids::new_id();
        let ca = RootCa::generate(&cluster_id)?;
        let cluster = Cluster {
            id: cluster_id,
            meta: meta.clone(),
            worker_join_token: tokens::new_join_token(&ca.digest()),
            manager_join_token: tokens::new_join_token(&ca.digest()),
            task_history_limit: DEFAULT_TASK_HISTORY_LIMIT,
            root_ca_cert_pem: ca.cert_pem().to_string(),
            root_ca_key_pem: ca.key_pem().to_string(),
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
            manager_status: Some(ManagerStatus {
                raft_id: 1,
                addr: addr.to_string(),
                leader: true,
                reachability: "reachable".into(),
            }),
        };
        self.store
            .propose(vec![
                StoreAction {
                    action: Some(Action::PutCluster(cluster)),
                },
                StoreAction {
                    action: Some(Action::PutNode(node)),
                },
            ])
            .await?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn dispatcher(&self) -> Dispatcher {
        self.dispatcher.clone()
    }

    pub fn raft(&self) -> &RaftHandle {
        &self.raft
    }

    /// Stops the roles, then the Raft loop; the log stays on disk.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for r in self.roles {
            let _ = r.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft loop did not stop cleanly");
        }
    }
}
