//! The checks on a service's endpoint spec (`--publish`, `--endpoint-mode`) that need no
//! cluster state: port numbers, protocols and modes known, no port published twice in one
//! spec, and docker's rule that `dnsrr` services have no routing-mesh ports. Whether a port is
//! free cluster-wide is the manager's allocator's question.

use crate::{endpoint_spec, port_config, EndpointSpec, PortConfig, ServiceSpec};

/// The highest TCP/UDP port.
pub const MAX_PORT: u32 = 65_535;

/// docker's range for published ports chosen by the swarm (`--publish 80`).
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u32> = 30_000..=32_767;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid --publish: no target port given; the target port is the task's, e.g. `--publish 8080:80`")]
    NoTarget,
    #[error("invalid port {0}: ports are 1 to 65535")]
    PortOutOfRange(u32),
    #[error("invalid protocol for port {port} (value {value}): the protocols are tcp and udp")]
    UnknownProtocol { port: u32, value: i32 },
    #[error(
        "invalid publish mode for port {port} (value {value}): the modes are ingress and host"
    )]
    UnknownPublishMode { port: u32, value: i32 },
    #[error("invalid endpoint mode (value {0}): the modes are vip and dnsrr")]
    UnknownEndpointMode(i32),
    #[error("port {port}/{protocol} is published more than once in this service")]
    PublishedTwice { port: u32, protocol: &'static str },
    #[error(
        "port published with ingress mode can't be used with dnsrr mode (port {port}/{protocol}): \
         publish it with mode=host, or use --endpoint-mode vip"
    )]
    IngressWithDnsrr { port: u32, protocol: &'static str },
    #[error(
        "host-mode port {target}/{protocol} has no published port: a host-mode port is bound on \
         the node as given, so give one (mode=host,published=P,target={target})"
    )]
    HostWithoutPublished { target: u32, protocol: &'static str },
}

/// "tcp" or "udp" (the name docker shows), "?" for a value no protocol has.
pub fn protocol_name(value: i32) -> &'static str {
    match port_config::Protocol::try_from(value) {
        Ok(port_config::Protocol::Tcp) => "tcp",
        Ok(port_config::Protocol::Udp) => "udp",
        Err(_) => "?",
    }
}

/// Whether a port goes through the routing mesh (and so is unique cluster-wide).
pub fn is_ingress(p: &PortConfig) -> bool {
    p.publish_mode == port_config::PublishMode::Ingress as i32
}

/// The endpoint spec is well formed (an absent one is VIP mode with no ports).
pub fn endpoint(spec: &ServiceSpec) -> Result<(), EndpointError> {
    let Some(e) = spec.endpoint.as_ref() else {
        return Ok(());
    };
    let mode = endpoint_spec::Mode::try_from(e.mode)
        .map_err(|_| EndpointError::UnknownEndpointMode(e.mode))?;
    for (i, p) in e.ports.iter().enumerate() {
        port(p)?;
        // The swarm picks ports only for the routing mesh, where they are unique cluster-wide;
        // a host-mode port is bound on each node that runs a task, so it must be known.
        if !is_ingress(p) && p.published_port == 0 {
            return Err(EndpointError::HostWithoutPublished {
                target: p.target_port,
                protocol: protocol_name(p.protocol),
            });
        }
        if mode == endpoint_spec::Mode::Dnsrr && is_ingress(p) {
            return Err(EndpointError::IngressWithDnsrr {
                port: p.published_port,
                protocol: protocol_name(p.protocol),
            });
        }
        let twice = p.published_port != 0
            && e.ports[..i]
                .iter()
                .any(|o| o.published_port == p.published_port && o.protocol == p.protocol);
        if twice {
            return Err(EndpointError::PublishedTwice {
                port: p.published_port,
                protocol: protocol_name(p.protocol),
            });
        }
    }
    Ok(())
}

/// One port: a target in range, a published port in range or 0 (chosen by the swarm), a known
/// protocol and publish mode.
pub fn port(p: &PortConfig) -> Result<(), EndpointError> {
    if p.target_port == 0 {
        return Err(EndpointError::NoTarget);
    }
    for n in [p.target_port, p.published_port] {
        if n > MAX_PORT {
            return Err(EndpointError::PortOutOfRange(n));
        }
    }
    if port_config::Protocol::try_from(p.protocol).is_err() {
        return Err(EndpointError::UnknownProtocol {
            port: p.target_port,
            value: p.protocol,
        });
    }
    if port_config::PublishMode::try_from(p.publish_mode).is_err() {
        return Err(EndpointError::UnknownPublishMode {
            port: p.target_port,
            value: p.publish_mode,
        });
    }
    Ok(())
}

