//! `--publish`, `--publish-add`, `--publish-rm` and `--endpoint-mode`: parsing them, applying
//! them to a spec, and showing a service's endpoint as docker does (`service ls` PORTS,
//! `service inspect`'s `Endpoint`, the `--pretty` lines).

use serde_json::{json, Value};
use shoal_proto::validate::endpoint::{self as rules, is_ingress, protocol_name};
use shoal_proto::{endpoint_spec, port_config, Endpoint, EndpointSpec, PortConfig, ServiceSpec};

use crate::output::Pretty;

/// `--endpoint-mode vip|dnsrr`.
pub fn parse_endpoint_mode(s: &str) -> Result<endpoint_spec::Mode, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "vip" => Ok(endpoint_spec::Mode::Vip),
        "dnsrr" => Ok(endpoint_spec::Mode::Dnsrr),
        _ => Err(format!(
            "invalid endpoint mode {s:?}: the modes are vip and dnsrr"
        )),
    }
}

/// `--publish`: the short form `[PUBLISHED:]TARGET[/PROTOCOL]` (`8080:80`, `80`, `53:53/udp`)
/// or the long form `mode=ingress|host,published=P,target=T,protocol=tcp|udp,name=N`.
pub fn parse_publish(s: &str) -> Result<PortConfig, String> {
    let bad = |why: String| format!("invalid --publish value {s:?}: {why}");
    let p = if s.contains('=') {
        parse_long(s).map_err(bad)?
    } else {
        parse_short(s).map_err(bad)?
    };
    rules::port(&p).map_err(|e| bad(e.to_string()))?;
    Ok(p)
}

fn parse_short(s: &str) -> Result<PortConfig, String> {
    let (ports, protocol) = match s.split_once('/') {
        Some((ports, protocol)) => (ports, parse_protocol(protocol)?),
        None => (s, port_config::Protocol::Tcp),
    };
    let (published, target) =
        match ports.split(':').collect::<Vec<_>>()[..] {
            [target] => (0, parse_port(target)?),
            [published, target] => (parse_port(published)?, parse_port(target)?),
            _ => return Err(
                "expected [PUBLISHED:]TARGET[/PROTOCOL] (binding to one host IP is not supported)"
                    .into(),
            ),
        };
    Ok(PortConfig {
        protocol: protocol as i32,
        target_port: target,
        published_port: published,
        ..Default::default()
    })
}

fn parse_long(s: &str) -> Result<PortConfig, String> {
    let mut p = PortConfig::default();
    for field in s.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not KEY=VALUE"))?;
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "mode" => {
                p.publish_mode = match value.to_ascii_lowercase().as_str() {
                    "ingress" => port_config::PublishMode::Ingress,
                    "host" => port_config::PublishMode::Host,
                    _ => {
                        return Err(format!(
                            "invalid publish mode {value:?}: the modes are ingress and host"
                        ))
                    }
                } as i32
            }
            "published" => p.published_port = parse_port(value)?,
            "target" => p.target_port = parse_port(value)?,
            "protocol" => p.protocol = parse_protocol(value)? as i32,
            "name" => p.name = value.to_string(),
            other => {
                return Err(format!(
                    "unknown key {other:?} (mode=, published=, target=, protocol= and name= are \
                     supported)"
                ))
            }
        }
    }
    if p.target_port == 0 {
        return Err("target= is required".into());
    }
    Ok(p)
}

fn parse_protocol(s: &str) -> Result<port_config::Protocol, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(port_config::Protocol::Tcp),
        "udp" => Ok(port_config::Protocol::Udp),
        _ => Err(format!(
            "invalid protocol {s:?}: the protocols are tcp and udp"
        )),
    }
}

/// A port number 1-65535 (an explicit 0 is refused: leave the published port out to have
/// the swarm choose one).
fn parse_port(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid port {s:?}: a port is a number from 1 to 65535"))?;
    if n == 0 || n > rules::MAX_PORT {
        return Err(format!("invalid port {n}: ports are 1 to 65535"));
    }
    Ok(n)
}

