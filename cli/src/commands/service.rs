//! `shoal service create | update | ls | ps | inspect | scale | rm | logs`.
//!
//! Resources and autoscaling flags are shared by `create` and `update`:
//! `--limit-cpu/--limit-memory` become the task's cgroup limits, `--reserve-cpu/--reserve-memory`
//! what the scheduler promises it on a node; `--autoscale-min/--autoscale-max` with one target
//! (`--autoscale-cpu`, `--autoscale-memory`, or `--autoscale-query` with `--autoscale-target`)
//! hand the replica count to the manager's autoscaler.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use shoal_manager::autoscaler::policy::{self as autoscale_policy, Target, ZERO_WINDOW_MS};
use shoal_proto::{
    reference, restart_policy::Condition, AutoscalePolicy, ContainerSpec, CreateServiceRequest,
    Empty, ListTasksRequest, Placement, ResourceAmounts, Resources, RestartPolicy, Service,
    ServiceLogsRequest, ServiceMode, ServiceRef, ServiceSpec, Task, TaskState,
    UpdateServiceRequest,
};

use super::{progress, report_each};
use crate::client::{daemon_error, Client, RpcResult};
use crate::output::{self, Format, Listing, Pretty, Row};

/// Docker's defaults, sent explicitly so that `inspect` shows what the service really does.
const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);
const DEFAULT_STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a new service
    Create(Box<CreateArgs>),
    /// Update a service
    Update(Box<UpdateArgs>),
    /// List services
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// List the tasks of one or more services
    Ps(PsArgs),
    /// Display detailed information on one or more services
    Inspect(InspectArgs),
    /// Scale one or multiple replicated services
    Scale(ScaleArgs),
    /// Remove one or more services
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Fetch the logs of a service
    Logs(LogsArgs),
}

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
    /// Service mode
    #[arg(long, value_enum, default_value = "replicated")]
    pub mode: ModeArg,
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
    #[command(flatten)]
    pub resources: ResourceFlags,
    #[command(flatten)]
    pub autoscale: AutoscaleFlags,
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
    fn apply(&self, resources: Option<Resources>) -> Option<Resources> {
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
    fn any(&self) -> bool {
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
    fn apply(&self, base: Option<AutoscalePolicy>) -> Result<AutoscalePolicy> {
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
    #[command(flatten)]
    pub resources: ResourceFlags,
    #[command(flatten)]
    pub autoscale: AutoscaleFlags,
    /// Remove the autoscale policy (the replica count stays where it is)
    #[arg(long)]
    pub autoscale_disable: bool,
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

pub async fn run(host: &str, command: ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Create(args) => {
            // A bad flag or image name is reported before the daemon is dialled.
            let spec = build_spec(&args)?;
            create(&Client::connect(host).await?, &args, spec).await
        }
        ServiceCommand::Update(args) => update(&Client::connect(host).await?, &args).await,
        ServiceCommand::Ls(args) => ls(&Client::connect(host).await?, args).await,
        ServiceCommand::Ps(args) => ps(&Client::connect(host).await?, args).await,
        ServiceCommand::Inspect(args) => inspect(&Client::connect(host).await?, args).await,
        ServiceCommand::Scale(args) => scale(&Client::connect(host).await?, args).await,
        ServiceCommand::Rm(args) => rm(&Client::connect(host).await?, args).await,
        ServiceCommand::Logs(args) => logs(&Client::connect(host).await?, args).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Argument parsing (value parsers: clap reports their messages as usage errors)
// ---------------------------------------------------------------------------------------------

pub fn parse_replicas(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("invalid replicas value {s:?}: must be a non-negative integer"))
}

fn parse_max_attempts(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| {
        format!(
            "invalid restart max attempts {s:?}: must be a non-negative integer (0 = unlimited)"
        )
    })
}

pub fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    output::parse_duration(s)
}

/// `KEY=VALUE`; a bare `KEY` takes its value from this shell's environment, as docker does,
/// and is an error when the shell does not have it (docker would silently drop it).
pub fn parse_env(s: &str) -> Result<String, String> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    };
    if key.is_empty() {
        return Err(format!(
            "invalid environment variable {s:?}: the name before '=' is empty (expected KEY=VALUE)"
        ));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(format!(
            "invalid environment variable {s:?}: the name {key:?} contains whitespace"
        ));
    }
    match value {
        Some(_) => Ok(s.to_string()),
        None => match std::env::var(key) {
            Ok(v) => Ok(format!("{key}={v}")),
            Err(_) => Err(format!(
                "invalid environment variable {s:?}: expected KEY=VALUE ({key} is not set in this shell to copy it from)"
            )),
        },
    }
}

