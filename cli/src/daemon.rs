//! `shoal daemon`: its flags. The daemon itself is the `shoal-node` crate.

use std::path::PathBuf;

use anyhow::Result;

use crate::client::socket_path;

/// Flags of `shoal daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Where the daemon keeps its state (Raft log, node identity, task logs).
    #[arg(long, default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// containerd's gRPC socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd: PathBuf,
    /// containerd namespace for Shoal's images and containers.
    #[arg(long, default_value = "shoal")]
    pub containerd_namespace: String,
    /// How often workers heartbeat their manager (a node silent for three periods is down).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub dispatcher_heartbeat: std::time::Duration,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP; off unless given).
    /// Every node exports its API and process metrics; a manager also the cluster's state, Raft,
    /// and (the leader) every task's CPU, memory and network use. Example: 127.0.0.1:9323.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// The bridge tasks reach the outside through (docker_gwbridge's role), created if absent.
    #[arg(long, default_value = shoal_worker::network::DEFAULT_BRIDGE, value_parser = parse_bridge)]
    pub bridge: String,
    /// The outbound bridge's address and subnet; tasks get the subnet's other addresses and
    /// are masqueraded behind the node's address.
    #[arg(long, default_value = shoal_worker::network::DEFAULT_BIP, value_name = "CIDR", value_parser = parse_bip)]
    pub bip: ipnet::Ipv4Net,
    /// Group whose members may use the API socket (mode 0660, as docker's `docker` group); when
    /// the default group does not exist the socket is root's only (0600).
    #[arg(short = 'G', long, default_value = shoal_node::DEFAULT_GROUP, value_name = "GROUP")]
    pub group: String,
    /// Docker's certificate directory: `DIR/HOST:PORT/ca.crt` is the CA a registry's TLS
    /// certificate is checked against (a loopback registry with one is spoken to over HTTPS)
    #[arg(long, default_value = shoal_worker::image::registry::DEFAULT_CERTS_DIR, value_name = "DIR")]
    pub registry_certs_dir: std::path::PathBuf,
}

/// An interface name the kernel takes.
fn parse_bridge(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?} is not a valid interface name: use 1 to 15 letters, digits, '_', '-' or '.'"
        ))
    }
}

/// The bridge's own address with the subnet's prefix, as docker's `--bip`: e.g. 172.18.0.1/16.
fn parse_bip(text: &str) -> Result<ipnet::Ipv4Net, String> {
    let bip: ipnet::Ipv4Net = text.parse().map_err(|_| {
        format!("{text:?} is not an IPv4 address with a prefix length, e.g. 172.18.0.1/16")
    })?;
    if bip.prefix_len() > 30 {
        return Err(format!(
            "{text}: the subnet is too small for tasks; use a prefix of /30 or shorter"
        ));
    }
    if bip.addr() == bip.network() || bip.addr() == bip.broadcast() {
        return Err(format!(
            "{text}: give the bridge's own address, not the subnet's network or broadcast address \
             (e.g. {}/{})",
            std::net::Ipv4Addr::from(u32::from(bip.network()) + 1),
            bip.prefix_len()
        ));
    }
    Ok(bip)
}

/// Runs the daemon, serving the client API on `host`'s socket.
pub async fn run(host: &str, args: DaemonArgs) -> Result<()> {
    shoal_node::run(shoal_node::Config {
        socket: socket_path(host)?,
        data_dir: args.data_dir,
        containerd: args.containerd,
        containerd_namespace: args.containerd_namespace,
        dispatcher_heartbeat: args.dispatcher_heartbeat,
        metrics_addr: args.metrics_addr,
        bridge: args.bridge,
        bip: args.bip,
        group: args.group,
        registry_certs_dir: args.registry_certs_dir,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip_is_the_bridges_own_address_with_a_usable_prefix() {
        assert_eq!(
            parse_bip("198.19.0.1/24").expect("valid").to_string(),
            "198.19.0.1/24"
        );
        let not_cidr = parse_bip("198.19.0.1").unwrap_err();
        assert!(not_cidr.contains("prefix length"), "{not_cidr}");
        let network = parse_bip("198.19.0.0/24").unwrap_err();
        assert!(
            network.contains("not the subnet's network") && network.contains("198.19.0.1/24"),
            "{network}"
        );
        let broadcast = parse_bip("198.19.0.255/24").unwrap_err();
        assert!(broadcast.contains("broadcast"), "{broadcast}");
        let tiny = parse_bip("198.19.0.1/31").unwrap_err();
        assert!(tiny.contains("too small"), "{tiny}");
    }

    #[test]
    fn bridge_names_fit_the_kernels_rules() {
        assert_eq!(
            parse_bridge("shoal_gwbridge").expect("valid"),
            "shoal_gwbridge"
        );
        for bad in ["", "a-name-longer-than-15", "has space", "slash/no"] {
            let err = parse_bridge(bad).unwrap_err();
            assert!(err.contains("not a valid interface name"), "{bad}: {err}");
        }
    }
}
