//! `service ls` and `service ps`: docker's tables (or JSON, or a template) of services and of
//! their tasks, with a slot's older tasks drawn as its history.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::{Map, Value};
use shoal_proto::{
    reference, Empty, HealthStatus, ListTasksRequest, Service, ServiceMode, ServiceSummary, Task,
    TaskState,
};

use super::args::{LsArgs, PsArgs};
use super::get_service;
use crate::client::{Client, RpcResult};
use crate::commands::{each, report_each};
use crate::output::{self, Format, Listing, Row};

const SERVICE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Mode", "MODE"),
    ("Replicas", "REPLICAS"),
    ("Image", "IMAGE"),
    ("Ports", "PORTS"),
];

pub(super) async fn ls(client: &Client, args: LsArgs) -> Result<()> {
    let mut services = client
        .control()
        .list_services(Empty {})
        .await
        .or_daemon_error()?
        .services;
    services.sort_by(|a, b| service_name(a.service.as_ref()).cmp(service_name(b.service.as_ref())));
    if args.quiet {
        for summary in &services {
            let id = summary.service.as_ref().map_or("", |s| s.id.as_str());
            println!("{}", output::short_id(id));
        }
        return Ok(());
    }
    print!(
        "{}",
        service_listing(&services).render(&Format::parse(args.format.as_deref()))?
    );
    Ok(())
}

/// docker's MODE column.
fn mode_word(mode: ServiceMode) -> &'static str {
    match mode {
        ServiceMode::Replicated => "replicated",
        ServiceMode::Global => "global",
        ServiceMode::ReplicatedJob => "replicated job",
        ServiceMode::GlobalJob => "global job",
    }
}

/// docker's REPLICAS column: running/desired, and for a job its completions.
fn replicas_cell(mode: ServiceMode, s: &ServiceSummary) -> String {
    let counts = format!("{}/{}", s.running, s.desired);
    match mode {
        ServiceMode::ReplicatedJob | ServiceMode::GlobalJob => {
            format!("{counts} ({}/{} completed)", s.completed, s.job_total)
        }
        _ => counts,
    }
}

