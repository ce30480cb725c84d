//! Everything the agent tells the dispatcher about its tasks, on the session the session
//! module publishes:
//!
//! * task statuses through one [`Reporter`]: batched, retried, and never lower than a state
//!   already reported or already known to the manager, so a task's state only moves forward
//!   (a new health at the same state, a healthcheck's verdict, is reported too);
//! * every [`USAGE_PERIOD`], the resource usage of the containers the executor runs
//!   ([`usage_loop`]), which covers adopted containers too; an empty report tells the leader
//!   to forget the node's tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::{
    HealthStatus, TaskState, TaskStatus, TaskStatusUpdate, UpdateTaskStatusRequest, UsageReport,
};
use tokio::sync::{watch, Notify};
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::config::RPC_TIMEOUT;
use crate::executor::{Executor, ExecutorError};

/// How often the tasks' resource usage is reported: the heartbeat's default period, often
/// enough for an autoscaler's rate over a minute, rare enough to cost the leader nothing.
pub const USAGE_PERIOD: Duration = Duration::from_secs(5);
/// The shortest time between two UpdateTaskStatus calls: reports arriving within it of the
/// last call go together in the next one. A report after a quiet spell goes at once, so a
/// lone task's state costs no added delay, while thousands of starting tasks still make few
/// calls.
const BATCH_DELAY: Duration = Duration::from_millis(20);
/// How long a stopping agent tries to deliver the reports it still holds.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// The open session reports are sent on.
#[derive(Clone)]
pub(super) struct SessionHandle {
    pub(super) client: DispatcherClient<Channel>,
    pub(super) session_id: String,
}

/// A state strictly between ASSIGNED and RUNNING (accepted, preparing, starting): the worker's
/// progress, which the manager's plans read alike. One not sent yet is replaced by the task's
/// next state; RUNNING and every state after it are always sent (the manager stamps a task's
/// start from RUNNING, and a failure's exit code is in its own report).
fn progress(s: &TaskStatus) -> bool {
    s.state > TaskState::Assigned as i32 && s.state < TaskState::Running as i32
}

#[derive(Default)]
struct ReporterState {
    /// Unsent statuses, oldest first: every state a task reaches is sent, in order, except a
    /// progress state the next one overtook before it was sent ([`progress`]).
    pending: Vec<TaskStatusUpdate>,
    /// The highest state reported or known to the manager, per task, with the health it
    /// came with: nothing below it, nor the same state with the same health, is sent again.
    floor: HashMap<String, Floor>,
    /// Every status queued, overtaken or not: what the controllers reported, for their tests.
    #[cfg(test)]
    queued: Vec<TaskStatusUpdate>,
}

/// What a task last reported (or the manager last knew): its state and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Floor {
    state: i32,
    health: i32,
}

impl Floor {
    /// Whether `status` tells the manager something new: a later state, or the same state
    /// with another health.
    fn is_news(&self, status: &TaskStatus) -> bool {
        status.state > self.state || (status.state == self.state && status.health != self.health)
    }
}

/// Batches task status reports to the dispatcher; see the module documentation.
pub(super) struct Reporter {
    node_id: String,
    state: Mutex<ReporterState>,
    notify: Notify,
    sending: tokio::sync::Mutex<()>,
}

