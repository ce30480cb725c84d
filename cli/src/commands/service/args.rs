//! The flags and arguments of each `service` subcommand, and the value parsers only they use.
//! `--limit-*`/`--reserve-*` and the `--autoscale-*` flags are shared by `create` and
//! `update`; applying them to a spec is here too, next to their meaning. How an update applies
//! the networking flags is in `networks`.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use shoal_proto::validate::autoscale::ZERO_WINDOW_MS;
use shoal_proto::{
    endpoint_spec, AutoscalePolicy, NetworkAttachmentConfig, PortConfig, ResourceAmounts, Resources,
};

use super::files::{FileFlags, FileUpdateFlags};
use super::health::HealthFlags;
use super::options::{OptionFlags, OptionUpdateFlags};
use super::publish::{parse_endpoint_mode, parse_publish, parse_publish_rm};
use super::rollout::RolloutFlags;
use super::security::{parse_cap_add, parse_cap_drop, parse_security_opt, SecurityOpt};

use crate::commands::flags::{
    parse_cpus, parse_duration_flag, parse_env, parse_label, parse_memory, parse_percent,
    parse_replicas, parse_stop_signal,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name
    #[arg(long)]
    pub name: Option<String>,
    /// Number of tasks (replicated mode; default 1)
    #[arg(long, value_parser = parse_replicas, allow_hyphen_values = true)]
    pub replicas: Option<u64>,
    /// Service mode ("replicated", "global", "replicated-job" or "global-job")
    #[arg(long, value_enum, default_value = "replicated")]
    pub mode: ModeArg,
    /// Number of job tasks to run concurrently (default equal to --replicas)
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u64>,
    /// Placement constraints (e.g. node.role==manager, node.labels.zone!=east)
    #[arg(long = "constraint", value_name = "EXPR")]
    pub constraint: Vec<String>,
    /// Maximum number of tasks per node (default 0 = unlimited)
    #[arg(long, default_value = "0")]
    pub replicas_max_per_node: u64,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,
    /// Service labels
    #[arg(short, long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
    /// Container labels
    #[arg(long = "container-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub container_label: Vec<(String, String)>,
    /// Restart when condition is met
    #[arg(long, value_enum)]
    pub restart_condition: Option<RestartCondition>,
    /// Delay between restart attempts (ns|us|ms|s|m|h) (default 5s)
    #[arg(long, value_parser = parse_duration_flag)]
    pub restart_delay: Option<Duration>,
    /// Maximum number of restarts before giving up (0 = unlimited)
    #[arg(long, value_parser = parse_max_attempts)]
    pub restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h)
    #[arg(long, value_parser = parse_duration_flag)]
    pub restart_window: Option<Duration>,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h) (default 10s)
    #[arg(long, value_parser = parse_duration_flag)]
    pub stop_grace_period: Option<Duration>,
    /// Signal to stop the container
    #[arg(long, value_parser = parse_stop_signal)]
    pub stop_signal: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container hostname
    #[arg(long)]
    pub hostname: Option<String>,
    /// Network attachments: NAME, or name=NAME,alias=ALIAS,…
    #[arg(long = "network", value_name = "NETWORK", value_parser = parse_network)]
    pub network: Vec<NetworkAttachmentConfig>,
    /// Publish a port: [PUBLISHED:]TARGET[/PROTOCOL], or
    /// mode=ingress|host,published=P,target=T,protocol=tcp|udp
    #[arg(short = 'p', long = "publish", value_name = "PORT", value_parser = parse_publish)]
    pub publish: Vec<PortConfig>,
    /// Endpoint mode: vip (one virtual IP per network) or dnsrr (DNS round robin)
    #[arg(long, value_name = "MODE", value_parser = parse_endpoint_mode)]
    pub endpoint_mode: Option<endpoint_spec::Mode>,
    /// Set custom DNS servers
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", value_name = "OPTION")]
    pub dns_option: Vec<String>,
    #[command(flatten)]
    pub resources: ResourceFlags,
    #[command(flatten)]
    pub autoscale: AutoscaleFlags,
    #[command(flatten)]
    pub caps: CapabilityFlags,
    /// Security options: seccomp=unconfined, seccomp=PATH (a profile in docker's JSON format,
    /// read here and sent with the spec), apparmor=unconfined
    #[arg(long = "security-opt", value_name = "OPTION", value_parser = parse_security_opt)]
    pub security_opt: Vec<SecurityOpt>,
    #[command(flatten)]
    pub options: OptionFlags,
    #[command(flatten)]
    pub health: HealthFlags,
    #[command(flatten)]
    pub files: FileFlags,
    #[command(flatten)]
    pub rollout: RolloutFlags,
    /// Send registry authentication details to swarm agents
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Image to run
    pub image: String,
    /// Command and arguments (override the image's CMD)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub args: Vec<String>,
}

