//! The orchestrator: turns services into tasks and reaps the tasks nobody needs any more. It
//! writes desired state only; the scheduler places tasks and workers report what happens.
//!
//! * [`replicated`]: one live task per slot `1..=replicas`.
//! * [`global`]: one live task per eligible node, created with its node already set.
//! * [`jobs`]: replicated and global jobs, whose tasks run to completion once per iteration.
//! * [`restart`]: the restart policy both modes share, per slot or per node.
//! * [`reaper`]: deletes finished tasks beyond the history limit.
//! * [`update`]: rolling updates when the container spec changes, shared by both modes, paced
//!   by the service's update policy and moved through docker's update statuses by [`rollout`]
//!   (parallelism, delay, stop-first/start-first, failure action, monitor, rollback).
//!
//! Both modes treat a task whose node went away as gone ([`fate`]): a node that is DOWN or was
//! removed loses its tasks at once; a DRAINed node, or one that no longer satisfies the
//! service's constraints, has its tasks moved (replicated) or stopped (global).
//!
//! A task on a DOWN (or removed) node cannot be reported by its worker any more, so once its
//! desired state is SHUTDOWN the orchestrator reports SHUTDOWN on the node's behalf ("node is
//! down"); swarmkit marks such tasks ORPHANED, a state we do not have. Observed states only
//! move forward, so a later report from the node, if it comes back, is a no-op; its agent sees
//! a finished task (or none, once reaped) and stops the leftover container.
//!
//! Planning is a pure function of the store state and the time, so it is unit-tested without
//! Raft and re-run from scratch every round.

pub mod global;
pub mod jobs;
pub mod reaper;
pub mod replicated;
pub mod restart;
pub mod rollout;
pub mod scope;
pub mod update;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use shoal_proto::{
    store_action::Action, Meta, Network, NetworkAttachment, Node, NodeAvailability, NodeState,
    Service, ServiceMode, ServiceSpec, StoreAction, Task, TaskDesiredState, TaskState, TaskStatus,
    TaskStatusUpdate, UpdateStatusChange,
};
use tokio::sync::watch;
use tracing::warn;

use crate::allocator::allocate_endpoint;
use crate::constraint::Constraints;
use crate::ids::{new_id, now_ms};
use crate::store::state::has_ingress_ports;
use crate::store::{Store, StoreState, MAX_ENTRY_ACTIONS};

pub use restart::DEFAULT_RESTART_DELAY_MS;
pub use rollout::StatusChange;
pub use scope::Scope;

#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<StoreAction>,
    /// The round's time, which its desired-state changes carry.
    pub now_ms: i64,
    /// Earliest time (ms) a restart delay expires, so the loop can wake for it.
    pub wake_at_ms: Option<i64>,
    /// Rolling updates moved on (completed, paused, rolled back): each its own entry, since
    /// each applies only to the service version it was decided from.
    pub status_changes: Vec<StatusChange>,
}

impl Plan {
    fn push(&mut self, a: Action) {
        self.actions.push(StoreAction { action: Some(a) });
    }

    fn shut_down(&mut self, task: &Task) {
        self.push(Action::SetTaskDesiredState(TaskDesiredState {
            task_id: task.id.clone(),
            desired_state: TaskState::Shutdown as i32,
            timestamp_ms: self.now_ms,
        }));
    }

    fn create(&mut self, task: Task) {
        self.push(Action::CreateTask(task.into()));
    }

    fn wake_at(&mut self, at: i64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at, |w| w.min(at)));
    }

    /// Whether this round rolls `service_id` back to its previous spec.
    fn rolls_back(&self, service_id: &str) -> bool {
        self.status_changes
            .iter()
            .any(|c| matches!(c, StatusChange::Rollback { service_id: id, .. } if id == service_id))
    }
}

/// Desired RUNNING (or less) and not finished: the task serves its slot or node.
pub(crate) fn is_live(t: &Task) -> bool {
    t.desired() <= TaskState::Running && !t.state().is_terminal()
}

/// A task on its way to running: it may still fail, so the service is not whole yet.
pub(crate) fn starting(t: &Task) -> bool {
    let s = t.state();
    s == TaskState::New || (s >= TaskState::Assigned && s < TaskState::Running)
}

/// What the node a live task was placed on means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Not placed yet, or its node is fine.
    Stay,
    /// Its node is DOWN or removed: the task is as good as dead.
    Lost,
    /// Its node is drained or no longer satisfies the constraints: the task runs, but must go.
    Move,
}

