//! Hollow nodes (Kubernetes' kubemark is the model): workers for scale benchmarks that run the
//! real agent of `shoal_worker::agent` — its session, heartbeats, reconcile, controllers and
//! status reporter — over real mutual-TLS gRPC with a certificate the cluster CA signed for a
//! real join, but on an executor that "runs" a task instantly and starts no container, and with
//! no task networking. So the managers see a thousand workers where there are none.
//!
//! NOT the product: nothing here is reachable from `shoal daemon`. It lives in the test crate
//! and is run by the `hollow-nodes` binary for `bench/scale.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use shoal_node::leader_search;
use shoal_proto::membership_client::MembershipClient;
use shoal_proto::{IssueCertificateRequest, NodeDescription, Task, TaskUsage};
use shoal_tls::{NodeCert, NodeKey, Role};
use shoal_worker::agent::{AgentConfig, AgentError, ConnectFn};
use shoal_worker::executor::{
    ExecFuture, Executor, ExecutorError, ExitInfo, Observed, ObservedState,
};
use shoal_worker::health::ProbeResult;
use shoal_worker::image::ResolvedImage;
use shoal_worker::network::{Loopback, TaskNetwork};
use tokio::sync::watch;

/// The exit code a stopped hollow task reports: SIGTERM's, as a real container's.
const STOPPED_EXIT: i32 = 128 + 15;

/// What every hollow node of a process did, summed: read by the benchmark as progress.
#[derive(Default)]
pub struct HollowStats {
    /// Tasks the agents prepared: received in an assignment set and accepted.
    pub prepared: AtomicU64,
    /// Tasks "started": reported RUNNING to the reporter from here on.
    pub started: AtomicU64,
    /// Tasks stopped by the managers' desire.
    pub stopped: AtomicU64,
}

/// A hollow task: running until stopped, when its exit is published to `wait`.
type Exit = watch::Sender<Option<ExitInfo>>;

/// An executor whose containers are entries in a map; see the module documentation.
pub struct HollowExecutor {
    dir: PathBuf,
    tasks: Mutex<HashMap<String, Exit>>,
    stats: Arc<HollowStats>,
}

impl HollowExecutor {
    pub fn new(dir: PathBuf, stats: Arc<HollowStats>) -> Self {
        HollowExecutor {
            dir,
            tasks: Mutex::default(),
            stats,
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Exit>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Executor for HollowExecutor {
    fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn prepare<'a>(&'a self, task: &'a Task) -> ExecFuture<'a, ResolvedImage> {
        self.stats.prepared.fetch_add(1, Ordering::Relaxed);
        let name = task.spec.as_ref().map(|s| s.image.clone());
        Box::pin(async move {
            let name = name.ok_or_else(|| ExecutorError::NoContainerSpec {
                task: task.id.clone(),
            })?;
            Ok(ResolvedImage {
                name,
                ..Default::default()
            })
        })
    }

    fn start<'a>(
        &'a self,
        task: &'a Task,
        _image: &'a ResolvedImage,
        _net: &'a TaskNetwork,
        _files: &'a [shoal_worker::executor::TaskFile],
    ) -> ExecFuture<'a, u32> {
        self.tasks()
            .entry(task.id.clone())
            .or_insert_with(|| watch::channel(None).0);
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(1) })
    }

    fn wait<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ExitInfo> {
        let exit = self.tasks().get(task_id).map(|tx| tx.subscribe());
        Box::pin(async move {
            let mut exit = exit.ok_or_else(|| ExecutorError::NotFound {
                task: task_id.to_string(),
            })?;
            let waited = exit.wait_for(Option::is_some).await.map(|info| *info);
            match waited {
                Ok(info) => Ok(info.unwrap_or(ExitInfo {
                    exit_code: STOPPED_EXIT,
                    exited_at: None,
                })),
                // Removed while waited on: gone, as a deleted container.
                Err(_) => Err(ExecutorError::NotFound {
                    task: task_id.to_string(),
                }),
            }
        })
    }

    /// A hollow task has no process to probe: it passes while it has not been stopped.
    fn probe<'a>(
        &'a self,
        task_id: &'a str,
        _argv: &'a [String],
        _timeout: Duration,
    ) -> ExecFuture<'a, ProbeResult> {
        let live = self.tasks().get(task_id).map(|tx| tx.borrow().is_none());
        Box::pin(async move {
            match live {
                Some(true) => Ok(ProbeResult::Healthy),
                Some(false) => Ok(ProbeResult::Failed("the task was stopped".into())),
                None => Err(ExecutorError::NotFound {
                    task: task_id.to_string(),
                }),
            }
        })
    }

    fn stop<'a>(
        &'a self,
        task_id: &'a str,
        _signal: Option<Signal>,
        _grace: Duration,
    ) -> ExecFuture<'a, Option<ExitInfo>> {
        let info = ExitInfo {
            exit_code: STOPPED_EXIT,
            exited_at: None,
        };
        let exit = self.tasks().get(task_id).map(|tx| {
            let stopping = tx.send_if_modified(|e| e.is_none() && e.replace(info).is_none());
            if stopping {
                self.stats.stopped.fetch_add(1, Ordering::Relaxed);
            }
            tx.borrow().unwrap_or(info)
        });
        Box::pin(async move { Ok(exit) })
    }

    fn remove<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ()> {
        self.tasks().remove(task_id);
        Box::pin(async { Ok(()) })
    }

    fn list(&self) -> ExecFuture<'_, Vec<Observed>> {
        let observed = self
            .tasks()
            .iter()
            .map(|(id, tx)| Observed {
                task_id: id.clone(),
                service_id: String::new(),
                labels: HashMap::new(),
                state: match *tx.borrow() {
                    Some(exit) => ObservedState::Exited(exit),
                    None => ObservedState::Running { pid: 1 },
                },
            })
            .collect();
        Box::pin(async move { Ok(observed) })
    }

    fn usage(&self) -> ExecFuture<'_, Vec<TaskUsage>> {
        // Real nodes report usage every period; a hollow task uses nothing.
        let usage = self
            .tasks()
            .keys()
            .map(|id| TaskUsage {
                task_id: id.clone(),
                ..Default::default()
            })
            .collect();
        Box::pin(async move { Ok(usage) })
    }
}

