use shoal_proto::{ContainerSpec, ServiceMode, TaskStatus};

use super::super::testing::*;
use super::super::{plan, Plan};
use super::*;
use crate::store::StoreState;

fn image(name: &str) -> Option<ContainerSpec> {
    Some(ContainerSpec {
        image: format!("docker.io/library/{name}:latest"),
        ..Default::default()
    })
}

/// Service s1 with `replicas`, image "new" (previously "old"), an update started at 100.
fn updating(replicas: u64, config: UpdateConfig, state: State) -> Service {
    let mut s = service("s1", ServiceMode::Replicated, replicas);
    let spec = s.spec.as_mut().unwrap();
    spec.container = image("new");
    spec.update = Some(config);
    spec.rollback = Some(UpdateConfig {
        parallelism: 1,
        ..Default::default()
    });
    let mut previous = spec.clone();
    previous.container = image("old");
    s.previous_spec = Some(previous);
    s.update_status = Some(UpdateStatus {
        state: state as i32,
        started_at_ms: 100,
        completed_at_ms: 0,
        message: "update in progress".into(),
    });
    s
}

fn config(parallelism: u64, order: Order, action: FailureAction) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        order: order as i32,
        failure_action: action as i32,
        ..Default::default()
    }
}

fn old(id: &str, slot: u64) -> Task {
    let mut t = task(id, slot, "n1", TaskState::Running, 0);
    t.spec = image("old").map(Box::new);
    t.started_at_ms = 1;
    t
}

/// A task of the new spec created at `at`, in `state`; a running one started at `at`.
fn new(id: &str, slot: u64, state: TaskState, at: i64) -> Task {
    let mut t = task(id, slot, "n1", state, at);
    t.spec = image("new").map(Box::new);
    if state >= TaskState::Running {
        t.started_at_ms = at;
    }
    t
}

fn ended(mut t: Task, state: TaskState, at: i64) -> Task {
    t.status = Some(TaskStatus {
        state: state as i32,
        timestamp_ms: at,
        exit_code: 1,
        ..Default::default()
    });
    t.desired_state = TaskState::Shutdown as i32;
    t
}

fn st(s: Service, tasks: Vec<Task>) -> StoreState {
    state(vec![s], vec![ready("n1")], tasks)
}

fn statuses(p: &Plan) -> Vec<(State, String)> {
    p.status_changes
        .iter()
        .map(|c| match c {
            StatusChange::Set { status, .. } | StatusChange::Rollback { status, .. } => {
                (status.state(), status.message.clone())
            }
        })
        .collect()
}

/// Two slots, stop-first one at a time, failure action `action`: slot 1's new task failed
/// before it ran, slot 2 still runs the old spec.
fn one_failed(action: FailureAction) -> StoreState {
    let s = updating(2, config(1, Order::StopFirst, action), State::Updating);
    let tasks = vec![
        ended(old("o1", 1), TaskState::Shutdown, 150),
        ended(
            new("n1", 1, TaskState::Starting, 200),
            TaskState::Failed,
            300,
        ),
        old("o2", 2),
    ];
    st(s, tasks)
}

#[test]
fn parallelism_replaces_that_many_slots_at_once() {
    let s = updating(
        4,
        config(2, Order::StopFirst, FailureAction::Pause),
        State::Updating,
    );
    let tasks = (1..=4).map(|i| old(&format!("o{i}"), i)).collect();
    let p = plan(&st(s.clone(), tasks), 200);
    assert_eq!(shut_down(&p), vec!["o1", "o2"]);

    // Parallelism 0: every slot at once.
    let all = updating(
        4,
        config(0, Order::StopFirst, FailureAction::Pause),
        State::Updating,
    );
    let tasks = (1..=4).map(|i| old(&format!("o{i}"), i)).collect();
    assert_eq!(shut_down(&plan(&st(all, tasks), 200)).len(), 4);
}

