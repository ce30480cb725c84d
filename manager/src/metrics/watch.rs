//! Metrics of the leader's roles that are events rather than state: how long tasks waited to be
//! placed, and how many nodes the dispatcher marked down. Both are read off the applied log
//! (the store's watch stream), so neither the scheduler nor the dispatcher carries metrics code:
//!
//! * an `AssignTask` that was applied ends a task's wait, which began when the task was created
//!   (its `created_at_ms`, stamped by the orchestrator);
//! * a node status update to DOWN is the dispatcher's heartbeat monitor giving up on the node
//!   (nothing else marks nodes down).
//!
//! Only the leader observes: it runs those roles, and a follower applying the same entries later
//! would count them again.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use shoal_proto::{store_action::Action, NodeState};
use tokio::sync::{broadcast, watch};
use tracing::debug;

use super::encode::{counter, gauge};
use crate::ids::now_ms;
use crate::raft::RaftStatus;
use crate::store::Store;

/// Cheap to clone: every field is shared.
#[derive(Debug, Clone)]
pub struct RoleInstruments {
    /// Seconds from a task's creation to its assignment to a node.
    pub scheduling_latency: Histogram,
    /// Nodes marked down because their heartbeats stopped.
    pub heartbeat_failures: Counter,
}

impl Default for RoleInstruments {
    fn default() -> Self {
        RoleInstruments {
            // 1 ms … 16 min: from an idle scheduler's next round to a task waiting for a node.
            scheduling_latency: Histogram::new(exponential_buckets(0.001, 4.0, 11)),
            heartbeat_failures: Counter::default(),
        }
    }
}

impl RoleInstruments {
    /// `sessions` is the dispatcher's session count, when this manager leads.
    pub fn encode(&self, enc: &mut DescriptorEncoder, sessions: Option<usize>) -> fmt::Result {
        self.scheduling_latency.encode(enc.encode_descriptor(
            "shoal_scheduler_latency",
            "Time from a task's creation to its assignment to a node (leader).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?)?;
        counter(
            enc,
            "shoal_dispatcher_heartbeat_failures",
            "Nodes the dispatcher marked down because their heartbeats stopped (leader).",
            None,
            self.heartbeat_failures.get(),
        )?;
        if let Some(n) = sessions {
            gauge(
                enc,
                "shoal_dispatcher_sessions",
                "Worker sessions the dispatcher holds (leader only).",
                None,
                n as u64,
            )?;
        }
        Ok(())
    }

    /// Takes in one applied entry's actions.
    fn observe(&self, store: &Store, actions: &[shoal_proto::StoreAction], now_ms: i64) {
        for action in actions {
            match &action.action {
                Some(Action::AssignTask(a)) => {
                    let created = store.view(|st| {
                        st.tasks
                            .get(&a.task_id)
                            .and_then(|t| t.meta.as_ref())
                            .map(|m| m.created_at_ms)
                    });
                    if let Some(created) = created.filter(|&c| c > 0) {
                        let waited = (now_ms - created).max(0) as f64 / 1000.0;
                        self.scheduling_latency.observe(waited);
                    }
                }
                Some(Action::NodeStatus(n)) if n.state == NodeState::Down as i32 => {
                    self.heartbeat_failures.inc();
                }
                _ => {}
            }
        }
    }
}

/// Follows the applied log until the store closes (or the task is aborted).
pub async fn run(store: Store, raft: watch::Receiver<RaftStatus>, roles: RoleInstruments) {
    let mut events = store.subscribe();
    loop {
        match events.recv().await {
            Ok(applied) => {
                if raft.borrow().is_leader {
                    roles.observe(&store, &applied.actions, now_ms());
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Missed entries only leave the histogram a few samples short.
                debug!(
                    missed = n,
                    "metrics fell behind the store; some events are not counted"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{new_store, StoreState};
    use shoal_proto::{Meta, NodeStatusUpdate, StoreAction, Task, TaskAssignment};

    #[test]
    fn assignments_and_nodes_marked_down_are_counted() {
        let mut state = StoreState::default();
        state.tasks.insert(
            "t1".into(),
            Task {
                id: "t1".into(),
                meta: Some(Meta {
                    created_at_ms: 10_000,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let (store, _applier, _proposals) = new_store(state);
        let roles = RoleInstruments::default();
        let actions = vec![
            StoreAction {
                action: Some(Action::AssignTask(TaskAssignment {
                    task_id: "t1".into(),
                    node_id: "n1".into(),
                    message: String::new(),
                    timestamp_ms: 0,
                })),
            },
            StoreAction {
                action: Some(Action::NodeStatus(
                    NodeStatusUpdate {
                        node_id: "n1".into(),
                        state: NodeState::Down as i32,
                        ..Default::default()
                    }
                    .into(),
                )),
            },
            StoreAction {
                action: Some(Action::NodeStatus(
                    NodeStatusUpdate {
                        node_id: "n2".into(),
                        state: NodeState::Ready as i32,
                        ..Default::default()
                    }
                    .into(),
                )),
            },
        ];
        roles.observe(&store, &actions, 12_500);
        assert_eq!(roles.scheduling_latency.count(), 1);
        assert_eq!(roles.scheduling_latency.sum(), 2.5);
        assert_eq!(roles.heartbeat_failures.get(), 1);
    }
}
