//! Rolling updates: a service whose container spec changed (`service update --image …`,
//! `--env-add`, `--limit-cpu`, `--force` …) has its tasks replaced, slot by slot (replicated)
//! or node by node (global), paced by the service's update policy ([`super::rollout`]):
//!
//! * **Stop-first** (docker's default `--update-order`): the old task is shut down, and its
//!   slot or node gets the new task only once the old one has stopped (its worker reported it
//!   finished), so a slot never runs two tasks and a node never holds both reservations. An old
//!   task that was never placed, or whose node is DOWN or removed, holds nothing: its
//!   replacement does not wait.
//! * **Start-first**: the new task is created beside the old one, which keeps serving until the
//!   new one runs; the slot then keeps the new one and the old one is stopped. A new task that
//!   fails leaves the old one running.
//!
//! Only the container spec, the networks and the endpoint count (`Task.spec` against
//! `ServiceSpec.container`, the task's attachments — network IDs and aliases, in order —
//! against `ServiceSpec.networks`, and the published ports and endpoint mode the task was
//! created with against the service's, since workers bind host-mode ports and the routing mesh
//! attaches tasks from them; what `service ps` and the CLI's progress call "up to date"):
//! scaling leaves tasks alone, and changed
//! placement moves tasks through the orchestrator's node-fate rules instead. Tasks that are
//! replaced for other reasons (failure, lost node, drain) come back with the current spec
//! anyway.
//!
//! The step is a pure function of the store, like the rest of the orchestrator: a leader change
//! mid-rollout simply carries on from what the tasks show.

use shoal_proto::{Service, Task, TaskState};

/// Whether `t` runs a container spec other than the service's current one, is attached to
/// other networks (or with other aliases) than the service now names, or was created for
/// other published ports or another endpoint mode.
pub(crate) fn outdated(service: &Service, t: &Task) -> bool {
    // Made from the service as it is now (versions are log indexes, never reused): nothing to
    // compare. Most tasks are, and a round asks this of each several times; the comparison of
    // container specs was the bulk of a round with a hundred thousand tasks.
    let version = service.meta.as_ref().map_or(0, |m| m.version);
    if version != 0 && t.service_version == version {
        return false;
    }
    let current = service.spec.as_ref().and_then(|s| s.container.as_ref());
    let same_networks = service
        .spec
        .as_ref()
        .map_or(t.networks.is_empty(), |s| t.has_networks_of(s));
    t.spec.as_deref() != current || !same_networks || !t.has_endpoint_of(service)
}

/// An old-spec task that was shut down and is still stopping on a node: under stop-first its
/// slot or node waits for it. The caller checks the node is still there (a task on a lost node
/// stops nothing).
pub(crate) fn holds_place(service: &Service, t: &Task) -> bool {
    t.desired() > TaskState::Running
        && t.state() >= TaskState::Assigned
        && !t.state().is_terminal()
        && outdated(service, t)
}

