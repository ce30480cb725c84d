//! What the autoscaler measures for CPU and memory policies, from the usage the workers report
//! ([`crate::usage::UsageStore`], the leader's memory).
//!
//! Utilisation is per task, in percent of the task's **basis**:
//!
//! * CPU: the CPUs used between the task's last two samples, against its CPU limit
//!   (`--limit-cpu`), else its reservation (`--reserve-cpu`), else one whole CPU.
//! * Memory: the working set of the last sample, against its memory limit, else its
//!   reservation (a memory policy without either is refused at creation).
//!
//! The service's observation is the mean over its slots `1..=replicas` whose task is RUNNING
//! and has a reading; slots without one are gaps that [`super::decide::utilisation`] fills.

use std::collections::HashMap;

use shoal_proto::{ResourceAmounts, Task, TaskState};

use crate::usage::UsageSamples;

/// Which resource a policy measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

/// What a task's utilisation is measured against, for the decision's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    Limit,
    Reservation,
    OneCpu,
}

impl Basis {
    pub fn describe(self) -> &'static str {
        match self {
            Basis::Limit => "limit",
            Basis::Reservation => "reservation",
            Basis::OneCpu => "one CPU",
        }
    }
}

fn amounts(t: &Task) -> (ResourceAmounts, ResourceAmounts) {
    let r = t
        .spec
        .as_ref()
        .and_then(|c| c.resources.as_ref())
        .cloned()
        .unwrap_or_default();
    (
        r.limits.unwrap_or_default(),
        r.reservations.unwrap_or_default(),
    )
}

/// The basis of `t` for `resource` and its size (CPUs, or bytes); `None` for memory with
/// neither a limit nor a reservation.
pub fn basis(t: &Task, resource: Resource) -> Option<(Basis, f64)> {
    let (limits, reservations) = amounts(t);
    match resource {
        Resource::Cpu if limits.nano_cpus > 0 => {
            Some((Basis::Limit, limits.nano_cpus as f64 / 1e9))
        }
        Resource::Cpu if reservations.nano_cpus > 0 => {
            Some((Basis::Reservation, reservations.nano_cpus as f64 / 1e9))
        }
        Resource::Cpu => Some((Basis::OneCpu, 1.0)),
        Resource::Memory if limits.memory_bytes > 0 => {
            Some((Basis::Limit, limits.memory_bytes as f64))
        }
        Resource::Memory if reservations.memory_bytes > 0 => {
            Some((Basis::Reservation, reservations.memory_bytes as f64))
        }
        Resource::Memory => None,
    }
}

/// One task's utilisation in percent, when it runs and has been measured.
pub fn reading(t: &Task, usage: Option<&UsageSamples>, resource: Resource) -> Option<f64> {
    if t.state() != TaskState::Running || t.desired() != TaskState::Running {
        return None;
    }
    let usage = usage?;
    let (_, size) = basis(t, resource)?;
    let used = match resource {
        Resource::Cpu => usage.cpu_rate()?,
        Resource::Memory => {
            if usage.latest.timestamp_ms == 0 {
                return None;
            }
            usage.latest.memory_working_set_bytes as f64
        }
    };
    Some(used / size * 100.0)
}

/// The service's readings, one per slot `1..=replicas`: the reading of the slot's live task.
pub fn readings(
    tasks: &[Task],
    replicas: u64,
    usage: &HashMap<String, UsageSamples>,
    resource: Resource,
) -> (Vec<Option<f64>>, Option<Basis>) {
    let mut per_slot: Vec<Option<f64>> = vec![None; replicas as usize];
    let mut basis_seen = None;
    for t in tasks {
        if t.slot == 0 || t.slot > replicas || t.desired() > TaskState::Running {
            continue;
        }
        if let Some(r) = reading(t, usage.get(&t.id), resource) {
            per_slot[(t.slot - 1) as usize] = Some(r);
            basis_seen = basis(t, resource).map(|(b, _)| b);
        }
    }
    (per_slot, basis_seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ContainerSpec, Resources, TaskStatus, TaskUsage};

    fn task(id: &str, slot: u64, state: TaskState, limits: ResourceAmounts) -> Task {
        Task {
            id: id.into(),
            slot,
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            spec: Some(Box::new(ContainerSpec {
                resources: Some(Resources {
                    limits: Some(limits),
                    reservations: Some(ResourceAmounts {
                        nano_cpus: 500_000_000,
                        memory_bytes: 0,
                    }),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn samples(cpu_then: f64, cpu_now: f64, memory: u64) -> UsageSamples {
        UsageSamples {
            node_id: "n1".into(),
            previous: Some(TaskUsage {
                cpu_seconds_total: cpu_then,
                timestamp_ms: 1_000,
                ..Default::default()
            }),
            latest: TaskUsage {
                cpu_seconds_total: cpu_now,
                memory_working_set_bytes: memory,
                timestamp_ms: 3_000,
                ..Default::default()
            },
        }
    }

    #[test]
    fn cpu_against_limit_then_reservation_then_one_cpu() {
        let limited = task(
            "a",
            1,
            TaskState::Running,
            ResourceAmounts {
                nano_cpus: 200_000_000,
                memory_bytes: 64 << 20,
            },
        );
        // 0.2 s of CPU over 2 s = 0.1 CPU = 50 % of a 0.2 CPU limit.
        let u = samples(10.0, 10.2, 32 << 20);
        let r = reading(&limited, Some(&u), Resource::Cpu).unwrap();
        assert!((r - 50.0).abs() < 1e-9, "{r}");
        assert_eq!(reading(&limited, Some(&u), Resource::Memory), Some(50.0));
        assert_eq!(basis(&limited, Resource::Cpu), Some((Basis::Limit, 0.2)));
        let reserved = task("b", 1, TaskState::Running, ResourceAmounts::default());
        assert_eq!(
            basis(&reserved, Resource::Cpu),
            Some((Basis::Reservation, 0.5))
        );
        assert_eq!(basis(&reserved, Resource::Memory), None);
        let mut bare = reserved.clone();
        bare.spec = None;
        assert_eq!(basis(&bare, Resource::Cpu), Some((Basis::OneCpu, 1.0)));
        let r = reading(&bare, Some(&u), Resource::Cpu).unwrap();
        assert!((r - 10.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn only_running_measured_tasks_of_current_slots_have_readings() {
        let lim = ResourceAmounts {
            nano_cpus: 1_000_000_000,
            memory_bytes: 0,
        };
        let mut stopping = task("stopping", 2, TaskState::Running, lim);
        stopping.desired_state = TaskState::Shutdown as i32;
        let tasks = vec![
            task("running", 1, TaskState::Running, lim),
            stopping,
            task("starting", 2, TaskState::Starting, lim),
            task("unmeasured", 3, TaskState::Running, lim),
            task("scaled-away", 5, TaskState::Running, lim),
        ];
        let usage: HashMap<String, UsageSamples> =
            ["running", "stopping", "starting", "scaled-away"]
                .into_iter()
                .map(|id| (id.to_string(), samples(0.0, 1.0, 0)))
                .collect();
        let (r, basis) = readings(&tasks, 4, &usage, Resource::Cpu);
        assert_eq!(r, vec![Some(50.0), None, None, None]);
        assert_eq!(basis, Some(Basis::Limit));
        // A single sample gives no rate yet.
        let mut one = samples(0.0, 1.0, 0);
        one.previous = None;
        assert_eq!(reading(&tasks[0], Some(&one), Resource::Cpu), None);
    }
}
