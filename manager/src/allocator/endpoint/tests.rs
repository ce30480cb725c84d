//! Endpoint allocation against a store built by applying entries, as the control API does it:
//! allocate from the state, then apply the service carrying the result.

use shoal_proto::{
    endpoint_spec, port_config, store_action::Action, EndpointSpec, Network, NetworkAttachment,
    NetworkAttachmentConfig, NetworkSpec, Proposal, Service, StoreAction, Task, TaskAllocation,
    TaskState, TaskStatus,
};

use super::*;
use crate::store::ApplyError;

fn apply(st: &mut StoreState, a: Action) -> Result<(), ApplyError> {
    let index = st.applied_index + 1;
    st.apply(
        index,
        &Proposal {
            actions: vec![StoreAction { action: Some(a) }],
        },
    )
}

fn front() -> Network {
    Network {
        id: "n1".into(),
        spec: Some(NetworkSpec {
            name: "front".into(),
            ..Default::default()
        }),
        subnet: "198.18.8.0/29".into(),
        gateway: "198.18.8.1".into(),
        vni: 4096,
        ..Default::default()
    }
}

fn ingress() -> Network {
    Network {
        id: "ing".into(),
        spec: Some(NetworkSpec {
            name: "ingress".into(),
            ingress: true,
            ..Default::default()
        }),
        subnet: "198.18.16.0/24".into(),
        gateway: "198.18.16.1".into(),
        vni: 4097,
        ..Default::default()
    }
}

/// A store with the ingress network, as swarm init leaves it.
fn with_ingress() -> StoreState {
    let mut st = StoreState::default();
    apply(&mut st, Action::CreateNetwork(ingress().into())).unwrap();
    st
}

/// The service's VIPs on one network.
fn vips_of<'a>(e: &'a Endpoint, network: &str) -> Vec<&'a str> {
    e.virtual_ips
        .iter()
        .filter(|v| v.network_id == network)
        .map(|v| v.addr.as_str())
        .collect()
}

fn port(published: u32, target: u32) -> PortConfig {
    PortConfig {
        target_port: target,
        published_port: published,
        ..Default::default()
    }
}

fn spec(
    name: &str,
    mode: endpoint_spec::Mode,
    ports: Vec<PortConfig>,
    nets: &[&str],
) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        endpoint: Some(EndpointSpec {
            mode: mode as i32,
            ports,
        }),
        networks: nets
            .iter()
            .map(|n| NetworkAttachmentConfig {
                target: n.to_string(),
                aliases: vec![],
            })
            .collect(),
        ..Default::default()
    }
}

const VIP: endpoint_spec::Mode = endpoint_spec::Mode::Vip;
const DNSRR: endpoint_spec::Mode = endpoint_spec::Mode::Dnsrr;

/// Allocates and creates service `id`; the endpoint stored.
fn create(st: &mut StoreState, id: &str, spec: ServiceSpec) -> Result<Endpoint, String> {
    let endpoint = allocate_endpoint(st, id, &spec, None).map_err(|e| e.to_string())?;
    let service = Service {
        id: id.into(),
        spec: Some(Box::new(spec)),
        endpoint: Some(endpoint.clone()),
        ..Default::default()
    };
    apply(st, Action::CreateService(service.into())).map_err(|e| e.to_string())?;
    Ok(endpoint)
}

/// Allocates for the new spec keeping the stored endpoint, and updates service `id`.
fn update(st: &mut StoreState, id: &str, spec: ServiceSpec) -> Result<Endpoint, String> {
    let mut service = st.services.get(id).cloned().ok_or("no service")?;
    let endpoint =
        allocate_endpoint(st, id, &spec, service.endpoint.as_ref()).map_err(|e| e.to_string())?;
    service.spec = Some(Box::new(spec));
    service.endpoint = Some(endpoint.clone());
    apply(st, Action::UpdateService(service.into())).map_err(|e| e.to_string())?;
    Ok(endpoint)
}

fn published(e: &Endpoint) -> Vec<u32> {
    e.ports.iter().map(|p| p.published_port).collect()
}

fn vips(e: &Endpoint) -> Vec<&str> {
    e.virtual_ips.iter().map(|v| v.addr.as_str()).collect()
}

