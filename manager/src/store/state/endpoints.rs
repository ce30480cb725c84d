//! The rules for services' endpoints (published ports and VIPs), re-checked when a service is
//! created or updated: an ingress port is published by one service only (per protocol), and a
//! VIP is an address of its network's subnet that no live task and no other VIP holds.
//!
//! The control API allocates from the state it read; these checks at apply time are what keep
//! racing creates and leader changes from giving one port or address twice.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_proto::validate::endpoint::{is_ingress, protocol_name};
use shoal_proto::{Service, VirtualIp};

use super::{service_name, usable_address, ApplyError, StoreState};

/// The IP of a VIP ("198.18.128.9/24" → 198.18.128.9), if it is one.
pub fn vip_ip(v: &VirtualIp) -> Option<Ipv4Addr> {
    v.addr.parse::<Ipv4Net>().ok().map(|n| n.addr())
}

impl StoreState {
    /// The service (other than `except`) publishing `port`/`protocol` through the routing mesh.
    pub fn port_publisher(&self, protocol: i32, port: u32, except: &str) -> Option<&Service> {
        self.services.values().find(|s| {
            s.id != except
                && s.endpoint.as_ref().is_some_and(|e| {
                    e.ports.iter().any(|p| {
                        is_ingress(p) && p.protocol == protocol && p.published_port == port
                    })
                })
        })
    }

    /// The service (other than `except`) whose VIP on `network_id` is `ip`.
    pub fn vip_holder(&self, network_id: &str, ip: Ipv4Addr, except: &str) -> Option<&Service> {
        self.services.values().find(|s| {
            s.id != except
                && s.endpoint.as_ref().is_some_and(|e| {
                    e.virtual_ips
                        .iter()
                        .any(|v| v.network_id == network_id && vip_ip(v) == Some(ip))
                })
        })
    }

    /// A created or updated service's endpoint is its own: ports no other service publishes,
    /// VIPs inside their networks that nobody else holds.
    pub(super) fn check_service_endpoint(&self, s: &Service) -> Result<(), ApplyError> {
        let Some(e) = s.endpoint.as_ref() else {
            return Ok(());
        };
        for (i, p) in e.ports.iter().enumerate().filter(|(_, p)| is_ingress(p)) {
            let taken = |service: String| ApplyError::PortInUse {
                port: p.published_port,
                protocol: protocol_name(p.protocol),
                service,
            };
            if p.published_port == 0 {
                return Err(ApplyError::PortNotAllocated {
                    target: p.target_port,
                });
            }
            if let Some(other) = self.port_publisher(p.protocol, p.published_port, &s.id) {
                return Err(taken(service_name(other).to_string()));
            }
            if e.ports[..i].iter().any(|o| {
                is_ingress(o) && o.protocol == p.protocol && o.published_port == p.published_port
            }) {
                return Err(taken(service_name(s).to_string()));
            }
        }
        for (i, v) in e.virtual_ips.iter().enumerate() {
            self.check_vip(s, v)?;
            if e.virtual_ips[..i]
                .iter()
                .any(|o| o.network_id == v.network_id)
            {
                return Err(ApplyError::BadVip {
                    address: v.addr.clone(),
                    network: v.network_id.clone(),
                    why: "a second VIP of the service on the network",
                });
            }
        }
        Ok(())
    }

    fn check_vip(&self, s: &Service, v: &VirtualIp) -> Result<(), ApplyError> {
        let (network, name, subnet) = self.network_for_addresses(&v.network_id)?;
        let bad = |why: &'static str| ApplyError::BadVip {
            address: v.addr.clone(),
            network: name.to_string(),
            why,
        };
        let ip = usable_address(network, subnet, &v.addr)
            .map_err(bad)?
            .addr();
        if let Some(task) = self.address_holder(&v.network_id, ip, "") {
            return Err(ApplyError::VipInUse {
                address: ip.to_string(),
                network: name.to_string(),
                holder: format!("task {task}"),
            });
        }
        if let Some(node) = self.node_address_holder(&v.network_id, ip, "") {
            return Err(ApplyError::VipInUse {
                address: ip.to_string(),
                network: name.to_string(),
                holder: format!("node {node}"),
            });
        }
        if let Some(other) = self.vip_holder(&v.network_id, ip, &s.id) {
            return Err(ApplyError::VipInUse {
                address: ip.to_string(),
                network: name.to_string(),
                holder: format!("service {}", service_name(other)),
            });
        }
        Ok(())
    }
}
