//! Load balancing in the kernel with nftables, after kube-proxy's nftables mode: a verdict map
//! keyed on what a connection is sent to (a VIP, or a protocol and port) jumps to one chain per
//! service, whose single rule DNATs each new connection to one of the running tasks picked by
//! `numgen random`. Conntrack then keeps every packet of that connection on the same task, with
//! the kernel's own timeouts (5 days for an established TCP connection: no IPVS 900 s idle
//! timeout, moby/moby#31208). Nothing sits on the data path in user space.
//!
//! Three tables are written from here, each one `nft -f` transaction that replaces it whole:
//! * in each task's namespace, [`task_script`]: the VIPs of the services on the task's networks
//!   (a VIP with no running task is rejected at once, never black-holed), and, for a task on the
//!   ingress network, the marks that send replies back through the node that forwarded the
//!   connection ([`MeshReturn`]);
//! * in the node's ingress load balancer namespace and in the node's own namespace, the
//!   published ports ([`port_chains`]).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::mac_of;

/// The table in each task's namespace.
pub(super) const TASK_TABLE: &str = "shoal_lb";

/// Where replies of routing-mesh connections are routed from: the first rule priority of the
/// marks' tables, before the main table (32766).
pub(super) const MESH_RULE_PRIORITY: u32 = 100;

/// A service's VIP as a client task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Vip {
    pub addr: Ipv4Addr,
    /// The service's running tasks on the VIP's network; empty = refuse connections.
    pub backends: Vec<Ipv4Addr>,
}

/// A task on the ingress network receives routing-mesh connections from the ingress load
/// balancers of every node, with the client's own address as source (nobody SNATs). Its
/// replies must go back through the node that forwarded the connection, which undoes the DNAT:
/// a new connection coming in on `ifname` gets the forwarding balancer's address as its
/// conntrack mark (read from the frame's source MAC, which is derived from that address), and
/// each packet of the connection the task sends carries the mark, which an `ip rule` routes
/// through a table whose default route is that balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MeshReturn {
    pub ifname: String,
    /// Every node's ingress load balancer address.
    pub balancers: Vec<Ipv4Addr>,
}

/// The mark, and routing table, of connections forwarded by the balancer at `addr`: the
/// address itself, unique and stable while the node lives (never 0, nor a reserved table:
/// 253–255 are below 2^24).
pub(super) fn mesh_mark(addr: Ipv4Addr) -> u32 {
    u32::from(addr)
}

/// A published port and where its new connections go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PortForward {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub port: u16,
    /// Empty: no DNAT (the connection reaches the local stack, which refuses it).
    pub backends: Vec<SocketAddrV4>,
}

/// The script that makes a task's table what it should be; when the task needs nothing, it
/// only removes the table (applying it twice converges).
pub(super) fn task_script(vips: &[Vip], mesh: Option<&MeshReturn>) -> String {
    let mut s = replace_header(TASK_TABLE);
    if vips.is_empty() && mesh.is_none() {
        return s;
    }
    let _ = writeln!(s, "table ip {TASK_TABLE} {{");
    let served: Vec<&Vip> = vips.iter().filter(|v| !v.backends.is_empty()).collect();
    let refused: Vec<String> = vips
        .iter()
        .filter(|v| v.backends.is_empty())
        .map(|v| v.addr.to_string())
        .collect();
    if !served.is_empty() {
        let elements: Vec<String> = served
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{} : goto svc_{i}", v.addr))
            .collect();
        let _ = write!(
            s,
            "\tchain vips {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\tip daddr vmap {{ {} }}\n\
             \t}}\n",
            elements.join(", ")
        );
        for (i, v) in served.iter().enumerate() {
            // A VIP takes every port, as docker's does: the destination port is kept.
            let targets: Vec<_> = v.backends.iter().map(|b| (*b, None)).collect();
            let _ = writeln!(s, "\tchain svc_{i} {{\n\t\t{}\n\t}}", dnat_rule(&targets));
        }
    }
    if !refused.is_empty() {
        let set = refused.join(", ");
        let _ = write!(
            s,
            "\tchain refuse {{\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t\tip daddr {{ {set} }} meta l4proto tcp reject with tcp reset\n\
             \t\tip daddr {{ {set} }} reject\n\
             \t}}\n"
        );
    }
    if let Some(m) = mesh.filter(|m| !m.balancers.is_empty()) {
        let marks: Vec<String> = m
            .balancers
            .iter()
            .map(|b| format!("{} : {:#010x}", mac_of(*b), mesh_mark(*b)))
            .collect();
        let _ = write!(
            s,
            "\tchain mesh_mark {{\n\
             \t\ttype filter hook prerouting priority mangle; policy accept;\n\
             \t\tiifname \"{}\" ct state new ct mark set ether saddr map {{ {} }}\n\
             \t}}\n\
             \tchain mesh_reply {{\n\
             \t\ttype route hook output priority mangle; policy accept;\n\
             \t\tct mark != 0 meta mark set ct mark\n\
             \t}}\n",
            m.ifname,
            marks.join(", ")
        );
    }
    s.push_str("}\n");
    s
}

