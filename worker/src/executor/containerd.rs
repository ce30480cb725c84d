//! Runs one task as one containerd container: prepare its image, create and start it, wait for
//! it, stop it, remove it, and list what containerd already runs so a restarted daemon adopts
//! rather than duplicates.
//!
//! The container ID is the task ID (random, so unique across every containerd on the machine,
//! which matters because runc's state directory is shared). The container's snapshot has the
//! same key. Its stdout/stderr go to the log driver ([`crate::logdriver`]) through containerd's
//! `binary://` log URI, so the shim, not the daemon, owns logging.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetRequest, KillRequest, ListContainersRequest, StartRequest, WaitRequest,
};
use containerd_client::services::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
};
use containerd_client::types::v1::Status as ProcessStatus;
use containerd_client::types::Mount;
use nix::sys::signal::Signal;
use shoal_proto::{ContainerSpec, Task, TaskUsage};
use tonic::Code;
use tracing::{debug, info, warn};

use super::mounts::{self, TaskMounts};
use super::{
    files, remove_task_dir, ExecFuture, Executor, ExecutorError, ExitInfo, Observed, ObservedState,
    TaskFile,
};
use crate::containerd::{not_found_as_none, Containerd};
use crate::health::ProbeResult;
use crate::image::{self, RegistryTls, ResolvedImage};
use crate::logdriver::LogDriverConfig;
use crate::logs::{self, TaskMeta};
use crate::network::TaskNetwork;
use crate::spec::{self, SpecError, SpecInput};
use crate::stats::{self, CgroupLayout};
use crate::volumes::{Volumes, LABEL_VOLUMES};

pub const LABEL_TASK_ID: &str = "shoal.task.id";
pub const LABEL_SERVICE_ID: &str = "shoal.service.id";
pub const LABEL_SERVICE_NAME: &str = "shoal.service.name";
pub const LABEL_TASK_SLOT: &str = "shoal.task.slot";
pub const LABEL_NODE_ID: &str = "shoal.node.id";
/// The resolved stop signal (task's, else image's, else SIGTERM), so a container adopted after
/// a daemon restart is stopped the same way without looking at its image again.
pub const LABEL_STOP_SIGNAL: &str = "shoal.stop-signal";

/// containerd's type URL for an OCI runtime spec in an `Any`.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
pub const RUNTIME: &str = "io.containerd.runc.v2";
pub const SNAPSHOTTER: &str = "overlayfs";

/// How long `stop` waits after SIGKILL before giving up on the exit.
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
/// The start lease only guards the snapshot between Prepare and the container's creation;
/// if the daemon dies in between, containerd's GC takes the snapshot after this.
const START_LEASE_TTL: chrono::Duration = chrono::Duration::hours(1);

/// Runs tasks on containerd; see the module documentation.
pub struct ContainerdExecutor {
    cd: Containerd,
    data_dir: PathBuf,
    log_driver: PathBuf,
    /// The node's local volumes, for `--mount type=volume`.
    volumes: Volumes,
    /// The node's init binary for `--init`, if it has one.
    init: Option<PathBuf>,
    /// Where the tasks' cgroups are, found on the first usage report.
    cgroups: OnceLock<Result<Arc<CgroupLayout>, String>>,
    /// How registries are reached for pulls (their CA certificates).
    registry_tls: RegistryTls,
}

/// The task's log file and its rotation: the node's defaults, or the service's `--log-opt`s.
fn log_config(data_dir: &Path, task_id: &str, cs: &ContainerSpec) -> LogDriverConfig {
    let mut cfg = LogDriverConfig::new(logs::log_path(data_dir, task_id));
    let limits = cs
        .log_driver
        .as_ref()
        .and_then(|d| shoal_proto::validate::options::log_limits(d).ok());
    if let Some((size, files)) = limits {
        if let Some(size) = size {
            cfg.max_size = size;
        }
        if let Some(files) = files {
            cfg.max_files = files;
        }
    }
    cfg
}

fn timestamp_to_system_time(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    // containerd sends Go's zero time (year 1) for "not exited".
    if ts.seconds <= 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos.clamp(0, 999_999_999) as u32))
}

