//! Replicated services → tasks: one live task per slot `1..=replicas`, restarts by policy,
//! scale down from the highest slot.
//!
//! Planning is a pure function of the store state and the time, so it is unit-tested without
//! Raft and re-run from scratch every round.

use std::collections::BTreeMap;

use shoal_proto::{
    restart_policy::Condition, store_action::Action, RestartPolicy, Service, StoreAction, Task,
    TaskDesiredState, TaskState, TaskStatus,
};

use crate::ids::new_id;
use crate::store::StoreState;

/// Docker's default restart delay.
pub const DEFAULT_RESTART_DELAY_MS: u64 = 5_000;

#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<StoreAction>,
    /// Earliest time (ms) a restart delay expires, so the loop can wake for it.
    pub wake_at_ms: Option<i64>,
}

fn act(a: Action) -> StoreAction {
    StoreAction { action: Some(a) }
}

fn desire(task: &Task, state: TaskState) -> StoreAction {
    act(Action::SetTaskDesiredState(TaskDesiredState {
        task_id: task.id.clone(),
        desired_state: state as i32,
    }))
}

pub fn plan(state: &StoreState, now_ms: i64) -> Plan {
    let mut plan = Plan::default();
    let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        by_service.entry(t.service_id.as_str()).or_default().push(t);
    }
    for (service_id, tasks) in &by_service {
        if !state.services.contains_key(*service_id) {
            // The service is gone: stop whatever still runs (the reaper deletes them later).
            for t in tasks.iter().filter(|t| t.desired() <= TaskState::Running) {
                plan.actions.push(desire(t, TaskState::Shutdown));
            }
        }
    }
    for service in state.services.values() {
        let tasks = by_service
            .get(service.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        plan_service(service, tasks, now_ms, &mut plan);
    }
    plan
}

fn plan_service(service: &Service, tasks: &[&Task], now_ms: i64, plan: &mut Plan) {
    let replicas = service.spec.as_ref().map_or(0, |s| s.replicas);
    let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        slots.entry(t.slot).or_default().push(t);
    }
    for slot_tasks in slots.values_mut() {
        // Newest first.
        slot_tasks.sort_by_key(|t| std::cmp::Reverse(created_ms(t)));
    }

    for (&slot, slot_tasks) in &slots {
        for t in slot_tasks {
            let live = t.desired() <= TaskState::Running;
            if live && (slot > replicas || t.state().is_terminal()) {
                // Scaled away, or ended by itself: it will not run again either way. Whether
                // the slot gets a new task is decided below from the history.
                plan.actions.push(desire(t, TaskState::Shutdown));
            }
        }
    }

    for slot in 1..=replicas {
        let history = slots.get(&slot).map(Vec::as_slice).unwrap_or(&[]);
        let has_live = history
            .iter()
            .any(|t| t.desired() <= TaskState::Running && !t.state().is_terminal());
        if has_live {
            continue;
        }
        match restart_decision(history, now_ms) {
            Restart::Now => plan
                .actions
                .push(act(Action::CreateTask(new_task(service, slot, now_ms)))),
            Restart::At(at) => {
                plan.wake_at_ms = Some(plan.wake_at_ms.map_or(at, |w| w.min(at)));
            }
            Restart::Never => {}
        }
    }
}

enum Restart {
    Now,
    At(i64),
    Never,
}

/// Whether a slot with no live task gets a new one, from its history (newest first).
fn restart_decision(history: &[&Task], now_ms: i64) -> Restart {
    let Some(newest) = history.first() else {
        return Restart::Now;
    };
    let state = newest.state();
    // Not finished yet (being shut down) or stopped by us (scale down, then up again): the
    // slot is wanted again and the policy does not apply.
    if !state.is_terminal() || state == TaskState::Shutdown {
        return Restart::Now;
    }
    let policy = newest.restart.clone().unwrap_or_default();
    let failed = state != TaskState::Complete || exit_code(newest) != 0;
    let wanted = match Condition::try_from(policy.condition).unwrap_or(Condition::Any) {
        Condition::Any => true,
        Condition::None => false,
        Condition::OnFailure => failed,
    };
    if !wanted || attempts_exhausted(&policy, history, now_ms) {
        return Restart::Never;
    }
    let delay = if policy.delay_ms == 0 && newest.restart.is_none() {
        DEFAULT_RESTART_DELAY_MS
    } else {
        policy.delay_ms
    };
    let at = status_ms(newest).saturating_add(delay as i64);
    if at <= now_ms {
        Restart::Now
    } else {
        Restart::At(at)
    }
}

/// `max_attempts` restarts are allowed (within `window_ms` when set): the first run does not
/// count, so the slot has used `ended - 1` restarts.
fn attempts_exhausted(policy: &RestartPolicy, history: &[&Task], now_ms: i64) -> bool {
    if policy.max_attempts == 0 {
        return false;
    }
    let ended = history
        .iter()
        .filter(|t| {
            let s = t.state();
            s.is_terminal() && s != TaskState::Shutdown
        })
        .filter(|t| policy.window_ms == 0 || now_ms - status_ms(t) <= policy.window_ms as i64)
        .count() as u64;
    ended > policy.max_attempts
}

fn created_ms(t: &Task) -> (i64, u64) {
    let meta = t.meta.as_ref();
    (
        meta.map_or(0, |m| m.created_at_ms),
        meta.map_or(0, |m| m.version),
    )
}

fn status_ms(t: &Task) -> i64 {
    t.status.as_ref().map_or(0, |s| s.timestamp_ms)
}

fn exit_code(t: &Task) -> i32 {
    t.status.as_ref().map_or(0, |s| s.exit_code)
}

