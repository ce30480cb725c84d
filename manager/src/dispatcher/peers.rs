//! Per-network peer tables for a worker's session: for each network a live task of the node
//! is attached to, every live task on that network with an address and a node — on any node,
//! this one included — with its address and the underlay IP of its node. Workers program their
//! overlay's FDB and neighbour entries and answer DNS from these. Each table also lists the
//! services with a VIP on the network (VIP, aliases, published ports), for load balancing and
//! DNS answers in `vip` mode. The tables are a pure function of
//! the store, so the session resends them whenever they change.
//!
//! The ingress network's table goes to every node with an address of its own on it, task or
//! no task (every node accepts the routing mesh's ports), with that address as the table's
//! `local_address`; every node's address is in it as an endpoint with no task (for the
//! neighbour entries between load balancers), before the tasks.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use shoal_proto::{Network, NetworkEndpoint, NetworkPeers, ServiceVip, Task, TaskState};

use crate::store::state::{attachment_ip, attachment_network_id, holds_addresses, vip_ip};
use crate::store::StoreState;

/// The tables `node_id` needs, sorted by network ID; endpoints are the nodes' own addresses
/// by node ID, then the tasks' by task ID.
pub fn peer_tables(st: &StoreState, node_id: &str) -> Vec<NetworkPeers> {
    Peers::of(st, by_id(st), None)
        .tables(st, node_id, by_id(st))
        .iter()
        .map(Table::to_message)
        .collect()
}

/// Every task in ID order, the order [`Peers::of`] needs (the store's map is not ordered).
fn by_id(st: &StoreState) -> impl Iterator<Item = &Task> {
    let mut tasks: Vec<&Task> = st.tasks.values().collect();
    tasks.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    tasks.into_iter()
}

/// Who is on each network, whichever node asks: the nodes' own addresses by node ID, then the
/// live tasks' by task ID, and the services with a VIP on it by service ID. A node's tables
/// are cut from it ([`Peers::tables`]). The dispatcher builds it once for all sessions after a
/// change that wakes them all, instead of each of a thousand sessions walking every node and
/// every networked task again (a join of 1,000 nodes did that 1,000 times per join).
#[derive(Debug, Default)]
pub struct Peers {
    by_network: HashMap<String, Arc<Members>>,
}

#[derive(Debug, Default, PartialEq)]
struct Members {
    endpoints: Vec<NetworkEndpoint>,
    services: Vec<ServiceVip>,
}

