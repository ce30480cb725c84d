//! The scheduler: places tasks that are NEW or PENDING on nodes, as swarmkit's does.
//!
//! Filters first, in this order, each node refused by the first that fails:
//! 1. the node is READY and ACTIVE ("not available for new tasks");
//! 2. it satisfies the service's placement constraints;
//! 3. its free resources cover the task's reservations (`--reserve-cpu`, `--reserve-memory`):
//!    the node's CPUs and memory (as its worker described them) less the reservations of the
//!    tasks it holds, counting the tasks placed earlier in the same round ("insufficient
//!    resources on N nodes");
//! 4. no live task on it publishes one of the task's host-mode ports, same protocol
//!    ([`host_ports`], swarmkit's HostPortFilter; counting the tasks placed earlier in the same
//!    round): "host-mode port 8080/tcp already in use on 2 nodes";
//! 5. it runs fewer than `max_replicas_per_node` live tasks of the service (counting the tasks
//!    placed earlier in the same round).
//!
//! Reservations are promises the scheduler keeps, not measurements: a task without one takes
//! nothing from a node here, however busy it is, and limits play no part (as in swarmkit).
//! Then spreads: the node running the fewest live tasks of the same service wins, ties broken
//! by fewest live tasks overall, then by node ID so that every round on every manager decides
//! alike. A task that fits nowhere stays PENDING with swarmkit's explanation in its status
//! error, most frequent refusal first, e.g. "no suitable node (scheduling constraints not
//! satisfied on 3 nodes; 1 node not available for new tasks)", which `service ps` shows.
//!
//! A task with a network attachment still lacking an address waits for the allocator (which
//! makes it PENDING) and is not even marked pending here; tasks without networks are placed
//! from NEW as before.
//!
//! A global task comes with its node set by the orchestrator: the scheduler only checks that
//! node against the same filters and assigns it there, or leaves it PENDING with the reason.
//!
//! Constraints are read from the service's current spec. Ones that do not parse (the control
//! API refuses them, so only older data can hold them) place nothing: the task stays PENDING
//! with the parse error, so the user sees what to fix.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use shoal_proto::{
    store_action::Action, Node, NodeAvailability, NodeState, ResourceAmounts, StoreAction, Task,
    TaskAssignment, TaskState, TaskStatus, TaskStatusUpdate,
};
use tokio::sync::watch;
use tracing::warn;

mod host_ports;

use shoal_proto::validate::endpoint::protocol_name;

use self::host_ports::HostPorts;
use crate::allocator::role::needs_allocation;
use crate::constraint::{ConstraintError, Constraints};
use crate::ids::now_ms;
use crate::store::{Store, StoreState};

/// Why a filter refused a node. The order is the tie order in explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    Constraints,
    Resources,
    /// A host-mode port (protocol, port) the task publishes is taken on the node.
    HostPort(i32, u32),
    MaxReplicas,
    NotAvailable,
}

impl Refusal {
    /// swarmkit's wording, for `nodes` nodes refused this way.
    fn explain(self, nodes: usize) -> String {
        let (one, many) = match self {
            Refusal::Constraints => (
                "scheduling constraints not satisfied on 1 node".to_string(),
                format!("scheduling constraints not satisfied on {nodes} nodes"),
            ),
            Refusal::Resources => (
                "insufficient resources on 1 node".to_string(),
                format!("insufficient resources on {nodes} nodes"),
            ),
            Refusal::HostPort(protocol, port) => {
                let what = format!("host-mode port {port}/{}", protocol_name(protocol));
                (
                    format!("{what} already in use on 1 node"),
                    format!("{what} already in use on {nodes} nodes"),
                )
            }
            Refusal::MaxReplicas => (
                "max replicas per node limit exceed on 1 node".to_string(),
                format!("max replicas per node limit exceed on {nodes} nodes"),
            ),
            Refusal::NotAvailable => (
                "1 node not available for new tasks".to_string(),
                format!("{nodes} nodes not available for new tasks"),
            ),
        };
        if nodes == 1 {
            one
        } else {
            many
        }
    }
}

/// "no suitable node (…)": the refusals, most frequent first.
fn explain(refusals: &BTreeMap<Refusal, usize>) -> String {
    let mut by_count: Vec<(Refusal, usize)> = refusals.iter().map(|(r, n)| (*r, *n)).collect();
    by_count.sort_by_key(|(r, n)| (std::cmp::Reverse(*n), *r));
    let parts: Vec<String> = by_count.iter().map(|(r, n)| r.explain(*n)).collect();
    format!("no suitable node ({})", parts.join("; "))
}

/// What the filters need of a service.
struct Placement {
    constraints: Result<Constraints, ConstraintError>,
    /// 0 = unlimited.
    max_per_node: u64,
}