/// `--limit-*` and `--reserve-*`; on `update`, 0 removes a limit or reservation.
#[derive(Debug, Args, Default)]
pub struct ResourceFlags {
    /// Limit CPUs (e.g. 0.5)
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub limit_cpu: Option<u64>,
    /// Limit memory (e.g. 64M, 1.5G)
    #[arg(long, value_name = "BYTES", value_parser = parse_memory)]
    pub limit_memory: Option<u64>,
    /// Reserve CPUs: the scheduler places the task only where they are free
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub reserve_cpu: Option<u64>,
    /// Reserve memory: the scheduler places the task only where it is free
    #[arg(long, value_name = "BYTES", value_parser = parse_memory)]
    pub reserve_memory: Option<u64>,
}

impl ResourceFlags {
    pub(super) fn apply(&self, resources: Option<Resources>) -> Option<Resources> {
        let mut r = resources.unwrap_or_default();
        let mut limits = r.limits.unwrap_or_default();
        let mut reservations = r.reservations.unwrap_or_default();
        let set = |field: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut limits.nano_cpus, self.limit_cpu);
        set(&mut limits.memory_bytes, self.limit_memory);
        set(&mut reservations.nano_cpus, self.reserve_cpu);
        set(&mut reservations.memory_bytes, self.reserve_memory);
        let some = |a: ResourceAmounts| (a != ResourceAmounts::default()).then_some(a);
        r.limits = some(limits);
        r.reservations = some(reservations);
        (r.limits.is_some() || r.reservations.is_some()).then_some(r)
    }
}

/// `--cap-add` and `--cap-drop`, on `create` and `update`.
#[derive(Debug, Args, Default)]
pub struct CapabilityFlags {
    /// Add Linux capabilities (e.g. NET_ADMIN or CAP_NET_ADMIN, or ALL)
    #[arg(long = "cap-add", value_name = "CAPABILITY", value_parser = parse_cap_add)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities (e.g. NET_RAW, or ALL)
    #[arg(long = "cap-drop", value_name = "CAPABILITY", value_parser = parse_cap_drop)]
    pub cap_drop: Vec<String>,
}

/// The autoscale policy flags.
#[derive(Debug, Args, Default)]
pub struct AutoscaleFlags {
    /// Autoscale: the fewest replicas (default 1; never 0)
    #[arg(long, value_name = "N")]
    pub autoscale_min: Option<u64>,
    /// Autoscale: the most replicas (required to enable autoscaling)
    #[arg(long, value_name = "N")]
    pub autoscale_max: Option<u64>,
    /// Autoscale on the tasks' mean CPU use, in percent of their CPU limit, else their CPU
    /// reservation, else one CPU (e.g. 70%)
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent, allow_hyphen_values = true)]
    pub autoscale_cpu: Option<f64>,
    /// Autoscale on the tasks' mean memory use, in percent of their memory limit, else their
    /// memory reservation (e.g. 80%)
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent, allow_hyphen_values = true)]
    pub autoscale_memory: Option<f64>,
    /// Autoscale on a PromQL query's value (one number), evaluated against the swarm's
    /// Prometheus (`shoal swarm update --prometheus-url`); needs --autoscale-target
    #[arg(long, value_name = "PROMQL")]
    pub autoscale_query: Option<String>,
    /// The value --autoscale-query should have: replicas = ceil(replicas × value / target)
    #[arg(long, value_name = "VALUE", allow_hyphen_values = true)]
    pub autoscale_target: Option<f64>,
    /// Scale up to the lowest recommendation of this window (default 0s: at once)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_flag)]
    pub autoscale_up_window: Option<Duration>,
    /// Scale down to the highest recommendation of this window (default 5m)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_flag)]
    pub autoscale_down_window: Option<Duration>,
    /// Relative deviation from the target that changes nothing (default 0.1)
    #[arg(long, value_name = "FRACTION")]
    pub autoscale_tolerance: Option<f64>,
}

impl AutoscaleFlags {
    pub(super) fn any(&self) -> bool {
        self.autoscale_min.is_some()
            || self.autoscale_max.is_some()
            || self.autoscale_cpu.is_some()
            || self.autoscale_memory.is_some()
            || self.autoscale_query.is_some()
            || self.autoscale_target.is_some()
            || self.autoscale_up_window.is_some()
            || self.autoscale_down_window.is_some()
            || self.autoscale_tolerance.is_some()
    }