/// `constraints` is `None` when the service's constraints do not parse: running tasks are not
/// stopped over that (as swarmkit); the scheduler reports the error on new tasks.
pub(crate) fn fate(
    task: &Task,
    nodes: &BTreeMap<String, Node>,
    constraints: Option<&Constraints>,
) -> Fate {
    if task.node_id.is_empty() {
        return Fate::Stay;
    }
    match nodes.get(&task.node_id) {
        None => Fate::Lost,
        Some(n) if n.state() == NodeState::Down => Fate::Lost,
        Some(n) if n.availability() == NodeAvailability::Drain => Fate::Move,
        Some(n) if constraints.is_some_and(|c| !c.matches(n)) => Fate::Move,
        Some(_) => Fate::Stay,
    }
}

/// The plan for every service.
pub fn plan(state: &StoreState, now_ms: i64) -> Plan {
    plan_scoped(state, now_ms, &Scope::All)
}

/// The plan for the services in `scope`, each from its own tasks (for a scope of a few
/// services, the store's index of tasks by service, not a walk of every task).
pub fn plan_scoped(state: &StoreState, now_ms: i64, scope: &Scope) -> Plan {
    let mut plan = Plan {
        now_ms,
        ..Default::default()
    };
    let by_service = scope.by_service(state);
    for (service_id, tasks) in &by_service {
        if !state.services.contains_key(*service_id) {
            // The service is gone: stop whatever still runs (the reaper deletes them later).
            for t in tasks.iter().filter(|t| t.desired() <= TaskState::Running) {
                plan.shut_down(t);
            }
        }
    }
    for service in state.services.values().filter(|s| scope.includes(&s.id)) {
        let tasks = by_service
            .get(service.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        match mode(service) {
            ServiceMode::Replicated => {
                replicated::plan_service(service, tasks, &state.nodes, now_ms, &mut plan)
            }
            ServiceMode::Global => {
                global::plan_service(service, tasks, &state.nodes, now_ms, &mut plan)
            }
            ServiceMode::ReplicatedJob => {
                jobs::plan_replicated(service, tasks, &state.nodes, now_ms, &mut plan)
            }
            ServiceMode::GlobalJob => {
                jobs::plan_global(service, tasks, &state.nodes, now_ms, &mut plan)
            }
        }
    }
    report_for_lost_nodes(state, &by_service, now_ms, &mut plan);
    attach_to_ingress(state, &mut plan);
    plan
}

/// New tasks of services with routing-mesh ports join the ingress network first (docker makes
/// it the task's eth0), with no aliases: the routing mesh reaches them there. The network is
/// copied whole, so the attachment shows what it is before the allocator fills in the address.
fn attach_to_ingress(state: &StoreState, plan: &mut Plan) {
    let Some(ingress) = state.ingress_network() else {
        return;
    };
    for a in &mut plan.actions {
        let Some(Action::CreateTask(t)) = a.action.as_mut() else {
            continue;
        };
        let wants = state
            .services
            .get(&t.service_id)
            .is_some_and(has_ingress_ports);
        if wants && !t.networks.iter().any(shoal_proto::is_ingress_attachment) {
            t.networks.insert(
                0,
                NetworkAttachment {
                    network: Some(ingress.clone()),
                    address: String::new(),
                    aliases: Vec::new(),
                },
            );
        }
    }
}

fn mode(service: &Service) -> ServiceMode {
    service
        .spec
        .as_ref()
        .map_or(ServiceMode::Replicated, |s| s.mode())
}

/// Reports SHUTDOWN for tasks that are (or are now being) shut down on a node that cannot
/// report any more; see the module documentation.
fn report_for_lost_nodes(
    state: &StoreState,
    by_service: &BTreeMap<&str, Vec<&Task>>,
    now_ms: i64,
    plan: &mut Plan,
) {
    let stopping: HashSet<&str> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.action {
            Some(Action::SetTaskDesiredState(d)) => Some(d.task_id.as_str()),
            _ => None,
        })
        .collect();
    let mut reports = Vec::new();
    for t in by_service.values().flatten() {
        if t.node_id.is_empty()
            || t.state().is_terminal()
            || (t.desired() <= TaskState::Running && !stopping.contains(t.id.as_str()))
        {
            continue;
        }
        let message = match state.nodes.get(&t.node_id) {
            None => "node was removed from the swarm",
            Some(n) if n.state() == NodeState::Down => "node is down",
            Some(_) => continue,
        };
        reports.push(Action::UpdateTaskStatus(TaskStatusUpdate {
            task_id: t.id.clone(),
            status: Some(TaskStatus {
                state: TaskState::Shutdown as i32,
                timestamp_ms: now_ms,
                message: message.into(),
                ..Default::default()
            }),
        }));
    }
    for r in reports {
        plan.push(r);
    }
}