impl Reporter {
    pub(super) fn new(node_id: String) -> Self {
        Reporter {
            node_id,
            state: Mutex::new(ReporterState::default()),
            notify: Notify::new(),
            sending: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReporterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a status unless the task already got this far (with this health).
    pub(super) fn report(&self, task_id: &str, status: TaskStatus) {
        let (state, health) = (status.state, status.health);
        {
            let mut st = self.lock();
            if st.floor.get(task_id).is_some_and(|f| !f.is_news(&status)) {
                debug!(task = %task_id, state, "not reporting a state the task is already past");
                return;
            }
            st.floor
                .insert(task_id.to_string(), Floor { state, health });
            #[cfg(test)]
            st.queued.push(TaskStatusUpdate {
                task_id: task_id.to_string(),
                status: Some(status.clone()),
            });
            let superseded = st
                .pending
                .iter_mut()
                .rev()
                .find(|u| u.task_id == task_id)
                .filter(|u| u.status.as_ref().is_some_and(progress));
            match superseded {
                // Not sent yet, and only a step on the way to RUNNING: the later state says
                // all it said. A task that starts at once then costs one report, not four
                // (each a store action replicated to every manager).
                Some(unsent) => unsent.status = Some(status),
                None => st.pending.push(TaskStatusUpdate {
                    task_id: task_id.to_string(),
                    status: Some(status),
                }),
            }
        }
        info!(
            task = %task_id,
            state = TaskState::try_from(state).map(|s| s.display_name()).unwrap_or("?"),
            health = HealthStatus::try_from(health).map(|h| h.display_name()).unwrap_or("?"),
            "task state"
        );
        self.notify.notify_one();
    }

    /// Raises the floor to what the manager already knows: its state of the task, and the
    /// health it holds with it.
    pub(super) fn observe(&self, task_id: &str, state: TaskState, health: HealthStatus) {
        let mut st = self.lock();
        let f = st.floor.entry(task_id.to_string()).or_default();
        let known = Floor {
            state: state as i32,
            health: health as i32,
        };
        if known.state >= f.state {
            *f = known;
        }
    }

    pub(super) fn forget(&self, task_id: &str) {
        let mut st = self.lock();
        st.floor.remove(task_id);
        st.pending.retain(|u| u.task_id != task_id);
    }

    /// Every status queued so far, in order, including those a later state overtook.
    #[cfg(test)]
    pub(super) fn queued(&self) -> Vec<TaskStatusUpdate> {
        self.lock().queued.clone()
    }

    pub(super) fn take(&self) -> Vec<TaskStatusUpdate> {
        std::mem::take(&mut self.lock().pending)
    }

    /// Requeues updates that failed to send ahead of those queued meanwhile, keeping the
    /// order (a task forgotten meanwhile stays forgotten).
    fn put_back(&self, mut updates: Vec<TaskStatusUpdate>) {
        let mut st = self.lock();
        updates.retain(|u| st.floor.contains_key(&u.task_id));
        updates.append(&mut st.pending);
        st.pending = updates;
    }

    async fn send(&self, session: &SessionHandle) -> Result<usize, tonic::Status> {
        // One send at a time, so a final flush waits for the one in flight rather than
        // racing it.
        let _one = self.sending.lock().await;
        let updates = self.take();
        if updates.is_empty() {
            return Ok(0);
        }
        let n = updates.len();
        let req = UpdateTaskStatusRequest {
            node_id: self.node_id.clone(),
            session_id: session.session_id.clone(),
            updates: updates.clone(),
        };
        let result =
            tokio::time::timeout(RPC_TIMEOUT, session.client.clone().update_task_status(req))
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(
                        "UpdateTaskStatus timed out",
                    ))
                });
        match result {
            Ok(_) => Ok(n),
            Err(e) => {
                self.put_back(updates);
                Err(e)
            }
        }
    }

    /// A stopping agent's last attempt to deliver what it still holds, bounded in time.
    pub(super) async fn final_flush(&self, session: &SessionHandle) {
        let _ = tokio::time::timeout(FINAL_FLUSH, self.send(session)).await;
    }

    /// Sends queued reports whenever there is a session, until the agent stops.
    pub(super) async fn flush_loop(
        self: Arc<Self>,
        mut session: watch::Receiver<Option<SessionHandle>>,
    ) {
        let mut backoff = Backoff::new();
        let mut last_send: Option<tokio::time::Instant> = None;
        loop {
            let empty = self.lock().pending.is_empty();
            if empty {
                self.notify.notified().await;
            }
            if let Some(last) = last_send {
                tokio::time::sleep_until(last + BATCH_DELAY).await;
            }
            last_send = Some(tokio::time::Instant::now());
            let Some(handle) = open_session(&mut session).await else {
                return;
            };
            match self.send(&handle).await {
                Ok(n) => {
                    if n > 0 {
                        debug!(updates = n, "task statuses sent");
                    }
                    backoff.reset();
                }
                Err(e) => {
                    warn!(error = %e, "sending task statuses failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = session.changed() => {}
                    }
                }
            }
        }
    }
}

/// The session once one is open; `None` when the agent is gone.
async fn open_session(
    session: &mut watch::Receiver<Option<SessionHandle>>,
) -> Option<SessionHandle> {
    loop {
        if let Some(h) = session.borrow_and_update().clone() {
            return Some(h);
        }
        if session.changed().await.is_err() {
            return None;
        }
    }
}

/// Reports the running containers' resource usage every [`USAGE_PERIOD`] while a session is
/// open; see the module documentation. Usage is a sample, not a record: a report that fails
/// is dropped, the next one replaces it.
pub(super) async fn usage_loop(
    node_id: String,
    executor: Arc<dyn Executor>,
    mut session: watch::Receiver<Option<SessionHandle>>,
) {
    let mut ticker = tokio::time::interval(USAGE_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let Some(handle) = open_session(&mut session).await else {
            return;
        };
        let tasks = match executor.usage().await {
            Ok(tasks) => tasks,
            Err(e @ ExecutorError::UsageUnavailable { .. }) => {
                warn!(error = %e, "task resource usage will not be reported");
                return;
            }
            Err(e) => {
                debug!(error = %e, "cannot list containers for the usage report");
                continue;
            }
        };
        let n = tasks.len();
        let req = UsageReport {
            node_id: node_id.clone(),
            session_id: handle.session_id.clone(),
            tasks,
        };
        let sent = tokio::time::timeout(RPC_TIMEOUT, handle.client.clone().report_usage(req)).await;
        match sent {
            Ok(Ok(_)) => {
                if failing {
                    info!("usage reports delivered again");
                }
                failing = false;
                debug!(tasks = n, "usage reported");
            }
            // One warning per streak: a broken session is reported (and mended) elsewhere.
            Ok(Err(s)) if !failing => {
                failing = true;
                warn!(error = %s.message(), code = ?s.code(), "usage report refused");
            }
            Err(_) if !failing => {
                failing = true;
                warn!("usage report timed out");
            }
            _ => {}
        }
    }
}