/// What one container start is made of.
#[derive(Clone, Copy)]
struct Launch<'a> {
    task: &'a Task,
    cs: &'a ContainerSpec,
    image: &'a ResolvedImage,
    hostname: &'a str,
    stop_signal: Signal,
    netns: Option<&'a Path>,
    mounts: &'a TaskMounts<'a>,
}

impl ContainerdExecutor {
    /// `data_dir` is the worker's data directory (task logs live in `<data_dir>/tasks`);
    /// `log_driver` the program containerd's shim runs as `BINARY __log-driver OPTIONS` (the
    /// one [`crate::logdriver::install`] installs).
    /// Creates `<data_dir>/tasks` so a wrong data directory is reported here, not on the first
    /// task.
    pub fn new(
        cd: Containerd,
        data_dir: PathBuf,
        log_driver: PathBuf,
    ) -> Result<Self, ExecutorError> {
        let tasks = data_dir.join("tasks");
        std::fs::create_dir_all(&tasks).map_err(|source| ExecutorError::Io {
            task: "*".to_string(),
            what: "cannot create",
            path: tasks,
            source,
        })?;
        Ok(ContainerdExecutor {
            cd,
            volumes: Volumes::new(&data_dir),
            init: spec::options::find_init(),
            data_dir,
            log_driver,
            cgroups: OnceLock::new(),
            registry_tls: RegistryTls::default(),
        })
    }

    /// Pulls trust the CA certificates of `tls` (docker's `certs.d` layout).
    pub fn with_registry_tls(mut self, tls: RegistryTls) -> Self {
        self.registry_tls = tls;
        self
    }

    pub fn registry_tls(&self) -> &RegistryTls {
        &self.registry_tls
    }

