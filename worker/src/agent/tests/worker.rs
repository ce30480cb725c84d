//! Reconciling assignment sets, and adopting what already runs, on the fake executor.

use std::collections::HashMap;

use shoal_proto::{TaskState, TaskStatus};
use tokio::sync::watch;

use super::{eventually, exited, task, Harness};
use crate::agent::worker::{adopt, Worker};
use crate::executor::{Executor, ObservedState};
use crate::logs;

fn with_state(mut t: shoal_proto::Task, state: TaskState) -> shoal_proto::Task {
    t.status = Some(TaskStatus {
        state: state as i32,
        ..Default::default()
    });
    t
}

#[tokio::test]
async fn a_new_task_in_the_set_gets_a_controller() {
    let h = Harness::new();
    let mut worker = Worker::new(h.ctx.clone(), HashMap::new());
    worker.reconcile(vec![task("t1"), task("t2")]);

    h.wait_for("t1", TaskState::Running).await;
    h.wait_for("t2", TaskState::Running).await;
    assert_eq!(h.exec.calls("t1"), ["prepare", "start"]);
    // The same set again changes nothing.
    worker.reconcile(vec![task("t1"), task("t2")]);
    assert_eq!(h.exec.calls("t1"), ["prepare", "start"]);
}

#[tokio::test]
async fn a_task_removed_from_the_set_is_stopped_and_removed_with_its_logs() {
    let h = Harness::new();
    let mut worker = Worker::new(h.ctx.clone(), HashMap::new());
    worker.reconcile(vec![task("t1"), task("t2")]);
    h.wait_for("t1", TaskState::Running).await;
    let dir = logs::task_dir(h.exec.data_dir(), "t1");
    std::fs::create_dir_all(&dir).unwrap();

    worker.reconcile(vec![task("t2")]);
    eventually("t1's cleanup", || {
        (h.exec.calls("t1").last() == Some(&"remove_logs")).then_some(())
    })
    .await;
    assert_eq!(
        h.exec.calls("t1"),
        ["prepare", "start", "stop", "remove", "remove_logs"]
    );
    assert_eq!(h.exec.container("t1"), None);
    assert!(!dir.exists(), "the task's directory is removed");
    // The manager forgot the task: the agent reports nothing more for it.
    assert!(!h.states("t1").contains(&TaskState::Shutdown));
    assert!(h.exec.container("t2").is_some(), "t2 is untouched");
}

#[tokio::test]
async fn a_changed_desired_state_reaches_the_tasks_controller() {
    let h = Harness::new();
    let mut worker = Worker::new(h.ctx.clone(), HashMap::new());
    worker.reconcile(vec![task("t1")]);
    h.wait_for("t1", TaskState::Running).await;

    let mut stopping = task("t1");
    stopping.desired_state = TaskState::Shutdown as i32;
    worker.reconcile(vec![stopping]);
    h.wait_for("t1", TaskState::Shutdown).await;
    assert_eq!(h.exec.calls("t1"), ["prepare", "start", "stop", "remove"]);
}

#[tokio::test]
async fn states_the_manager_already_knows_are_not_reported_again() {
    let h = Harness::new();
    let mut worker = Worker::new(h.ctx.clone(), HashMap::new());
    worker.reconcile(vec![with_state(task("t1"), TaskState::Preparing)]);

    h.wait_for("t1", TaskState::Running).await;
    assert_eq!(h.states("t1"), [TaskState::Starting, TaskState::Running]);
}

#[tokio::test]
async fn adoption_watches_assigned_containers_and_removes_the_rest() {
    let h = Harness::new();
    h.exec.put("kept", ObservedState::Running { pid: 7 });
    h.exec.put("orphan", ObservedState::Running { pid: 8 });
    h.exec.put("done", exited(0));
    // The logs of a task that left the set while the daemon was down.
    let stale = logs::task_dir(h.exec.data_dir(), "stale");
    std::fs::create_dir_all(&stale).unwrap();

    let (_stop, mut shutdown) = watch::channel(false);
    let adopted = adopt(h.exec.as_ref(), &mut shutdown)
        .await
        .expect("the executor answers");
    assert_eq!(adopted.len(), 3);
    let mut worker = Worker::new(h.ctx.clone(), adopted);
    worker.reconcile(vec![with_state(task("kept"), TaskState::Running)]);

    eventually("the orphans' cleanup", || {
        let done = |id| h.exec.calls(id).last() == Some(&"remove_logs");
        (done("orphan") && done("done") && !stale.exists()).then_some(())
    })
    .await;
    assert_eq!(h.exec.calls("orphan"), ["stop", "remove", "remove_logs"]);
    assert_eq!(
        h.exec.calls("done"),
        ["remove", "remove_logs"],
        "nothing to stop"
    );
    assert_eq!(h.exec.container("orphan"), None);
    // The kept task's controller watches the adopted process (the manager knows it RUNNING
    // already, so that is not reported again) and reports its end.
    h.exec.exit("kept", 2);
    let failed = h.wait_for("kept", TaskState::Failed).await;
    assert_eq!(failed.exit_code, 2);
    assert_eq!(
        h.exec.calls("kept"),
        ["remove"],
        "never prepared nor started"
    );
    assert_eq!(h.states("kept"), [TaskState::Failed]);
}

#[tokio::test]
async fn a_finished_task_with_a_leftover_container_is_only_cleaned_up() {
    let h = Harness::new();
    h.exec.put("t1", ObservedState::Running { pid: 9 });
    let adopted = HashMap::from([("t1".to_string(), ObservedState::Running { pid: 9 })]);
    let mut worker = Worker::new(h.ctx.clone(), adopted);
    let mut finished = with_state(task("t1"), TaskState::Complete);
    finished.desired_state = TaskState::Shutdown as i32;
    worker.reconcile(vec![finished]);

    eventually("the leftover's removal", || {
        (h.exec.calls("t1") == ["stop", "remove"]).then_some(())
    })
    .await;
    assert!(h.states("t1").is_empty(), "the manager has its end already");
}

#[tokio::test]
async fn an_incremental_message_changes_only_the_tasks_it_names() {
    let h = Harness::new();
    let mut worker = Worker::new(h.ctx.clone(), HashMap::new());
    worker.reconcile(vec![task("kept"), task("stopped"), task("gone")]);
    for id in ["kept", "stopped", "gone"] {
        h.wait_for(id, TaskState::Running).await;
    }

    // One task added, one told to stop, one removed; "kept" is not named, and stays.
    let mut stopping = task("stopped");
    stopping.desired_state = TaskState::Shutdown as i32;
    worker.apply_changes(vec![task("new"), stopping], vec!["gone".to_string()]);

    h.wait_for("new", TaskState::Running).await;
    h.wait_for("stopped", TaskState::Shutdown).await;
    eventually("gone's cleanup", || {
        (h.exec.calls("gone").last() == Some(&"remove_logs")).then_some(())
    })
    .await;
    assert_eq!(h.exec.calls("kept"), ["prepare", "start"]);
    assert!(h.exec.container("kept").is_some(), "kept runs on");
    assert_eq!(h.exec.container("gone"), None);
    // A removal of a task the worker does not hold changes nothing.
    worker.apply_changes(Vec::new(), vec!["unknown".to_string()]);
    assert_eq!(h.exec.calls("kept"), ["prepare", "start"]);
}
