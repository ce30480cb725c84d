//! The ingress network's rules and nodes' own addresses, one entry at a time.

use shoal_proto::{
    store_action::Action, Endpoint, Meta, Network, NetworkAttachment, NetworkSpec, Node,
    NodeAllocation, PortConfig, Proposal, ServiceSpec, StoreAction, Task, TaskAllocation,
    TaskState, TaskStatus, VirtualIp,
};

use super::*;

fn apply(st: &mut StoreState, a: Action) -> Result<(), ApplyError> {
    let index = st.applied_index + 1;
    st.apply(
        index,
        &Proposal {
            actions: vec![StoreAction { action: Some(a) }],
        },
    )
}

fn network(id: &str, name: &str, subnet: &str, vni: u32, ingress: bool) -> Network {
    Network {
        id: id.into(),
        spec: Some(NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            ingress,
            ..Default::default()
        }),
        subnet: subnet.into(),
        gateway: subnet.replace(".0/24", ".1"),
        vni,
        ..Default::default()
    }
}

fn attachment(network: &str, address: &str) -> NetworkAttachment {
    NetworkAttachment {
        network: Some(Network {
            id: network.into(),
            ..Default::default()
        }),
        address: address.into(),
        aliases: vec![],
    }
}

fn give_node(node: &str, addrs: &[(&str, &str)]) -> Action {
    Action::AllocateNode(NodeAllocation {
        node_id: node.into(),
        attachments: addrs.iter().map(|(n, a)| attachment(n, a)).collect(),
    })
}

/// Ingress `ing` (198.18.16.0/24), overlay `n1` (198.18.8.0/24), nodes a and b.
fn swarm() -> StoreState {
    let mut st = StoreState::default();
    apply(
        &mut st,
        Action::PutCluster(shoal_proto::Cluster::default().into()),
    )
    .unwrap();
    let ing = network("ing", "ingress", "198.18.16.0/24", 4096, true);
    apply(&mut st, Action::CreateNetwork(ing.into())).unwrap();
    let n1 = network("n1", "front", "198.18.8.0/24", 4097, false);
    apply(&mut st, Action::CreateNetwork(n1.into())).unwrap();
    for id in ["a", "b"] {
        let node = Node {
            id: id.into(),
            meta: Some(Meta::default()),
            ..Default::default()
        };
        apply(&mut st, Action::PutNode(node.into())).unwrap();
    }
    st
}

