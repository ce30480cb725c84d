//! A container's seccomp filter: docker's default profile (`seccomp/default.json`, see
//! `seccomp/NOTICE.md`), or the service's own, rendered to the OCI `LinuxSeccomp` as docker's
//! `setupSeccomp` does: a rule is kept only when its `includes`/`excludes` conditions hold for
//! the container's final capabilities and the node's architecture and kernel, and `archMap`
//! gives the node's architecture with its sub-architectures.

use std::collections::HashSet;
use std::sync::OnceLock;

use oci_spec::runtime::{Capability, LinuxSeccomp};
use serde_json::json;
use shoal_proto::privileges::seccomp::Mode;
use shoal_proto::validate::security::{self, SeccompArch, SeccompFilter, SeccompProfile};
use shoal_proto::ContainerSpec;

use super::host::Host;
use super::SpecError;

/// Docker's default profile (moby 20.10.24), kept as data.
pub const DEFAULT_PROFILE: &str = include_str!("seccomp/default.json");

/// The default profile, parsed once.
pub fn default_profile() -> Result<&'static SeccompProfile, SpecError> {
    static PROFILE: OnceLock<Result<SeccompProfile, String>> = OnceLock::new();
    PROFILE
        .get_or_init(|| {
            security::seccomp_profile(DEFAULT_PROFILE, " (built-in default)")
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| SpecError::Seccomp(e.clone()))
}

/// The container's filter: none with `seccomp=unconfined`, else its profile rendered.
pub fn for_container(
    cs: &ContainerSpec,
    caps: &HashSet<Capability>,
    host: &Host,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    let opts = cs.privileges.as_ref().and_then(|p| p.seccomp.as_ref());
    match opts.map_or(Mode::Default, |s| s.mode()) {
        Mode::Unconfined => Ok(None),
        Mode::Default => render(default_profile()?, caps, host).map(Some),
        Mode::Custom => {
            let profile = opts.map_or("", |s| s.profile.as_str());
            let profile = security::seccomp_profile(profile, "")
                .map_err(|e| SpecError::Seccomp(e.to_string()))?;
            render(&profile, caps, host).map(Some)
        }
    }
}

/// The architecture libseccomp calls `native` (docker's `nativeToSeccomp`).
fn seccomp_arch(native: &str) -> Option<SeccompArch> {
    Some(match native {
        "x86" => SeccompArch::X86,
        "amd64" => SeccompArch::X86_64,
        "arm" => SeccompArch::Arm,
        "arm64" => SeccompArch::Aarch64,
        "mips64" => SeccompArch::Mips64,
        "mips64n32" => SeccompArch::Mips64n32,
        "mipsel64" => SeccompArch::Mipsel64,
        "mips3l64n32" => SeccompArch::Mipsel64n32,
        "mipsle" => SeccompArch::Mipsel,
        "ppc" => SeccompArch::Ppc,
        "ppc64" => SeccompArch::Ppc64,
        "ppc64le" => SeccompArch::Ppc64le,
        "s390" => SeccompArch::S390,
        "s390x" => SeccompArch::S390x,
        _ => return None,
    })
}

/// Whether a rule's `includes` (`want` true) or `excludes` (`want` false) condition is met;
/// an empty part of it is met either way, as docker: it is skipped.
fn condition(
    filter: &SeccompFilter,
    caps: &HashSet<String>,
    host: &Host,
    want: bool,
) -> Result<bool, SpecError> {
    let arch = (!filter.arches.is_empty()).then(|| filter.arches.iter().any(|a| a == host.arch));
    // includes: all of the caps; excludes: any of them.
    let cap = (!filter.caps.is_empty()).then(|| {
        if want {
            filter.caps.iter().all(|c| caps.contains(c))
        } else {
            filter.caps.iter().any(|c| caps.contains(c))
        }
    });
    let kernel = match filter.min_kernel {
        None => None,
        Some(min) => Some(host.kernel.map(|k| k >= min).ok_or_else(|| {
            SpecError::Seccomp(format!(
                "the profile has a rule for kernels from {} on, and this node's kernel version \
                 cannot be read",
                String::from(min)
            ))
        })?),
    };
    let mut parts = [arch, cap, kernel].into_iter().flatten();
    Ok(if want {
        parts.all(|met| met)
    } else {
        parts.any(|met| met)
    })
}

/// Renders `profile` for a container with capabilities `caps` on `host`.
pub fn render(
    profile: &SeccompProfile,
    caps: &HashSet<Capability>,
    host: &Host,
) -> Result<LinuxSeccomp, SpecError> {
    // Rules name capabilities as `CAP_SYS_ADMIN`; the OCI type prints `SYS_ADMIN`.
    let caps: HashSet<String> = caps.iter().map(|c| format!("CAP_{c}")).collect();
    let mut architectures = profile.architectures.clone();
    if let Some(native) = seccomp_arch(host.arch) {
        if let Some(m) = profile.arch_map.iter().find(|m| m.architecture == native) {
            architectures.push(m.architecture);
            architectures.extend(m.sub_architectures.iter().copied());
        }
    }
    let mut syscalls = Vec::new();
    for rule in &profile.syscalls {
        if condition(&rule.excludes, &caps, host, false)?
            || !condition(&rule.includes, &caps, host, true)?
        {
            continue;
        }
        syscalls.push(json!({
            "names": rule.syscall_names(),
            "action": rule.action,
            "errnoRet": rule.errno_ret,
            "args": rule.args,
        }));
    }
    // The profile's types serialise with the OCI spec's names, so one conversion checks them.
    let seccomp = json!({
        "defaultAction": profile.default_action,
        "defaultErrnoRet": profile.default_errno_ret,
        "architectures": (!architectures.is_empty()).then_some(architectures),
        "syscalls": syscalls,
    });
    serde_json::from_value(seccomp).map_err(|e| SpecError::Seccomp(e.to_string()))
}

#[cfg(test)]
mod tests;
