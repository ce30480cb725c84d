//! What each load balancer of this node should do, read from the managers' peer tables: the
//! VIPs a task sees and their running tasks, the routing mesh's published ports and their
//! running tasks, and where a task's mesh replies go. Pure functions of the tables, so that
//! every change is a recomputation, never an edit.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use shoal_proto::port_config::{Protocol, PublishMode};
use shoal_proto::{NetworkEndpoint, NetworkPeers, PortConfig};

use super::lb::{MeshReturn, PortForward, Vip};

/// Whether the table is the ingress network's (the routing mesh's).
pub(super) fn is_ingress(p: &NetworkPeers) -> bool {
    p.network
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .is_some_and(|s| s.ingress)
}

/// The ingress network's table, when the node has one.
pub(super) fn ingress(peers: &HashMap<String, NetworkPeers>) -> Option<&NetworkPeers> {
    peers.values().find(|p| is_ingress(p))
}

/// The service's serving tasks on the table's network (running and still wanted running).
fn serving<'a>(p: &'a NetworkPeers, service_id: &'a str) -> impl Iterator<Item = Ipv4Addr> + 'a {
    p.endpoints
        .iter()
        .filter(move |e| e.running && !e.task_id.is_empty() && e.service_id == service_id)
        .filter_map(|e| e.address.parse().ok())
}

/// The VIPs of the services on `networks` (a task's, by ID) and their serving tasks. The
/// ingress network's VIPs are not for tasks to call (docker does not resolve them either).
pub(super) fn task_vips(peers: &HashMap<String, NetworkPeers>, networks: &[String]) -> Vec<Vip> {
    let mut vips = Vec::new();
    for p in networks.iter().filter_map(|id| peers.get(id)) {
        if is_ingress(p) {
            continue;
        }
        for svc in &p.services {
            let Ok(addr) = svc.vip.parse() else { continue };
            vips.push(Vip {
                addr,
                backends: serving(p, &svc.service_id).collect(),
            });
        }
    }
    vips
}

/// The node addresses (ingress load balancers) of the table: endpoints without a task.
fn balancers(p: &NetworkPeers) -> Vec<Ipv4Addr> {
    p.endpoints
        .iter()
        .filter(|e: &&NetworkEndpoint| e.task_id.is_empty())
        .filter_map(|e| e.address.parse().ok())
        .collect()
}

/// For a task on the ingress network (at `networks[i]`, so interface `eth{i}`): where its mesh
/// replies go.
pub(super) fn mesh_return(
    peers: &HashMap<String, NetworkPeers>,
    networks: &[String],
) -> Option<MeshReturn> {
    networks.iter().enumerate().find_map(|(i, id)| {
        let p = peers.get(id).filter(|p| is_ingress(p))?;
        Some(MeshReturn {
            ifname: format!("eth{i}"),
            balancers: balancers(p),
        })
    })
}

/// `tcp` or `udp`.
pub(super) fn protocol_word(p: &PortConfig) -> &'static str {
    if p.protocol == Protocol::Udp as i32 {
        "udp"
    } else {
        "tcp"
    }
}

/// The routing mesh's published ports and the serving tasks behind each (address on the ingress
/// network, target port). A port with no serving task has no backends: it is refused.
pub(super) fn mesh_ports(ingress: &NetworkPeers) -> Vec<PortForward> {
    let mut forwards = Vec::new();
    for svc in &ingress.services {
        for port in svc.ports.iter().filter(|p| is_mesh(p)) {
            let (Ok(published), Ok(target)) = (
                u16::try_from(port.published_port),
                u16::try_from(port.target_port),
            ) else {
                continue;
            };
            forwards.push(PortForward {
                protocol: protocol_word(port),
                port: published,
                backends: serving(ingress, &svc.service_id)
                    .map(|ip| SocketAddrV4::new(ip, target))
                    .collect(),
            });
        }
    }
    forwards.sort();
    forwards
}

