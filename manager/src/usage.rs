//! Per-task resource usage as workers last reported it. Held in the leader's memory only: it
//! changes every few seconds, is cheap to lose (workers report again), and would flood the
//! Raft log. Read by the metrics endpoint and the autoscaler.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use shoal_proto::TaskUsage;

/// A sample and the one before it, so rates (CPU utilisation) can be derived.
#[derive(Debug, Clone, Default)]
pub struct UsageSamples {
    pub node_id: String,
    pub latest: TaskUsage,
    pub previous: Option<TaskUsage>,
}

#[derive(Clone, Default)]
pub struct UsageStore {
    inner: Arc<RwLock<Usage>>,
}

#[derive(Default)]
struct Usage {
    by_task: HashMap<String, UsageSamples>,
    /// The tasks each node reported last, so that a report forgets what its node no longer
    /// runs without looking at every other node's tasks.
    by_node: HashMap<String, Vec<String>>,
}

impl UsageStore {
    /// Records a node's report; tasks the node no longer reports are forgotten.
    pub fn record(&self, node_id: &str, tasks: Vec<TaskUsage>) {
        let mut usage = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Usage { by_task, by_node } = &mut *usage;
        let reported: std::collections::HashSet<String> =
            tasks.iter().map(|t| t.task_id.clone()).collect();
        let before = by_node.insert(node_id.to_string(), reported.iter().cloned().collect());
        for id in before.unwrap_or_default() {
            if !reported.contains(&id) && by_task.get(&id).is_some_and(|s| s.node_id == node_id) {
                by_task.remove(&id);
            }
        }
        for t in tasks {
            let entry = by_task.entry(t.task_id.clone()).or_default();
            entry.node_id = node_id.to_string();
            let previous = std::mem::replace(&mut entry.latest, t);
            if previous.timestamp_ms > 0 {
                entry.previous = Some(previous);
            }
        }
    }

    pub fn get(&self, task_id: &str) -> Option<UsageSamples> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_task
            .get(task_id)
            .cloned()
    }

    pub fn all(&self) -> HashMap<String, UsageSamples> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_task
            .clone()
    }
}

impl UsageSamples {
    /// CPUs used between the two samples (1.0 = one full CPU), when there are two.
    pub fn cpu_rate(&self) -> Option<f64> {
        let prev = self.previous.as_ref()?;
        let dt = (self.latest.timestamp_ms - prev.timestamp_ms) as f64 / 1000.0;
        (dt > 0.0).then(|| ((self.latest.cpu_seconds_total - prev.cpu_seconds_total) / dt).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, cpu: f64, at: i64) -> TaskUsage {
        TaskUsage {
            task_id: id.into(),
            cpu_seconds_total: cpu,
            timestamp_ms: at,
            ..Default::default()
        }
    }

    #[test]
    fn cpu_rate_from_two_samples_and_forgetting() {
        let store = UsageStore::default();
        store.record(
            "n1",
            vec![sample("t1", 10.0, 1_000), sample("t2", 0.0, 1_000)],
        );
        assert_eq!(store.get("t1").unwrap().cpu_rate(), None);
        store.record("n1", vec![sample("t1", 11.0, 3_000)]);
        assert_eq!(store.get("t1").unwrap().cpu_rate(), Some(0.5));
        assert!(
            store.get("t2").is_none(),
            "a task no longer reported is forgotten"
        );
    }
}
