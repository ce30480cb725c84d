//! The allocator role as a pure function: given a state (and what the role kept from earlier
//! rounds), which entries it proposes.

use shoal_proto::{Meta, NetworkSpec, Proposal, TaskState, TaskStatus};

use super::*;

fn network(id: &str, name: &str, subnet: &str, gateway: &str) -> Network {
    Network {
        id: id.into(),
        spec: Some(NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            ..Default::default()
        }),
        subnet: subnet.into(),
        gateway: gateway.into(),
        vni: 4096,
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
        aliases: vec!["db".into()],
    }
}

fn task(id: &str, created: i64, networks: &[&str]) -> Task {
    Task {
        id: id.into(),
        service_id: "s1".into(),
        desired_state: TaskState::Running as i32,
        meta: Some(Meta {
            created_at_ms: created,
            ..Default::default()
        }),
        networks: networks.iter().map(|n| attachment(n, "")).collect(),
        ..Default::default()
    }
}

fn with_state(mut t: Task, state: TaskState) -> Task {
    t.status = Some(TaskStatus {
        state: state as i32,
        ..Default::default()
    });
    t
}

fn state(networks: Vec<Network>, tasks: Vec<Task>) -> StoreState {
    StoreState {
        networks: networks.into_iter().map(|n| (n.id.clone(), n)).collect(),
        tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
        ..Default::default()
    }
}

fn front() -> Network {
    network("n1", "front", "198.18.128.0/24", "198.18.128.1")
}

