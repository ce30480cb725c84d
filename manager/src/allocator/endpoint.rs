//! A service's endpoint as allocated: its published ports and, in `vip` mode, one virtual IP
//! per network it is attached to (docker's `Endpoint`).
//!
//! Rules, as swarmkit's port allocator and network allocator apply them:
//! - an ingress (routing-mesh) port is published by one service only, per protocol; a port
//!   given as 0 gets the lowest free one of 30000-32767; host-mode ports are not reserved
//!   cluster-wide (they are bound only where a task runs);
//! - a VIP is an address of its network's subnet, from the same address space as the task
//!   addresses and the nodes' own (so no task or node ever gets a VIP, nor a VIP theirs);
//! - a service with routing-mesh ports has a VIP on the ingress network too, first, in either
//!   endpoint mode (the routing mesh balances over its tasks there, as docker's); it is refused
//!   when there is no ingress network;
//! - an update keeps what did not change: the ports chosen for `--publish 80` and the VIPs on
//!   networks the service stays on. What is not carried over is free once the entry applies,
//!   as is everything of a removed service.
//!
//! Everything is computed from the store's state (nothing is kept between calls), so a new
//! leader needs nothing rebuilt; the store re-checks the result when it applies it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_proto::validate::endpoint::{
    is_ingress, ports, protocol_name, wants_vips, DYNAMIC_PORTS,
};
use shoal_proto::{Endpoint, PortConfig, ServiceSpec, VirtualIp};

use super::ipam::rebuild;
use super::IpamError;
use crate::store::state::{attachment_ip, attachment_network_id, holds_addresses, vip_ip};
use crate::store::StoreState;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointAllocError {
    #[error("port {port}/{protocol} is already published by service {service}")]
    PortInUse {
        port: u32,
        protocol: &'static str,
        service: String,
    },
    #[error(
        "no free port left in 30000-32767 for {protocol}: give a published port, or unpublish \
         another service's"
    )]
    NoFreePort { protocol: &'static str },
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("no available IP addresses on network {0} for the service's VIP")]
    NoFreeAddress(String),
    #[error("network {network}: {error}")]
    Ipam { network: String, error: IpamError },
    #[error(
        "port {port}/{protocol} is published through the routing mesh, but the swarm has no \
         ingress network: create one with `shoal network create --driver overlay --ingress \
         ingress`, or publish with mode=host"
    )]
    NoIngressNetwork { port: u32, protocol: &'static str },
}

/// The endpoint for `spec` of service `service_id`, keeping what `current` (the stored
/// endpoint, on an update) already holds where the spec still asks for it.
pub fn allocate_endpoint(
    st: &StoreState,
    service_id: &str,
    spec: &ServiceSpec,
    current: Option<&Endpoint>,
) -> Result<Endpoint, EndpointAllocError> {
    Ok(Endpoint {
        spec: spec.endpoint.clone(),
        ports: allocate_ports(st, service_id, ports(spec), current)?,
        virtual_ips: allocate_vips(st, service_id, spec, current)?,
    })
}

/// The spec's ports with every ingress port's published port set.
fn allocate_ports(
    st: &StoreState,
    service_id: &str,
    wanted: &[PortConfig],
    current: Option<&Endpoint>,
) -> Result<Vec<PortConfig>, EndpointAllocError> {
    if !wanted.iter().any(is_ingress) {
        // Nothing published through the mesh: no port to choose or check, so no reason to
        // read every other service's (a scan on each update of such a service).
        return Ok(wanted.to_vec());
    }
    let others: BTreeSet<(i32, u32)> = st
        .services
        .values()
        .filter(|s| s.id != service_id)
        .flat_map(|s| s.endpoint.iter().flat_map(|e| e.ports.iter()))
        .filter(|p| is_ingress(p))
        .map(|p| (p.protocol, p.published_port))
        .collect();
    // The ports the spec names itself come first: a chosen one never takes them.
    let mut mine: BTreeSet<(i32, u32)> = BTreeSet::new();
    for p in wanted
        .iter()
        .filter(|p| is_ingress(p) && p.published_port != 0)
    {
        if others.contains(&(p.protocol, p.published_port)) {
            let service = st
                .port_publisher(p.protocol, p.published_port, service_id)
                .and_then(|s| s.spec.as_ref())
                .map_or_else(String::new, |s| s.name.clone());
            return Err(EndpointAllocError::PortInUse {
                port: p.published_port,
                protocol: protocol_name(p.protocol),
                service,
            });
        }
        mine.insert((p.protocol, p.published_port));
    }
    let free = |key: (i32, u32), mine: &BTreeSet<(i32, u32)>| {
        !others.contains(&key) && !mine.contains(&key)
    };
    let held = current.map_or(&[][..], |e| &e.ports[..]);
    let mut out = Vec::with_capacity(wanted.len());
    for p in wanted {
        if !is_ingress(p) || p.published_port != 0 {
            out.push(p.clone());
            continue;
        }
        // The port this target already had, if nothing else claimed it meanwhile.
        let kept = held
            .iter()
            .filter(|c| is_ingress(c) && c.protocol == p.protocol && c.target_port == p.target_port)
            .map(|c| c.published_port)
            .find(|&port| port != 0 && free((p.protocol, port), &mine));
        let port = kept
            .or_else(|| {
                DYNAMIC_PORTS
                    .clone()
                    .find(|&port| free((p.protocol, port), &mine))
            })
            .ok_or(EndpointAllocError::NoFreePort {
                protocol: protocol_name(p.protocol),
            })?;
        mine.insert((p.protocol, port));
        out.push(PortConfig {
            published_port: port,
            ..p.clone()
        });
    }
    Ok(out)
}

