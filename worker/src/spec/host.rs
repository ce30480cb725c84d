//! What a container's security settings depend on about the node: its architecture (for the
//! seccomp profile's per-arch rules), its kernel version (`minKernel` rules), the highest
//! capability its kernel knows (`--cap-add ALL`) and whether AppArmor is on (and Docker's
//! profile loaded). Detected once per daemon; tests build a [`Host`] by hand.

use std::sync::OnceLock;

use shoal_proto::validate::security::KernelVersion;

use super::apparmor::{self, AppArmorState};

/// The node facts a spec is built against.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// libseccomp's name of the node's architecture (`amd64`, `arm64`, …), as docker's
    /// `goToNative`; empty when docker would not know it (then no per-arch rule matches).
    pub arch: &'static str,
    /// `None` when `uname -r` does not start with `<kernel>.<major>`.
    pub kernel: Option<KernelVersion>,
    /// `/proc/sys/kernel/cap_last_cap`: `ALL` is every capability up to this one.
    pub last_cap: usize,
    pub apparmor: AppArmorState,
}

impl Host {
    /// This node, detected on first use; loading the AppArmor profile happens then too, so
    /// once per daemon start.
    pub fn current() -> &'static Host {
        static HOST: OnceLock<Host> = OnceLock::new();
        HOST.get_or_init(|| Host {
            arch: native_arch(std::env::consts::ARCH, cfg!(target_endian = "little")),
            kernel: kernel_version(),
            last_cap: last_cap(),
            apparmor: apparmor::detect_and_load(),
        })
    }
}

/// Rust's architecture name as libseccomp names it (docker's `goToNative`).
pub fn native_arch(rust_arch: &str, little_endian: bool) -> &'static str {
    match (rust_arch, little_endian) {
        ("x86", _) => "x86",
        ("x86_64", _) => "amd64",
        ("arm", _) => "arm",
        ("aarch64", _) => "arm64",
        ("mips", true) => "mipsel",
        ("mips64", false) => "mips64",
        ("mips64", true) => "mipsel64",
        ("powerpc", _) => "ppc",
        ("powerpc64", false) => "ppc64",
        ("powerpc64", true) => "ppc64le",
        ("s390x", _) => "s390x",
        _ => "",
    }
}

/// `<kernel>.<major>` of a release string such as `6.1.0-18-amd64` or `3.12-rc5`.
pub fn parse_release(release: &str) -> Option<KernelVersion> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some(KernelVersion {
        kernel: parts.next()?.parse().ok()?,
        major: parts.next()?.parse().ok()?,
    })
}

fn kernel_version() -> Option<KernelVersion> {
    let uname = nix::sys::utsname::uname().ok()?;
    parse_release(uname.release().to_str()?)
}

/// The kernel's last capability; the 5.9+ count docker 20.10 knows when it cannot be read.
fn last_cap() -> usize {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_and_releases() {
        assert_eq!(native_arch("x86_64", true), "amd64");
        assert_eq!(native_arch("aarch64", true), "arm64");
        assert_eq!(native_arch("powerpc64", true), "ppc64le");
        assert_eq!(native_arch("sparc64", false), "");
        let v = |kernel, major| Some(KernelVersion { kernel, major });
        assert_eq!(parse_release("6.1.0-18-amd64"), v(6, 1));
        assert_eq!(parse_release("3.12-rc5"), v(3, 12));
        assert_eq!(parse_release("5"), None);
    }
}