#[test]
fn start_first_starts_the_new_task_beside_the_old_one() {
    let s = updating(
        1,
        config(1, Order::StartFirst, FailureAction::Pause),
        State::Updating,
    );
    let p = plan(&st(s.clone(), vec![old("o1", 1)]), 200);
    assert_eq!(created(&p), vec![(1, String::new())]);
    assert!(shut_down(&p).is_empty(), "the old task keeps serving");

    // While the new task starts, both stay and nothing else happens.
    let starting = vec![old("o1", 1), new("n1", 1, TaskState::Starting, 210)];
    let p = plan(&st(s.clone(), starting), 220);
    assert!(p.actions.is_empty(), "{:?}", p.actions);

    // Once it runs, the old one goes.
    let running = vec![old("o1", 1), new("n1", 1, TaskState::Running, 230)];
    assert_eq!(shut_down(&plan(&st(s.clone(), running), 240)), vec!["o1"]);

    // A new task that fails leaves the old one running, and the update pauses.
    let failed = vec![
        old("o1", 1),
        ended(
            new("n1", 1, TaskState::Starting, 210),
            TaskState::Failed,
            250,
        ),
    ];
    let p = plan(&st(s, failed), 260);
    assert!(shut_down(&p).is_empty());
    assert!(created(&p).is_empty());
    assert_eq!(statuses(&p)[0].0, State::Paused);
}

#[test]
fn delay_waits_after_each_replaced_task_runs() {
    let mut c = config(1, Order::StopFirst, FailureAction::Pause);
    c.delay_ms = 1_000;
    let s = updating(2, c, State::Updating);
    let tasks = || {
        vec![
            ended(old("o1", 1), TaskState::Shutdown, 150),
            new("n1", 1, TaskState::Running, 300),
            old("o2", 2),
        ]
    };
    let early = plan(&st(s.clone(), tasks()), 800);
    assert!(shut_down(&early).is_empty());
    assert_eq!(early.wake_at_ms, Some(1_300));
    assert_eq!(shut_down(&plan(&st(s, tasks()), 1_300)), vec!["o2"]);
}

#[test]
fn a_failure_pauses_by_default_and_names_the_task() {
    let p = plan(&one_failed(FailureAction::Pause), 400);
    assert_eq!(
        statuses(&p),
        vec![(
            State::Paused,
            "update paused due to failure or early termination of task n1".to_string()
        )]
    );
    assert!(shut_down(&p).is_empty(), "nothing more is replaced");
}

#[test]
fn a_paused_update_replaces_nothing_until_resumed() {
    let s = updating(
        2,
        config(1, Order::StopFirst, FailureAction::Pause),
        State::Paused,
    );
    let p = plan(&st(s, vec![old("o1", 1), old("o2", 2)]), 400);
    assert!(p.actions.is_empty());
    assert!(p.status_changes.is_empty());
}

#[test]
fn failures_within_the_ratio_or_after_the_monitor_do_not_count() {
    let mut c = config(1, Order::StopFirst, FailureAction::Pause);
    c.max_failure_ratio = 0.5;
    let s = updating(2, c, State::Updating);
    let tasks = vec![
        ended(
            new("n1", 1, TaskState::Running, 200),
            TaskState::Failed,
            300,
        ),
        old("o2", 2),
    ];
    let p = plan(&st(s, tasks), 400);
    assert!(statuses(&p).is_empty(), "1 of 2 is not above 0.5");
    assert_eq!(shut_down(&p), vec!["o2"]);

    // Failed 10 s after it started: past the 5 s monitor.
    let s = updating(
        2,
        config(1, Order::StopFirst, FailureAction::Pause),
        State::Updating,
    );
    let tasks = vec![
        ended(
            new("n1", 1, TaskState::Running, 200),
            TaskState::Failed,
            10_200,
        ),
        old("o2", 2),
    ];
    assert!(statuses(&plan(&st(s, tasks), 10_300)).is_empty());
}

#[test]
fn continue_goes_on_despite_failures() {
    let p = plan(&one_failed(FailureAction::Continue), 400);
    assert!(statuses(&p).is_empty());
    assert_eq!(shut_down(&p), vec!["o2"]);
}

