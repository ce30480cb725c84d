//! Which services an orchestrator round plans: all of them, or only those whose service or
//! tasks the entries applied since the last round touched.
//!
//! A service's plan depends on its spec, its own tasks and the nodes; so a task's status report
//! concerns its service only, while a change of a node, a network or the cluster concerns every
//! service. While a hundred services of a thousand replicas start, the reports in one round
//! come from the few services being created, so a round reads a few thousand tasks instead of a
//! hundred thousand. A deleted task is looked up no more (its service is unknown), so a delete
//! makes the next round a full one; deletes come from the reaper, not from starting tasks.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::{store_action::Action, Task, TaskState, TaskStatus};

use crate::reconcile::Wake;
use crate::store::StoreState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// These service IDs (some may be deleted services whose tasks remain).
    Services(BTreeSet<String>),
}

impl Scope {
    /// The scope of a round woken by `wake`, read against the state the round plans from.
    pub fn of(wake: &Wake, state: &StoreState) -> Scope {
        let Wake::Changes(applied) = wake else {
            return Scope::All;
        };
        let mut services = BTreeSet::new();
        for action in applied.iter().flat_map(|a| &a.actions) {
            let Some(action) = &action.action else {
                continue;
            };
            let task_id = match action {
                Action::CreateService(s) | Action::UpdateService(s) => {
                    services.insert(s.id.clone());
                    continue;
                }
                Action::DeleteService(id) => {
                    services.insert(id.clone());
                    continue;
                }
                Action::SetUpdateStatus(c) => {
                    services.insert(c.service_id.clone());
                    continue;
                }
                Action::CreateTask(t) => {
                    services.insert(t.service_id.clone());
                    continue;
                }
                // A node's own addresses play no part in any plan, nor do secrets and configs
                // (a service's references to them are part of its spec).
                Action::AllocateNode(_)
                | Action::CreateSecret(_)
                | Action::DeleteSecret(_)
                | Action::CreateConfig(_)
                | Action::DeleteConfig(_) => continue,
                Action::AllocateTask(a) => &a.task_id,
                Action::AssignTask(a) => &a.task_id,
                // A worker's progress between ASSIGNED and RUNNING (accepted, preparing,
                // starting) changes no plan: every rule reads those states alike. Three of
                // every task's five reports are such.
                Action::UpdateTaskStatus(u) if u.status.as_ref().is_some_and(progress) => continue,
                Action::MarkTaskPending(u) | Action::UpdateTaskStatus(u) => &u.task_id,
                Action::SetTaskDesiredState(d) => &d.task_id,
                Action::DeleteTask(_)
                | Action::PutCluster(_)
                | Action::PutNode(_)
                | Action::NodeStatus(_)
                | Action::RemoveNode(_)
                | Action::CreateNetwork(_)
                | Action::DeleteNetwork(_) => return Scope::All,
            };
            // A task deleted since is no one's concern any more.
            if let Some(t) = state.tasks.get(task_id) {
                if !services.contains(&t.service_id) {
                    services.insert(t.service_id.clone());
                }
            }
        }
        Scope::Services(services)
    }

