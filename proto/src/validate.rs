//! The checks a service spec must pass, in one place that both sides share: the control API
//! runs them before it stores a spec (and maps [`SpecError`] to gRPC statuses), the CLI runs
//! the ones it can before it dials the daemon, so a bad flag fails early with the same words.
//!
//! Everything here is pure: no I/O, no store. Checks that need the cluster's state (does the
//! service exist, does Prometheus accept a query) stay with the manager.

pub mod autoscale;
pub mod bounds;
pub mod cluster;
pub mod constraint;
pub mod endpoint;
pub mod health;
pub mod jobs;
pub mod mounts;
pub mod network;
pub mod options;
pub mod rollout;
pub mod secrets;
pub mod security;

pub use autoscale::PolicyError;
pub use bounds::BoundsError;
pub use constraint::{ConstraintError, PlacementError};
pub use endpoint::EndpointError;
pub use health::HealthError;
pub use jobs::JobError;
pub use mounts::MountError;
pub use options::OptionsError;
pub use rollout::RolloutError;
pub use secrets::SecretError;
pub use security::SecurityError;

use crate::reference::{self, ReferenceError};
use crate::ServiceSpec;

/// Why a service spec was refused. The messages are the ones users see, from the CLI or the
/// daemon, so they say what to do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("a service needs a name: pass `--name NAME`")]
    NoName,
    #[error(
        "invalid service name {0:?}: use 1 to 63 letters, digits and '-', not starting or \
         ending with '-'"
    )]
    InvalidName(String),
    #[error("--limit-cpu is below the minimum of 0.01 CPUs")]
    CpuLimitTooLow,
    #[error("--limit-memory is below the minimum of 6MiB")]
    MemoryLimitTooLow,
    #[error("--reserve-cpu is above --limit-cpu: a task cannot be promised more than it may use")]
    CpuReservationAboveLimit,
    #[error(
        "--reserve-memory is above --limit-memory: a task cannot be promised more than it may use"
    )]
    MemoryReservationAboveLimit,
    #[error("a service needs an image: `shoal service create --name NAME IMAGE [CMD…]`")]
    NoImage,
    #[error("invalid image {image:?}: {reason}")]
    InvalidImage {
        image: String,
        reason: ReferenceError,
    },
    #[error("image reference {image:?} is not normalised (expected {expected})")]
    ImageNotNormalised { image: String, expected: String },
    #[error(transparent)]
    Bounds(#[from] BoundsError),
    #[error(transparent)]
    Autoscale(#[from] PolicyError),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("invalid --dns value {0:?}: a DNS server is an IP address, e.g. 198.18.0.53")]
    InvalidNameserver(String),
    #[error("a service cannot attach to network {0:?}: give a network name or ID")]
    EmptyNetwork(String),
    #[error(
        "--network none gives tasks loopback only and cannot be combined with other networks \
         ({0}); drop one or the other"
    )]
    NoneWithNetworks(String),
    #[error("unknown network mode {0:?}: the only mode is \"none\" (`--network none`)")]
    UnknownNetworkMode(String),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Docker's rule for service names (they become DNS names later).
