//! Unit tests of the agent's controller, reconcile and reporter logic against an in-memory
//! executor ([`FakeExecutor`], a test double): no containerd, no root. The agent against real
//! containerd is `worker/tests/agent.rs`.

mod controller;
mod health;
mod reporter;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shoal_proto::{ContainerSpec, NetworkPeers, Task, TaskState, TaskStatus, TaskUsage};
use tokio::sync::watch;

use super::controller::Ctx;
use super::reporter::Reporter;
use crate::executor::{ExecFuture, Executor, ExecutorError, ExitInfo, Observed, ObservedState};
use crate::health::ProbeResult;
use crate::image::ResolvedImage;
use crate::network::{NetFuture, TaskNetwork, TaskNetworks};

/// How long a test waits for an outcome before it fails: generous, since only the outcome is
/// asserted.
const DEADLINE: Duration = Duration::from_secs(10);

/// The exit code of a process stopped by SIGTERM, as the fake reports it.
const SIGTERM_EXIT: i32 = 128 + 15;

#[derive(Default)]
struct FakeState {
    /// Every call, in order: (operation, task ID).
    calls: Vec<(&'static str, String)>,
    containers: HashMap<String, ObservedState>,
    next_pid: u32,
    /// Tasks whose healthcheck probes pass (the rest fail, as a probe of a missing file would).
    healthy: HashSet<String>,
    /// The files each task was started with.
    files: HashMap<String, Vec<crate::executor::TaskFile>>,
}

/// An executor whose containers are entries in a map: `start` makes one running, the test
/// ends it with [`FakeExecutor::exit`], `stop` ends it as SIGTERM would. A task without a
/// container spec fails to prepare, as with the real executor. Healthcheck probes fail until
/// the test says the task is healthy ([`FakeExecutor::set_healthy`]).
pub(super) struct FakeExecutor {
    dir: tempfile::TempDir,
    state: Mutex<FakeState>,
    /// Bumped on every change, so `wait` sees exits.
    changed: watch::Sender<u64>,
}

impl FakeExecutor {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(FakeExecutor {
            dir: tempfile::tempdir().expect("a temporary data directory"),
            state: Mutex::new(FakeState {
                next_pid: 100,
                ..Default::default()
            }),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    fn record(&self, op: &'static str, task_id: &str) {
        self.lock().calls.push((op, task_id.to_string()));
    }

    fn set(&self, task_id: &str, state: Option<ObservedState>) {
        {
            let mut st = self.lock();
            match state {
                Some(s) => st.containers.insert(task_id.to_string(), s),
                None => st.containers.remove(task_id),
            };
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// A container found at start, as a daemon restart leaves it.
    pub(super) fn put(&self, task_id: &str, state: ObservedState) {
        self.set(task_id, Some(state));
    }

    /// The task's process exits with `code`.
    pub(super) fn exit(&self, task_id: &str, code: i32) {
        self.set(task_id, Some(exited(code)));
    }

    /// From now on the task's probes pass (`true`) or fail.
    pub(super) fn set_healthy(&self, task_id: &str, healthy: bool) {
        let mut st = self.lock();
        if healthy {
            st.healthy.insert(task_id.to_string());
        } else {
            st.healthy.remove(task_id);
        }
    }

    pub(super) fn container(&self, task_id: &str) -> Option<ObservedState> {
        self.lock().containers.get(task_id).cloned()
    }

    /// The operations called for one task, in order.
    /// The files `task_id` was last started with.
    pub(super) fn files(&self, task_id: &str) -> Vec<crate::executor::TaskFile> {
        self.lock().files.get(task_id).cloned().unwrap_or_default()
    }

    pub(super) fn calls(&self, task_id: &str) -> Vec<&'static str> {
        self.lock()
            .calls
            .iter()
            .filter(|(_, id)| id == task_id)
            .map(|(op, _)| *op)
            .collect()
    }
}

pub(super) fn exited(code: i32) -> ObservedState {
    ObservedState::Exited(ExitInfo {
        exit_code: code,
        exited_at: None,
    })
}

impl Executor for FakeExecutor {
    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn prepare<'a>(&'a self, task: &'a Task) -> ExecFuture<'a, ResolvedImage> {
        self.record("prepare", &task.id);
        Box::pin(async move {
            let cs = task
                .spec
                .as_ref()
                .ok_or_else(|| ExecutorError::NoContainerSpec {
                    task: task.id.clone(),
                })?;
            Ok(ResolvedImage {
                name: cs.image.clone(),
                ..Default::default()
            })
        })
    }

    fn start<'a>(
        &'a self,
        task: &'a Task,
        _image: &'a ResolvedImage,
        _net: &'a crate::network::TaskNetwork,
        files: &'a [crate::executor::TaskFile],
    ) -> ExecFuture<'a, u32> {
        self.record("start", &task.id);
        let pid = {
            let mut st = self.lock();
            st.files.insert(task.id.clone(), files.to_vec());
            st.next_pid += 1;
            st.next_pid
        };
        self.set(&task.id, Some(ObservedState::Running { pid }));
        Box::pin(async move { Ok(pid) })
    }

    fn wait<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ExitInfo> {
        // Subscribed before looking, so an exit in between is not missed.
        let mut changed = self.changed.subscribe();
        Box::pin(async move {
            loop {
                match self.container(task_id) {
                    Some(ObservedState::Exited(exit)) => return Ok(exit),
                    None => {
                        return Err(ExecutorError::NotFound {
                            task: task_id.to_string(),
                        })
                    }
                    Some(_) => {}
                }
                if changed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }

    fn probe<'a>(
        &'a self,
        task_id: &'a str,
        _argv: &'a [String],
        _timeout: Duration,
    ) -> ExecFuture<'a, ProbeResult> {
        self.record("probe", task_id);
        let result = match self.container(task_id) {
            Some(ObservedState::Running { .. }) if self.lock().healthy.contains(task_id) => {
                Ok(ProbeResult::Healthy)
            }
            Some(ObservedState::Running { .. }) => Ok(ProbeResult::Failed("exit 1".into())),
            _ => Err(ExecutorError::NotFound {
                task: task_id.to_string(),
            }),
        };
        Box::pin(async move { result })
    }

    fn stop<'a>(
        &'a self,
        task_id: &'a str,
        _signal: Option<Signal>,
        _grace: Duration,
    ) -> ExecFuture<'a, Option<ExitInfo>> {
        self.record("stop", task_id);
        let exit = match self.container(task_id) {
            Some(ObservedState::Running { .. }) => {
                self.exit(task_id, SIGTERM_EXIT);
                Some(ExitInfo {
                    exit_code: SIGTERM_EXIT,
                    exited_at: None,
                })
            }
            Some(ObservedState::Exited(exit)) => Some(exit),
            Some(ObservedState::Created) | None => None,
        };
        Box::pin(async move { Ok(exit) })
    }