/// Live tasks per node and per (node, service), and the resources they reserve per node, kept
/// current as the round places tasks.
#[derive(Default)]
struct Load<'a> {
    per_service: HashMap<(&'a str, &'a str), u64>,
    per_node: HashMap<&'a str, u64>,
    reserved: HashMap<&'a str, ResourceAmounts>,
    host_ports: HostPorts<'a>,
}

/// What a task reserves on its node (its own spec: the one it was created with).
fn reservation(t: &Task) -> ResourceAmounts {
    t.spec
        .as_ref()
        .and_then(|c| c.resources.as_ref())
        .and_then(|r| r.reservations)
        .unwrap_or_default()
}

/// A node's capacity as its worker described it: `nano_cpus_count` holds a count of CPUs.
fn capacity(node: &Node) -> ResourceAmounts {
    let d = node.description.clone().unwrap_or_default();
    ResourceAmounts {
        nano_cpus: u64::from(d.nano_cpus_count).saturating_mul(1_000_000_000),
        memory_bytes: d.memory_bytes,
    }
}

impl<'a> Load<'a> {
    fn add(&mut self, node: &'a str, task: &'a Task) {
        *self
            .per_service
            .entry((node, &task.service_id))
            .or_default() += 1;
        *self.per_node.entry(node).or_default() += 1;
        let r = reservation(task);
        let used = self.reserved.entry(node).or_default();
        used.nano_cpus = used.nano_cpus.saturating_add(r.nano_cpus);
        used.memory_bytes = used.memory_bytes.saturating_add(r.memory_bytes);
        self.host_ports.add(node, task);
    }

    /// Whether `node` has room left for reservation `want`.
    fn fits(&self, node: &Node, want: ResourceAmounts) -> bool {
        if want.nano_cpus == 0 && want.memory_bytes == 0 {
            return true;
        }
        let cap = capacity(node);
        let used = self
            .reserved
            .get(node.id.as_str())
            .copied()
            .unwrap_or_default();
        used.nano_cpus.saturating_add(want.nano_cpus) <= cap.nano_cpus
            && used.memory_bytes.saturating_add(want.memory_bytes) <= cap.memory_bytes
    }

    fn of_service(&self, node: &str, service: &str) -> u64 {
        self.per_service.get(&(node, service)).copied().unwrap_or(0)
    }

    fn of_node(&self, node: &str) -> u64 {
        self.per_node.get(node).copied().unwrap_or(0)
    }
}

/// Placed on a node and still wanted there: it occupies the node.
fn occupies(t: &Task) -> bool {
    !t.node_id.is_empty()
        && t.state() >= TaskState::Assigned
        && t.desired() <= TaskState::Running
        && !t.state().is_terminal()
}

fn check(
    node: &Node,
    task: &Task,
    constraints: &Constraints,
    max_per_node: u64,
    load: &Load,
) -> Result<(), Refusal> {
    let service_id = task.service_id.as_str();
    if node.state() != NodeState::Ready || node.availability() != NodeAvailability::Active {
        return Err(Refusal::NotAvailable);
    }
    if !constraints.matches(node) {
        return Err(Refusal::Constraints);
    }
    if !load.fits(node, reservation(task)) {
        return Err(Refusal::Resources);
    }
    if let Some((protocol, port)) = load.host_ports.conflict(&node.id, task) {
        return Err(Refusal::HostPort(protocol, port));
    }
    if max_per_node > 0 && load.of_service(&node.id, service_id) >= max_per_node {
        return Err(Refusal::MaxReplicas);
    }
    Ok(())
}

/// The node for `task`, or why there is none.
fn choose<'a>(
    state: &'a StoreState,
    task: &Task,
    placement: &Placement,
    load: &Load,
) -> Result<&'a Node, String> {
    let constraints = match &placement.constraints {
        Ok(c) => c,
        Err(e) => return Err(format!("no suitable node ({e})")),
    };
    let fits = |n: &Node| check(n, task, constraints, placement.max_per_node, load);
    if !task.node_id.is_empty() {
        let node = state.nodes.get(&task.node_id).ok_or_else(|| {
            "no suitable node (the task's node is no longer in the swarm)".to_string()
        })?;
        return fits(node)
            .map(|()| node)
            .map_err(|r| explain(&BTreeMap::from([(r, 1)])));
    }
    if state.nodes.is_empty() {
        return Err("no suitable node (no nodes in the swarm)".into());
    }
    let mut refusals: BTreeMap<Refusal, usize> = BTreeMap::new();
    let mut best: Option<((u64, u64, &str), &Node)> = None;
    for node in state.nodes.values() {
        match fits(node) {
            Ok(()) => {
                let key = (
                    load.of_service(&node.id, &task.service_id),
                    load.of_node(&node.id),
                    node.id.as_str(),
                );
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, node));
                }
            }
            Err(r) => *refusals.entry(r).or_default() += 1,
        }
    }
    best.map(|(_, n)| n).ok_or_else(|| explain(&refusals))
}

