//! One task's lifecycle on the fake executor.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::{TaskState, TaskStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{exited, task, FakeExecutor, Harness, RecordingNetworks, SIGTERM_EXIT};
use crate::agent::controller::controller;
use crate::executor::{Executor, ObservedState};
use crate::logs;

/// Runs a controller for `t`, as the worker does; the sender is the assignment.
pub(super) fn spawn(
    h: &Harness,
    t: shoal_proto::Task,
    adopted: Option<ObservedState>,
) -> (watch::Sender<Option<shoal_proto::Task>>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Some(t));
    let handle = tokio::spawn(controller(h.ctx.clone(), rx, adopted));
    (tx, handle)
}

#[tokio::test]
async fn an_assigned_task_is_prepared_started_and_reported_running() {
    let h = Harness::new();
    let (_tx, _ctl) = spawn(&h, task("t1"), None);

    let running = h.wait_for("t1", TaskState::Running).await;
    assert_eq!(h.exec.calls("t1"), ["prepare", "start"]);
    assert_eq!(
        h.states("t1"),
        [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Starting,
            TaskState::Running
        ]
    );
    assert!(running.pid > 0, "RUNNING carries the pid: {running:?}");
    assert_eq!(running.container_id, "t1");
}

#[tokio::test]
async fn a_container_exiting_non_zero_fails_the_task_with_its_exit_code() {
    let h = Harness::new();
    let (_tx, ctl) = spawn(&h, task("t1"), None);
    h.wait_for("t1", TaskState::Running).await;

    h.exec.exit("t1", 3);
    let failed = h.wait_for("t1", TaskState::Failed).await;
    ctl.await.unwrap();
    assert_eq!(failed.exit_code, 3);
    assert_eq!(failed.err, "task: non-zero exit (3)");
    assert_eq!(h.exec.calls("t1"), ["prepare", "start", "remove"]);
    assert_eq!(
        h.exec.container("t1"),
        None,
        "an exited container is removed"
    );
    // Written down, so a restarted daemon reports it again rather than running the task.
    let path = logs::task_dir(h.exec.data_dir(), "t1").join("status.json");
    let saved: TaskStatus = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(saved, failed);
}

#[tokio::test]
async fn a_container_exiting_zero_completes_the_task() {
    let h = Harness::new();
    let (_tx, ctl) = spawn(&h, task("t1"), None);
    h.wait_for("t1", TaskState::Running).await;

    h.exec.exit("t1", 0);
    ctl.await.unwrap();
    let states = h.states("t1");
    assert_eq!(states.last(), Some(&TaskState::Complete), "{states:?}");
    assert!(!states.contains(&TaskState::Failed));
}

#[tokio::test]
async fn a_desired_shutdown_stops_the_container_and_reports_shutdown() {
    let h = Harness::new();
    let t = task("t1");
    let (tx, ctl) = spawn(&h, t.clone(), None);
    h.wait_for("t1", TaskState::Running).await;

    let mut stopping = t;
    stopping.desired_state = TaskState::Shutdown as i32;
    tx.send_replace(Some(stopping));
    ctl.await.unwrap();

    let shutdown = h.wait_for("t1", TaskState::Shutdown).await;
    assert_eq!(shutdown.exit_code, SIGTERM_EXIT);
    assert_eq!(h.exec.calls("t1"), ["prepare", "start", "stop", "remove"]);
}

#[tokio::test]
async fn a_task_that_cannot_be_prepared_is_rejected_and_never_started() {
    let h = Harness::new();
    let mut t = task("t1");
    t.spec = None;
    let (_tx, ctl) = spawn(&h, t, None);
    ctl.await.unwrap();

    let rejected = h.wait_for("t1", TaskState::Rejected).await;
    assert!(
        rejected.err.contains("no container spec"),
        "the executor's error is the task's: {rejected:?}"
    );
    assert_eq!(h.exec.calls("t1"), ["prepare"]);
}

#[tokio::test]
async fn the_network_is_attached_beside_the_image_and_let_go_when_the_image_fails() {
    let net = Arc::new(RecordingNetworks::default());
    let h = Harness::with_parts(FakeExecutor::new(), net.clone());
    let mut t = task("t1");
    t.spec = None;
    let (_tx, ctl) = spawn(&h, t, None);
    ctl.await.unwrap();
    h.wait_for("t1", TaskState::Rejected).await;
    assert_eq!(net.calls(), ["attach t1", "detach t1"]);

    // A task that starts keeps its network.
    let (_tx, _ctl) = spawn(&h, task("t2"), None);
    h.wait_for("t2", TaskState::Running).await;
    assert_eq!(net.calls(), ["attach t1", "detach t1", "attach t2"]);
}

#[tokio::test]
async fn an_adopted_running_container_is_watched_not_started_again() {
    let h = Harness::new();
    h.exec.put("t1", ObservedState::Running { pid: 4242 });
    let mut t = task("t1");
    t.status = Some(TaskStatus {
        state: TaskState::Running as i32,
        ..Default::default()
    });
    let (_tx, ctl) = spawn(&h, t, Some(ObservedState::Running { pid: 4242 }));

    let running = h.wait_for("t1", TaskState::Running).await;
    assert_eq!(running.pid, 4242);
    h.exec.exit("t1", 1);
    ctl.await.unwrap();
    let failed = h.wait_for("t1", TaskState::Failed).await;
    assert_eq!(failed.exit_code, 1);
    assert_eq!(h.exec.calls("t1"), ["remove"], "never prepared nor started");
}