/// `KEY=VALUE` or `KEY` (empty value), as docker's `--label`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    if key.trim().is_empty() {
        return Err(format!(
            "invalid label {s:?}: the name before '=' is empty (expected KEY=VALUE)"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// A signal by name (`SIGTERM`, `term`) or number; names are sent in their `SIGXXX` form.
pub fn parse_stop_signal(s: &str) -> Result<String, String> {
    use std::str::FromStr;
    let text = s.trim();
    if let Ok(n) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|_| text.to_string())
            .map_err(|_| format!("invalid stop signal {s:?}: no signal has number {n}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|sig| sig.as_str().to_string())
        .map_err(|_| {
            format!(
                "invalid stop signal {s:?}: expected a name such as SIGTERM or SIGINT, or a number"
            )
        })
}

/// A CPU count as docker's `--limit-cpu 0.5`, in nano CPUs.
pub fn parse_cpus(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid CPU count {s:?}: expected a number of CPUs such as 0.5 or 2");
    let cpus: f64 = s.trim().parse().map_err(|_| bad())?;
    if !(0.0..=1e9).contains(&cpus) {
        return Err(bad());
    }
    Ok((cpus * 1e9).round() as u64)
}

/// A memory size as docker's `--limit-memory`: a number and an optional binary unit (b, k, m,
/// g, t; `KiB`, `MB`… spellings too), e.g. `64M`, `1.5g`, `1048576`.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid memory size {s:?}: expected a number with an optional unit b, k, m, g or t \
             (e.g. 64M, 1.5G)"
        )
    };
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// `70%` or `70`: above 0, at most 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let text = s.trim();
    let number = text.strip_suffix('%').unwrap_or(text).trim();
    let value = number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("invalid percentage {s:?}: expected a number such as 70%"))?;
    if value <= 0.0 || value > 100.0 {
        return Err(format!(
            "percentage {s:?} is out of range: give a percentage above 0 and at most 100"
        ));
    }
    Ok(value)
}

/// CPUs for display: `0.5`, `2`.
fn cpus_text(nano: u64) -> String {
    let text = format!("{:.9}", nano as f64 / 1e9);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
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

// ---------------------------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------------------------

/// The spec `service create` sends, with the image normalised and docker's defaults filled in.
pub fn build_spec(args: &CreateArgs) -> Result<ServiceSpec> {
    let name = args.name.clone().unwrap_or_default();
    if name.is_empty() {
        bail!("a service needs a name: pass `--name NAME`");
    }
    shoal_manager::controlapi::validate_service_name(&name)
        .map_err(|status| anyhow!("{}", status.message()))?;
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
        (ModeArg::Global, None) => (ServiceMode::Global, 0),
        (ModeArg::Global, Some(_)) => {
            bail!("--replicas can only be used with replicated mode")
        }
    };
    let condition = match args.restart_condition.unwrap_or(RestartCondition::Any) {
        RestartCondition::Any => Condition::Any,
        RestartCondition::None => Condition::None,
        RestartCondition::OnFailure => Condition::OnFailure,
    };
    let spec = ServiceSpec {
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
    };
    check_locally(&spec)?;
    Ok(spec)
}

