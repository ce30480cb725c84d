//! swarmkit's HostPortFilter: a host-mode published port is bound on the node that runs the
//! task, so a node where a live task (placed, not finished, still wanted) already publishes
//! the same port and protocol in host mode cannot take another. Ingress ports are not its
//! concern: they are unique cluster-wide already (the allocator) and bound by every node.
//!
//! The ports come from the task's own endpoint (copied from the service's when the task was
//! created), which is what its worker binds.

use std::collections::HashSet;

use shoal_proto::validate::endpoint::is_ingress;
use shoal_proto::Task;

/// The host-mode ports `t` publishes, as (protocol, port).
pub(super) fn host_ports(t: &Task) -> impl Iterator<Item = (i32, u32)> + '_ {
    t.endpoint
        .iter()
        .flat_map(|e| e.ports.iter())
        .filter(|p| !is_ingress(p) && p.published_port != 0)
        .map(|p| (p.protocol, p.published_port))
}

/// The host-mode ports taken on each node, kept current as the round places tasks.
#[derive(Default)]
pub(super) struct HostPorts<'a> {
    taken: HashSet<(&'a str, i32, u32)>,
}

impl<'a> HostPorts<'a> {
    /// `task`, placed on `node`, holds its host-mode ports there.
    pub(super) fn add(&mut self, node: &'a str, task: &Task) {
        for (protocol, port) in host_ports(task) {
            self.taken.insert((node, protocol, port));
        }
    }

    /// The first of `task`'s host-mode ports already taken on `node`, as (protocol, port).
    pub(super) fn conflict(&self, node: &str, task: &Task) -> Option<(i32, u32)> {
        host_ports(task).find(|&(protocol, port)| self.taken.contains(&(node, protocol, port)))
    }
}

#[cfg(test)]
mod tests {
    use shoal_proto::{
        port_config, store_action::Action, Endpoint, Meta, Node, NodeAvailability, NodeState,
        PortConfig, Service, ServiceSpec, TaskState, TaskStatus,
    };

    use super::super::plan;
    use super::*;
    use crate::store::StoreState;

    const HOST: i32 = port_config::PublishMode::Host as i32;
    const UDP: i32 = port_config::Protocol::Udp as i32;

    fn port(published: u32, mode: i32, protocol: i32) -> PortConfig {
        PortConfig {
            target_port: 80,
            published_port: published,
            publish_mode: mode,
            protocol,
            ..Default::default()
        }
    }

    fn task(id: &str, service: &str, node: &str, state: TaskState, ports: Vec<PortConfig>) -> Task {
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
            endpoint: Some(Endpoint {
                ports,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn state(nodes: &[&str], tasks: Vec<Task>) -> StoreState {
        let services = ["s", "other"].map(|id| Service {
            id: id.into(),
            spec: Some(Box::new(ServiceSpec {
                name: id.into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        StoreState {
            services: services.into_iter().map(|s| (s.id.clone(), s)).collect(),
            nodes: nodes
                .iter()
                .map(|id| {
                    let n = Node {
                        id: id.to_string(),
                        state: NodeState::Ready as i32,
                        availability: NodeAvailability::Active as i32,
                        ..Default::default()
                    };
                    (n.id.clone(), n)
                })
                .collect(),
            tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            ..Default::default()
        }
    }

    type Pairs = Vec<(String, String)>;

    /// (task, node) assigned and (task, reason) left pending.
    fn outcome(st: &StoreState) -> (Pairs, Pairs) {
        let (mut assigned, mut pending) = (Vec::new(), Vec::new());
        for a in plan(st, 0) {
            match a.action {
                Some(Action::AssignTask(x)) => assigned.push((x.task_id, x.node_id)),
                Some(Action::MarkTaskPending(u)) => {
                    pending.push((u.task_id, u.status.unwrap_or_default().err))
                }
                _ => {}
            }
        }
        (assigned, pending)
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn a_node_publishing_the_host_port_is_not_eligible() {
        let p = port(8080, HOST, 0);
        let st = state(
            &["a", "b"],
            vec![
                // Another service's live task holds 8080/tcp on a.
                task("o1", "other", "a", TaskState::Running, vec![p.clone()]),
                task("t1", "s", "", TaskState::Pending, vec![p.clone()]),
            ],
        );
        assert_eq!(outcome(&st), (vec![pair("t1", "b")], vec![]));
    }

    #[test]
    fn tasks_placed_in_the_same_round_count_and_the_rest_wait_with_a_reason() {
        let p = port(8080, HOST, 0);
        let st = state(
            &["a", "b"],
            vec![
                task("t1", "s", "", TaskState::Pending, vec![p.clone()]),
                task("t2", "s", "", TaskState::Pending, vec![p.clone()]),
                task("t3", "s", "", TaskState::Pending, vec![p.clone()]),
            ],
        );
        assert_eq!(
            outcome(&st),
            (
                vec![pair("t1", "a"), pair("t2", "b")],
                vec![pair(
                    "t3",
                    "no suitable node (host-mode port 8080/tcp already in use on 2 nodes)"
                )]
            )
        );
    }

    #[test]
    fn other_protocols_ingress_ports_and_finished_or_stopping_tasks_do_not_conflict() {
        let host = port(8080, HOST, 0);
        let mut stopping = task("o3", "other", "a", TaskState::Running, vec![host.clone()]);
        stopping.desired_state = TaskState::Shutdown as i32;
        let st = state(
            &["a"],
            vec![
                task(
                    "o1",
                    "other",
                    "a",
                    TaskState::Running,
                    vec![port(8080, HOST, UDP)],
                ),
                task("o2", "other", "a", TaskState::Failed, vec![host.clone()]),
                stopping,
                // An ingress port is not bound per node by the task.
                task(
                    "o4",
                    "other",
                    "a",
                    TaskState::Running,
                    vec![port(8080, 0, 0)],
                ),
                task("t1", "s", "", TaskState::Pending, vec![host]),
            ],
        );
        assert_eq!(outcome(&st), (vec![pair("t1", "a")], vec![]));
    }

    #[test]
    fn a_global_task_on_a_node_with_the_port_taken_waits() {
        let p = port(9090, HOST, 0);
        let st = state(
            &["a"],
            vec![
                task("o1", "other", "a", TaskState::Running, vec![p.clone()]),
                task("g1", "s", "a", TaskState::New, vec![p]),
            ],
        );
        assert_eq!(
            outcome(&st),
            (
                vec![],
                vec![pair(
                    "g1",
                    "no suitable node (host-mode port 9090/tcp already in use on 1 node)"
                )]
            )
        );
    }
}
