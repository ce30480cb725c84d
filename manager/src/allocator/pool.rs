//! Subnets for networks: the default address pool, and the subnets users give.
//!
//! Docker's rules (libnetwork's `defaultipam` with swarm's global pool, and
//! `swarm init --default-addr-pool CIDR --default-addr-pool-mask-length N`):
//! - the pool is 10.0.0.0/8 carved into /24s unless the swarm was initialised with others;
//! - a network without `--subnet` gets the *lowest* pool subnet that overlaps no subnet in use
//!   (`allocatePredefinedPool`), so a freed subnet is reused first, unlike task addresses: a
//!   network's subnet is only freed once the network and all its tasks are gone;
//! - a user's `--subnet` may lie inside or outside the pool, but must overlap no subnet in
//!   use (`ErrPoolOverlap`); inside the pool it then counts as used, so the pool skips it.
//!
//! Subnets in use never overlap one another (every way in checks), which lets the search jump
//! from one used subnet to the next instead of trying every candidate: its cost grows with the
//! number of networks, not with the size of the pool.
//!
//! The state is rebuildable: a new leader builds it from the subnets its store records with
//! [`SubnetPool::from_allocated`].

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use shoal_proto::validate::network::{self as rules, NetworkError};

/// Where default subnets come from: a base network and the prefix length carved from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    base: Ipv4Net,
    subnet_len: u8,
}

impl PoolConfig {
    /// A pool checked as `swarm init` checks its flags: `base` is a network address and
    /// `subnet_len` lies between the base's prefix length and 29.
    pub fn new(base: Ipv4Net, subnet_len: u8) -> Result<Self, NetworkError> {
        rules::network_address(base)?;
        rules::addr_pool_mask(base, subnet_len)?;
        Ok(PoolConfig { base, subnet_len })
    }

    /// Docker's: 10.0.0.0/8 in /24s.
    pub fn docker_default() -> Self {
        PoolConfig {
            base: rules::DEFAULT_ADDR_POOL,
            subnet_len: rules::DEFAULT_ADDR_POOL_MASK_LEN,
        }
    }

    pub fn base(&self) -> Ipv4Net {
        self.base
    }

    pub fn subnet_len(&self) -> u8 {
        self.subnet_len
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::docker_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The subnet breaks the rules `network create` checks.
    #[error(transparent)]
    Invalid(#[from] NetworkError),
    #[error(
        "the default address pool {base} has no free /{subnet_len} subnet left: remove unused \
         networks, or give the network a --subnet outside the pool"
    )]
    Exhausted { base: Ipv4Net, subnet_len: u8 },
    #[error(
        "subnet {subnet} overlaps subnet {other_subnet} of network {other_network}: choose a \
         --subnet that overlaps no other network's, or leave --subnet out to get a free one"
    )]
    Overlap {
        subnet: Ipv4Net,
        other_subnet: Ipv4Net,
        other_network: String,
    },
    #[error("subnet {0} is not in use by any network, so it cannot be released")]
    NotInUse(Ipv4Net),
}

/// One subnet in use and the network it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InUse {
    subnet: Ipv4Net,
    network: String,
}

/// The subnets in use across the cluster's networks, and the pool new ones come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetPool {
    config: PoolConfig,
    /// Keyed by the subnet's first address; the subnets are disjoint, so ordering by first
    /// address also orders them by last address.
    in_use: BTreeMap<u32, InUse>,
}

impl SubnetPool {
    pub fn new(config: PoolConfig) -> Self {
        SubnetPool {
            config,
            in_use: BTreeMap::new(),
        }
    }

    /// The pool a new leader rebuilds from the networks its store records, as
    /// `(network, subnet)` pairs. Overlapping records are an inconsistent store and reported.
    pub fn from_allocated(
        config: PoolConfig,
        subnets: impl IntoIterator<Item = (String, Ipv4Net)>,
    ) -> Result<Self, PoolError> {
        let mut pool = Self::new(config);
        for (network, subnet) in subnets {
            pool.reserve(&network, subnet)?;
        }
        Ok(pool)
    }

    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// The lowest free subnet of the pool for `network` (its name or ID, used in later
    /// errors about overlaps).
    pub fn allocate(&mut self, network: &str) -> Result<Ipv4Net, PoolError> {
        let size = 1u64 << (32 - u32::from(self.config.subnet_len));
        let (base_first, base_last) = bounds(self.config.base);
        let mut candidate = base_first;
        while candidate + size - 1 <= base_last {
            let candidate_last = candidate + size - 1;
            match self.last_starting_at_or_before(candidate_last) {
                Some(used) if bounds(used.subnet).1 >= candidate => {
                    // Jump past it, to the next boundary of the pool's subnet size (the base is
                    // aligned to it, so absolute alignment is the pool's).
                    candidate = (bounds(used.subnet).1 + 1).div_ceil(size) * size;
                }
                _ => {
                    let subnet = to_net(candidate, self.config.subnet_len);
                    self.insert(network, subnet);
                    return Ok(subnet);
                }
            }
        }
        Err(PoolError::Exhausted {
            base: self.config.base,
            subnet_len: self.config.subnet_len,
        })
    }

