//! The scheduler's filters and spreading, as pure plans over a built state.

use super::*;
use shoal_proto::{Meta, NodeRole, Service, ServiceMode, ServiceSpec};

fn node(id: &str, state: NodeState, availability: NodeAvailability) -> Node {
    Node {
        id: id.into(),
        state: state as i32,
        availability: availability as i32,
        ..Default::default()
    }
}

fn ready(id: &str) -> Node {
    node(id, NodeState::Ready, NodeAvailability::Active)
}

fn labelled(id: &str, zone: &str) -> Node {
    let mut n = ready(id);
    n.labels.insert("zone".into(), zone.into());
    n
}

fn service(id: &str, constraints: &[&str], max_per_node: u64) -> Service {
    Service {
        id: id.into(),
        spec: Some(Box::new(ServiceSpec {
            name: id.into(),
            placement: Some(shoal_proto::Placement {
                constraints: constraints.iter().map(|c| c.to_string()).collect(),
                max_replicas_per_node: max_per_node,
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn task(id: &str, service: &str, node: &str, state: TaskState) -> Task {
    Task {
        id: id.into(),
        service_id: service.into(),
        node_id: node.into(),
        desired_state: TaskState::Running as i32,
        meta: Some(Meta::default()),
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn state(services: Vec<Service>, nodes: Vec<Node>, tasks: Vec<Task>) -> StoreState {
    StoreState {
        services: services.into_iter().map(|x| (x.id.clone(), x)).collect(),
        nodes: nodes.into_iter().map(|x| (x.id.clone(), x)).collect(),
        tasks: tasks.into_iter().map(|x| (x.id.clone(), x)).collect(),
        ..Default::default()
    }
}

/// (task ID, node ID) of every assignment, by task ID (a round proposes them by node).
fn assignments(actions: &[StoreAction]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = actions
        .iter()
        .filter_map(|a| match &a.action {
            Some(Action::AssignTask(x)) => Some((x.task_id.clone(), x.node_id.clone())),
            _ => None,
        })
        .collect();
    pairs.sort();
    pairs
}

/// (task ID, err) of every task left pending.
fn pending(actions: &[StoreAction]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match &a.action {
            Some(Action::MarkTaskPending(u)) => {
                Some((u.task_id.clone(), u.status.as_ref()?.err.clone()))
            }
            _ => None,
        })
        .collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[test]
fn spreads_a_service_over_nodes() {
    let s = state(
        vec![service("s", &[], 0)],
        vec![ready("a"), ready("b")],
        vec![
            task("t0", "s", "a", TaskState::Running),
            task("t1", "s", "", TaskState::New),
            task("t2", "s", "", TaskState::New),
        ],
    );
    assert_eq!(
        assignments(&plan(&s, 0)),
        vec![pair("t1", "b"), pair("t2", "a")]
    );
}

#[test]
fn ties_go_to_the_node_with_fewest_tasks_overall_then_lowest_id() {
    let s = state(
        vec![service("s", &[], 0), service("other", &[], 0)],
        vec![ready("a"), ready("b"), ready("c")],
        vec![
            task("o1", "other", "a", TaskState::Running),
            task("o2", "other", "b", TaskState::Running),
            task("t1", "s", "", TaskState::New),
            task("t2", "s", "", TaskState::New),
        ],
    );
    assert_eq!(
        assignments(&plan(&s, 0)),
        vec![pair("t1", "c"), pair("t2", "a")]
    );
}

#[test]
fn no_available_node_leaves_the_task_pending_with_a_reason() {
    let s = state(
        vec![service("s", &[], 0)],
        vec![
            node("a", NodeState::Down, NodeAvailability::Active),
            node("b", NodeState::Ready, NodeAvailability::Drain),
            node("c", NodeState::Ready, NodeAvailability::Pause),
        ],
        vec![task("t1", "s", "", TaskState::New)],
    );
    assert_eq!(
        pending(&plan(&s, 0)),
        vec![pair(
            "t1",
            "no suitable node (3 nodes not available for new tasks)"
        )]
    );
    let empty = state(
        vec![service("s", &[], 0)],
        vec![],
        vec![task("t1", "s", "", TaskState::New)],
    );
    assert_eq!(
        pending(&plan(&empty, 0)),
        vec![pair("t1", "no suitable node (no nodes in the swarm)")]
    );
}

#[test]
fn constraints_choose_the_nodes() {
    let mut manager = ready("m");
    manager.role = NodeRole::Manager as i32;
    let s = state(
        vec![service(
            "s",
            &["node.role==worker", "node.labels.zone!=west"],
            0,
        )],
        vec![manager, labelled("w1", "west"), labelled("w2", "east")],
        vec![
            task("t1", "s", "", TaskState::New),
            task("t2", "s", "", TaskState::New),
        ],
    );
    assert_eq!(
        assignments(&plan(&s, 0)),
        vec![pair("t1", "w2"), pair("t2", "w2")]
    );
}

#[test]
fn explains_every_refusal_most_frequent_first() {
    let s = state(
        vec![service("s", &["node.labels.zone==east"], 1)],
        vec![
            labelled("a", "west"),
            labelled("b", "west"),
            ready("c"),
            labelled("d", "east"),
            node("e", NodeState::Down, NodeAvailability::Active),
        ],
        vec![
            task("running", "s", "d", TaskState::Running),
            task("t1", "s", "", TaskState::Pending),
        ],
    );
    assert_eq!(
        pending(&plan(&s, 0)),
        vec![pair(
            "t1",
            "no suitable node (scheduling constraints not satisfied on 3 nodes; max \
             replicas per node limit exceed on 1 node; 1 node not available for new tasks)"
        )]
    );
}

#[test]
fn max_replicas_per_node_counts_tasks_placed_in_the_same_round() {
    let s = state(
        vec![service("s", &[], 1)],
        vec![ready("a"), ready("b")],
        vec![
            task("t1", "s", "", TaskState::New),
            task("t2", "s", "", TaskState::New),
            task("t3", "s", "", TaskState::New),
        ],
    );
    let actions = plan(&s, 0);
    assert_eq!(
        assignments(&actions),
        vec![pair("t1", "a"), pair("t2", "b")]
    );
    assert_eq!(
        pending(&actions),
        vec![pair(
            "t3",
            "no suitable node (max replicas per node limit exceed on 2 nodes)"
        )]
    );
}

#[test]
fn tasks_being_stopped_do_not_count_against_the_limit() {
    let mut leaving = task("old", "s", "a", TaskState::Running);
    leaving.desired_state = TaskState::Shutdown as i32;
    let s = state(
        vec![service("s", &[], 1)],
        vec![ready("a")],
        vec![leaving, task("t1", "s", "", TaskState::New)],
    );
    assert_eq!(assignments(&plan(&s, 0)), vec![pair("t1", "a")]);
}

#[test]
fn a_global_task_goes_only_to_its_own_node() {
    let mut global = service("g", &[], 0);
    global.spec.as_mut().unwrap().mode = ServiceMode::Global as i32;
    let s = state(
        vec![global],
        vec![
            ready("a"),
            ready("b"),
            node("c", NodeState::Unknown, NodeAvailability::Active),
        ],
        vec![
            task("busy", "g", "a", TaskState::Running),
            task("on-a", "g", "a", TaskState::New),
            task("on-c", "g", "c", TaskState::New),
            task("on-gone", "g", "gone", TaskState::New),
        ],
    );
    let actions = plan(&s, 0);
    assert_eq!(
        assignments(&actions),
        vec![pair("on-a", "a")],
        "not spread to the emptier node b"
    );
    assert_eq!(
        pending(&actions),
        vec![
            pair(
                "on-c",
                "no suitable node (1 node not available for new tasks)"
            ),
            pair(
                "on-gone",
                "no suitable node (the task's node is no longer in the swarm)"
            ),
        ]
    );
}

#[test]
fn a_global_task_is_checked_against_constraints() {
    let mut global = service("g", &["node.labels.zone==east"], 0);
    global.spec.as_mut().unwrap().mode = ServiceMode::Global as i32;
    let s = state(
        vec![global],
        vec![labelled("a", "west")],
        vec![task("t", "g", "a", TaskState::New)],
    );
    assert_eq!(
        pending(&plan(&s, 0)),
        vec![pair(
            "t",
            "no suitable node (scheduling constraints not satisfied on 1 node)"
        )]
    );
}

#[test]
fn unparsable_constraints_place_nothing_and_say_why() {
    let s = state(
        vec![service("s", &["node.colour==red"], 0)],
        vec![ready("a")],
        vec![task("t1", "s", "", TaskState::New)],
    );
    let why = pending(&plan(&s, 0));
    assert_eq!(why.len(), 1);
    assert!(
        why[0]
            .1
            .starts_with("no suitable node (invalid constraint \"node.colour==red\": unknown key"),
        "{why:?}"
    );
}

fn sized(id: &str, cpus: u32, memory: u64) -> Node {
    let mut n = ready(id);
    n.description = Some(shoal_proto::NodeDescription {
        nano_cpus_count: cpus,
        memory_bytes: memory,
        ..Default::default()
    });
    n
}

fn reserving(mut t: Task, nano_cpus: u64, memory_bytes: u64) -> Task {
    t.spec = Some(Box::new(shoal_proto::ContainerSpec {
        resources: Some(shoal_proto::Resources {
            limits: None,
            reservations: Some(ResourceAmounts {
                nano_cpus,
                memory_bytes,
            }),
        }),
        ..Default::default()
    }));
    t
}

const GIB: u64 = 1 << 30;
const CPU: u64 = 1_000_000_000;

#[test]
fn reservations_are_accounted_against_node_resources() {
    // a: 2 CPUs, 1 GiB, already holding a 1.5 CPU reservation; b: 1 CPU, 4 GiB.
    let s = state(
        vec![service("s", &[], 0), service("other", &[], 0)],
        vec![sized("a", 2, GIB), sized("b", 1, 4 * GIB)],
        vec![
            reserving(
                task("big", "other", "a", TaskState::Running),
                3 * CPU / 2,
                0,
            ),
            reserving(task("t1", "s", "", TaskState::New), CPU / 2, GIB / 2),
            reserving(task("t2", "s", "", TaskState::New), CPU / 2, GIB / 2),
            reserving(task("t3", "s", "", TaskState::New), CPU / 2, GIB / 2),
            reserving(task("t4", "s", "", TaskState::New), 0, 4 * GIB),
            task("free", "s", "", TaskState::New),
        ],
    );
    let actions = plan(&s, 0);
    // In ID order: "free" reserves nothing and spreads to the emptier b; t1 takes a's last
    // half CPU (spreading away from b); t2 and t3 fill b's one CPU; t4's 4 GiB fit on
    // neither (a has 1 GiB, b 4 GiB of which 1 GiB is promised).
    assert_eq!(
        assignments(&actions),
        vec![
            pair("free", "b"),
            pair("t1", "a"),
            pair("t2", "b"),
            pair("t3", "b")
        ]
    );
    assert_eq!(
        pending(&actions),
        vec![pair(
            "t4",
            "no suitable node (insufficient resources on 2 nodes)"
        )]
    );
    // One more half CPU fits nowhere now.
    let mut s = s;
    for (id, node) in [("free", "b"), ("t1", "a"), ("t2", "b"), ("t3", "b")] {
        s.tasks.modify(id, |t| {
            t.node_id = node.into();
            t.status.as_mut().unwrap().state = TaskState::Running as i32;
        });
    }
    s.tasks.insert(
        "t5".into(),
        reserving(task("t5", "s", "", TaskState::New), CPU / 2, 0),
    );
    assert_eq!(
        pending(&plan(&s, 0)),
        vec![
            pair("t4", "no suitable node (insufficient resources on 2 nodes)"),
            pair("t5", "no suitable node (insufficient resources on 2 nodes)"),
        ]
    );
}

#[test]
fn finished_or_stopping_tasks_release_their_reservation() {
    let mut stopping = reserving(task("old", "s", "a", TaskState::Running), CPU, 0);
    stopping.desired_state = TaskState::Shutdown as i32;
    let done = reserving(task("done", "s", "a", TaskState::Failed), CPU, 0);
    let s = state(
        vec![service("s", &[], 0)],
        vec![sized("a", 1, GIB)],
        vec![
            stopping,
            done,
            reserving(task("t1", "s", "", TaskState::New), CPU, 0),
        ],
    );
    assert_eq!(assignments(&plan(&s, 0)), vec![pair("t1", "a")]);
}

#[test]
fn a_global_task_is_refused_a_node_without_room() {
    let mut global = service("g", &[], 0);
    global.spec.as_mut().unwrap().mode = ServiceMode::Global as i32;
    let s = state(
        vec![global],
        vec![sized("a", 1, GIB)],
        vec![reserving(task("t", "g", "a", TaskState::New), 2 * CPU, 0)],
    );
    assert_eq!(
        pending(&plan(&s, 0)),
        vec![pair(
            "t",
            "no suitable node (insufficient resources on 1 node)"
        )]
    );
}

#[test]
fn tasks_of_removed_services_are_not_placed() {
    let s = state(
        vec![],
        vec![ready("a")],
        vec![task("t1", "gone", "", TaskState::New)],
    );
    assert!(plan(&s, 0).is_empty());
}

#[test]
fn tasks_wait_for_their_network_addresses() {
    let attachment = |address: &str| shoal_proto::NetworkAttachment {
        network: Some(shoal_proto::Network {
            id: "n1".into(),
            ..Default::default()
        }),
        address: address.into(),
        aliases: vec![],
    };
    let mut waiting = task("t1", "s", "", TaskState::New);
    waiting.networks = vec![attachment("")];
    let mut allocated = task("t2", "s", "", TaskState::Pending);
    allocated.networks = vec![attachment("198.18.128.2/24")];
    let s = state(
        vec![service("s", &[], 0)],
        vec![ready("a")],
        vec![waiting, allocated],
    );
    let actions = plan(&s, 0);
    assert_eq!(assignments(&actions), vec![pair("t2", "a")]);
    assert!(pending(&actions).is_empty(), "not even marked pending");
}

#[test]
fn a_round_assigns_at_most_its_share_oldest_first_and_unplaceable_tasks_do_not_count() {
    let aged = |id: String, service: &str, at: i64| {
        let mut t = task(&id, service, "", TaskState::Pending);
        t.meta = Some(Meta {
            created_at_ms: at,
            ..Default::default()
        });
        t
    };
    // Three old tasks no node takes, then more placeable ones than a round assigns.
    let mut tasks: Vec<Task> = (0..3)
        .map(|i| aged(format!("stuck{i}"), "nowhere", i))
        .collect();
    let placeable = ROUND_ASSIGNMENTS + 2;
    tasks.extend((0..placeable).map(|i| aged(format!("t{i:05}"), "s", 10 + i as i64)));
    let s = state(
        vec![
            service("s", &[], 0),
            service("nowhere", &["node.labels.zone==mars"], 0),
        ],
        vec![ready("a"), ready("b")],
        tasks,
    );
    let actions = plan(&s, 0);
    let assigned = assignments(&actions);
    assert_eq!(assigned.len(), ROUND_ASSIGNMENTS);
    // The oldest, in order; the two youngest wait for the next round.
    assert_eq!(assigned[0].0, "t00000");
    assert_eq!(
        assigned[ROUND_ASSIGNMENTS - 1].0,
        format!("t{:05}", ROUND_ASSIGNMENTS - 1)
    );
    assert_eq!(pending(&actions).len(), 3, "the unplaceable ones say why");
}

/// A round's assignments go out grouped by node, each node's in the order they were placed,
/// so that a node's tasks of the round land in one entry and reach it in one message.
#[test]
fn a_rounds_assignments_are_grouped_by_node() {
    let s = state(
        vec![service("s", &[], 0)],
        vec![ready("a"), ready("b")],
        (1..=4)
            .map(|i| task(&format!("t{i}"), "s", "", TaskState::New))
            .collect(),
    );
    let in_order: Vec<(String, String)> = plan(&s, 0)
        .iter()
        .filter_map(|a| match &a.action {
            Some(Action::AssignTask(x)) => Some((x.node_id.clone(), x.task_id.clone())),
            _ => None,
        })
        .collect();
    // Spread alternates a and b (a first: equal load, lower ID).
    assert_eq!(
        in_order,
        [
            pair("a", "t1"),
            pair("a", "t3"),
            pair("b", "t2"),
            pair("b", "t4")
        ]
    );
}