/// How many tasks a service wants running, as `service ls` shows it: `replicas`, or for a
/// global service (as docker counts it) its tasks whose desired state is RUNNING.
pub fn desired_tasks(state: &StoreState, service: &Service) -> u64 {
    match mode(service) {
        ServiceMode::Replicated => service.spec.as_ref().map_or(0, |s| s.replicas),
        ServiceMode::Global => state
            .tasks_of_service(&service.id)
            .filter(|t| t.desired() == TaskState::Running)
            .count() as u64,
        // A job wants what runs now of its current iteration.
        ServiceMode::ReplicatedJob | ServiceMode::GlobalJob => state
            .tasks_of_service(&service.id)
            .filter(|t| {
                t.job_iteration == jobs::iteration(service) && t.desired() == TaskState::Running
            })
            .count() as u64,
    }
}

/// A new task of `service`: in `slot` (replicated), or slot 0 on `node_id` (global).
pub fn new_task(service: &Service, slot: u64, node_id: &str, now_ms: i64) -> Task {
    // Borrowed, and only the parts a task carries copied: a clone of the whole spec per task
    // (labels, mode, update and rollback configs, and the container a second time) was made
    // and dropped for each of a thousand replicas.
    let default = ServiceSpec::default();
    let spec = service.spec.as_deref().unwrap_or(&default);
    Task {
        id: new_id(),
        meta: Some(Meta {
            version: 0,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }),
        service_id: service.id.clone(),
        service_name: spec.name.clone(),
        slot,
        node_id: node_id.to_string(),
        spec: spec.container.clone().map(Box::new),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::New as i32,
            timestamp_ms: now_ms,
            message: "created".into(),
            ..Default::default()
        }),
        service_version: service.meta.as_ref().map_or(0, |m| m.version),
        restart: spec.restart,
        networks: spec
            .networks
            .iter()
            .map(|n| NetworkAttachment {
                network: Some(Network {
                    id: n.target.clone(),
                    ..Default::default()
                }),
                address: String::new(),
                aliases: n.aliases.clone(),
            })
            .collect(),
        endpoint: service.endpoint.clone(),
        started_at_ms: 0,
        job_iteration: jobs::iteration(service),
        registry_auth: spec.registry_auth.clone(),
    }
}

/// About how many tasks one read of a round plans (see `Scope::split`): a few milliseconds of
/// planning, after which the Raft loop may apply what waits.
const PART_TASKS: usize = 4096;

/// The actions and the status changes that plan `scope`, read from `st`.
fn plan_part(st: &StoreState, scope: &Scope) -> (Vec<StoreAction>, Vec<StoreAction>) {
    let plan = plan_scoped(st, now_ms(), scope);
    let changes = plan
        .status_changes
        .iter()
        .filter_map(|c| status_action(st, c))
        .collect();
    let mut actions = plan.actions;
    actions.extend(reaper::plan_scoped(st, scope));
    (actions, changes)
}

/// Runs until `shutdown` flips; only the leader runs it.
pub async fn run(store: Store, shutdown: watch::Receiver<bool>) {
    let s = store.clone();
    crate::reconcile::run(store, Duration::from_millis(500), shutdown, move |wake| {
        let store = s.clone();
        async move {
            // Part by part, each from a read of its own (see `Scope::split`).
            let (parts, mut took) =
                crate::reconcile::read(&store, |st| Scope::of(&wake, st).split(st, PART_TASKS));
            let (mut actions, mut changes) = (Vec::new(), Vec::new());
            for part in parts {
                let ((a, c), t) = crate::reconcile::read(&store, |st| plan_part(st, &part));
                took += t;
                actions.extend(a);
                changes.extend(c);
            }
            for change in changes {
                // One entry each: a service changed meanwhile refuses its own, not the others.
                if let Err(e) = store.propose(vec![change]).await {
                    warn!(error = %e, "update status change failed; re-planned next round");
                }
            }
            if actions.is_empty() {
                return took;
            }
            // Deletes and creates are independent of each other, so any split into bounded
            // entries is as good as one.
            actions.dedup();
            if let Err(e) = store.propose_batched(actions, MAX_ENTRY_ACTIONS).await {
                warn!(error = %e, "orchestrator proposal failed; retrying next round");
            }
            took
        }
    })
    .await;
}

