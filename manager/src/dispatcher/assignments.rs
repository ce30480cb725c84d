//! What a session has sent of its node's tasks, so that a message after the first carries only
//! the tasks that changed (swarmkit's incremental assignments). With a hundred tasks per node,
//! re-sending the whole set on every change copied, encoded and decoded each task about as many
//! times as its node had tasks.

use std::collections::{HashMap, HashSet};

use shoal_proto::{Task, TaskState};

/// What of an assigned task the worker needs to hear about again when it changes: its ID, its
/// desired state, and its state while the manager owns it (ASSIGNED) or once it is finished.
/// The states in between are the worker's own reports; sending them back tells it nothing
/// (swarmkit's dispatcher skips them too).
pub(super) type TaskKey = (String, i32, i32);

pub(super) fn task_key(t: &Task) -> TaskKey {
    let state = t.state();
    let stage = if state.is_terminal() {
        state
    } else {
        state.min(TaskState::Assigned)
    };
    (t.id.clone(), t.desired_state, stage as i32)
}

/// The tasks a session told its node about, by ID, as their [`TaskKey`] was then.
#[derive(Debug, Default)]
pub(super) struct Sent {
    keys: HashMap<String, (i32, i32)>,
}

/// How the node's tasks differ from what was sent.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Delta {
    /// Tasks new to the node, or whose key changed.
    pub changed: Vec<String>,
    /// Tasks sent before and no longer assigned.
    pub removed: Vec<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

impl Sent {
    /// What differs between what was sent and the node's tasks now (`now`, one key per task).
    pub fn delta(&self, now: &[TaskKey]) -> Delta {
        let changed = now
            .iter()
            .filter(|(id, desired, stage)| self.keys.get(id) != Some(&(*desired, *stage)))
            .map(|(id, _, _)| id.clone())
            .collect();
        let current: HashSet<&str> = now.iter().map(|(id, _, _)| id.as_str()).collect();
        let mut removed: Vec<String> = self
            .keys
            .keys()
            .filter(|id| !current.contains(id.as_str()))
            .cloned()
            .collect();
        removed.sort_unstable();
        Delta { changed, removed }
    }

    /// The node now holds `now`.
    pub fn record(&mut self, now: Vec<TaskKey>) {
        self.keys = now
            .into_iter()
            .map(|(id, desired, stage)| (id, (desired, stage)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, desired: TaskState, state: TaskState) -> TaskKey {
        (id.into(), desired as i32, state as i32)
    }

    #[test]
    fn nothing_sent_yet_means_every_task_is_new() {
        let now = [
            key("a", TaskState::Running, TaskState::Assigned),
            key("b", TaskState::Running, TaskState::Assigned),
        ];
        let d = Sent::default().delta(&now);
        assert_eq!(d.changed, ["a", "b"]);
        assert!(d.removed.is_empty());
    }

    #[test]
    fn only_added_changed_and_removed_tasks_differ() {
        let mut sent = Sent::default();
        sent.record(vec![
            key("kept", TaskState::Running, TaskState::Assigned),
            key("stopped", TaskState::Running, TaskState::Assigned),
            key("gone", TaskState::Running, TaskState::Assigned),
        ]);
        let now = [
            key("kept", TaskState::Running, TaskState::Assigned),
            key("stopped", TaskState::Shutdown, TaskState::Assigned),
            key("new", TaskState::Running, TaskState::Assigned),
        ];
        let d = sent.delta(&now);
        assert_eq!(d.changed, ["stopped", "new"]);
        assert_eq!(d.removed, ["gone"]);
        sent.record(now.to_vec());
        assert!(sent.delta(&now).is_empty());
    }

    #[test]
    fn a_workers_own_progress_is_no_change() {
        let mut task = Task {
            id: "t".into(),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        };
        let status = |s: TaskState| shoal_proto::TaskStatus {
            state: s as i32,
            ..Default::default()
        };
        task.status = Some(status(TaskState::Assigned));
        let mut sent = Sent::default();
        sent.record(vec![task_key(&task)]);
        for s in [TaskState::Accepted, TaskState::Starting, TaskState::Running] {
            task.status = Some(status(s));
            assert!(sent.delta(&[task_key(&task)]).is_empty(), "{s:?}");
        }
        task.status = Some(status(TaskState::Failed));
        assert_eq!(sent.delta(&[task_key(&task)]).changed, ["t"]);
    }
}
