//! Task resource usage, per task and summed per service, from the
//! [`crate::usage::UsageStore`] the workers' reports fill (see `shoal_worker::stats` for what
//! each value is).
//!
//! A sample is exported only while its task is in the store, on the node that reported it, not
//! yet finished, and on a node that is not down: the store forgets a node's tasks only when the
//! node reports again, and a dead node never does.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;
use shoal_proto::{NodeState, Task, TaskUsage};

use super::encode::{counters, gauges, Labels};
use crate::store::StoreState;
use crate::usage::UsageSamples;

/// One exported task: its labels' values and its samples.
struct Row<'a> {
    service: &'a str,
    task: &'a Task,
    slot: String,
    samples: &'a UsageSamples,
}

impl Row<'_> {
    fn labels(&self) -> Labels<'_> {
        vec![
            ("service", Cow::Borrowed(self.service)),
            ("task", Cow::Borrowed(self.task.id.as_str())),
            ("slot", Cow::Borrowed(self.slot.as_str())),
            ("node", Cow::Borrowed(self.samples.node_id.as_str())),
        ]
    }

    fn latest(&self) -> &TaskUsage {
        &self.samples.latest
    }
}

/// Service totals.
#[derive(Default)]
struct ServiceUsage {
    tasks: u64,
    cpu_cores: f64,
    memory_working_set_bytes: u64,
}

/// One sample per task: its labels, and `value` of its latest report.
fn per_task<'a, V>(
    rows: &'a [Row<'a>],
    value: impl Fn(&TaskUsage) -> V + 'a,
) -> impl Iterator<Item = (Labels<'a>, V)> + 'a {
    rows.iter().map(move |r| (r.labels(), value(r.latest())))
}

/// One sample per service: its name, and `value` of its totals.
fn per_service<'a, V>(
    services: &'a BTreeMap<&'a str, ServiceUsage>,
    value: impl Fn(&ServiceUsage) -> V + 'a,
) -> impl Iterator<Item = ([(&'static str, &'a str); 1], V)> + 'a {
    services
        .iter()
        .map(move |(name, u)| ([("service", *name)], value(u)))
}