/// One VIP on the ingress network when the spec publishes a port through the routing mesh,
/// then one per network of the spec in `vip` mode (none in `dnsrr` mode), in the spec's order.
fn allocate_vips(
    st: &StoreState,
    service_id: &str,
    spec: &ServiceSpec,
    current: Option<&Endpoint>,
) -> Result<Vec<VirtualIp>, EndpointAllocError> {
    let mut wanted: Vec<&str> = Vec::with_capacity(spec.networks.len() + 1);
    if let Some(p) = ports(spec).iter().find(|p| is_ingress(p)) {
        let ingress = st
            .ingress_network()
            .ok_or(EndpointAllocError::NoIngressNetwork {
                port: p.published_port,
                protocol: protocol_name(p.protocol),
            })?;
        wanted.push(&ingress.id);
    }
    if wants_vips(spec) {
        wanted.extend(spec.networks.iter().map(|n| n.target.as_str()));
    }
    let held = current.map_or(&[][..], |e| &e.virtual_ips[..]);
    let mut out = Vec::with_capacity(wanted.len());
    for id in wanted {
        let network = st
            .networks
            .get(id)
            .ok_or_else(|| EndpointAllocError::NoSuchNetwork(id.to_string()))?;
        let name = network.spec.as_ref().map_or(id, |s| s.name.as_str());
        let taken = taken_addresses(st, id, service_id);
        let kept = held.iter().find(|v| {
            v.network_id == id
                && vip_ip(v).is_some_and(|ip| !taken.contains(&ip))
                && v.addr.parse::<Ipv4Net>().ok().map(|a| a.trunc()) == network.subnet.parse().ok()
        });
        if let Some(v) = kept {
            out.push(v.clone());
            continue;
        }
        let ipam = |error| EndpointAllocError::Ipam {
            network: name.to_string(),
            error,
        };
        let mut addresses = rebuild(network, taken).map_err(ipam)?;
        let ip = addresses.allocate().map_err(|e| match e {
            IpamError::Exhausted { .. } => EndpointAllocError::NoFreeAddress(name.to_string()),
            other => ipam(other),
        })?;
        let subnet = addresses.subnet();
        let addr = Ipv4Net::new(ip, subnet.prefix_len())
            .map_or_else(|_| ip.to_string(), |n| n.to_string());
        out.push(VirtualIp {
            network_id: id.to_string(),
            addr,
        });
    }
    Ok(out)
}

/// The addresses of network `network_id` that live tasks, nodes and other services' VIPs hold.
fn taken_addresses(st: &StoreState, network_id: &str, service_id: &str) -> BTreeSet<Ipv4Addr> {
    let tasks = st
        .tasks
        .values()
        .filter(|t| holds_addresses(t))
        .flat_map(|t| t.networks.iter())
        .filter(|a| attachment_network_id(a) == network_id)
        .filter_map(attachment_ip);
    tasks
        .chain(node_addresses_on(st, network_id))
        .chain(vips_on(st, network_id, service_id))
        .collect()
}

/// The nodes' own addresses on `network_id` (their routing-mesh load balancers').
pub fn node_addresses_on<'a>(
    st: &'a StoreState,
    network_id: &'a str,
) -> impl Iterator<Item = Ipv4Addr> + 'a {
    st.nodes
        .values()
        .flat_map(|n| n.attachments.iter())
        .filter(move |a| attachment_network_id(a) == network_id)
        .filter_map(attachment_ip)
}

/// The VIPs on `network_id` of every service but `except` (all of them with "").
pub fn vips_on<'a>(
    st: &'a StoreState,
    network_id: &'a str,
    except: &'a str,
) -> impl Iterator<Item = Ipv4Addr> + 'a {
    st.services
        .values()
        .filter(move |s| s.id != except)
        .flat_map(|s| s.endpoint.iter().flat_map(|e| e.virtual_ips.iter()))
        .filter(move |v| v.network_id == network_id)
        .filter_map(vip_ip)
}

#[cfg(test)]
mod tests;
