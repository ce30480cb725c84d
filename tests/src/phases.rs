//! Where a Shoal task's start time goes: a service's tasks sampled through the Control API
//! while the service starts, turned into per-phase medians.
//!
//! The store keeps only a task's latest status. The worker stamps each state it reports
//! (ACCEPTED on), so a sample that catches a task in such a state gives that state's exact
//! start; the sampler also notes when it first saw each state (the only time there is for
//! ASSIGNED, and for when RUNNING became visible). A state passed through between two samples
//! (or within one store commit) is missed, and the phases that border it are left out for that
//! task: the medians say over how many tasks they were taken.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use shoal_proto::control_client::ControlClient;
use shoal_proto::{ListTasksRequest, TaskState};

/// What was seen of one task: its creation, the stamp of each state seen, and when the
/// sampler first saw it in each state (all ms since the epoch, one machine's clock).
#[derive(Default, Debug)]
pub struct TaskTimes {
    pub created_ms: i64,
    pub stamped_ms: BTreeMap<i32, i64>,
    pub seen_ms: BTreeMap<i32, i64>,
}

/// A point in a task's start: a state's stamp, or when the sampler first saw a state.
#[derive(Clone, Copy)]
pub enum Mark {
    Created,
    /// The first of these states' stamps that was seen.
    Stamped(&'static [TaskState]),
    Seen(TaskState),
}

/// The worker stamps ACCEPTED and PREPARING back to back, so often only one is seen.
const WORKER_TOOK: &[TaskState] = &[TaskState::Accepted, TaskState::Preparing];

/// The phases printed, each from one mark to the next. ASSIGNED is marked when first seen:
/// the store keeps the creation's stamp on it (as of this writing), so its stamp says nothing.
pub const PHASES: [(&str, Mark, Mark); 6] = [
    (
        "schedule (created → assigned seen, upper bound)",
        Mark::Created,
        Mark::Seen(TaskState::Assigned),
    ),
    // Exact, unlike the two phases it is made of: the sampler sees ASSIGNED late.
    (
        "schedule+assign (created → worker accepts)",
        Mark::Created,
        Mark::Stamped(WORKER_TOOK),
    ),
    (
        "prepare (accepted → starting: image, network)",
        Mark::Stamped(WORKER_TOOK),
        Mark::Stamped(&[TaskState::Starting]),
    ),
    (
        "create+start (starting → running)",
        Mark::Stamped(&[TaskState::Starting]),
        Mark::Stamped(&[TaskState::Running]),
    ),
    (
        "report (running → running seen)",
        Mark::Stamped(&[TaskState::Running]),
        Mark::Seen(TaskState::Running),
    ),
    (
        "total (created → running seen)",
        Mark::Created,
        Mark::Seen(TaskState::Running),
    ),
];

impl TaskTimes {
    fn at(&self, mark: Mark) -> Option<i64> {
        match mark {
            Mark::Created => Some(self.created_ms),
            Mark::Stamped(states) => states
                .iter()
                .find_map(|s| self.stamped_ms.get(&(*s as i32)).copied()),
            Mark::Seen(s) => self.seen_ms.get(&(s as i32)).copied(),
        }
    }

    fn phase_ms(&self, from: Mark, to: Mark) -> Option<i64> {
        Some(self.at(to)? - self.at(from)?)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
            let now = now_ms();
            for task in resp.into_inner().tasks {
                let times = seen.entry(task.id.clone()).or_default();
                times.created_ms = task.meta.map_or(0, |m| m.created_at_ms);
                if let Some(st) = task.status {
                    times.stamped_ms.entry(st.state).or_insert(st.timestamp_ms);
                    times.seen_ms.entry(st.state).or_insert(now);
                }
            }
        }
        let running = seen
            .values()
            .filter(|t| t.seen_ms.contains_key(&(TaskState::Running as i32)))
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

/// The median of the phase from `from` to `to` over the tasks it could be measured for, and
/// how many those were.
pub fn median_ms(tasks: &[TaskTimes], from: Mark, to: Mark) -> (Option<i64>, usize) {
    let mut values: Vec<i64> = tasks.iter().filter_map(|t| t.phase_ms(from, to)).collect();
    values.sort_unstable();
    (values.get(values.len() / 2).copied(), values.len())
}
