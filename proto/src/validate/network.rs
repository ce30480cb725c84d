//! The offline checks of `shoal network create` (and of `swarm init --default-addr-pool`), so
//! that the CLI refuses a bad flag before it dials the daemon and the control API refuses the
//! same input with the same words.
//!
//! The rules are Docker's, taken from where Docker enforces them for swarm-scoped networks:
//! - the name: swarmkit's `controlapi.validateAnnotations` (a DNS label: letters and digits,
//!   `-` and `_` inside, at most 63 characters; no dots, because the name becomes the
//!   `SERVICE.NETWORK` DNS suffix), and moby's refusal of the pre-defined names;
//! - the subnet: moby's `validateIpamConfig` (`invalid subnet 198.18.1.5/24: it should be
//!   198.18.1.0/24`), and the smallest overlay subnet, /29, from moby's
//!   `validateDefaultAddrPool` (a /30 leaves too few addresses once the gateway and the load
//!   balancer's addresses are taken);
//! - the gateway: inside the subnet (moby's `validateAddress`), and never the network or the
//!   broadcast address, which libnetwork's IPAM reserves so it would refuse them later anyway;
//!   a gateway needs a subnet (docker/cli: "every ip-range or gateway must have a
//!   corresponding subnet");
//! - labels: docker/cli's `ValidateLabel` (`KEY=VALUE` or `KEY`, the key non-empty and
//!   without whitespace), and swarmkit's refusal of its own `com.docker.swarm.predefined`.
//!
//! Only IPv4 and the `overlay` driver exist for now; both refusals say so.
//!
//! Everything is pure. Checks against the cluster (a duplicate name, a subnet overlapping
//! another network's) need the store and belong to the manager's allocator.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

/// The only driver Shoal has; `--driver` may be omitted.
pub const OVERLAY_DRIVER: &str = "overlay";

/// The longest prefix an overlay subnet may have (8 addresses), as Docker's
/// `--default-addr-pool-mask-length` limit.
pub const MAX_OVERLAY_PREFIX_LEN: u8 = 29;

/// Docker's default address pool for swarm-scoped networks and the size carved from it.
pub const DEFAULT_ADDR_POOL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8);
pub const DEFAULT_ADDR_POOL_MASK_LEN: u8 = 24;

/// Names Docker keeps for its built-in networks (`docker network create bridge` is refused).
const PREDEFINED_NAMES: [&str; 4] = ["bridge", "host", "none", "default"];

const MAX_NAME_LEN: usize = 63;

/// The label swarmkit keeps for the networks it creates itself (`controlapi.validateNetworkSpec`).
const PREDEFINED_LABEL: &str = "com.docker.swarm.predefined";

/// Why a network request was refused. The messages are the ones users see, so each says what
/// was wrong and what to give instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("a network needs a name: `shoal network create [OPTIONS] NAME`")]
    NoName,
    #[error(
        "invalid network name {0:?}: use letters, digits, '-' and '_', starting and ending with \
         a letter or digit (the name is used in DNS names)"
    )]
    InvalidName(String),
    #[error("invalid network name {0:?}: use at most 63 characters (a DNS label's limit)")]
    NameTooLong(String),
    #[error("{0} is a pre-defined network and cannot be created: choose another name")]
    PredefinedName(String),
    #[error(
        "network driver {0:?} is not supported: Shoal networks use the overlay driver (pass \
         --driver overlay or leave --driver out)"
    )]
    UnsupportedDriver(String),
    #[error("invalid subnet {0:?}: expected an IPv4 CIDR such as 198.18.1.0/24")]
    InvalidSubnet(String),
    #[error("invalid subnet {0}: only IPv4 subnets are supported for now, e.g. 198.18.1.0/24")]
    Ipv6Subnet(String),
    #[error(
        "invalid subnet {given}: it should be {expected} (the network address, host bits zero)"
    )]
    SubnetNotNetworkAddress { given: String, expected: String },
    #[error(
        "subnet {subnet} is too small: an overlay network needs at least a /29 (8 addresses); \
         use a prefix length of 29 or less, e.g. {suggestion}"
    )]
    SubnetTooSmall {
        subnet: Ipv4Net,
        suggestion: Ipv4Net,
    },
    #[error("--gateway {0} needs --subnet: every gateway must have a corresponding subnet")]
    GatewayWithoutSubnet(String),
    #[error("invalid gateway {0:?}: expected an IPv4 address such as 198.18.1.1")]
    InvalidGateway(String),
    #[error("invalid gateway {gateway}: subnet {subnet} does not contain it; pick an address inside the subnet")]
    GatewayOutsideSubnet { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error(
        "invalid gateway {gateway}: it is the network address of {subnet}; use a host address \
         such as {suggestion}"
    )]
    GatewayIsNetworkAddress {
        gateway: Ipv4Addr,
        subnet: Ipv4Net,
        suggestion: Ipv4Addr,
    },
    #[error(
        "invalid gateway {gateway}: it is the broadcast address of {subnet}; use a host address \
         such as {suggestion}"
    )]
    GatewayIsBroadcast {
        gateway: Ipv4Addr,
        subnet: Ipv4Net,
        suggestion: Ipv4Addr,
    },
    #[error("invalid label {0:?}: the name before '=' is empty (expected KEY=VALUE)")]
    EmptyLabelKey(String),
    #[error("invalid label {0:?}: the name before '=' contains whitespace (expected KEY=VALUE)")]
    LabelKeyWhitespace(String),
    #[error(
        "label {0} is for networks the swarm creates itself and cannot be given by users: \
         choose another label name"
    )]
    ReservedLabel(String),
    #[error(
        "--default-addr-pool-mask-length {0} is out of range: use 29 or less (a /29 is the \
         smallest overlay subnet)"
    )]
    PoolMaskOutOfRange(u8),
    #[error(
        "--default-addr-pool-mask-length {mask_len} is shorter than the pool {pool}'s own \
         prefix: the subnets carved from a pool must fit in it; use {min} to 29",
        min = pool.prefix_len()
    )]
    PoolMaskShorterThanPool { pool: Ipv4Net, mask_len: u8 },
}

