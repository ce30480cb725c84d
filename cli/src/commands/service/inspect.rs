//! `service inspect`: the service as JSON, or docker's `--pretty` layout with the resources,
//! DNS settings, healthcheck, networks (by name) and the autoscale policy and its recent
//! decisions.

use std::collections::HashMap;

use anyhow::Result;
use shoal_proto::validate::autoscale::{Policy, Target};
use shoal_proto::{restart_policy::Condition, AutoscalePolicy, Service, ServiceMode};

use super::args::InspectArgs;
use super::get_service;
use super::health;
use super::list::familiar_image;
use super::publish;
use super::rollout;
use super::security;
use crate::client::Client;
use crate::commands::flags::cpus_text;
use crate::commands::list_networks;
use crate::commands::{each, print_inspected, report_each};
use crate::output::{self, Pretty};

pub(super) async fn inspect(client: &Client, args: InspectArgs) -> Result<()> {
    let (found, errors) = each(&args.services, |name| get_service(client, name)).await;
    if args.pretty {
        // The spec names networks by ID; people know them by name.
        let names = network_names(client).await;
        let blocks: Vec<String> = found.iter().map(|s| pretty_with(s, &names)).collect();
        print!("{}", blocks.join("\n"));
        return report_each(&errors);
    }
    print_inspected(&found, &errors, None, service_json)
}

/// The service as JSON, with its endpoint (allocated and asked for) in docker's shape.
fn service_json(service: &Service) -> Result<serde_json::Value> {
    let mut value = output::inspect_json(service)?;
    if let Some(map) = value.as_object_mut() {
        map.remove("endpoint");
        map.insert(
            "Endpoint".into(),
            publish::endpoint_json(service.endpoint.as_ref()),
        );
    }
    rollout::name_status_state(service, &mut value);
    let spec_endpoint = service.spec.as_ref().and_then(|s| s.endpoint.as_ref());
    if let Some(spec) = value.get_mut("spec").and_then(|v| v.as_object_mut()) {
        spec.remove("endpoint");
        spec.insert(
            "EndpointSpec".into(),
            publish::endpoint_spec_json(spec_endpoint),
        );
        let container = service.spec.as_ref().and_then(|s| s.container.as_ref());
        if let (Some(json), Some(c)) = (
            spec.get_mut("container").and_then(|v| v.as_object_mut()),
            container,
        ) {
            security::docker_json(json, c);
        }
    }
    Ok(value)
}

/// Network names by ID; none if they cannot be read (the IDs are shown instead).
async fn network_names(client: &Client) -> HashMap<String, String> {
    let Ok(networks) = list_networks(client).await else {
        return HashMap::new();
    };
    networks
        .into_iter()
        .map(|n| {
            let name = n.spec.map(|s| s.name).unwrap_or_default();
            (n.id, name)
        })
        .collect()
}