/// An ingress-mode (routing mesh) port with its published port known.
fn is_mesh(p: &PortConfig) -> bool {
    p.publish_mode == PublishMode::Ingress as i32 && p.published_port != 0
}

/// A host-mode port of a task: (protocol, published, target).
pub(super) fn host_ports(ports: &[PortConfig]) -> Vec<(&'static str, u16, u16)> {
    ports
        .iter()
        .filter(|p| p.publish_mode == PublishMode::Host as i32)
        .filter_map(|p| {
            Some((
                protocol_word(p),
                u16::try_from(p.published_port).ok().filter(|p| *p != 0)?,
                u16::try_from(p.target_port).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use shoal_proto::{Network, NetworkSpec, ServiceVip};

    use super::*;

    fn endpoint(task: &str, service: &str, address: &str, running: bool) -> NetworkEndpoint {
        NetworkEndpoint {
            task_id: task.into(),
            service_id: service.into(),
            address: address.into(),
            running,
            ..Default::default()
        }
    }

    fn table(id: &str, ingress: bool, services: Vec<ServiceVip>) -> NetworkPeers {
        NetworkPeers {
            network: Some(Network {
                id: id.into(),
                spec: Some(NetworkSpec {
                    ingress,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            endpoints: vec![
                endpoint("t1", "web", "198.18.128.3", true),
                endpoint("t2", "web", "198.18.128.4", false),
                endpoint("t3", "db", "198.18.128.5", true),
                endpoint("", "", "198.18.128.250", false),
            ],
            services,
            local_address: String::new(),
        }
    }

    fn vip(service: &str, vip: &str, ports: Vec<PortConfig>) -> ServiceVip {
        ServiceVip {
            service_id: service.into(),
            vip: vip.into(),
            ports,
            ..Default::default()
        }
    }

    #[test]
    fn vips_take_only_serving_tasks_of_their_service() {
        let peers = HashMap::from([
            (
                "front".to_string(),
                table(
                    "front",
                    false,
                    vec![
                        vip("web", "198.18.128.9", vec![]),
                        vip("idle", "198.18.128.10", vec![]),
                    ],
                ),
            ),
            (
                "ingress".to_string(),
                table("ingress", true, vec![vip("web", "198.18.128.11", vec![])]),
            ),
        ]);
        let vips = task_vips(&peers, &["ingress".into(), "front".into()]);
        assert_eq!(
            vips,
            vec![
                Vip {
                    addr: "198.18.128.9".parse().expect("ip"),
                    backends: vec!["198.18.128.3".parse().expect("ip")],
                },
                Vip {
                    addr: "198.18.128.10".parse().expect("ip"),
                    backends: vec![],
                },
            ]
        );
        let mesh = mesh_return(&peers, &["ingress".into(), "front".into()]).expect("on ingress");
        assert_eq!(mesh.ifname, "eth0");
        assert_eq!(
            mesh.balancers,
            vec!["198.18.128.250".parse::<Ipv4Addr>().expect("ip")]
        );
        assert_eq!(mesh_return(&peers, &["front".into()]), None);
    }

    #[test]
    fn mesh_ports_go_to_serving_tasks_on_their_target_port() {
        let port = |mode: PublishMode, published: u32| PortConfig {
            target_port: 80,
            published_port: published,
            publish_mode: mode as i32,
            ..Default::default()
        };
        let ingress = table(
            "ingress",
            true,
            vec![vip(
                "web",
                "198.18.128.11",
                vec![
                    port(PublishMode::Ingress, 8080),
                    port(PublishMode::Host, 9090),
                ],
            )],
        );
        assert_eq!(
            mesh_ports(&ingress),
            vec![PortForward {
                protocol: "tcp",
                port: 8080,
                backends: vec!["198.18.128.3:80".parse().expect("sa")],
            }]
        );
        assert_eq!(
            host_ports(&[
                port(PublishMode::Host, 9090),
                port(PublishMode::Ingress, 8080)
            ]),
            vec![("tcp", 9090, 80)]
        );
    }
}
