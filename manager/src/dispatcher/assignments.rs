//! What a session has sent of its node's tasks, so that a message after the first carries only
//! the tasks that changed (swarmkit's incremental assignments). With a hundred tasks per node,
//! re-sending the whole set on every change copied, encoded and decoded each task about as many
//! times as its node had tasks.

use std::collections::HashMap;

use shoal_proto::{Task, TaskState};

/// What of an assigned task the worker needs to hear about again when it changes: its desired
/// state, and its state while the manager owns it (ASSIGNED) or once it is finished. The states
/// in between are the worker's own reports; sending them back tells it nothing (swarmkit's
/// dispatcher skips them too).
pub(super) type Key = (i32, i32);

pub(super) fn key_of(t: &Task) -> Key {
    let state = t.state();
    let stage = if state.is_terminal() {
        state
    } else {
        state.min(TaskState::Assigned)
    };
    (t.desired_state, stage as i32)
}

/// The tasks a session told its node about, by ID, as their [`Key`] was then.
#[derive(Debug, Default)]
pub(super) struct Sent {
    keys: HashMap<String, Key>,
}

/// How the node's tasks differ from what was sent.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Delta {
    /// Tasks new to the node, or whose key changed, with their key now.
    pub changed: Vec<(String, Key)>,
    /// Tasks sent before and no longer assigned, by ID.
    pub removed: Vec<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }

    pub fn changed_ids(&self) -> Vec<String> {
        self.changed.iter().map(|(id, _)| id.clone()).collect()
    }
}

impl Sent {
    /// How the tasks `ids` differ from what was sent: `now` gives a task's key if it is
    /// assigned to the node now. Tasks not among `ids` are taken as unchanged, so a session
    /// that knows which tasks an entry touched looks at those only.
    pub fn delta<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        now: impl Fn(&str) -> Option<Key>,
    ) -> Delta {
        let mut delta = Delta::default();
        for id in ids {
            match (now(id), self.keys.get(id)) {
                (Some(key), Some(sent)) if key == *sent => {}
                (Some(key), _) => delta.changed.push((id.to_string(), key)),
                (None, Some(_)) => delta.removed.push(id.to_string()),
                (None, None) => {}
            }
        }
        delta
    }

    /// The tasks sent, by ID.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The node was sent `delta`.
    pub fn apply(&mut self, delta: &Delta) {
        for (id, key) in &delta.changed {
            self.keys.insert(id.clone(), *key);
        }
        for id in &delta.removed {
            self.keys.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn key(desired: TaskState, state: TaskState) -> Key {
        (desired as i32, state as i32)
    }

    const RUN: Key = (TaskState::Running as i32, TaskState::Assigned as i32);

    /// The delta over every task, sent or current.
    fn delta(sent: &Sent, now: &BTreeMap<&str, Key>) -> Delta {
        let ids = now
            .keys()
            .copied()
            .chain(sent.ids().filter(|id| !now.contains_key(id)));
        sent.delta(ids, |id| now.get(id).copied())
    }

    #[test]
    fn nothing_sent_yet_means_every_task_is_new() {
        let now = BTreeMap::from([("a", RUN), ("b", RUN)]);
        let d = delta(&Sent::default(), &now);
        assert_eq!(d.changed_ids(), ["a", "b"]);
        assert!(d.removed.is_empty());
    }

    #[test]
    fn only_added_changed_and_removed_tasks_differ() {
        let mut sent = Sent::default();
        let before = BTreeMap::from([("gone", RUN), ("kept", RUN), ("stopped", RUN)]);
        sent.apply(&delta(&sent, &before));
        let stopping = key(TaskState::Shutdown, TaskState::Assigned);
        let now = BTreeMap::from([("kept", RUN), ("new", RUN), ("stopped", stopping)]);
        let d = delta(&sent, &now);
        assert_eq!(
            d.changed,
            [("new".to_string(), RUN), ("stopped".to_string(), stopping)]
        );
        assert_eq!(d.removed, ["gone"]);
        sent.apply(&d);
        assert!(delta(&sent, &now).is_empty());
        // Looking at some tasks only sees the changes of those.
        let later = BTreeMap::from([("kept", stopping), ("new", stopping)]);
        let d = sent.delta(["new", "stopped"], |id| later.get(id).copied());
        assert_eq!(d.changed, [("new".to_string(), stopping)]);
        assert_eq!(d.removed, ["stopped"]);
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
        let assigned = key_of(&task);
        for s in [TaskState::Accepted, TaskState::Starting, TaskState::Running] {
            task.status = Some(status(s));
            assert_eq!(key_of(&task), assigned, "{s:?}");
        }
        task.status = Some(status(TaskState::Failed));
        assert_ne!(key_of(&task), assigned);
    }
}
