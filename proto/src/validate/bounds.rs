//! Upper bounds on what one service spec may ask for.
//!
//! Every number and list in a spec turns into work the managers do and state they replicate:
//! `service scale web=100000000` once became one Raft entry of 10⁸ task creations, which every
//! leader in turn ran out of memory applying. The bounds are far above any real use on the
//! hosts Shoal targets, and each refusal names the limit and the flag, so nobody meets one by
//! surprise.

use crate::ServiceSpec;

/// Replicas of one service (and `--autoscale-max`): a hundred per node on a thousand nodes.
pub const MAX_REPLICAS: u64 = 100_000;
/// Entries in any one list of a spec: args, env, labels, constraints, DNS settings…
pub const MAX_LIST: usize = 1_000;
/// Networks one service attaches to (each is a network interface in every task).
pub const MAX_NETWORKS: usize = 64;
/// Bytes of any one string of a spec (an env entry, a label value, an argument…).
pub const MAX_STRING: usize = 64 * 1024;

/// Why a spec is out of bounds.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoundsError {
    #[error(
        "{replicas} replicas is above the limit of {MAX_REPLICAS} per service: ask for fewer \
         (`--replicas`, `service scale`), or split the work over several services"
    )]
    TooManyReplicas { replicas: u64 },
    #[error(
        "--autoscale-max {max} is above the limit of {MAX_REPLICAS} replicas per service: give \
         a lower maximum"
    )]
    AutoscaleMaxTooHigh { max: u64 },
    #[error("too many {what} ({count}, {flag}): a service may have at most {max}")]
    TooMany {
        what: &'static str,
        flag: &'static str,
        count: usize,
        max: usize,
    },
    #[error(
        "a value of {what} ({flag}) is {len} bytes long: at most {MAX_STRING} bytes are allowed"
    )]
    TooLong {
        what: &'static str,
        flag: &'static str,
        len: usize,
    },
}

fn list<'a, S: AsRef<str> + 'a>(
    what: &'static str,
    flag: &'static str,
    items: impl ExactSizeIterator<Item = &'a S>,
    max: usize,
) -> Result<(), BoundsError> {
    let count = items.len();
    if count > max {
        return Err(BoundsError::TooMany {
            what,
            flag,
            count,
            max,
        });
    }
    strings(what, flag, items)
}

fn strings<'a, S: AsRef<str> + 'a>(
    what: &'static str,
    flag: &'static str,
    mut items: impl Iterator<Item = &'a S>,
) -> Result<(), BoundsError> {
    match items.find(|s| s.as_ref().len() > MAX_STRING) {
        Some(long) => Err(BoundsError::TooLong {
            what,
            flag,
            len: long.as_ref().len(),
        }),
        None => Ok(()),
    }
}

