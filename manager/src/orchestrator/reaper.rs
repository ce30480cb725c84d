//! The task reaper: deletes tasks nobody needs any more, so the store (and, through the
//! assignment set, the worker's containers and log files) does not grow without bound.
//!
//! A task is deleted only once it is finished (or was never placed): its worker has seen the
//! shutdown and cleaned up the container; deleting it then tells the worker to drop the logs.

use std::collections::BTreeMap;

use shoal_proto::{store_action::Action, StoreAction, Task, TaskState};

use crate::store::StoreState;

/// Docker's default `--task-history-limit`.
pub const DEFAULT_TASK_HISTORY_LIMIT: u64 = 5;

fn finished_or_unplaced(t: &Task) -> bool {
    t.state().is_terminal() || (t.state() <= TaskState::Pending && t.node_id.is_empty())
}

pub fn plan(state: &StoreState) -> Vec<StoreAction> {
    let limit = state
        .cluster
        .as_ref()
        .map(|c| c.task_history_limit)
        .filter(|&l| l > 0)
        .unwrap_or(DEFAULT_TASK_HISTORY_LIMIT) as usize;
    let mut doomed = Vec::new();
    let mut history: BTreeMap<(&str, u64), Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        let stopped = t.desired() > TaskState::Running && finished_or_unplaced(t);
        match state.services.get(&t.service_id) {
            None if stopped || finished_or_unplaced(t) => doomed.push(t),
            None => {}
            Some(s) if stopped && t.slot > s.spec.as_ref().map_or(0, |s| s.replicas) => {
                doomed.push(t)
            }
            Some(_) if stopped => history.entry((&t.service_id, t.slot)).or_default().push(t),
            Some(_) => {}
        }
    }
    for dead in history.values_mut() {
        if dead.len() > limit {
            dead.sort_by_key(|t| std::cmp::Reverse(t.meta.as_ref().map_or(0, |m| m.created_at_ms)));
            doomed.extend(dead.drain(limit..));
        }
    }
    doomed
        .into_iter()
        .map(|t| StoreAction {
            action: Some(Action::DeleteTask(t.id.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Meta, Service, ServiceSpec, TaskStatus};

    fn task(
        id: &str,
        service: &str,
        slot: u64,
        state: TaskState,
        desired: TaskState,
        at: i64,
    ) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            slot,
            node_id: "n1".into(),
            desired_state: desired as i32,
            meta: Some(Meta {
                created_at_ms: at,
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn deleted(actions: Vec<StoreAction>) -> Vec<String> {
        let mut ids: Vec<String> = actions
            .into_iter()
            .filter_map(|a| match a.action {
                Some(Action::DeleteTask(id)) => Some(id),
                _ => None,
            })
            .collect();
        ids.sort();
        ids
    }

    fn with_service(replicas: u64, tasks: Vec<Task>) -> StoreState {
        let mut s = StoreState::default();
        s.services.insert(
            "s1".into(),
            Service {
                id: "s1".into(),
                spec: Some(ServiceSpec {
                    name: "web".into(),
                    replicas,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        s.tasks = tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        s
    }

    #[test]
    fn keeps_history_up_to_the_limit() {
        let tasks = (0..7)
            .map(|i| {
                task(
                    &format!("t{i}"),
                    "s1",
                    1,
                    TaskState::Failed,
                    TaskState::Shutdown,
                    i,
                )
            })
            .collect();
        assert_eq!(deleted(plan(&with_service(1, tasks))), vec!["t0", "t1"]);
    }

    #[test]
    fn removed_service_tasks_go_once_finished() {
        let mut s = StoreState::default();
        for t in [
            task(
                "done",
                "gone",
                1,
                TaskState::Shutdown,
                TaskState::Shutdown,
                0,
            ),
            task(
                "stopping",
                "gone",
                2,
                TaskState::Running,
                TaskState::Shutdown,
                0,
            ),
        ] {
            s.tasks.insert(t.id.clone(), t);
        }
        assert_eq!(deleted(plan(&s)), vec!["done"]);
    }

    #[test]
    fn scaled_away_slots_go_once_stopped() {
        let tasks = vec![
            task("keep", "s1", 1, TaskState::Running, TaskState::Running, 0),
            task("away", "s1", 2, TaskState::Shutdown, TaskState::Shutdown, 0),
        ];
        assert_eq!(deleted(plan(&with_service(1, tasks))), vec!["away"]);
    }
}
