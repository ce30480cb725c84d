use shoal_proto::{
    restart_policy::Condition, store_action::Action, JobStatus, RestartPolicy, TaskStatus,
};

use super::super::plan;
use super::super::testing::*;
use super::*;

fn job(mode: ServiceMode, replicas: u64, max_concurrent: u64, iteration: u64) -> Service {
    let mut s = service("s1", mode, replicas);
    let spec = s.spec.as_mut().unwrap();
    spec.max_concurrent = max_concurrent;
    spec.restart = Some(RestartPolicy {
        condition: Condition::OnFailure as i32,
        delay_ms: 1_000,
        ..Default::default()
    });
    s.job_status = Some(JobStatus {
        iteration,
        last_execution_ms: 0,
    });
    s
}

fn run(id: &str, slot: u64, node: &str, state: TaskState, iteration: u64) -> Task {
    let mut t = task(id, slot, node, state, 10);
    t.job_iteration = iteration;
    t.restart = job(ServiceMode::ReplicatedJob, 1, 0, 1)
        .spec
        .unwrap()
        .restart;
    if state == TaskState::Failed {
        t.status = Some(TaskStatus {
            state: state as i32,
            timestamp_ms: 10,
            exit_code: 1,
            ..Default::default()
        });
    }
    t
}

fn completed_marked(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .filter_map(|a| match &a.action {
            Some(Action::SetTaskDesiredState(d))
                if d.desired_state == TaskState::Complete as i32 =>
            {
                Some(d.task_id.clone())
            }
            _ => None,
        })
        .collect()
}

/// The tasks set to SHUTDOWN (the fixture's `shut_down` counts every desired-state change).
fn stopped(p: &Plan) -> Vec<String> {
    let done = completed_marked(p);
    shut_down(p)
        .into_iter()
        .filter(|id| !done.contains(id))
        .collect()
}

fn slots(p: &Plan) -> Vec<u64> {
    created(p).into_iter().map(|(slot, _)| slot).collect()
}

#[test]
fn a_replicated_job_runs_its_completions_at_most_max_concurrent_at_once() {
    let s = job(ServiceMode::ReplicatedJob, 5, 2, 1);
    let p = plan(&state(vec![s.clone()], vec![ready("n1")], vec![]), 100);
    assert_eq!(slots(&p), vec![1, 2]);
    assert!(created(&p).iter().all(|(_, n)| n.is_empty()));

    // Slot 1 completed: it is marked COMPLETE and slot 3 starts; slot 2 still runs.
    let tasks = vec![
        run("a", 1, "n1", TaskState::Complete, 1),
        run("b", 2, "n1", TaskState::Running, 1),
    ];
    let p = plan(&state(vec![s.clone()], vec![ready("n1")], tasks), 100);
    assert_eq!(completed_marked(&p), vec!["a"]);
    assert_eq!(slots(&p), vec![3]);
    assert!(stopped(&p).is_empty());

    // Every slot done: nothing more, ever.
    let mut tasks: Vec<Task> = (1..=5)
        .map(|i| run(&format!("t{i}"), i, "n1", TaskState::Complete, 1))
        .collect();
    tasks
        .iter_mut()
        .for_each(|t| t.desired_state = TaskState::Complete as i32);
    let p = plan(&state(vec![s], vec![ready("n1")], tasks), 100_000);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn a_failed_job_task_is_replaced_by_the_policy_and_a_completed_one_is_not() {
    let s = job(ServiceMode::ReplicatedJob, 2, 0, 1);
    let tasks = vec![
        run("f", 1, "n1", TaskState::Failed, 1),
        run("c", 2, "n1", TaskState::Complete, 1),
    ];
    let st = state(vec![s], vec![ready("n1")], tasks);
    let early = plan(&st, 500);
    assert_eq!(stopped(&early), vec!["f"]);
    assert_eq!(completed_marked(&early), vec!["c"]);
    assert!(created(&early).is_empty());
    assert_eq!(early.wake_at_ms, Some(1_010));
    assert_eq!(slots(&plan(&st, 1_010)), vec![1]);
}

#[test]
fn a_new_iteration_stops_the_old_run_and_runs_every_slot_again() {
    let s = job(ServiceMode::ReplicatedJob, 2, 0, 2);
    let tasks = vec![
        run("old-running", 1, "n1", TaskState::Running, 1),
        run("old-done", 2, "n1", TaskState::Complete, 1),
    ];
    let p = plan(&state(vec![s], vec![ready("n1")], tasks), 100);
    assert_eq!(stopped(&p), vec!["old-done", "old-running"]);
    assert_eq!(slots(&p), vec![1, 2]);
    let Some(Action::CreateTask(t)) = p.actions.iter().find_map(|a| {
        a.action
            .as_ref()
            .filter(|a| matches!(a, Action::CreateTask(_)))
    }) else {
        panic!("no task created");
    };
    assert_eq!(t.job_iteration, 2);
}

#[test]
fn a_global_job_runs_once_per_node_including_new_nodes() {
    let s = job(ServiceMode::GlobalJob, 0, 0, 1);
    let tasks = vec![run("a", 0, "n1", TaskState::Complete, 1)];
    let p = plan(
        &state(vec![s.clone()], vec![ready("n1"), ready("n2")], tasks),
        100,
    );
    assert_eq!(created(&p), vec![(0, "n2".to_string())]);
    assert_eq!(completed_marked(&p), vec!["a"]);

    let st = state(
        vec![s.clone()],
        vec![ready("n1"), ready("n2")],
        vec![
            run("a", 0, "n1", TaskState::Complete, 1),
            run("b", 0, "n2", TaskState::Running, 1),
        ],
    );
    assert_eq!(progress(&st, &s), (1, 2));
}