    pub fn includes(&self, service_id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Services(ids) => ids.contains(service_id),
        }
    }

    /// The tasks of the services in scope: for services, through the store's index, a hashed
    /// lookup per task (cheaper than a walk of every task, whatever part of them the scope
    /// holds).
    pub fn tasks<'a>(&'a self, state: &'a StoreState) -> Box<dyn Iterator<Item = &'a Task> + 'a> {
        match self {
            Scope::All => Box::new(state.tasks.values()),
            Scope::Services(ids) => Box::new(ids.iter().flat_map(|id| state.tasks_of_service(id))),
        }
    }

    /// The tasks in scope grouped by service ID (services without tasks left out), each group
    /// in task ID order. For services, one group per service from the index, presized:
    /// grouping task by task costs a search of the groups per task.
    pub fn by_service<'a>(&'a self, state: &'a StoreState) -> BTreeMap<&'a str, Vec<&'a Task>> {
        let mut groups: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
        match self {
            Scope::All => {
                for t in state.tasks.values() {
                    groups.entry(t.service_id.as_str()).or_default().push(t);
                }
                // In ID order, as the index gives a service's tasks: the map's own order is
                // arbitrary, and a plan's ties (tasks created in the same entry) follow it.
                for tasks in groups.values_mut() {
                    tasks.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                }
            }
            Scope::Services(ids) => {
                for id in ids {
                    let mut tasks = Vec::with_capacity(state.tasks.count_of_service(id));
                    tasks.extend(state.tasks_of_service(id));
                    if !tasks.is_empty() {
                        groups.insert(id.as_str(), tasks);
                    }
                }
            }
        }
        groups
    }

    /// The scope cut into parts of whole services holding about `tasks` tasks each (a service
    /// with more is a part of its own), which together cover it: for `All`, every service and
    /// every service ID tasks still name. A round plans part by part, each from a read of its
    /// own: one read for the whole of a hundred thousand tasks held the store for seconds on a
    /// busy machine, and the Raft loop waits for readers before it applies an entry.
    pub fn split(&self, state: &StoreState, tasks: usize) -> Vec<Scope> {
        let ids: BTreeSet<&str> = match self {
            Scope::All => state
                .services
                .keys()
                .map(String::as_str)
                .chain(state.tasks.service_ids())
                .collect(),
            Scope::Services(ids) => ids.iter().map(String::as_str).collect(),
        };
        let mut parts = Vec::new();
        let mut part = BTreeSet::new();
        let mut in_part = 0;
        for id in ids {
            let n = state.tasks.count_of_service(id);
            if !part.is_empty() && in_part + n > tasks {
                parts.push(Scope::Services(std::mem::take(&mut part)));
                in_part = 0;
            }
            part.insert(id.to_string());
            in_part += n;
        }
        if !part.is_empty() {
            parts.push(Scope::Services(part));
        }
        parts
    }

    /// Nothing to plan.
    pub fn is_empty(&self) -> bool {
        matches!(self, Scope::Services(ids) if ids.is_empty())
    }
}