/// Whether the service gets VIPs (`vip` mode, the default).
pub fn wants_vips(spec: &ServiceSpec) -> bool {
    spec.endpoint
        .as_ref()
        .is_none_or(|e| e.mode == endpoint_spec::Mode::Vip as i32)
}

/// The spec's ports (none when there is no endpoint spec).
pub fn ports(spec: &ServiceSpec) -> &[PortConfig] {
    spec.endpoint
        .as_ref()
        .map_or(&[], |e: &EndpointSpec| &e.ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(published: u32, target: u32) -> PortConfig {
        PortConfig {
            target_port: target,
            published_port: published,
            ..Default::default()
        }
    }

    fn spec(mode: i32, ports: Vec<PortConfig>) -> ServiceSpec {
        ServiceSpec {
            endpoint: Some(EndpointSpec { mode, ports }),
            ..Default::default()
        }
    }

    const VIP: i32 = endpoint_spec::Mode::Vip as i32;
    const DNSRR: i32 = endpoint_spec::Mode::Dnsrr as i32;
    const UDP: i32 = port_config::Protocol::Udp as i32;
    const HOST: i32 = port_config::PublishMode::Host as i32;

    #[test]
    fn good_specs_pass() {
        assert_eq!(endpoint(&ServiceSpec::default()), Ok(()));
        assert!(wants_vips(&ServiceSpec::default()));
        let same_port_other_protocol = PortConfig {
            protocol: UDP,
            ..tcp(8080, 80)
        };
        let s = spec(
            VIP,
            vec![
                tcp(8080, 80),
                same_port_other_protocol,
                tcp(0, 81),
                tcp(0, 82),
            ],
        );
        assert_eq!(endpoint(&s), Ok(()));
        let host = PortConfig {
            publish_mode: HOST,
            ..tcp(8080, 80)
        };
        let s = spec(DNSRR, vec![host]);
        assert_eq!(endpoint(&s), Ok(()));
        assert!(!wants_vips(&s));
    }

    #[test]
    fn bad_ports_are_refused() {
        let check = |p: PortConfig| endpoint(&spec(VIP, vec![p])).unwrap_err();
        assert_eq!(check(tcp(8080, 0)), EndpointError::NoTarget);
        assert_eq!(
            check(tcp(8080, 70_000)),
            EndpointError::PortOutOfRange(70_000)
        );
        assert_eq!(
            check(tcp(70_000, 80)),
            EndpointError::PortOutOfRange(70_000)
        );
        let err = check(PortConfig {
            protocol: 7,
            ..tcp(8080, 80)
        });
        assert_eq!(err, EndpointError::UnknownProtocol { port: 80, value: 7 });
        assert!(err.to_string().contains("tcp and udp"), "{err}");
        let err = check(PortConfig {
            publish_mode: 5,
            ..tcp(8080, 80)
        });
        assert!(err.to_string().contains("ingress and host"), "{err}");
        assert_eq!(
            check(tcp(0, 70_000)).to_string(),
            "invalid port 70000: ports are 1 to 65535"
        );
    }

    #[test]
    fn bad_modes_and_duplicates_are_refused() {
        assert_eq!(
            endpoint(&spec(9, vec![])),
            Err(EndpointError::UnknownEndpointMode(9))
        );
        let err = endpoint(&spec(VIP, vec![tcp(8080, 80), tcp(8080, 81)])).unwrap_err();
        assert_eq!(
            err,
            EndpointError::PublishedTwice {
                port: 8080,
                protocol: "tcp"
            }
        );
        let err = endpoint(&spec(DNSRR, vec![tcp(8080, 80)])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("port published with ingress mode can't be used with dnsrr mode"),
            "{err}"
        );
    }

    #[test]
    fn host_mode_needs_a_published_port() {
        let host = PortConfig {
            publish_mode: HOST,
            ..tcp(0, 80)
        };
        let err = endpoint(&spec(VIP, vec![host])).unwrap_err();
        assert_eq!(
            err,
            EndpointError::HostWithoutPublished {
                target: 80,
                protocol: "tcp"
            }
        );
        assert!(
            err.to_string().contains("mode=host,published=P,target=80"),
            "{err}"
        );
    }
}