/// `--publish-rm`: `PORT[/PROTOCOL]` (tcp unless said), or the long form.
pub fn parse_publish_rm(s: &str) -> Result<PortConfig, String> {
    if s.contains('=') {
        return parse_publish(s);
    }
    let bad = |why: String| format!("invalid --publish-rm value {s:?}: {why}");
    let (port, protocol) = match s.split_once('/') {
        Some((port, protocol)) => (port, parse_protocol(protocol).map_err(bad)?),
        None => (s, port_config::Protocol::Tcp),
    };
    Ok(PortConfig {
        protocol: protocol as i32,
        target_port: parse_port(port).map_err(bad)?,
        ..Default::default()
    })
}

/// Whether `--publish-rm` value `rm` names `port`: by its published port or its target port
/// (docker's `--publish-rm 8080`), with the same protocol.
fn removes(rm: &PortConfig, port: &PortConfig) -> bool {
    if rm.protocol != port.protocol {
        return false;
    }
    if rm.published_port != 0 {
        // The long form: published= (and target=, if given) must match.
        return rm.published_port == port.published_port
            && (rm.target_port == 0 || rm.target_port == port.target_port);
    }
    rm.target_port == port.published_port || rm.target_port == port.target_port
}

/// The endpoint spec `service create` sends: the mode (vip unless said) and the ports.
pub fn create_endpoint(
    mode: Option<endpoint_spec::Mode>,
    ports: &[PortConfig],
) -> Option<EndpointSpec> {
    Some(EndpointSpec {
        mode: mode.unwrap_or(endpoint_spec::Mode::Vip) as i32,
        ports: ports.to_vec(),
    })
}

/// `service update`'s endpoint flags over `spec`: `--publish-rm` first, then `--publish-add`
/// (which replaces a port published on the same port and protocol), then `--endpoint-mode`.
pub fn apply_endpoint_update(
    spec: &mut ServiceSpec,
    add: &[PortConfig],
    rm: &[PortConfig],
    mode: Option<endpoint_spec::Mode>,
) {
    if add.is_empty() && rm.is_empty() && mode.is_none() {
        return;
    }
    let e = spec.endpoint.get_or_insert_with(Default::default);
    e.ports.retain(|p| !rm.iter().any(|r| removes(r, p)));
    for p in add {
        let same = |o: &PortConfig| {
            o.protocol == p.protocol
                && if p.published_port != 0 {
                    o.published_port == p.published_port
                } else {
                    o.published_port == 0 && o.target_port == p.target_port
                }
        };
        match e.ports.iter_mut().find(|o| same(o)) {
            Some(existing) => *existing = p.clone(),
            None => e.ports.push(p.clone()),
        }
    }
    if let Some(mode) = mode {
        e.mode = mode as i32;
    }
}

/// docker's `*:8080->80/tcp`.
pub fn port_text(p: &PortConfig) -> String {
    format!(
        "*:{}->{}/{}",
        p.published_port,
        p.target_port,
        protocol_name(p.protocol)
    )
}