    /// Marks a user's `--subnet` (or a recorded one) as used by `network`.
    pub fn reserve(&mut self, network: &str, subnet: Ipv4Net) -> Result<(), PoolError> {
        rules::network_address(subnet)?;
        rules::overlay_subnet_size(subnet)?;
        if let Some(other) = self.overlapping(subnet) {
            return Err(PoolError::Overlap {
                subnet,
                other_subnet: other.subnet,
                other_network: other.network.clone(),
            });
        }
        self.insert(network, subnet);
        Ok(())
    }

    /// Frees a network's subnet; it must be exactly one in use.
    pub fn release(&mut self, subnet: Ipv4Net) -> Result<(), PoolError> {
        let first = u32::from(subnet.network());
        match self.in_use.get(&first) {
            Some(used) if used.subnet == subnet => {
                self.in_use.remove(&first);
                Ok(())
            }
            _ => Err(PoolError::NotInUse(subnet)),
        }
    }

    /// The network holding exactly this subnet.
    pub fn owner(&self, subnet: Ipv4Net) -> Option<&str> {
        self.in_use
            .get(&u32::from(subnet.network()))
            .filter(|used| used.subnet == subnet)
            .map(|used| used.network.as_str())
    }

    /// The subnets in use with their networks, lowest first.
    pub fn in_use(&self) -> impl Iterator<Item = (Ipv4Net, &str)> + '_ {
        self.in_use
            .values()
            .map(|used| (used.subnet, used.network.as_str()))
    }

    /// A subnet in use that shares an address with `subnet`. Subnets in use are disjoint, so
    /// of those starting at or before `subnet`'s last address the last one reaches furthest:
    /// if it does not reach `subnet`, none does.
    fn overlapping(&self, subnet: Ipv4Net) -> Option<&InUse> {
        let (first, last) = bounds(subnet);
        self.last_starting_at_or_before(last)
            .filter(|used| bounds(used.subnet).1 >= first)
    }

    fn last_starting_at_or_before(&self, addr: u64) -> Option<&InUse> {
        let addr = u32::try_from(addr).unwrap_or(u32::MAX);
        self.in_use.range(..=addr).next_back().map(|(_, used)| used)
    }

    fn insert(&mut self, network: &str, subnet: Ipv4Net) {
        self.in_use.insert(
            u32::from(subnet.network()),
            InUse {
                subnet,
                network: network.to_string(),
            },
        );
    }
}

/// First and last address as numbers, in u64 so that one past the last never overflows.
fn bounds(net: Ipv4Net) -> (u64, u64) {
    (
        u32::from(net.network()).into(),
        u32::from(net.broadcast()).into(),
    )
}