/// The entry for a status change. A rollback is the service itself with its previous spec (and
/// the endpoint that spec needs, allocated as the control API would), compare-and-set on the
/// version the decision was made from.
fn status_action(state: &StoreState, change: &StatusChange) -> Option<StoreAction> {
    let action = match change {
        StatusChange::Set {
            service_id,
            version,
            status,
        } => Action::SetUpdateStatus(UpdateStatusChange {
            service_id: service_id.clone(),
            service_version: *version,
            status: Some(status.clone()),
        }),
        StatusChange::Rollback {
            service_id,
            version,
            status,
        } => {
            let mut service = state.services.get(service_id)?.clone();
            let previous = service.previous_spec.take()?;
            let endpoint =
                allocate_endpoint(state, service_id, &previous, service.endpoint.as_ref())
                    .map_err(|e| warn!(service = %service_id, error = %e, "cannot roll back"))
                    .ok()?;
            let meta = service.meta.get_or_insert_with(Meta::default);
            meta.version = *version;
            meta.updated_at_ms = status.started_at_ms;
            service.spec = Some(previous);
            service.endpoint = Some(endpoint);
            service.update_status = Some(status.clone());
            Action::UpdateService(service.into())
        }
    };
    Some(StoreAction {
        action: Some(action),
    })
}

