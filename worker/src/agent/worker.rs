//! The assigned set → per-task controllers (swarmkit's worker). A session's first message
//! carries the complete set of tasks assigned to this node; [`Worker::reconcile`] compares it
//! with the controllers it runs: a new task gets a controller, a known one gets its updated
//! task, a task that left the set is stopped and removed with its logs. The messages after it
//! carry only what changed ([`Worker::apply_changes`]), which does the same task by task.
//!
//! At start the agent adopts what the executor already runs (a daemon restart, even
//! `kill -9`, leaves containers and their log drivers running): [`adopt`] lists it, and the
//! first assignment set claims it. A live container of an assigned task is handed to its
//! controller, one of a task no longer assigned is removed, as are the task directories of
//! tasks that left the set while the daemon was down.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_proto::{Config, HealthStatus, NetworkPeers, Secret, Task};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn, Instrument};

use super::backoff::Backoff;
use super::controller::{controller, stop_grace, Ctx, DEFAULT_STOP_GRACE};
use crate::executor::{Executor, ObservedState};
use crate::logs;

/// What the executor ran when the agent started, by task ID; `None` when the agent was told
/// to stop before containerd answered.
pub(super) async fn adopt(
    executor: &dyn Executor,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<HashMap<String, ObservedState>> {
    let mut backoff = Backoff::new();
    loop {
        match executor.list().await {
            Ok(list) => {
                return Some(
                    list.into_iter()
                        .map(|o| (o.task_id, o.state))
                        .collect::<HashMap<_, _>>(),
                )
            }
            Err(e) => {
                warn!(error = %e, "cannot list containers to adopt; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() || shutdown.has_changed().is_err() {
                    return None;
                }
            }
        }
    }
}

struct Entry {
    tx: watch::Sender<Option<Task>>,
    /// None when nothing was left to run (the task was already finished).
    handle: Option<JoinHandle<()>>,
}

/// The agent's view of its tasks.
pub(super) struct Worker {
    ctx: Arc<Ctx>,
    tasks: HashMap<String, Entry>,
    /// What containerd ran when the agent started, until the first assignment set claims it.
    adopted: Option<HashMap<String, ObservedState>>,
    cleanups: JoinSet<()>,
}

impl Worker {
    /// `adopted` is what [`adopt`] found; the first [`Worker::reconcile`] claims it.
    pub(super) fn new(ctx: Arc<Ctx>, adopted: HashMap<String, ObservedState>) -> Self {
        Worker {
            ctx,
            tasks: HashMap::new(),
            adopted: Some(adopted),
            cleanups: JoinSet::new(),
        }
    }

    /// The managers' peer tables, programmed before the tasks that need them start.
    pub(super) async fn set_peers(&self, peers: Vec<NetworkPeers>) {
        if let Err(e) = self.ctx.network.set_peers(peers).await {
            warn!(error = %e, "programming the networks' peer tables failed");
        }
    }

    /// The secrets and configs of the session message, for the tasks about to be reconciled.
    pub(super) fn set_dependencies(&self, secrets: Vec<Secret>, configs: Vec<Config>) {
        self.ctx.dependencies.set(secrets, configs);
    }

    /// Applies a complete assignment set; see the module documentation.
    pub(super) fn reconcile(&mut self, assigned: Vec<Task>) {
        let set: HashMap<String, Task> = assigned.into_iter().map(|t| (t.id.clone(), t)).collect();
        for task in set.values() {
            self.upsert(task.clone());
        }

        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|id| !set.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.remove(id);
        }

        if let Some(adopted) = self.adopted.take() {
            // Network namespaces of tasks that are gone or finished (a kill -9 leaves them).
            let live: Vec<Task> = set
                .values()
                .filter(|t| !t.state().is_terminal())
                .cloned()
                .collect();
            let ctx = self.ctx.clone();
            self.cleanups.spawn(async move {
                if let Err(e) = ctx.network.retain(&live).await {
                    warn!(error = %e, "removing leftover task networks failed");
                }
            });
            for (id, state) in adopted {
                info!(task = %id, container = %id, "removing the container of a task no longer assigned");
                self.spawn_cleanup(id, None, matches!(state, ObservedState::Running { .. }));
            }
            self.collect_orphan_dirs(&set);
        }
    }

    /// Applies what the session says of the tasks that changed since its previous message
    /// (`SessionMessage.incremental`): the rest of the set stays as it is.
    pub(super) fn apply_changes(&mut self, changed: Vec<Task>, removed: Vec<String>) {
        for task in changed {
            self.upsert(task);
        }
        for id in removed {
            self.remove(id);
        }
    }

    /// A task of the set, new or known: a known one's controller gets the manager's copy.
    fn upsert(&mut self, task: Task) {
        let id = &task.id;
        let health = task
            .status
            .as_ref()
            .map_or(HealthStatus::None, |s| s.health());
        self.ctx.reporter.observe(id, task.state(), health);
        if let Some(entry) = self.tasks.get(id) {
            entry.tx.send_replace(Some(task));
            return;
        }
        let adopted = self.adopted.as_mut().and_then(|a| a.remove(id));
        let (tx, rx) = watch::channel(Some(task.clone()));
        let span = tracing::info_span!("task", task = %id, service = %task.service_name);
        let handle = if task.state().is_terminal() {
            // The manager already has its end; only a leftover container needs removing.
            if adopted.is_some() {
                let ctx = self.ctx.clone();
                let (id, grace) = (id.clone(), stop_grace(&task));
                self.cleanups.spawn(
                    async move {
                        if let Err(e) = ctx.executor.stop(&id, None, grace).await {
                            warn!(error = %e, "stopping a finished task's container failed");
                        }
                        ctx.remove_container(&id).await;
                    }
                    .instrument(span),
                );
            }
            None
        } else {
            Some(tokio::spawn(
                controller(self.ctx.clone(), rx, adopted).instrument(span),
            ))
        };
        self.tasks.insert(task.id, Entry { tx, handle });
    }

    /// A task that left the set: its controller stops, then it is cleaned up.
    fn remove(&mut self, id: String) {
        if let Some(entry) = self.tasks.remove(&id) {
            entry.tx.send_replace(None);
            self.spawn_cleanup(id, entry.handle, false);
        }
    }

    /// Removes a task that left the assignment set: once its controller is done, its
    /// container, snapshot and logs.
    fn spawn_cleanup(&mut self, id: String, controller: Option<JoinHandle<()>>, stop: bool) {
        let ctx = self.ctx.clone();
        let span = tracing::info_span!("task", task = %id);
        self.cleanups.spawn(
            async move {
                if let Some(h) = controller {
                    let _ = h.await;
                }
                if stop {
                    if let Err(e) = ctx.executor.stop(&id, None, DEFAULT_STOP_GRACE).await {
                        warn!(error = %e, "stopping the task failed");
                    }
                }
                ctx.remove_container(&id).await;
                ctx.remove_logs(&id);
                ctx.reporter.forget(&id);
                debug!("task removed");
            }
            .instrument(span),
        );
    }

    /// Task directories of tasks that left the set while the daemon was down.
    fn collect_orphan_dirs(&mut self, set: &HashMap<String, Task>) {
        let Ok(entries) = std::fs::read_dir(logs::tasks_dir(self.ctx.executor.data_dir())) else {
            return;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !set.contains_key(&name) && !self.tasks.contains_key(&name) {
                debug!(task = %name, "removing the logs of a task no longer assigned");
                self.ctx.remove_logs(&name);
            }
        }
    }

    /// Forgets finished cleanups so the set does not grow.
    pub(super) fn reap_cleanups(&mut self) {
        while self.cleanups.try_join_next().is_some() {}
    }

    /// Stops every controller and cleanup; the containers keep running.
    pub(super) fn abort_all(&mut self) {
        for entry in self.tasks.values() {
            if let Some(h) = &entry.handle {
                h.abort();
            }
        }
        self.cleanups.abort_all();
    }
}