fn to_net(first: u64, prefix_len: u8) -> Ipv4Net {
    let addr = u32::try_from(first).unwrap_or(u32::MAX);
    Ipv4Net::new(addr.into(), prefix_len)
        .map(|n| n.trunc())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// A pool inside the test range 198.18.0.0/15.
    fn pool(base: &str, len: u8) -> SubnetPool {
        SubnetPool::new(PoolConfig::new(net(base), len).unwrap())
    }

    #[test]
    fn dockers_default_pool_is_10_slash_8_in_slash_24s() {
        // Arithmetic only: nothing is sent to these addresses.
        let mut p = SubnetPool::new(PoolConfig::default());
        assert_eq!(p.config().base(), net("10.0.0.0/8"));
        assert_eq!(p.config().subnet_len(), 24);
        assert_eq!(p.allocate("a"), Ok(net("10.0.0.0/24")));
        assert_eq!(p.allocate("b"), Ok(net("10.0.1.0/24")));
        p.reserve("c", net("10.0.2.0/23")).unwrap();
        assert_eq!(p.allocate("d"), Ok(net("10.0.4.0/24")));
    }

    #[test]
    fn pool_config_is_checked_as_swarm_init_checks_it() {
        assert!(PoolConfig::new(net("198.18.0.0/15"), 24).is_ok());
        assert!(PoolConfig::new(net("198.18.0.0/15"), 29).is_ok());
        assert!(PoolConfig::new(net("198.18.0.0/15"), 15).is_ok());
        assert_eq!(
            PoolConfig::new(net("198.18.0.0/15"), 30),
            Err(NetworkError::PoolMaskOutOfRange(30))
        );
        assert!(matches!(
            PoolConfig::new(net("198.18.0.0/15"), 8),
            Err(NetworkError::PoolMaskShorterThanPool { .. })
        ));
        assert!(matches!(
            PoolConfig::new(net("198.18.0.9/15"), 24),
            Err(NetworkError::SubnetNotNetworkAddress { .. })
        ));
    }

    #[test]
    fn hands_out_the_lowest_free_subnet() {
        let mut p = pool("198.18.0.0/16", 24);
        assert_eq!(p.allocate("a"), Ok(net("198.18.0.0/24")));
        assert_eq!(p.allocate("b"), Ok(net("198.18.1.0/24")));
        assert_eq!(p.allocate("c"), Ok(net("198.18.2.0/24")));
        p.release(net("198.18.1.0/24")).unwrap();
        // A network's subnet is freed only when nothing uses it any more: reuse it first.
        assert_eq!(p.allocate("d"), Ok(net("198.18.1.0/24")));
        assert_eq!(p.owner(net("198.18.1.0/24")), Some("d"));
        assert_eq!(p.owner(net("198.18.1.0/25")), None);
    }

    #[test]
    fn user_subnets_count_as_in_use() {
        let mut p = pool("198.18.0.0/16", 24);
        p.reserve("big", net("198.18.0.0/23")).unwrap();
        // A small one in the middle of a /24 makes the whole /24 unusable for the pool.
        p.reserve("small", net("198.18.2.16/28")).unwrap();
        assert_eq!(p.allocate("a"), Ok(net("198.18.3.0/24")));
        // Subnets outside the pool are allowed and do not disturb it.
        p.reserve("outside", net("198.19.7.0/24")).unwrap();
        assert_eq!(p.allocate("b"), Ok(net("198.18.4.0/24")));
        let listed: Vec<_> = p.in_use().map(|(s, n)| (s.to_string(), n)).collect();
        assert_eq!(
            listed,
            [
                ("198.18.0.0/23".to_string(), "big"),
                ("198.18.2.16/28".to_string(), "small"),
                ("198.18.3.0/24".to_string(), "a"),
                ("198.18.4.0/24".to_string(), "b"),
                ("198.19.7.0/24".to_string(), "outside"),
            ]
        );
    }

    #[test]
    fn the_pool_skips_a_larger_user_subnet_in_one_jump() {
        let mut p = pool("198.18.0.0/15", 29);
        p.reserve("big", net("198.18.0.0/16")).unwrap();
        assert_eq!(p.allocate("a"), Ok(net("198.19.0.0/29")));
        assert_eq!(p.allocate("b"), Ok(net("198.19.0.8/29")));
    }

    #[test]
    fn an_overlapping_user_subnet_is_refused_naming_the_other() {
        let mut p = pool("198.18.0.0/16", 24);
        p.allocate("backend").unwrap();
        let cases = [
            ("198.18.0.0/24", "198.18.0.0/24"),  // the same
            ("198.18.0.64/26", "198.18.0.0/24"), // inside it
            ("198.18.0.0/16", "198.18.0.0/24"),  // around it
        ];
        for (subnet, other) in cases {
            let err = p.reserve("new", net(subnet)).unwrap_err();
            assert_eq!(
                err,
                PoolError::Overlap {
                    subnet: net(subnet),
                    other_subnet: net(other),
                    other_network: "backend".into(),
                }
            );
            let text = err.to_string();
            assert!(text.contains(other) && text.contains("backend"), "{text}");
        }
        // Neighbours touching it on either side are fine.
        p.reserve("below", net("198.17.255.248/29")).unwrap();
        p.reserve("above", net("198.18.1.0/29")).unwrap();
        // A subnet reaching over several used ones names one of them.
        assert!(matches!(
            p.reserve("wide", net("198.18.0.0/23")),
            Err(PoolError::Overlap { .. })
        ));
    }

    #[test]
    fn bad_user_subnets_are_refused() {
        let mut p = pool("198.18.0.0/16", 24);
        assert!(matches!(
            p.reserve("x", net("198.18.9.5/24")),
            Err(PoolError::Invalid(
                NetworkError::SubnetNotNetworkAddress { .. }
            ))
        ));
        assert!(matches!(
            p.reserve("x", net("198.18.9.0/30")),
            Err(PoolError::Invalid(NetworkError::SubnetTooSmall { .. }))
        ));
        assert_eq!(p.in_use().count(), 0);
    }

    #[test]
    fn exhaustion_release_and_reallocation() {
        let mut p = pool("198.18.0.0/22", 24);
        let all: Vec<_> = (0..4)
            .map(|i| p.allocate(&format!("n{i}")).unwrap())
            .collect();
        assert_eq!(
            all,
            [
                "198.18.0.0/24",
                "198.18.1.0/24",
                "198.18.2.0/24",
                "198.18.3.0/24"
            ]
            .map(net)
        );
        let err = p.allocate("n4").unwrap_err();
        assert_eq!(
            err,
            PoolError::Exhausted {
                base: net("198.18.0.0/22"),
                subnet_len: 24
            }
        );
        assert!(err.to_string().contains("no free /24"), "{err}");
        p.release(net("198.18.2.0/24")).unwrap();
        assert_eq!(p.allocate("n5"), Ok(net("198.18.2.0/24")));
        assert_eq!(
            p.release(net("198.18.9.0/24")),
            Err(PoolError::NotInUse(net("198.18.9.0/24")))
        );
        // Releasing needs the exact subnet, not one inside it.
        assert_eq!(
            p.release(net("198.18.0.0/25")),
            Err(PoolError::NotInUse(net("198.18.0.0/25")))
        );
    }

    #[test]
    fn a_pool_as_large_as_one_subnet() {
        let mut p = pool("198.18.5.0/24", 24);
        assert_eq!(p.allocate("only"), Ok(net("198.18.5.0/24")));
        assert!(matches!(
            p.allocate("more"),
            Err(PoolError::Exhausted { .. })
        ));
    }

    #[test]
    fn whole_pool_every_subnet_once() {
        let mut p = pool("198.18.0.0/20", 24);
        let mut got: Vec<Ipv4Net> = Vec::new();
        while let Ok(s) = p.allocate("n") {
            assert!(got.iter().all(|g| !g.contains(&s) && !s.contains(g)));
            got.push(s);
        }
        assert_eq!(got.len(), 16);
    }

    #[test]
    fn a_rebuilt_pool_never_returns_a_recorded_subnet() {
        let config = PoolConfig::new(net("198.18.0.0/20"), 24).unwrap();
        let mut before = SubnetPool::new(config);
        for i in 0..10 {
            before.allocate(&format!("n{i}")).unwrap();
        }
        before.reserve("user", net("198.18.12.0/23")).unwrap();
        for s in ["198.18.1.0/24", "198.18.4.0/24"] {
            before.release(net(s)).unwrap();
        }
        let recorded: Vec<(String, Ipv4Net)> =
            before.in_use().map(|(s, n)| (n.to_string(), s)).collect();
        let mut after = SubnetPool::from_allocated(config, recorded.clone()).unwrap();
        assert_eq!(after, before);
        let mut fresh = Vec::new();
        while let Ok(s) = after.allocate("new") {
            for (_, r) in &recorded {
                assert!(
                    !r.contains(&s) && !s.contains(r),
                    "{s} overlaps recorded {r}"
                );
            }
            fresh.push(s);
        }
        assert_eq!(
            fresh,
            [
                "198.18.1.0/24",
                "198.18.4.0/24",
                "198.18.10.0/24",
                "198.18.11.0/24",
                "198.18.14.0/24",
                "198.18.15.0/24"
            ]
            .map(net)
        );
    }

    #[test]
    fn rebuilding_refuses_overlapping_records() {
        let config = PoolConfig::new(net("198.18.0.0/16"), 24).unwrap();
        let err = SubnetPool::from_allocated(
            config,
            [
                ("a".to_string(), net("198.18.0.0/24")),
                ("b".to_string(), net("198.18.0.128/25")),
            ],
        )
        .unwrap_err();
        assert!(matches!(err, PoolError::Overlap { other_network, .. } if other_network == "a"));
    }
}