/// The checks the manager makes that need no network, so a bad flag fails before dialling.
fn check_locally(spec: &ServiceSpec) -> Result<()> {
    shoal_manager::controlapi::validate_resources(spec)
        .map_err(|status| anyhow!("{}", status.message()))?;
    autoscale_policy::validate(spec).map_err(|e| anyhow!("{e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Replicated,
    Global,
}

async fn create(client: &Client, args: &CreateArgs, spec: ServiceSpec) -> Result<()> {
    let service = client
        .control()
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await
        .or_daemon_error()?;
    println!("{}", service.id);
    // Convergence is shown slot by slot; a global service has no slots to show.
    if args.detach || args.mode == ModeArg::Global {
        return Ok(());
    }
    let since = service.meta.as_ref().map_or(0, |m| m.created_at_ms);
    progress::wait(client, &service, since, args.quiet).await
}

// ---------------------------------------------------------------------------------------------
// update
// ---------------------------------------------------------------------------------------------

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
    if args.autoscale_disable {
        spec.autoscale = None;
    } else if args.autoscale.any() {
        spec.autoscale = Some(args.autoscale.apply(spec.autoscale.take())?);
    }
    match (args.replicas, autoscale_policy::of_spec(&spec)) {
        (Some(n), _) => {
            if spec.mode() == ServiceMode::Global {
                bail!("--replicas can only be used with replicated mode");
            }
            spec.replicas = n;
        }
        (None, Some(policy)) => spec.replicas = policy.clamp(spec.replicas),
        (None, None) => {}
    }
    check_locally(&spec)?;
    Ok(spec)
}

/// How often `update` re-reads and re-applies its flags when the service changed between its
/// read and its write (the autoscaler records its decisions in the service, so a busy
/// autoscaled service can change under a user's update).
const UPDATE_ATTEMPTS: usize = 3;

fn is_version_conflict(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && status.message().contains("update out of sequence")
}

async fn update(client: &Client, args: &UpdateArgs) -> Result<()> {
    let mut attempt = 0;
    let (current, updated) = loop {
        attempt += 1;
        let service = client
            .control()
            .get_service(ServiceRef {
                service: args.service.clone(),
            })
            .await
            .or_daemon_error()?;
        let current = service
            .spec
            .clone()
            .ok_or_else(|| anyhow!("service {} has no spec", args.service))?;
        // The flags are relative to the current spec: applying them again to a newer one
        // loses nothing.
        let spec = apply_update(&current, args)?;
        let result = client
            .control()
            .update_service(UpdateServiceRequest {
                service: service.id.clone(),
                version: service.meta.as_ref().map_or(0, |m| m.version),
                spec: Some(spec),
            })
            .await;
        match result {
            Err(status) if is_version_conflict(&status) && attempt < UPDATE_ATTEMPTS => continue,
            other => break (current, other.or_daemon_error()?),
        }
    };
    println!("{}", args.service);
    if args.detach || current.mode() == ServiceMode::Global {
        return Ok(());
    }
    let since = updated.meta.as_ref().map_or(0, |m| m.updated_at_ms);
    progress::wait(client, &updated, since, args.quiet).await
}

// ---------------------------------------------------------------------------------------------
// ls
// ---------------------------------------------------------------------------------------------

const SERVICE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Mode", "MODE"),
    ("Replicas", "REPLICAS"),
    ("Image", "IMAGE"),
    ("Ports", "PORTS"),
];

async fn ls(client: &Client, args: LsArgs) -> Result<()> {
    let mut services = client
        .control()
        .list_services(Empty {})
        .await
        .or_daemon_error()?
        .services;
    services.sort_by(|a, b| service_name(a.service.as_ref()).cmp(service_name(b.service.as_ref())));
    let rows: Vec<(Service, u64, u64)> = services
        .into_iter()
        .filter_map(|s| Some((s.service?, s.running, s.desired)))
        .collect();
    if args.quiet {
        for (service, _, _) in &rows {
            println!("{}", output::short_id(&service.id));
        }
        return Ok(());
    }
    print!(
        "{}",
        service_listing(&rows).render(&Format::parse(args.format.as_deref()))?
    );
    Ok(())
}

pub fn service_listing(services: &[(Service, u64, u64)]) -> Listing {
    let rows = services
        .iter()
        .map(|(service, running, desired)| {
            let spec = service.spec.clone().unwrap_or_default();
            let image = spec.container.as_ref().map_or("", |c| c.image.as_str());
            let cells = vec![
                output::short_id(&service.id).to_string(),
                spec.name.clone(),
                "replicated".to_string(),
                format!("{running}/{desired}"),
                familiar_image(image, true),
                String::new(),
            ];
            Row {
                fields: fields(SERVICE_COLUMNS, &cells),
                cells,
            }
        })
        .collect();
    Listing {
        columns: SERVICE_COLUMNS,
        rows,
    }
}

