//! The two resolv.conf texts around the DNS server: the host's, read for the node's default
//! upstream servers and search domains, and each task's, written to point at the node's server.
//!
//! Docker's rules: a task always asks the embedded server (even with `--dns`, whose servers
//! become that task's upstreams), and swarm tasks get `ndots:0` unless told otherwise.

use std::net::{IpAddr, SocketAddr};

use shoal_proto::DnsConfig;

/// The port every nameserver in a resolv.conf listens on (the format has no port field).
const DNS_PORT: u16 = 53;

/// The `nameserver` entries of a resolv.conf text, in order, as upstreams for forwarding.
///
/// Loopback entries (systemd-resolved's 127.0.0.53, a local dnsmasq) are kept, unlike docker:
/// docker skips them because a container cannot reach the host's loopback, but our server
/// forwards from the host itself, where they work. Entries that are not an IP address (or
/// carry an IPv6 zone) are skipped.
pub fn host_nameservers(resolv_conf_text: &str) -> Vec<SocketAddr> {
    entries(resolv_conf_text, "nameserver")
        .filter_map(|values| values.first()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect()
}

/// A task's /etc/resolv.conf: the node's DNS server as the only nameserver, the task's search
/// domains (else the host's), and the task's options (else `ndots:0`, docker's swarm default,
/// so that a bare service name is tried as is before any search domain).
pub fn resolv_conf(node_dns: IpAddr, dns: Option<&DnsConfig>, host_resolv_conf: &str) -> String {
    let mut out = format!("nameserver {node_dns}\n");
    let search = match dns.filter(|d| !d.search.is_empty()) {
        Some(d) => d.search.clone(),
        None => host_search(host_resolv_conf),
    };
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    match dns.filter(|d| !d.options.is_empty()) {
        Some(d) => out.push_str(&format!("options {}\n", d.options.join(" "))),
        None => out.push_str("options ndots:0\n"),
    }
    out
}

/// The host's search domains: the last `search` or `domain` line wins, as in glibc.
fn host_search(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("search" | "domain") => Some(words.map(str::to_string).collect()),
                _ => None,
            }
        })
        .next_back()
        .unwrap_or_default()
}

/// The values of every line starting with `keyword` (comments and blank lines ignored).
fn entries<'t>(text: &'t str, keyword: &'t str) -> impl Iterator<Item = Vec<&'t str>> + 't {
    text.lines().filter_map(move |line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(keyword)).then(|| words.collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "# generated\nnameserver 127.0.0.53\nnameserver 198.18.0.1\n\
        nameserver fe80::1%eth0\nnameserver not-an-ip\n; comment\nsearch old.example\n\
        search corp.example lab.example\noptions edns0 trust-ad\n";

    fn node_dns() -> IpAddr {
        IpAddr::from([198, 18, 0, 1])
    }

    #[test]
    fn host_nameservers_keeps_loopback_and_skips_what_does_not_parse() {
        let got = host_nameservers(HOST);
        let want: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().expect("literal"),
            "198.18.0.1:53".parse().expect("literal"),
        ];
        assert_eq!(got, want);
        assert!(host_nameservers("").is_empty());
        assert_eq!(
            host_nameservers("nameserver ::1\n"),
            vec!["[::1]:53".parse::<SocketAddr>().expect("literal")]
        );
    }

    #[test]
    fn task_resolv_conf_defaults_to_host_search_and_ndots_0() {
        let text = resolv_conf(node_dns(), None, HOST);
        assert_eq!(
            text,
            "nameserver 198.18.0.1\nsearch corp.example lab.example\noptions ndots:0\n"
        );
        // An empty DnsConfig is the same as none.
        assert_eq!(
            resolv_conf(node_dns(), Some(&DnsConfig::default()), HOST),
            text
        );
    }

    #[test]
    fn task_resolv_conf_takes_the_tasks_settings_but_keeps_the_node_server() {
        let dns = DnsConfig {
            nameservers: vec!["198.18.0.53".into()],
            search: vec!["svc.example".into()],
            options: vec!["ndots:2".into(), "timeout:1".into()],
        };
        let text = resolv_conf(node_dns(), Some(&dns), HOST);
        assert_eq!(
            text,
            "nameserver 198.18.0.1\nsearch svc.example\noptions ndots:2 timeout:1\n"
        );
    }

    #[test]
    fn task_resolv_conf_without_host_search_has_no_search_line() {
        let text = resolv_conf(node_dns(), None, "nameserver 198.18.0.9\n");
        assert_eq!(text, "nameserver 198.18.0.1\noptions ndots:0\n");
        let domain = resolv_conf(node_dns(), None, "domain example.org\n");
        assert_eq!(
            domain,
            "nameserver 198.18.0.1\nsearch example.org\noptions ndots:0\n"
        );
    }
}
