//! The spec `service create` sends and the one `service update` sends, built from the flags
//! with docker's defaults filled in, and checked with the manager's own offline checks
//! (`shoal_proto::validate`) so that a bad flag fails before the daemon is dialled.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use shoal_proto::validate;
use shoal_proto::{
    reference, restart_policy::Condition, ContainerSpec, Placement, RestartPolicy, ServiceMode,
    ServiceSpec,
};

use super::args::{CreateArgs, ModeArg, RestartCondition, UpdateArgs};
use super::networks::{apply_container_update, dns_config, network_mode, without_none};
use super::publish::{apply_endpoint_update, create_endpoint};
use super::security::{effective_add_drop, privileges, update_capabilities};
use crate::docker_config;

/// Docker's defaults, sent explicitly so that `inspect` shows what the service really does.
const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);
const DEFAULT_STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// The spec `service create` sends, with the image normalised and docker's defaults filled in.
pub fn build_spec(args: &CreateArgs) -> Result<ServiceSpec> {
    let name = args.name.clone().unwrap_or_default();
    validate::service_name(&name)?;
    let image = reference::parse_normalized(&args.image).map_err(|e| anyhow!("{e}"))?;
    let command = match &args.entrypoint {
        Some(entrypoint) => shlex::split(entrypoint).ok_or_else(|| {
            anyhow!("invalid --entrypoint {entrypoint:?}: unbalanced quotes or trailing backslash")
        })?,
        None => Vec::new(),
    };
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let autoscale = if args.autoscale.any() {
        Some(args.autoscale.apply(None)?)
    } else {
        None
    };
    let (mode, replicas) = match (args.mode, args.replicas) {
        // An autoscaled service starts at its minimum unless told otherwise.
        (ModeArg::Replicated, r) => (
            ServiceMode::Replicated,
            r.unwrap_or(autoscale.as_ref().map_or(1, |p| p.min_replicas)),
        ),
        (ModeArg::ReplicatedJob, r) => (ServiceMode::ReplicatedJob, r.unwrap_or(1)),
        (ModeArg::Global, None) => (ServiceMode::Global, 0),
        (ModeArg::GlobalJob, None) => (ServiceMode::GlobalJob, 0),
        (ModeArg::Global | ModeArg::GlobalJob, Some(_)) => {
            bail!("--replicas can only be used with replicated or replicated-job mode")
        }
    };
    // A job's task that completes is done: by default only a failure runs it again (docker).
    let default_condition = if validate::jobs::is_job(mode) {
        RestartCondition::OnFailure
    } else {
        RestartCondition::Any
    };
    let condition = match args.restart_condition.unwrap_or(default_condition) {
        RestartCondition::Any => Condition::Any,
        RestartCondition::None => Condition::None,
        RestartCondition::OnFailure => Condition::OnFailure,
    };
    let (capability_add, capability_drop) =
        effective_add_drop(&args.caps.cap_add, &args.caps.cap_drop);
    let mut spec = ServiceSpec {
        name,
        labels: args.label.iter().cloned().collect(),
        container: Some(ContainerSpec {
            image: image.to_string(),
            args: args.args.clone(),
            command,
            env: args.env.clone(),
            dir: args.workdir.clone().unwrap_or_default(),
            user: args.user.clone().unwrap_or_default(),
            stop_grace_period_ms: ms(args.stop_grace_period.unwrap_or(DEFAULT_STOP_GRACE_PERIOD)),
            stop_signal: args.stop_signal.clone().unwrap_or_default(),
            labels: args.container_label.iter().cloned().collect(),
            hostname: args.hostname.clone().unwrap_or_default(),
            resources: args.resources.apply(None),
            dns: dns_config(&args.dns, &args.dns_search, &args.dns_option),
            network_mode: network_mode(&args.network),
            capability_add,
            capability_drop,
            privileges: privileges(&args.security_opt)?,
            ..Default::default()
        }),
        restart: Some(RestartPolicy {
            condition: condition as i32,
            delay_ms: ms(args.restart_delay.unwrap_or(DEFAULT_RESTART_DELAY)),
            max_attempts: args.restart_max_attempts.unwrap_or(0),
            window_ms: args.restart_window.map_or(0, ms),
        }),
        replicas,
        autoscale,
        mode: mode as i32,
        placement: Some(Placement {
            constraints: args.constraint.clone(),
            max_replicas_per_node: args.replicas_max_per_node,
        }),
        networks: without_none(&args.network),
        endpoint: create_endpoint(args.endpoint_mode, &args.publish),
        update: None,
        rollback: None,
        max_concurrent: args.max_concurrent.unwrap_or(0),
        registry_auth: None,
    };
    if args.with_registry_auth {
        spec.registry_auth = Some(registry_auth_for(&image.registry)?);
    }
    if let Some(c) = spec.container.as_mut() {
        args.options.apply(c)?;
        c.healthcheck = args.health.create()?;
        args.files.apply(c);
    }
    args.rollout.apply(&mut spec);
    check_locally(&spec)?;
    Ok(spec)
}

