//! One healthcheck probe inside a running container, as docker runs one: containerd's
//! `Tasks.Exec` with the container's own process spec (user, groups, environment, working
//! directory, capabilities, limits) and the check's arguments, killed when it outlasts its
//! timeout. Exit 0 is healthy; anything else, a timeout included, is a failure whose text
//! carries the end of the probe's output.
//!
//! The output comes back through two FIFOs in the task's directory, the exec's stdout and its
//! stderr, read as they come into one buffer, as docker reads its probes: the shim copies each
//! stream into its FIFO and closes it once the stream ends, so reading both to their ends gets
//! all of the output. One FIFO per stream, because the end of a FIFO is "no writer left": with
//! both streams on one, stdout's writer could come and go before stderr's had opened, and the
//! output would seem to end there. (Nor `file://` stdio: containerd 1.6's shim closes that file
//! when stdout ends, and drops what stderr still had to write.)

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest, StartRequest,
    WaitRequest,
};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tonic::Code;
use tracing::debug;

use super::ExecutorError;
use crate::containerd::{not_found_as_none, Containerd};
use crate::health::ProbeResult;
use crate::logs;

/// containerd's type URL for an OCI process spec in an `Any` (what `Tasks.Exec` takes).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// How much of a probe's output is kept, from its end (docker keeps 4 KiB).
const OUTPUT_LIMIT: usize = 4096;
/// How long the rest of the output may take to come once the probe's process is gone.
const OUTPUT_WAIT: Duration = Duration::from_secs(2);
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
    let (fifos, mut streams) = OutputFifos::create(&logs::task_dir(data_dir, task_id), &exec_id)
        .map_err(|(path, source)| ExecutorError::Io {
            task: task_id.to_string(),
            what: "cannot create the healthcheck's output pipe",
            path,
            source,
        })?;
    let mut output = Tail::default();
    let probe = async {
        cd.tasks()
            .exec(cd.request(ExecProcessRequest {
                container_id: task_id.to_string(),
                stdin: String::new(),
                stdout: fifos.paths[0].display().to_string(),
                stderr: fifos.paths[1].display().to_string(),
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
        // Deleting it also makes the shim close its ends of the FIFOs, should something the
        // probe left behind still hold the probe's streams open.
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
        ended
    };
    // Read while the probe runs: a probe that writes more than a pipe holds would block.
    tokio::pin!(probe);
    let ended = loop {
        tokio::select! {
            ended = &mut probe => break ended?,
            bytes = streams.next(), if !streams.ended() => output.push(&bytes),
        }
    };
    if !matches!(ended, Ended::NotStarted(_)) {
        // What the shim still had to copy when the probe ended; bounded, for a shim that
        // never opened its ends.
        let _ = tokio::time::timeout(OUTPUT_WAIT, async {
            while !streams.ended() {
                output.push(&streams.next().await);
            }
        })
        .await;
    }
    let with_output = |what: String| match output.text() {
        Some(out) => format!("{what}: {out}"),
        None => what,
    };
    Ok(match ended {
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

/// The FIFOs a probe's stdout and stderr come through; removed when dropped.
struct OutputFifos {
    paths: [PathBuf; 2],
}

impl OutputFifos {
    /// Opened for reading before the shim opens them for writing (its writers wait for a
    /// reader); until a writer has come and gone, reading one waits rather than ending.
    fn create(dir: &Path, exec_id: &str) -> Result<(Self, Streams), (PathBuf, std::io::Error)> {
        let fifos = OutputFifos {
            paths: ["out", "err"].map(|s| dir.join(format!("{exec_id}.{s}"))),
        };
        let open = |path: &PathBuf| {
            let failed = |e: std::io::Error| (path.clone(), e);
            // A leftover of a daemon killed mid-probe has the same name only if its pid came
            // back.
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(failed(e));
                }
            }
            nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)
                .map_err(|e| failed(std::io::Error::from(e)))?;
            let rx = pipe::OpenOptions::new()
                .open_receiver(path)
                .map_err(failed)?;
            Ok(Stream { rx, ended: false })
        };
        let out = open(&fifos.paths[0])?;
        let err = open(&fifos.paths[1])?;
        Ok((fifos, Streams { out, err }))
    }
}

impl Drop for OutputFifos {
    fn drop(&mut self) {
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One of a probe's streams, read from its FIFO.
struct Stream {
    rx: pipe::Receiver,
    /// Its writer closed it (or reading failed): there is no more.
    ended: bool,
}

impl Stream {
    /// The next bytes; none once the stream has ended.
    async fn next(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        match self.rx.read(&mut buf).await {
            Ok(0) | Err(_) => {
                self.ended = true;
                Vec::new()
            }
            Ok(n) => {
                buf.truncate(n);
                buf
            }
        }
    }
}

/// A probe's stdout and stderr.
struct Streams {
    out: Stream,
    err: Stream,
}

impl Streams {
    fn ended(&self) -> bool {
        self.out.ended && self.err.ended
    }

    /// The next bytes from whichever stream has some first (cancel-safe: a read either took
    /// bytes and returned them, or took none).
    async fn next(&mut self) -> Vec<u8> {
        tokio::select! {
            bytes = self.out.next(), if !self.out.ended => bytes,
            bytes = self.err.next(), if !self.err.ended => bytes,
            else => Vec::new(),
        }
    }
}

/// The end of a probe's output, both streams as they came.
#[derive(Default)]
struct Tail(VecDeque<u8>);

impl Tail {
    /// Keeps the last [`OUTPUT_LIMIT`] bytes.
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend(bytes);
        let excess = self.0.len().saturating_sub(OUTPUT_LIMIT);
        self.0.drain(..excess);
    }

    /// The output on one line; `None` when the probe printed nothing.
    fn text(&self) -> Option<String> {
        let bytes: Vec<u8> = self.0.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        (!text.is_empty()).then_some(text)
    }
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