impl Peers {
    /// Every network's members; `networked` holds at least every task with a network
    /// attachment, by task ID (the order of the endpoints). The dispatcher passes its index
    /// of them, so that this costs the tasks on networks, not every task of the cluster. A
    /// network whose members are as in `previous` keeps its members from there, so that a
    /// session finds its tables unchanged by comparing pointers.
    pub fn of<'a>(
        st: &'a StoreState,
        networked: impl Iterator<Item = &'a Task>,
        previous: Option<&Peers>,
    ) -> Self {
        let mut by_network: HashMap<String, Members> = HashMap::new();
        // Nodes' own addresses first (nodes are kept by ID, so sorted by node ID).
        for n in st.nodes.values() {
            for a in &n.attachments {
                let Some(ip) = attachment_ip(a) else {
                    continue;
                };
                members(&mut by_network, attachment_network_id(a))
                    .endpoints
                    .push(NetworkEndpoint {
                        // No task: the node's own address, never "running" a service.
                        address: ip.to_string(),
                        node_addr: underlay_ip(&n.addr),
                        node_id: n.id.clone(),
                        ..Default::default()
                    });
            }
        }
        // `networked` comes in task ID order, so every network's endpoints are sorted by task ID.
        for t in networked {
            if t.node_id.is_empty() || !holds_addresses(t) {
                continue;
            }
            let node_addr = st
                .nodes
                .get(&t.node_id)
                .map(|n| underlay_ip(&n.addr))
                .unwrap_or_default();
            for a in &t.networks {
                let Some(ip) = attachment_ip(a) else {
                    continue;
                };
                members(&mut by_network, attachment_network_id(a))
                    .endpoints
                    .push(NetworkEndpoint {
                        task_id: t.id.clone(),
                        task_name: t.name(),
                        service_name: t.service_name.clone(),
                        aliases: a.aliases.clone(),
                        address: ip.to_string(),
                        node_addr: node_addr.clone(),
                        running: t.state() == TaskState::Running
                            && t.desired() == TaskState::Running,
                        service_id: t.service_id.clone(),
                        node_id: t.node_id.clone(),
                    });
            }
        }
        // Services are kept by ID too, so every network's services come out sorted by ID.
        for s in st.services.values() {
            for v in s.endpoint.iter().flat_map(|e| e.virtual_ips.iter()) {
                let Some(ip) = vip_ip(v) else {
                    continue;
                };
                let spec = s.spec.as_ref();
                let aliases = spec
                    .and_then(|spec| spec.networks.iter().find(|n| n.target == v.network_id))
                    .map(|n| n.aliases.clone())
                    .unwrap_or_default();
                members(&mut by_network, &v.network_id)
                    .services
                    .push(ServiceVip {
                        service_id: s.id.clone(),
                        service_name: spec.map(|spec| spec.name.clone()).unwrap_or_default(),
                        aliases,
                        vip: ip.to_string(),
                        ports: s
                            .endpoint
                            .as_ref()
                            .map(|e| e.ports.clone())
                            .unwrap_or_default(),
                    });
            }
        }
        let by_network = by_network
            .into_iter()
            .map(|(id, members)| {
                let members = match previous.and_then(|p| p.by_network.get(&id)) {
                    Some(old) if **old == members => old.clone(),
                    _ => Arc::new(members),
                };
                (id, members)
            })
            .collect();
        Peers { by_network }
    }

    /// The tables `node_id` needs, sorted by network ID: one for each network its live tasks
    /// (`node_tasks` holds at least them) or its own addresses are on.
    pub fn tables<'a>(
        &self,
        st: &'a StoreState,
        node_id: &str,
        node_tasks: impl Iterator<Item = &'a Task>,
    ) -> Vec<Table> {
        let own = st
            .nodes
            .get(node_id)
            .map_or(&[][..], |n| &n.attachments[..]);
        wanted_networks(st, node_id, own, node_tasks)
            .into_iter()
            .map(|(id, network)| Table {
                local_address: own
                    .iter()
                    .find(|a| attachment_network_id(a) == id)
                    .map(|a| a.address.clone())
                    .unwrap_or_default(),
                members: self.by_network.get(id).cloned(),
                network,
            })
            .collect()
    }
}

/// One network's table for one node, before it is copied into a message: two of them compare
/// without copying or walking a thousand endpoints when their members are shared.
#[derive(Debug, Clone)]
pub struct Table {
    network: Network,
    local_address: String,
    members: Option<Arc<Members>>,
}

impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        let same_members = match (&self.members, &other.members) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        same_members && self.local_address == other.local_address && self.network == other.network
    }
}

impl Table {
    /// The table as a session message carries it.
    pub fn to_message(&self) -> NetworkPeers {
        let members = self.members.as_deref();
        NetworkPeers {
            network: Some(self.network.clone()),
            endpoints: members.map(|m| m.endpoints.clone()).unwrap_or_default(),
            services: members.map(|m| m.services.clone()).unwrap_or_default(),
            local_address: self.local_address.clone(),
        }
    }
}

fn members<'m>(by_network: &'m mut HashMap<String, Members>, id: &str) -> &'m mut Members {
    by_network.entry(id.to_owned()).or_default()
}

/// The networks a node's own addresses (`own`) and live tasks are on, by ID; the stored
/// network if it is still there, else the copy the task carries (the worker still has to tear
/// it down cleanly).
fn wanted_networks<'a>(
    st: &'a StoreState,
    node_id: &str,
    own: &'a [shoal_proto::NetworkAttachment],
    node_tasks: impl Iterator<Item = &'a Task>,
) -> BTreeMap<&'a str, Network> {
    let mut wanted: BTreeMap<&str, Network> = BTreeMap::new();
    for a in own {
        if let Some(network) = st.networks.get(attachment_network_id(a)) {
            wanted.insert(&network.id, network.clone());
        }
    }
    for t in node_tasks {
        if t.node_id != node_id || t.state() < TaskState::Assigned || !holds_addresses(t) {
            continue;
        }
        for a in &t.networks {
            let id = attachment_network_id(a);
            if id.is_empty() || wanted.contains_key(id) {
                continue;
            }
            let network = st
                .networks
                .get(id)
                .or(a.network.as_ref())
                .cloned()
                .unwrap_or_default();
            wanted.insert(id, network);
        }
    }
    wanted
}

