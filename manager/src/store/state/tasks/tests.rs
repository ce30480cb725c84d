//! The indexes follow every change, refused entries included; and the task's times follow the
//! changes the entries make.

use std::collections::BTreeMap;

use shoal_proto::{
    store_action::Action, Meta, Proposal, Service, ServiceSpec, StoreAction, Task, TaskAllocation,
    TaskAssignment, TaskDesiredState, TaskState, TaskStatus, TaskStatusUpdate,
};

use super::Tasks;
use crate::store::StoreState;

type Counts = BTreeMap<String, u64>;
/// By service, unplaced, unallocated, per node, per node and service, heavy, running per service.
type Indexes = (
    Vec<(String, Vec<String>)>,
    Vec<String>,
    Vec<String>,
    Counts,
    Counts,
    Vec<String>,
    Counts,
);

/// Everything the indexes hold, in a comparable form (zero counts left out).
fn indexes(t: &Tasks) -> Indexes {
    let mut by_service: Vec<(String, Vec<String>)> = t
        .by_service
        .iter()
        .map(|(s, ids)| (s.clone(), ids.iter().cloned().collect()))
        .collect();
    by_service.sort();
    let nonzero = |m: &super::IdMap<u64>, prefix: &str| -> Counts {
        m.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (format!("{prefix}{k}"), *n))
            .collect()
    };
    let queued = |q: &super::Queue| -> Vec<String> { q.ids().map(String::from).collect() };
    let per_node = nonzero(&t.occupancy.per_node, "");
    let per_service = t
        .occupancy
        .per_service
        .iter()
        .flat_map(|(node, m)| nonzero(m, &format!("{node}/")))
        .collect();
    (
        by_service,
        queued(&t.unplaced),
        queued(&t.unallocated),
        per_node,
        per_service,
        t.occupancy.heavy.iter().cloned().collect(),
        nonzero(&t.running, ""),
    )
}

/// The indexes of `s` are those built from scratch from its tasks.
fn assert_consistent(s: &StoreState) {
    let rebuilt: Tasks = s
        .tasks
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(indexes(&s.tasks), indexes(&rebuilt));
}

fn act(a: Action) -> StoreAction {
    StoreAction { action: Some(a) }
}

fn apply(s: &mut StoreState, index: u64, actions: Vec<Action>) -> bool {
    let ok = s
        .apply(
            index,
            &Proposal {
                actions: actions.into_iter().map(act).collect(),
            },
        )
        .is_ok();
    assert_consistent(s);
    ok
}