pub fn service_name(name: &str) -> Result<(), SpecError> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let ok_ends = !name.starts_with('-') && !name.ends_with('-');
    if name.is_empty() {
        return Err(SpecError::NoName);
    }
    if !ok_chars || !ok_ends || name.len() > 63 {
        return Err(SpecError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Docker's smallest CPU limit (`--limit-cpu 0.01`) and memory limit (6 MiB).
const MIN_NANO_CPUS: u64 = 10_000_000;
const MIN_MEMORY_BYTES: u64 = 6 << 20;

/// Limits docker would accept, and reservations within them.
pub fn resources(spec: &ServiceSpec) -> Result<(), SpecError> {
    let Some(r) = spec.container.as_ref().and_then(|c| c.resources.as_ref()) else {
        return Ok(());
    };
    let limits = r.limits.unwrap_or_default();
    let reservations = r.reservations.unwrap_or_default();
    if limits.nano_cpus > 0 && limits.nano_cpus < MIN_NANO_CPUS {
        return Err(SpecError::CpuLimitTooLow);
    }
    if limits.memory_bytes > 0 && limits.memory_bytes < MIN_MEMORY_BYTES {
        return Err(SpecError::MemoryLimitTooLow);
    }
    if limits.nano_cpus > 0 && reservations.nano_cpus > limits.nano_cpus {
        return Err(SpecError::CpuReservationAboveLimit);
    }
    if limits.memory_bytes > 0 && reservations.memory_bytes > limits.memory_bytes {
        return Err(SpecError::MemoryReservationAboveLimit);
    }
    Ok(())
}

/// The image is given and already normalised (`docker.io/library/busybox:latest`): the CLI
/// normalises it, so the stored spec says exactly what runs.
pub fn image(spec: &ServiceSpec) -> Result<(), SpecError> {
    let image = spec
        .container
        .as_ref()
        .map(|c| c.image.as_str())
        .unwrap_or_default();
    if image.is_empty() {
        return Err(SpecError::NoImage);
    }
    let parsed = reference::parse_normalized(image).map_err(|reason| SpecError::InvalidImage {
        image: image.to_string(),
        reason,
    })?;
    if parsed.to_string() != image {
        return Err(SpecError::ImageNotNormalised {
            image: image.to_string(),
            expected: parsed.to_string(),
        });
    }
    Ok(())
}

/// `--dns` servers are IP addresses (resolv.conf takes nothing else), and every `--network`
/// names a network.
pub fn networking(spec: &ServiceSpec) -> Result<(), SpecError> {
    let dns = spec.container.as_ref().and_then(|c| c.dns.as_ref());
    for server in dns.map_or(&[][..], |d| &d.nameservers[..]) {
        if server.parse::<std::net::IpAddr>().is_err() {
            return Err(SpecError::InvalidNameserver(server.clone()));
        }
    }
    if let Some(n) = spec.networks.iter().find(|n| n.target.trim().is_empty()) {
        return Err(SpecError::EmptyNetwork(n.target.clone()));
    }
    match spec
        .container
        .as_ref()
        .map_or("", |c| c.network_mode.as_str())
    {
        "" => {}
        NETWORK_NONE if spec.networks.is_empty() => {}
        NETWORK_NONE => {
            let names: Vec<&str> = spec.networks.iter().map(|n| n.target.as_str()).collect();
            return Err(SpecError::NoneWithNetworks(names.join(", ")));
        }
        other => return Err(SpecError::UnknownNetworkMode(other.to_string())),
    }
    Ok(())
}

/// `--cap-add`/`--cap-drop` name known capabilities and a `--security-opt seccomp=PATH`
/// profile parses (see [`security`]).
pub fn security(spec: &ServiceSpec) -> Result<(), SpecError> {
    match &spec.container {
        Some(c) => Ok(security::container(c)?),
        None => Ok(()),
    }
}

/// The container's options (`--sysctl`, `--ulimit`, `--group`, `--host`, `--log-opt`),
/// mounts, healthcheck, and its `--secret`s and `--config`s.
pub fn container_options(spec: &ServiceSpec) -> Result<(), SpecError> {
    if let Some(c) = &spec.container {
        options::container(c)?;
        mounts::container(c)?;
        health::container(c)?;
        secrets::references(c)?;
    }
    Ok(())
}

/// `--network none`'s network mode: loopback only.
pub const NETWORK_NONE: &str = "none";

/// Everything about a spec that can be checked on its own, in the order the control API has
/// always checked it (so the first error reported stays the same): name, bounds, resources,
/// autoscale policy, mode and placement, image, DNS servers and networks, published ports,
/// then the security settings, the container's options, its mounts and its healthcheck.
pub fn service_spec(spec: &ServiceSpec) -> Result<(), SpecError> {
    service_name(&spec.name)?;
    bounds::check(spec)?;
    resources(spec)?;
    autoscale::validate(spec)?;
    constraint::validate_placement(spec)?;
    image(spec)?;
    networking(spec)?;
    endpoint::endpoint(spec)?;
    security(spec)?;
    container_options(spec)?;
    rollout::policies(spec)?;
    Ok(jobs::validate(spec)?)
}

/// What an update may not change about a stored spec: its mode, and the replica count of an
/// autoscaled service (the autoscaler owns it).
pub fn spec_change(old: &ServiceSpec, new: &ServiceSpec) -> Result<(), SpecError> {
    constraint::validate_mode_change(old, new)?;
    autoscale::check_replicas_change(old, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContainerSpec, ResourceAmounts, Resources};

    #[test]
    fn service_names_follow_dockers_rule() {
        assert!(service_name("web-1").is_ok());
        for bad in ["", "bad_name!", "-web", "web-", &"x".repeat(64)] {
            assert!(service_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn with_container(
        image: &str,
        limits: ResourceAmounts,
        reservations: ResourceAmounts,
    ) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            container: Some(ContainerSpec {
                image: image.into(),
                resources: Some(Resources {
                    limits: Some(limits),
                    reservations: Some(reservations),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resources_within_dockers_bounds() {
        let amounts = |nano_cpus, memory_bytes| ResourceAmounts {
            nano_cpus,
            memory_bytes,
        };
        let check = |l, r| resources(&with_container("x", l, r));
        assert_eq!(check(amounts(0, 0), amounts(5, 5)), Ok(()));
        assert_eq!(
            check(amounts(1_000, 0), amounts(0, 0)),
            Err(SpecError::CpuLimitTooLow)
        );
        assert_eq!(
            check(amounts(0, 1 << 20), amounts(0, 0)),
            Err(SpecError::MemoryLimitTooLow)
        );
        assert_eq!(
            check(amounts(MIN_NANO_CPUS, 0), amounts(MIN_NANO_CPUS + 1, 0)),
            Err(SpecError::CpuReservationAboveLimit)
        );
        assert_eq!(
            check(amounts(0, 64 << 20), amounts(0, 65 << 20)),
            Err(SpecError::MemoryReservationAboveLimit)
        );
    }

    #[test]
    fn images_must_be_given_and_normalised() {
        let none = ResourceAmounts::default();
        let spec = |image| with_container(image, none, none);
        assert!(service_spec(&spec("docker.io/library/busybox:latest")).is_ok());
        assert_eq!(image(&spec("")), Err(SpecError::NoImage));
        assert!(matches!(
            image(&spec("busybox")),
            Err(SpecError::ImageNotNormalised { .. })
        ));
        assert!(matches!(
            image(&spec("BusyBox")),
            Err(SpecError::InvalidImage { .. })
        ));
    }

    #[test]
    fn network_none_stands_alone() {
        let mut spec = ServiceSpec {
            container: Some(ContainerSpec {
                network_mode: NETWORK_NONE.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(networking(&spec), Ok(()));
        spec.networks = vec![crate::NetworkAttachmentConfig {
            target: "front".into(),
            aliases: vec![],
        }];
        let err = networking(&spec).unwrap_err();
        assert_eq!(err, SpecError::NoneWithNetworks("front".into()));
        assert!(err.to_string().contains("cannot be combined"), "{err}");
        spec.networks.clear();
        if let Some(c) = spec.container.as_mut() {
            c.network_mode = "host".into();
        }
        let err = networking(&spec).unwrap_err();
        assert!(
            err.to_string().contains("unknown network mode \"host\""),
            "{err}"
        );
    }

    #[test]
    fn dns_servers_are_ips_and_networks_are_named() {
        let mut spec = ServiceSpec {
            container: Some(ContainerSpec {
                dns: Some(crate::DnsConfig {
                    nameservers: vec!["198.18.0.53".into(), "fd00::53".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(networking(&spec), Ok(()));
        if let Some(dns) = spec.container.as_mut().and_then(|c| c.dns.as_mut()) {
            dns.nameservers.push("dns.example.com".into());
        }
        let err = networking(&spec).unwrap_err();
        assert_eq!(err, SpecError::InvalidNameserver("dns.example.com".into()));
        assert!(err.to_string().contains("invalid --dns value"), "{err}");
        spec.container = None;
        spec.networks = vec![crate::NetworkAttachmentConfig::default()];
        assert_eq!(
            networking(&spec),
            Err(SpecError::EmptyNetwork(String::new()))
        );
    }
}
