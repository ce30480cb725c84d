//! Unit tests of the state machine: one entry at a time, refusals roll back.

use super::*;
use shoal_proto::{ServiceSpec, StoreAction, TaskAssignment, TaskDesiredState, TaskStatusUpdate};

fn act(a: Action) -> StoreAction {
    StoreAction { action: Some(a) }
}

fn service(id: &str, name: &str) -> Service {
    Service {
        id: id.into(),
        spec: Some(Box::new(ServiceSpec {
            name: name.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn task(id: &str) -> Task {
    Task {
        id: id.into(),
        service_id: "s1".into(),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

fn status(id: &str, state: TaskState) -> Action {
    Action::UpdateTaskStatus(TaskStatusUpdate {
        task_id: id.into(),
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
    })
}

fn one(s: &mut StoreState, index: u64, a: Action) -> Result<(), ApplyError> {
    s.apply(
        index,
        &Proposal {
            actions: vec![act(a)],
        },
    )
}

#[test]
fn duplicate_service_name_refuses_whole_entry() {
    let mut s = StoreState::default();
    one(
        &mut s,
        1,
        Action::CreateService(service("s1", "web").into()),
    )
    .unwrap();
    let before = s.clone();
    let err = s
        .apply(
            2,
            &Proposal {
                actions: vec![
                    act(Action::CreateTask(task("t1").into())),
                    act(Action::CreateService(service("s2", "web").into())),
                ],
            },
        )
        .unwrap_err();
    assert_eq!(err, ApplyError::ServiceNameTaken("web".into()));
    assert_eq!(
        s.tasks, before.tasks,
        "the task of a refused entry is rolled back"
    );
    assert_eq!(s.services, before.services);
}

#[test]
fn stale_service_update_is_refused() {
    let mut s = StoreState::default();
    one(
        &mut s,
        1,
        Action::CreateService(service("s1", "web").into()),
    )
    .unwrap();
    let mut stale = s.services["s1"].clone();
    one(&mut s, 2, Action::UpdateService(stale.clone().into())).unwrap();
    assert_eq!(s.services["s1"].meta.as_ref().unwrap().version, 2);
    stale.spec.as_mut().unwrap().replicas = 9;
    let err = one(&mut s, 3, Action::UpdateService(stale.into())).unwrap_err();
    assert!(matches!(
        err,
        ApplyError::VersionConflict {
            expected: 1,
            found: 2,
            ..
        }
    ));
    assert_eq!(s.services["s1"].spec.as_ref().unwrap().replicas, 0);
}

#[test]
fn a_service_update_keeps_its_own_name_but_cannot_take_another() {
    let mut s = StoreState::default();
    one(
        &mut s,
        1,
        Action::CreateService(service("s1", "web").into()),
    )
    .unwrap();
    one(&mut s, 2, Action::CreateService(service("s2", "db").into())).unwrap();
    let mut db = s.services["s2"].clone();
    db.spec.as_mut().unwrap().replicas = 3;
    one(&mut s, 3, Action::UpdateService(db.into())).unwrap();
    let mut renamed = s.services["s2"].clone();
    renamed.spec.as_mut().unwrap().name = "web".into();
    let err = one(&mut s, 4, Action::UpdateService(renamed.into())).unwrap_err();
    assert_eq!(err, ApplyError::ServiceNameTaken("web".into()));
    assert_eq!(s.services["s2"].spec.as_ref().unwrap().name, "db");
    assert_eq!(s.services["s2"].spec.as_ref().unwrap().replicas, 3);
}

#[test]
fn task_state_only_moves_forward_and_freezes_when_terminal() {
    let mut s = StoreState::default();
    one(&mut s, 1, Action::CreateTask(task("t1").into())).unwrap();
    one(&mut s, 2, status("t1", TaskState::Running)).unwrap();
    one(&mut s, 3, status("t1", TaskState::Starting)).unwrap();
    assert_eq!(s.tasks["t1"].state(), TaskState::Running);
    one(&mut s, 4, status("t1", TaskState::Failed)).unwrap();
    one(&mut s, 5, status("t1", TaskState::Rejected)).unwrap();
    assert_eq!(s.tasks["t1"].state(), TaskState::Failed);
}

#[test]
fn a_health_change_is_taken_at_the_same_state_but_never_backwards() {
    use shoal_proto::HealthStatus;
    let health = |state: TaskState, health: HealthStatus| {
        Action::UpdateTaskStatus(TaskStatusUpdate {
            task_id: "t1".into(),
            status: Some(TaskStatus {
                state: state as i32,
                health: health as i32,
                timestamp_ms: 1_000 + state as i64 * 10 + health as i64,
                ..Default::default()
            }),
        })
    };
    let mut s = StoreState::default();
    one(&mut s, 1, Action::CreateTask(task("t1").into())).unwrap();
    one(&mut s, 2, status("t1", TaskState::Starting)).unwrap();
    one(
        &mut s,
        3,
        health(TaskState::Starting, HealthStatus::Starting),
    )
    .unwrap();
    let st = s.tasks["t1"].status.clone().unwrap();
    assert_eq!(
        (st.state(), st.health()),
        (TaskState::Starting, HealthStatus::Starting)
    );
    // A repeat changes nothing (the task's version stays).
    one(
        &mut s,
        4,
        health(TaskState::Starting, HealthStatus::Starting),
    )
    .unwrap();
    assert_eq!(s.tasks["t1"].meta.as_ref().unwrap().version, 3);
    one(&mut s, 5, health(TaskState::Running, HealthStatus::Healthy)).unwrap();
    let started = s.tasks["t1"].started_at_ms;
    assert_eq!(
        started, 1_062,
        "RUNNING (healthy) starts the monitor period"
    );
    // Another health at RUNNING is taken but does not move when the task started running.
    one(&mut s, 6, health(TaskState::Running, HealthStatus::None)).unwrap();
    assert_eq!(
        s.tasks["t1"].status.as_ref().unwrap().health(),
        HealthStatus::None
    );
    assert_eq!(s.tasks["t1"].started_at_ms, started);
    one(&mut s, 6, health(TaskState::Running, HealthStatus::Healthy)).unwrap();
    // A late report of a lower state is refused, whatever its health.
    one(
        &mut s,
        6,
        health(TaskState::Starting, HealthStatus::Unhealthy),
    )
    .unwrap();
    let st = s.tasks["t1"].status.clone().unwrap();
    assert_eq!(
        (st.state(), st.health()),
        (TaskState::Running, HealthStatus::Healthy)
    );
    one(
        &mut s,
        7,
        health(TaskState::Failed, HealthStatus::Unhealthy),
    )
    .unwrap();
    // Terminal: frozen, even for a health change.
    one(&mut s, 8, health(TaskState::Failed, HealthStatus::None)).unwrap();
    assert_eq!(
        s.tasks["t1"].status.as_ref().unwrap().health(),
        HealthStatus::Unhealthy
    );
}

#[test]
fn assignment_happens_once_and_desired_state_only_grows() {
    let mut s = StoreState::default();
    one(&mut s, 1, Action::CreateTask(task("t1").into())).unwrap();
    let assign = |node: &str| {
        Action::AssignTask(TaskAssignment {
            task_id: "t1".into(),
            node_id: node.into(),
            message: String::new(),
            timestamp_ms: 0,
        })
    };
    one(&mut s, 2, assign("n1")).unwrap();
    one(&mut s, 3, assign("n2")).unwrap();
    assert_eq!(s.tasks["t1"].node_id, "n1");
    assert_eq!(s.tasks["t1"].state(), TaskState::Assigned);
    let desire = |st: TaskState| {
        Action::SetTaskDesiredState(TaskDesiredState {
            task_id: "t1".into(),
            desired_state: st as i32,
            timestamp_ms: 0,
        })
    };
    one(&mut s, 4, desire(TaskState::Shutdown)).unwrap();
    one(&mut s, 5, desire(TaskState::Running)).unwrap();
    assert_eq!(s.tasks["t1"].desired(), TaskState::Shutdown);
}

fn node_report(id: &str) -> Action {
    Action::NodeStatus(
        shoal_proto::NodeStatusUpdate {
            node_id: id.into(),
            addr: "198.18.0.1:2377".into(),
            state: shoal_proto::NodeState::Ready as i32,
            ..Default::default()
        }
        .into(),
    )
}

fn removal(id: &str, at: u64, until: u64) -> Action {
    Action::RemoveNode(shoal_proto::NodeRemoval {
        node_id: id.into(),
        removed_at_ms: at,
        revoked_until_ms: until,
    })
}

#[test]
fn node_status_keeps_role_and_availability() {
    let mut s = StoreState::default();
    let manager = Node {
        id: "n1".into(),
        role: NodeRole::Manager as i32,
        availability: shoal_proto::NodeAvailability::Drain as i32,
        ..Default::default()
    };
    one(&mut s, 1, Action::PutNode(manager.into())).unwrap();
    one(&mut s, 2, node_report("n1")).unwrap();
    assert_eq!(s.nodes["n1"].role, NodeRole::Manager as i32);
    assert_eq!(
        s.nodes["n1"].availability,
        shoal_proto::NodeAvailability::Drain as i32
    );
    assert_eq!(s.nodes["n1"].addr, "198.18.0.1:2377");
    assert_eq!(s.nodes["n1"].state, shoal_proto::NodeState::Ready as i32);
}

#[test]
fn a_status_report_never_creates_a_node() {
    // A certificate is not membership: a node the store does not know (never joined, or
    // removed) cannot make itself one by reporting.
    let mut s = StoreState::default();
    let err = one(&mut s, 1, node_report("stranger")).unwrap_err();
    assert_eq!(err, ApplyError::NoSuchNode("stranger".into()));
    assert!(s.nodes.is_empty());
}

#[test]
fn node_rm_revokes_the_node_until_its_certificates_expire() {
    let mut s = StoreState::default();
    one(&mut s, 1, Action::PutCluster(Cluster::default().into())).unwrap();
    for id in ["a", "b"] {
        let node = Node {
            id: id.into(),
            ..Default::default()
        };
        one(&mut s, 2, Action::PutNode(node.into())).unwrap();
    }
    one(&mut s, 3, removal("a", 1_000, 5_000)).unwrap();
    assert!(!s.nodes.contains_key("a"));
    assert!(s.is_removed_node("a"));
    // Neither its session's report nor a put brings it back, and nothing else changes.
    let before = s.clone();
    assert_eq!(
        one(&mut s, 4, node_report("a")).unwrap_err(),
        ApplyError::NodeRemoved("a".into())
    );
    let back = Node {
        id: "a".into(),
        ..Default::default()
    };
    assert_eq!(
        one(&mut s, 5, Action::PutNode(back.into())).unwrap_err(),
        ApplyError::NodeRemoved("a".into())
    );
    assert_eq!(s.nodes, before.nodes);
    assert_eq!(s.cluster, before.cluster);
    // A later removal drops entries whose certificates have all expired.
    one(&mut s, 6, removal("b", 6_000, 9_000)).unwrap();
    assert!(!s.is_removed_node("a"));
    assert!(s.is_removed_node("b"));
}

#[test]
fn cluster_changes_are_compare_and_set() {
    let mut s = StoreState::default();
    one(&mut s, 1, Action::PutCluster(Cluster::default().into())).unwrap();
    let read = s.cluster.clone().unwrap();
    let mut first = read.clone();
    first.worker_join_token = "SWMTKN-first".into();
    one(&mut s, 2, Action::PutCluster(first.into())).unwrap();
    // A second writer that read before the first wrote is refused, not silently applied.
    let mut second = read;
    second.manager_join_token = "SWMTKN-second".into();
    let err = one(&mut s, 3, Action::PutCluster(second.into())).unwrap_err();
    assert!(matches!(
        err,
        ApplyError::VersionConflict {
            kind: "cluster",
            expected: 1,
            found: 2,
            ..
        }
    ));
    let stored = s.cluster.as_ref().unwrap();
    assert_eq!(stored.worker_join_token, "SWMTKN-first");
    assert_eq!(stored.manager_join_token, "");
}

#[test]
fn updates_of_missing_tasks_are_no_ops() {
    let mut s = StoreState::default();
    one(&mut s, 1, status("gone", TaskState::Running)).unwrap();
    assert!(s.tasks.is_empty());
}

#[test]
fn snapshot_round_trip() {
    let mut s = StoreState::default();
    one(
        &mut s,
        1,
        Action::CreateService(service("s1", "web").into()),
    )
    .unwrap();
    one(&mut s, 2, Action::CreateTask(task("t1").into())).unwrap();
    assert_eq!(
        StoreState::from_snapshot(s.to_snapshot(), s.applied_index),
        s
    );
}

fn network(id: &str, name: &str, subnet: &str, vni: u32) -> Network {
    Network {
        id: id.into(),
        spec: Some(shoal_proto::NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            ..Default::default()
        }),
        subnet: subnet.into(),
        vni,
        ..Default::default()
    }
}

#[test]
fn networks_keep_their_names_subnets_and_vnis_to_themselves() {
    let mut s = StoreState::default();
    one(
        &mut s,
        1,
        Action::CreateNetwork(network("n1", "front", "198.18.8.0/24", 4096).into()),
    )
    .unwrap();
    let before = s.clone();
    let refusals = [
        (
            network("n2", "front", "198.18.9.0/24", 4097),
            ApplyError::NetworkNameTaken("front".into()),
        ),
        (
            network("n2", "back", "198.18.8.128/25", 4097),
            ApplyError::SubnetOverlap {
                subnet: "198.18.8.128/25".into(),
                other: "front".into(),
                other_subnet: "198.18.8.0/24".into(),
            },
        ),
        (
            network("n2", "back", "198.18.0.0/16", 4097),
            ApplyError::SubnetOverlap {
                subnet: "198.18.0.0/16".into(),
                other: "front".into(),
                other_subnet: "198.18.8.0/24".into(),
            },
        ),
        (
            network("n2", "back", "198.18.9.0/24", 4096),
            ApplyError::VniTaken {
                vni: 4096,
                other: "front".into(),
            },
        ),
        (
            network("n2", "back", "not-a-cidr", 4097),
            ApplyError::InvalidSubnet {
                name: "back".into(),
                subnet: "not-a-cidr".into(),
            },
        ),
    ];
    for (i, (n, want)) in refusals.into_iter().enumerate() {
        let err = one(&mut s, 2 + i as u64, Action::CreateNetwork(n.into())).unwrap_err();
        assert_eq!(err, want);
        assert_eq!(
            s.networks, before.networks,
            "a refused entry changes nothing"
        );
    }
    one(
        &mut s,
        10,
        Action::CreateNetwork(network("n2", "back", "198.18.9.0/24", 4097).into()),
    )
    .unwrap();
    assert_eq!(s.networks.len(), 2);
    assert_eq!(s.network_by_name("back").map(|n| n.id.as_str()), Some("n2"));
}

#[test]
fn networks_survive_a_snapshot_and_go_with_delete() {
    let mut s = StoreState::default();
    one(
        &mut s,
        1,
        Action::CreateNetwork(network("n1", "front", "198.18.8.0/24", 4096).into()),
    )
    .unwrap();
    let restored = StoreState::from_snapshot(s.to_snapshot(), 1);
    assert_eq!(restored.networks, s.networks);
    one(&mut s, 2, Action::DeleteNetwork("n1".into())).unwrap();
    assert!(s.networks.is_empty());
    assert_eq!(
        one(&mut s, 3, Action::DeleteNetwork("n1".into())).unwrap_err(),
        ApplyError::NoSuchNetwork("n1".into())
    );
    // The freed subnet and VNI may be taken again.
    one(
        &mut s,
        4,
        Action::CreateNetwork(network("n3", "front", "198.18.8.0/24", 4096).into()),
    )
    .unwrap();
}

fn gw_network(id: &str, name: &str, subnet: &str, gateway: &str) -> Network {
    let mut n = network(id, name, subnet, 4096);
    n.gateway = gateway.into();
    n
}

fn attached(id: &str, networks: &[&str]) -> Task {
    let mut t = task(id);
    t.networks = networks
        .iter()
        .map(|n| shoal_proto::NetworkAttachment {
            network: Some(Network {
                id: n.to_string(),
                ..Default::default()
            }),
            address: String::new(),
            aliases: vec!["alias".into()],
        })
        .collect();
    t
}

fn allocation(task: &str, addrs: &[(&str, &str)]) -> Action {
    Action::AllocateTask(shoal_proto::TaskAllocation {
        task_id: task.into(),
        networks: addrs
            .iter()
            .map(|(n, a)| shoal_proto::NetworkAttachment {
                network: Some(Network {
                    id: n.to_string(),
                    ..Default::default()
                }),
                address: a.to_string(),
                aliases: vec![],
            })
            .collect(),
        error: String::new(),
        timestamp_ms: 0,
    })
}

/// Networks n1 (front, 198.18.8.0/24, gateway .1) and n2 (back, 198.18.9.0/24), task t1 on
/// both (NEW), task t2 on n1 (NEW).
fn with_attached_tasks() -> StoreState {
    let mut s = StoreState::default();
    let n1 = gw_network("n1", "front", "198.18.8.0/24", "198.18.8.1");
    let n2 = gw_network("n2", "back", "198.18.9.0/24", "198.18.9.1");
    let mut n2 = n2;
    n2.vni = 4097;
    one(&mut s, 1, Action::CreateNetwork(n1.into())).unwrap();
    one(&mut s, 2, Action::CreateNetwork(n2.into())).unwrap();
    one(
        &mut s,
        3,
        Action::CreateTask(attached("t1", &["n1", "n2"]).into()),
    )
    .unwrap();
    one(
        &mut s,
        4,
        Action::CreateTask(attached("t2", &["n1"]).into()),
    )
    .unwrap();
    s
}

#[test]
fn an_allocation_fills_the_attachments_and_makes_the_task_pending() {
    let mut s = with_attached_tasks();
    one(
        &mut s,
        5,
        allocation("t1", &[("n1", "198.18.8.2/24"), ("n2", "198.18.9.2/24")]),
    )
    .unwrap();
    let t = &s.tasks["t1"];
    assert_eq!(t.state(), TaskState::Pending);
    assert_eq!(t.networks[0].address, "198.18.8.2/24");
    assert_eq!(t.networks[1].address, "198.18.9.2/24");
    assert_eq!(
        t.networks[0].network.as_ref().map(|n| n.subnet.as_str()),
        Some("198.18.8.0/24"),
        "the network is copied from the store"
    );
    assert_eq!(t.networks[0].aliases, ["alias"], "the task's aliases stay");
}

#[test]
fn allocations_that_break_the_rules_are_refused() {
    let mut s = with_attached_tasks();
    one(&mut s, 5, allocation("t2", &[("n1", "198.18.8.2/24")])).unwrap();
    let before = s.clone();
    let bad = |address: &str, why: &'static str| ApplyError::BadTaskAddress {
        task: "t1".into(),
        address: address.into(),
        network: "front".into(),
        subnet: "198.18.8.0/24".into(),
        why,
    };
    let refusals = [
        (
            allocation("gone", &[("n1", "198.18.8.3/24")]),
            ApplyError::NoSuchTask("gone".into()),
        ),
        (
            allocation("t2", &[("n1", "198.18.8.3/24")]),
            ApplyError::TaskNotNew {
                task: "t2".into(),
                state: TaskState::Pending.display_name().into(),
            },
        ),
        (
            allocation("t1", &[("n2", "198.18.9.3/24"), ("n1", "198.18.8.3/24")]),
            ApplyError::AttachmentsMismatch {
                task: "t1".into(),
                wanted: "n1,n2".into(),
                given: "n2,n1".into(),
            },
        ),
        (
            allocation("t1", &[("n1", "198.18.7.3/24"), ("n2", "198.18.9.3/24")]),
            bad("198.18.7.3/24", "outside the network's subnet"),
        ),
        (
            allocation("t1", &[("n1", "198.18.8.3/25"), ("n2", "198.18.9.3/24")]),
            bad("198.18.8.3/25", "outside the network's subnet"),
        ),
        (
            allocation("t1", &[("n1", "198.18.8.255/24"), ("n2", "198.18.9.3/24")]),
            bad(
                "198.18.8.255/24",
                "the subnet's network or broadcast address",
            ),
        ),
        (
            allocation("t1", &[("n1", "198.18.8.1/24"), ("n2", "198.18.9.3/24")]),
            bad("198.18.8.1/24", "the network's gateway"),
        ),
        (
            allocation("t1", &[("n1", "nonsense"), ("n2", "198.18.9.3/24")]),
            bad("nonsense", "not an IPv4 CIDR"),
        ),
        (
            allocation("t1", &[("n1", "198.18.8.2/24"), ("n2", "198.18.9.3/24")]),
            ApplyError::AddressInUse {
                address: "198.18.8.2".into(),
                network: "front".into(),
                holder: "t2".into(),
            },
        ),
    ];
    for (i, (a, want)) in refusals.into_iter().enumerate() {
        assert_eq!(one(&mut s, 10 + i as u64, a).unwrap_err(), want);
        assert_eq!(
            s.tasks, before.tasks,
            "a refused allocation changes nothing"
        );
    }
}

#[test]
fn an_allocation_on_a_removed_network_is_refused() {
    let mut s = with_attached_tasks();
    s.networks.remove("n2");
    assert_eq!(
        one(
            &mut s,
            5,
            allocation("t1", &[("n1", "198.18.8.2/24"), ("n2", "198.18.9.2/24")]),
        )
        .unwrap_err(),
        ApplyError::NoSuchNetwork("n2".into())
    );
}

#[test]
fn a_finished_task_frees_its_address() {
    let mut s = with_attached_tasks();
    one(&mut s, 5, allocation("t2", &[("n1", "198.18.8.2/24")])).unwrap();
    one(&mut s, 6, status("t2", TaskState::Failed)).unwrap();
    one(
        &mut s,
        7,
        allocation("t1", &[("n1", "198.18.8.2/24"), ("n2", "198.18.9.2/24")]),
    )
    .unwrap();
    assert_eq!(s.tasks["t1"].state(), TaskState::Pending);
}

#[test]
fn an_allocation_error_leaves_the_task_new_with_the_reason() {
    let mut s = with_attached_tasks();
    let refuse = Action::AllocateTask(shoal_proto::TaskAllocation {
        task_id: "t2".into(),
        networks: vec![],
        error: "no available IP addresses on network front".into(),
        timestamp_ms: 0,
    });
    one(&mut s, 5, refuse).unwrap();
    let t = &s.tasks["t2"];
    assert_eq!(t.state(), TaskState::New);
    assert_eq!(
        t.status.as_ref().map(|s| s.err.as_str()),
        Some("no available IP addresses on network front")
    );
}

#[test]
fn a_network_in_use_is_not_removed() {
    let mut s = with_attached_tasks();
    let mut svc = service("s1", "web");
    if let Some(spec) = svc.spec.as_mut() {
        spec.networks = vec![shoal_proto::NetworkAttachmentConfig {
            target: "n1".into(),
            aliases: vec![],
        }];
    }
    let mut stray = service("s2", "stray");
    if let Some(spec) = stray.spec.as_mut() {
        spec.networks = vec![shoal_proto::NetworkAttachmentConfig {
            target: "gone".into(),
            aliases: vec![],
        }];
    }
    assert_eq!(
        one(&mut s, 5, Action::CreateService(stray.into())).unwrap_err(),
        ApplyError::NoSuchNetwork("gone".into()),
        "a service names only networks that exist"
    );
    one(&mut s, 5, Action::CreateService(svc.into())).unwrap();
    let err = one(&mut s, 6, Action::DeleteNetwork("n1".into())).unwrap_err();
    assert_eq!(
        err,
        ApplyError::NetworkInUseByService {
            network: "front".into(),
            service: "web".into()
        }
    );
    assert!(err
        .to_string()
        .contains("`service update --network-rm front web`"));
    one(&mut s, 7, Action::DeleteService("s1".into())).unwrap();
    assert_eq!(
        one(&mut s, 8, Action::DeleteNetwork("n1".into())).unwrap_err(),
        ApplyError::NetworkInUseByTask {
            network: "front".into(),
            task: "t1".into()
        }
    );
    for (i, t) in ["t1", "t2"].into_iter().enumerate() {
        one(&mut s, 9 + i as u64, status(t, TaskState::Shutdown)).unwrap();
    }
    one(&mut s, 12, Action::DeleteNetwork("n1".into())).unwrap();
    assert!(!s.networks.contains_key("n1"));
}