    /// The flags applied over `base` (the service's current policy, if any).
    pub(super) fn apply(&self, base: Option<AutoscalePolicy>) -> Result<AutoscalePolicy> {
        let new = base.is_none();
        let mut p = base.unwrap_or(AutoscalePolicy {
            min_replicas: 1,
            ..Default::default()
        });
        if new && self.autoscale_max.is_none() {
            bail!("autoscaling needs --autoscale-max N, the most replicas to run");
        }
        if let Some(min) = self.autoscale_min {
            p.min_replicas = min;
        }
        if let Some(max) = self.autoscale_max {
            p.max_replicas = max;
        }
        let targets = [
            self.autoscale_cpu.is_some(),
            self.autoscale_memory.is_some(),
            self.autoscale_query.is_some(),
        ];
        if targets.iter().filter(|t| **t).count() > 1 {
            bail!(
                "give one autoscale target: --autoscale-cpu, --autoscale-memory or \
                 --autoscale-query"
            );
        }
        let clear = |p: &mut AutoscalePolicy| {
            p.target_cpu_percent = 0.0;
            p.target_memory_percent = 0.0;
            p.query.clear();
            p.query_target = 0.0;
        };
        if let Some(cpu) = self.autoscale_cpu {
            clear(&mut p);
            p.target_cpu_percent = cpu;
        }
        if let Some(memory) = self.autoscale_memory {
            clear(&mut p);
            p.target_memory_percent = memory;
        }
        if let Some(query) = &self.autoscale_query {
            let target = p.query_target;
            clear(&mut p);
            p.query = query.clone();
            p.query_target = target;
        }
        if let Some(target) = self.autoscale_target {
            if p.query.is_empty() {
                bail!("--autoscale-target is the value for --autoscale-query: give the query too");
            }
            p.query_target = target;
        }
        let window = |d: Duration| match u64::try_from(d.as_millis()).unwrap_or(u64::MAX) {
            0 => ZERO_WINDOW_MS,
            ms => ms,
        };
        if let Some(d) = self.autoscale_up_window {
            p.scale_up_window_ms = window(d);
        }
        if let Some(d) = self.autoscale_down_window {
            p.scale_down_window_ms = window(d);
        }
        if let Some(t) = self.autoscale_tolerance {
            p.tolerance = t;
        }
        Ok(p)
    }
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Service image tag
    #[arg(long)]
    pub image: Option<String>,
    /// Add or update an environment variable
    #[arg(long = "env-add", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env_add: Vec<String>,
    /// Remove an environment variable
    #[arg(long = "env-rm", value_name = "KEY")]
    pub env_rm: Vec<String>,
    /// Number of tasks
    #[arg(long, value_parser = parse_replicas, allow_hyphen_values = true)]
    pub replicas: Option<u64>,
    /// Number of job tasks to run concurrently (replicated jobs)
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u64>,
    #[command(flatten)]
    pub resources: ResourceFlags,
    #[command(flatten)]
    pub autoscale: AutoscaleFlags,
    /// Remove the autoscale policy (the replica count stays where it is)
    #[arg(long)]
    pub autoscale_disable: bool,
    #[command(flatten)]
    pub caps: CapabilityFlags,
    /// Container hostname
    #[arg(long)]
    pub hostname: Option<String>,
    /// Add a network: NAME, or name=NAME,alias=ALIAS,…
    #[arg(long = "network-add", value_name = "NETWORK", value_parser = parse_network)]
    pub network_add: Vec<NetworkAttachmentConfig>,
    /// Remove a network (name or ID)
    #[arg(long = "network-rm", value_name = "NETWORK")]
    pub network_rm: Vec<String>,
    /// Add or update a published port: [PUBLISHED:]TARGET[/PROTOCOL] or the long form
    #[arg(long = "publish-add", value_name = "PORT", value_parser = parse_publish)]
    pub publish_add: Vec<PortConfig>,
    /// Remove a published port by its published or target port: PORT[/PROTOCOL]
    #[arg(long = "publish-rm", value_name = "PORT", value_parser = parse_publish_rm)]
    pub publish_rm: Vec<PortConfig>,
    /// Endpoint mode: vip or dnsrr
    #[arg(long, value_name = "MODE", value_parser = parse_endpoint_mode)]
    pub endpoint_mode: Option<endpoint_spec::Mode>,
    /// Add or update a custom DNS server
    #[arg(long = "dns-add", value_name = "IP")]
    pub dns_add: Vec<String>,
    /// Remove a custom DNS server
    #[arg(long = "dns-rm", value_name = "IP")]
    pub dns_rm: Vec<String>,
    /// Add or update a custom DNS search domain
    #[arg(long = "dns-search-add", value_name = "DOMAIN")]
    pub dns_search_add: Vec<String>,
    /// Remove a DNS search domain
    #[arg(long = "dns-search-rm", value_name = "DOMAIN")]
    pub dns_search_rm: Vec<String>,
    /// Add or update a DNS option
    #[arg(long = "dns-option-add", value_name = "OPTION")]
    pub dns_option_add: Vec<String>,
    /// Remove a DNS option
    #[arg(long = "dns-option-rm", value_name = "OPTION")]
    pub dns_option_rm: Vec<String>,
    #[command(flatten)]
    pub options: OptionUpdateFlags,
    #[command(flatten)]
    pub health: HealthFlags,
    #[command(flatten)]
    pub files: FileUpdateFlags,
    #[command(flatten)]
    pub rollout: RolloutFlags,
    /// Force update even if no changes require it (the tasks are replaced)
    #[arg(long)]
    pub force: bool,
    /// Send registry authentication details to swarm agents
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Rollback to previous specification
    #[arg(long)]
    pub rollback: bool,
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Service (name, ID or ID prefix)
    pub service: String,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Service (name, ID or ID prefix)
    pub service: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: table, json, or a Go-style template such as '{{.Name}}'
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only display task IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not map IDs to names
    #[arg(long)]
    pub no_resolve: bool,
    /// Format output: table, json, or a Go-style template such as '{{.Name}}'
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output: desired-state=running|shutdown|accepted, id=ID, name=NAME, node=NODE
    #[arg(short, long = "filter", value_name = "FILTER", value_parser = parse_filter)]
    pub filter: Vec<(String, String)>,
    /// Services (name, ID or ID prefix)
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print the information in a human friendly format
    #[arg(long)]
    pub pretty: bool,
    /// Services (name, ID or ID prefix)
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Exit immediately instead of waiting for the services to converge
    #[arg(short, long)]
    pub detach: bool,
    /// SERVICE=REPLICAS pairs
    #[arg(required = true, value_name = "SERVICE=REPLICAS", value_parser = parse_scale)]
    pub scales: Vec<(String, u64)>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Services (name, ID or ID prefix)
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs, or "all"
    #[arg(short = 'n', long, default_value = "all", value_parser = parse_tail)]
    pub tail: i64,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show logs since timestamp (e.g. 2026-12-05T06:00:00Z), Unix time, or relative (e.g. 42m)
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<i64>,
    /// Do not neatly format logs
    #[arg(long)]
    pub raw: bool,
    /// Do not include task IDs in output
    #[arg(long)]
    pub no_task_ids: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not map IDs to names in output
    #[arg(long)]
    pub no_resolve: bool,
    /// Service (name, ID or ID prefix)
    pub service: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

/// `--network` / `--network-add`: `NAME`, or `name=NAME,alias=A,…` (`target=` is `name=`).
pub fn parse_network(s: &str) -> Result<NetworkAttachmentConfig, String> {
    let bad = |why: &str| format!("invalid --network value {s:?}: {why}");
    if !s.contains('=') && !s.contains(',') {
        if s.trim().is_empty() {
            return Err(bad("give a network name or ID"));
        }
        return Ok(NetworkAttachmentConfig {
            target: s.to_string(),
            aliases: Vec::new(),
        });
    }
    let mut attachment = NetworkAttachmentConfig::default();
    for field in s.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| bad(&format!("{field:?} is not KEY=VALUE")))?;
        if value.is_empty() {
            return Err(bad(&format!("{key}= needs a value")));
        }
        match key.trim().to_ascii_lowercase().as_str() {
            "name" | "target" if attachment.target.is_empty() => {
                attachment.target = value.to_string()
            }
            "name" | "target" => return Err(bad("name= is given twice")),
            "alias" => attachment.aliases.push(value.to_string()),
            other => {
                return Err(bad(&format!(
                    "unknown key {other:?} (name=, target= and alias= are supported)"
                )))
            }
        }
    }
    if attachment.target.is_empty() {
        return Err(bad("name= is required"));
    }
    Ok(attachment)
}