/// A task on `front` with `addr`, allocated through the store.
fn task_on_front(st: &mut StoreState, id: &str, addr: &str) -> Result<(), ApplyError> {
    let attachment = |address: &str| NetworkAttachment {
        network: Some(Network {
            id: "n1".into(),
            ..Default::default()
        }),
        address: address.into(),
        aliases: vec![],
    };
    apply(
        st,
        Action::CreateTask(
            Task {
                id: id.into(),
                desired_state: TaskState::Running as i32,
                status: Some(TaskStatus::default()),
                networks: vec![attachment("")],
                ..Default::default()
            }
            .into(),
        ),
    )?;
    apply(
        st,
        Action::AllocateTask(TaskAllocation {
            task_id: id.into(),
            networks: vec![attachment(addr)],
            error: String::new(),
            timestamp_ms: 0,
        }),
    )
}

#[test]
fn ingress_ports_are_unique_per_protocol_across_services() {
    let mut st = with_ingress();
    let e = create(&mut st, "s1", spec("web", VIP, vec![port(8080, 80)], &[])).unwrap();
    assert_eq!(published(&e), [8080]);
    let err = create(&mut st, "s2", spec("api", VIP, vec![port(8080, 81)], &[])).unwrap_err();
    assert_eq!(err, "port 8080/tcp is already published by service web");
    assert!(!st.services.contains_key("s2"));
    // UDP 8080 and a host-mode 8080 are someone else's to have.
    let udp = PortConfig {
        protocol: port_config::Protocol::Udp as i32,
        ..port(8080, 53)
    };
    let host = PortConfig {
        publish_mode: port_config::PublishMode::Host as i32,
        ..port(8080, 80)
    };
    create(&mut st, "s3", spec("dns", VIP, vec![udp], &[])).unwrap();
    create(&mut st, "s4", spec("local", DNSRR, vec![host.clone()], &[])).unwrap();
    create(&mut st, "s5", spec("local2", DNSRR, vec![host], &[])).unwrap();
    // Removing the publisher frees the port.
    apply(&mut st, Action::DeleteService("s1".into())).unwrap();
    create(&mut st, "s2", spec("api", VIP, vec![port(8080, 81)], &[])).unwrap();
}

#[test]
fn unpublished_ports_get_the_lowest_free_dynamic_port_and_keep_it() {
    let mut st = with_ingress();
    let e = create(&mut st, "s1", spec("a", VIP, vec![port(30000, 1)], &[])).unwrap();
    assert_eq!(published(&e), [30000]);
    let e = create(
        &mut st,
        "s2",
        spec("b", VIP, vec![port(0, 80), port(0, 81)], &[]),
    )
    .unwrap();
    assert_eq!(published(&e), [30001, 30002]);
    // The spec keeps asking for "any port": the endpoint's spec is the user's.
    assert_eq!(e.spec.as_ref().map(|s| s.ports[0].published_port), Some(0));
    // An update adding a port keeps the ones chosen before; a port removed is freed.
    let e = update(
        &mut st,
        "s2",
        spec("b", VIP, vec![port(0, 81), port(0, 82)], &[]),
    )
    .unwrap();
    assert_eq!(published(&e), [30002, 30001]);
    let e = update(&mut st, "s2", spec("b", VIP, vec![port(0, 83)], &[])).unwrap();
    assert_eq!(published(&e), [30001]);
    let e = create(&mut st, "s3", spec("c", VIP, vec![port(0, 80)], &[])).unwrap();
    assert_eq!(published(&e), [30002]);
}

#[test]
fn the_dynamic_range_runs_out() {
    let mut st = with_ingress();
    let all: Vec<PortConfig> = DYNAMIC_PORTS.map(|p| port(p, 80)).collect();
    create(&mut st, "s1", spec("all", VIP, all, &[])).unwrap();
    let err =
        allocate_endpoint(&st, "s2", &spec("b", VIP, vec![port(0, 80)], &[]), None).unwrap_err();
    assert_eq!(err, EndpointAllocError::NoFreePort { protocol: "tcp" });
    // Outside the range a port is still free.
    create(&mut st, "s2", spec("b", VIP, vec![port(29999, 80)], &[])).unwrap();
}