/// A hollow node's identity, as a real `swarm join` obtains it.
pub struct Joined {
    pub node_id: String,
    pub cert: NodeCert,
    pub managers: Vec<String>,
}

/// Joins the swarm as a worker through `manager` (IP:PORT) with `token`: a fresh key, a CSR,
/// the certificate the cluster CA signs, checked against the token's CA digest — what
/// `shoal swarm join` does (`node/src/swarm.rs`).
pub async fn join(manager: &str, token: &str, addr: &str, hostname: &str) -> Result<Joined> {
    let parsed = shoal_manager::tokens::parse(token).context("parse the join token")?;
    let config = Arc::new(shoal_tls::bootstrap_client_config(parsed.ca_digest)?);
    let channel = shoal_tls::connect(manager, config, Role::Manager.server_name())
        .await
        .with_context(|| format!("connect to the manager at {manager}"))?;
    let key = NodeKey::generate()?;
    let resp = MembershipClient::new(channel)
        .issue_certificate(IssueCertificateRequest {
            token: token.to_string(),
            csr_pem: key.csr_pem()?,
            addr: addr.to_string(),
            description: Some(describe(hostname)),
        })
        .await
        .map_err(|s| anyhow::anyhow!("the manager refused the join: {}", s.message()))?
        .into_inner();
    parsed.ca_digest.check_pem(&resp.ca_pem)?;
    if resp.role != "worker" {
        bail!("a hollow node joins as a worker, not as {}", resp.role);
    }
    let cert = key.into_node_cert(resp.cert_pem, resp.ca_pem)?;
    let mut managers = resp.managers;
    if !managers.iter().any(|m| m == manager) {
        managers.insert(0, manager.to_string());
    }
    Ok(Joined {
        node_id: resp.node_id,
        cert,
        managers,
    })
}

/// What a hollow node says about itself: a small Linux machine.
fn describe(hostname: &str) -> NodeDescription {
    NodeDescription {
        hostname: hostname.to_string(),
        os: "linux".into(),
        arch: std::env::consts::ARCH.into(),
        nano_cpus_count: 2,
        memory_bytes: 4 << 30,
        containerd_version: "hollow".into(),
        containerd_address: String::new(),
        kernel_version: String::new(),
    }
}

/// Runs the real agent for a joined hollow node until `shutdown` turns true: its own mTLS
/// connection to the leader (found as the daemon's agent finds it), its own data directory.
pub async fn run(
    joined: Joined,
    addr: String,
    data_dir: PathBuf,
    stats: Arc<HollowStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let config = Arc::new(shoal_tls::client_config(&joined.cert)?);
    let node_id = joined.node_id.clone();
    let managers = Arc::new(Mutex::new(joined.managers));
    let observed = managers.clone();
    let cfg = AgentConfig {
        node_id: node_id.clone(),
        addr,
        description: describe(&format!("hollow-{}", &node_id[..node_id.len().min(8)])),
        data_dir: data_dir.clone(),
        on_session_message: Some(Arc::new(move |msg: &shoal_proto::SessionMessage| {
            if !msg.managers.is_empty() {
                *observed.lock().unwrap_or_else(|e| e.into_inner()) = msg.managers.clone();
            }
        })),
    };
    let connector = ConnectFn(move || {
        let (node_id, managers, config) = (node_id.clone(), managers.clone(), config.clone());
        async move {
            let candidates = leader_search::candidates(None, &managers);
            leader_search::find_dispatcher(candidates, &config, node_id)
                .await
                .map_err(|reason| AgentError::Connect {
                    target: "the swarm's managers".into(),
                    reason,
                })
        }
    });
    let executor = Arc::new(HollowExecutor::new(data_dir, stats));
    shoal_worker::agent::run(cfg, executor, Arc::new(Loopback), connector, shutdown).await?;
    Ok(())
}