fn service_name(service: Option<&Service>) -> &str {
    service
        .and_then(|s| s.spec.as_ref())
        .map_or("", |s| s.name.as_str())
}

fn fields(columns: &[(&str, &str)], cells: &[String]) -> Map<String, Value> {
    columns
        .iter()
        .zip(cells)
        .map(|((k, _), v)| (k.to_string(), Value::String(v.clone())))
        .collect()
}

/// `docker.io/library/busybox:latest` → `busybox:latest`; the digest is dropped when
/// `trunc`, as docker's tables do.
pub fn familiar_image(image: &str, trunc: bool) -> String {
    match reference::parse_normalized(image) {
        Ok(mut r) => {
            if trunc && r.tag.is_some() {
                r.digest = None;
            }
            r.familiar()
        }
        Err(_) => image.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// ps
// ---------------------------------------------------------------------------------------------

const TASK_COLUMNS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Image", "IMAGE"),
    ("Node", "NODE"),
    ("DesiredState", "DESIRED STATE"),
    ("CurrentState", "CURRENT STATE"),
    ("Error", "ERROR"),
    ("Ports", "PORTS"),
];

/// Docker truncates task errors to this many characters in tables.
const MAX_ERR_LENGTH: usize = 30;

#[derive(Debug, Clone, Copy, Default)]
pub struct PsOptions {
    pub no_trunc: bool,
    pub no_resolve: bool,
}

async fn ps(client: &Client, args: PsArgs) -> Result<()> {
    let running_only = !args.filter.is_empty()
        && args
            .filter
            .iter()
            .all(|(k, v)| k == "desired-state" && v == "running");
    let mut tasks = Vec::new();
    let mut node_names = HashMap::new();
    let mut errors = Vec::new();
    for name in &args.services {
        // Resolve first: an unknown service is an error, not an empty list.
        let service = match client
            .control()
            .get_service(ServiceRef {
                service: name.clone(),
            })
            .await
            .or_daemon_error()
        {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let response = client
            .control()
            .list_tasks(ListTasksRequest {
                service: service.id.clone(),
                desired_running_only: running_only,
                node: String::new(),
            })
            .await
            .or_daemon_error()?;
        tasks.extend(response.tasks);
        node_names.extend(response.node_names);
    }
    let tasks: Vec<Task> = tasks
        .into_iter()
        .filter(|t| task_matches(t, &args.filter, &node_names))
        .collect();
    let opts = PsOptions {
        no_trunc: args.no_trunc,
        no_resolve: args.no_resolve,
    };
    let listing = task_listing(&tasks, &node_names, opts, output::now_ms());
    if args.quiet {
        for row in &listing.rows {
            if let Some(Value::String(id)) = row.fields.get("ID") {
                println!("{id}");
            }
        }
    } else if !tasks.is_empty() || errors.is_empty() {
        print!(
            "{}",
            listing.render(&Format::parse(args.format.as_deref()))?
        );
    }
    report_each(&errors)
}

/// Docker's filter semantics: values of one key are alternatives, different keys must all hold.
fn task_matches(
    task: &Task,
    filters: &[(String, String)],
    node_names: &HashMap<String, String>,
) -> bool {
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for (k, v) in filters {
        by_key.entry(k.as_str()).or_default().push(v.as_str());
    }
    by_key.iter().all(|(key, values)| {
        values.iter().any(|v| match *key {
            "desired-state" => {
                let want = match *v {
                    "running" => TaskState::Running,
                    "shutdown" => TaskState::Shutdown,
                    _ => TaskState::Accepted,
                };
                task.desired() == want
            }
            "id" => task.id.starts_with(v),
            "name" => task_name(task).starts_with(v),
            "node" => task.node_id == *v || node_names.get(&task.node_id).is_some_and(|n| n == v),
            _ => false,
        })
    })
}

fn task_name(task: &Task) -> String {
    format!("{}.{}", task.service_name, task.slot)
}

fn created_key(task: &Task) -> (i64, u64) {
    task.meta
        .as_ref()
        .map_or((0, 0), |m| (m.created_at_ms, m.version))
}

/// Rows in docker's order: by service and slot, newest first within a slot; older tasks of a
/// slot are drawn as its history (` \_ web.1`).
pub fn task_listing(
    tasks: &[Task],
    node_names: &HashMap<String, String>,
    opts: PsOptions,
    now_ms: i64,
) -> Listing {
    let mut sorted: Vec<&Task> = tasks.iter().collect();
    sorted.sort_by(|a, b| {
        a.service_name
            .cmp(&b.service_name)
            .then(a.service_id.cmp(&b.service_id))
            .then(a.slot.cmp(&b.slot))
            .then(created_key(b).cmp(&created_key(a)))
            .then(a.id.cmp(&b.id))
    });
    let mut rows = Vec::with_capacity(sorted.len());
    let mut previous: Option<(&str, u64)> = None;
    for task in sorted {
        let name = task_name(task);
        let is_history = previous == Some((task.service_id.as_str(), task.slot));
        previous = Some((task.service_id.as_str(), task.slot));
        let status = task.status.clone().unwrap_or_default();
        let node = if opts.no_resolve {
            task.node_id.clone()
        } else {
            node_names
                .get(&task.node_id)
                .cloned()
                .unwrap_or_else(|| task.node_id.clone())
        };
        let current = if status.timestamp_ms > 0 {
            format!(
                "{} {}",
                task.state().display_name(),
                output::ago(status.timestamp_ms, now_ms).to_lowercase()
            )
        } else {
            task.state().display_name().to_string()
        };
        let error = if status.err.is_empty() {
            String::new()
        } else if opts.no_trunc {
            format!("\"{}\"", status.err)
        } else {
            format!("\"{}\"", output::ellipsize(&status.err, MAX_ERR_LENGTH))
        };
        let id = if opts.no_trunc {
            task.id.clone()
        } else {
            output::short_id(&task.id).to_string()
        };
        let image = familiar_image(
            task.spec.as_ref().map_or("", |c| c.image.as_str()),
            !opts.no_trunc,
        );
        let mut cells = vec![
            id,
            name.clone(),
            image,
            node,
            task.desired().display_name().to_string(),
            current,
            error,
            String::new(),
        ];
        let fields = fields(TASK_COLUMNS, &cells);
        if is_history {
            cells[1] = format!(" \\_ {name}");
        }
        rows.push(Row { cells, fields });
    }
    Listing {
        columns: TASK_COLUMNS,
        rows,
    }
}

// ---------------------------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------------------------

async fn inspect(client: &Client, args: InspectArgs) -> Result<()> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &args.services {
        match client
            .control()
            .get_service(ServiceRef {
                service: name.clone(),
            })
            .await
            .or_daemon_error()
        {
            Ok(s) => found.push(s),
            Err(e) => errors.push(e),
        }
    }
    let pretty_fn: fn(&Service) -> String = pretty;
    super::print_inspected(
        &found,
        &errors,
        args.pretty.then_some(pretty_fn),
        output::inspect_json,
    )
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
pub fn pretty(service: &Service) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let c = spec.container.clone().unwrap_or_default();
    let mut p = Pretty::default();
    p.field(0, "ID", service.id.clone());
    p.field(0, "Name", spec.name.clone());
    if !spec.labels.is_empty() {
        p.section(0, "Labels");
        let mut labels: Vec<_> = spec.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            p.field(1, "-", format!("{k}={v}"));
        }
    }
    if let Some(meta) = &service.meta {
        p.field(0, "Created at", output::rfc3339(meta.created_at_ms));
        p.field(0, "Updated at", output::rfc3339(meta.updated_at_ms));
    }
    p.field(0, "Service Mode", "Replicated");
    p.field(1, "Replicas", spec.replicas.to_string());
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
    if !c.labels.is_empty() {
        p.section(1, "Labels");
        let mut labels: Vec<_> = c.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            p.field(2, "-", format!("{k}={v}"));
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
    if let Some(raw) = &spec.autoscale {
        pretty_autoscale(&mut p, raw, service.autoscale_status.as_ref());
    }
    p.render()
}

fn pretty_autoscale(
    p: &mut Pretty,
    raw: &AutoscalePolicy,
    status: Option<&shoal_proto::AutoscaleStatus>,
) {
    p.section(0, "Autoscale");
    let Ok(policy) = autoscale_policy::Policy::from_proto(raw) else {
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

// ---------------------------------------------------------------------------------------------
// scale
// ---------------------------------------------------------------------------------------------

async fn scale(client: &Client, args: ScaleArgs) -> Result<()> {
    let mut scaled = Vec::new();
    let mut errors = Vec::new();
    for (name, replicas) in &args.scales {
        match scale_one(client, name, *replicas).await {
            Ok(service) => {
                println!("{name} scaled to {replicas}");
                scaled.push(service);
            }
            Err(e) => errors.push(e),
        }
    }
    if !args.detach {
        for service in &scaled {
            let since = service.meta.as_ref().map_or(0, |m| m.updated_at_ms);
            if let Err(e) = progress::wait(client, service, since, false).await {
                errors.push(e);
            }
        }
    }
    report_each(&errors)
}

async fn scale_one(client: &Client, name: &str, replicas: u64) -> Result<Service> {
    let service = client
        .control()
        .get_service(ServiceRef {
            service: name.to_string(),
        })
        .await
        .or_daemon_error()?;
    let mut spec = service
        .spec
        .clone()
        .ok_or_else(|| anyhow!("service {name} has no spec"))?;
    spec.replicas = replicas;
    client
        .control()
        .update_service(UpdateServiceRequest {
            service: service.id.clone(),
            version: service.meta.as_ref().map_or(0, |m| m.version),
            spec: Some(spec),
        })
        .await
        .or_daemon_error()
}

// ---------------------------------------------------------------------------------------------
// rm
// ---------------------------------------------------------------------------------------------

async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    let mut errors = Vec::new();
    for name in &args.services {
        match client
            .control()
            .remove_service(ServiceRef {
                service: name.clone(),
            })
            .await
            .or_daemon_error()
        {
            Ok(_) => println!("{name}"),
            Err(e) => errors.push(e),
        }
    }
    report_each(&errors)
}

// ---------------------------------------------------------------------------------------------
// logs
// ---------------------------------------------------------------------------------------------

/// How `service logs` prefixes each line.
#[derive(Debug, Clone, Default)]
pub struct LogFormat {
    pub raw: bool,
    pub timestamps: bool,
    pub task_ids: bool,
    pub no_trunc: bool,
    /// Digits of the widest slot number, so that prefixes line up.
    pub slot_width: usize,
}

impl LogFormat {
    /// `web.1.abcdefghijkl@node1    | ` (docker's context prefix), timestamp first with `-t`.
    pub fn prefix(
        &self,
        service: &str,
        slot: u64,
        task_id: &str,
        node: &str,
        timestamp_ms: i64,
    ) -> String {
        let mut out = String::new();
        if self.timestamps {
            out.push_str(&output::rfc3339_nano(timestamp_ms));
            out.push(' ');
        }
        if self.raw {
            return out;
        }
        out.push_str(&format!("{service}.{slot}"));
        if self.task_ids {
            let id = if self.no_trunc {
                task_id
            } else {
                output::short_id(task_id)
            };
            out.push('.');
            out.push_str(id);
        }
        out.push('@');
        out.push_str(node);
        let digits = slot.to_string().len();
        out.push_str(&" ".repeat(self.slot_width.saturating_sub(digits)));
        out.push_str("    | ");
        out
    }
}

async fn logs(client: &Client, args: LogsArgs) -> Result<()> {
    let mut control = client.control();
    let service = control
        .get_service(ServiceRef {
            service: args.service.clone(),
        })
        .await
        .or_daemon_error()?;
    let spec = service.spec.clone().unwrap_or_default();
    let mut node_names = if args.no_resolve {
        HashMap::new()
    } else {
        node_names_of(client, &service.id).await?
    };
    let format = LogFormat {
        raw: args.raw,
        timestamps: args.timestamps,
        task_ids: !args.no_task_ids,
        no_trunc: args.no_trunc,
        slot_width: spec.replicas.max(1).to_string().len(),
    };
    let mut stream = control
        .service_logs(ServiceLogsRequest {
            service: service.id.clone(),
            follow: args.follow,
            tail: args.tail,
        })
        .await
        .or_daemon_error()?;
    let mut refreshed_for: Option<String> = None;
    while let Some(msg) = stream.message().await.map_err(daemon_error)? {
        if !args.no_resolve
            && !node_names.contains_key(&msg.node_id)
            && refreshed_for.as_deref() != Some(msg.node_id.as_str())
        {
            // A task placed after we looked: look again, once per unknown node.
            refreshed_for = Some(msg.node_id.clone());
            node_names = node_names_of(client, &service.id).await?;
        }
        let node = node_names
            .get(&msg.node_id)
            .map_or(msg.node_id.as_str(), String::as_str);
        let service_name = if msg.service_name.is_empty() {
            spec.name.as_str()
        } else {
            msg.service_name.as_str()
        };
        let mut line = format
            .prefix(service_name, msg.slot, &msg.task_id, node, msg.timestamp_ms)
            .into_bytes();
        line.extend_from_slice(&msg.line);
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        let written = if msg.stream == "stderr" {
            std::io::stderr().lock().write_all(&line)
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(&line).and_then(|()| out.flush())
        };
        written.context("cannot write the log line")?;
    }
    Ok(())
}

async fn node_names_of(client: &Client, service_id: &str) -> Result<HashMap<String, String>> {
    Ok(client
        .control()
        .list_tasks(ListTasksRequest {
            service: service_id.to_string(),
            desired_running_only: false,
            node: String::new(),
        })
        .await
        .or_daemon_error()?
        .node_names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use shoal_proto::{Meta, TaskStatus};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ServiceCommand,
    }

    fn parse(args: &[&str]) -> Result<ServiceCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("shoal-service").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    fn create_args(args: &[&str]) -> CreateArgs {
        match parse(&[&["create"], args].concat()) {
            Ok(ServiceCommand::Create(a)) => *a,
            other => panic!("not a create: {other:?}"),
        }
    }

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
    fn resource_values_parse_like_docker() {
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("half")
            .unwrap_err()
            .contains("invalid CPU count"));
        assert_eq!(parse_memory("64M"), Ok(64 << 20));
        assert_eq!(parse_memory("64m"), Ok(64 << 20));
        assert_eq!(parse_memory("64MiB"), Ok(64 << 20));
        assert_eq!(parse_memory("1.5g"), Ok(3 << 29));
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert_eq!(parse_memory("2kb"), Ok(2048));
        assert!(parse_memory("64Q")
            .unwrap_err()
            .contains("invalid memory size"));
        assert!(parse_memory("M").is_err());
        assert_eq!(parse_percent("70%"), Ok(70.0));
        assert_eq!(parse_percent("12.5"), Ok(12.5));
        assert!(parse_percent("lots").is_err());
        assert!(parse_percent("0").is_err());
        assert_eq!(cpus_text(500_000_000), "0.5");
        assert_eq!(cpus_text(2_000_000_000), "2");
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

    fn update_args(args: &[&str]) -> UpdateArgs {
        match parse(&[&["update"], args].concat()) {
            Ok(ServiceCommand::Update(a)) => *a,
            other => panic!("not an update: {other:?}"),
        }
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
            spec: Some(spec),
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
    fn env_without_value_comes_from_the_shell() {
        std::env::set_var("SHOAL_TEST_ENV_COPY", "v1");
        assert_eq!(
            parse_env("SHOAL_TEST_ENV_COPY").unwrap(),
            "SHOAL_TEST_ENV_COPY=v1"
        );
        assert!(parse_env("SHOAL_TEST_ENV_SURELY_UNSET").is_err());
        assert_eq!(parse_env("A=").unwrap(), "A=");
        assert_eq!(parse_env("A=b=c").unwrap(), "A=b=c");
        assert!(parse_env("A B=c").is_err());
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

    fn task(id: &str, slot: u64, created: i64, state: TaskState, desired: TaskState) -> Task {
        Task {
            id: id.into(),
            meta: Some(Meta {
                created_at_ms: created,
                ..Default::default()
            }),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot,
            node_id: "n1".into(),
            spec: Some(ContainerSpec {
                image: "docker.io/library/busybox:latest".into(),
                ..Default::default()
            }),
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                timestamp_ms: created,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ps_orders_by_slot_then_newest_with_history() {
        let mut failed = task(
            "t1old00000000000",
            1,
            1_000,
            TaskState::Failed,
            TaskState::Shutdown,
        );
        if let Some(s) = failed.status.as_mut() {
            s.err = "task: non-zero exit (1): the process failed badly".into();
        }
        let tasks = vec![
            task(
                "t2aaaaaaaaaaaaaa",
                2,
                5_000,
                TaskState::Running,
                TaskState::Running,
            ),
            failed,
            task(
                "t1new00000000000",
                1,
                9_000,
                TaskState::Running,
                TaskState::Running,
            ),
            task(
                "t10aaaaaaaaaaaaa",
                10,
                9_000,
                TaskState::Pending,
                TaskState::Running,
            ),
        ];
        let names: HashMap<String, String> = [("n1".to_string(), "node1".to_string())].into();
        let listing = task_listing(&tasks, &names, PsOptions::default(), 129_000);
        let out = listing.render(&Format::Table).unwrap();
        let expected = "\
ID             NAME        IMAGE            NODE      DESIRED STATE   CURRENT STATE           ERROR                              PORTS
t1new0000000   web.1       busybox:latest   node1     Running         Running 2 minutes ago
t1old0000000    \\_ web.1   busybox:latest   node1     Shutdown        Failed 2 minutes ago    \"task: non-zero exit (1): the …\"
t2aaaaaaaaaa   web.2       busybox:latest   node1     Running         Running 2 minutes ago
t10aaaaaaaaa   web.10      busybox:latest   node1     Running         Pending 2 minutes ago
";
        assert_eq!(out, expected);
        let json = listing.render(&Format::Json).unwrap();
        let second: Value = serde_json::from_str(json.lines().nth(1).unwrap()).unwrap();
        assert_eq!(second["Name"], "web.1", "json has no tree drawing");
        assert_eq!(second["Node"], "node1");
    }

    #[test]
    fn ls_rows() {
        let service = Service {
            id: "abcdefghijklmnopqrstuvwxy".into(),
            spec: Some(ServiceSpec {
                name: "web".into(),
                replicas: 3,
                container: Some(ContainerSpec {
                    image: "docker.io/library/nginx:1.25".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = service_listing(&[(service, 2, 3)])
            .render(&Format::Table)
            .unwrap();
        assert_eq!(
            out,
            "ID             NAME      MODE         REPLICAS   IMAGE        PORTS\n\
             abcdefghijkl   web       replicated   2/3        nginx:1.25\n"
        );
    }

    #[test]
    fn familiar_images() {
        assert_eq!(
            familiar_image("docker.io/library/busybox:latest", true),
            "busybox:latest"
        );
        assert_eq!(familiar_image("docker.io/user/app:1", true), "user/app:1");
        let pinned = format!("docker.io/library/busybox:1@sha256:{}", "a".repeat(64));
        assert_eq!(familiar_image(&pinned, true), "busybox:1");
        assert!(familiar_image(&pinned, false).contains("@sha256:"));
        assert_eq!(familiar_image("not a ref", true), "not a ref");
    }

    #[test]
    fn log_prefixes() {
        let f = LogFormat {
            task_ids: true,
            slot_width: 2,
            ..Default::default()
        };
        assert_eq!(
            f.prefix("web", 1, "abcdefghijklmnopqrstuvwxy", "node1", 0),
            "web.1.abcdefghijkl@node1     | "
        );
        assert_eq!(
            f.prefix("web", 10, "abcdefghijklmnopqrstuvwxy", "node1", 0),
            "web.10.abcdefghijkl@node1    | "
        );
        let raw = LogFormat {
            raw: true,
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            raw.prefix("web", 1, "t", "n", 1_700_000_000_123),
            "2023-11-14T22:13:20.123000000Z "
        );
        let no_ids = LogFormat {
            slot_width: 1,
            ..Default::default()
        };
        assert_eq!(no_ids.prefix("web", 3, "t", "n", 0), "web.3@n    | ");
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
            spec: Some(build_spec(&a).unwrap()),
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
}
