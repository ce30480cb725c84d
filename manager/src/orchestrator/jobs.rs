//! Jobs (docker 20.10's `--mode replicated-job` and `--mode global-job`): tasks that run to
//! completion. A replicated job runs `replicas` completions in slots `1..=replicas`, at most
//! `max_concurrent` at once (default: all), lowest slots first; a global job runs once on every
//! eligible node, including nodes that join later. A task that completes is done: its desired
//! state becomes COMPLETE and its slot or node gets nothing more; a task that fails is replaced
//! under the restart policy (on-failure by default for jobs), in the same slot or on the same
//! node.
//!
//! Each create or update of a job starts a new iteration (`Service.job_status`): the tasks of
//! older iterations are stopped if they still run and are reaped once finished, and every slot
//! or node runs again. Jobs have no rolling update: a new iteration replaces them all at once.

use std::collections::BTreeMap;

use shoal_proto::{Node, Service, ServiceMode, Task, TaskDesiredState, TaskState};

use super::global::accepts_new;
use super::restart::{self, Restart};
use super::{fate, is_live, new_task, Fate, Plan};
use crate::constraint::Constraints;
use crate::store::StoreState;

/// The iteration a job service is on.
pub fn iteration(service: &Service) -> u64 {
    service.job_status.as_ref().map_or(0, |j| j.iteration)
}

pub use shoal_proto::validate::jobs::is_job;

/// Done: it ran to completion.
fn completed(t: &Task) -> bool {
    t.state() == TaskState::Complete
}

/// Splits the service's tasks into the current iteration's, grouped by `key` newest first; a
/// live task of an older iteration is stopped. Finished tasks of the current iteration still
/// desired RUNNING are marked: COMPLETE when they succeeded, SHUTDOWN otherwise.
fn current_tasks<'a, K: Ord>(
    service: &Service,
    tasks: &[&'a Task],
    key: impl Fn(&Task) -> K,
    plan: &mut Plan,
) -> BTreeMap<K, Vec<&'a Task>> {
    let iteration = iteration(service);
    let mut groups: BTreeMap<K, Vec<&Task>> = BTreeMap::new();
    for &t in tasks {
        let desired_running = t.desired() <= TaskState::Running;
        if t.job_iteration != iteration {
            if desired_running {
                plan.shut_down(t);
            }
            continue;
        }
        if desired_running && t.state().is_terminal() {
            if completed(t) {
                plan.push(shoal_proto::store_action::Action::SetTaskDesiredState(
                    TaskDesiredState {
                        task_id: t.id.clone(),
                        desired_state: TaskState::Complete as i32,
                        timestamp_ms: plan.now_ms,
                    },
                ));
            } else {
                plan.shut_down(t);
            }
        }
        groups.entry(key(t)).or_default().push(t);
    }
    for history in groups.values_mut() {
        restart::newest_first(history);
    }
    groups
}

/// What a slot or node with no live task needs: nothing once a task completed, else what the
/// restart policy says.
fn decision(history: &[&Task], now_ms: i64) -> Restart {
    if history.iter().any(|t| completed(t)) {
        return Restart::Never;
    }
    restart::decision(history, now_ms)
}

pub(super) fn plan_replicated(
    service: &Service,
    tasks: &[&Task],
    nodes: &BTreeMap<String, Node>,
    now_ms: i64,
    plan: &mut Plan,
) {
    let spec = service.spec.clone().unwrap_or_default();
    let total = spec.replicas;
    let max_concurrent = match spec.max_concurrent {
        0 => total,
        n => n.min(total),
    };
    let constraints = Constraints::of_service(service).ok();
    let slots = current_tasks(service, tasks, |t| t.slot, plan);
    for (&slot, history) in &slots {
        if slot == 0 || slot > total {
            history
                .iter()
                .filter(|t| is_live(t))
                .for_each(|t| plan.shut_down(t));
        }
    }
    let mut running = 0;
    let mut wanting = Vec::new();
    for slot in 1..=total {
        let history = slots.get(&slot).map_or(&[][..], Vec::as_slice);
        let mut stays = false;
        for t in history.iter().filter(|t| is_live(t)) {
            // One live task per slot; one whose node is lost or drained is replaced.
            if stays || fate(t, nodes, constraints.as_ref()) != Fate::Stay {
                plan.shut_down(t);
            } else {
                stays = true;
            }
        }
        if stays {
            running += 1;
            continue;
        }
        match decision(history, now_ms) {
            Restart::Now => wanting.push(slot),
            Restart::At(at) => plan.wake_at(at),
            Restart::Never => {}
        }
    }
    for slot in wanting {
        if running >= max_concurrent {
            break;
        }
        plan.create(new_task(service, slot, "", now_ms));
        running += 1;
    }
}

pub(super) fn plan_global(
    service: &Service,
    tasks: &[&Task],
    nodes: &BTreeMap<String, Node>,
    now_ms: i64,
    plan: &mut Plan,
) {
    let constraints = Constraints::of_service(service).ok();
    let by_node = current_tasks(service, tasks, |t| t.node_id.clone(), plan);
    for (node_id, history) in &by_node {
        let eligible = nodes
            .get(node_id)
            .is_some_and(|n| accepts_new(n, constraints.as_ref()));
        for (i, t) in history.iter().filter(|t| is_live(t)).enumerate() {
            if i > 0 || !eligible {
                plan.shut_down(t);
            }
        }
    }
    for node in nodes
        .values()
        .filter(|n| accepts_new(n, constraints.as_ref()))
    {
        let history = by_node.get(&node.id).map_or(&[][..], Vec::as_slice);
        if history.iter().any(|t| is_live(t)) {
            continue;
        }
        match decision(history, now_ms) {
            Restart::Now => plan.create(new_task(service, 0, &node.id, now_ms)),
            Restart::At(at) => plan.wake_at(at),
            Restart::Never => {}
        }
    }
}

/// A job's tasks of the current iteration that completed, and how many it runs in all (the
/// replicas, or for a global job the nodes it has run on or runs on now).
pub fn progress(state: &StoreState, service: &Service) -> (u64, u64) {
    let iteration = iteration(service);
    let mut done = std::collections::BTreeSet::new();
    let mut places = std::collections::BTreeSet::new();
    for t in state
        .tasks_of_service(&service.id)
        .filter(|t| t.job_iteration == iteration)
    {
        let place = (t.slot, t.node_id.as_str());
        let place = if t.slot == 0 { place } else { (t.slot, "") };
        if completed(t) {
            done.insert(place);
        }
        if completed(t) || is_live(t) {
            places.insert(place);
        }
    }
    let spec = service.spec.as_ref();
    let total = match spec.map_or(ServiceMode::Replicated, |s| s.mode()) {
        ServiceMode::GlobalJob => places.len() as u64,
        _ => spec.map_or(0, |s| s.replicas),
    };
    (done.len() as u64, total)
}

#[cfg(test)]
mod tests;