/// A network create request as the user typed it (flags are strings until checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRequest<'a> {
    pub name: &'a str,
    /// Empty means the default, `overlay`.
    pub driver: &'a str,
    pub subnet: Option<&'a str>,
    pub gateway: Option<&'a str>,
    /// `KEY=VALUE` or `KEY`, as `--label` takes them.
    pub labels: &'a [String],
}

/// A request that passed every offline check, parsed. The subnet and gateway are what the
/// user gave; when absent the allocator chooses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedNetwork {
    pub name: String,
    pub driver: &'static str,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
}

/// Every check, in the order the flags are read: name, driver, subnet, gateway, labels.
pub fn network_create(req: &NetworkRequest<'_>) -> Result<CheckedNetwork, NetworkError> {
    network_name(req.name)?;
    let driver = driver(req.driver)?;
    let subnet = req.subnet.map(overlay_subnet).transpose()?;
    let gateway = match (req.gateway, subnet) {
        (Some(gw), Some(subnet)) => Some(gateway(gw, subnet)?),
        (Some(gw), None) => return Err(NetworkError::GatewayWithoutSubnet(gw.to_string())),
        (None, _) => None,
    };
    let labels = req
        .labels
        .iter()
        .map(|l| label(l))
        .collect::<Result<_, _>>()?;
    Ok(CheckedNetwork {
        name: req.name.to_string(),
        driver,
        subnet,
        gateway,
        labels,
    })
}

/// swarmkit's rule for object names, plus Docker's reserved network names.
pub fn network_name(name: &str) -> Result<(), NetworkError> {
    if name.is_empty() {
        return Err(NetworkError::NoName);
    }
    let inner_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !inner_ok || !ends_ok {
        return Err(NetworkError::InvalidName(name.to_string()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NetworkError::NameTooLong(name.to_string()));
    }
    if PREDEFINED_NAMES.contains(&name) {
        return Err(NetworkError::PredefinedName(name.to_string()));
    }
    Ok(())
}

/// The driver to record: `overlay`, whether given or left out.
pub fn driver(driver: &str) -> Result<&'static str, NetworkError> {
    match driver {
        "" | OVERLAY_DRIVER => Ok(OVERLAY_DRIVER),
        other => Err(NetworkError::UnsupportedDriver(other.to_string())),
    }
}

/// An IPv4 CIDR written as its network address (`198.18.1.0/24`, not `198.18.1.5/24`):
/// Docker refuses the latter rather than guess whether the user meant the subnet or a host.
pub fn subnet(text: &str) -> Result<Ipv4Net, NetworkError> {
    let parsed: IpNet = text
        .trim()
        .parse()
        .map_err(|_| NetworkError::InvalidSubnet(text.to_string()))?;
    let IpNet::V4(net) = parsed else {
        return Err(NetworkError::Ipv6Subnet(text.to_string()));
    };
    network_address(net)?;
    Ok(net)
}

