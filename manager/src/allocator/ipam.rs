//! The addresses of one network's subnet: its gateway, and one address per task attachment.
//!
//! Rules, as libnetwork's default IPAM applies them to swarm networks:
//! - the network and broadcast addresses are never handed out (`newPoolData` reserves them);
//! - the gateway is the user's `--gateway`, else the first host address (the first address
//!   IPAM hands out on an empty subnet);
//! - task addresses are handed out serially (swarmkit sets `com.docker.network.ipam.serial`):
//!   after the last address given, wrapping around at the end, so an address freed by a
//!   removed task is the last to be reused and stale DNS answers or ARP entries for it have
//!   time to expire;
//! - one address is never held twice.
//!
//! The state is rebuildable: the manager records every address in Raft and a new leader
//! builds this from those records with [`NetworkAddresses::from_allocated`].

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_proto::validate::network::{self as rules, NetworkError};

use super::serial::{SerialSet, TakeError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The subnet or gateway breaks the rules `network create` checks.
    #[error(transparent)]
    Invalid(#[from] NetworkError),
    #[error(
        "network subnet {subnet} has no free address left ({in_use} tasks hold one): remove \
         tasks from the network, or create a network with a larger --subnet"
    )]
    Exhausted { subnet: Ipv4Net, in_use: u64 },
    #[error(
        "{addr} is not a task address of {subnet}: it is outside the subnet, or its network or \
         broadcast address"
    )]
    NotAHostAddress { addr: Ipv4Addr, subnet: Ipv4Net },
    #[error(
        "{addr} is the gateway of {subnet}; it stays with the network until the network is removed"
    )]
    IsGateway { addr: Ipv4Addr, subnet: Ipv4Net },
    #[error("{addr} is already in use on {subnet}")]
    InUse { addr: Ipv4Addr, subnet: Ipv4Net },
    #[error("{addr} is not in use on {subnet}, so it cannot be released")]
    NotInUse { addr: Ipv4Addr, subnet: Ipv4Net },
}

/// The address space of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAddresses {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    /// Host addresses as numbers; the gateway is in it too, so it is never handed out.
    hosts: SerialSet,
}

impl NetworkAddresses {
    /// A new network's addresses, with the user's gateway or the first host address.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Self, IpamError> {
        let mut hosts = host_range(subnet)?;
        let gateway = match gateway {
            Some(gw) => {
                rules::gateway_in_subnet(gw, subnet)?;
                take(&mut hosts, gw, subnet)?;
                gw
            }
            // As IPAM's first serial allocation: the cursor moves past it.
            None => hosts
                .take_next()
                .map(to_addr)
                .ok_or(IpamError::Exhausted { subnet, in_use: 0 })?,
        };
        Ok(NetworkAddresses {
            subnet,
            gateway,
            hosts,
        })
    }

    /// The addresses a new leader rebuilds from its store: the network's subnet and gateway and
    /// the task addresses recorded on it. An address recorded twice, or one that cannot be a
    /// task address, is an inconsistent store and is reported. Allocation resumes after the
    /// highest recorded address, so the ones freed just before the leader changed are not
    /// handed out first (unless the old sequence had wrapped around; a caller that records
    /// the last address handed out can pass it to [`Self::resume_after`]).
    pub fn from_allocated(
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        addrs: impl IntoIterator<Item = Ipv4Addr>,
    ) -> Result<Self, IpamError> {
        let mut network = Self::new(subnet, Some(gateway))?;
        let mut highest = None;
        for addr in addrs {
            network.reserve(addr)?;
            highest = highest.max(Some(addr));
        }
        if let Some(addr) = highest {
            network.resume_after(addr);
        }
        Ok(network)
    }

    /// Continue the sequence after `addr`, for a caller that records the last address handed
    /// out and wants a rebuilt allocator to carry on exactly where the old one stopped.
    pub fn resume_after(&mut self, addr: Ipv4Addr) {
        self.hosts.resume_after(u32::from(addr).into());
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// One address for a task attachment: the next free one after the last handed out.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        self.hosts
            .take_next()
            .map(to_addr)
            .ok_or(IpamError::Exhausted {
                subnet: self.subnet,
                in_use: self.task_count(),
            })
    }

    /// Marks one given address as used (a recorded or a requested static address).
    pub fn reserve(&mut self, addr: Ipv4Addr) -> Result<(), IpamError> {
        self.refuse_gateway(addr)?;
        take(&mut self.hosts, addr, self.subnet)
    }

    /// Frees a task's address. The gateway is not a task's and is refused.
    pub fn release(&mut self, addr: Ipv4Addr) -> Result<(), IpamError> {
        self.refuse_gateway(addr)?;
        if self.hosts.give_back(u32::from(addr).into()) {
            Ok(())
        } else {
            Err(IpamError::NotInUse {
                addr,
                subnet: self.subnet,
            })
        }
    }

    /// Whether `addr` is held, by a task or as the gateway.
    pub fn is_allocated(&self, addr: Ipv4Addr) -> bool {
        self.hosts.contains(u32::from(addr).into())
    }

    /// The task addresses in use, lowest first (the gateway is not one).
    pub fn allocated(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let gateway = self.gateway;
        self.hosts
            .used()
            .map(to_addr)
            .filter(move |a| *a != gateway)
    }

    /// How many more task addresses fit.
    pub fn free_count(&self) -> u64 {
        self.hosts.free_count()
    }

    /// The gateway belongs to the network, not to a task: no task may take or free it.
    fn refuse_gateway(&self, addr: Ipv4Addr) -> Result<(), IpamError> {
        if addr == self.gateway {
            return Err(IpamError::IsGateway {
                addr,
                subnet: self.subnet,
            });
        }
        Ok(())
    }

    fn task_count(&self) -> u64 {
        self.hosts.used_count().saturating_sub(1)
    }
}