/// `service ls`'s PORTS: the routing-mesh ports as allocated, as docker shows them.
pub fn ls_ports(endpoint: Option<&Endpoint>) -> String {
    endpoint
        .map(|e| {
            e.ports
                .iter()
                .filter(|p| is_ingress(p))
                .map(port_text)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `service ps`'s PORTS: the host-mode ports, bound on the node of each running task.
pub fn host_ports(endpoint: Option<&Endpoint>) -> String {
    endpoint
        .map(|e| {
            e.ports
                .iter()
                .filter(|p| !is_ingress(p))
                .map(port_text)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn mode_word(mode: i32) -> &'static str {
    match endpoint_spec::Mode::try_from(mode) {
        Ok(endpoint_spec::Mode::Dnsrr) => "dnsrr",
        _ => "vip",
    }
}

fn publish_mode_word(mode: i32) -> &'static str {
    match port_config::PublishMode::try_from(mode) {
        Ok(port_config::PublishMode::Host) => "host",
        _ => "ingress",
    }
}

fn port_json(p: &PortConfig) -> Value {
    let mut v = json!({
        "Protocol": protocol_name(p.protocol),
        "TargetPort": p.target_port,
        "PublishedPort": p.published_port,
        "PublishMode": publish_mode_word(p.publish_mode),
    });
    if !p.name.is_empty() {
        v["Name"] = json!(p.name);
    }
    v
}

/// An endpoint spec as docker's JSON: `{"Mode": "vip", "Ports": [...]}`.
pub fn endpoint_spec_json(spec: Option<&EndpointSpec>) -> Value {
    let spec = spec.cloned().unwrap_or_default();
    let mut v = json!({ "Mode": mode_word(spec.mode) });
    if !spec.ports.is_empty() {
        v["Ports"] = spec.ports.iter().map(port_json).collect();
    }
    v
}

/// The allocated endpoint as docker's `Endpoint`: `Spec`, `Ports`, `VirtualIPs`.
pub fn endpoint_json(e: Option<&Endpoint>) -> Value {
    let e = e.cloned().unwrap_or_default();
    let mut v = json!({ "Spec": endpoint_spec_json(e.spec.as_ref()) });
    if !e.ports.is_empty() {
        v["Ports"] = e.ports.iter().map(port_json).collect();
    }
    if !e.virtual_ips.is_empty() {
        v["VirtualIPs"] = e
            .virtual_ips
            .iter()
            .map(|vip| json!({ "NetworkID": vip.network_id, "Addr": vip.addr }))
            .collect();
    }
    v
}

/// docker's `--pretty` lines: `Endpoint Mode:` and the `Ports:` block.
pub fn pretty_endpoint(p: &mut Pretty, spec: &ServiceSpec, endpoint: Option<&Endpoint>) {
    let mode = spec.endpoint.as_ref().map_or(0, |e| e.mode);
    p.field(0, "Endpoint Mode", mode_word(mode).to_string());
    // The allocated ports when there are (published ports chosen by the swarm filled in).
    let ports = match endpoint {
        Some(e) if !e.ports.is_empty() => &e.ports[..],
        _ => rules::ports(spec),
    };
    if ports.is_empty() {
        return;
    }
    p.section(0, "Ports");
    for port in ports {
        p.field(1, "PublishedPort", port.published_port.to_string());
        p.field(2, "Protocol", protocol_name(port.protocol).to_string());
        p.field(2, "TargetPort", port.target_port.to_string());
        p.field(
            2,
            "PublishMode",
            publish_mode_word(port.publish_mode).to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(published: u32, target: u32, udp: bool, host: bool) -> PortConfig {
        PortConfig {
            target_port: target,
            published_port: published,
            protocol: if udp { 1 } else { 0 },
            publish_mode: if host { 1 } else { 0 },
            ..Default::default()
        }
    }

    #[test]
    fn short_and_long_forms() {
        assert_eq!(parse_publish("8080:80"), Ok(port(8080, 80, false, false)));
        assert_eq!(parse_publish("80"), Ok(port(0, 80, false, false)));
        assert_eq!(parse_publish("53:53/udp"), Ok(port(53, 53, true, false)));
        assert_eq!(parse_publish("80/TCP"), Ok(port(0, 80, false, false)));
        assert_eq!(
            parse_publish("mode=host,published=8080,target=80,protocol=udp"),
            Ok(port(8080, 80, true, true))
        );
        assert_eq!(
            parse_publish("target=80,name=http"),
            Ok(PortConfig {
                name: "http".into(),
                ..port(0, 80, false, false)
            })
        );
    }

    #[test]
    fn bad_values_are_refused_clearly() {
        for (value, want) in [
            ("0", "invalid port 0: ports are 1 to 65535"),
            ("0:80", "invalid port 0: ports are 1 to 65535"),
            ("70000", "invalid port 70000: ports are 1 to 65535"),
            ("8080:70000", "invalid port 70000"),
            (
                "80/sctp",
                "invalid protocol \"sctp\": the protocols are tcp and udp",
            ),
            (
                "mode=bridge,target=80",
                "invalid publish mode \"bridge\": the modes are ingress and host",
            ),
            ("published=8080", "target= is required"),
            ("colour=red,target=80", "unknown key \"colour\""),
            ("http", "a port is a number"),
            (
                "127.0.0.1:8080:80",
                "binding to one host IP is not supported",
            ),
            ("target=80,published=x", "invalid port \"x\""),
        ] {
            let err = parse_publish(value).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid --publish value {value:?}: "))
                    && err.contains(want),
                "{value}: {err}"
            );
        }
        assert!(parse_endpoint_mode("dnsrr").is_ok());
        assert_eq!(
            parse_endpoint_mode("round-robin").unwrap_err(),
            "invalid endpoint mode \"round-robin\": the modes are vip and dnsrr"
        );
    }

    #[test]
    fn update_removes_by_published_or_target_then_adds() {
        let mut spec = ServiceSpec {
            endpoint: Some(EndpointSpec {
                mode: 0,
                ports: vec![
                    port(8080, 80, false, false),
                    port(53, 53, true, false),
                    port(0, 81, false, false),
                    port(9090, 90, false, true),
                ],
            }),
            ..Default::default()
        };
        let rm = |s: &str| parse_publish_rm(s).unwrap();
        apply_endpoint_update(&mut spec, &[], &[rm("8080"), rm("53"), rm("81")], None);
        let left = |spec: &ServiceSpec| {
            spec.endpoint
                .as_ref()
                .map(|e| e.ports.iter().map(port_text).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        // 53/tcp is not 53/udp.
        assert_eq!(left(&spec), ["*:53->53/udp", "*:9090->90/tcp"]);
        apply_endpoint_update(
            &mut spec,
            &[
                parse_publish("9090:91").unwrap(),
                parse_publish("82").unwrap(),
            ],
            &[rm("53/udp")],
            Some(endpoint_spec::Mode::Dnsrr),
        );
        assert_eq!(left(&spec), ["*:9090->91/tcp", "*:0->82/tcp"]);
        assert_eq!(spec.endpoint.as_ref().map(|e| e.mode), Some(1));
        assert!(parse_publish_rm("80/sctp").is_err());
        assert!(parse_publish_rm("0").is_err());
    }

    #[test]
    fn shown_as_docker_does() {
        let endpoint = Endpoint {
            spec: Some(EndpointSpec {
                mode: 0,
                ports: vec![port(0, 80, false, false)],
            }),
            ports: vec![
                port(30000, 80, false, false),
                port(8080, 81, false, true),
                port(53, 53, true, false),
            ],
            virtual_ips: vec![shoal_proto::VirtualIp {
                network_id: "n1".into(),
                addr: "198.18.128.9/24".into(),
            }],
        };
        assert_eq!(ls_ports(Some(&endpoint)), "*:30000->80/tcp, *:53->53/udp");
        assert_eq!(ls_ports(None), "");
        assert_eq!(host_ports(Some(&endpoint)), "*:8080->81/tcp");
        let v = endpoint_json(Some(&endpoint));
        assert_eq!(v["Spec"]["Mode"], "vip");
        assert_eq!(v["Spec"]["Ports"][0]["PublishedPort"], 0);
        assert_eq!(v["Ports"][0]["PublishedPort"], 30000);
        assert_eq!(v["Ports"][1]["PublishMode"], "host");
        assert_eq!(v["Ports"][2]["Protocol"], "udp");
        assert_eq!(v["VirtualIPs"][0]["NetworkID"], "n1");
        assert_eq!(v["VirtualIPs"][0]["Addr"], "198.18.128.9/24");
    }
}