/// Words joined by spaces, each quoted when it would otherwise read as several (or as none).
fn words(items: &[String]) -> String {
    items
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{w:?}")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Docker's `service inspect --pretty` layout, for what a Shoal service has.
#[cfg(test)]
pub fn pretty(service: &Service) -> String {
    pretty_with(service, &HashMap::new())
}

/// The layout, with network IDs shown by the names in `network_names` where known.
pub fn pretty_with(service: &Service, network_names: &HashMap<String, String>) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let c = spec.container.clone().unwrap_or_default();
    let mut p = Pretty::default();
    p.field(0, "ID", service.id.clone());
    p.field(0, "Name", spec.name.clone());
    p.labels(0, &spec.labels);
    if let Some(meta) = &service.meta {
        p.field(0, "Created at", output::rfc3339(meta.created_at_ms));
        p.field(0, "Updated at", output::rfc3339(meta.updated_at_ms));
    }
    match spec.mode() {
        ServiceMode::Replicated => {
            p.field(0, "Service Mode", "Replicated");
            p.field(1, "Replicas", spec.replicas.to_string());
        }
        ServiceMode::Global => p.field(0, "Service Mode", "Global"),
        ServiceMode::ReplicatedJob => {
            p.field(0, "Service Mode", "Replicated Job");
            let concurrent = match spec.max_concurrent {
                0 => spec.replicas,
                n => n,
            };
            p.field(1, "Max Concurrent", concurrent.to_string());
            p.field(1, "Total Completions", spec.replicas.to_string());
        }
        ServiceMode::GlobalJob => p.field(0, "Service Mode", "Global Job"),
    }
    rollout::pretty(&mut p, service);
    if let Some(r) = &spec.restart {
        let condition = Condition::try_from(r.condition).unwrap_or(Condition::Any);
        p.section(0, "RestartPolicy");
        p.field(
            1,
            "Condition",
            output::enum_word(condition.as_str_name(), "CONDITION_").replace('_', "-"),
        );
        p.field(1, "Delay", output::format_duration_ms(r.delay_ms));
        let attempts = if r.max_attempts == 0 {
            "unlimited".to_string()
        } else {
            r.max_attempts.to_string()
        };
        p.field(1, "Max Attempts", attempts);
        if r.window_ms > 0 {
            p.field(1, "Window", output::format_duration_ms(r.window_ms));
        }
    }
    p.section(0, "ContainerSpec");
    p.field(1, "Image", familiar_image(&c.image, false));
    if !c.command.is_empty() {
        p.field(1, "Command", words(&c.command));
    }
    if !c.args.is_empty() {
        p.field(1, "Args", words(&c.args));
    }
    if !c.env.is_empty() {
        p.field(1, "Env", words(&c.env));
    }
    if !c.dir.is_empty() {
        p.field(1, "Dir", c.dir.clone());
    }
    if !c.user.is_empty() {
        p.field(1, "User", c.user.clone());
    }
    if !c.hostname.is_empty() {
        p.field(1, "Hostname", c.hostname.clone());
    }
    p.labels(1, &c.labels);
    if let Some(dns) = &c.dns {
        p.section(1, "DNS");
        for (key, values) in [
            ("Nameservers", &dns.nameservers),
            ("Search", &dns.search),
            ("Options", &dns.options),
        ] {
            if !values.is_empty() {
                p.field(2, key, values.join(" "));
            }
        }
    }
    if c.stop_grace_period_ms > 0 {
        p.field(
            1,
            "StopGracePeriod",
            output::format_duration_ms(c.stop_grace_period_ms),
        );
    }
    if !c.stop_signal.is_empty() {
        p.field(1, "StopSignal", c.stop_signal.clone());
    }
    pretty_security(&mut p, &c);
    health::pretty_health(&mut p, &c);
    super::files::pretty(&mut p, &c);
    if let Some(r) = &c.resources {
        p.section(0, "Resources");
        for (name, amounts) in [("Reservations", r.reservations), ("Limits", r.limits)] {
            let Some(a) = amounts else { continue };
            p.section(1, name);
            if a.nano_cpus > 0 {
                p.field(2, "CPU", cpus_text(a.nano_cpus));
            }
            if a.memory_bytes > 0 {
                p.field(2, "Memory", output::bytes_size(a.memory_bytes));
            }
        }
    }
    if !spec.networks.is_empty() {
        let networks: Vec<String> = spec
            .networks
            .iter()
            .map(|n| {
                let name = network_names.get(&n.target).unwrap_or(&n.target);
                if n.aliases.is_empty() {
                    name.clone()
                } else {
                    format!("{name} (aliases: {})", n.aliases.join(", "))
                }
            })
            .collect();
        p.field(0, "Networks", networks.join(" "));
    }
    if c.network_mode == shoal_proto::validate::NETWORK_NONE {
        p.field(0, "Networks", "none (loopback only)".to_string());
    }
    publish::pretty_endpoint(&mut p, &spec, service.endpoint.as_ref());
    if let Some(raw) = &spec.autoscale {
        pretty_autoscale(&mut p, raw, service.autoscale_status.as_ref());
    }
    p.render()
}

/// Docker's `Capabilities:` block, and the security options that are not the defaults.
fn pretty_security(p: &mut Pretty, c: &shoal_proto::ContainerSpec) {
    if !c.capability_add.is_empty() || !c.capability_drop.is_empty() {
        p.section(1, "Capabilities");
        if !c.capability_add.is_empty() {
            p.field(2, "Add", c.capability_add.join(", "));
        }
        if !c.capability_drop.is_empty() {
            p.field(2, "Drop", c.capability_drop.join(", "));
        }
    }
    let privileges = c.privileges.clone().unwrap_or_default();
    if let Some(s) = &privileges.seccomp {
        p.field(1, "Seccomp", security::seccomp_mode(s));
    }
    if let Some(a) = &privileges.apparmor {
        p.field(1, "AppArmor", security::apparmor_mode(a));
    }
}