#[test]
fn rollback_on_failure_goes_back_and_a_failing_rollback_pauses() {
    let state = one_failed(FailureAction::Rollback);
    let p = plan(&state, 400);
    assert_eq!(
        statuses(&p),
        vec![(
            State::RollbackStarted,
            "update rolled back due to failure or early termination of task n1".to_string()
        )]
    );
    assert!(p.actions.is_empty(), "the next round plans the old spec");
    assert!(matches!(p.status_changes[0], StatusChange::Rollback { .. }));

    // The rollback entry the role proposes: the previous spec, compare-and-set.
    let Some(shoal_proto::StoreAction {
        action: Some(shoal_proto::store_action::Action::UpdateService(rolled)),
    }) = super::super::status_action(&state, &p.status_changes[0])
    else {
        panic!("not an update");
    };
    assert_eq!(
        rolled.spec.as_ref().and_then(|s| s.container.clone()),
        image("old")
    );
    assert!(rolled.previous_spec.is_none());
    assert_eq!(rolled.meta.as_ref().map(|m| m.version), Some(1));

    // Rolling back (service at "old" now): a failure of the rollback pauses it.
    let mut back = updating(
        2,
        config(1, Order::StopFirst, FailureAction::Rollback),
        State::RollbackStarted,
    );
    back.spec.as_mut().unwrap().container = image("old");
    back.spec.as_mut().unwrap().rollback =
        Some(config(1, Order::StopFirst, FailureAction::Rollback));
    let mut failed_old = ended(old("r1", 1), TaskState::Failed, 300);
    failed_old.meta.as_mut().unwrap().created_at_ms = 200;
    failed_old.started_at_ms = 0;
    let p = plan(&st(back, vec![failed_old]), 400);
    assert_eq!(statuses(&p)[0].0, State::RollbackPaused);
}

#[test]
fn the_update_completes_once_every_slot_runs_past_the_monitor() {
    let s = updating(
        1,
        config(1, Order::StopFirst, FailureAction::Pause),
        State::Updating,
    );
    let tasks = || {
        vec![
            ended(old("o1", 1), TaskState::Shutdown, 150),
            new("n1", 1, TaskState::Running, 300),
        ]
    };
    let early = plan(&st(s.clone(), tasks()), 1_000);
    assert!(statuses(&early).is_empty());
    assert_eq!(early.wake_at_ms, Some(300 + DEFAULT_MONITOR_MS as i64));
    let done = plan(&st(s.clone(), tasks()), 5_300);
    assert_eq!(
        statuses(&done),
        vec![(State::Completed, "update completed".to_string())]
    );

    let mut back = s;
    back.update_status.as_mut().unwrap().state = State::RollbackStarted as i32;
    assert_eq!(
        statuses(&plan(&st(back, tasks()), 5_300)),
        vec![(State::RollbackCompleted, "rollback completed".to_string())]
    );
}

#[test]
fn outdated_tasks_without_an_update_start_one() {
    let mut s = updating(
        1,
        config(1, Order::StopFirst, FailureAction::Pause),
        State::Completed,
    );
    s.update_status = None;
    let p = plan(&st(s, vec![old("o1", 1)]), 200);
    assert_eq!(statuses(&p)[0].0, State::Updating);
    assert_eq!(shut_down(&p), vec!["o1"]);
}

#[test]
fn start_first_counts_the_old_task_it_stops_against_the_parallelism() {
    let s = updating(
        2,
        config(1, Order::StartFirst, FailureAction::Pause),
        State::Updating,
    );
    let tasks = vec![
        old("o1", 1),
        new("n1", 1, TaskState::Running, 230),
        old("o2", 2),
    ];
    let p = plan(&st(s, tasks), 240);
    assert_eq!(shut_down(&p), vec!["o1"]);
    assert!(created(&p).is_empty(), "slot 2 waits until o1 has stopped");
}
