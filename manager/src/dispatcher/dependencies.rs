//! Which secrets and configs a node's session carries (swarmkit's task dependencies): those
//! referenced by the node's live tasks, and nothing else, so a secret reaches only the nodes
//! that run a task using it, and leaves a node's messages once its last such task has ended.
//! Pure: the session reads the store and asks here.

use std::collections::BTreeSet;

use shoal_proto::{Config, Secret, Task};

use crate::store::StoreState;

/// The IDs of the secrets and of the configs a set of tasks needs, sorted: what a session
/// compares to know whether to send again.
pub(super) type DependencyIds = (Vec<String>, Vec<String>);

/// The IDs the live (not terminal) `tasks` reference, of objects the store still holds.
pub(super) fn ids<'a>(st: &StoreState, tasks: impl Iterator<Item = &'a Task>) -> DependencyIds {
    let mut secrets = BTreeSet::new();
    let mut configs = BTreeSet::new();
    for c in tasks
        .filter(|t| !t.state().is_terminal())
        .filter_map(|t| t.spec.as_ref())
    {
        secrets.extend(
            c.secrets
                .iter()
                .map(|r| &r.secret_id)
                .filter(|id| st.secrets.contains_key(*id))
                .cloned(),
        );
        configs.extend(
            c.configs
                .iter()
                .map(|r| &r.config_id)
                .filter(|id| st.configs.contains_key(*id))
                .cloned(),
        );
    }
    (secrets.into_iter().collect(), configs.into_iter().collect())
}

/// The secrets and configs themselves, data included, for the session message.
pub(super) fn objects(st: &StoreState, ids: &DependencyIds) -> (Vec<Secret>, Vec<Config>) {
    let secrets = ids.0.iter().filter_map(|id| st.secrets.get(id)).cloned();
    let configs = ids.1.iter().filter_map(|id| st.configs.get(id)).cloned();
    (secrets.collect(), configs.collect())
}

#[cfg(test)]
mod tests {
    use shoal_proto::{ContainerSpec, SecretReference, SecretSpec, TaskState, TaskStatus};

    use super::*;

    fn task(id: &str, node: &str, secret: Option<&str>, state: TaskState) -> Task {
        Task {
            id: id.into(),
            node_id: node.into(),
            spec: Some(Box::new(ContainerSpec {
                secrets: secret
                    .map(|s| SecretReference {
                        secret_id: s.into(),
                        secret_name: s.into(),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            })),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_nodes_live_tasks_bring_their_secrets() {
        let mut st = StoreState::default();
        for id in ["s1", "s2"] {
            st.secrets.insert(
                id.into(),
                Secret {
                    id: id.into(),
                    spec: Some(SecretSpec {
                        name: id.into(),
                        data: b"pw".to_vec(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
        let on_n1 = [
            task("t1", "n1", Some("s1"), TaskState::Running),
            task("t2", "n1", Some("s1"), TaskState::Assigned),
            // Finished: its secret is no longer needed.
            task("t3", "n1", Some("s2"), TaskState::Failed),
            // Deleted meanwhile: left out, not an error.
            task("t4", "n1", Some("gone"), TaskState::Running),
        ];
        let on_n2 = [task("t5", "n2", None, TaskState::Running)];
        let n1 = ids(&st, on_n1.iter());
        assert_eq!(n1, (vec!["s1".to_string()], vec![]));
        let (secrets, configs) = objects(&st, &n1);
        assert_eq!(secrets.len(), 1);
        assert_eq!(
            secrets[0].spec.as_ref().map(|s| s.data.clone()),
            Some(b"pw".to_vec())
        );
        assert!(configs.is_empty());
        // The node without a task using it never gets it.
        assert_eq!(ids(&st, on_n2.iter()), (vec![], vec![]));
    }
}
