//! A container's capabilities: docker's default set, with the service's `--cap-add` and
//! `--cap-drop` applied as docker 20.10's `caps.TweakCapabilities` does.

use std::collections::HashSet;
use std::str::FromStr;

use oci_spec::runtime::Capability;
use shoal_proto::validate::security::{ALL_CAPABILITIES, CAPABILITIES};
use shoal_proto::ContainerSpec;

use super::SpecError;

/// Docker's default capability set for unprivileged containers.
pub fn default_capabilities() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// A stored capability name (`CAP_NET_ADMIN`) as the OCI spec's.
fn parse(name: &str) -> Result<Capability, SpecError> {
    name.strip_prefix("CAP_")
        .and_then(|short| Capability::from_str(short).ok())
        .ok_or_else(|| SpecError::Capability(name.to_string()))
}

/// Every capability the node's kernel has (`ALL`): those up to `last_cap`.
fn all(last_cap: usize) -> Result<HashSet<Capability>, SpecError> {
    CAPABILITIES
        .iter()
        .take(last_cap + 1)
        .map(|c| parse(c))
        .collect()
}

/// The container's capability set: the defaults, then `--cap-drop` (`ALL` drops every one),
/// then `--cap-add` (`ALL` adds every one the kernel has, less those dropped by name).
pub fn container_capabilities(
    cs: &ContainerSpec,
    last_cap: usize,
) -> Result<HashSet<Capability>, SpecError> {
    let is_all = |names: &[String]| names.iter().any(|n| n == ALL_CAPABILITIES);
    let named = |names: &[String]| -> Result<HashSet<Capability>, SpecError> {
        names
            .iter()
            .filter(|n| *n != ALL_CAPABILITIES)
            .map(|n| parse(n))
            .collect()
    };
    let add = named(&cs.capability_add)?;
    let drop = named(&cs.capability_drop)?;
    let caps = if is_all(&cs.capability_add) {
        all(last_cap)?.difference(&drop).copied().collect()
    } else if is_all(&cs.capability_drop) {
        add
    } else {
        default_capabilities()
            .difference(&drop)
            .copied()
            .chain(add)
            .collect()
    };
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(add: &[&str], drop: &[&str]) -> HashSet<Capability> {
        let cs = ContainerSpec {
            capability_add: add.iter().map(|s| s.to_string()).collect(),
            capability_drop: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        container_capabilities(&cs, 40).unwrap()
    }

    #[test]
    fn add_and_drop_tweak_the_defaults_as_docker() {
        assert_eq!(caps(&[], &[]), default_capabilities());
        let c = caps(&["CAP_SYS_ADMIN"], &["CAP_NET_RAW"]);
        assert!(c.contains(&Capability::SysAdmin) && !c.contains(&Capability::NetRaw));
        assert_eq!(c.len(), default_capabilities().len());
        // Drop ALL, then add some: only those.
        assert_eq!(
            caps(&["CAP_CHOWN"], &["ALL"]),
            HashSet::from([Capability::Chown])
        );
        // Add ALL: everything the kernel has, less what is dropped by name.
        let c = caps(&["ALL"], &["CAP_SYS_MODULE"]);
        assert_eq!(c.len(), 40);
        assert!(!c.contains(&Capability::SysModule));
        let cs = ContainerSpec {
            capability_add: vec!["ALL".into()],
            ..Default::default()
        };
        // An older kernel: the capabilities it does not have are left out.
        let c = container_capabilities(&cs, 37).unwrap();
        assert_eq!(c.len(), 38);
        assert!(!c.contains(&Capability::Bpf));
    }

    #[test]
    fn every_known_name_is_an_oci_capability() {
        assert_eq!(all(40).unwrap().len(), CAPABILITIES.len());
        let cs = ContainerSpec {
            capability_add: vec!["CAP_FLY".into()],
            ..Default::default()
        };
        let err = container_capabilities(&cs, 40).unwrap_err().to_string();
        assert!(err.contains("CAP_FLY"), "{err}");
    }
}
