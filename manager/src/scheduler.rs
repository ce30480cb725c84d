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
use crate::store::state::Occupancy;
use crate::store::{Store, StoreState, MAX_ENTRY_ACTIONS};

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
/// current as the round places tasks: the store's counts ([`Occupancy`], kept on apply) plus
/// the tasks placed this round.
struct Load<'a> {
    base: &'a Occupancy,
    per_service: HashMap<(&'a str, &'a str), u64>,
    per_node: HashMap<&'a str, u64>,
    reserved: HashMap<&'a str, ResourceAmounts>,
    host_ports: HostPorts<'a>,
}

/// For each service with a task on the fast path this round, its eligible nodes (READY, ACTIVE,
/// matching its constraints) ordered as the spread prefers them: (tasks of the service, tasks
/// overall, node ID). A task that reserves nothing, publishes no host-mode port and whose
/// service has no per-node limit passes every other filter on every eligible node, so its node
/// is the first of the set: O(log nodes) instead of checking every node for every task, which
/// is what made a hundred thousand tasks on a thousand nodes slow. The choice is exactly the one
/// the full scan makes: a node's key only grows within a round (the round only adds tasks), so
/// a set is repaired lazily — an entry whose key is stale is re-inserted with its current key
/// when it comes first, and the first entry that is current is the least of all. Updating every
/// set at each placement instead cost a set update per service in the round for every task.
#[derive(Default)]
struct Spread<'a> {
    sets: HashMap<&'a str, std::collections::BTreeSet<(u64, u64, &'a str)>>,
}

impl<'a> Spread<'a> {
    /// The fast-path node for `task` of `service`, if it is on the fast path and a node fits.
    fn choose(
        &mut self,
        state: &'a StoreState,
        task: &'a Task,
        placement: &Placement,
        load: &Load<'a>,
    ) -> Option<&'a Node> {
        let Ok(constraints) = &placement.constraints else {
            return None;
        };
        let want = reservation(task);
        let fast = task.node_id.is_empty()
            && placement.max_per_node == 0
            && want.nano_cpus == 0
            && want.memory_bytes == 0
            && host_ports::host_ports(task).next().is_none();
        if !fast {
            return None;
        }
        let service = task.service_id.as_str();
        let set = self.sets.entry(service).or_insert_with(|| {
            state
                .nodes
                .values()
                .filter(|n| {
                    n.state() == NodeState::Ready
                        && n.availability() == NodeAvailability::Active
                        && constraints.matches(n)
                })
                .map(|n| {
                    (
                        load.of_service(&n.id, service),
                        load.of_node(&n.id),
                        n.id.as_str(),
                    )
                })
                .collect()
        });
        loop {
            let first = *set.first()?;
            let (_, _, id) = first;
            let current = (load.of_service(id, service), load.of_node(id), id);
            if current == first {
                return state.nodes.get(id);
            }
            set.pop_first();
            set.insert(current);
        }
    }
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
    /// The store's load, with the reservations and ports of the placed tasks that hold any.
    fn of_store(state: &'a StoreState) -> Self {
        let base = state.tasks.occupancy();
        let mut load = Load {
            base,
            per_service: HashMap::new(),
            per_node: HashMap::new(),
            reserved: HashMap::new(),
            host_ports: HostPorts::default(),
        };
        for t in base.heavy().iter().filter_map(|id| state.tasks.get(id)) {
            load.hold(&t.node_id, t);
        }
        load
    }

    /// `task` is placed on `node` this round.
    fn add(&mut self, node: &'a str, task: &'a Task) {
        *self
            .per_service
            .entry((node, &task.service_id))
            .or_default() += 1;
        *self.per_node.entry(node).or_default() += 1;
        self.hold(node, task);
    }

    /// What `task` holds on `node` besides its count: reservations and host-mode ports.
    fn hold(&mut self, node: &'a str, task: &'a Task) {
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
        self.base.of_service(node, service)
            + self.per_service.get(&(node, service)).copied().unwrap_or(0)
    }

    fn of_node(&self, node: &str) -> u64 {
        self.base.of_node(node) + self.per_node.get(node).copied().unwrap_or(0)
    }
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

/// Most tasks one round assigns, oldest first; the others wait for the next round. The round
/// plans while it holds the store for reading, and the Raft loop waits for readers before it
/// applies an entry: with tens of thousands of tasks waiting, one round placing them all held
/// the store for over a second on a busy machine. Tasks that cannot be placed do not count, so
/// they never keep placeable ones waiting.
pub const ROUND_ASSIGNMENTS: usize = 5_000;

pub fn plan(state: &StoreState, now_ms: i64) -> Vec<StoreAction> {
    let mut load = Load::of_store(state);
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

    // The store's index of tasks not placed yet and still wanted: the work list, oldest
    // first, then by slot so replicas fill in order, without a walk of every task or a sort.
    let mut pending = state
        .tasks
        .unplaced_ids()
        .ids()
        .filter_map(|id| state.tasks.get(id))
        // A task joins its networks with the addresses the allocator gives it (then PENDING):
        // until then it is not the scheduler's.
        .filter(|t| !needs_allocation(t))
        .peekable();
    if pending.peek().is_none() {
        return Vec::new();
    }
    let mut actions = Vec::new();
    let mut spread = Spread::default();
    let mut assigned = 0;
    for task in pending {
        if assigned == ROUND_ASSIGNMENTS {
            // The rest next round, from a fresh read: see [`ROUND_ASSIGNMENTS`].
            break;
        }
        // A task whose service is gone is being shut down by the orchestrator.
        let Some(placement) = placements.get(task.service_id.as_str()) else {
            continue;
        };
        let chosen = match spread.choose(state, task, placement, &load) {
            Some(node) => Ok(node),
            None => choose(state, task, placement, &load),
        };
        let action = match chosen {
            Ok(node) => {
                load.add(&node.id, task);
                assigned += 1;
                Action::AssignTask(TaskAssignment {
                    task_id: task.id.clone(),
                    node_id: node.id.clone(),
                    message: "scheduler assigned task to node".into(),
                    timestamp_ms: now_ms,
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
    group_by_node(&mut actions);
    actions
}

/// Orders a round's assignments by node, oldest first within each node. Spreading places
/// consecutive tasks on different nodes, and the round is proposed in entries of
/// `MAX_ENTRY_ACTIONS`: in placement order every entry held a task or two for each of
/// hundreds of nodes, and each node's session was woken, and sent a message, for each entry.
/// Grouped, a node's tasks of the round arrive in one entry (or two), so in one message.
fn group_by_node(actions: &mut [StoreAction]) {
    actions.sort_by(|a, b| assigned_node(a).cmp(&assigned_node(b)));
}

fn assigned_node(a: &StoreAction) -> Option<&str> {
    match &a.action {
        Some(Action::AssignTask(t)) => Some(t.node_id.as_str()),
        _ => None,
    }
}

/// Runs until `shutdown` flips; only the leader runs it.
pub async fn run(store: Store, shutdown: watch::Receiver<bool>) {
    let s = store.clone();
    crate::reconcile::run(store, Duration::from_secs(1), shutdown, move |_| {
        let store = s.clone();
        async move {
            let (actions, took) = crate::reconcile::read(&store, |st| {
                plan(st, now_ms())
                    .into_iter()
                    .filter(|a| !already_pending_with_same_reason(st, a))
                    .collect::<Vec<_>>()
            });
            if actions.is_empty() {
                return took;
            }
            if let Err(e) = store.propose_batched(actions, MAX_ENTRY_ACTIONS).await {
                warn!(error = %e, "scheduler proposal failed; retrying next round");
            }
            took
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
mod tests;