pub fn new_task(service: &Service, slot: u64, now_ms: i64) -> Task {
    let spec = service.spec.clone().unwrap_or_default();
    Task {
        id: new_id(),
        meta: Some(shoal_proto::Meta {
            version: 0,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }),
        service_id: service.id.clone(),
        service_name: spec.name.clone(),
        slot,
        node_id: String::new(),
        spec: spec.container.clone(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::New as i32,
            timestamp_ms: now_ms,
            message: "created".into(),
            ..Default::default()
        }),
        service_version: service.meta.as_ref().map_or(0, |m| m.version),
        restart: spec.restart.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Meta, ServiceSpec};

    fn service(replicas: u64, restart: Option<RestartPolicy>) -> Service {
        Service {
            id: "s1".into(),
            meta: Some(Meta {
                version: 1,
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                name: "web".into(),
                replicas,
                restart,
                ..Default::default()
            }),
            previous_spec: None,
        }
    }

    fn state_with(service: Service, tasks: Vec<Task>) -> StoreState {
        let mut s = StoreState::default();
        s.services.insert(service.id.clone(), service);
        for t in tasks {
            s.tasks.insert(t.id.clone(), t);
        }
        s
    }

    fn task(id: &str, slot: u64, state: TaskState, desired: TaskState, at: i64) -> Task {
        let mut t = new_task(&service(1, None), slot, at);
        t.id = id.into();
        t.desired_state = desired as i32;
        t.status = Some(TaskStatus {
            state: state as i32,
            timestamp_ms: at,
            exit_code: if state == TaskState::Failed { 137 } else { 0 },
            ..Default::default()
        });
        t
    }

    fn created(plan: &Plan) -> Vec<u64> {
        plan.actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(Action::CreateTask(t)) => Some(t.slot),
                _ => None,
            })
            .collect()
    }

    fn shut_down(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(Action::SetTaskDesiredState(d)) => Some(d.task_id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn creates_one_task_per_slot() {
        let plan = plan(&state_with(service(3, None), vec![]), 0);
        assert_eq!(created(&plan), vec![1, 2, 3]);
    }

    #[test]
    fn scale_down_stops_highest_slots() {
        let tasks = (1..=3)
            .map(|i| {
                task(
                    &format!("t{i}"),
                    i,
                    TaskState::Running,
                    TaskState::Running,
                    0,
                )
            })
            .collect();
        let plan = plan(&state_with(service(1, None), tasks), 0);
        assert!(created(&plan).is_empty());
        let mut stopped = shut_down(&plan);
        stopped.sort();
        assert_eq!(stopped, vec!["t2", "t3"]);
    }

    #[test]
    fn failed_task_is_replaced_after_the_restart_delay() {
        let policy = RestartPolicy {
            delay_ms: 1000,
            ..Default::default()
        };
        let tasks = vec![task("t1", 1, TaskState::Failed, TaskState::Running, 10_000)];
        let s = state_with(service(1, Some(policy.clone())), tasks);
        let mut s = s;
        s.tasks.get_mut("t1").unwrap().restart = Some(policy);
        let early = plan(&s, 10_500);
        assert_eq!(
            shut_down(&early),
            vec!["t1"],
            "the dead task is marked at once"
        );
        assert!(created(&early).is_empty());
        assert_eq!(early.wake_at_ms, Some(11_000));
        let late = plan(&s, 11_000);
        assert_eq!(created(&late), vec![1]);
    }

    #[test]
    fn restart_condition_none_leaves_the_slot_finished() {
        let policy = RestartPolicy {
            condition: Condition::None as i32,
            ..Default::default()
        };
        let mut t = task("t1", 1, TaskState::Complete, TaskState::Shutdown, 0);
        t.restart = Some(policy.clone());
        let plan = plan(&state_with(service(1, Some(policy)), vec![t]), 100_000);
        assert!(created(&plan).is_empty());
    }

    #[test]
    fn on_failure_does_not_restart_a_clean_exit() {
        let policy = RestartPolicy {
            condition: Condition::OnFailure as i32,
            ..Default::default()
        };
        let mut ok = task("t1", 1, TaskState::Complete, TaskState::Shutdown, 0);
        ok.restart = Some(policy.clone());
        let mut bad = task("t2", 2, TaskState::Failed, TaskState::Shutdown, 0);
        bad.restart = Some(policy.clone());
        let plan = plan(
            &state_with(service(2, Some(policy)), vec![ok, bad]),
            100_000,
        );
        assert_eq!(created(&plan), vec![2]);
    }

    #[test]
    fn max_attempts_stops_restarting() {
        let policy = RestartPolicy {
            max_attempts: 1,
            ..Default::default()
        };
        let mut a = task("t1", 1, TaskState::Failed, TaskState::Shutdown, 0);
        a.restart = Some(policy.clone());
        let mut b = task("t2", 1, TaskState::Failed, TaskState::Shutdown, 1);
        b.restart = Some(policy.clone());
        b.meta.as_mut().unwrap().created_at_ms = 1;
        let plan = plan(&state_with(service(1, Some(policy)), vec![a, b]), 100_000);
        assert!(created(&plan).is_empty());
    }

    #[test]
    fn scaled_down_slot_is_refilled_when_scaled_up_again() {
        let tasks = vec![task("t2", 2, TaskState::Shutdown, TaskState::Shutdown, 0)];
        let plan = plan(&state_with(service(2, None), tasks), 0);
        assert_eq!(created(&plan), vec![1, 2]);
    }

    #[test]
    fn tasks_of_a_removed_service_are_stopped() {
        let mut s = StoreState::default();
        let t = task("t1", 1, TaskState::Running, TaskState::Running, 0);
        s.tasks.insert(t.id.clone(), t);
        assert_eq!(shut_down(&plan(&s, 0)), vec!["t1"]);
    }
}