    pub fn containerd(&self) -> &Containerd {
        &self.cd
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn container_spec(task: &Task) -> Result<&ContainerSpec, ExecutorError> {
        task.spec
            .as_deref()
            .ok_or_else(|| ExecutorError::NoContainerSpec {
                task: task.id.clone(),
            })
    }

    /// Makes the task's image available (pulled, unpacked) and describes it.
    pub async fn prepare(&self, task: &Task) -> Result<ResolvedImage, ExecutorError> {
        let cs = Self::container_spec(task)?;
        debug!(task = %task.id, service = %task.service_name, image = %cs.image, "preparing image");
        let options = image::PullOptions {
            auth: task.registry_auth.clone(),
            tls: self.registry_tls.clone(),
        };
        Ok(image::ensure_image_with(&self.cd, &cs.image, &options).await?)
    }

    /// Creates the task's container and starts it, its `files` in memory; returns its pid. On
    /// failure nothing of the container is left behind (its task directory and log are kept).
    pub async fn start(
        &self,
        task: &Task,
        image: &ResolvedImage,
        net: &TaskNetwork,
        task_files: &[TaskFile],
    ) -> Result<u32, ExecutorError> {
        let cs = Self::container_spec(task)?;
        let id = task.id.as_str();
        let task_dir = logs::task_dir(&self.data_dir, id);
        let io_err = |what: &'static str, path: &Path| ExecutorError::io(id, what, path);
        let hostname = spec::hostname_for(task);
        spec::write_etc_files(&task_dir, &hostname, net, &cs.hosts)
            .map_err(io_err("cannot write /etc files under", &task_dir))?;
        TaskMeta {
            task_id: id.to_string(),
            service_id: task.service_id.clone(),
            service_name: task.service_name.clone(),
            slot: task.slot,
            node_id: task.node_id.clone(),
        }
        .write(&self.data_dir)
        .map_err(io_err("cannot write", &TaskMeta::path(&self.data_dir, id)))?;

        let stop_signal = match (&cs.stop_signal, &image.stop_signal) {
            (s, _) if !s.is_empty() => spec::parse_signal(s)?,
            (_, Some(s)) if !s.is_empty() => spec::parse_signal(s)?,
            _ => Signal::SIGTERM,
        };

        // Cleans up after itself when it fails; nothing else of the container exists yet.
        let file_mounts = files::write(id, &task_dir, task_files)?;
        let result = match mounts::resolve(&self.volumes, id, cs) {
            Ok(mut mounts) => {
                mounts.add_files(&file_mounts);
                let launch = Launch {
                    task,
                    cs,
                    image,
                    hostname: &hostname,
                    stop_signal,
                    netns: net.netns_path(),
                    mounts: &mounts,
                };
                self.create_and_start(&launch).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            warn!(task = %id, service = %task.service_name, error = %e, "start failed, cleaning up");
            if let Err(cleanup) = self.remove(id).await {
                warn!(task = %id, error = %cleanup, "cleanup after a failed start failed");
            }
        }
        result
    }

    async fn create_and_start(&self, launch: &Launch<'_>) -> Result<u32, ExecutorError> {
        let id = launch.task.id.as_str();
        let lease = format!("shoal-start-{id}");
        let expire = (chrono::Utc::now() + START_LEASE_TTL).to_rfc3339();
        self.cd
            .leases()
            .create(self.cd.request(CreateLeaseRequest {
                id: lease.clone(),
                labels: HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
            }))
            .await
            .map_err(|s| ExecutorError::containerd("Leases.Create", id, s))?;
        let result = self.create_and_start_leased(launch, &lease).await;
        // The container now references the snapshot; the lease has done its job.
        if let Err(s) = self
            .cd
            .leases()
            .delete(self.cd.request(DeleteLeaseRequest {
                id: lease,
                sync: false,
            }))
            .await
        {
            debug!(task = %id, error = %s, "deleting the start lease failed; it expires on its own");
        }
        result
    }

    async fn create_and_start_leased(
        &self,
        launch: &Launch<'_>,
        lease: &str,
    ) -> Result<u32, ExecutorError> {
        let Launch {
            task,
            cs,
            image,
            hostname,
            stop_signal,
            netns,
            mounts: task_mounts,
        } = *launch;
        let id = task.id.as_str();
        let with_lease = |mut req: tonic::Request<_>| {
            if let Ok(v) = lease.parse() {
                req.metadata_mut().insert("containerd-lease", v);
            }
            req
        };

        let prepared = self
            .cd
            .snapshots()
            .prepare(with_lease(self.cd.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
                parent: image.top_chain_id.clone(),
                labels: HashMap::new(),
            })))
            .await;
        let mounts: Vec<Mount> = match prepared {
            Ok(r) => r.into_inner().mounts,
            // Left by an earlier attempt that died before creating the container: reuse it.
            Err(s) if s.code() == Code::AlreadyExists => {
                self.cd
                    .snapshots()
                    .mounts(self.cd.request(MountsRequest {
                        snapshotter: SNAPSHOTTER.to_string(),
                        key: id.to_string(),
                    }))
                    .await
                    .map_err(|s| ExecutorError::containerd("Snapshots.Mounts", id, s))?
                    .into_inner()
                    .mounts
            }
            Err(s) => return Err(ExecutorError::containerd("Snapshots.Prepare", id, s)),
        };

        // A user name is resolved against the image's own /etc/passwd and /etc/group, read
        // straight from the snapshot's layer directories.
        let layers = spec::rootfs_layers(&mounts);
        let user_str = if cs.user.is_empty() {
            image.user.as_str()
        } else {
            cs.user.as_str()
        };
        let passwd = spec::read_rootfs_file(&layers, "/etc/passwd");
        let group = spec::read_rootfs_file(&layers, "/etc/group");
        let mut user = spec::resolve_user(user_str, passwd.as_deref(), group.as_deref())?;
        for gid in spec::options::group_ids(cs, group.as_deref())? {
            if !user.additional_gids.contains(&gid) {
                user.additional_gids.push(gid);
            }
        }

        let task_dir = logs::task_dir(&self.data_dir, id);
        mounts::copy_image_content(
            id,
            &mounts,
            &task_mounts.fresh,
            &task_dir.join("image-copy"),
        )?;
        let oci = spec::build(&SpecInput {
            task,
            image,
            user: &user,
            hostname,
            task_dir: &task_dir,
            nofile: spec::nofile_limit(),
            netns,
            host: spec::Host::current(),
            mounts: &task_mounts.resolved,
            init: self.init.as_deref(),
        })?;
        let spec_json = serde_json::to_vec(&oci).map_err(|e| {
            ExecutorError::Spec(SpecError::Oci(oci_spec::OciSpecError::Other(e.to_string())))
        })?;

        let mut labels: HashMap<String, String> = cs.labels.clone();
        labels.extend([
            (LABEL_TASK_ID.to_string(), id.to_string()),
            (LABEL_SERVICE_ID.to_string(), task.service_id.clone()),
            (LABEL_SERVICE_NAME.to_string(), task.service_name.clone()),
            (LABEL_TASK_SLOT.to_string(), task.slot.to_string()),
            (LABEL_NODE_ID.to_string(), task.node_id.clone()),
            (
                LABEL_STOP_SIGNAL.to_string(),
                stop_signal.as_str().to_string(),
            ),
        ]);
        if !task_mounts.volumes.is_empty() {
            labels.insert(LABEL_VOLUMES.to_string(), task_mounts.volumes.join(","));
        }
        let container = Container {
            id: id.to_string(),
            labels,
            image: image.name.clone(),
            runtime: Some(Runtime {
                name: RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec_json,
            }),
            snapshotter: SNAPSHOTTER.to_string(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        self.cd
            .containers()
            .create(self.cd.request(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|s| ExecutorError::containerd("Containers.Create", id, s))?;

        let log_uri = log_config(&self.data_dir, id, cs).binary_uri(&self.log_driver);
        self.cd
            .tasks()
            .create(self.cd.request(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdout: log_uri.clone(),
                // A terminal has one output stream, which the shim copies to stdout.
                stderr: if cs.tty { String::new() } else { log_uri },
                terminal: cs.tty,
                ..Default::default()
            }))
            .await
            .map_err(|s| ExecutorError::containerd("Tasks.Create", id, s))?;
        let pid = self
            .cd
            .tasks()
            .start(self.cd.request(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| ExecutorError::containerd("Tasks.Start", id, s))?
            .into_inner()
            .pid;
        info!(task = %id, service = %task.service_name, container = %id, pid, "task started");
        Ok(pid)
    }

    /// Waits for the task's process to exit. Works for any container containerd runs,
    /// including ones started before a daemon restart; returns at once if it already exited.
    pub async fn wait(&self, task_id: &str) -> Result<ExitInfo, ExecutorError> {
        let resp = self
            .cd
            .tasks()
            .wait(self.cd.request(WaitRequest {
                container_id: task_id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        let resp = not_found_as_none(resp)
            .map_err(|s| ExecutorError::containerd("Tasks.Wait", task_id, s))?
            .ok_or_else(|| ExecutorError::NotFound {
                task: task_id.to_string(),
            })?
            .into_inner();
        Ok(ExitInfo {
            exit_code: resp.exit_status as i32,
            exited_at: timestamp_to_system_time(resp.exited_at),
        })
    }

    /// Sends `signal` to every process of the task; `Ok(false)` when there is nothing left to
    /// signal (no task, or it already exited).
    async fn kill(&self, task_id: &str, signal: Signal) -> Result<bool, ExecutorError> {
        match self
            .cd
            .tasks()
            .kill(self.cd.request(KillRequest {
                container_id: task_id.to_string(),
                exec_id: String::new(),
                signal: signal as u32,
                all: true,
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(false),
            Err(s) => Err(ExecutorError::containerd("Tasks.Kill", task_id, s)),
        }
    }

    /// The stop signal recorded on the container at start, if any.
    async fn recorded_stop_signal(&self, task_id: &str) -> Option<Signal> {
        let resp = self
            .cd
            .containers()
            .get(
                self.cd
                    .request(containerd_client::services::v1::GetContainerRequest {
                        id: task_id.to_string(),
                    }),
            )
            .await
            .ok()?;
        let label = resp
            .into_inner()
            .container?
            .labels
            .remove(LABEL_STOP_SIGNAL)?;
        spec::parse_signal(&label).ok()
    }

    /// Stops the task: `signal` (or the stop signal recorded at start, or SIGTERM) to all its
    /// processes, then SIGKILL once `grace` has passed. Returns how it exited, or `None` when
    /// there was no task. Idempotent: an exited task is just reported.
    pub async fn stop(
        &self,
        task_id: &str,
        signal: Option<Signal>,
        grace: Duration,
    ) -> Result<Option<ExitInfo>, ExecutorError> {
        let signal = match signal {
            Some(s) => s,
            None => self
                .recorded_stop_signal(task_id)
                .await
                .unwrap_or(Signal::SIGTERM),
        };
        debug!(task = %task_id, container = %task_id, %signal, ?grace, "stopping task");
        self.kill(task_id, signal).await?;
        match tokio::time::timeout(grace, self.wait(task_id)).await {
            Ok(Ok(exit)) => return Ok(Some(exit)),
            Ok(Err(ExecutorError::NotFound { .. })) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) => {}
        }
        info!(task = %task_id, container = %task_id, ?grace, "grace period over, sending SIGKILL");
        self.kill(task_id, Signal::SIGKILL).await?;
        match tokio::time::timeout(KILL_TIMEOUT, self.wait(task_id)).await {
            Ok(Ok(exit)) => Ok(Some(exit)),
            Ok(Err(ExecutorError::NotFound { .. })) => Ok(None),
            Ok(Err(e)) => Err(e),
            Err(_elapsed) => Err(ExecutorError::KillTimeout {
                task: task_id.to_string(),
                timeout: KILL_TIMEOUT,
            }),
        }
    }

    /// Deletes the task's process record, container and snapshot. Idempotent: whatever is
    /// already gone is skipped. A still-running process is killed first. The task's directory
    /// (logs) is kept; see [`ContainerdExecutor::remove_logs`].
    pub async fn remove(&self, task_id: &str) -> Result<(), ExecutorError> {
        // A removal is final: kill whatever still runs (no grace period) rather than guess
        // from Tasks.Delete's error, whose code for "still running" differs between containerd
        // versions (1.6 answers Unknown). Idempotent when the task already exited or is gone.
        self.stop(task_id, Some(Signal::SIGKILL), Duration::ZERO)
            .await?;
        // Each step is done when what it deletes is already gone.
        let gone =
            |op: &'static str| move |s: tonic::Status| ExecutorError::containerd(op, task_id, s);
        let deleted = self
            .cd
            .tasks()
            .delete(self.cd.request(DeleteTaskRequest {
                container_id: task_id.to_string(),
            }))
            .await;
        not_found_as_none(deleted).map_err(gone("Tasks.Delete"))?;
        let deleted = self
            .cd
            .containers()
            .delete(self.cd.request(DeleteContainerRequest {
                id: task_id.to_string(),
            }))
            .await;
        not_found_as_none(deleted).map_err(gone("Containers.Delete"))?;
        let removed = self
            .cd
            .snapshots()
            .remove(self.cd.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: task_id.to_string(),
            }))
            .await;
        not_found_as_none(removed).map_err(gone("Snapshots.Remove"))?;
        // The secrets' and configs' memory goes with the container.
        files::remove(task_id, &logs::task_dir(&self.data_dir, task_id))?;
        // Anonymous volumes go with their task's container, as swarmkit removes them.
        self.volumes
            .remove_anonymous_of(task_id)
            .map_err(|e| ExecutorError::Mount {
                task: task_id.to_string(),
                target: "its anonymous volumes".to_string(),
                reason: e.to_string(),
            })?;
        debug!(task = %task_id, container = %task_id, "container removed");
        Ok(())
    }

    /// Removes the task's directory: its logs (all rotations) and `/etc` files.
    pub fn remove_logs(&self, task_id: &str) -> Result<(), ExecutorError> {
        remove_task_dir(&self.data_dir, task_id)
    }

    /// Every Shoal container in the namespace (those with a `shoal.task.id` label) with the
    /// state of its process.
    pub async fn list(&self) -> Result<Vec<Observed>, ExecutorError> {
        let containers = self
            .cd
            .containers()
            .list(self.cd.request(ListContainersRequest {
                filters: vec![format!("labels.\"{LABEL_TASK_ID}\"")],
            }))
            .await
            .map_err(|s| ExecutorError::containerd("Containers.List", "*", s))?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            let Some(task_id) = c.labels.get(LABEL_TASK_ID).cloned() else {
                continue;
            };
            let got = self
                .cd
                .tasks()
                .get(self.cd.request(GetRequest {
                    container_id: c.id.clone(),
                    exec_id: String::new(),
                }))
                .await;
            let got = not_found_as_none(got)
                .map_err(|s| ExecutorError::containerd("Tasks.Get", &c.id, s))?;
            let state = match got {
                // No task: created, never started.
                None => ObservedState::Created,
                Some(r) => match r.into_inner().process {
                    Some(p) => match ProcessStatus::try_from(p.status) {
                        Ok(ProcessStatus::Created) => ObservedState::Created,
                        Ok(ProcessStatus::Stopped) => ObservedState::Exited(ExitInfo {
                            exit_code: p.exit_status as i32,
                            exited_at: timestamp_to_system_time(p.exited_at),
                        }),
                        // Running, paused, pausing, or unknown: a live process.
                        _ => ObservedState::Running { pid: p.pid },
                    },
                    None => ObservedState::Created,
                },
            };
            out.push(Observed {
                service_id: c.labels.get(LABEL_SERVICE_ID).cloned().unwrap_or_default(),
                task_id,
                labels: c.labels,
                state,
            });
        }
        Ok(out)
    }

    /// The resource usage of every running Shoal container, read from its cgroup
    /// ([`crate::stats`]). It covers what containerd runs rather than what was assigned, so an
    /// adopted container counts too.
    pub async fn usage(&self) -> Result<Vec<TaskUsage>, ExecutorError> {
        let layout = self
            .cgroups
            .get_or_init(|| {
                let layout = CgroupLayout::detect().map(Arc::new);
                if let Ok(layout) = &layout {
                    debug!(?layout, "reading task usage from cgroups");
                }
                layout.map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|reason| ExecutorError::UsageUnavailable { reason })?;
        let running: Vec<(String, u32)> = self
            .list()
            .await?
            .into_iter()
            .filter_map(|o| match o.state {
                ObservedState::Running { pid } => Some((o.task_id, pid)),
                _ => None,
            })
            .collect();
        // Plain file reads, a few per task: off the runtime's workers all the same.
        let usage = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            running
                .into_iter()
                .filter_map(|(id, pid)| {
                    match stats::task_usage(&layout, &id, Some(pid), now) {
                        Ok(usage) => Some(usage),
                        Err(e) => {
                            // Not found: the task exited since the listing.
                            if !e.is_not_found() {
                                debug!(task = %id, error = %e, "cannot read the task's usage");
                            }
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        Ok(usage)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The trait's calls are the inherent methods above, which callers holding the concrete type
/// (the daemon, the integration tests) use directly.
impl Executor for ContainerdExecutor {
    fn data_dir(&self) -> &Path {
        ContainerdExecutor::data_dir(self)
    }

    fn prepare<'a>(&'a self, task: &'a Task) -> ExecFuture<'a, ResolvedImage> {
        Box::pin(ContainerdExecutor::prepare(self, task))
    }

    fn start<'a>(
        &'a self,
        task: &'a Task,
        image: &'a ResolvedImage,
        net: &'a TaskNetwork,
        files: &'a [TaskFile],
    ) -> ExecFuture<'a, u32> {
        Box::pin(ContainerdExecutor::start(self, task, image, net, files))
    }

    fn wait<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ExitInfo> {
        Box::pin(ContainerdExecutor::wait(self, task_id))
    }

    fn probe<'a>(
        &'a self,
        task_id: &'a str,
        argv: &'a [String],
        timeout: Duration,
    ) -> ExecFuture<'a, ProbeResult> {
        Box::pin(super::health::probe(
            &self.cd,
            &self.data_dir,
            task_id,
            argv,
            timeout,
        ))
    }

    fn stop<'a>(
        &'a self,
        task_id: &'a str,
        signal: Option<Signal>,
        grace: Duration,
    ) -> ExecFuture<'a, Option<ExitInfo>> {
        Box::pin(ContainerdExecutor::stop(self, task_id, signal, grace))
    }

    fn remove<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ()> {
        Box::pin(ContainerdExecutor::remove(self, task_id))
    }

    fn remove_logs(&self, task_id: &str) -> Result<(), ExecutorError> {
        ContainerdExecutor::remove_logs(self, task_id)
    }

    fn list(&self) -> ExecFuture<'_, Vec<Observed>> {
        Box::pin(ContainerdExecutor::list(self))
    }

    fn usage(&self) -> ExecFuture<'_, Vec<TaskUsage>> {
        Box::pin(ContainerdExecutor::usage(self))
    }
}
