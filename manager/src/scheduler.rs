//! The scheduler: places tasks that are NEW or PENDING on nodes.
//!
//! Filters first (the node is READY and ACTIVE), then spreads: the node running the fewest
//! live tasks of the same service wins, ties broken by fewest live tasks overall, then by node
//! ID so that every round on every manager decides alike. A task that fits nowhere is marked
//! PENDING with the reason, which `service ps` shows.

use std::collections::HashMap;
use std::time::Duration;

use shoal_proto::{
    store_action::Action, Node, NodeAvailability, NodeState, StoreAction, Task, TaskAssignment,
    TaskState, TaskStatus, TaskStatusUpdate,
};
use tokio::sync::watch;
use tracing::warn;

use crate::ids::now_ms;
use crate::store::{Store, StoreState};

fn eligible(node: &Node) -> Result<(), &'static str> {
    if node.state != NodeState::Ready as i32 {
        return Err("node is not ready");
    }
    if node.availability != NodeAvailability::Active as i32 {
        return Err("node is paused or drained");
    }
    Ok(())
}

fn live(t: &Task) -> bool {
    t.desired() <= TaskState::Running && !t.state().is_terminal() && !t.node_id.is_empty()
}

pub fn plan(state: &StoreState, now_ms: i64) -> Vec<StoreAction> {
    let mut per_service: HashMap<(&str, &str), usize> = HashMap::new();
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for t in state.tasks.values().filter(|t| live(t)) {
        *per_service
            .entry((t.node_id.as_str(), t.service_id.as_str()))
            .or_default() += 1;
        *per_node.entry(t.node_id.as_str()).or_default() += 1;
    }
    let mut reasons = Vec::new();
    let candidates: Vec<&Node> = state
        .nodes
        .values()
        .filter(|n| match eligible(n) {
            Ok(()) => true,
            Err(why) => {
                reasons.push(why);
                false
            }
        })
        .collect();

    let mut actions = Vec::new();
    let mut pending: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| t.state() <= TaskState::Pending && t.desired() <= TaskState::Running)
        .collect();
    // Oldest first, then by slot, so replicas fill in order.
    pending.sort_by_key(|t| (t.meta.as_ref().map_or(0, |m| m.created_at_ms), t.slot));
    for task in pending {
        let best = candidates.iter().min_by_key(|n| {
            (
                per_service
                    .get(&(n.id.as_str(), task.service_id.as_str()))
                    .copied()
                    .unwrap_or(0),
                per_node.get(n.id.as_str()).copied().unwrap_or(0),
                n.id.as_str(),
            )
        });
        let action = match best {
            Some(node) => {
                *per_service
                    .entry((node.id.as_str(), task.service_id.as_str()))
                    .or_default() += 1;
                *per_node.entry(node.id.as_str()).or_default() += 1;
                Action::AssignTask(TaskAssignment {
                    task_id: task.id.clone(),
                    node_id: node.id.clone(),
                    message: "scheduler assigned task to node".into(),
                })
            }
            None => {
                let mut why = reasons.clone();
                why.sort_unstable();
                why.dedup();
                let detail = if why.is_empty() {
                    "no nodes in the swarm".to_string()
                } else {
                    why.join(", ")
                };
                Action::MarkTaskPending(TaskStatusUpdate {
                    task_id: task.id.clone(),
                    status: Some(TaskStatus {
                        state: TaskState::Pending as i32,
                        timestamp_ms: now_ms,
                        message: "pending task scheduling".into(),
                        err: format!("no suitable node ({detail})"),
                        ..Default::default()
                    }),
                })
            }
        };
        actions.push(StoreAction {
            action: Some(action),
        });
    }
    actions
}

/// Runs until `shutdown` flips; only the leader runs it.
pub async fn run(store: Store, shutdown: watch::Receiver<bool>) {
    let s = store.clone();
    crate::reconcile::run(store, Duration::from_secs(1), shutdown, move || {
        let store = s.clone();
        async move {
            let actions = store.view(|st| {
                plan(st, now_ms())
                    .into_iter()
                    .filter(|a| !already_pending_with_same_reason(st, a))
                    .collect::<Vec<_>>()
            });
            if actions.is_empty() {
                return;
            }
            if let Err(e) = store.propose(actions).await {
                warn!(error = %e, "scheduler proposal failed; retrying next round");
            }
        }
    })
    .await;
}

/// Re-marking a task pending for the same reason would append a log entry every round.
fn already_pending_with_same_reason(st: &StoreState, a: &StoreAction) -> bool {
    let Some(Action::MarkTaskPending(u)) = &a.action else {
        return false;
    };
    let Some(task) = st.tasks.get(&u.task_id) else {
        return true;
    };
    task.state() == TaskState::Pending
        && task.status.as_ref().map(|s| &s.err) == u.status.as_ref().map(|s| &s.err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::Meta;

    fn node(id: &str, ready: bool) -> Node {
        Node {
            id: id.into(),
            state: if ready {
                NodeState::Ready
            } else {
                NodeState::Down
            } as i32,
            ..Default::default()
        }
    }

    fn task(id: &str, service: &str, node: &str, state: TaskState) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            meta: Some(Meta::default()),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn assignments(actions: &[StoreAction]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match &a.action {
                Some(Action::AssignTask(x)) => Some((x.task_id.clone(), x.node_id.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn spreads_a_service_over_nodes() {
        let mut s = StoreState::default();
        for n in [node("a", true), node("b", true)] {
            s.nodes.insert(n.id.clone(), n);
        }
        for t in [
            task("t0", "s", "a", TaskState::Running),
            task("t1", "s", "", TaskState::New),
            task("t2", "s", "", TaskState::New),
        ] {
            s.tasks.insert(t.id.clone(), t);
        }
        let a = assignments(&plan(&s, 0));
        assert_eq!(
            a,
            vec![("t1".into(), "b".into()), ("t2".into(), "a".into())]
        );
    }

    #[test]
    fn no_ready_node_leaves_the_task_pending_with_a_reason() {
        let mut s = StoreState::default();
        s.nodes.insert("a".into(), node("a", false));
        s.tasks
            .insert("t1".into(), task("t1", "s", "", TaskState::New));
        let actions = plan(&s, 0);
        let Some(Action::MarkTaskPending(u)) = &actions[0].action else {
            panic!("expected pending, got {actions:?}");
        };
        assert_eq!(
            u.status.as_ref().unwrap().err,
            "no suitable node (node is not ready)"
        );
    }
}