/// Fixtures and action readers shared by the orchestrator's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use shoal_proto::{NodeRole, ServiceSpec};

    pub fn service(id: &str, mode: ServiceMode, replicas: u64) -> Service {
        Service {
            id: id.into(),
            meta: Some(Meta {
                version: 1,
                ..Default::default()
            }),
            spec: Some(Box::new(ServiceSpec {
                name: format!("svc-{id}"),
                replicas,
                mode: mode as i32,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    pub fn node(id: &str, state: NodeState, availability: NodeAvailability) -> Node {
        Node {
            id: id.into(),
            role: NodeRole::Worker as i32,
            state: state as i32,
            availability: availability as i32,
            ..Default::default()
        }
    }

    pub fn ready(id: &str) -> Node {
        node(id, NodeState::Ready, NodeAvailability::Active)
    }

    /// A task of service `s1` in `slot` on `node` ("" = unplaced), created at `at`.
    pub fn task(id: &str, slot: u64, node: &str, state: TaskState, at: i64) -> Task {
        let mut t = new_task(&service("s1", ServiceMode::Replicated, 1), slot, node, at);
        t.id = id.into();
        // Made from no known version: the tests change their services' specs in place, without
        // the new version an update gets, so tasks are compared with the spec.
        t.service_version = 0;
        t.status = Some(TaskStatus {
            state: state as i32,
            timestamp_ms: at,
            exit_code: if state == TaskState::Failed { 137 } else { 0 },
            ..Default::default()
        });
        t
    }

    pub fn state(services: Vec<Service>, nodes: Vec<Node>, tasks: Vec<Task>) -> StoreState {
        StoreState {
            services: services.into_iter().map(|x| (x.id.clone(), x)).collect(),
            nodes: nodes.into_iter().map(|x| (x.id.clone(), x)).collect(),
            tasks: tasks.into_iter().map(|x| (x.id.clone(), x)).collect(),
            ..Default::default()
        }
    }

    /// (slot, node_id) of every task the plan creates.
    pub fn created(plan: &Plan) -> Vec<(u64, String)> {
        plan.actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(Action::CreateTask(t)) => Some((t.slot, t.node_id.clone())),
                _ => None,
            })
            .collect()
    }

    /// Sorted IDs of the tasks the plan shuts down.
    pub fn shut_down(plan: &Plan) -> Vec<String> {
        let mut ids: Vec<String> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(Action::SetTaskDesiredState(d)) => Some(d.task_id.clone()),
                _ => None,
            })
            .collect();
        ids.sort();
        ids
    }

    /// (task ID, message) of every status the plan reports on a node's behalf.
    pub fn reported(plan: &Plan) -> Vec<(String, String)> {
        plan.actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(Action::UpdateTaskStatus(u)) => {
                    let st = u.status.as_ref()?;
                    assert_eq!(st.state, TaskState::Shutdown as i32);
                    Some((u.task_id.clone(), st.message.clone()))
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn tasks_on_a_down_node_are_reported_shut_down_once_stopped() {
        let down = node("n1", NodeState::Down, NodeAvailability::Active);
        let mut stopping = task("stopping", 1, "n1", TaskState::Running, 0);
        stopping.desired_state = TaskState::Shutdown as i32;
        let finished = task("finished", 2, "n1", TaskState::Failed, 0);
        let elsewhere = {
            let mut t = task("elsewhere", 3, "n2", TaskState::Running, 0);
            t.desired_state = TaskState::Shutdown as i32;
            t
        };
        let s = state(
            vec![service("s1", ServiceMode::Replicated, 3)],
            vec![down, ready("n2")],
            vec![stopping, finished, elsewhere],
        );
        let p = plan(&s, 50);
        assert_eq!(
            reported(&p),
            vec![("stopping".to_string(), "node is down".to_string())],
            "a finished task keeps its state; a live node reports for itself"
        );
    }

    #[test]
    fn a_task_shut_down_this_round_on_a_lost_node_is_reported_too() {
        let s = state(
            vec![service("s1", ServiceMode::Replicated, 1)],
            vec![],
            vec![task("t1", 1, "gone", TaskState::Running, 0)],
        );
        let p = plan(&s, 50);
        assert_eq!(shut_down(&p), vec!["t1"]);
        assert_eq!(
            reported(&p),
            vec![(
                "t1".to_string(),
                "node was removed from the swarm".to_string()
            )]
        );
        assert_eq!(created(&p), vec![(1, String::new())]);
    }

    #[test]
    fn desired_tasks_per_mode() {
        let mut running = task("a", 0, "n1", TaskState::Running, 0);
        running.service_id = "g".into();
        let mut stopped = task("b", 0, "n2", TaskState::Running, 0);
        stopped.service_id = "g".into();
        stopped.desired_state = TaskState::Shutdown as i32;
        let s = state(
            vec![
                service("g", ServiceMode::Global, 0),
                service("r", ServiceMode::Replicated, 4),
            ],
            vec![],
            vec![running, stopped],
        );
        assert_eq!(desired_tasks(&s, &s.services["g"]), 1);
        assert_eq!(desired_tasks(&s, &s.services["r"]), 4);
    }

    #[test]
    fn tasks_of_services_with_routing_mesh_ports_join_ingress_first() {
        let ingress = Network {
            id: "ing".into(),
            spec: Some(shoal_proto::NetworkSpec {
                name: "ingress".into(),
                ingress: true,
                ..Default::default()
            }),
            subnet: "198.18.16.0/24".into(),
            ..Default::default()
        };
        let mut web = service("s1", ServiceMode::Replicated, 1);
        if let Some(spec) = web.spec.as_mut() {
            spec.networks = vec![shoal_proto::NetworkAttachmentConfig {
                target: "n1".into(),
                aliases: vec!["www".into()],
            }];
        }
        let mut published = web.clone();
        published.endpoint = Some(shoal_proto::Endpoint {
            ports: vec![shoal_proto::PortConfig {
                target_port: 80,
                published_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut host_only = published.clone();
        host_only.id = "s2".into();
        if let Some(e) = host_only.endpoint.as_mut() {
            e.ports[0].publish_mode = shoal_proto::port_config::PublishMode::Host as i32;
        }
        let mut st = state(vec![published, host_only], vec![ready("n1")], vec![]);
        st.networks.insert("ing".into(), ingress.clone());
        let p = plan(&st, 0);
        type Attachment = (String, bool, Vec<String>);
        let networks: Vec<(String, Vec<Attachment>)> = p
            .actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(Action::CreateTask(t)) => Some((
                    t.service_id.clone(),
                    t.networks
                        .iter()
                        .map(|a| {
                            let n = a.network.clone().unwrap_or_default();
                            (
                                n.id,
                                shoal_proto::is_ingress_attachment(a),
                                a.aliases.clone(),
                            )
                        })
                        .collect(),
                )),
                _ => None,
            })
            .collect();
        let att = |id: &str, ingress: bool, aliases: &[&str]| {
            (
                id.to_string(),
                ingress,
                aliases.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            networks,
            [
                (
                    "s1".to_string(),
                    vec![att("ing", true, &[]), att("n1", false, &["www"])]
                ),
                ("s2".to_string(), vec![att("n1", false, &["www"])]),
            ]
        );
        // The ingress attachment is not the spec's: the new task is up to date.
        let Some(Action::CreateTask(t)) = &p.actions[0].action else {
            panic!("no task created");
        };
        assert!(!update::outdated(&st.services["s1"], t));
    }
}