/// (task, [addresses], error) of each proposed entry.
fn proposed(actions: &[StoreAction]) -> Vec<(String, Vec<String>, String)> {
    actions
        .iter()
        .filter_map(|a| match &a.action {
            Some(Action::AllocateTask(x)) => Some((
                x.task_id.clone(),
                x.networks.iter().map(|n| n.address.clone()).collect(),
                x.error.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn ok(task: &str, addrs: &[&str]) -> (String, Vec<String>, String) {
    (
        task.into(),
        addrs.iter().map(|a| a.to_string()).collect(),
        String::new(),
    )
}

/// Applies the proposals as the store would, so the next round sees them.
fn apply(st: &mut StoreState, actions: Vec<StoreAction>) {
    let index = st.applied_index + 1;
    st.apply(index, &Proposal { actions }).unwrap();
}

#[test]
fn new_tasks_get_the_next_addresses_in_order_with_the_network_copied() {
    let st = state(
        vec![front()],
        vec![
            task("b", 2, &["n1"]),
            task("a", 1, &["n1"]),
            task("plain", 0, &[]),
        ],
    );
    let actions = TaskAllocator::default().plan(&st);
    assert_eq!(
        proposed(&actions),
        [ok("a", &["198.18.128.2/24"]), ok("b", &["198.18.128.3/24"])]
    );
    let Some(Action::AllocateTask(a)) = &actions[0].action else {
        panic!("not an allocation");
    };
    assert_eq!(a.networks[0].network.as_ref(), Some(&front()));
    assert_eq!(a.networks[0].aliases, ["db"]);
}

#[test]
fn applied_allocations_make_tasks_pending_and_are_not_repeated() {
    let mut st = state(vec![front()], vec![task("a", 1, &["n1"])]);
    let mut role = TaskAllocator::default();
    let actions = role.plan(&st);
    apply(&mut st, actions);
    assert_eq!(st.tasks["a"].state(), TaskState::Pending);
    assert_eq!(st.tasks["a"].networks[0].address, "198.18.128.2/24");
    assert!(role.plan(&st).is_empty());
}

#[test]
fn addresses_of_live_tasks_are_skipped_and_freed_ones_reused_last() {
    let mut live = with_state(task("live", 0, &["n1"]), TaskState::Running);
    live.networks[0].address = "198.18.128.2/24".into();
    let mut st = state(vec![front()], vec![live, task("a", 1, &["n1"])]);
    let mut role = TaskAllocator::default();
    let actions = role.plan(&st);
    assert_eq!(proposed(&actions), [ok("a", &["198.18.128.3/24"])]);
    apply(&mut st, actions);

    // The live task finishes: its address is free, but serial allocation moves on first.
    st.tasks.modify("live", |t| {
        t.status = Some(TaskStatus {
            state: TaskState::Shutdown as i32,
            ..Default::default()
        })
    });
    st.tasks.insert("b".into(), task("b", 2, &["n1"]));
    assert_eq!(proposed(&role.plan(&st)), [ok("b", &["198.18.128.4/24"])]);
}

#[test]
fn a_new_leader_rebuilds_from_the_store_and_never_repeats_a_held_address() {
    let mut held = with_state(task("held", 0, &["n1"]), TaskState::Running);
    held.networks[0].address = "198.18.128.7/24".into();
    let st = state(vec![front()], vec![held, task("a", 1, &["n1"])]);
    assert_eq!(
        proposed(&TaskAllocator::default().plan(&st)),
        [ok("a", &["198.18.128.8/24"])]
    );
}

#[test]
fn one_address_per_network_in_the_task_order() {
    let back = network("n2", "back", "198.18.129.0/24", "198.18.129.1");
    let st = state(vec![front(), back], vec![task("a", 1, &["n2", "n1"])]);
    assert_eq!(
        proposed(&TaskAllocator::default().plan(&st)),
        [ok("a", &["198.18.129.2/24", "198.18.128.2/24"])]
    );
}

#[test]
fn tasks_that_cannot_be_allocated_stay_new_with_the_reason_once() {
    // A /29 holds the gateway and five tasks.
    let small = network("n1", "small", "198.18.130.0/29", "198.18.130.1");
    let tasks = (0..6).map(|i| task(&format!("t{i}"), i, &["n1"])).collect();
    let mut st = state(vec![small], tasks);
    st.tasks.insert("lost".into(), task("lost", 9, &["gone"]));
    let mut role = TaskAllocator::default();
    let actions = role.plan(&st);
    let got = proposed(&actions);
    assert_eq!(got.len(), 7);
    assert_eq!(got[4], ok("t4", &["198.18.130.6/29"]));
    assert_eq!(
        got[5],
        (
            "t5".to_string(),
            vec![],
            "no available IP addresses on network small".to_string()
        )
    );
    assert_eq!(
        got[6],
        (
            "lost".to_string(),
            vec![],
            "network gone not found".to_string()
        )
    );
    apply(&mut st, actions);
    assert_eq!(st.tasks["t5"].state(), TaskState::New);
    assert_eq!(
        st.tasks["t5"].status.as_ref().map(|s| s.err.as_str()),
        Some("no available IP addresses on network small")
    );
    assert!(
        role.plan(&st).is_empty(),
        "the same reason is not proposed again"
    );
}

#[test]
fn tasks_being_shut_down_or_already_placed_are_left_alone() {
    let mut stopping = task("stopping", 1, &["n1"]);
    stopping.desired_state = TaskState::Shutdown as i32;
    let placed = with_state(task("placed", 2, &["n1"]), TaskState::Pending);
    let st = state(vec![front()], vec![stopping, placed]);
    assert!(TaskAllocator::default().plan(&st).is_empty());
}

#[test]
fn tasks_never_get_a_services_vip() {
    let mut st = state(vec![front()], vec![task("t1", 1, &["n1"])]);
    let vip_service = shoal_proto::Service {
        id: "s9".into(),
        endpoint: Some(shoal_proto::Endpoint {
            virtual_ips: vec![shoal_proto::VirtualIp {
                network_id: "n1".into(),
                addr: "198.18.128.2/24".into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    st.services.insert(vip_service.id.clone(), vip_service);
    let mut allocator = TaskAllocator::default();
    assert_eq!(
        proposed(&allocator.plan(&st)),
        [(
            "t1".to_string(),
            vec!["198.18.128.3/24".to_string()],
            String::new()
        )]
    );
}

fn ingress() -> Network {
    let mut n = network("ing", "ingress", "198.18.131.0/24", "198.18.131.1");
    n.vni = 4097;
    if let Some(spec) = n.spec.as_mut() {
        spec.ingress = true;
    }
    n
}

fn node(id: &str) -> shoal_proto::Node {
    shoal_proto::Node {
        id: id.into(),
        ..Default::default()
    }
}

/// (node, [addresses]) of each proposed node allocation.
fn nodes_given(actions: &[StoreAction]) -> Vec<(String, Vec<String>)> {
    actions
        .iter()
        .filter_map(|a| match &a.action {
            Some(Action::AllocateNode(x)) => Some((
                x.node_id.clone(),
                x.attachments.iter().map(|n| n.address.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn every_node_gets_one_ingress_address_and_tasks_skip_them() {
    let mut st = state(vec![ingress()], vec![task("t1", 1, &["ing"])]);
    for id in ["b", "a"] {
        st.nodes.insert(id.into(), node(id));
    }
    let mut role = TaskAllocator::default();
    let actions = role.plan(&st);
    assert_eq!(
        nodes_given(&actions),
        [
            ("a".to_string(), vec!["198.18.131.2/24".to_string()]),
            ("b".to_string(), vec!["198.18.131.3/24".to_string()])
        ]
    );
    assert_eq!(proposed(&actions), [ok("t1", &["198.18.131.4/24"])]);
    apply(&mut st, actions);
    assert_eq!(st.nodes["a"].attachments[0].address, "198.18.131.2/24");
    assert!(role.plan(&st).is_empty(), "given once");

    // A new leader reserves the nodes' addresses too.
    st.nodes.insert("c".into(), node("c"));
    st.tasks.insert("t2".into(), task("t2", 2, &["ing"]));
    let actions = TaskAllocator::default().plan(&st);
    assert_eq!(
        nodes_given(&actions),
        [("c".to_string(), vec!["198.18.131.5/24".to_string()])]
    );
    assert_eq!(proposed(&actions), [ok("t2", &["198.18.131.6/24"])]);
}

#[test]
fn no_ingress_network_no_node_addresses_and_a_new_one_gives_new_ones() {
    let mut st = state(vec![front()], vec![]);
    st.nodes.insert("a".into(), node("a"));
    let mut role = TaskAllocator::default();
    assert!(role.plan(&st).is_empty());
    st.networks.insert("ing".into(), ingress());
    let actions = role.plan(&st);
    assert_eq!(
        nodes_given(&actions),
        [("a".to_string(), vec!["198.18.131.2/24".to_string()])]
    );
    apply(&mut st, actions);
    // Removed (the store drops the nodes' addresses with it), then created again.
    apply(
        &mut st,
        vec![StoreAction {
            action: Some(Action::DeleteNetwork("ing".into())),
        }],
    );
    assert!(st.nodes["a"].attachments.is_empty());
    assert!(role.plan(&st).is_empty());
    let mut again = ingress();
    again.id = "ing2".into();
    st.networks.insert("ing2".into(), again);
    let actions = role.plan(&st);
    let Some(Action::AllocateNode(x)) = &actions[0].action else {
        panic!("not a node allocation: {actions:?}");
    };
    assert_eq!(
        x.attachments[0].network.as_ref().map(|n| n.id.as_str()),
        Some("ing2")
    );
}