pub fn encode(
    enc: &mut DescriptorEncoder,
    st: &StoreState,
    usage: &HashMap<String, UsageSamples>,
) -> fmt::Result {
    let mut rows: Vec<Row> = usage
        .iter()
        .filter_map(|(task_id, samples)| {
            let task = st.tasks.get(task_id)?;
            let node_down = st
                .nodes
                .get(&samples.node_id)
                .is_none_or(|n| n.state() == NodeState::Down);
            if task.node_id != samples.node_id || task.state().is_terminal() || node_down {
                return None;
            }
            let service = st
                .services
                .get(&task.service_id)
                .and_then(|s| s.spec.as_ref())
                .map_or(task.service_name.as_str(), |s| s.name.as_str());
            Some(Row {
                service,
                task,
                slot: task.slot.to_string(),
                samples,
            })
        })
        .collect();
    // A stable order keeps the output diffable from one scrape to the next.
    rows.sort_by(|a, b| (a.service, &a.task.id).cmp(&(b.service, &b.task.id)));

    counters(
        enc,
        "shoal_task_cpu",
        "CPU time the task's processes used.",
        Some(&Unit::Seconds),
        per_task(&rows, |u| u.cpu_seconds_total),
    )?;
    gauges(
        enc,
        "shoal_task_memory_working_set",
        "The task's memory use less the file cache the kernel can drop (cgroup usage minus \
         inactive file).",
        Some(&Unit::Bytes),
        per_task(&rows, |u| u.memory_working_set_bytes),
    )?;
    gauges(
        enc,
        "shoal_task_memory_limit",
        "The task's memory limit (only tasks that have one).",
        Some(&Unit::Bytes),
        per_task(&rows, |u| u.memory_limit_bytes).filter(|(_, limit)| *limit > 0),
    )?;
    gauges(
        enc,
        "shoal_task_cpu_limit",
        "The task's CPU limit in CPUs (only tasks that have one).",
        Some(&Unit::Other("cores".into())),
        per_task(&rows, |u| u.cpu_limit_nano_cpus as f64 / 1e9).filter(|(_, cpus)| *cpus > 0.0),
    )?;
    counters(
        enc,
        "shoal_task_network_receive",
        "Bytes the task received on its network interfaces (loopback excluded).",
        Some(&Unit::Bytes),
        per_task(&rows, |u| u.network_rx_bytes),
    )?;
    counters(
        enc,
        "shoal_task_network_transmit",
        "Bytes the task sent on its network interfaces (loopback excluded).",
        Some(&Unit::Bytes),
        per_task(&rows, |u| u.network_tx_bytes),
    )?;

    let mut services: BTreeMap<&str, ServiceUsage> = BTreeMap::new();
    for r in &rows {
        let s = services.entry(r.service).or_default();
        s.tasks += 1;
        s.cpu_cores += r.samples.cpu_rate().unwrap_or(0.0);
        s.memory_working_set_bytes += r.latest().memory_working_set_bytes;
    }
    gauges(
        enc,
        "shoal_service_usage_tasks",
        "Tasks of the service whose usage the workers report.",
        None,
        per_service(&services, |u| u.tasks),
    )?;
    gauges(
        enc,
        "shoal_service_cpu_usage",
        "CPUs the service's tasks used between their last two usage reports, summed.",
        Some(&Unit::Other("cores".into())),
        per_service(&services, |u| u.cpu_cores),
    )?;
    gauges(
        enc,
        "shoal_service_memory_working_set",
        "Working set of the service's tasks, summed.",
        Some(&Unit::Bytes),
        per_service(&services, |u| u.memory_working_set_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageStore;
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;
    use shoal_proto::{
        Meta, Node, Service, ServiceSpec, TaskState, TaskStatus, TaskUsage as Usage,
    };

    #[derive(Debug)]
    struct Fixed(StoreState, HashMap<String, UsageSamples>);

    impl Collector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            crate::metrics::cluster::encode(&mut enc, &self.0)?;
            encode(&mut enc, &self.0, &self.1)
        }
    }

    fn task(id: &str, node: &str, slot: u64, state: TaskState) -> Task {
        Task {
            id: id.into(),
            meta: Some(Meta::default()),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot,
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(id: &str, state: NodeState) -> Node {
        Node {
            id: id.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    fn usage(id: &str, cpu: f64, mem: u64, at: i64) -> Usage {
        Usage {
            task_id: id.into(),
            cpu_seconds_total: cpu,
            memory_working_set_bytes: mem,
            memory_limit_bytes: if id == "t1" { 1 << 28 } else { 0 },
            timestamp_ms: at,
            ..Default::default()
        }
    }

    #[test]
    fn per_task_and_per_service_series() {
        let mut st = StoreState::default();
        st.services.insert(
            "s1".into(),
            Service {
                id: "s1".into(),
                spec: Some(Box::new(ServiceSpec {
                    name: "web".into(),
                    replicas: 3,
                    ..Default::default()
                })),
                ..Default::default()
            },
        );
        st.nodes.insert("n1".into(), node("n1", NodeState::Ready));
        st.nodes.insert("n2".into(), node("n2", NodeState::Down));
        for t in [
            task("t1", "n1", 1, TaskState::Running),
            task("t2", "n1", 2, TaskState::Running),
            task("t3", "n2", 3, TaskState::Running),
            task("t4", "n1", 4, TaskState::Complete),
        ] {
            st.tasks.insert(t.id.clone(), t);
        }
        let store = UsageStore::default();
        let first = ["t1", "t2", "t4"].map(|id| usage(id, 10.0, 1000, 1_000));
        store.record("n1", first.to_vec());
        store.record(
            "n1",
            vec![
                usage("t1", 11.0, 3000, 3_000),
                usage("t2", 10.5, 2000, 3_000),
                usage("t4", 12.0, 500, 3_000),
                // Reported by a node it does not run on: not exported.
                usage("t3", 1.0, 1, 3_000),
            ],
        );
        store.record("n2", vec![usage("t3", 5.0, 100, 3_000)]);

        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(st, store.all())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();

        let labels = r#"{service="web",task="t1",slot="1",node="n1"}"#;
        for line in [
            format!("shoal_task_cpu_seconds_total{labels} 11.0"),
            format!("shoal_task_memory_working_set_bytes{labels} 3000"),
            format!("shoal_task_memory_limit_bytes{labels} 268435456"),
            r#"shoal_task_cpu_seconds_total{service="web",task="t2",slot="2",node="n1"} 10.5"#
                .to_string(),
            r#"shoal_service_usage_tasks{service="web"} 2"#.to_string(),
            r#"shoal_service_cpu_usage_cores{service="web"} 0.75"#.to_string(),
            r#"shoal_service_memory_working_set_bytes{service="web"} 5000"#.to_string(),
            r#"shoal_service_replicas_desired{service="web"} 3"#.to_string(),
            r#"shoal_service_replicas_running{service="web"} 3"#.to_string(),
            r#"shoal_nodes{role="worker",state="down",availability="active"} 1"#.to_string(),
            r#"shoal_nodes{role="manager",state="ready",availability="drain"} 0"#.to_string(),
            r#"shoal_tasks{state="running",desired_state="running"} 3"#.to_string(),
            "shoal_scheduler_pending_tasks 0".to_string(),
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line} missing in:\n{text}"
            );
        }
        for absent in [r#"task="t3""#, r#"task="t4""#] {
            assert!(!text.contains(absent), "{absent} exported:\n{text}");
        }
        assert!(
            !text.contains(r#"shoal_task_memory_limit_bytes{service="web",task="t2""#),
            "a task without a limit has no limit series:\n{text}"
        );
    }
}