/// `--with-registry-auth`: the credentials `shoal login` (or `docker login`) stored for the
/// image's registry. Docker sends nothing when there are none; saying so saves a failed pull.
fn registry_auth_for(registry: &str) -> Result<shoal_proto::RegistryAuth> {
    match docker_config::lookup(registry)? {
        Some(auth) => Ok(auth),
        None => bail!(
            "--with-registry-auth: there are no credentials for registry {registry} in {}; run \
             `shoal login {registry}` first",
            docker_config::path()?.display()
        ),
    }
}

/// The checks the manager makes that need no network, so a bad flag fails before dialling.
fn check_locally(spec: &ServiceSpec) -> Result<()> {
    validate::bounds::check(spec)?;
    validate::resources(spec)?;
    validate::autoscale::validate(spec)?;
    validate::networking(spec)?;
    validate::endpoint::endpoint(spec)?;
    validate::security(spec)?;
    validate::container_options(spec)?;
    validate::rollout::policies(spec)?;
    validate::jobs::validate(spec)?;
    Ok(())
}

/// The key of a `KEY=VALUE` environment entry.
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// `spec` with the update's flags applied, as docker's `service update`: `--env-rm` before
/// `--env-add` (which replaces a variable of the same name in place), resources and the
/// autoscale policy merged over the current ones. The replica count of an autoscaled service
/// is kept within the (possibly new) bounds; `--replicas` on one is the manager's to refuse.
pub fn apply_update(spec: &ServiceSpec, args: &UpdateArgs) -> Result<ServiceSpec> {
    let mut spec = spec.clone();
    let container = spec.container.get_or_insert_with(Default::default);
    if let Some(image) = &args.image {
        container.image = reference::parse_normalized(image)
            .map_err(|e| anyhow!("{e}"))?
            .to_string();
    }
    container
        .env
        .retain(|e| !args.env_rm.iter().any(|k| env_key(e) == k));
    for entry in &args.env_add {
        match container
            .env
            .iter_mut()
            .find(|e| env_key(e) == env_key(entry))
        {
            Some(existing) => existing.clone_from(entry),
            None => container.env.push(entry.clone()),
        }
    }
    container.resources = args.resources.apply(container.resources.take());
    apply_container_update(container, args);
    update_capabilities(container, &args.caps.cap_add, &args.caps.cap_drop);
    container.healthcheck = args.health.update(container.healthcheck.take())?;
    apply_endpoint_update(
        &mut spec,
        &args.publish_add,
        &args.publish_rm,
        args.endpoint_mode,
    );
    if args.autoscale_disable {
        spec.autoscale = None;
    } else if args.autoscale.any() {
        spec.autoscale = Some(args.autoscale.apply(spec.autoscale.take())?);
    }
    match (args.replicas, validate::autoscale::of_spec(&spec)) {
        (Some(n), _) => {
            if matches!(spec.mode(), ServiceMode::Global | ServiceMode::GlobalJob) {
                bail!("--replicas can only be used with replicated or replicated-job mode");
            }
            spec.replicas = n;
        }
        (None, Some(policy)) => spec.replicas = policy.clamp(spec.replicas),
        (None, None) => {}
    }
    args.options.apply(&mut spec)?;
    args.files
        .apply(spec.container.get_or_insert_with(Default::default))?;
    args.rollout.apply(&mut spec);
    if let Some(n) = args.max_concurrent {
        spec.max_concurrent = n;
    }
    if args.with_registry_auth {
        let image = spec.container.as_ref().map_or("", |c| c.image.as_str());
        let registry = reference::parse_normalized(image)
            .map_err(|e| anyhow!("{e}"))?
            .registry;
        spec.registry_auth = Some(registry_auth_for(&registry)?);
    }
    if args.force {
        // A spec that differs from every task's: all of them are replaced.
        let container = spec.container.get_or_insert_with(Default::default);
        container.force_update = container.force_update.wrapping_add(1);
    }
    check_locally(&spec)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::testing::{create_args, parse, update_args};
    use shoal_proto::validate::autoscale::ZERO_WINDOW_MS;
    use shoal_proto::ResourceAmounts;

    #[test]
    fn create_takes_trailing_command_with_dashes() {
        let a = create_args(&[
            "--name", "web", "-e", "A=1", "busybox", "sh", "-c", "echo hi", "-d",
        ]);
        assert_eq!(a.image, "busybox");
        assert_eq!(a.args, vec!["sh", "-c", "echo hi", "-d"]);
        assert!(!a.detach, "-d after the image belongs to the command");
        let spec = build_spec(&a).unwrap();
        let c = spec.container.unwrap();
        assert_eq!(c.image, "docker.io/library/busybox:latest");
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(c.stop_grace_period_ms, 10_000);
        let r = spec.restart.unwrap();
        assert_eq!(r.delay_ms, 5_000);
        assert_eq!(r.condition, Condition::Any as i32);
        assert_eq!(spec.replicas, 1);
    }

    #[test]
    fn create_flags() {
        let a = create_args(&[
            "--name=web",
            "--replicas",
            "3",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "1m30s",
            "--restart-max-attempts",
            "4",
            "--restart-window",
            "2m",
            "--stop-grace-period",
            "1.5s",
            "--stop-signal",
            "int",
            "--entrypoint",
            "sh -c",
            "-w",
            "/app",
            "-u",
            "1000:1000",
            "--hostname",
            "h",
            "-l",
            "tier=front",
            "--container-label",
            "x",
            "-d",
            "-q",
            "registry.example.com:5000/app:1.0",
        ]);
        assert!(a.detach && a.quiet);
        let spec = build_spec(&a).unwrap();
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.labels.get("tier").map(String::as_str), Some("front"));
        let c = spec.container.unwrap();
        assert_eq!(c.image, "registry.example.com:5000/app:1.0");
        assert_eq!(c.command, vec!["sh", "-c"]);
        assert_eq!(c.dir, "/app");
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.hostname, "h");
        assert_eq!(c.stop_grace_period_ms, 1_500);
        assert_eq!(c.stop_signal, "SIGINT");
        assert_eq!(c.labels.get("x").map(String::as_str), Some(""));
        let r = spec.restart.unwrap();
        assert_eq!(r.condition, Condition::OnFailure as i32);
        assert_eq!(
            (r.delay_ms, r.max_attempts, r.window_ms),
            (90_000, 4, 120_000)
        );
    }

    #[test]
    fn create_rejects_bad_values_clearly() {
        let err = parse(&["create", "--name", "web", "--replicas", "-1", "busybox"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid replicas value \"-1\": must be a non-negative integer"),
            "{err}"
        );
        let err = parse(&["create", "--name", "web", "--replicas", "abc", "busybox"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid replicas value \"abc\""), "{err}");
        let err = parse(&["create", "-e", "=x", "busybox"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid environment variable \"=x\""), "{err}");
        let err = parse(&["create", "--restart-delay", "5", "busybox"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration \"5\""), "{err}");
        let err = parse(&["create", "--stop-signal", "SIGNOPE", "busybox"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid stop signal"), "{err}");

        let err = build_spec(&create_args(&["--name", "web", "BusyBox"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be lowercase"), "{err}");
        let err = build_spec(&create_args(&["busybox"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--name"), "{err}");
        let err = build_spec(&create_args(&["--name", "web_1", "busybox"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid service name"), "{err}");
        let err = build_spec(&create_args(&[
            "--name",
            "w",
            "--entrypoint",
            "sh '-c",
            "busybox",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("--entrypoint"), "{err}");
    }

    #[test]
    fn create_with_resources_and_autoscaling() {
        let spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--limit-cpu",
            "0.2",
            "--limit-memory",
            "64M",
            "--reserve-memory",
            "32M",
            "--autoscale-max",
            "4",
            "--autoscale-cpu",
            "50%",
            "--autoscale-down-window",
            "0s",
            "busybox",
        ]))
        .unwrap();
        let r = spec.container.as_ref().unwrap().resources.unwrap();
        assert_eq!(
            r.limits,
            Some(ResourceAmounts {
                nano_cpus: 200_000_000,
                memory_bytes: 64 << 20
            })
        );
        assert_eq!(r.reservations.unwrap().memory_bytes, 32 << 20);
        let p = spec.autoscale.unwrap();
        assert_eq!((p.min_replicas, p.max_replicas), (1, 4));
        assert_eq!(p.target_cpu_percent, 50.0);
        assert_eq!(p.scale_down_window_ms, ZERO_WINDOW_MS, "0s: at once");
        assert_eq!(spec.replicas, 1, "starts at the minimum");

        let err = |args: &[&str]| {
            let mut all = vec!["--name", "web"];
            all.extend_from_slice(args);
            all.push("busybox");
            build_spec(&create_args(&all)).unwrap_err().to_string()
        };
        assert!(err(&["--autoscale-cpu", "50"]).contains("--autoscale-max"));
        assert!(err(&[
            "--autoscale-min",
            "5",
            "--autoscale-max",
            "2",
            "--autoscale-cpu",
            "50"
        ])
        .contains("--autoscale-min 5 is above --autoscale-max 2"));
        for bad in ["0", "0%", "150%", "-5"] {
            let e = parse(&["create", "--autoscale-cpu", bad, "busybox"])
                .unwrap_err()
                .to_string();
            assert!(e.contains("out of range"), "{bad}: {e}");
        }
        assert!(err(&["--autoscale-max", "2", "--autoscale-memory", "80"])
            .contains("--limit-memory or --reserve-memory"));
        assert!(err(&[
            "--autoscale-max",
            "2",
            "--autoscale-query",
            "sum(rate(x[1m])"
        ])
        .contains("never closed"));
        assert!(err(&["--autoscale-max", "2", "--autoscale-query", "up"])
            .contains("needs --autoscale-target"));
        assert!(err(&["--autoscale-max", "2", "--autoscale-target", "3"])
            .contains("give the query too"));
        assert!(err(&[
            "--autoscale-max",
            "2",
            "--autoscale-cpu",
            "50",
            "--replicas",
            "3"
        ])
        .contains("outside the autoscale bounds"));
        assert!(err(&["--limit-cpu", "0.001"]).contains("minimum of 0.01 CPUs"));
        assert!(err(&["--limit-memory", "64M", "--reserve-memory", "1G"])
            .contains("--reserve-memory is above --limit-memory"));
    }

    #[test]
    fn update_merges_into_the_current_spec() {
        let current = build_spec(&create_args(&[
            "--name",
            "web",
            "-e",
            "A=1",
            "-e",
            "B=2",
            "-e",
            "C=3",
            "--limit-cpu",
            "1",
            "busybox",
        ]))
        .unwrap();
        let a = update_args(&[
            "--image",
            "nginx:1.25",
            "--env-rm",
            "B",
            "--env-add",
            "A=10",
            "--env-add",
            "D=4",
            "--limit-memory",
            "64M",
            "--limit-cpu",
            "0",
            "-d",
            "web",
        ]);
        assert!(a.detach);
        let spec = apply_update(&current, &a).unwrap();
        let c = spec.container.as_ref().unwrap();
        assert_eq!(c.image, "docker.io/library/nginx:1.25");
        assert_eq!(c.env, vec!["A=10", "C=3", "D=4"]);
        let limits = c.resources.unwrap().limits.unwrap();
        assert_eq!((limits.nano_cpus, limits.memory_bytes), (0, 64 << 20));
        assert_eq!(spec.replicas, 1);
        // Nothing given: nothing changes.
        assert_eq!(
            apply_update(&current, &update_args(&["web"])).unwrap(),
            current
        );
    }

    #[test]
    fn update_changes_and_removes_autoscaling() {
        let mut current = build_spec(&create_args(&[
            "--name",
            "web",
            "--autoscale-max",
            "4",
            "--autoscale-cpu",
            "50",
            "busybox",
        ]))
        .unwrap();
        current.replicas = 3;
        // New bounds: the count is brought within them.
        let spec = apply_update(&current, &update_args(&["--autoscale-max", "2", "web"])).unwrap();
        assert_eq!(spec.replicas, 2);
        assert_eq!(spec.autoscale.as_ref().unwrap().target_cpu_percent, 50.0);
        // A new target replaces the old one.
        let spec = apply_update(
            &current,
            &update_args(&[
                "--autoscale-query",
                "avg(x)",
                "--autoscale-target",
                "5",
                "web",
            ]),
        )
        .unwrap();
        let p = spec.autoscale.unwrap();
        assert_eq!(
            (p.target_cpu_percent, p.query.as_str(), p.query_target),
            (0.0, "avg(x)", 5.0)
        );
        // Disabled: the count stays.
        let spec = apply_update(&current, &update_args(&["--autoscale-disable", "web"])).unwrap();
        assert_eq!((spec.autoscale, spec.replicas), (None, 3));
        // Enabling on a plain service needs the maximum.
        let plain = build_spec(&create_args(&["--name", "web", "busybox"])).unwrap();
        assert!(
            apply_update(&plain, &update_args(&["--autoscale-cpu", "50", "web"]))
                .unwrap_err()
                .to_string()
                .contains("--autoscale-max")
        );
        assert!(parse(&[
            "update",
            "--autoscale-disable",
            "--autoscale-max",
            "3",
            "web"
        ])
        .is_ok());
    }

    #[test]
    fn publish_flags_on_create_and_update() {
        let spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--publish",
            "8080:80",
            "-p",
            "mode=host,published=9090,target=90",
            "busybox",
        ]))
        .unwrap();
        let e = spec.endpoint.clone().unwrap();
        assert_eq!(e.mode, 0);
        assert_eq!(
            e.ports
                .iter()
                .map(|p| (p.published_port, p.target_port, p.publish_mode))
                .collect::<Vec<_>>(),
            [(8080, 80, 0), (9090, 90, 1)]
        );
        // dnsrr refuses routing-mesh ports before the daemon is dialled.
        let err = build_spec(&create_args(&[
            "--name",
            "web",
            "--endpoint-mode",
            "dnsrr",
            "-p",
            "8080:80",
            "busybox",
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("port published with ingress mode can't be used with dnsrr mode"),
            "{err}"
        );
        let err = build_spec(&create_args(&[
            "--name", "web", "-p", "8080:80", "-p", "8080:81", "busybox",
        ]))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "port 8080/tcp is published more than once in this service"
        );
        let err = parse(&["create", "-p", "80/sctp", "busybox"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid protocol \"sctp\""), "{err}");
        let updated = apply_update(
            &spec,
            &update_args(&[
                "--publish-rm",
                "8080",
                "--publish-add",
                "81",
                "--endpoint-mode",
                "vip",
                "web",
            ]),
        )
        .unwrap();
        let ports: Vec<(u32, u32)> = updated
            .endpoint
            .unwrap()
            .ports
            .iter()
            .map(|p| (p.published_port, p.target_port))
            .collect();
        assert_eq!(ports, [(9090, 90), (0, 81)]);
    }

    #[test]
    fn capabilities_and_security_options() {
        let spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--cap-add",
            "net_admin",
            "--cap-add",
            "CAP_SYS_ADMIN",
            "--cap-drop",
            "NET_RAW",
            "--cap-drop",
            "sys_admin",
            "--security-opt",
            "seccomp=unconfined",
            "busybox",
        ]))
        .unwrap();
        let c = spec.container.clone().unwrap();
        assert_eq!(c.capability_add, vec!["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]);
        assert_eq!(c.capability_drop, vec!["CAP_NET_RAW"], "adding wins");
        let seccomp = c.privileges.unwrap().seccomp.unwrap();
        assert_eq!(
            seccomp.mode(),
            shoal_proto::privileges::seccomp::Mode::Unconfined
        );
        let updated = apply_update(
            &spec,
            &update_args(&["--cap-add", "NET_RAW", "--cap-drop", "NET_ADMIN", "web"]),
        )
        .unwrap();
        let c = updated.container.unwrap();
        assert_eq!(c.capability_add, vec!["CAP_NET_RAW", "CAP_SYS_ADMIN"]);
        assert_eq!(c.capability_drop, vec!["CAP_NET_ADMIN"]);
        for (flag, value, words) in [
            (
                "--cap-add",
                "CAP_FLY",
                "unknown capability \"CAP_FLY\" in --cap-add",
            ),
            (
                "--cap-drop",
                "bogus",
                "unknown capability \"bogus\" in --cap-drop",
            ),
            (
                "--security-opt",
                "no-new-privileges",
                "not supported for services",
            ),
        ] {
            let err = parse(&["create", flag, value, "busybox"])
                .unwrap_err()
                .to_string();
            assert!(err.contains(words), "{err}");
        }
        let err = parse(&["update", "--cap-add", "nope", "web"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown capability \"nope\""), "{err}");
    }
}
