//! Where a Shoal task's start time goes: the status timestamps of a service's tasks, sampled
//! through the Control API while the service starts, turned into per-phase medians.
//!
//! The store keeps only a task's latest status, stamped when that state was entered (by the
//! manager for ASSIGNED, by the worker from ACCEPTED on), and the task's `meta` (created at,
//! updated at = when the store last committed a change to it). Sampling often therefore gives
//! the exact entry time of every state the sampler saw a task in; a state a task passed
//! through between two samples (or within one store commit) is missed, and the phases that
//! border it are left out for that task. The medians say over how many tasks they were taken.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_proto::control_client::ControlClient;
use shoal_proto::{ListTasksRequest, TaskState};

/// What was seen of one task: entry time (ms since the epoch) of each state seen, its
/// creation, and when the store committed its RUNNING status.
#[derive(Default, Debug)]
pub struct TaskTimes {
    pub created_ms: i64,
    pub entered_ms: BTreeMap<i32, i64>,
    pub running_committed_ms: Option<i64>,
}

/// The phases printed, each from one state's entry to another's (or to the commit of RUNNING).
pub const PHASES: [(&str, Phase); 6] = [
    (
        "schedule (created → assigned)",
        Phase::States(None, TaskState::Assigned),
    ),
    (
        "assign (assigned → accepted by the worker)",
        Phase::States(Some(TaskState::Assigned), TaskState::Accepted),
    ),
    (
        "prepare (preparing → starting: image, network)",
        Phase::States(Some(TaskState::Preparing), TaskState::Starting),
    ),
    (
        "create+start (starting → running)",
        Phase::States(Some(TaskState::Starting), TaskState::Running),
    ),
    ("report (running → stored)", Phase::Report),
    ("total (created → running stored)", Phase::Total),
];

#[derive(Clone, Copy)]
pub enum Phase {
    /// From the entry of the first state (None: the task's creation) to the second's.
    States(Option<TaskState>, TaskState),
    /// From the worker's RUNNING stamp to the store's commit of it.
    Report,
    /// From creation to the store's commit of RUNNING.
    Total,
}

impl TaskTimes {
    fn phase_ms(&self, phase: Phase) -> Option<i64> {
        let at = |s: TaskState| self.entered_ms.get(&(s as i32)).copied();
        match phase {
            Phase::States(from, to) => {
                let from = match from {
                    Some(s) => at(s)?,
                    None => self.created_ms,
                };
                Some(at(to)? - from)
            }
            Phase::Report => Some(self.running_committed_ms? - at(TaskState::Running)?),
            Phase::Total => Some(self.running_committed_ms? - self.created_ms),
        }
    }
}

/// Samples the tasks of `service` through the API socket every `period` until `n` of them are
/// RUNNING (or `timeout` passes). Takes owned arguments so that it can be spawned.
pub async fn sample(
    api_socket: PathBuf,
    service: String,
    n: usize,
    period: Duration,
    timeout: Duration,
) -> Result<Vec<TaskTimes>> {
    let channel = shoal_worker::containerd::connect_unix(&api_socket)
        .await
        .context("connect to the daemon's API socket")?;
    let mut client = ControlClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut seen: BTreeMap<String, TaskTimes> = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    loop {
        let resp = client
            .list_tasks(ListTasksRequest {
                service: service.clone(),
                ..Default::default()
            })
            .await;
        // Before the service exists the daemon answers "not found": keep polling.
        if let Ok(resp) = resp {
            for task in resp.into_inner().tasks {
                let times = seen.entry(task.id.clone()).or_default();
                let meta = task.meta.unwrap_or_default();
                times.created_ms = meta.created_at_ms;
                if let Some(st) = task.status {
                    times.entered_ms.entry(st.state).or_insert(st.timestamp_ms);
                    if st.state == TaskState::Running as i32 && times.running_committed_ms.is_none()
                    {
                        times.running_committed_ms = Some(meta.updated_at_ms);
                    }
                }
            }
        }
        let running = seen
            .values()
            .filter(|t| t.running_committed_ms.is_some())
            .count();
        if running >= n {
            return Ok(seen.into_values().collect());
        }
        if Instant::now() > deadline {
            bail!("only {running} of {n} tasks of {service} ran within {timeout:?}");
        }
        tokio::time::sleep(period).await;
    }
}

/// The median of `phase` over the tasks it could be measured for, and how many those were.
pub fn median_ms(tasks: &[TaskTimes], phase: Phase) -> (Option<i64>, usize) {
    let mut values: Vec<i64> = tasks.iter().filter_map(|t| t.phase_ms(phase)).collect();
    values.sort_unstable();
    (values.get(values.len() / 2).copied(), values.len())
}