pub fn service_listing(services: &[ServiceSummary]) -> Listing {
    let no_service = Service::default();
    let rows = services
        .iter()
        .map(|summary| {
            let service = summary.service.as_ref().unwrap_or(&no_service);
            let spec = service.spec.clone().unwrap_or_default();
            let image = spec.container.as_ref().map_or("", |c| c.image.as_str());
            let cells = vec![
                output::short_id(&service.id).to_string(),
                spec.name.clone(),
                mode_word(spec.mode()).to_string(),
                replicas_cell(spec.mode(), summary),
                familiar_image(image, true),
                super::publish::ls_ports(service.endpoint.as_ref()),
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

#[derive(Debug, Clone, Default)]
pub struct PsOptions {
    pub no_trunc: bool,
    pub no_resolve: bool,
    /// Host-mode ports by service ID (`*:8080->80/tcp`), shown on the service's running tasks
    /// as docker shows them.
    pub host_ports: HashMap<String, String>,
}

pub(super) async fn ps(client: &Client, args: PsArgs) -> Result<()> {
    let running_only = !args.filter.is_empty()
        && args
            .filter
            .iter()
            .all(|(k, v)| k == "desired-state" && v == "running");
    // Resolve first: an unknown service is an error, not an empty list.
    let (services, errors) = each(&args.services, |name| get_service(client, name)).await;
    let mut tasks = Vec::new();
    let mut node_names = HashMap::new();
    for service in &services {
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
    let host_ports = services
        .iter()
        .map(|s| {
            (
                s.id.clone(),
                super::publish::host_ports(s.endpoint.as_ref()),
            )
        })
        .collect();
    let opts = PsOptions {
        no_trunc: args.no_trunc,
        no_resolve: args.no_resolve,
        host_ports,
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

/// The healthcheck's word after the state, as `docker ps` shows it after "Up 5 seconds".
fn health_suffix(health: HealthStatus) -> &'static str {
    match health {
        HealthStatus::None => "",
        HealthStatus::Starting => " (health: starting)",
        HealthStatus::Healthy => " (healthy)",
        HealthStatus::Unhealthy => " (unhealthy)",
    }
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
        let mut current = if status.timestamp_ms > 0 {
            format!(
                "{} {}",
                task.state().display_name(),
                output::ago(status.timestamp_ms, now_ms).to_lowercase()
            )
        } else {
            task.state().display_name().to_string()
        };
        current.push_str(health_suffix(status.health()));
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
        let running = task.state() == TaskState::Running && task.desired() == TaskState::Running;
        let ports = match opts.host_ports.get(&task.service_id) {
            Some(p) if running => p.clone(),
            _ => String::new(),
        };
        let mut cells = vec![
            id,
            name.clone(),
            image,
            node,
            task.desired().display_name().to_string(),
            current,
            error,
            ports,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::fixtures::task;
    use shoal_proto::{ContainerSpec, ServiceSpec};

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
    fn ps_shows_host_ports_on_running_tasks() {
        let mut running = task("t1", 1, 1_000, TaskState::Running, TaskState::Running);
        let mut pending = task("t2", 2, 1_000, TaskState::Pending, TaskState::Running);
        running.service_id = "s1".into();
        pending.service_id = "s1".into();
        let opts = PsOptions {
            host_ports: [("s1".to_string(), "*:8080->80/tcp".to_string())].into(),
            ..Default::default()
        };
        let listing = task_listing(&[running, pending], &HashMap::new(), opts, 2_000);
        let ports: Vec<&Value> = listing.rows.iter().map(|r| &r.fields["Ports"]).collect();
        assert_eq!(ports, ["*:8080->80/tcp", ""]);
    }

    #[test]
    fn ps_shows_health_after_the_state_as_docker_ps() {
        let with = |id: &str, slot, state, health: HealthStatus| {
            let mut t = task(id, slot, 1_000, state, TaskState::Running);
            if let Some(s) = t.status.as_mut() {
                s.health = health as i32;
            }
            t
        };
        let tasks = [
            with("t1", 1, TaskState::Starting, HealthStatus::Starting),
            with("t2", 2, TaskState::Running, HealthStatus::Healthy),
            with("t3", 3, TaskState::Failed, HealthStatus::Unhealthy),
            with("t4", 4, TaskState::Running, HealthStatus::None),
        ];
        let listing = task_listing(&tasks, &HashMap::new(), PsOptions::default(), 6_000);
        let states: Vec<&Value> = listing
            .rows
            .iter()
            .map(|r| &r.fields["CurrentState"])
            .collect();
        assert_eq!(
            states,
            [
                "Starting 5 seconds ago (health: starting)",
                "Running 5 seconds ago (healthy)",
                "Failed 5 seconds ago (unhealthy)",
                "Running 5 seconds ago",
            ]
        );
    }

    #[test]
    fn ls_rows() {
        let service = Service {
            id: "abcdefghijklmnopqrstuvwxy".into(),
            spec: Some(Box::new(ServiceSpec {
                name: "web".into(),
                replicas: 3,
                container: Some(ContainerSpec {
                    image: "docker.io/library/nginx:1.25".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let summary = |service: Service, running, desired, completed, job_total| ServiceSummary {
            service: Some(service),
            running,
            desired,
            completed,
            job_total,
        };
        let mut job = service.clone();
        job.id = "mnopqrstuvwxyz".into();
        if let Some(spec) = job.spec.as_mut() {
            spec.name = "batch".into();
            spec.mode = ServiceMode::ReplicatedJob as i32;
        }
        let out = service_listing(&[summary(service, 2, 3, 0, 0), summary(job, 1, 2, 7, 10)])
            .render(&Format::Table)
            .unwrap();
        assert_eq!(
            out,
            "ID             NAME      MODE             REPLICAS               IMAGE        PORTS\n\
             abcdefghijkl   web       replicated       2/3                    nginx:1.25\n\
             mnopqrstuvwx   batch     replicated job   1/2 (7/10 completed)   nginx:1.25\n"
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
}
