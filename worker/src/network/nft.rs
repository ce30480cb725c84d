//! The outbound bridge's nftables rules, written with the `nft` binary as one atomic
//! transaction per change (Kubernetes' knftables does the same): the script first declares the
//! table, then deletes it, then writes it whole, so applying twice converges and a half-written
//! table never exists.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::NetworkError;

/// The bridge's table: what tasks send out of the node (from the bridge's subnet, leaving
/// through any other interface) takes the node's address, as under Docker; and tasks whose
/// networks are all `--internal` (their addresses on the bridge in `internal`) are never
/// forwarded anywhere: they reach the node's DNS server on the bridge, nothing beyond.
pub(super) fn bridge_script(
    table: &str,
    bridge: &str,
    subnet: Ipv4Net,
    internal: &BTreeSet<Ipv4Addr>,
) -> String {
    let mut s = format!(
        "table ip {table}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
         \t}}\n"
    );
    if !internal.is_empty() {
        let addrs: Vec<String> = internal.iter().map(Ipv4Addr::to_string).collect();
        s.push_str(&format!(
            "\tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"{bridge}\" ip saddr {{ {} }} drop\n\
             \t}}\n",
            addrs.join(", ")
        ));
    }
    s.push_str("}\n");
    s
}

/// Runs one `nft -f -` transaction.
pub(super) fn apply(script: &str) -> Result<(), NetworkError> {
    let mut child = Command::new("nft")
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
        let subnet = "198.19.0.0/24".parse().expect("cidr");
        let s = bridge_script("shoal_gw", "gw", subnet, &BTreeSet::new());
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "table ip shoal_gw");
        assert_eq!(lines[1], "delete table ip shoal_gw");
        assert!(s.contains("ip saddr 198.19.0.0/24 oifname != \"gw\" masquerade"));
        assert!(
            !s.contains("forward"),
            "no forward chain without internal tasks:\n{s}"
        );
    }

    #[test]
    fn internal_tasks_are_never_forwarded() {
        let subnet = "198.19.0.0/24".parse().expect("cidr");
        let internal = BTreeSet::from([
            "198.19.0.3".parse().expect("ip"),
            "198.19.0.2".parse().expect("ip"),
        ]);
        let s = bridge_script("shoal_gw", "gw", subnet, &internal);
        assert!(
            s.contains("iifname \"gw\" ip saddr { 198.19.0.2, 198.19.0.3 } drop"),
            "{s}"
        );
    }
}