/// The verdict map line and the chains of published ports: `matching` goes before the map
/// (e.g. `fib daddr type local`), the chains are named `port_<proto>_<port>`.
pub(super) fn port_chains(matching: &str, forwards: &[PortForward]) -> (String, String) {
    let served: Vec<&PortForward> = forwards.iter().filter(|f| !f.backends.is_empty()).collect();
    if served.is_empty() {
        return (String::new(), String::new());
    }
    let elements: Vec<String> = served
        .iter()
        .map(|f| {
            format!(
                "{} . {} : goto port_{}_{}",
                f.protocol, f.port, f.protocol, f.port
            )
        })
        .collect();
    let map = format!(
        "{matching}meta l4proto . th dport vmap {{ {} }}",
        elements.join(", ")
    );
    let mut chains = String::new();
    for f in served {
        let targets: Vec<_> = f
            .backends
            .iter()
            .map(|b| (*b.ip(), Some(b.port())))
            .collect();
        let _ = writeln!(
            chains,
            "\tchain port_{}_{} {{\n\t\tmeta l4proto {} {}\n\t}}",
            f.protocol,
            f.port,
            f.protocol,
            dnat_rule(&targets)
        );
    }
    (map, chains)
}

/// One DNAT rule spreading new connections evenly over `targets` (at least one): to the
/// address only (the port is kept), or to address and port.
fn dnat_rule(targets: &[(Ipv4Addr, Option<u16>)]) -> String {
    match targets {
        [(ip, None)] => format!("dnat to {ip}"),
        [(ip, Some(port))] => format!("dnat ip to {ip}:{port}"),
        _ => {
            let with_port = targets.iter().any(|(_, p)| p.is_some());
            let elements: Vec<String> = targets
                .iter()
                .enumerate()
                .map(|(i, (ip, port))| match port {
                    Some(p) => format!("{i} : {ip} . {p}"),
                    None => format!("{i} : {ip}"),
                })
                .collect();
            format!(
                "dnat {}to numgen random mod {} map {{ {} }}",
                if with_port { "ip " } else { "" },
                targets.len(),
                elements.join(", ")
            )
        }
    }
}

/// Declares `table`, then deletes it, so that what follows writes it whole in the same
/// transaction (and the delete never fails on a table that was not there).
pub(super) fn replace_header(table: &str) -> String {
    format!("table ip {table}\ndelete table ip {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn vips_spread_over_running_tasks_and_empty_ones_refuse() {
        let s = task_script(
            &[
                Vip {
                    addr: ip("198.18.128.9"),
                    backends: vec![ip("198.18.128.3"), ip("198.18.128.4")],
                },
                Vip {
                    addr: ip("198.18.128.10"),
                    backends: vec![],
                },
                Vip {
                    addr: ip("198.18.128.11"),
                    backends: vec![ip("198.18.128.5")],
                },
            ],
            None,
        );
        assert!(s.starts_with("table ip shoal_lb\ndelete table ip shoal_lb\n"));
        assert!(
            s.contains("ip daddr vmap { 198.18.128.9 : goto svc_0, 198.18.128.11 : goto svc_1 }"),
            "{s}"
        );
        assert!(
            s.contains("dnat to numgen random mod 2 map { 0 : 198.18.128.3, 1 : 198.18.128.4 }")
        );
        assert!(
            s.contains("chain svc_1 {\n\t\tdnat to 198.18.128.5\n"),
            "{s}"
        );
        assert!(s.contains("ip daddr { 198.18.128.10 } meta l4proto tcp reject with tcp reset"));
        assert!(!s.contains("mesh"), "{s}");
    }

    #[test]
    fn a_task_with_nothing_to_balance_has_no_table() {
        assert_eq!(
            task_script(&[], None),
            "table ip shoal_lb\ndelete table ip shoal_lb\n"
        );
    }

    #[test]
    fn mesh_replies_are_marked_by_the_forwarding_balancer() {
        let s = task_script(
            &[],
            Some(&MeshReturn {
                ifname: "eth0".into(),
                balancers: vec![ip("198.18.129.2")],
            }),
        );
        assert!(
            s.contains(
                "iifname \"eth0\" ct state new ct mark set ether saddr map \
                 { 02:42:c6:12:81:02 : 0xc6128102 }"
            ),
            "{s}"
        );
        assert!(s.contains("ct mark != 0 meta mark set ct mark"));
        assert_eq!(mesh_mark(ip("198.18.129.2")), 0xc612_8102);
    }

    #[test]
    fn published_ports_map_to_their_backends_and_target_port() {
        let (map, chains) = port_chains(
            "fib daddr type local ",
            &[
                PortForward {
                    protocol: "tcp",
                    port: 8080,
                    backends: vec![
                        "198.18.129.3:80".parse().expect("sa"),
                        "198.18.129.4:80".parse().expect("sa"),
                    ],
                },
                PortForward {
                    protocol: "udp",
                    port: 53,
                    backends: vec![],
                },
            ],
        );
        assert_eq!(
            map,
            "fib daddr type local meta l4proto . th dport vmap { tcp . 8080 : goto port_tcp_8080 }"
        );
        assert!(chains.contains(
            "meta l4proto tcp dnat ip to numgen random mod 2 map \
             { 0 : 198.18.129.3 . 80, 1 : 198.18.129.4 . 80 }"
        ));
        assert!(!chains.contains("udp"), "{chains}");
    }
}
