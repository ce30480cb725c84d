//! One healthcheck probe inside a running container, as docker runs one: containerd's
//! `Tasks.Exec` with the container's own process spec (user, groups, environment, working
//! directory, capabilities, limits) and the check's arguments, killed when it outlasts its
//! timeout. Exit 0 is healthy; anything else, a timeout included, is a failure whose text
//! carries the end of the probe's output.
//!
//! The output goes to `<task dir>/health.out` through containerd's `file://` stdio (the shim
//! writes it, as it does for `binary://` logs), rewritten for each probe.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest, StartRequest,
    WaitRequest,
};
use nix::sys::signal::Signal;
use tonic::Code;
use tracing::debug;

use super::ExecutorError;
use crate::containerd::{not_found_as_none, Containerd};
use crate::health::ProbeResult;
use crate::logs;

/// containerd's type URL for an OCI process spec in an `Any` (what `Tasks.Exec` takes).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// How much of a probe's output is kept, from its end (docker keeps 4 KiB).
const OUTPUT_LIMIT: u64 = 4096;
/// How long a probe killed on timeout may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Exec IDs unique within this daemon (containerd wants one per live exec of a container);
/// with the daemon's pid, so a probe left behind by a killed daemon never clashes with one of
/// its successor's.
static NEXT_EXEC: AtomicU64 = AtomicU64::new(1);

fn probe_error(task_id: &str, reason: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Probe {
        task: task_id.to_string(),
        reason: reason.to_string(),
    }
}

/// Runs `argv` in the task's container; see the module documentation. An error means the
/// probe could not run at all (no such container, containerd away, a spec that does not
/// parse).
pub(super) async fn probe(
    cd: &Containerd,
    data_dir: &Path,
    task_id: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<ProbeResult, ExecutorError> {
    let process = exec_process(cd, task_id, argv).await?;
    let exec_id = format!(
        "health-{}-{}",
        std::process::id(),
        NEXT_EXEC.fetch_add(1, Ordering::Relaxed)
    );
    let output = logs::task_dir(data_dir, task_id).join("health.out");
    std::fs::write(&output, b"").map_err(|source| ExecutorError::Io {
        task: task_id.to_string(),
        what: "cannot write",
        path: output.clone(),
        source,
    })?;
    let stdio = format!("file://{}", output.display());
    cd.tasks()
        .exec(cd.request(ExecProcessRequest {
            container_id: task_id.to_string(),
            stdin: String::new(),
            stdout: stdio.clone(),
            stderr: stdio,
            terminal: false,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.to_string(),
                value: process,
            }),
            exec_id: exec_id.clone(),
        }))
        .await
        .map_err(|s| ExecutorError::containerd("Tasks.Exec", task_id, s))?;
    let ended = run(cd, task_id, &exec_id, timeout).await;
    // The exec's record goes whatever happened; a container that is gone took it along.
    // Deleting it also waits for the shim to finish copying its output into the file.
    let deleted = cd
        .tasks()
        .delete_process(cd.request(DeleteProcessRequest {
            container_id: task_id.to_string(),
            exec_id: exec_id.clone(),
        }))
        .await;
    if let Err(s) = not_found_as_none(deleted) {
        debug!(task = %task_id, exec = %exec_id, error = %s, "deleting the probe's process failed");
    }
    let with_output = |what: String| match output_tail(&output) {
        Some(out) => format!("{what}: {out}"),
        None => what,
    };
    Ok(match ended? {
        Ended::Exited(0) => ProbeResult::Healthy,
        Ended::Exited(code) => {
            ProbeResult::Failed(with_output(format!("the healthcheck exited {code}")))
        }
        Ended::TimedOut => ProbeResult::Failed(with_output(format!(
            "the healthcheck timed out after {timeout:?}"
        ))),
        Ended::NotStarted(why) => {
            ProbeResult::Failed(format!("the healthcheck could not start: {why}"))
        }
    })
}

/// How a probe's process ended.
enum Ended {
    Exited(u32),
    /// Killed once its timeout passed.
    TimedOut,
    /// runc could not start it (e.g. the command is not in the image): a failed probe, as
    /// docker counts it.
    NotStarted(String),
}

/// The container's process spec with the probe's arguments, as JSON.
async fn exec_process(
    cd: &Containerd,
    task_id: &str,
    argv: &[String],
) -> Result<Vec<u8>, ExecutorError> {
    let got = cd
        .containers()
        .get(cd.request(GetContainerRequest {
            id: task_id.to_string(),
        }))
        .await;
    let container = not_found_as_none(got)
        .map_err(|s| ExecutorError::containerd("Containers.Get", task_id, s))?
        .and_then(|r| r.into_inner().container)
        .ok_or_else(|| ExecutorError::NotFound {
            task: task_id.to_string(),
        })?;
    let spec = container
        .spec
        .ok_or_else(|| probe_error(task_id, "the container has no OCI spec"))?;
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&spec.value)
        .map_err(|e| probe_error(task_id, format!("the container's OCI spec: {e}")))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| probe_error(task_id, "the container's OCI spec has no process"))?;
    process.set_args(Some(argv.to_vec()));
    process.set_terminal(Some(false));
    process.set_console_size(None);
    serde_json::to_vec(&process).map_err(|e| probe_error(task_id, e))
}

/// Starts the exec and waits for it, killing it once `timeout` has passed.
async fn run(
    cd: &Containerd,
    task_id: &str,
    exec_id: &str,
    timeout: Duration,
) -> Result<Ended, ExecutorError> {
    let started = cd
        .tasks()
        .start(cd.request(StartRequest {
            container_id: task_id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await;
    if let Err(s) = started {
        // A container that is gone, or containerd away, is the caller's news.
        if matches!(s.code(), Code::NotFound | Code::Unavailable) {
            return Err(ExecutorError::containerd("Tasks.Start", task_id, s));
        }
        return Ok(Ended::NotStarted(s.message().to_string()));
    }
    let mut tasks = cd.tasks();
    let wait = tasks.wait(cd.request(WaitRequest {
        container_id: task_id.to_string(),
        exec_id: exec_id.to_string(),
    }));
    match tokio::time::timeout(timeout, wait).await {
        Ok(res) => Ok(Ended::Exited(
            res.map_err(|s| ExecutorError::containerd("Tasks.Wait", task_id, s))?
                .into_inner()
                .exit_status,
        )),
        Err(_elapsed) => {
            kill_probe(cd, task_id, exec_id).await;
            Ok(Ended::TimedOut)
        }
    }
}

/// SIGKILL to a probe that outlasted its timeout, and a bounded wait for it to be reaped.
async fn kill_probe(cd: &Containerd, task_id: &str, exec_id: &str) {
    let killed = cd
        .tasks()
        .kill(cd.request(KillRequest {
            container_id: task_id.to_string(),
            exec_id: exec_id.to_string(),
            signal: Signal::SIGKILL as u32,
            all: false,
        }))
        .await;
    if let Err(s) = killed {
        debug!(task = %task_id, exec = %exec_id, error = %s, "killing the timed-out probe failed");
        return;
    }
    let mut tasks = cd.tasks();
    let wait = tasks.wait(cd.request(WaitRequest {
        container_id: task_id.to_string(),
        exec_id: exec_id.to_string(),
    }));
    let _ = tokio::time::timeout(KILL_WAIT, wait).await;
}

/// The end of the probe's output, on one line; `None` when it printed nothing.
fn output_tail(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_LIMIT)))
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}