pub fn plan(state: &StoreState, now_ms: i64) -> Vec<StoreAction> {
    let mut load = Load::default();
    for t in state.tasks.values().filter(|t| occupies(t)) {
        load.add(&t.node_id, t);
    }
    let placements: HashMap<&str, Placement> = state
        .services
        .values()
        .map(|s| {
            let max_per_node = s
                .spec
                .as_ref()
                .and_then(|sp| sp.placement.as_ref())
                .map_or(0, |p| p.max_replicas_per_node);
            let constraints = Constraints::of_service(s);
            (
                s.id.as_str(),
                Placement {
                    constraints,
                    max_per_node,
                },
            )
        })
        .collect();

    let mut pending: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| t.state() <= TaskState::Pending && t.desired() <= TaskState::Running)
        // A task joins its networks with the addresses the allocator gives it (then PENDING):
        // until then it is not the scheduler's.
        .filter(|t| !needs_allocation(t))
        .collect();
    // Oldest first, then by slot, so replicas fill in order.
    pending.sort_by_key(|t| {
        (
            t.meta.as_ref().map_or(0, |m| m.created_at_ms),
            t.slot,
            t.id.as_str(),
        )
    });
    let mut actions = Vec::new();
    for task in pending {
        // A task whose service is gone is being shut down by the orchestrator.
        let Some(placement) = placements.get(task.service_id.as_str()) else {
            continue;
        };
        let action = match choose(state, task, placement, &load) {
            Ok(node) => {
                load.add(&node.id, task);
                Action::AssignTask(TaskAssignment {
                    task_id: task.id.clone(),
                    node_id: node.id.clone(),
                    message: "scheduler assigned task to node".into(),
                })
            }
            Err(why) => Action::MarkTaskPending(TaskStatusUpdate {
                task_id: task.id.clone(),
                status: Some(TaskStatus {
                    state: TaskState::Pending as i32,
                    timestamp_ms: now_ms,
                    message: "pending task scheduling".into(),
                    err: why,
                    ..Default::default()
                }),
            }),
        };
        actions.push(StoreAction {
            action: Some(action),
        });
    }
    actions
}

/// Runs until `shutdown` flips; only the leader runs it.
pub async fn run(store: Store, shutdown: watch::Receiver<bool>) {
    let s = store.clone();
    crate::reconcile::run(store, Duration::from_secs(1), shutdown, move || {
        let store = s.clone();
        async move {
            let actions = store.view(|st| {
                plan(st, now_ms())
                    .into_iter()
                    .filter(|a| !already_pending_with_same_reason(st, a))
                    .collect::<Vec<_>>()
            });
            if actions.is_empty() {
                return;
            }
            if let Err(e) = store.propose(actions).await {
                warn!(error = %e, "scheduler proposal failed; retrying next round");
            }
        }
    })
    .await;
}

/// Re-marking a task pending for the same reason would append a log entry every round.
fn already_pending_with_same_reason(st: &StoreState, a: &StoreAction) -> bool {
    let Some(Action::MarkTaskPending(u)) = &a.action else {
        return false;
    };
    let Some(task) = st.tasks.get(&u.task_id) else {
        return true;
    };
    task.state() == TaskState::Pending
        && task.status.as_ref().map(|s| &s.err) == u.status.as_ref().map(|s| &s.err)
}

#[cfg(test)]
mod tests {
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
            spec: Some(ServiceSpec {
                name: id.into(),
                placement: Some(shoal_proto::Placement {
                    constraints: constraints.iter().map(|c| c.to_string()).collect(),
                    max_replicas_per_node: max_per_node,
                }),
                ..Default::default()
            }),
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

    fn assignments(actions: &[StoreAction]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(Action::AssignTask(x)) => Some((x.task_id.clone(), x.node_id.clone())),
                _ => None,
            })
            .collect()
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
            why[0].1.starts_with(
                "no suitable node (invalid constraint \"node.colour==red\": unknown key"
            ),
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
        t.spec = Some(shoal_proto::ContainerSpec {
            resources: Some(shoal_proto::Resources {
                limits: None,
                reservations: Some(ResourceAmounts {
                    nano_cpus,
                    memory_bytes,
                }),
            }),
            ..Default::default()
        });
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
            let t = s.tasks.get_mut(id).unwrap();
            t.node_id = node.into();
            t.status.as_mut().unwrap().state = TaskState::Running as i32;
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
}