#[tokio::test]
async fn an_adopted_container_that_exited_meanwhile_is_reported_and_removed() {
    let h = Harness::new();
    h.exec.put("t1", exited(0));
    let (_tx, ctl) = spawn(&h, task("t1"), Some(exited(0)));
    ctl.await.unwrap();

    assert_eq!(h.states("t1"), [TaskState::Complete]);
    assert_eq!(h.exec.calls("t1"), ["remove"]);
}

/// Runs task t1 until its container exits 7; returns its FAILED status.
async fn run_t1_to_failure(h: &Harness) -> TaskStatus {
    let (_tx, ctl) = spawn(h, task("t1"), None);
    h.wait_for("t1", TaskState::Running).await;
    h.exec.exit("t1", 7);
    ctl.await.unwrap();
    h.wait_for("t1", TaskState::Failed).await
}

#[tokio::test]
async fn a_task_finished_before_a_restart_is_reported_again_never_rerun() {
    let h = Harness::new();
    let before = run_t1_to_failure(&h).await;

    // A new agent (a fresh reporter) on the same data directory, the container long gone.
    let restarted = Harness::with_executor(h.exec.clone());
    let (_tx, ctl) = spawn(&restarted, task("t1"), None);
    ctl.await.unwrap();
    assert_eq!(restarted.statuses("t1"), [before]);
    assert_eq!(
        h.exec.calls("t1"),
        ["prepare", "start", "remove"],
        "not started twice"
    );
}

#[tokio::test]
async fn a_finished_task_handed_to_the_same_agent_again_is_reported_again_never_rerun() {
    let h = Harness::new();
    let before = run_t1_to_failure(&h).await;

    // A second controller for the same task in the same run (the agent's set of finished
    // tasks, not a fresh load, must know it). A controller that ran it again would wait
    // for the container's exit.
    let (_tx, ctl) = spawn(&h, task("t1"), None);
    tokio::time::timeout(Duration::from_secs(10), ctl)
        .await
        .expect("the controller ends at once: the task is finished")
        .unwrap();
    assert_eq!(h.statuses("t1").last(), Some(&before));
    assert_eq!(
        h.exec.calls("t1"),
        ["prepare", "start", "remove"],
        "not started twice"
    );
}

#[tokio::test]
async fn a_running_task_whose_container_is_gone_fails() {
    let h = Harness::new();
    let mut t = task("t1");
    t.status = Some(TaskStatus {
        state: TaskState::Running as i32,
        ..Default::default()
    });
    let (_tx, ctl) = spawn(&h, t, None);
    ctl.await.unwrap();

    let failed = h.wait_for("t1", TaskState::Failed).await;
    assert!(failed.err.contains("container is gone"), "{failed:?}");
    assert!(h.exec.calls("t1").is_empty(), "{:?}", h.exec.calls("t1"));
}

#[tokio::test]
async fn a_task_shut_down_before_it_started_is_never_started() {
    let h = Harness::new();
    let mut t = task("t1");
    t.desired_state = TaskState::Shutdown as i32;
    let (_tx, ctl) = spawn(&h, t, None);
    ctl.await.unwrap();

    assert_eq!(h.states("t1"), [TaskState::Shutdown]);
    assert!(h.exec.calls("t1").is_empty());
}

#[tokio::test]
async fn a_tasks_secrets_become_its_files_and_a_missing_one_rejects_it() {
    use shoal_proto::{Secret, SecretReference, SecretSpec};
    let h = Harness::new();
    let mut t = task("t1");
    if let Some(spec) = t.spec.as_mut() {
        spec.secrets = vec![SecretReference {
            secret_id: "x1".into(),
            secret_name: "pw".into(),
            target: "pw".into(),
            uid: "1000".into(),
            gid: "0".into(),
            mode: 0o400,
        }];
    }
    // Not sent to this node: rejected, never started.
    let (_tx, ctl) = spawn(&h, t.clone(), None);
    let rejected = h.wait_for("t1", TaskState::Rejected).await;
    ctl.await.unwrap();
    assert!(
        rejected
            .err
            .contains("secret pw (x1) was not sent to this node"),
        "{rejected:?}"
    );
    assert_eq!(h.exec.calls("t1"), ["prepare"]);

    h.ctx.dependencies.set(
        vec![Secret {
            id: "x1".into(),
            spec: Some(SecretSpec {
                name: "pw".into(),
                data: b"hunter2".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        vec![],
    );
    t.id = "t2".into();
    let (_tx, _ctl) = spawn(&h, t, None);
    h.wait_for("t2", TaskState::Running).await;
    let files = h.exec.files("t2");
    assert_eq!(files.len(), 1);
    assert_eq!(
        (
            files[0].path.as_str(),
            files[0].uid,
            files[0].gid,
            files[0].mode
        ),
        ("/run/secrets/pw", 1000, 0, 0o400)
    );
    assert_eq!(files[0].data, b"hunter2");
}