fn parse_max_attempts(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| {
        format!(
            "invalid restart max attempts {s:?}: must be a non-negative integer (0 = unlimited)"
        )
    })
}

/// `SERVICE=REPLICAS`.
pub fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let Some((name, replicas)) = s.split_once('=') else {
        return Err(format!(
            "invalid scale specifier {s:?}: expected SERVICE=REPLICAS, e.g. web=3"
        ));
    };
    if name.is_empty() {
        return Err(format!(
            "invalid scale specifier {s:?}: the service name before '=' is empty"
        ));
    }
    let replicas =
        parse_replicas(replicas).map_err(|e| format!("invalid scale specifier {s:?}: {e}"))?;
    Ok((name.to_string(), replicas))
}

/// `--tail N` or `--tail all` (sent as -1).
pub fn parse_tail(s: &str) -> Result<i64, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(-1);
    }
    s.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| format!("invalid tail value {s:?}: expected a number of lines or \"all\""))
}

/// `--since` as docker takes it, in ms since the epoch: a duration back from now (`42m`,
/// `1h30m`), a Unix time in seconds (`1764914400`, fractions allowed), or a date and time in
/// RFC 3339 (`2026-12-05T06:00:00Z`, `…+01:00`), without a zone (UTC), or a date alone.
pub fn parse_since(s: &str) -> Result<i64, String> {
    since_at(s, chrono::Utc::now())
}

