//! The host's resolver configuration, which tasks' DNS settings start from.

use std::fs;

/// The host's resolver configuration. When /etc/resolv.conf points only at systemd-resolved's
/// stub (127.0.0.53), the real upstream list is in /run/systemd/resolve/resolv.conf — Docker
/// reads that one in this case.
pub fn host_resolv_conf() -> String {
    let etc = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let only_stub = etc
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(str::trim)
        .all(|ns| ns == "127.0.0.53");
    if only_stub {
        if let Ok(upstream) = fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return upstream;
        }
    }
    etc
}