/// The IP of a node's advertised address: `198.18.0.2:2377` → `198.18.0.2`, `[fd00::2]:2377`
/// → `fd00::2`; a bare IP stays as it is.
pub fn underlay_ip(addr: &str) -> String {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return sa.ip().to_string();
    }
    if let Ok(ip) = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return ip.to_string();
    }
    // A host name with a port: the name is what there is.
    addr.rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .to_string()
}

#[cfg(test)]
mod tests {
    use shoal_proto::{NetworkAttachment, Node, Task, TaskStatus};

    use super::*;

    fn network(id: &str) -> Network {
        Network {
            id: id.into(),
            subnet: "198.18.128.0/24".into(),
            vni: 4096,
            ..Default::default()
        }
    }

    fn task(id: &str, node: &str, state: TaskState, on: &[(&str, &str)]) -> Task {
        Task {
            id: id.into(),
            service_name: "web".into(),
            service_id: "s1".into(),
            slot: 1,
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            networks: on
                .iter()
                .map(|(n, a)| NetworkAttachment {
                    network: Some(network(n)),
                    address: a.to_string(),
                    aliases: vec!["www".into()],
                })
                .collect(),
            ..Default::default()
        }
    }

    fn node(id: &str, addr: &str) -> Node {
        Node {
            id: id.into(),
            addr: addr.into(),
            ..Default::default()
        }
    }

    fn state(tasks: Vec<Task>) -> StoreState {
        StoreState {
            nodes: [node("n1", "198.18.0.1:2377"), node("n2", "198.18.0.2:2377")]
                .into_iter()
                .map(|n| (n.id.clone(), n))
                .collect(),
            networks: [network("a"), network("b"), network("c")]
                .into_iter()
                .map(|n| (n.id.clone(), n))
                .collect(),
            tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            ..Default::default()
        }
    }

    /// (network, [(task, address, node_addr, running)]) per table.
    type Table = (String, Vec<(String, String, String, bool)>);

    fn summary(tables: &[NetworkPeers]) -> Vec<Table> {
        tables
            .iter()
            .map(|t| {
                (
                    t.network.as_ref().map(|n| n.id.clone()).unwrap_or_default(),
                    t.endpoints
                        .iter()
                        .map(|e| {
                            (
                                e.task_id.clone(),
                                e.address.clone(),
                                e.node_addr.clone(),
                                e.running,
                            )
                        })
                        .collect(),
                )
            })
            .collect()
    }

    fn ep(task: &str, addr: &str, node: &str, running: bool) -> (String, String, String, bool) {
        (task.into(), addr.into(), node.into(), running)
    }

