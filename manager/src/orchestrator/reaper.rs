//! The task reaper: deletes tasks nobody needs any more, so the store (and, through the
//! assignment set, the worker's containers and log files) does not grow without bound.
//!
//! A task is deleted only once it is finished (or was never assigned): its worker has seen the
//! shutdown and cleaned up the container; deleting it then tells the worker to drop the logs.
//! A task stranded on a DOWN node counts as finished once the orchestrator has reported it
//! SHUTDOWN on the node's behalf (see the orchestrator's module documentation).
//!
//! History is kept per (service, slot) for replicated services and per (service, node) for
//! global ones, up to the cluster's task history limit; tasks of scaled-away slots and of
//! removed nodes go once finished.

use std::collections::BTreeMap;

use shoal_proto::{store_action::Action, ServiceMode, StoreAction, Task, TaskState};

use super::Scope;
use crate::store::StoreState;

/// Docker's default `--task-history-limit`.
pub const DEFAULT_TASK_HISTORY_LIMIT: u64 = 5;

/// A task never assigned (even a global task, whose node is set at creation) never reached a
/// worker: nothing to clean up on a node.
fn finished_or_unplaced(t: &Task) -> bool {
    t.state().is_terminal() || t.state() <= TaskState::Pending
}

/// Whose history a task belongs to.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Owner<'a> {
    Slot(u64),
    Node(&'a str),
}

pub fn plan(state: &StoreState) -> Vec<StoreAction> {
    plan_scoped(state, &Scope::All)
}

/// The deletions among the tasks of the services in `scope`.
pub fn plan_scoped(state: &StoreState, scope: &Scope) -> Vec<StoreAction> {
    let limit = state
        .cluster
        .as_ref()
        .map(|c| c.task_history_limit)
        .filter(|&l| l > 0)
        .unwrap_or(DEFAULT_TASK_HISTORY_LIMIT) as usize;
    let mut doomed = Vec::new();
    let mut history: BTreeMap<(&str, Owner), Vec<&Task>> = BTreeMap::new();
    for t in scope.tasks(state) {
        let finished = finished_or_unplaced(t);
        let stopped = t.desired() > TaskState::Running && finished;
        if !finished {
            // Live, whether its service is there or not: nothing to delete (most tasks).
            continue;
        }
        let Some(service) = state.services.get(&t.service_id) else {
            doomed.push(t);
            continue;
        };
        if !stopped {
            continue;
        }
        let (mode, replicas) = service
            .spec
            .as_ref()
            .map_or((ServiceMode::Replicated, 0), |s| (s.mode(), s.replicas));
        // A job's tasks of an earlier iteration are nobody's history.
        let old_run =
            super::jobs::is_job(mode) && t.job_iteration != super::jobs::iteration(service);
        let owner = match mode {
            _ if old_run => None,
            ServiceMode::Replicated | ServiceMode::ReplicatedJob
                if t.slot == 0 || t.slot > replicas =>
            {
                None
            }
            ServiceMode::Replicated | ServiceMode::ReplicatedJob => Some(Owner::Slot(t.slot)),
            ServiceMode::Global | ServiceMode::GlobalJob
                if t.slot != 0 || !state.nodes.contains_key(&t.node_id) =>
            {
                None
            }
            ServiceMode::Global | ServiceMode::GlobalJob => Some(Owner::Node(&t.node_id)),
        };
        match owner {
            Some(owner) => history.entry((&t.service_id, owner)).or_default().push(t),
            None => doomed.push(t),
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
                spec: Some(Box::new(ServiceSpec {
                    name: "web".into(),
                    replicas,
                    ..Default::default()
                })),
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

    fn global_state(nodes: &[&str], tasks: Vec<Task>) -> StoreState {
        let mut s = with_service(0, tasks);
        let spec = s.services.get_mut("s1").unwrap().spec.as_mut().unwrap();
        spec.mode = ServiceMode::Global as i32;
        for n in nodes {
            s.nodes.insert(
                n.to_string(),
                shoal_proto::Node {
                    id: n.to_string(),
                    ..Default::default()
                },
            );
        }
        s
    }

    fn global_task(id: &str, node: &str, at: i64) -> Task {
        let mut t = task(id, "s1", 0, TaskState::Failed, TaskState::Shutdown, at);
        t.node_id = node.into();
        t
    }

    #[test]
    fn global_history_is_kept_per_node() {
        let mut tasks: Vec<Task> = (0..7)
            .map(|i| global_task(&format!("a{i}"), "a", i))
            .collect();
        tasks.extend((0..3).map(|i| global_task(&format!("b{i}"), "b", i)));
        assert_eq!(
            deleted(plan(&global_state(&["a", "b"], tasks))),
            vec!["a0", "a1"],
            "slot 0 is not one shared history"
        );
    }

    #[test]
    fn global_tasks_of_removed_nodes_go_once_finished() {
        let mut running = global_task("running", "gone", 0);
        running.status = Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        });
        let tasks = vec![global_task("done", "gone", 0), running];
        assert_eq!(deleted(plan(&global_state(&[], tasks))), vec!["done"]);
    }

    #[test]
    fn a_global_task_never_assigned_counts_as_finished() {
        // Its node is set at creation, yet it never reached a worker.
        let mut t = global_task("pending", "gone", 0);
        t.status = Some(TaskStatus {
            state: TaskState::Pending as i32,
            ..Default::default()
        });
        assert_eq!(deleted(plan(&global_state(&[], vec![t]))), vec!["pending"]);
    }

    #[test]
    fn tasks_of_the_other_mode_go_once_stopped() {
        let slot0 = task(
            "slot0",
            "s1",
            0,
            TaskState::Shutdown,
            TaskState::Shutdown,
            0,
        );
        assert_eq!(deleted(plan(&with_service(1, vec![slot0]))), vec!["slot0"]);
        let slot1 = global_task("slot1", "a", 0);
        let mut slot1 = slot1;
        slot1.slot = 1;
        assert_eq!(
            deleted(plan(&global_state(&["a"], vec![slot1]))),
            vec!["slot1"]
        );
    }
}