    fn remove<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ()> {
        self.record("remove", task_id);
        self.set(task_id, None);
        Box::pin(async { Ok(()) })
    }

    fn remove_logs(&self, task_id: &str) -> Result<(), ExecutorError> {
        self.record("remove_logs", task_id);
        crate::executor::remove_task_dir(self.data_dir(), task_id)
    }

    fn list(&self) -> ExecFuture<'_, Vec<Observed>> {
        let list = self
            .lock()
            .containers
            .iter()
            .map(|(id, state)| Observed {
                task_id: id.clone(),
                service_id: "svc".into(),
                labels: HashMap::new(),
                state: state.clone(),
            })
            .collect();
        Box::pin(async move { Ok(list) })
    }

    fn usage(&self) -> ExecFuture<'_, Vec<TaskUsage>> {
        let usage = self
            .lock()
            .containers
            .iter()
            .filter(|(_, s)| matches!(s, ObservedState::Running { .. }))
            .map(|(id, _)| TaskUsage {
                task_id: id.clone(),
                cpu_seconds_total: 1.5,
                ..Default::default()
            })
            .collect();
        Box::pin(async move { Ok(usage) })
    }
}

/// A task as the manager assigns it: desired RUNNING, state ASSIGNED.
pub(super) fn task(id: &str) -> Task {
    Task {
        id: id.to_string(),
        service_id: "svc".into(),
        service_name: "web".into(),
        slot: 1,
        node_id: "node".into(),
        spec: Some(Box::new(ContainerSpec {
            image: "busybox:latest".into(),
            stop_grace_period_ms: 1_000,
            ..Default::default()
        })),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Loopback networking that records each attach and detach ("attach ID", "detach ID").
#[derive(Default)]
pub(super) struct RecordingNetworks {
    calls: Mutex<Vec<String>>,
}

impl RecordingNetworks {
    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl TaskNetworks for RecordingNetworks {
    fn attach<'a>(&'a self, task: &'a Task, _running: Option<u32>) -> NetFuture<'a, TaskNetwork> {
        self.record(format!("attach {}", task.id));
        Box::pin(async { Ok(TaskNetwork::default()) })
    }
    fn detach<'a>(&'a self, task_id: &'a str) -> NetFuture<'a, ()> {
        self.record(format!("detach {task_id}"));
        Box::pin(async { Ok(()) })
    }
    fn set_peers(&self, _peers: Vec<NetworkPeers>) -> NetFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn retain<'a>(&'a self, _keep: &'a [Task]) -> NetFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// The executor and reporter controllers share, and every status the reporter queued.
pub(super) struct Harness {
    pub(super) exec: Arc<FakeExecutor>,
    pub(super) reporter: Arc<Reporter>,
    pub(super) ctx: Arc<Ctx>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with_executor(FakeExecutor::new())
    }

    /// A fresh agent's view (an empty reporter) of an executor that may already hold state.
    pub(super) fn with_executor(exec: Arc<FakeExecutor>) -> Self {
        Self::with_parts(exec, Arc::new(crate::network::Loopback))
    }

    /// As [`Self::with_executor`], with `network` for the tasks' networks.
    pub(super) fn with_parts(exec: Arc<FakeExecutor>, network: Arc<dyn TaskNetworks>) -> Self {
        let reporter = Arc::new(Reporter::new("node".into()));
        let ctx = Arc::new(Ctx::new(exec.clone(), network, reporter.clone()));
        Harness {
            exec,
            reporter,
            ctx,
        }
    }

    /// Every status the task's controller reported so far, in order (whether or not a later
    /// one overtook it in the reporter's queue).
    pub(super) fn statuses(&self, task_id: &str) -> Vec<TaskStatus> {
        self.reporter
            .queued()
            .iter()
            .filter(|u| u.task_id == task_id)
            .filter_map(|u| u.status.clone())
            .collect()
    }

    pub(super) fn states(&self, task_id: &str) -> Vec<TaskState> {
        self.statuses(task_id)
            .iter()
            .map(|s| TaskState::try_from(s.state).unwrap())
            .collect()
    }

    /// The task's status once it reaches `state`.
    pub(super) async fn wait_for(&self, task_id: &str, state: TaskState) -> TaskStatus {
        let statuses = eventually(&format!("task {task_id} reaching {state:?}"), || {
            self.statuses(task_id)
                .into_iter()
                .find(|s| s.state == state as i32)
        })
        .await;
        statuses
    }
}

/// Polls `check` until it gives a value; fails the test after [`DEADLINE`].
pub(super) async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
