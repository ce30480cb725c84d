//! What this node reports about itself (`node inspect`, `info`).

use shoal_proto::NodeDescription;

fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn describe(containerd_version: &str, containerd_address: &str) -> NodeDescription {
    let uts = nix::sys::utsname::uname().ok();
    NodeDescription {
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        nano_cpus_count: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes: memory_bytes(),
        containerd_version: containerd_version.to_string(),
        containerd_address: containerd_address.to_string(),
        kernel_version: uts
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// The address other nodes reach this one at: `--advertise-addr` when given (a port is added
/// from the listen address when missing), otherwise the listen address when it names one
/// interface, otherwise the host's first non-loopback IPv4 address.
pub fn advertise_addr(advertise: &str, listen: &str) -> anyhow::Result<String> {
    let listen_port = listen.rsplit_once(':').map_or("2377", |(_, p)| p);
    if !advertise.is_empty() {
        if advertise.parse::<std::net::SocketAddr>().is_ok() {
            return Ok(advertise.to_string());
        }
        if advertise.parse::<std::net::IpAddr>().is_ok() {
            return Ok(format!("{advertise}:{listen_port}"));
        }
        anyhow::bail!(
            "invalid --advertise-addr {advertise:?}: give an IP address, optionally with a port \
             (e.g. 198.18.0.1 or 198.18.0.1:2377)"
        );
    }
    let listen_sock: std::net::SocketAddr = listen.parse().map_err(|_| {
        anyhow::anyhow!("invalid --listen-addr {listen:?}: give IP:PORT, e.g. 0.0.0.0:2377")
    })?;
    if !listen_sock.ip().is_unspecified() {
        return Ok(listen_sock.to_string());
    }
    let addrs = nix::ifaddrs::getifaddrs()?;
    for ifa in addrs {
        if let Some(ip) = ifa.address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip())) {
            if !ip.is_loopback() {
                return Ok(format!("{ip}:{}", listen_sock.port()));
            }
        }
    }
    anyhow::bail!(
        "could not choose an IP address to advertise: this host has no non-loopback IPv4 \
         address; pass --advertise-addr"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_address_rules() {
        assert_eq!(
            advertise_addr("198.18.0.5", "0.0.0.0:2400").unwrap(),
            "198.18.0.5:2400"
        );
        assert_eq!(
            advertise_addr("198.18.0.5:1", "0.0.0.0:2377").unwrap(),
            "198.18.0.5:1"
        );
        assert_eq!(
            advertise_addr("", "198.18.0.7:2377").unwrap(),
            "198.18.0.7:2377"
        );
        assert!(advertise_addr("not an ip", "0.0.0.0:2377").is_err());
        assert!(advertise_addr("", "nonsense").is_err());
    }
}
