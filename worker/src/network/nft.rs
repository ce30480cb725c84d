//! The outbound bridge's nftables rules, written with the `nft` binary as one atomic
//! transaction per change (Kubernetes' knftables does the same): the script first declares the
//! table, then deletes it, then writes it whole, so applying twice converges and a half-written
//! table never exists.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::lb::{self, PortForward};
use super::NetworkError;

/// The bridge's table: what tasks send out of the node (from the bridge's subnet, leaving
/// through any other interface) takes the node's address, as under Docker; tasks whose
/// networks are all `--internal` (their addresses on the bridge in `internal`) are never
/// forwarded anywhere: they reach the node's DNS server on the bridge, nothing beyond.
///
/// It also holds the node's published ports (`ports`): a connection to any of the node's own
/// addresses on such a port, from outside or from the node itself, is DNATed to the ingress
/// load balancer (routing mesh) or to the local task (host mode), both on the bridge. Nobody
/// SNATs it, so the task sees the client's address; only a client on the node's loopback
/// takes the bridge's address, as 127.0.0.1 cannot leave the node, and so does a task of this
/// node calling a published port of its own node (hairpin): the reply must come back through
/// the node to be un-DNATed, not straight across the bridge.
///
/// The bridge's own address (`bip`) is left out of the published ports: it is where the tasks'
/// DNS server listens, which a service publishing 53/udp must not take over.
pub(super) fn bridge_script(
    table: &str,
    bridge: &str,
    bip: Ipv4Net,
    internal: &BTreeSet<Ipv4Addr>,
    ports: &[PortForward],
) -> String {
    let (subnet, gateway) = (bip.trunc(), bip.addr());
    let mut s = lb::replace_header(table);
    let _ = write!(
        s,
        "table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
         \t\tip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade\n\
         \t\tip saddr {subnet} oifname \"{bridge}\" ct status dnat masquerade\n\
         \t}}\n"
    );
    if !internal.is_empty() {
        let addrs: Vec<String> = internal.iter().map(Ipv4Addr::to_string).collect();
        let _ = write!(
            s,
            "\tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"{bridge}\" ip saddr {{ {} }} drop\n\
             \t}}\n",
            addrs.join(", ")
        );
    }
    let matching = format!("fib daddr type local ip daddr != {gateway} ");
    let (map, chains) = lb::port_chains(&matching, ports);
    if !map.is_empty() {
        let _ = write!(
            s,
            "\tchain published {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\t{map}\n\
             \t}}\n\
             \tchain published_local {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\t{map}\n\
             \t}}\n\
             {chains}"
        );
    }
    s.push_str("}\n");
    s
}

/// Runs one `nft -f -` transaction, in the namespace mounted at `netns` (through `nsenter`)
/// or, with `None`, in the daemon's own.
pub(super) fn apply(script: &str, netns: Option<&Path>) -> Result<(), NetworkError> {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("nft");
            c
        }
        None => Command::new("nft"),
    };
    let mut child = command
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetworkError::Nft(format!(
                "cannot run nft ({e}); install nftables (apt-get install nftables)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetworkError::Nft(format!("writing the rules to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Nft(format!(
            "nft refused the rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_table_is_replaced_whole() {
        let subnet = "198.19.0.1/24".parse().expect("cidr");
        let s = bridge_script("shoal_gw", "gw", subnet, &BTreeSet::new(), &[]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "table ip shoal_gw");
        assert_eq!(lines[1], "delete table ip shoal_gw");
        assert!(s.contains("ip saddr 198.19.0.0/24 oifname != \"gw\" masquerade"));
        assert!(
            !s.contains("forward"),
            "no forward chain without internal tasks:\n{s}"
        );
        assert!(!s.contains("published"), "no ports, no DNAT:\n{s}");
    }

    #[test]
    fn published_ports_reach_the_node_from_outside_and_from_itself() {
        let subnet = "198.19.0.1/24".parse().expect("cidr");
        let ports = [PortForward {
            protocol: "tcp",
            port: 8080,
            backends: vec!["198.19.0.2:8080".parse().expect("sa")],
        }];
        let s = bridge_script("shoal_gw", "gw", subnet, &BTreeSet::new(), &ports);
        // The bridge's own address (the DNS server's) is never a published port's.
        let map = "fib daddr type local ip daddr != 198.19.0.1 meta l4proto . th dport vmap \
                   { tcp . 8080 : goto port_tcp_8080 }";
        assert_eq!(s.matches(map).count(), 2, "prerouting and output:\n{s}");
        assert!(
            s.contains("meta l4proto tcp dnat ip to 198.19.0.2:8080"),
            "{s}"
        );
        assert!(
            s.contains("ip saddr 127.0.0.0/8 oifname \"gw\" masquerade"),
            "{s}"
        );
    }

    #[test]
    fn internal_tasks_are_never_forwarded() {
        let subnet = "198.19.0.1/24".parse().expect("cidr");
        let internal = BTreeSet::from([
            "198.19.0.3".parse().expect("ip"),
            "198.19.0.2".parse().expect("ip"),
        ]);
        let s = bridge_script("shoal_gw", "gw", subnet, &internal, &[]);
        assert!(
            s.contains("iifname \"gw\" ip saddr { 198.19.0.2, 198.19.0.3 } drop"),
            "{s}"
        );
    }
}
