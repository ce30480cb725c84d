//! Cluster gauges, computed from the store at scrape time: nodes, services, tasks, replicas
//! and the scheduler's backlog. Nothing is counted along the way, so nothing can drift.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use shoal_proto::{NodeAvailability, NodeRole, NodeState, ServiceMode, TaskState};

use super::encode::{gauge, gauges, snake, Labels};
use crate::store::StoreState;

pub fn role_label(role: NodeRole) -> String {
    snake(role.as_str_name(), "NODE_ROLE_")
}

pub fn state_label(state: NodeState) -> String {
    snake(state.as_str_name(), "NODE_STATE_")
}

pub fn availability_label(availability: NodeAvailability) -> String {
    snake(availability.as_str_name(), "NODE_AVAILABILITY_")
}

pub fn task_state_label(state: TaskState) -> String {
    snake(state.as_str_name(), "TASK_STATE_")
}

const ROLES: [NodeRole; 2] = [NodeRole::Worker, NodeRole::Manager];
const STATES: [NodeState; 4] = [
    NodeState::Unknown,
    NodeState::Down,
    NodeState::Ready,
    NodeState::Disconnected,
];
const AVAILABILITIES: [NodeAvailability; 3] = [
    NodeAvailability::Active,
    NodeAvailability::Pause,
    NodeAvailability::Drain,
];

fn service_name(st: &StoreState, service_id: &str) -> Option<String> {
    st.services
        .get(service_id)
        .and_then(|s| s.spec.as_ref())
        .map(|s| s.name.clone())
}

pub fn encode(enc: &mut DescriptorEncoder, st: &StoreState) -> fmt::Result {
    // Every combination, zeros included, so that "no node is down" is a 0 and not an absent
    // series that an alert cannot compare.
    let mut nodes: BTreeMap<(i32, i32, i32), u64> = BTreeMap::new();
    for role in ROLES {
        for state in STATES {
            for availability in AVAILABILITIES {
                nodes.insert((role as i32, state as i32, availability as i32), 0);
            }
        }
    }
    for n in st.nodes.values() {
        *nodes.entry((n.role, n.state, n.availability)).or_default() += 1;
    }
    gauges(
        enc,
        "shoal_nodes",
        "Nodes in the swarm by role, state and availability.",
        None,
        nodes.into_iter().map(|((role, state, availability), n)| {
            let labels: Labels = vec![
                (
                    "role",
                    role_label(NodeRole::try_from(role).unwrap_or_default()).into(),
                ),
                (
                    "state",
                    state_label(NodeState::try_from(state).unwrap_or_default()).into(),
                ),
                (
                    "availability",
                    availability_label(
                        NodeAvailability::try_from(availability).unwrap_or_default(),
                    )
                    .into(),
                ),
            ];
            (labels, n)
        }),
    )?;
    gauges(
        enc,
        "shoal_node_info",
        "One series per node: its ID, hostname, role, state and availability as labels.",
        None,
        st.nodes.values().map(|n| {
            let labels: Labels = vec![
                ("node", Cow::Borrowed(n.id.as_str())),
                (
                    "hostname",
                    Cow::Borrowed(n.description.as_ref().map_or("", |d| d.hostname.as_str())),
                ),
                ("role", role_label(n.role()).into()),
                ("state", state_label(n.state()).into()),
                ("availability", availability_label(n.availability()).into()),
            ];
            (labels, 1u64)
        }),
    )?;

    let mut services: BTreeMap<&'static str, u64> =
        [("replicated", 0), ("global", 0)].into_iter().collect();
    for s in st.services.values() {
        let global = s
            .spec
            .as_ref()
            .is_some_and(|spec| spec.mode() == ServiceMode::Global);
        *services
            .entry(if global { "global" } else { "replicated" })
            .or_default() += 1;
    }
    gauges(
        enc,
        "shoal_services",
        "Services by mode.",
        None,
        services.into_iter().map(|(mode, n)| ([("mode", mode)], n)),
    )?;

    let mut tasks: BTreeMap<(TaskState, TaskState), u64> = BTreeMap::new();
    let mut pending = 0u64;
    for t in st.tasks.values() {
        *tasks.entry((t.state(), t.desired())).or_default() += 1;
        if t.state() <= TaskState::Pending && t.desired() == TaskState::Running {
            pending += 1;
        }
    }
    gauges(
        enc,
        "shoal_tasks",
        "Tasks in the store by observed state and desired state (combinations that occur).",
        None,
        tasks.into_iter().map(|((state, desired), n)| {
            (
                [
                    ("state", task_state_label(state)),
                    ("desired_state", task_state_label(desired)),
                ],
                n,
            )
        }),
    )?;
    gauge(
        enc,
        "shoal_scheduler_pending_tasks",
        "Tasks that should run but are not placed on a node yet (NEW or PENDING).",
        None,
        pending,
    )?;

    let replicas: Vec<(String, u64, u64)> = st
        .services
        .values()
        .filter_map(|s| {
            let name = service_name(st, &s.id)?;
            let running = st
                .tasks_of_service(&s.id)
                .filter(|t| t.desired() == TaskState::Running && t.state() == TaskState::Running)
                .count() as u64;
            Some((name, crate::orchestrator::desired_tasks(st, s), running))
        })
        .collect();
    gauges(
        enc,
        "shoal_service_replicas_desired",
        "Tasks a service should run: its replicas, or for a global service its eligible nodes.",
        None,
        replicas
            .iter()
            .map(|(name, desired, _)| ([("service", name.as_str())], *desired)),
    )?;
    gauges(
        enc,
        "shoal_service_replicas_running",
        "Tasks of a service that run and should.",
        None,
        replicas
            .iter()
            .map(|(name, _, running)| ([("service", name.as_str())], *running)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_lower_case_names() {
        assert_eq!(role_label(NodeRole::Manager), "manager");
        assert_eq!(state_label(NodeState::Disconnected), "disconnected");
        assert_eq!(availability_label(NodeAvailability::Drain), "drain");
        assert_eq!(task_state_label(TaskState::Running), "running");
    }
}
