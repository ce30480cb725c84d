//! Healthchecks on the fake executor: STARTING until healthy, RUNNING (healthy) after, and an
//! unhealthy container stopped and its task FAILED; an adopted container keeps being checked.

use shoal_proto::{HealthConfig, HealthStatus, TaskState, TaskStatus};

use super::controller::spawn;
use super::{eventually, task, Harness};
use crate::executor::ObservedState;

/// A task whose service checks every 10ms and gives up after 2 failures.
fn checked(id: &str) -> shoal_proto::Task {
    let mut t = task(id);
    if let Some(c) = t.spec.as_mut() {
        c.healthcheck = Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "test -f /tmp/ok".into()],
            interval_ms: 10,
            timeout_ms: 1_000,
            retries: 2,
            start_period_ms: 0,
        });
    }
    t
}

fn healths(h: &Harness, id: &str) -> Vec<(TaskState, HealthStatus)> {
    h.statuses(id)
        .iter()
        .map(|s| (s.state(), s.health()))
        .collect()
}

#[tokio::test]
async fn a_checked_task_is_starting_until_healthy_then_fails_when_unhealthy() {
    let h = Harness::new();
    h.exec.set_healthy("t1", true);
    let (_tx, ctl) = spawn(&h, checked("t1"), None);

    let running = h.wait_for("t1", TaskState::Running).await;
    assert_eq!(running.health(), HealthStatus::Healthy);
    // STARTING was reported with the pid and health "starting" before the first probe.
    let starting = h.wait_for("t1", TaskState::Starting).await;
    assert_eq!(starting.health(), HealthStatus::None);
    let starting = h
        .statuses("t1")
        .into_iter()
        .find(|s| s.health() == HealthStatus::Starting)
        .expect("a STARTING report with health starting");
    assert_eq!(starting.state(), TaskState::Starting);
    assert_eq!(running.pid, starting.pid);
    assert!(running.pid > 0);

    h.exec.set_healthy("t1", false);
    let failed = h.wait_for("t1", TaskState::Failed).await;
    ctl.await.unwrap();
    assert!(
        failed.err.starts_with("container unhealthy"),
        "{}",
        failed.err
    );
    assert_eq!(failed.health(), HealthStatus::Unhealthy);
    assert_eq!(
        healths(&h, "t1"),
        [
            (TaskState::Accepted, HealthStatus::None),
            (TaskState::Preparing, HealthStatus::None),
            (TaskState::Starting, HealthStatus::None),
            (TaskState::Starting, HealthStatus::Starting),
            (TaskState::Running, HealthStatus::Healthy),
            (TaskState::Failed, HealthStatus::Unhealthy),
        ]
    );
    let calls = h.exec.calls("t1");
    assert_eq!(
        calls.iter().filter(|c| **c != "probe").collect::<Vec<_>>(),
        [&"prepare", &"start", &"stop", &"remove"],
        "the unhealthy container is stopped and removed"
    );
}

#[tokio::test]
async fn a_task_never_healthy_fails_without_running() {
    let h = Harness::new();
    let (_tx, ctl) = spawn(&h, checked("t1"), None);
    let failed = h.wait_for("t1", TaskState::Failed).await;
    ctl.await.unwrap();
    assert!(failed.err.contains("container unhealthy"), "{}", failed.err);
    assert!(
        !h.states("t1").contains(&TaskState::Running),
        "{:?}",
        h.states("t1")
    );
}

#[tokio::test]
async fn without_a_check_there_are_no_probes() {
    let h = Harness::new();
    let (_tx, _ctl) = spawn(&h, task("t1"), None);
    let running = h.wait_for("t1", TaskState::Running).await;
    assert_eq!(running.health(), HealthStatus::None);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!h.exec.calls("t1").contains(&"probe"));
}

#[tokio::test]
async fn an_adopted_healthy_container_is_still_checked() {
    let h = Harness::new();
    h.exec.put("t1", ObservedState::Running { pid: 4242 });
    h.exec.set_healthy("t1", true);
    let mut t = checked("t1");
    t.status = Some(TaskStatus {
        state: TaskState::Running as i32,
        health: HealthStatus::Healthy as i32,
        ..Default::default()
    });
    h.reporter
        .observe("t1", TaskState::Running, HealthStatus::Healthy);
    let (_tx, ctl) = spawn(&h, t, Some(ObservedState::Running { pid: 4242 }));
    eventually("probes of the adopted container", || {
        (h.exec.calls("t1").iter().filter(|c| **c == "probe").count() >= 2).then_some(())
    })
    .await;
    assert!(
        h.states("t1").is_empty(),
        "nothing new to say while healthy"
    );
    h.exec.set_healthy("t1", false);
    let failed = h.wait_for("t1", TaskState::Failed).await;
    ctl.await.unwrap();
    assert!(failed.err.starts_with("container unhealthy"));
    assert!(!h.exec.calls("t1").contains(&"prepare"), "never prepared");
}