#[test]
fn the_store_refuses_a_port_published_meanwhile() {
    let mut st = with_ingress();
    // Both allocated from the same state, as two racing creates would.
    let a = spec("a", VIP, vec![port(0, 80)], &[]);
    let b = spec("b", VIP, vec![port(0, 80)], &[]);
    let ea = allocate_endpoint(&st, "s1", &a, None).unwrap();
    let eb = allocate_endpoint(&st, "s2", &b, None).unwrap();
    assert_eq!(published(&ea), published(&eb));
    let service = |id: &str, spec: ServiceSpec, endpoint: Endpoint| Service {
        id: id.into(),
        spec: Some(Box::new(spec)),
        endpoint: Some(endpoint),
        ..Default::default()
    };
    apply(&mut st, Action::CreateService(service("s1", a, ea).into())).unwrap();
    let err = apply(&mut st, Action::CreateService(service("s2", b, eb).into())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "port 30000/tcp is already published by service a"
    );
    assert!(!st.services.contains_key("s2"));
}

#[test]
fn vips_share_the_address_space_with_tasks() {
    let mut st = StoreState::default();
    apply(&mut st, Action::CreateNetwork(front().into())).unwrap();
    task_on_front(&mut st, "t1", "198.18.8.2/29").unwrap();
    let e = create(&mut st, "s1", spec("web", VIP, vec![], &["n1"])).unwrap();
    assert_eq!(vips(&e), ["198.18.8.3/29"]);
    assert_eq!(e.virtual_ips[0].network_id, "n1");
    // A task may not take the VIP...
    let err = task_on_front(&mut st, "t2", "198.18.8.3/29").unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 198.18.8.3 on network front is the VIP of service web"
    );
    // ...nor a VIP a task's address, nor another VIP.
    let taken = |addr: &str| Service {
        id: "s2".into(),
        spec: Some(Box::new(spec("api", VIP, vec![], &["n1"]))),
        endpoint: Some(Endpoint {
            virtual_ips: vec![VirtualIp {
                network_id: "n1".into(),
                addr: addr.into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    for (addr, holder) in [
        ("198.18.8.2/29", "task t1"),
        ("198.18.8.3/29", "service web"),
    ] {
        let err = apply(&mut st, Action::CreateService(taken(addr).into())).unwrap_err();
        assert!(err.to_string().ends_with(holder), "{err}");
    }
    for bad in ["198.18.8.1/29", "198.18.9.5/29", "198.18.8.4/24", "junk"] {
        let err = apply(&mut st, Action::CreateService(taken(bad).into())).unwrap_err();
        assert!(matches!(err, ApplyError::BadVip { .. }), "{bad}: {err}");
    }
    // The next VIP skips both.
    let e = create(&mut st, "s2", spec("api", VIP, vec![], &["n1"])).unwrap();
    assert_eq!(vips(&e), ["198.18.8.4/29"]);
}

#[test]
fn vips_are_kept_on_update_and_freed_on_leave_dnsrr_and_remove() {
    let mut st = with_ingress();
    apply(&mut st, Action::CreateNetwork(front().into())).unwrap();
    let e = create(&mut st, "s1", spec("web", VIP, vec![port(0, 80)], &["n1"])).unwrap();
    assert_eq!(vips(&e), ["198.18.16.2/24", "198.18.8.2/29"]);
    // A change of ports keeps the VIPs.
    let e = update(
        &mut st,
        "s1",
        spec("web", VIP, vec![port(8080, 80)], &["n1"]),
    )
    .unwrap();
    assert_eq!(vips(&e), ["198.18.16.2/24", "198.18.8.2/29"]);
    // dnsrr: no VIP; the address is free again for another service.
    let e = update(&mut st, "s1", spec("web", DNSRR, vec![], &["n1"])).unwrap();
    assert!(e.virtual_ips.is_empty());
    let taken_by_s2 = |st: &StoreState| {
        allocate_endpoint(st, "s2", &spec("api", VIP, vec![], &["n1"]), None).unwrap()
    };
    assert_eq!(vips(&taken_by_s2(&st)), ["198.18.8.2/29"]);
    // Back to vip, then leaving the network frees it.
    update(&mut st, "s1", spec("web", VIP, vec![], &["n1"])).unwrap();
    assert_eq!(vips(&taken_by_s2(&st)), ["198.18.8.3/29"]);
    let e = update(&mut st, "s1", spec("web", VIP, vec![], &[])).unwrap();
    assert!(e.virtual_ips.is_empty());
    assert_eq!(vips(&taken_by_s2(&st)), ["198.18.8.2/29"]);
    // Removing the service frees it.
    update(&mut st, "s1", spec("web", VIP, vec![], &["n1"])).unwrap();
    apply(&mut st, Action::DeleteService("s1".into())).unwrap();
    assert_eq!(vips(&taken_by_s2(&st)), ["198.18.8.2/29"]);
}

#[test]
fn a_full_network_has_no_vip_to_give() {
    let mut st = StoreState::default();
    apply(&mut st, Action::CreateNetwork(front().into())).unwrap();
    for (i, a) in (2..=6).enumerate() {
        task_on_front(&mut st, &format!("t{i}"), &format!("198.18.8.{a}/29")).unwrap();
    }
    let err = create(&mut st, "s1", spec("web", VIP, vec![], &["n1"])).unwrap_err();
    assert_eq!(
        err,
        "no available IP addresses on network front for the service's VIP"
    );
    // dnsrr needs no address.
    create(&mut st, "s1", spec("web", DNSRR, vec![], &["n1"])).unwrap();
}

#[test]
fn routing_mesh_ports_get_a_vip_on_ingress_first_in_either_mode() {
    let mut st = with_ingress();
    apply(&mut st, Action::CreateNetwork(front().into())).unwrap();
    let e = create(
        &mut st,
        "s1",
        spec("web", VIP, vec![port(8080, 80)], &["n1"]),
    )
    .unwrap();
    let nets: Vec<&str> = e
        .virtual_ips
        .iter()
        .map(|v| v.network_id.as_str())
        .collect();
    assert_eq!(nets, ["ing", "n1"]);
    // dnsrr (the validator refuses it with ingress ports, but the allocator does not rely on
    // that): the ingress VIP only, for the routing mesh.
    let e = allocate_endpoint(
        &st,
        "s2",
        &spec("api", DNSRR, vec![port(8081, 80)], &["n1"]),
        None,
    )
    .unwrap();
    assert_eq!(vips(&e), ["198.18.16.3/24"]);
    assert_eq!(e.virtual_ips[0].network_id, "ing");
    // Host-mode ports need no ingress VIP; unpublishing frees it.
    let host = PortConfig {
        publish_mode: port_config::PublishMode::Host as i32,
        ..port(9090, 90)
    };
    let e = update(&mut st, "s1", spec("web", VIP, vec![host], &["n1"])).unwrap();
    assert!(vips_of(&e, "ing").is_empty(), "{e:?}");
    let e = create(&mut st, "s3", spec("db", VIP, vec![port(0, 80)], &[])).unwrap();
    assert_eq!(vips(&e), ["198.18.16.2/24"]);
}

#[test]
fn routing_mesh_ports_without_an_ingress_network_are_refused() {
    let st = StoreState::default();
    let err = allocate_endpoint(
        &st,
        "s1",
        &spec("web", VIP, vec![port(8080, 80)], &[]),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        EndpointAllocError::NoIngressNetwork {
            port: 8080,
            protocol: "tcp"
        }
    );
    assert!(
        err.to_string()
            .contains("network create --driver overlay --ingress"),
        "{err}"
    );
    let host = PortConfig {
        publish_mode: port_config::PublishMode::Host as i32,
        ..port(9090, 90)
    };
    allocate_endpoint(&st, "s1", &spec("web", VIP, vec![host], &[]), None).unwrap();
}

#[test]
fn node_addresses_are_taken_for_vips() {
    use shoal_proto::{Node, NodeAllocation};
    let mut st = with_ingress();
    apply(
        &mut st,
        Action::PutNode(
            Node {
                id: "node-1".into(),
                ..Default::default()
            }
            .into(),
        ),
    )
    .unwrap();
    let attachment = |address: &str| NetworkAttachment {
        network: Some(Network {
            id: "ing".into(),
            ..Default::default()
        }),
        address: address.into(),
        aliases: vec![],
    };
    apply(
        &mut st,
        Action::AllocateNode(NodeAllocation {
            node_id: "node-1".into(),
            attachments: vec![attachment("198.18.16.2/24")],
        }),
    )
    .unwrap();
    let e = create(&mut st, "s1", spec("web", VIP, vec![port(8080, 80)], &[])).unwrap();
    assert_eq!(vips(&e), ["198.18.16.3/24"]);
    // The store refuses a VIP that is a node's address.
    let mut stale = st.services["s1"].clone();
    if let Some(v) = stale
        .endpoint
        .as_mut()
        .and_then(|e| e.virtual_ips.first_mut())
    {
        v.addr = "198.18.16.2/24".into();
    }
    let err = apply(&mut st, Action::UpdateService(stale.into())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VIP 198.18.16.2 on network ingress is already held by node node-1"
    );
}