/// A state strictly between ASSIGNED and RUNNING.
fn progress(s: &TaskStatus) -> bool {
    s.state > TaskState::Assigned as i32 && s.state < TaskState::Running as i32
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_proto::{StoreAction, TaskStatusUpdate};

    use super::super::testing::{ready, service, state, task};
    use super::*;
    use crate::store::Applied;

    fn woken_by(actions: Vec<Action>) -> Wake {
        Wake::Changes(vec![Arc::new(Applied {
            index: 1,
            actions: actions
                .into_iter()
                .map(|a| StoreAction { action: Some(a) })
                .collect(),
        })])
    }

    fn report(id: &str) -> Action {
        Action::UpdateTaskStatus(TaskStatusUpdate {
            task_id: id.into(),
            status: None,
        })
    }

    #[test]
    fn a_task_change_concerns_its_service_and_a_node_change_every_service() {
        let st = state(
            vec![service("s1", shoal_proto::ServiceMode::Replicated, 1)],
            vec![ready("n1")],
            vec![task("t1", 1, "n1", shoal_proto::TaskState::Running, 0)],
        );
        let only = |ids: &[&str]| Scope::Services(ids.iter().map(|s| s.to_string()).collect());
        assert_eq!(Scope::of(&Wake::Everything, &st), Scope::All);
        assert_eq!(Scope::of(&woken_by(vec![report("t1")]), &st), only(&["s1"]));
        assert_eq!(
            Scope::of(&woken_by(vec![report("deleted since")]), &st),
            only(&[])
        );
        assert!(Scope::of(&woken_by(vec![]), &st).is_empty());
        let node = Action::PutNode(ready("n1").into());
        assert_eq!(
            Scope::of(&woken_by(vec![report("t1"), node]), &st),
            Scope::All
        );
        let deleted = Action::DeleteService("s9".into());
        assert_eq!(Scope::of(&woken_by(vec![deleted]), &st), only(&["s9"]));
    }

    #[test]
    fn only_a_workers_progress_before_running_concerns_no_service() {
        let st = state(
            vec![service("s1", shoal_proto::ServiceMode::Replicated, 1)],
            vec![ready("n1")],
            vec![task("t1", 1, "n1", TaskState::Starting, 0)],
        );
        let reported = |state: TaskState| {
            let report = Action::UpdateTaskStatus(TaskStatusUpdate {
                task_id: "t1".into(),
                status: Some(TaskStatus {
                    state: state as i32,
                    ..Default::default()
                }),
            });
            Scope::of(&woken_by(vec![report]), &st)
        };
        for state in [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Starting,
        ] {
            assert!(reported(state).is_empty(), "{state:?}");
        }
        for state in [
            TaskState::Assigned,
            TaskState::Running,
            TaskState::Failed,
            TaskState::Complete,
        ] {
            assert!(reported(state).includes("s1"), "{state:?}");
        }
    }

    #[test]
    fn the_tasks_in_scope_are_those_of_its_services() {
        let mut tasks: Vec<Task> = (1..=6)
            .map(|i| task(&format!("t{i}"), i, "n1", TaskState::Running, 0))
            .collect();
        tasks[5].service_id = "s2".into();
        let st = state(vec![], vec![ready("n1")], tasks);
        let ids = |scope: &Scope| -> Vec<String> {
            let mut ids: Vec<String> = scope.tasks(&st).map(|t| t.id.clone()).collect();
            ids.sort();
            ids
        };
        let s1 = Scope::Services(["s1".to_string()].into());
        assert_eq!(ids(&s1), ["t1", "t2", "t3", "t4", "t5"]);
        let s2 = Scope::Services(["s2".to_string()].into());
        assert_eq!(ids(&s2), ["t6"]);
        let both = Scope::Services(["s1".to_string(), "s2".to_string()].into());
        assert_eq!(ids(&both), ids(&Scope::All));
    }

    #[test]
    fn a_scoped_plan_plans_only_its_services() {
        let st = state(
            vec![
                service("s1", shoal_proto::ServiceMode::Replicated, 2),
                service("s2", shoal_proto::ServiceMode::Replicated, 1),
            ],
            vec![ready("n1")],
            vec![],
        );
        let scope = Scope::Services(["s2".to_string()].into());
        let plan = super::super::plan_scoped(&st, 0, &scope);
        let services: Vec<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(Action::CreateTask(t)) => Some(t.service_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(services, ["s2"]);
        assert_eq!(super::super::plan(&st, 0).actions.len(), 3);
    }

    #[test]
    fn a_scope_splits_into_whole_services_of_bounded_size_that_cover_it() {
        // s1: 5 tasks, s2: 2, s3: 1, and "gone" (deleted, 2 tasks left); s4 has none.
        let mut tasks: Vec<Task> = (1..=10)
            .map(|i| task(&format!("t{i}"), i, "n1", TaskState::Running, 0))
            .collect();
        for (t, owner) in tasks[5..]
            .iter_mut()
            .zip(["s2", "s2", "s3", "gone", "gone"])
        {
            t.service_id = owner.into();
        }
        let services = ["s1", "s2", "s3", "s4"]
            .map(|id| service(id, shoal_proto::ServiceMode::Replicated, 1))
            .to_vec();
        let st = state(services, vec![ready("n1")], tasks);
        let parts = |scope: &Scope, size| -> Vec<Vec<String>> {
            scope
                .split(&st, size)
                .into_iter()
                .map(|p| match p {
                    Scope::Services(ids) => ids.into_iter().collect(),
                    Scope::All => panic!("a part names its services"),
                })
                .collect()
        };
        let ids = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Every service and every service ID its tasks name, in ID order, ≤ 3 tasks a part
        // unless one service alone has more.
        assert_eq!(
            parts(&Scope::All, 3),
            [ids(&["gone"]), ids(&["s1"]), ids(&["s2", "s3", "s4"])]
        );
        assert_eq!(
            parts(&Scope::All, 100),
            [ids(&["gone", "s1", "s2", "s3", "s4"])]
        );
        let some = Scope::Services(["s2".to_string(), "s3".to_string()].into());
        assert_eq!(parts(&some, 1), [ids(&["s2"]), ids(&["s3"])]);
        assert!(Scope::Services(BTreeSet::new()).split(&st, 3).is_empty());
    }
}