fn publisher(id: &str, name: &str) -> Service {
    Service {
        id: id.into(),
        spec: Some(Box::new(ServiceSpec {
            name: name.into(),
            ..Default::default()
        })),
        endpoint: Some(Endpoint {
            ports: vec![PortConfig {
                target_port: 80,
                published_port: 8080 + id.len() as u32,
                ..Default::default()
            }],
            virtual_ips: vec![VirtualIp {
                network_id: "ing".into(),
                addr: format!("198.18.16.{}/24", 100 + id.len()),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_node_gets_its_address_with_the_network_copied() {
    let mut st = swarm();
    apply(&mut st, give_node("a", &[("ing", "198.18.16.2/24")])).unwrap();
    let a = &st.nodes["a"].attachments;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].address, "198.18.16.2/24");
    assert!(a[0].network.as_ref().is_some_and(is_ingress_network));
    assert_eq!(st.ingress_network().map(|n| n.id.as_str()), Some("ing"));
    let restored = StoreState::from_snapshot(st.to_snapshot(), st.applied_index);
    assert_eq!(restored.nodes, st.nodes);
}

#[test]
fn node_addresses_that_break_the_rules_are_refused() {
    let mut st = swarm();
    apply(&mut st, give_node("a", &[("ing", "198.18.16.2/24")])).unwrap();
    let task = Task {
        id: "t1".into(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus::default()),
        networks: vec![attachment("ing", "")],
        ..Default::default()
    };
    apply(&mut st, Action::CreateTask(task.into())).unwrap();
    apply(
        &mut st,
        Action::AllocateTask(TaskAllocation {
            task_id: "t1".into(),
            networks: vec![attachment("ing", "198.18.16.3/24")],
            error: String::new(),
            timestamp_ms: 0,
        }),
    )
    .unwrap();
    apply(
        &mut st,
        Action::CreateService(publisher("s1", "web").into()),
    )
    .unwrap();
    let before = st.clone();
    let cases: Vec<(Action, &str)> = vec![
        (
            give_node("b", &[("ing", "198.18.16.2/24")]),
            "address 198.18.16.2 on network ingress is node a's own",
        ),
        (
            give_node("b", &[("ing", "198.18.16.3/24")]),
            "address 198.18.16.3 on network ingress is already held by task t1",
        ),
        (
            give_node("b", &[("ing", "198.18.16.102/24")]),
            "address 198.18.16.102 on network ingress is the VIP of service web",
        ),
        (
            give_node("b", &[("ing", "198.18.16.1/24")]),
            "address \"198.18.16.1/24\" for node b on network ingress (198.18.16.0/24) is the \
             network's gateway",
        ),
        (
            give_node("b", &[("ing", "198.18.17.5/24")]),
            "address \"198.18.17.5/24\" for node b on network ingress (198.18.16.0/24) is \
             outside the network's subnet",
        ),
        (
            give_node("b", &[("ing", "198.18.16.255/24")]),
            "address \"198.18.16.255/24\" for node b on network ingress (198.18.16.0/24) is the \
             subnet's network or broadcast address",
        ),
        (
            give_node("b", &[("ing", "junk")]),
            "address \"junk\" for node b on network ingress (198.18.16.0/24) is not an IPv4 CIDR",
        ),
        (
            give_node("b", &[("n1", "198.18.8.5/24")]),
            "address \"198.18.8.5/24\" for node b on network front (198.18.8.0/24) is on a \
             network that is not the ingress network",
        ),
        (
            give_node("b", &[("ing", "198.18.16.5/24"), ("ing", "198.18.16.6/24")]),
            "address \"198.18.16.6/24\" for node b on network ingress (198.18.16.0/24) is a \
             second address of the node on the network",
        ),
        (
            give_node("gone", &[("ing", "198.18.16.5/24")]),
            "node gone does not exist",
        ),
        (
            give_node("b", &[("nope", "198.18.16.5/24")]),
            "network nope not found",
        ),
    ];
    for (action, want) in cases {
        let err = apply(&mut st, action).unwrap_err();
        assert_eq!(err.to_string(), want);
        assert_eq!(st.nodes, before.nodes, "a refused entry changes nothing");
    }
    // A task may not take a node's address either, nor a VIP be one (see the allocator's
    // endpoint tests).
    let t2 = Task {
        id: "t2".into(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus::default()),
        networks: vec![attachment("ing", "")],
        ..Default::default()
    };
    apply(&mut st, Action::CreateTask(t2.into())).unwrap();
    let err = apply(
        &mut st,
        Action::AllocateTask(TaskAllocation {
            task_id: "t2".into(),
            networks: vec![attachment("ing", "198.18.16.2/24")],
            error: String::new(),
            timestamp_ms: 0,
        }),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 198.18.16.2 on network ingress is node a's own"
    );
}

#[test]
fn one_ingress_network_kept_while_services_publish_through_it() {
    let mut st = swarm();
    let err = apply(
        &mut st,
        Action::CreateNetwork(network("ing2", "mesh", "198.18.17.0/24", 4098, true).into()),
    )
    .unwrap_err();
    assert_eq!(err, ApplyError::IngressExists("ingress".into()));
    assert!(err
        .to_string()
        .starts_with("an ingress network already exists: ingress"));
    apply(
        &mut st,
        Action::CreateService(publisher("s1", "web").into()),
    )
    .unwrap();
    apply(
        &mut st,
        Action::CreateService(publisher("s22", "api").into()),
    )
    .unwrap();
    let err = apply(&mut st, Action::DeleteNetwork("ing".into())).unwrap_err();
    assert_eq!(
        err,
        ApplyError::IngressInUse {
            network: "ingress".into(),
            services: "web, api".into()
        }
    );
    assert!(err.to_string().contains("--publish-rm"), "{err}");
    apply(&mut st, Action::DeleteService("s1".into())).unwrap();
    apply(&mut st, Action::DeleteService("s22".into())).unwrap();
    apply(&mut st, Action::DeleteNetwork("ing".into())).unwrap();
}

#[test]
fn node_updates_leave_the_nodes_addresses_alone() {
    let mut st = swarm();
    apply(&mut st, give_node("a", &[("ing", "198.18.16.2/24")])).unwrap();
    let mut updated = st.nodes["a"].clone();
    updated.labels.insert("zone".into(), "east".into());
    updated.attachments.clear();
    apply(&mut st, Action::PutNode(updated.into())).unwrap();
    assert_eq!(st.nodes["a"].labels["zone"], "east");
    assert_eq!(st.nodes["a"].attachments[0].address, "198.18.16.2/24");
}

#[test]
fn node_addresses_go_with_the_node_and_with_the_network() {
    let mut st = swarm();
    apply(&mut st, give_node("a", &[("ing", "198.18.16.2/24")])).unwrap();
    apply(&mut st, give_node("b", &[("ing", "198.18.16.3/24")])).unwrap();
    // node rm: the address is free for another node.
    let removal = shoal_proto::NodeRemoval {
        node_id: "b".into(),
        ..Default::default()
    };
    apply(&mut st, Action::RemoveNode(removal)).unwrap();
    apply(&mut st, give_node("a", &[("ing", "198.18.16.3/24")])).unwrap();
    assert_eq!(st.nodes["a"].attachments[0].address, "198.18.16.3/24");
    // The network removed: no node keeps an address on it; a refused removal keeps them.
    apply(
        &mut st,
        Action::CreateService(publisher("s1", "web").into()),
    )
    .unwrap();
    let before = st.clone();
    apply(&mut st, Action::DeleteNetwork("ing".into())).unwrap_err();
    assert_eq!(st.nodes, before.nodes);
    apply(&mut st, Action::DeleteService("s1".into())).unwrap();
    apply(&mut st, Action::DeleteNetwork("ing".into())).unwrap();
    assert!(st.nodes["a"].attachments.is_empty());
    assert!(st.ingress_network().is_none());
}