/// The host addresses of an overlay subnet: all but the network and broadcast addresses.
fn host_range(subnet: Ipv4Net) -> Result<SerialSet, IpamError> {
    rules::network_address(subnet)?;
    rules::overlay_subnet_size(subnet)?;
    let first = u64::from(u32::from(subnet.network())) + 1;
    let last = u64::from(u32::from(subnet.broadcast())) - 1;
    Ok(SerialSet::new(first, last))
}

fn take(hosts: &mut SerialSet, addr: Ipv4Addr, subnet: Ipv4Net) -> Result<(), IpamError> {
    hosts.take(u32::from(addr).into()).map_err(|e| match e {
        TakeError::OutOfRange => IpamError::NotAHostAddress { addr, subnet },
        TakeError::InUse => IpamError::InUse { addr, subnet },
    })
}

/// Every number in the set came from a u32 address.
fn to_addr(n: u64) -> Ipv4Addr {
    Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))
}

/// A network's addresses from the store: its subnet, gateway and the addresses held on it.
pub(super) fn rebuild(
    network: &shoal_proto::Network,
    held: std::collections::BTreeSet<Ipv4Addr>,
) -> Result<NetworkAddresses, IpamError> {
    let subnet = shoal_proto::validate::network::subnet(&network.subnet)?;
    let gateway: Ipv4Addr = network.gateway.parse().unwrap_or_else(|_| {
        // Every stored network has a gateway; the first host is what IPAM would have chosen.
        Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
    });
    NetworkAddresses::from_allocated(subnet, gateway, held)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn default_gateway_is_the_first_host_and_tasks_follow() {
        let mut n = NetworkAddresses::new(net("198.18.1.0/24"), None).unwrap();
        assert_eq!(n.gateway(), ip("198.18.1.1"));
        assert!(n.is_allocated(ip("198.18.1.1")));
        assert_eq!(n.allocate(), Ok(ip("198.18.1.2")));
        assert_eq!(n.allocate(), Ok(ip("198.18.1.3")));
        assert_eq!(
            n.allocated().collect::<Vec<_>>(),
            [ip("198.18.1.2"), ip("198.18.1.3")]
        );
    }

    #[test]
    fn a_user_gateway_is_kept_and_never_handed_out() {
        let mut n = NetworkAddresses::new(net("198.18.1.0/29"), Some(ip("198.18.1.3"))).unwrap();
        assert_eq!(n.gateway(), ip("198.18.1.3"));
        let all: Vec<_> = std::iter::from_fn(|| n.allocate().ok()).collect();
        assert_eq!(
            all,
            [
                "198.18.1.1",
                "198.18.1.2",
                "198.18.1.4",
                "198.18.1.5",
                "198.18.1.6"
            ]
            .map(ip)
        );
    }

    #[test]
    fn bad_subnets_and_gateways_are_refused() {
        assert!(matches!(
            NetworkAddresses::new(net("198.18.1.5/24"), None),
            Err(IpamError::Invalid(
                NetworkError::SubnetNotNetworkAddress { .. }
            ))
        ));
        assert!(matches!(
            NetworkAddresses::new(net("198.18.1.0/30"), None),
            Err(IpamError::Invalid(NetworkError::SubnetTooSmall { .. }))
        ));
        for (gw, want) in [
            ("198.18.2.1", "GatewayOutsideSubnet"),
            ("198.18.1.0", "GatewayIsNetworkAddress"),
            ("198.18.1.255", "GatewayIsBroadcast"),
        ] {
            let err = NetworkAddresses::new(net("198.18.1.0/24"), Some(ip(gw))).unwrap_err();
            assert!(format!("{err:?}").contains(want), "{gw}: {err:?}");
        }
    }

    #[test]
    fn the_whole_slash_24_then_exhaustion() {
        let subnet = net("198.18.1.0/24");
        let mut n = NetworkAddresses::new(subnet, None).unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..253 {
            let a = n.allocate().unwrap();
            assert!(subnet.contains(&a));
            assert_ne!(a, subnet.network());
            assert_ne!(a, subnet.broadcast());
            assert_ne!(a, n.gateway());
            assert!(seen.insert(a), "{a} handed out twice");
        }
        assert_eq!(n.free_count(), 0);
        let err = n.allocate().unwrap_err();
        assert_eq!(
            err,
            IpamError::Exhausted {
                subnet,
                in_use: 253
            }
        );
        assert!(err.to_string().contains("larger --subnet"), "{err}");
    }

    #[test]
    fn release_then_reallocate_prefers_addresses_not_just_freed() {
        let mut n = NetworkAddresses::new(net("198.18.1.0/24"), None).unwrap();
        let first = n.allocate().unwrap();
        let second = n.allocate().unwrap();
        n.release(first).unwrap();
        assert!(!n.is_allocated(first));
        // The sequence goes on instead of refilling the hole at once.
        assert_eq!(n.allocate(), Ok(ip("198.18.1.4")));
        n.release(second).unwrap();
        let next: Vec<_> = (0..250).map(|_| n.allocate().unwrap()).collect();
        assert!(!next.contains(&first) && !next.contains(&second));
        // Only once the rest is used does the sequence wrap to the freed ones, lowest first.
        assert_eq!(n.allocate(), Ok(first));
        assert_eq!(n.allocate(), Ok(second));
        assert!(matches!(n.allocate(), Err(IpamError::Exhausted { .. })));
    }

    #[test]
    fn churn_never_hands_out_an_address_in_use() {
        let mut n = NetworkAddresses::new(net("198.18.2.0/28"), None).unwrap();
        let mut held: Vec<Ipv4Addr> = Vec::new();
        for round in 0..500u32 {
            if round % 3 == 2 && !held.is_empty() {
                let a = held.remove((round as usize * 7) % held.len());
                n.release(a).unwrap();
            } else if let Ok(a) = n.allocate() {
                assert!(!held.contains(&a), "{a} handed out twice");
                held.push(a);
            } else {
                assert_eq!(held.len(), 13);
            }
        }
    }

    #[test]
    fn release_and_reserve_errors() {
        let subnet = net("198.18.1.0/24");
        let mut n = NetworkAddresses::new(subnet, None).unwrap();
        let gw = n.gateway();
        assert_eq!(
            n.release(gw),
            Err(IpamError::IsGateway { addr: gw, subnet })
        );
        assert_eq!(
            n.reserve(gw),
            Err(IpamError::IsGateway { addr: gw, subnet })
        );
        let free = ip("198.18.1.9");
        assert_eq!(
            n.release(free),
            Err(IpamError::NotInUse { addr: free, subnet })
        );
        assert_eq!(n.reserve(free), Ok(()));
        assert_eq!(
            n.reserve(free),
            Err(IpamError::InUse { addr: free, subnet })
        );
        for outside in ["198.18.1.0", "198.18.1.255", "198.18.2.7"] {
            assert_eq!(
                n.reserve(ip(outside)),
                Err(IpamError::NotAHostAddress {
                    addr: ip(outside),
                    subnet
                })
            );
        }
        // A reserved address is skipped by the sequence.
        let handed: Vec<_> = (0..8).map(|_| n.allocate().unwrap()).collect();
        assert!(!handed.contains(&free));
    }

    #[test]
    fn a_rebuilt_network_never_returns_a_recorded_address() {
        let subnet = net("198.18.3.0/24");
        let mut before = NetworkAddresses::new(subnet, Some(ip("198.18.3.254"))).unwrap();
        let given: Vec<_> = (0..100).map(|_| before.allocate().unwrap()).collect();
        for a in given.iter().step_by(4) {
            before.release(*a).unwrap();
        }
        let recorded: Vec<_> = before.allocated().collect();
        let mut after =
            NetworkAddresses::from_allocated(subnet, before.gateway(), recorded.clone()).unwrap();
        assert_eq!(after.gateway(), ip("198.18.3.254"));
        assert_eq!(after.allocated().collect::<Vec<_>>(), recorded);
        assert_eq!(after.free_count(), before.free_count());
        // Resumes after the highest recorded address, as the old leader would have.
        assert_eq!(after.allocate(), before.allocate());
        let mut handed = BTreeSet::new();
        while let Ok(a) = after.allocate() {
            assert!(
                !recorded.contains(&a),
                "{a} was recorded and handed out again"
            );
            assert_ne!(a, after.gateway());
            assert!(handed.insert(a));
        }
    }

    #[test]
    fn a_rebuilt_network_can_resume_where_the_old_one_stopped() {
        let subnet = net("198.18.3.0/29");
        let mut before = NetworkAddresses::new(subnet, None).unwrap();
        let all: Vec<_> = std::iter::from_fn(|| before.allocate().ok()).collect();
        // .2 to .6; free .3 and .6, then the sequence wraps and hands out .3 again.
        before.release(all[1]).unwrap();
        before.release(all[4]).unwrap();
        let last = before.allocate().unwrap();
        assert_eq!(last, ip("198.18.3.3"));
        let recorded: Vec<_> = before.allocated().collect();
        let mut after =
            NetworkAddresses::from_allocated(subnet, before.gateway(), recorded).unwrap();
        after.resume_after(last);
        assert_eq!(after.allocate(), before.allocate());
    }

    #[test]
    fn rebuilding_refuses_an_inconsistent_record() {
        let subnet = net("198.18.3.0/24");
        let gw = ip("198.18.3.1");
        let twice = ip("198.18.3.7");
        assert_eq!(
            NetworkAddresses::from_allocated(subnet, gw, [twice, twice]),
            Err(IpamError::InUse {
                addr: twice,
                subnet
            })
        );
        assert_eq!(
            NetworkAddresses::from_allocated(subnet, gw, [gw]),
            Err(IpamError::IsGateway { addr: gw, subnet })
        );
        assert!(matches!(
            NetworkAddresses::from_allocated(subnet, ip("198.18.4.1"), []),
            Err(IpamError::Invalid(
                NetworkError::GatewayOutsideSubnet { .. }
            ))
        ));
    }

    #[test]
    fn large_subnets_cost_only_what_is_used() {
        // A /15 has 131070 host addresses; the set holds only those handed out.
        let mut n = NetworkAddresses::new(net("198.18.0.0/15"), None).unwrap();
        assert_eq!(n.free_count(), 131_069);
        assert_eq!(n.allocate(), Ok(ip("198.18.0.2")));
        let from = NetworkAddresses::from_allocated(
            net("198.18.0.0/15"),
            ip("198.18.0.1"),
            [ip("198.19.255.254")],
        )
        .unwrap();
        let mut from = from;
        // After the highest recorded address the sequence wraps to the start.
        assert_eq!(from.allocate(), Ok(ip("198.18.0.2")));
    }
}
