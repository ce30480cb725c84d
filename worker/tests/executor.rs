//! The executor on a real containerd (a private one per test, from `shoal_tests`), running the
//! busybox test image: start, labels and cgroup, json logs through the log driver, stop with
//! grace, exit codes, removal, and adoption by a second executor as after a daemon restart.
//!
//! The log driver containerd's shim starts is this test binary itself (see `common`).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots::StatSnapshotRequest;
use containerd_client::services::v1::{GetContainerRequest, GetRequest};
use shoal_proto::Task;
use shoal_tests::containerd::ContainerdHost;
use shoal_worker::containerd::{Containerd, NAMESPACE};
use shoal_worker::executor::{
    ContainerdExecutor, Executor, ObservedState, LABEL_TASK_ID, SNAPSHOTTER,
};
use shoal_worker::health::ProbeResult;
use shoal_worker::logdriver::JsonLogEntry;
use shoal_worker::logs;
use shoal_worker::network::TaskNetwork;

use common::busybox_task as task_with;

/// How long a test waits for an outcome it asserts: generous, since durations belong in
/// benchmarks.
const OUTCOME_DEADLINE: Duration = Duration::from_secs(120);

fn task(args: &[&str]) -> Task {
    task_with(args, |_| {})
}

struct Env {
    executor: Arc<ContainerdExecutor>,
    data: PathBuf,
    // Dropped last: kills what is left, stops containerd, removes its directory.
    host: ContainerdHost,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let (host, dir, data) = common::containerd_with_busybox().await;
        let executor = Arc::new(common::executor(&host, &data).await);
        Env {
            executor,
            data,
            host,
            _dir: dir,
        }
    }

    /// A second executor on a fresh connection, as a restarted daemon would have.
    async fn restarted_executor(&self) -> ContainerdExecutor {
        common::executor(&self.host, &self.data).await
    }

    async fn run(&self, task: &Task) -> u32 {
        let image = self.executor.prepare(task).await.expect("prepare");
        match self
            .executor
            .start(task, &image, &TaskNetwork::default(), &[])
            .await
        {
            Ok(pid) => pid,
            Err(e) => panic!(
                "start failed: {e}\ncontainerd log:\n{}",
                self.host.log_tail(30)
            ),
        }
    }

    fn log_entries(&self, task_id: &str) -> Vec<JsonLogEntry> {
        std::fs::read_to_string(logs::log_path(&self.data, task_id))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    async fn wait_for_log(&self, task_id: &str, line: &str) -> Vec<JsonLogEntry> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let entries = self.log_entries(task_id);
            if entries.iter().any(|e| e.log == line) {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "{line:?} never appeared in the log of {task_id}; log so far: {entries:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn cgroup_paths(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string))
        .collect()
}

#[tokio::test]
async fn start_runs_a_labelled_container_in_its_own_cgroup_and_logs_json() {
    let env = Env::new().await;
    let t = task_with(
        &[
            "sh",
            "-c",
            "echo hello; echo oops >&2; cat /etc/hostname; id -u; pwd; echo \"A=$A\"; sleep 300",
        ],
        |s| {
            s.user = "nobody".into();
            s.dir = "/tmp".into();
            s.env = vec!["A=from-task".into()];
        },
    );
    let pid = env.run(&t).await;
    assert!(pid > 0);

    // Labels.
    let c = env
        .executor
        .containerd()
        .containers()
        .get(
            env.executor
                .containerd()
                .request(GetContainerRequest { id: t.id.clone() }),
        )
        .await
        .unwrap()
        .into_inner()
        .container
        .unwrap();
    assert_eq!(c.labels[LABEL_TASK_ID], t.id);
    assert_eq!(c.labels["shoal.service.id"], "svc0123456789");
    assert_eq!(c.labels["shoal.service.name"], "web");
    assert_eq!(c.labels["shoal.task.slot"], "2");
    assert_eq!(c.labels["shoal.node.id"], "node0123456789");
    assert_eq!(c.snapshot_key, t.id);

    // Its own cgroup under /shoal, in every hierarchy (v1) or the unified one (v2).
    let want = format!("/shoal/{}", t.id);
    let paths = cgroup_paths(pid);
    assert!(
        paths.iter().any(|p| p == &want),
        "pid {pid} is not in cgroup {want}: {paths:?}"
    );

    // stdout and stderr in the json log, Docker's format.
    let entries = env.wait_for_log(&t.id, "/tmp\n").await;
    let find = |log: &str| {
        entries
            .iter()
            .find(|e| e.log == log)
            .unwrap_or_else(|| panic!("no {log:?} in {entries:?}"))
    };
    assert_eq!(find("hello\n").stream, "stdout");
    assert_eq!(find("oops\n").stream, "stderr");
    assert!(chrono::DateTime::parse_from_rfc3339(&find("hello\n").time).is_ok());
    find(&format!("{}\n", &t.id[..12]));
    find("65534\n");
    env.wait_for_log(&t.id, "A=from-task\n").await;

    let exit = env
        .executor
        .stop(&t.id, None, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the task was running");
    // sleep is not PID 1, so SIGTERM to every process kills it and then sh has nothing left.
    assert_ne!(exit.exit_code, 0);
    env.executor.remove(&t.id).await.unwrap();
}

#[tokio::test]
async fn stop_sends_the_stop_signal_then_kills_after_grace() {
    let env = Env::new().await;

    // Honours the signal: the trap runs and sets the exit code, well within the grace period.
    let polite = task_with(
        &[
            "sh",
            "-c",
            "trap 'echo got $SIG; exit 3' USR1; echo ready; while true; do sleep 0.1; done",
        ],
        |s| {
            s.stop_signal = "SIGUSR1".into();
            s.env = vec!["SIG=usr1".into()];
        },
    );
    env.run(&polite).await;
    env.wait_for_log(&polite.id, "ready\n").await;
    let exit = tokio::time::timeout(
        OUTCOME_DEADLINE,
        env.executor.stop(&polite.id, None, Duration::from_secs(20)),
    )
    .await
    .expect("stop returns")
    .unwrap()
    .unwrap();
    // Its own exit status from the trap, not SIGKILL's 137: the recorded stop signal reached it
    // and it ended within the grace period.
    assert_eq!(exit.exit_code, 3);
    let stopped = env.executor.wait(&polite.id).await.unwrap();
    assert_eq!(stopped.exit_code, 3, "the task is stopped");
    env.wait_for_log(&polite.id, "got usr1\n").await;

    // Ignores SIGTERM: killed once the grace period is over.
    let stubborn = task(&["sh", "-c", "trap '' TERM; echo ready; sleep 300"]);
    env.run(&stubborn).await;
    env.wait_for_log(&stubborn.id, "ready\n").await;
    let started = Instant::now();
    let exit = env
        .executor
        .stop(&stubborn.id, None, Duration::from_millis(1500))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(exit.exit_code, 137);

    // Stopping an exited task just reports its exit again.
    let again = env
        .executor
        .stop(&stubborn.id, None, Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.exit_code, 137);
    for t in [&polite, &stubborn] {
        env.executor.remove(&t.id).await.unwrap();
    }
    // No task at all: nothing to stop.
    assert!(env
        .executor
        .stop(&stubborn.id, None, Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_probe_reports_both_streams_of_its_output_and_leaves_no_pipe_behind() {
    let env = Env::new().await;
    let t = task(&["sleep", "300"]);
    env.run(&t).await;
    let probe = |script: &str, timeout_ms: u64| {
        let argv = ["sh", "-c", script].map(String::from).to_vec();
        let executor = env.executor.clone();
        let id = t.id.clone();
        async move {
            executor
                .probe(&id, &argv, Duration::from_millis(timeout_ms))
                .await
                .expect("the probe runs")
        }
    };

    assert_eq!(probe("true", 10_000).await, ProbeResult::Healthy);
    // What stderr writes after stdout has closed is part of the output, every time (a
    // `file://` stdio lost it when the shim closed the file at stdout's end; one FIFO for both
    // streams could seem to end when stdout's writer left). The two streams travel through
    // separate pipes, so which comes first is not fixed: only that both arrive.
    for _ in 0..10 {
        let outcome = probe(
            "echo checking; exec >&-; sleep 0.05; echo missing-file >&2; exit 3",
            10_000,
        )
        .await;
        assert_eq!(
            failure_words(&outcome, "the healthcheck exited 3: "),
            ["checking", "missing-file"],
            "{outcome:?}"
        );
    }
    // More than a pipe holds (64 KiB), on either stream: read while the probe runs (a full
    // pipe would block the probe until it timed out), the end of each kept.
    for (stream, redirect) in [("stdout", ""), ("stderr", " >&2")] {
        let script = format!(
            "(head -c 200000 /dev/zero | tr '\\0' x; echo; echo end-of-{stream}){redirect}; exit 1"
        );
        let ProbeResult::Failed(long) = probe(&script, 10_000).await else {
            panic!("a probe that exits 1 failed to fail");
        };
        assert!(long.starts_with("the healthcheck exited 1: xxx"), "{long}");
        assert!(long.ends_with(&format!("x end-of-{stream}")), "{long}");
        assert!(
            long.len() < 4200,
            "only the end is kept: {} bytes",
            long.len()
        );
    }
    // Killed on timeout, with what it printed before.
    assert_eq!(
        probe("echo started; sleep 30", 500).await,
        ProbeResult::Failed("the healthcheck timed out after 500ms: started".into())
    );

    let left: Vec<_> = std::fs::read_dir(logs::task_dir(&env.data, &t.id))
        .expect("the task's directory")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("health-"))
        .collect();
    assert!(left.is_empty(), "probe pipes left behind: {left:?}");
}

/// The words of a failed probe's output after `prefix`, sorted: what both streams said,
/// whichever arrived first.
fn failure_words(outcome: &ProbeResult, prefix: &str) -> Vec<String> {
    let ProbeResult::Failed(reason) = outcome else {
        panic!("the probe should have failed: {outcome:?}");
    };
    let output = reason
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{reason:?} should start with {prefix:?}"));
    let mut words: Vec<String> = output.split_whitespace().map(String::from).collect();
    words.sort();
    words
}

#[tokio::test]
async fn wait_reports_exit_codes_and_remove_leaves_nothing() {
    let env = Env::new().await;

    let exits = task(&["sh", "-c", "exit 7"]);
    env.run(&exits).await;
    let exit = env.executor.wait(&exits.id).await.unwrap();
    assert_eq!(exit.exit_code, 7);
    assert!(exit.exited_at.is_some());

    let killed = task(&["sleep", "300"]);
    let pid = env.run(&killed).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), env.executor.wait(&killed.id))
        .await
        .expect("wait returns once the process is killed")
        .unwrap();
    assert_eq!(exit.exit_code, 137);

    let cd = env.executor.containerd();
    for t in [&exits, &killed] {
        env.executor.remove(&t.id).await.unwrap();
        // Idempotent.
        env.executor.remove(&t.id).await.unwrap();
        let task_status = cd
            .tasks()
            .get(cd.request(GetRequest {
                container_id: t.id.clone(),
                exec_id: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(task_status.code(), tonic::Code::NotFound);
        let container = cd
            .containers()
            .get(cd.request(GetContainerRequest { id: t.id.clone() }))
            .await
            .unwrap_err();
        assert_eq!(container.code(), tonic::Code::NotFound);
        let snapshot = cd
            .snapshots()
            .stat(cd.request(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: t.id.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(snapshot.code(), tonic::Code::NotFound);
        assert!(matches!(
            env.executor.wait(&t.id).await,
            Err(shoal_worker::executor::ExecutorError::NotFound { .. })
        ));
        // The log outlives the container, until remove_logs.
        assert!(logs::log_path(&env.data, &t.id).exists());
        env.executor.remove_logs(&t.id).unwrap();
        env.executor.remove_logs(&t.id).unwrap();
        assert!(!logs::task_dir(&env.data, &t.id).exists());
    }
    assert!(env.executor.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_restarted_executor_adopts_running_and_exited_containers() {
    let env = Env::new().await;
    let running = task(&[
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    ]);
    let exited = task(&["sh", "-c", "echo bye; exit 4"]);
    let pid = env.run(&running).await;
    env.run(&exited).await;
    env.executor.wait(&exited.id).await.unwrap();
    env.wait_for_log(&running.id, "tick 1\n").await;

    // The daemon goes away; the log driver belongs to the shim and keeps writing.
    let executor = env.restarted_executor().await;
    let before = env.log_entries(&running.id).len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(env.log_entries(&running.id).len() > before);

    let mut observed = executor.list().await.unwrap();
    observed.sort_by_key(|o| o.task_id == running.id);
    assert_eq!(observed.len(), 2);
    assert_eq!(observed[0].task_id, exited.id);
    assert!(matches!(
        observed[0].state,
        ObservedState::Exited(e) if e.exit_code == 4
    ));
    assert_eq!(observed[1].task_id, running.id);
    assert_eq!(observed[1].service_id, "svc0123456789");
    assert_eq!(observed[1].state, ObservedState::Running { pid });

    // An adopted task can be waited on and stopped like one started here.
    let waiter = {
        let id = running.id.clone();
        let cd = Containerd::connect(env.host.socket(), NAMESPACE)
            .await
            .unwrap();
        let other =
            ContainerdExecutor::new(cd, env.data.clone(), PathBuf::from("/nonexistent")).unwrap();
        tokio::spawn(async move { other.wait(&id).await })
    };
    let exit = executor
        .stop(&running.id, None, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let waited = waiter.await.unwrap().unwrap();
    assert_eq!(waited.exit_code, exit.exit_code);
    for t in [&running, &exited] {
        executor.remove(&t.id).await.unwrap();
    }
    assert!(executor.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_start_leaves_no_container() {
    let env = Env::new().await;
    let t = task(&["/does/not/exist"]);
    let image = env.executor.prepare(&t).await.unwrap();
    let err = env
        .executor
        .start(&t, &image, &TaskNetwork::default(), &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Tasks."), "{err}");
    assert!(env.executor.list().await.unwrap().is_empty());

    let unknown_user = task_with(&["true"], |s| s.user = "ghost".into());
    let err = env
        .executor
        .start(&unknown_user, &image, &TaskNetwork::default(), &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unable to find user ghost"),
        "{err}"
    );
    assert!(env.executor.list().await.unwrap().is_empty());
    let cd = env.executor.containerd();
    let snapshot = cd
        .snapshots()
        .stat(cd.request(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: unknown_user.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(snapshot.code(), tonic::Code::NotFound);
}