/// Every bound of [`ServiceSpec`]: replicas, the autoscale maximum, and every list and string.
pub fn check(spec: &ServiceSpec) -> Result<(), BoundsError> {
    if spec.replicas > MAX_REPLICAS {
        return Err(BoundsError::TooManyReplicas {
            replicas: spec.replicas,
        });
    }
    if let Some(a) = &spec.autoscale {
        if a.max_replicas > MAX_REPLICAS {
            return Err(BoundsError::AutoscaleMaxTooHigh {
                max: a.max_replicas,
            });
        }
        strings(
            "autoscale query",
            "--autoscale-query",
            [&a.query].into_iter(),
        )?;
    }
    labels("service labels", "--label", &spec.labels)?;
    if let Some(c) = &spec.container {
        strings("image", "IMAGE", [&c.image].into_iter())?;
        list("arguments", "COMMAND ARG…", c.args.iter(), MAX_LIST)?;
        list(
            "entrypoint words",
            "--entrypoint",
            c.command.iter(),
            MAX_LIST,
        )?;
        list("environment variables", "--env", c.env.iter(), MAX_LIST)?;
        strings(
            "settings",
            "--workdir/--user/--hostname/--stop-signal",
            [&c.dir, &c.user, &c.hostname, &c.stop_signal].into_iter(),
        )?;
        labels("container labels", "--container-label", &c.labels)?;
        if let Some(d) = &c.dns {
            list("DNS servers", "--dns", d.nameservers.iter(), MAX_LIST)?;
            list(
                "DNS search domains",
                "--dns-search",
                d.search.iter(),
                MAX_LIST,
            )?;
            list("DNS options", "--dns-option", d.options.iter(), MAX_LIST)?;
        }
        list(
            "secrets",
            "--secret",
            c.secrets.iter().map(|r| &r.target),
            MAX_LIST,
        )?;
        list(
            "configs",
            "--config",
            c.configs.iter().map(|r| &r.target),
            MAX_LIST,
        )?;
        list(
            "capabilities",
            "--cap-add",
            c.capability_add.iter(),
            MAX_LIST,
        )?;
        list(
            "capabilities",
            "--cap-drop",
            c.capability_drop.iter(),
            MAX_LIST,
        )?;
        if let Some(s) = c.privileges.as_ref().and_then(|p| p.seccomp.as_ref()) {
            strings(
                "the seccomp profile",
                "--security-opt seccomp=PATH",
                [&s.profile].into_iter(),
            )?;
        }
    }
    if let Some(p) = &spec.placement {
        list(
            "constraints",
            "--constraint",
            p.constraints.iter(),
            MAX_LIST,
        )?;
    }
    let networks: Vec<&String> = spec.networks.iter().map(|n| &n.target).collect();
    list(
        "networks",
        "--network",
        networks.iter().copied(),
        MAX_NETWORKS,
    )?;
    for n in &spec.networks {
        list(
            "network aliases",
            "--network alias=…",
            n.aliases.iter(),
            MAX_LIST,
        )?;
    }
    if let Some(e) = &spec.endpoint {
        if e.ports.len() > MAX_LIST {
            return Err(BoundsError::TooMany {
                what: "published ports",
                flag: "--publish",
                count: e.ports.len(),
                max: MAX_LIST,
            });
        }
    }
    Ok(())
}

fn labels(
    what: &'static str,
    flag: &'static str,
    labels: &std::collections::HashMap<String, String>,
) -> Result<(), BoundsError> {
    list(what, flag, labels.keys(), MAX_LIST)?;
    strings(what, flag, labels.values())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AutoscalePolicy, ContainerSpec};

    #[test]
    fn replicas_and_the_autoscale_maximum_are_bounded() {
        let mut spec = ServiceSpec {
            replicas: MAX_REPLICAS,
            ..Default::default()
        };
        assert_eq!(check(&spec), Ok(()));
        spec.replicas = 100_000_000;
        let err = check(&spec).unwrap_err();
        assert_eq!(
            err,
            BoundsError::TooManyReplicas {
                replicas: 100_000_000
            }
        );
        assert!(err.to_string().contains("limit of 100000 per service"));
        spec.replicas = 1;
        spec.autoscale = Some(AutoscalePolicy {
            max_replicas: MAX_REPLICAS + 1,
            ..Default::default()
        });
        assert!(matches!(
            check(&spec),
            Err(BoundsError::AutoscaleMaxTooHigh { .. })
        ));
    }

    #[test]
    fn lists_and_strings_are_bounded() {
        let container = |env: Vec<String>| ServiceSpec {
            container: Some(ContainerSpec {
                env,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(check(&container(vec!["A=1".into(); MAX_LIST])), Ok(()));
        let err = check(&container(vec!["A=1".into(); MAX_LIST + 1])).unwrap_err();
        assert!(err
            .to_string()
            .contains("too many environment variables (1001, --env)"));
        let err = check(&container(vec!["A".repeat(MAX_STRING + 1)])).unwrap_err();
        assert!(matches!(err, BoundsError::TooLong { flag: "--env", .. }));
        let mut spec = ServiceSpec::default();
        spec.labels.insert("k".into(), "v".repeat(MAX_STRING + 1));
        assert!(check(&spec).is_err());
    }
}