fn pretty_autoscale(
    p: &mut Pretty,
    raw: &AutoscalePolicy,
    status: Option<&shoal_proto::AutoscaleStatus>,
) {
    p.section(0, "Autoscale");
    let Ok(policy) = Policy::from_proto(raw) else {
        p.field(1, "Policy", format!("invalid: {raw:?}"));
        return;
    };
    p.field(1, "Min Replicas", policy.min.to_string());
    p.field(1, "Max Replicas", policy.max.to_string());
    let target = match &policy.target {
        Target::Cpu(t) => {
            format!("CPU {t}% (of the tasks' CPU limit, else reservation, else one CPU)")
        }
        Target::Memory(t) => format!("memory {t}% (of the tasks' memory limit, else reservation)"),
        Target::Query { query, target } => format!("{query} = {target}"),
    };
    p.field(1, "Target", target);
    p.field(1, "Tolerance", policy.tolerance.to_string());
    p.field(
        1,
        "Scale Up Window",
        output::format_duration_ms(policy.up_window_ms),
    );
    p.field(
        1,
        "Scale Down Window",
        output::format_duration_ms(policy.down_window_ms),
    );
    let Some(status) = status else {
        return;
    };
    if !status.message.is_empty() {
        p.field(
            1,
            "Status",
            format!(
                "{} (since {})",
                status.message,
                output::rfc3339(status.message_at_ms)
            ),
        );
    }
    if !status.decisions.is_empty() {
        p.section(1, "Decisions");
        for d in &status.decisions {
            p.field(
                2,
                "-",
                format!(
                    "{} {} -> {}: {}",
                    output::rfc3339(d.at_ms),
                    d.from_replicas,
                    d.to_replicas,
                    d.reason
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::spec::build_spec;
    use crate::commands::service::testing::create_args;

    #[test]
    fn pretty_shows_resources_and_autoscaling() {
        let spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--limit-cpu",
            "0.5",
            "--reserve-memory",
            "32M",
            "--autoscale-max",
            "4",
            "--autoscale-cpu",
            "50%",
            "busybox",
        ]))
        .unwrap();
        let service = Service {
            id: "sid".into(),
            spec: Some(Box::new(spec)),
            autoscale_status: Some(shoal_proto::AutoscaleStatus {
                decisions: vec![shoal_proto::AutoscaleDecision {
                    at_ms: 0,
                    from_replicas: 1,
                    to_replicas: 2,
                    observed: 100.0,
                    reason: "CPU 100.0% of limit (mean of 1 task), target 50%".into(),
                }],
                message: "cannot reach Prometheus".into(),
                message_at_ms: 0,
            }),
            ..Default::default()
        };
        let out = pretty(&service);
        for needle in [
            "\nResources:\n Reservations:\n  Memory:",
            "32MiB\n Limits:\n  CPU:",
            "\nAutoscale:\n Min Replicas:",
            "CPU 50% (of the tasks' CPU limit, else reservation, else one CPU)",
            "5m0s",
            "cannot reach Prometheus (since",
            "1 -> 2: CPU 100.0% of limit",
        ] {
            assert!(out.contains(needle), "{needle:?} missing in\n{out}");
        }
    }

    #[test]
    fn pretty_service() {
        let a = create_args(&[
            "--name",
            "web",
            "--replicas",
            "2",
            "-e",
            "A=1",
            "busybox",
            "sleep",
            "1d",
        ]);
        let service = Service {
            id: "sid".into(),
            spec: Some(Box::new(build_spec(&a).unwrap())),
            ..Default::default()
        };
        let out = pretty(&service);
        assert!(out.starts_with("ID:"), "{out}");
        assert!(out.contains("\nService Mode:"), "{out}");
        assert!(out.contains("\n Replicas:"), "{out}");
        assert!(out.contains("\nContainerSpec:\n Image:"), "{out}");
        assert!(out.contains("busybox:latest\n"), "{out}");
        assert!(
            out.contains(" Args:") && out.contains("sleep 1d\n"),
            "{out}"
        );
        assert!(out.contains(" Env:") && out.contains("A=1\n"), "{out}");
        assert_eq!(
            words(&["sh".into(), "-c".into(), "echo hi".into(), String::new()]),
            "sh -c \"echo hi\" \"\""
        );
        assert!(out.contains(" Condition:") && out.contains("any"), "{out}");
        assert!(out.contains(" Delay:") && out.contains("5s"), "{out}");
    }

    #[test]
    fn pretty_shows_networks_by_name_and_dns() {
        let mut spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--network",
            "name=front,alias=www",
            "--network",
            "back",
            "--dns",
            "198.18.0.53",
            "--dns-search",
            "example.com",
            "busybox",
        ]))
        .unwrap();
        spec.networks[0].target = "id-front".into();
        let service = Service {
            id: "sid".into(),
            spec: Some(Box::new(spec)),
            ..Default::default()
        };
        let names = HashMap::from([("id-front".to_string(), "front".to_string())]);
        let out = pretty_with(&service, &names);
        assert!(
            out.contains("\nNetworks:") && out.contains("front (aliases: www) back\n"),
            "{out}"
        );
        assert!(out.contains("\n DNS:\n  Nameservers:"), "{out}");
        assert!(
            out.contains("198.18.0.53\n") && out.contains("example.com\n"),
            "{out}"
        );
    }
}