    #[test]
    fn a_node_gets_every_live_peer_of_its_networks_on_any_node() {
        let st = state(vec![
            task("t3", "n1", TaskState::Running, &[("a", "198.18.128.4/24")]),
            task("t1", "n2", TaskState::Starting, &[("a", "198.18.128.2/24")]),
            // Finished: its address is free, it is nobody's peer.
            task("t0", "n2", TaskState::Failed, &[("a", "198.18.128.9/24")]),
            // Not placed yet: no tunnel end to give.
            task("t5", "", TaskState::Pending, &[("a", "198.18.128.6/24")]),
            // On n2 only: n1 has no task on network b.
            task("t2", "n2", TaskState::Running, &[("b", "198.18.128.3/24")]),
            // On n1 but not sent yet (not assigned): network c is not n1's.
            task("t4", "n1", TaskState::Pending, &[("c", "198.18.128.5/24")]),
        ]);
        assert_eq!(
            summary(&peer_tables(&st, "n1")),
            [(
                "a".to_string(),
                vec![
                    ep("t1", "198.18.128.2", "198.18.0.2", false),
                    ep("t3", "198.18.128.4", "198.18.0.1", true),
                ]
            )]
        );
        let tables = peer_tables(&st, "n2");
        assert_eq!(
            summary(&tables)
                .iter()
                .map(|t| t.0.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let e = &tables[0].endpoints[0];
        assert_eq!(e.task_name, "web.1.t1");
        assert_eq!(e.service_name, "web");
        assert_eq!(e.aliases, ["www"]);
        assert!(peer_tables(&st, "n3").is_empty());
    }

    fn vip_service(id: &str, vips: &[(&str, &str)]) -> shoal_proto::Service {
        use shoal_proto::{Endpoint, NetworkAttachmentConfig, PortConfig, ServiceSpec, VirtualIp};
        shoal_proto::Service {
            id: id.into(),
            spec: Some(Box::new(ServiceSpec {
                name: format!("svc-{id}"),
                networks: vips
                    .iter()
                    .map(|(n, _)| NetworkAttachmentConfig {
                        target: n.to_string(),
                        aliases: vec![format!("alias-{id}")],
                    })
                    .collect(),
                ..Default::default()
            })),
            endpoint: Some(Endpoint {
                ports: vec![PortConfig {
                    target_port: 80,
                    published_port: 8080,
                    ..Default::default()
                }],
                virtual_ips: vips
                    .iter()
                    .map(|(n, a)| VirtualIp {
                        network_id: n.to_string(),
                        addr: a.to_string(),
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tables_list_the_services_with_a_vip_on_the_network() {
        let mut st = state(vec![task(
            "t1",
            "n1",
            TaskState::Running,
            &[("a", "198.18.128.4/24")],
        )]);
        for s in [
            vip_service("s2", &[("a", "198.18.128.20/24")]),
            vip_service(
                "s1",
                &[("b", "198.18.128.30/24"), ("a", "198.18.128.10/24")],
            ),
            // On network c only, which n1 has no task on.
            vip_service("s3", &[("c", "198.18.128.40/24")]),
            // dnsrr: no VIP.
            vip_service("s4", &[]),
        ] {
            st.services.insert(s.id.clone(), s);
        }
        let tables = peer_tables(&st, "n1");
        assert_eq!(tables.len(), 1);
        let got: Vec<(&str, &str, &str)> = tables[0]
            .services
            .iter()
            .map(|s| {
                (
                    s.service_id.as_str(),
                    s.service_name.as_str(),
                    s.vip.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("s1", "svc-s1", "198.18.128.10"),
                ("s2", "svc-s2", "198.18.128.20")
            ]
        );
        assert_eq!(tables[0].services[0].aliases, ["alias-s1"]);
        assert_eq!(tables[0].services[0].ports[0].published_port, 8080);
    }

    #[test]
    fn a_task_told_to_stop_is_not_serving_while_it_still_runs() {
        let mut stopping = task("t1", "n1", TaskState::Running, &[("a", "198.18.128.4/24")]);
        stopping.desired_state = TaskState::Shutdown as i32;
        let st = state(vec![
            stopping,
            task("t2", "n2", TaskState::Running, &[("a", "198.18.128.5/24")]),
        ]);
        assert_eq!(
            summary(&peer_tables(&st, "n2")),
            [(
                "a".to_string(),
                vec![
                    // Still in the table (its neighbour entries stay until it stops), but no
                    // longer load-balanced to nor answered in DNS.
                    ep("t1", "198.18.128.4", "198.18.0.1", false),
                    ep("t2", "198.18.128.5", "198.18.0.2", true),
                ]
            )]
        );
        let e = &peer_tables(&st, "n2")[0].endpoints[1];
        assert_eq!((e.service_id.as_str(), e.node_id.as_str()), ("s1", "n2"));
    }

    fn ingress_state() -> StoreState {
        let mut ingress = network("ing");
        ingress.spec = Some(shoal_proto::NetworkSpec {
            name: "ingress".into(),
            ingress: true,
            ..Default::default()
        });
        let mut st = state(vec![task(
            "t1",
            "n2",
            TaskState::Running,
            &[("ing", "198.18.128.7/24"), ("a", "198.18.128.8/24")],
        )]);
        st.networks.insert("ing".into(), ingress.clone());
        for (id, addr) in [("n1", "198.18.128.2/24"), ("n2", "198.18.128.3/24")] {
            if let Some(n) = st.nodes.get_mut(id) {
                n.attachments = vec![NetworkAttachment {
                    network: Some(ingress.clone()),
                    address: addr.into(),
                    aliases: Vec::new(),
                }];
            }
        }
        st
    }

    /// A build keeps the previous build's members of every network they did not change on,
    /// so that a thousand sessions find their unchanged tables equal without walking them.
    #[test]
    fn unchanged_networks_keep_the_previous_builds_members() {
        let st = ingress_state();
        let first = Peers::of(&st, by_id(&st), None);
        let mut changed = ingress_state();
        let t9 = task("t9", "n1", TaskState::Running, &[("b", "198.18.128.9/24")]);
        changed.tasks.insert(t9.id.clone(), t9);
        let second = Peers::of(&changed, by_id(&changed), Some(&first));
        for id in ["ing", "a"] {
            assert!(
                Arc::ptr_eq(&first.by_network[id], &second.by_network[id]),
                "network {id} did not change"
            );
        }
        assert!(!first.by_network.contains_key("b"));
        assert_eq!(second.by_network["b"].endpoints.len(), 1);

        // n1 now has a task on b: its ingress table is the same, and it has one more.
        let before = first.tables(&st, "n1", by_id(&st));
        let after = second.tables(&changed, "n1", by_id(&changed));
        assert_eq!(before.len(), 1);
        assert_eq!(after.len(), 2);
        assert_eq!(before[0], after[1], "ingress, sorted after b");
        assert_ne!(before, after);
        // Members built apart but equal compare equal too.
        let rebuilt = Peers::of(&st, by_id(&st), None);
        assert_eq!(before, rebuilt.tables(&st, "n1", by_id(&st)));
        // n2's ingress table differs from n1's by its own address only.
        let n2 = first.tables(&st, "n2", by_id(&st));
        assert_ne!(n2[1], before[0]);
        assert_eq!(
            n2[1].to_message().endpoints,
            before[0].to_message().endpoints
        );
    }

    #[test]
    fn every_node_with_an_ingress_address_gets_the_ingress_table() {
        let st = ingress_state();
        // n1 has no task at all: it still gets ingress, with its own address.
        let tables = peer_tables(&st, "n1");
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].local_address, "198.18.128.2/24");
        assert_eq!(
            summary(&tables),
            [(
                "ing".to_string(),
                vec![
                    ep("", "198.18.128.2", "198.18.0.1", false),
                    ep("", "198.18.128.3", "198.18.0.2", false),
                    ep("t1", "198.18.128.7", "198.18.0.2", true),
                ]
            )]
        );
        let node_ep = &tables[0].endpoints[1];
        assert_eq!(node_ep.node_id, "n2");
        assert!(node_ep.task_name.is_empty() && node_ep.service_name.is_empty());
        assert!(node_ep.service_id.is_empty() && node_ep.aliases.is_empty());
        // n2 has the task: ingress and network a; only ingress has a local address.
        let tables = peer_tables(&st, "n2");
        let got: Vec<(&str, &str)> = tables
            .iter()
            .map(|t| {
                (
                    t.network.as_ref().map_or("", |n| n.id.as_str()),
                    t.local_address.as_str(),
                )
            })
            .collect();
        assert_eq!(got, [("a", ""), ("ing", "198.18.128.3/24")]);
        // A node with no address (not allocated yet) and no task gets nothing.
        assert!(peer_tables(&st, "n3").is_empty());
    }

    #[test]
    fn underlay_ips_lose_their_port() {
        assert_eq!(underlay_ip("198.18.0.1:2377"), "198.18.0.1");
        assert_eq!(underlay_ip("[fd00::1]:2377"), "fd00::1");
        assert_eq!(underlay_ip("198.18.0.1"), "198.18.0.1");
        assert_eq!(underlay_ip("[fd00::1]"), "fd00::1");
        assert_eq!(underlay_ip("manager-1:2377"), "manager-1");
    }
}