/// `net` is written as its network address, host bits zero.
pub fn network_address(net: Ipv4Net) -> Result<(), NetworkError> {
    if net != net.trunc() {
        return Err(NetworkError::SubnetNotNetworkAddress {
            given: net.to_string(),
            expected: net.trunc().to_string(),
        });
    }
    Ok(())
}

/// [`subnet`], and large enough for an overlay network.
pub fn overlay_subnet(text: &str) -> Result<Ipv4Net, NetworkError> {
    let net = subnet(text)?;
    overlay_subnet_size(net)?;
    Ok(net)
}

/// An overlay subnet holds at least a /29.
pub fn overlay_subnet_size(net: Ipv4Net) -> Result<(), NetworkError> {
    if net.prefix_len() > MAX_OVERLAY_PREFIX_LEN {
        let suggestion = Ipv4Net::new(net.network(), MAX_OVERLAY_PREFIX_LEN)
            .map(|n| n.trunc())
            .unwrap_or(net);
        return Err(NetworkError::SubnetTooSmall {
            subnet: net,
            suggestion,
        });
    }
    Ok(())
}

/// A gateway address, inside `subnet` and usable by a host.
pub fn gateway(text: &str, subnet: Ipv4Net) -> Result<Ipv4Addr, NetworkError> {
    let addr: IpAddr = text
        .trim()
        .parse()
        .map_err(|_| NetworkError::InvalidGateway(text.to_string()))?;
    let IpAddr::V4(addr) = addr else {
        return Err(NetworkError::InvalidGateway(text.to_string()));
    };
    gateway_in_subnet(addr, subnet)?;
    Ok(addr)
}

/// The gateway is a host address of the subnet: not outside it, not its network address and
/// not its broadcast address. The allocator checks recorded gateways with the same rule.
pub fn gateway_in_subnet(gateway: Ipv4Addr, subnet: Ipv4Net) -> Result<(), NetworkError> {
    let subnet = subnet.trunc();
    if !subnet.contains(&gateway) {
        return Err(NetworkError::GatewayOutsideSubnet { gateway, subnet });
    }
    // A /31 or /32 has no network or broadcast address (RFC 3021); overlays are at most /29,
    // but the rule stays right for any subnet.
    if subnet.prefix_len() >= 31 {
        return Ok(());
    }
    let first_host = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    let last_host = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1);
    if gateway == subnet.network() {
        return Err(NetworkError::GatewayIsNetworkAddress {
            gateway,
            subnet,
            suggestion: first_host,
        });
    }
    if gateway == subnet.broadcast() {
        return Err(NetworkError::GatewayIsBroadcast {
            gateway,
            subnet,
            suggestion: last_host,
        });
    }
    Ok(())
}

/// `KEY=VALUE`, or `KEY` for an empty value, as docker's `--label`.
pub fn label(text: &str) -> Result<(String, String), NetworkError> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    // docker/cli trims leading whitespace from the key and keeps everything else as given.
    let key = key.trim_start();
    if key.is_empty() {
        return Err(NetworkError::EmptyLabelKey(text.to_string()));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(NetworkError::LabelKeyWhitespace(text.to_string()));
    }
    if key == PREDEFINED_LABEL {
        return Err(NetworkError::ReservedLabel(key.to_string()));
    }
    Ok((key.to_string(), value.to_string()))
}

/// `swarm init --default-addr-pool CIDR --default-addr-pool-mask-length N`: the pool is an
/// IPv4 network address ("" means Docker's default, 10.0.0.0/8), and N (0 means Docker's
/// default, 24) lies between the pool's own prefix and 29, as moby's `validateDefaultAddrPool`
/// requires.
pub fn default_addr_pool(pool: &str, mask_len: u8) -> Result<(Ipv4Net, u8), NetworkError> {
    let pool = if pool.is_empty() {
        DEFAULT_ADDR_POOL
    } else {
        subnet(pool)?
    };
    let mask_len = if mask_len == 0 {
        DEFAULT_ADDR_POOL_MASK_LEN
    } else {
        mask_len
    };
    addr_pool_mask(pool, mask_len)?;
    Ok((pool, mask_len))
}