fn since_at(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(d) = crate::output::parse_duration(s) {
        let d = chrono::Duration::from_std(d).map_err(|e| format!("--since {s}: {e}"))?;
        return Ok((now - d).timestamp_millis());
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok((secs * 1000.0) as i64);
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "invalid --since value {s:?}: give a time such as 2026-12-05T06:00:00Z, a Unix \
         timestamp, or a duration such as 10m"
    ))
}

const FILTER_KEYS: &[&str] = &["desired-state", "id", "name", "node"];

pub fn parse_filter(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("bad format of filter {s:?}: expected KEY=VALUE"));
    };
    if !FILTER_KEYS.contains(&key) {
        return Err(format!(
            "invalid filter {key:?}: the filters are {}",
            FILTER_KEYS.join(", ")
        ));
    }
    if key == "desired-state" && !["running", "shutdown", "accepted"].contains(&value) {
        return Err(format!(
            "invalid filter 'desired-state={value}': expected running, shutdown or accepted"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::testing::parse;
    use crate::commands::service::ServiceCommand;

    #[test]
    fn since_takes_docker_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T06:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let at = |s: &str| since_at(s, now);
        let six = now.timestamp_millis();
        assert_eq!(at("42m"), Ok(six - 42 * 60_000));
        assert_eq!(at("1h30m"), Ok(six - 90 * 60_000));
        assert_eq!(at("1764914400"), Ok(1_764_914_400_000));
        assert_eq!(at("1764914400.5"), Ok(1_764_914_400_500));
        assert_eq!(at("2026-12-05T06:00:00Z"), Ok(six));
        assert_eq!(at("2026-12-05T07:00:00+01:00"), Ok(six));
        assert_eq!(at("2026-12-05T06:00:00"), Ok(six));
        assert_eq!(at("2026-12-05"), Ok(six - 6 * 3_600_000));
        let err = at("yesterday").unwrap_err();
        assert!(err.contains("invalid --since value \"yesterday\""), "{err}");
    }

    #[test]
    fn scale_specifiers() {
        assert_eq!(parse_scale("web=5"), Ok(("web".into(), 5)));
        assert_eq!(parse_scale("web=0"), Ok(("web".into(), 0)));
        assert_eq!(
            parse_scale("web").unwrap_err(),
            "invalid scale specifier \"web\": expected SERVICE=REPLICAS, e.g. web=3"
        );
        assert_eq!(
            parse_scale("web=abc").unwrap_err(),
            "invalid scale specifier \"web=abc\": invalid replicas value \"abc\": must be a non-negative integer"
        );
        assert!(parse_scale("web=-1").unwrap_err().contains("\"-1\""));
        assert!(parse_scale("=3").is_err());
        match parse(&["scale", "web=2", "api=0", "-d"]) {
            Ok(ServiceCommand::Scale(a)) => {
                assert!(a.detach);
                assert_eq!(a.scales, vec![("web".into(), 2), ("api".into(), 0)]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["scale", "web=x"]).is_err());
    }

    #[test]
    fn tail_and_filters() {
        assert_eq!(parse_tail("all"), Ok(-1));
        assert_eq!(parse_tail("10"), Ok(10));
        assert!(parse_tail("-3").is_err());
        assert_eq!(
            parse_filter("desired-state=running"),
            Ok(("desired-state".into(), "running".into()))
        );
        assert!(parse_filter("desired-state=bogus").is_err());
        assert!(parse_filter("colour=red").is_err());
        assert!(parse_filter("node").is_err());
    }
}