fn task(id: &str, service: &str, at: i64) -> Task {
    Task {
        id: id.into(),
        service_id: service.into(),
        desired_state: TaskState::Running as i32,
        meta: Some(Meta {
            created_at_ms: at,
            updated_at_ms: at,
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: TaskState::New as i32,
            timestamp_ms: at,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn assign(id: &str, node: &str, at: i64) -> Action {
    Action::AssignTask(TaskAssignment {
        task_id: id.into(),
        node_id: node.into(),
        message: "scheduler assigned task to node".into(),
        timestamp_ms: at,
    })
}

fn report(id: &str, state: TaskState, at: i64) -> Action {
    Action::UpdateTaskStatus(TaskStatusUpdate {
        task_id: id.into(),
        status: Some(TaskStatus {
            state: state as i32,
            timestamp_ms: at,
            ..Default::default()
        }),
    })
}

fn shut_down(id: &str, at: i64) -> Action {
    Action::SetTaskDesiredState(TaskDesiredState {
        task_id: id.into(),
        desired_state: TaskState::Shutdown as i32,
        timestamp_ms: at,
    })
}

fn updated_at(s: &StoreState, id: &str) -> i64 {
    s.tasks[id].meta.as_ref().map_or(0, |m| m.updated_at_ms)
}

#[test]
fn the_indexes_follow_every_change_and_every_rollback() {
    let mut s = StoreState::default();
    let mut heavy = task("t3", "s2", 1);
    heavy.endpoint = Some(shoal_proto::Endpoint {
        ports: vec![shoal_proto::PortConfig {
            target_port: 80,
            published_port: 8080,
            ..Default::default()
        }],
        ..Default::default()
    });
    let created = vec![
        Action::CreateTask(task("t1", "s1", 1).into()),
        Action::CreateTask(task("t2", "s1", 1).into()),
        Action::CreateTask(heavy.into()),
    ];
    assert!(apply(&mut s, 1, created));
    assert_eq!(s.tasks.unplaced_ids().len(), 3);
    assert!(apply(
        &mut s,
        2,
        vec![
            assign("t1", "n1", 2),
            assign("t2", "n1", 2),
            assign("t3", "n2", 2)
        ]
    ));
    assert!(s.tasks.unplaced_ids().is_empty());
    assert_eq!(s.tasks.occupancy().of_node("n1"), 2);
    assert_eq!(s.tasks.occupancy().of_service("n1", "s1"), 2);
    assert_eq!(s.tasks.occupancy().heavy().len(), 1);
    assert!(apply(&mut s, 3, vec![report("t1", TaskState::Running, 3)]));
    assert_eq!(
        s.tasks.occupancy().of_node("n1"),
        2,
        "still occupies its node"
    );
    assert_eq!(s.tasks.running_of_service("s1"), 1);
    assert!(apply(&mut s, 4, vec![report("t1", TaskState::Failed, 4)]));
    assert_eq!(s.tasks.occupancy().of_node("n1"), 1);
    assert_eq!(s.tasks.running_of_service("s1"), 0);
    assert!(apply(&mut s, 5, vec![shut_down("t3", 5)]));
    assert!(s.tasks.occupancy().heavy().is_empty());
    // A refused entry (a duplicate task) rolls back the changes made before the refusal.
    let refused = vec![
        shut_down("t2", 6),
        Action::DeleteTask("t1".into()),
        Action::CreateTask(task("t2", "s1", 6).into()),
    ];
    assert!(!apply(&mut s, 6, refused));
    assert_eq!(s.tasks.occupancy().of_node("n1"), 1);
    assert!(apply(&mut s, 7, vec![Action::DeleteTask("t1".into())]));
    let ids: Vec<&str> = s.tasks.ids_of_service("s1").collect();
    assert_eq!(ids, ["t2"]);
    assert_eq!(s.tasks_of_service("s2").count(), 1);
}

#[test]
fn a_snapshot_restores_the_indexes() {
    let mut s = StoreState::default();
    apply(
        &mut s,
        1,
        vec![Action::CreateTask(task("t1", "s1", 1).into())],
    );
    apply(&mut s, 2, vec![assign("t1", "n1", 2)]);
    let restored = StoreState::from_snapshot(s.to_snapshot(), 2);
    assert_eq!(indexes(&restored.tasks), indexes(&s.tasks));
    assert_eq!(restored.tasks.occupancy().of_node("n1"), 1);
}

#[test]
fn the_assigned_status_has_the_time_of_the_assignment() {
    let mut s = StoreState::default();
    apply(
        &mut s,
        1,
        vec![Action::CreateTask(task("t1", "s1", 1_000).into())],
    );
    apply(&mut s, 2, vec![assign("t1", "n1", 5_000)]);
    let status = s.tasks["t1"].status.clone().unwrap_or_default();
    assert_eq!(status.state, TaskState::Assigned as i32);
    assert_eq!(status.timestamp_ms, 5_000, "not the creation time");
    // An entry from a proposer that sent no time keeps the previous one.
    apply(
        &mut s,
        3,
        vec![Action::CreateTask(task("t2", "s1", 1_000).into())],
    );
    apply(&mut s, 4, vec![assign("t2", "n1", 0)]);
    let status = s.tasks["t2"].status.clone().unwrap_or_default();
    assert_eq!(status.timestamp_ms, 1_000);
}

#[test]
fn updated_at_follows_every_change_of_the_task() {
    let mut s = StoreState::default();
    let mut t = task("t1", "s1", 1_000);
    t.networks = vec![shoal_proto::NetworkAttachment::default()];
    apply(&mut s, 1, vec![Action::CreateTask(t.into())]);
    assert_eq!(updated_at(&s, "t1"), 1_000);
    let refused = Action::AllocateTask(TaskAllocation {
        task_id: "t1".into(),
        error: "no available IP addresses on network front".into(),
        timestamp_ms: 1_500,
        ..Default::default()
    });
    apply(&mut s, 2, vec![refused]);
    assert_eq!(updated_at(&s, "t1"), 1_500, "an allocation error");
    apply(&mut s, 3, vec![assign("t1", "n1", 2_000)]);
    assert_eq!(updated_at(&s, "t1"), 2_000, "the assignment");
    apply(&mut s, 4, vec![report("t1", TaskState::Running, 3_000)]);
    assert_eq!(updated_at(&s, "t1"), 3_000, "a status report");
    apply(&mut s, 5, vec![report("t1", TaskState::Starting, 4_000)]);
    assert_eq!(updated_at(&s, "t1"), 3_000, "a report that changes nothing");
    apply(&mut s, 6, vec![shut_down("t1", 5_000)]);
    assert_eq!(updated_at(&s, "t1"), 5_000, "the desired state");
    assert_eq!(
        s.tasks["t1"].meta.as_ref().map(|m| m.created_at_ms),
        Some(1_000)
    );
}

#[test]
fn a_service_keeps_its_own_tasks_apart() {
    let mut s = StoreState {
        services: [("s1", "web")]
            .into_iter()
            .map(|(id, name)| {
                let svc = Service {
                    id: id.into(),
                    spec: Some(Box::new(ServiceSpec {
                        name: name.into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                };
                (id.to_string(), svc)
            })
            .collect(),
        ..Default::default()
    };
    apply(
        &mut s,
        1,
        vec![
            Action::CreateTask(task("b", "s1", 1).into()),
            Action::CreateTask(task("a", "s1", 1).into()),
            Action::CreateTask(task("c", "gone", 1).into()),
        ],
    );
    let ids: Vec<&str> = s.tasks_of_service("s1").map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"], "in ID order, as the walk gave them");
    let mut services: Vec<&str> = s.tasks.service_ids().collect();
    services.sort();
    assert_eq!(services, ["gone", "s1"]);
}

#[test]
fn a_task_waits_for_the_allocator_until_its_networks_have_addresses() {
    let mut tasks = Tasks::default();
    let mut t = task("t1", "s1", 1);
    t.networks = vec![shoal_proto::NetworkAttachment::default()];
    tasks.insert("t1".into(), t);
    tasks.insert("t2".into(), task("t2", "s1", 1));
    let ids: Vec<&str> = tasks.unallocated_ids().ids().collect();
    assert_eq!(ids, ["t1"], "t2 joins no network");
    tasks.modify("t1", |t| t.networks[0].address = "198.18.0.2/24".into());
    assert!(tasks.unallocated_ids().is_empty());
    let rebuilt: Tasks = tasks.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(indexes(&tasks), indexes(&rebuilt));
}

/// The scheduler and the allocator take waiting tasks from the index in the order they serve
/// them (oldest first, then by slot, then by ID), without sorting; a task placed leaves it.
#[test]
fn waiting_tasks_are_kept_oldest_first_then_by_slot() {
    let mut s = StoreState::default();
    let mut late = task("a-late", "s1", 3);
    late.slot = 1;
    let mut second = task("z-second", "s1", 1);
    second.slot = 2;
    let mut first = task("y-first", "s1", 1);
    first.slot = 1;
    let mut tie = task("x-tie", "s2", 1);
    tie.slot = 2;
    let created = [late, second, first, tie]
        .into_iter()
        .map(|t| Action::CreateTask(t.into()))
        .collect();
    assert!(apply(&mut s, 1, created));
    let order: Vec<&str> = s.tasks.unplaced_ids().ids().collect();
    assert_eq!(order, ["y-first", "x-tie", "z-second", "a-late"]);
    assert!(apply(&mut s, 2, vec![assign("x-tie", "n1", 2)]));
    let order: Vec<&str> = s.tasks.unplaced_ids().ids().collect();
    assert_eq!(order, ["y-first", "z-second", "a-late"]);
    assert_eq!(s.tasks.unplaced_ids().len(), 3);
}