/// The subnets carved from `pool` are `/mask_len`: no longer than /29 and no shorter than the
/// pool itself.
pub fn addr_pool_mask(pool: Ipv4Net, mask_len: u8) -> Result<(), NetworkError> {
    if mask_len > MAX_OVERLAY_PREFIX_LEN {
        return Err(NetworkError::PoolMaskOutOfRange(mask_len));
    }
    if mask_len < pool.prefix_len() {
        return Err(NetworkError::PoolMaskShorterThanPool { pool, mask_len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn names_follow_swarmkits_rule() {
        for good in ["backend", "web-net", "a", "net_2", "A1", &"x".repeat(63)] {
            assert_eq!(network_name(good), Ok(()), "{good:?} refused");
        }
        assert_eq!(network_name(""), Err(NetworkError::NoName));
        for bad in [
            "-net", "net-", "_net", "net_", "my.net", "my net", "nét", "a/b",
        ] {
            assert_eq!(
                network_name(bad),
                Err(NetworkError::InvalidName(bad.to_string())),
                "{bad:?}"
            );
        }
        let long = "x".repeat(64);
        assert_eq!(network_name(&long), Err(NetworkError::NameTooLong(long)));
    }

    #[test]
    fn predefined_names_are_refused() {
        for name in PREDEFINED_NAMES {
            let err = network_name(name).unwrap_err();
            assert_eq!(err, NetworkError::PredefinedName(name.to_string()));
            assert!(err.to_string().contains("pre-defined"), "{err}");
        }
    }

    #[test]
    fn only_the_overlay_driver() {
        assert_eq!(driver(""), Ok("overlay"));
        assert_eq!(driver("overlay"), Ok("overlay"));
        for bad in ["bridge", "host", "macvlan", "Overlay"] {
            let err = driver(bad).unwrap_err();
            assert_eq!(err, NetworkError::UnsupportedDriver(bad.to_string()));
            assert!(err.to_string().contains("--driver overlay"), "{err}");
        }
    }

    #[test]
    fn subnets_parse_as_ipv4_network_addresses() {
        assert_eq!(subnet("198.18.1.0/24"), Ok(net("198.18.1.0/24")));
        assert_eq!(subnet(" 198.18.0.0/15 "), Ok(net("198.18.0.0/15")));
        for bad in [
            "",
            "198.18.1.0",
            "198.18.1.0/33",
            "198.18.1/24",
            "banana",
            "198.18.1.0/x",
        ] {
            assert_eq!(
                subnet(bad),
                Err(NetworkError::InvalidSubnet(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            subnet("2001:db8::/64"),
            Err(NetworkError::Ipv6Subnet("2001:db8::/64".into()))
        );
    }

    #[test]
    fn a_host_address_as_subnet_is_refused_with_the_right_form() {
        let err = subnet("198.18.1.5/24").unwrap_err();
        assert_eq!(
            err,
            NetworkError::SubnetNotNetworkAddress {
                given: "198.18.1.5/24".into(),
                expected: "198.18.1.0/24".into(),
            }
        );
        assert!(
            err.to_string().contains("it should be 198.18.1.0/24"),
            "{err}"
        );
    }

    #[test]
    fn overlay_subnets_hold_at_least_a_slash_29() {
        assert_eq!(overlay_subnet("198.18.1.8/29"), Ok(net("198.18.1.8/29")));
        assert_eq!(overlay_subnet("198.18.0.0/16"), Ok(net("198.18.0.0/16")));
        for (small, suggestion) in [
            ("198.18.1.4/30", "198.18.1.0/29"),
            ("198.18.1.6/31", "198.18.1.0/29"),
            ("198.18.1.7/32", "198.18.1.0/29"),
        ] {
            let err = overlay_subnet(small).unwrap_err();
            assert_eq!(
                err,
                NetworkError::SubnetTooSmall {
                    subnet: net(small),
                    suggestion: net(suggestion),
                }
            );
            assert!(err.to_string().contains("at least a /29"), "{err}");
        }
    }

    #[test]
    fn gateways_are_host_addresses_inside_the_subnet() {
        let s = net("198.18.1.0/24");
        assert_eq!(gateway("198.18.1.1", s), Ok(ip("198.18.1.1")));
        assert_eq!(gateway("198.18.1.254", s), Ok(ip("198.18.1.254")));
        for bad in ["", "198.18.1", "198.18.1.1/24", "2001:db8::1", "gateway"] {
            assert_eq!(
                gateway(bad, s),
                Err(NetworkError::InvalidGateway(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            gateway("198.18.2.1", s),
            Err(NetworkError::GatewayOutsideSubnet {
                gateway: ip("198.18.2.1"),
                subnet: s
            })
        );
        assert_eq!(
            gateway("198.18.1.0", s),
            Err(NetworkError::GatewayIsNetworkAddress {
                gateway: ip("198.18.1.0"),
                subnet: s,
                suggestion: ip("198.18.1.1"),
            })
        );
        assert_eq!(
            gateway("198.18.1.255", s),
            Err(NetworkError::GatewayIsBroadcast {
                gateway: ip("198.18.1.255"),
                subnet: s,
                suggestion: ip("198.18.1.254"),
            })
        );
    }

    #[test]
    fn labels_are_key_value_or_key() {
        assert_eq!(label("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(label("flag"), Ok(("flag".into(), String::new())));
        assert_eq!(label(" env=x y"), Ok(("env".into(), "x y".into())));
        for bad in ["", "=value", "  =value"] {
            assert_eq!(label(bad), Err(NetworkError::EmptyLabelKey(bad.into())));
        }
        assert_eq!(
            label("my key=v"),
            Err(NetworkError::LabelKeyWhitespace("my key=v".into()))
        );
        assert_eq!(
            label("com.docker.swarm.predefined=true"),
            Err(NetworkError::ReservedLabel(
                "com.docker.swarm.predefined".into()
            ))
        );
    }

    #[test]
    fn a_whole_request_is_checked_and_parsed() {
        let labels = vec!["env=prod".to_string(), "team".to_string()];
        let req = NetworkRequest {
            name: "backend",
            driver: "",
            subnet: Some("198.18.4.0/24"),
            gateway: Some("198.18.4.254"),
            labels: &labels,
        };
        let checked = network_create(&req).unwrap();
        assert_eq!(checked.name, "backend");
        assert_eq!(checked.driver, "overlay");
        assert_eq!(checked.subnet, Some(net("198.18.4.0/24")));
        assert_eq!(checked.gateway, Some(ip("198.18.4.254")));
        assert_eq!(checked.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(checked.labels.get("team").map(String::as_str), Some(""));

        let bare = network_create(&NetworkRequest {
            name: "plain",
            ..Default::default()
        })
        .unwrap();
        assert_eq!((bare.subnet, bare.gateway), (None, None));
    }

    #[test]
    fn a_request_reports_its_first_bad_field() {
        let ok = NetworkRequest {
            name: "backend",
            subnet: Some("198.18.4.0/24"),
            ..Default::default()
        };
        let check = |req: NetworkRequest<'_>| network_create(&req).unwrap_err();
        assert_eq!(
            check(NetworkRequest {
                name: "",
                ..ok.clone()
            }),
            NetworkError::NoName
        );
        assert!(matches!(
            check(NetworkRequest {
                driver: "bridge",
                ..ok.clone()
            }),
            NetworkError::UnsupportedDriver(_)
        ));
        assert!(matches!(
            check(NetworkRequest {
                subnet: Some("198.18.4.0/30"),
                ..ok.clone()
            }),
            NetworkError::SubnetTooSmall { .. }
        ));
        assert!(matches!(
            check(NetworkRequest {
                gateway: Some("198.18.5.1"),
                ..ok.clone()
            }),
            NetworkError::GatewayOutsideSubnet { .. }
        ));
        assert_eq!(
            check(NetworkRequest {
                subnet: None,
                gateway: Some("198.18.4.1"),
                ..ok.clone()
            }),
            NetworkError::GatewayWithoutSubnet("198.18.4.1".into())
        );
        let bad_labels = vec!["=x".to_string()];
        assert!(matches!(
            check(NetworkRequest {
                labels: &bad_labels,
                ..ok
            }),
            NetworkError::EmptyLabelKey(_)
        ));
    }

    #[test]
    fn default_addr_pool_follows_swarm_init() {
        assert_eq!(
            default_addr_pool("", 0),
            Ok((DEFAULT_ADDR_POOL, DEFAULT_ADDR_POOL_MASK_LEN))
        );
        assert_eq!(
            default_addr_pool("10.0.0.0/8", 0),
            Ok((DEFAULT_ADDR_POOL, 24))
        );
        assert_eq!(
            default_addr_pool("198.18.0.0/15", 26),
            Ok((net("198.18.0.0/15"), 26))
        );
        assert_eq!(
            default_addr_pool("198.18.0.0/15", 29),
            Ok((net("198.18.0.0/15"), 29))
        );
        assert_eq!(
            default_addr_pool("198.18.0.0/15", 30),
            Err(NetworkError::PoolMaskOutOfRange(30))
        );
        let err = default_addr_pool("198.18.0.0/15", 14).unwrap_err();
        assert_eq!(
            err,
            NetworkError::PoolMaskShorterThanPool {
                pool: net("198.18.0.0/15"),
                mask_len: 14
            }
        );
        assert!(err.to_string().contains("use 15 to 29"), "{err}");
        assert!(matches!(
            default_addr_pool("198.18.0.1/15", 24),
            Err(NetworkError::SubnetNotNetworkAddress { .. })
        ));
    }
}
