//! What the agent asks of a container runtime, as one trait, [`Executor`] (swarmkit's
//! `agent/exec`): prepare a task's image, start its container, wait for it, probe its health,
//! stop it, remove it, inspect what already runs (for adoption) and read its resource usage.
//!
//! [`ContainerdExecutor`] is the implementation that runs tasks on containerd. The agent only
//! holds an `Arc<dyn Executor>`, so its controller, reporter and reconcile logic are unit-tested
//! against an in-memory executor without containerd or root.

mod containerd;
mod files;
mod health;
mod mounts;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use shoal_proto::{Task, TaskUsage};
use tonic::Code;

use crate::health::ProbeResult;
use crate::image::{ImageError, ResolvedImage};
use crate::logs;
use crate::network::TaskNetwork;
use crate::spec::SpecError;

pub use containerd::{
    ContainerdExecutor, LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME, LABEL_STOP_SIGNAL,
    LABEL_TASK_ID, LABEL_TASK_SLOT, RUNTIME, SNAPSHOTTER, SPEC_TYPE_URL,
};
pub use files::{files_dir, TaskFile};
pub use health::PROCESS_TYPE_URL;

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("task {task} has no container spec: the manager sent an incomplete task")]
    NoContainerSpec { task: String },
    #[error(
        "containerd {op} for task {task} failed: {} ({:?}); check containerd's log",
        .status.message(), .status.code()
    )]
    Containerd {
        op: &'static str,
        task: String,
        status: tonic::Status,
    },
    #[error("containerd has no task {task}: the container does not exist or was never started")]
    NotFound { task: String },
    #[error("task {task}: {what} {path}: {source}; check that the data directory is writable")]
    Io {
        task: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "task {task} did not exit within {timeout:?} of SIGKILL; check runc and the kernel log"
    )]
    KillTimeout { task: String, timeout: Duration },
    #[error("task {task}: cannot mount {target}: {reason}")]
    Mount {
        task: String,
        target: String,
        reason: String,
    },
    /// The node cannot measure its tasks at all (e.g. no cgroup hierarchy found); asking again
    /// will not help.
    #[error("task resource usage cannot be read on this node: {reason}")]
    UsageUnavailable { reason: String },
    #[error("task {task}: cannot run its healthcheck: {reason}")]
    Probe { task: String, reason: String },
}

impl ExecutorError {
    pub(crate) fn containerd(op: &'static str, task: &str, status: tonic::Status) -> Self {
        ExecutorError::Containerd {
            op,
            task: task.to_string(),
            status,
        }
    }

    /// A `map_err` for an I/O failure of task `task` on `path` (`what`: "cannot create", …).
    pub(crate) fn io(
        task: &str,
        what: &'static str,
        path: &Path,
    ) -> impl FnOnce(io::Error) -> Self {
        let (task, path) = (task.to_string(), path.to_path_buf());
        move |source| ExecutorError::Io {
            task,
            what,
            path,
            source,
        }
    }

    /// True when containerd could not be reached at all (worth retrying the same call).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ExecutorError::Containerd { status, .. }
            if matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled))
    }
}

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit status; 128+N when killed by signal N.
    pub exit_code: i32,
    pub exited_at: Option<SystemTime>,
}

/// What the runtime says about a Shoal container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedState {
    /// The container exists but its process was never started (no task, or a created task).
    Created,
    Running {
        pid: u32,
    },
    Exited(ExitInfo),
}

/// One Shoal container found in the runtime.
#[derive(Debug, Clone)]
pub struct Observed {
    pub task_id: String,
    pub service_id: String,
    pub labels: std::collections::HashMap<String, String>,
    pub state: ObservedState,
}

/// The future an [`Executor`] call returns: boxed so the trait can be used as `dyn Executor`,
/// and `Send` so the agent's controllers can run on any runtime thread.
pub type ExecFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ExecutorError>> + Send + 'a>>;

/// The container runtime as the agent sees it; see the module documentation. Every call is
/// idempotent where the method says so, because the agent retries after daemon and containerd
/// restarts.
pub trait Executor: Send + Sync + 'static {
    /// The worker data directory; each task's directory (logs, `/etc` files, the agent's
    /// `status.json`) is `<data_dir>/tasks/<task ID>`.
    fn data_dir(&self) -> &Path;

    /// Makes the task's image available (pulled, unpacked) and describes it.
    fn prepare<'a>(&'a self, task: &'a Task) -> ExecFuture<'a, ResolvedImage>;

    /// Creates the task's container and starts it, with `files` (its secrets and configs) in
    /// memory at their paths; returns its pid. On failure nothing of the container is left
    /// behind (its task directory is kept).
    fn start<'a>(
        &'a self,
        task: &'a Task,
        image: &'a ResolvedImage,
        net: &'a TaskNetwork,
        files: &'a [TaskFile],
    ) -> ExecFuture<'a, u32>;

    /// Waits for the task's process to exit; returns at once if it already has.
    /// [`ExecutorError::NotFound`] when there is no such process.
    fn wait<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ExitInfo>;

    /// Runs one healthcheck probe, `argv`, inside the task's running container (as its own
    /// process runs: user, environment, working directory) and says whether it passed; a
    /// probe still running after `timeout` is killed and fails. An error means it could not
    /// run at all ([`ExecutorError::NotFound`]: the container is gone).
    fn probe<'a>(
        &'a self,
        task_id: &'a str,
        argv: &'a [String],
        timeout: Duration,
    ) -> ExecFuture<'a, ProbeResult>;

    /// Sends `signal` (else the task's stop signal), then SIGKILL once `grace` has passed.
    /// Returns how the process exited, or `None` when there was none. Idempotent.
    fn stop<'a>(
        &'a self,
        task_id: &'a str,
        signal: Option<Signal>,
        grace: Duration,
    ) -> ExecFuture<'a, Option<ExitInfo>>;

    /// Deletes the task's container and whatever the runtime keeps for it, killing a process
    /// still running. Idempotent. The task's directory is kept: see [`Executor::remove_logs`].
    fn remove<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ()>;

    /// Removes the task's directory: its logs (all rotations) and `/etc` files. Idempotent.
    fn remove_logs(&self, task_id: &str) -> Result<(), ExecutorError> {
        remove_task_dir(self.data_dir(), task_id)
    }

    /// Inspects every Shoal container the runtime holds, with the state of its process.
    fn list(&self) -> ExecFuture<'_, Vec<Observed>>;

    /// The resource usage of every running task. A task that exits meanwhile is left out.
    /// [`ExecutorError::UsageUnavailable`] when the node cannot measure usage at all.
    fn usage(&self) -> ExecFuture<'_, Vec<TaskUsage>>;
}

/// Removes `<data_dir>/tasks/<task_id>` (its in-memory files unmounted first); nothing to do
/// when it is already gone.
pub(crate) fn remove_task_dir(data_dir: &Path, task_id: &str) -> Result<(), ExecutorError> {
    let dir = logs::task_dir(data_dir, task_id);
    files::remove(task_id, &dir)?;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ExecutorError::Io {
            task: task_id.to_string(),
            what: "cannot remove",
            path: dir,
            source,
        }),
    }
}