/// Start-first: when `kept` (the task serving a slot or node) runs an older spec and a task of
/// the current spec is starting beside it among `live`, that task's ID: both stay until the
/// new one runs.
pub(crate) fn starting_beside<'a>(
    service: &Service,
    kept: &Task,
    live: &[&'a Task],
) -> Option<&'a str> {
    if !outdated(service, kept) {
        return None;
    }
    live.iter()
        .find(|t| t.id != kept.id && t.state() < TaskState::Running && !outdated(service, t))
        .map(|t| t.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{plan, Plan};
    use super::*;
    use shoal_proto::{
        ContainerSpec, NodeAvailability, NodeState, RestartPolicy, ServiceMode, TaskStatus,
    };

    use crate::store::StoreState;

    fn image(name: &str) -> Option<ContainerSpec> {
        Some(ContainerSpec {
            image: format!("docker.io/library/{name}:latest"),
            ..Default::default()
        })
    }

    /// Service s1 (replicated, 3 replicas, or global) now at image "new".
    fn updated(mode: ServiceMode, replicas: u64) -> Service {
        let mut s = service("s1", mode, replicas);
        let spec = s.spec.as_mut().unwrap();
        spec.container = image("new");
        spec.restart = Some(RestartPolicy {
            delay_ms: 1_000,
            ..Default::default()
        });
        s
    }

    fn with(mut t: Task, img: &str, desired: TaskState) -> Task {
        t.spec = image(img).map(Box::new);
        t.restart = updated(ServiceMode::Replicated, 1).spec.unwrap().restart;
        t.desired_state = desired as i32;
        t
    }

    fn old(id: &str, slot: u64, node: &str, state: TaskState) -> Task {
        with(task(id, slot, node, state, 0), "old", TaskState::Running)
    }

    fn new(id: &str, slot: u64, node: &str, state: TaskState, at: i64) -> Task {
        with(task(id, slot, node, state, at), "new", TaskState::Running)
    }

    fn stopped(mut t: Task, state: TaskState) -> Task {
        t.desired_state = TaskState::Shutdown as i32;
        t.status = Some(TaskStatus {
            state: state as i32,
            timestamp_ms: 5,
            ..Default::default()
        });
        t
    }

    fn replicated(tasks: Vec<Task>) -> StoreState {
        state(
            vec![updated(ServiceMode::Replicated, 3)],
            vec![ready("n1")],
            tasks,
        )
    }

    fn images_created(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(shoal_proto::store_action::Action::CreateTask(t)) => {
                    Some(t.spec.as_ref()?.image.clone())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn replaces_one_slot_at_a_time_stop_first() {
        let running_old = || {
            vec![
                old("o2", 2, "n1", TaskState::Running),
                old("o3", 3, "n1", TaskState::Running),
            ]
        };
        // Step 1: the lowest slot's old task is stopped; nothing is created yet.
        let mut tasks = running_old();
        tasks.push(old("o1", 1, "n1", TaskState::Running));
        let p = plan(&replicated(tasks), 10);
        assert_eq!(shut_down(&p), vec!["o1"]);
        assert!(created(&p).is_empty(), "stop-first: {:?}", p.actions);

        // While it stops, nothing else happens.
        let mut tasks = running_old();
        tasks.push(stopped(
            old("o1", 1, "n1", TaskState::Running),
            TaskState::Running,
        ));
        assert!(plan(&replicated(tasks), 11).actions.is_empty());

        // Once stopped, the slot gets a task with the new spec, at once (no restart delay).
        let mut tasks = running_old();
        tasks.push(stopped(
            old("o1", 1, "n1", TaskState::Running),
            TaskState::Shutdown,
        ));
        let p = plan(&replicated(tasks), 12);
        assert_eq!(created(&p), vec![(1, String::new())]);
        assert_eq!(images_created(&p), vec!["docker.io/library/new:latest"]);
        assert!(shut_down(&p).is_empty(), "one slot at a time");

        // The next slot waits while the new task starts, and goes once it runs.
        for (state_now, next) in [
            (TaskState::New, vec![]),
            (TaskState::Starting, vec![]),
            (TaskState::Pending, vec!["o2"]),
            (TaskState::Running, vec!["o2"]),
        ] {
            let mut tasks = running_old();
            tasks.push(stopped(
                old("o1", 1, "n1", TaskState::Running),
                TaskState::Shutdown,
            ));
            tasks.push(new("n1", 1, "n1", state_now, 20));
            let p = plan(&replicated(tasks), 21);
            assert_eq!(shut_down(&p), next, "new task {state_now:?}");
            assert!(created(&p).is_empty());
        }
    }

    #[test]
    fn a_failing_new_spec_pauses_the_rollout() {
        let tasks = vec![
            stopped(old("o1", 1, "n1", TaskState::Running), TaskState::Shutdown),
            stopped(new("n1", 1, "n1", TaskState::Failed, 20), TaskState::Failed),
            old("o2", 2, "n1", TaskState::Running),
            old("o3", 3, "n1", TaskState::Running),
        ];
        let p = plan(&replicated(tasks), 500);
        assert!(shut_down(&p).is_empty(), "{:?}", p.actions);
        assert!(
            created(&p).is_empty(),
            "the restart delay applies to the new task"
        );
        assert_eq!(p.wake_at_ms, Some(5 + 1_000), "failed at 5, delay 1 s");
    }

    #[test]
    fn old_tasks_that_hold_nothing_do_not_make_the_slot_wait() {
        // Never placed: nothing to stop.
        let unplaced = stopped(old("o1", 1, "", TaskState::Pending), TaskState::Pending);
        let p = plan(&replicated(vec![unplaced]), 10);
        assert_eq!(created(&p).len(), 3);
        // On a node that went down: the orchestrator reports it and refills at once.
        let mut s = replicated(vec![stopped(
            old("o1", 1, "gone", TaskState::Running),
            TaskState::Running,
        )]);
        s.nodes.insert(
            "gone".into(),
            node("gone", NodeState::Down, NodeAvailability::Active),
        );
        let p = plan(&s, 10);
        assert!(created(&p).iter().any(|(slot, _)| *slot == 1));
    }

    #[test]
    fn scaling_alone_replaces_nothing() {
        let tasks = vec![
            new("a", 1, "n1", TaskState::Running, 1),
            new("b", 2, "n1", TaskState::Running, 1),
        ];
        let p = plan(&replicated(tasks), 10);
        assert_eq!(created(&p), vec![(3, String::new())]);
        assert!(shut_down(&p).is_empty());
    }

    #[test]
    fn global_services_roll_node_by_node() {
        let nodes = vec![ready("a"), ready("b")];
        let s = state(
            vec![updated(ServiceMode::Global, 0)],
            nodes.clone(),
            vec![
                old("ga", 0, "a", TaskState::Running),
                old("gb", 0, "b", TaskState::Running),
            ],
        );
        let p = plan(&s, 10);
        assert_eq!(shut_down(&p), vec!["ga"]);
        assert!(created(&p).is_empty());

        let stopping = state(
            vec![updated(ServiceMode::Global, 0)],
            nodes.clone(),
            vec![
                stopped(old("ga", 0, "a", TaskState::Running), TaskState::Running),
                old("gb", 0, "b", TaskState::Running),
            ],
        );
        assert!(plan(&stopping, 11).actions.is_empty());

        let done = state(
            vec![updated(ServiceMode::Global, 0)],
            nodes.clone(),
            vec![
                stopped(old("ga", 0, "a", TaskState::Running), TaskState::Shutdown),
                old("gb", 0, "b", TaskState::Running),
            ],
        );
        let p = plan(&done, 12);
        assert_eq!(created(&p), vec![(0, "a".to_string())]);
        assert_eq!(images_created(&p), vec!["docker.io/library/new:latest"]);
        assert!(shut_down(&p).is_empty());

        let next = state(
            vec![updated(ServiceMode::Global, 0)],
            nodes,
            vec![
                stopped(old("ga", 0, "a", TaskState::Running), TaskState::Shutdown),
                new("na", 0, "a", TaskState::Running, 13),
                old("gb", 0, "b", TaskState::Running),
            ],
        );
        assert_eq!(shut_down(&plan(&next, 14)), vec!["gb"]);
    }

    #[test]
    fn a_change_of_networks_or_aliases_rolls_the_tasks() {
        let mut service = updated(ServiceMode::Replicated, 1);
        let spec = service.spec.as_mut().unwrap();
        spec.networks = vec![shoal_proto::NetworkAttachmentConfig {
            target: "net1".into(),
            aliases: vec!["db".into()],
        }];
        let running = new("t1", 1, "n1", TaskState::Running, 0);
        assert!(outdated(&service, &running), "a network was added");
        let mut attached = running.clone();
        attached.networks = vec![shoal_proto::NetworkAttachment {
            network: Some(shoal_proto::Network {
                id: "net1".into(),
                subnet: "198.18.128.0/24".into(),
                ..Default::default()
            }),
            address: "198.18.128.2/24".into(),
            aliases: vec!["db".into()],
        }];
        assert!(!outdated(&service, &attached), "allocated, same network");
        attached.networks[0].aliases.clear();
        assert!(outdated(&service, &attached), "an alias was removed");

        let st = state(vec![service], vec![ready("n1")], vec![running]);
        assert_eq!(shut_down(&plan(&st, 10)), vec!["t1"]);
    }

    fn with_ports(mut s: Service, ports: Vec<shoal_proto::PortConfig>) -> Service {
        s.endpoint = Some(shoal_proto::Endpoint {
            spec: Some(shoal_proto::EndpointSpec {
                mode: shoal_proto::endpoint_spec::Mode::Vip as i32,
                ports: ports.clone(),
            }),
            ports,
            virtual_ips: vec![],
        });
        s
    }

    fn tcp(published: u32) -> shoal_proto::PortConfig {
        shoal_proto::PortConfig {
            target_port: 80,
            published_port: published,
            ..Default::default()
        }
    }

    #[test]
    fn a_change_of_ports_or_endpoint_mode_rolls_the_tasks() {
        let service = with_ports(updated(ServiceMode::Replicated, 1), vec![tcp(8080)]);
        let mut current = new("t1", 1, "n1", TaskState::Running, 0);
        current.endpoint = service.endpoint.clone();
        assert!(!outdated(&service, &current));
        // Ports only: the container spec and networks are the same.
        let moved = with_ports(updated(ServiceMode::Replicated, 1), vec![tcp(8081)]);
        assert!(outdated(&moved, &current), "a published port changed");
        let none = with_ports(updated(ServiceMode::Replicated, 1), vec![]);
        assert!(outdated(&none, &current), "the port was unpublished");
        let mut dnsrr = with_ports(updated(ServiceMode::Replicated, 1), vec![]);
        if let Some(e) = dnsrr.endpoint.as_mut().and_then(|e| e.spec.as_mut()) {
            e.mode = shoal_proto::endpoint_spec::Mode::Dnsrr as i32;
        }
        let mut plain = new("t2", 1, "n1", TaskState::Running, 0);
        plain.endpoint = none.endpoint.clone();
        assert!(!outdated(&none, &plain));
        assert!(outdated(&dnsrr, &plain), "the endpoint mode changed");
        // A task from before endpoints were recorded is current for a service with none.
        plain.endpoint = None;
        assert!(!outdated(&none, &plain));
        // The VIPs are not the task's concern.
        let mut with_vip = none.clone();
        if let Some(e) = with_vip.endpoint.as_mut() {
            e.virtual_ips.push(shoal_proto::VirtualIp {
                network_id: "n".into(),
                addr: "198.18.128.2/24".into(),
            });
        }
        assert!(!outdated(&with_vip, &plain));
        // The rollout replaces the running task like any other change.
        let st = replicated(vec![current]);
        let st = StoreState {
            services: [("s1".to_string(), moved)].into(),
            ..st
        };
        assert_eq!(shut_down(&plan(&st, 10)), vec!["t1"]);
    }

    #[test]
    fn a_task_made_from_the_current_version_is_never_outdated() {
        let mut service = Service {
            meta: Some(shoal_proto::Meta {
                version: 7,
                ..Default::default()
            }),
            spec: Some(Box::new(shoal_proto::ServiceSpec {
                container: Some(shoal_proto::ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let current = crate::orchestrator::new_task(&service, 1, "", 0);
        assert_eq!(current.service_version, 7);
        assert!(!outdated(&service, &current));
        // An update is a new version: the task is compared, and its old image shows.
        if let Some(c) = service.spec.as_mut().and_then(|s| s.container.as_mut()) {
            c.image = "busybox:2".into();
        }
        service.meta = Some(shoal_proto::Meta {
            version: 8,
            ..Default::default()
        });
        assert!(outdated(&service, &current));
    }
}
