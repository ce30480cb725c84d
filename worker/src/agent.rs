//! The worker agent, after swarmkit's: it holds a session with a manager's dispatcher, receives
//! the complete set of tasks assigned to this node, and drives each task through its lifecycle
//! on the [`Executor`], reporting every state it reaches.
//!
//! * One session at a time (`Dispatcher.Session`); each message replaces the assignment set.
//!   Heartbeats keep it alive; when either breaks, the agent reconnects with backoff. Tasks keep
//!   running meanwhile and their reports wait.
//! * One controller (a tokio task) per assigned task: ACCEPTED, PREPARING, STARTING, RUNNING,
//!   then COMPLETE/FAILED on exit or SHUTDOWN when the manager sets the desired state past
//!   RUNNING. An exited container is removed at once; its log stays until the task leaves the
//!   assignment set.
//! * Reports go through one reporter: batched, retried, and never lower than a state already
//!   reported or already known to the manager, so a task's state only moves forward.
//! * At start the agent adopts what containerd runs (a daemon restart, even `kill -9`, leaves
//!   containers and their log drivers running): a live container of an assigned task is watched,
//!   not started again; one that exited meanwhile is reported; one of a task no longer assigned
//!   is removed. A terminal status is also written to `<task dir>/status.json`, so a task whose
//!   container was already removed is never run twice.
//! * Every [`USAGE_PERIOD`] the agent reads the resource usage of its running containers from
//!   their cgroups ([`crate::stats`]) and sends it with `ReportUsage` on the open session. It
//!   reports what containerd runs rather than what it was assigned, so an adopted container
//!   counts too; an empty report tells the leader to forget the node's tasks.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::{
    HeartbeatRequest, NodeDescription, SessionRequest, Task, TaskState, TaskStatus,
    TaskStatusUpdate, UpdateTaskStatusRequest, UsageReport,
};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tonic::transport::Channel;
use tracing::{debug, info, warn, Instrument};

use crate::executor::{Executor, ExecutorError, ExitInfo, ObservedState};
use crate::logs;
use crate::stats;

/// Docker's default stop grace period.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Heartbeat period until the dispatcher says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Longest wait for one dispatcher call.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Reports arriving this close together go in one UpdateTaskStatus.
const BATCH_DELAY: Duration = Duration::from_millis(20);
/// How long a stopping agent tries to deliver the reports it still holds.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// How often the tasks' resource usage is reported: the heartbeat's default period, often
/// enough for an autoscaler's rate over a minute, rare enough to cost the leader nothing.
pub const USAGE_PERIOD: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

pub struct AgentConfig {
    pub node_id: String,
    /// Address other nodes reach this one at, told to the dispatcher.
    pub addr: String,
    pub description: NodeDescription,
    /// The worker data directory; the same one the [`Executor`] was given.
    pub data_dir: PathBuf,
    /// Told of every session message: the managers' addresses and whether the node's role
    /// changed are the daemon's business, not the agent's.
    pub on_session_message: Option<SessionObserver>,
}

/// See [`AgentConfig::on_session_message`].
pub type SessionObserver = Arc<dyn Fn(&shoal_proto::SessionMessage) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the dispatcher at {target}: {reason}; is a manager running?")]
    Connect { target: String, reason: String },
    #[error(
        "the agent's data directory {} does not match the executor's {}; give both the same \
         worker data directory", .agent.display(), .executor.display()
    )]
    DataDirMismatch { agent: PathBuf, executor: PathBuf },
}

/// How the agent reaches a dispatcher, asked again after every broken session.
pub trait Connect: Send + 'static {
    fn connect(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + '_>>;
}

/// A dispatcher served on a unix socket at this path.
impl Connect for PathBuf {
    fn connect(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + '_>>
    {
        let path = self.clone();
        Box::pin(async move {
            let err = |reason: String| AgentError::Connect {
                target: path.display().to_string(),
                reason,
            };
            let channel = crate::containerd::connect_unix(&path)
                .await
                .map_err(|e| err(format!("{e}: {}", source_chain(&e))))?;
            Ok(DispatcherClient::new(channel))
        })
    }
}

/// An already-made client (its channel reconnects by itself).
impl Connect for DispatcherClient<Channel> {
    fn connect(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + '_>>
    {
        let client = self.clone();
        Box::pin(async move { Ok(client) })
    }
}

/// Any closure making a client, e.g. one that picks the current leader's address.
pub struct ConnectFn<F>(pub F);

impl<F, Fut> Connect for ConnectFn<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + 'static,
{
    fn connect(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + '_>>
    {
        Box::pin((self.0)())
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// Exponential backoff with jitter, so many workers do not reconnect in lockstep.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn next_delay(&mut self) -> Duration {
        use rand::Rng;
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let half = d / 2;
        half + half.mul_f64(rand::thread_rng().gen::<f64>())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn system_time_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The open session reports are sent on.
#[derive(Clone)]
struct SessionHandle {
    client: DispatcherClient<Channel>,
    session_id: String,
}

#[derive(Default)]
struct ReporterState {
    /// Unsent statuses, oldest first: every state a task reaches is sent, in order.
    pending: Vec<TaskStatusUpdate>,
    /// The highest state reported or known to the manager, per task: nothing at or below it
    /// is sent again.
    floor: HashMap<String, i32>,
}

/// Batches task status reports to the dispatcher; see the module documentation.
struct Reporter {
    node_id: String,
    state: Mutex<ReporterState>,
    notify: Notify,
    sending: tokio::sync::Mutex<()>,
}

impl Reporter {
    fn new(node_id: String) -> Self {
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

    /// Queues a status unless the task already got this far.
    fn report(&self, task_id: &str, status: TaskStatus) {
        let state = status.state;
        {
            let mut st = self.lock();
            if st.floor.get(task_id).is_some_and(|&f| f >= state) {
                debug!(task = %task_id, state, "not reporting a state the task is already past");
                return;
            }
            st.floor.insert(task_id.to_string(), state);
            st.pending.push(TaskStatusUpdate {
                task_id: task_id.to_string(),
                status: Some(status),
            });
        }
        info!(
            task = %task_id,
            state = TaskState::try_from(state).map(|s| s.display_name()).unwrap_or("?"),
            "task state"
        );
        self.notify.notify_one();
    }

    /// Raises the floor to what the manager already knows.
    fn observe(&self, task_id: &str, state: TaskState) {
        let mut st = self.lock();
        let f = st.floor.entry(task_id.to_string()).or_insert(0);
        *f = (*f).max(state as i32);
    }

    fn forget(&self, task_id: &str) {
        let mut st = self.lock();
        st.floor.remove(task_id);
        st.pending.retain(|u| u.task_id != task_id);
    }

    fn take(&self) -> Vec<TaskStatusUpdate> {
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

    /// Sends queued reports whenever there is a session, until the agent stops.
    async fn flush_loop(self: Arc<Self>, mut session: watch::Receiver<Option<SessionHandle>>) {
        let mut backoff = Backoff::new();
        loop {
            let empty = self.lock().pending.is_empty();
            if empty {
                self.notify.notified().await;
                tokio::time::sleep(BATCH_DELAY).await;
            }
            let handle = loop {
                if let Some(h) = session.borrow_and_update().clone() {
                    break h;
                }
                if session.changed().await.is_err() {
                    return;
                }
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

/// What controllers share.
struct Ctx {
    executor: Arc<Executor>,
    reporter: Arc<Reporter>,
}

impl Ctx {
    fn status_path(&self, task_id: &str) -> PathBuf {
        logs::task_dir(self.executor.data_dir(), task_id).join("status.json")
    }

    /// A terminal status reported before a daemon restart.
    fn final_status(&self, task_id: &str) -> Option<TaskStatus> {
        let bytes = std::fs::read(self.status_path(task_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Reports a terminal status, first writing it down so it survives a restart.
    fn report_final(&self, task_id: &str, status: TaskStatus) {
        let path = self.status_path(task_id);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, serde_json::to_vec(&status).unwrap_or_default()));
        if let Err(e) = written {
            warn!(task = %task_id, path = %path.display(), error = %e,
                "cannot record the task's final status; a daemon restart may report it again");
        }
        self.reporter.report(task_id, status);
    }

    /// Removes an exited task's container and snapshot, retrying while containerd is away.
    async fn remove_container(&self, task_id: &str) {
        let mut backoff = Backoff::new();
        for _ in 0..10 {
            match self.executor.remove(task_id).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(task = %task_id, container = %task_id, error = %e, "removing the container failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

fn status(state: TaskState, message: &str) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        timestamp_ms: now_ms(),
        message: message.to_string(),
        ..Default::default()
    }
}

/// COMPLETE for exit 0, FAILED with Docker's error text otherwise.
fn exit_status(task_id: &str, exit: ExitInfo) -> TaskStatus {
    let mut st = if exit.exit_code == 0 {
        status(TaskState::Complete, "finished")
    } else {
        let mut st = status(TaskState::Failed, "started");
        st.err = format!("task: non-zero exit ({})", exit.exit_code);
        st
    };
    st.exit_code = exit.exit_code;
    st.container_id = task_id.to_string();
    if let Some(t) = exit.exited_at {
        st.timestamp_ms = system_time_ms(t);
    }
    st
}

fn stop_grace(task: &Task) -> Duration {
    match task.spec.as_ref().map(|s| s.stop_grace_period_ms) {
        Some(ms) if ms > 0 => Duration::from_millis(ms),
        _ => DEFAULT_STOP_GRACE,
    }
}

/// Why a controller must stop what it is doing.
enum Cancel {
    /// The desired state moved past RUNNING.
    Shutdown(Box<Task>),
    /// The task left the assignment set.
    Removed,
}

fn cancel_of(current: &Option<Task>) -> Option<Cancel> {
    match current {
        None => Some(Cancel::Removed),
        Some(t) if t.desired() > TaskState::Running => Some(Cancel::Shutdown(Box::new(t.clone()))),
        Some(_) => None,
    }
}

/// Resolves once the task is to be shut down or is removed. A dropped sender means the agent
/// is stopping, which must not touch the containers: that never resolves.
async fn cancelled(rx: &mut watch::Receiver<Option<Task>>) -> Cancel {
    loop {
        if let Some(c) = cancel_of(&rx.borrow_and_update()) {
            return c;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One task's lifecycle; see the module documentation.
async fn controller(
    ctx: Arc<Ctx>,
    mut rx: watch::Receiver<Option<Task>>,
    adopted: Option<ObservedState>,
) {
    let Some(task) = rx.borrow().clone() else {
        return;
    };
    let id = task.id.clone();
    let r = &ctx.reporter;

    if let Some(st) = ctx.final_status(&id) {
        // Already finished before a restart: say so again, never run it twice.
        debug!("task finished before the daemon restarted");
        r.report(&id, st);
        if adopted.is_some() {
            ctx.remove_container(&id).await;
        }
        return;
    }

    match adopted {
        Some(ObservedState::Running { pid }) => {
            info!(pid, "adopted a running container");
            let mut st = status(TaskState::Running, "started");
            st.pid = pid;
            st.container_id = id.clone();
            r.report(&id, st);
            return supervise(&ctx, &mut rx, &task).await;
        }
        Some(ObservedState::Exited(exit)) => {
            info!(
                exit_code = exit.exit_code,
                "adopted a container that exited while the daemon was down"
            );
            ctx.report_final(&id, exit_status(&id, exit));
            ctx.remove_container(&id).await;
            return;
        }
        Some(ObservedState::Created) => {
            // Created but never started: the daemon died mid-start. Start over cleanly.
            ctx.remove_container(&id).await;
        }
        None => {}
    }

    if let Some(c) = cancel_of(&rx.borrow()) {
        if let Cancel::Shutdown(_) = c {
            ctx.report_final(&id, status(TaskState::Shutdown, "shutdown"));
        }
        return;
    }
    if task.state() >= TaskState::Running {
        let mut st = status(TaskState::Failed, "started");
        st.err = "the task's container is gone: containerd no longer has it (was the node \
                  restarted?)"
            .into();
        ctx.report_final(&id, st);
        return;
    }

    r.report(&id, status(TaskState::Accepted, "accepted"));
    r.report(&id, status(TaskState::Preparing, "preparing"));
    let image = tokio::select! {
        res = ctx.executor.prepare(&task) => res,
        c = cancelled(&mut rx) => {
            if let Cancel::Shutdown(_) = c {
                ctx.report_final(&id, status(TaskState::Shutdown, "shutdown"));
            }
            return;
        }
    };
    let image = match image {
        Ok(image) => image,
        Err(e) => {
            warn!(error = %e, "preparing the task failed");
            let mut st = status(TaskState::Rejected, "preparing");
            st.err = e.to_string();
            ctx.report_final(&id, st);
            return;
        }
    };
    if let Some(c) = cancel_of(&rx.borrow()) {
        if let Cancel::Shutdown(_) = c {
            ctx.report_final(&id, status(TaskState::Shutdown, "shutdown"));
        }
        return;
    }

    r.report(&id, status(TaskState::Starting, "starting"));
    match ctx.executor.start(&task, &image).await {
        Ok(pid) => {
            let mut st = status(TaskState::Running, "started");
            st.pid = pid;
            st.container_id = id.clone();
            r.report(&id, st);
        }
        Err(e) => {
            warn!(error = %e, "starting the task failed");
            let mut st = status(TaskState::Failed, "starting");
            st.err = e.to_string();
            st.container_id = id.clone();
            ctx.report_final(&id, st);
            return;
        }
    }
    supervise(&ctx, &mut rx, &task).await
}

/// Watches a running task until it exits or is shut down, then reports and removes it.
async fn supervise(ctx: &Ctx, rx: &mut watch::Receiver<Option<Task>>, task: &Task) {
    let id = task.id.as_str();
    let mut backoff = Backoff::new();
    loop {
        tokio::select! {
            res = ctx.executor.wait(id) => match res {
                Ok(exit) => {
                    info!(exit_code = exit.exit_code, "task exited");
                    ctx.report_final(id, exit_status(id, exit));
                    ctx.remove_container(id).await;
                    return;
                }
                Err(ExecutorError::NotFound { .. }) => {
                    let mut st = status(TaskState::Failed, "started");
                    st.err = "the task's container disappeared from containerd".into();
                    st.container_id = id.to_string();
                    ctx.report_final(id, st);
                    ctx.remove_container(id).await;
                    return;
                }
                Err(e) => {
                    // containerd restarting, most likely: the container itself lives on.
                    warn!(error = %e, "waiting for the task failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            },
            c = cancelled(rx) => {
                let grace = match &c {
                    Cancel::Shutdown(t) => stop_grace(t),
                    Cancel::Removed => stop_grace(task),
                };
                info!(?grace, "stopping the task");
                let exit = match ctx.executor.stop(id, None, grace).await {
                    Ok(exit) => exit,
                    Err(e) => {
                        warn!(error = %e, "stopping the task failed");
                        None
                    }
                };
                if let Cancel::Shutdown(_) = c {
                    let mut st = status(TaskState::Shutdown, "shutdown");
                    st.container_id = id.to_string();
                    if let Some(exit) = exit {
                        st.exit_code = exit.exit_code;
                    }
                    ctx.report_final(id, st);
                    ctx.remove_container(id).await;
                }
                // Removed: the cleanup that follows the controller removes everything.
                return;
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
struct Worker {
    ctx: Arc<Ctx>,
    tasks: HashMap<String, Entry>,
    /// What containerd ran when the agent started, until the first assignment set claims it.
    adopted: Option<HashMap<String, ObservedState>>,
    cleanups: JoinSet<()>,
}

impl Worker {
    fn reconcile(&mut self, assigned: Vec<Task>) {
        let set: HashMap<String, Task> = assigned.into_iter().map(|t| (t.id.clone(), t)).collect();
        for (id, task) in &set {
            self.ctx.reporter.observe(id, task.state());
            if let Some(entry) = self.tasks.get(id) {
                entry.tx.send_replace(Some(task.clone()));
                continue;
            }
            let adopted = self.adopted.as_mut().and_then(|a| a.remove(id));
            let (tx, rx) = watch::channel(Some(task.clone()));
            let span = tracing::info_span!("task", task = %id, service = %task.service_name);
            let handle = if task.state().is_terminal() {
                // The manager already has its end; only a leftover container needs removing.
                if adopted.is_some() {
                    let ctx = self.ctx.clone();
                    let (id, grace) = (id.clone(), stop_grace(task));
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
            self.tasks.insert(id.clone(), Entry { tx, handle });
        }

        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|id| !set.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(entry) = self.tasks.remove(&id) {
                entry.tx.send_replace(None);
                self.spawn_cleanup(id, entry.handle, false);
            }
        }

        if let Some(adopted) = self.adopted.take() {
            for (id, state) in adopted {
                info!(task = %id, container = %id, "removing the container of a task no longer assigned");
                self.spawn_cleanup(id, None, matches!(state, ObservedState::Running { .. }));
            }
            self.collect_orphan_dirs(&set);
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
                if let Err(e) = ctx.executor.remove_logs(&id) {
                    warn!(error = %e, "removing the task's logs failed");
                }
                ctx.reporter.forget(&id);
                debug!("task removed");
            }
            .instrument(span),
        );
    }

    /// Task directories of tasks that left the set while the daemon was down.
    fn collect_orphan_dirs(&mut self, set: &HashMap<String, Task>) {
        let dir = self.ctx.executor.data_dir().join("tasks");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !set.contains_key(&name) && !self.tasks.contains_key(&name) {
                debug!(task = %name, "removing the logs of a task no longer assigned");
                if let Err(err) = self.ctx.executor.remove_logs(&name) {
                    warn!(task = %name, error = %err, "removing the task's logs failed");
                }
            }
        }
    }

    fn abort_all(&mut self) {
        for entry in self.tasks.values() {
            if let Some(h) = &entry.handle {
                h.abort();
            }
        }
        self.cleanups.abort_all();
    }
}

/// Runs the agent until `shutdown` turns true (or its sender is dropped). Containers keep
/// running when it stops: the next start adopts them. `dispatcher` says how to reach the
/// dispatcher: a unix socket path, a client, or a [`ConnectFn`].
pub async fn run(
    cfg: AgentConfig,
    executor: Arc<Executor>,
    mut dispatcher: impl Connect,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    if cfg.data_dir != executor.data_dir() {
        return Err(AgentError::DataDirMismatch {
            agent: cfg.data_dir.clone(),
            executor: executor.data_dir().to_path_buf(),
        });
    }
    let reporter = Arc::new(Reporter::new(cfg.node_id.clone()));
    let ctx = Arc::new(Ctx {
        executor: executor.clone(),
        reporter: reporter.clone(),
    });
    let (session_tx, session_rx) = watch::channel::<Option<SessionHandle>>(None);
    let usage = tokio::spawn(usage_loop(
        cfg.node_id.clone(),
        executor.clone(),
        session_rx.clone(),
    ));
    let flusher = tokio::spawn(reporter.clone().flush_loop(session_rx));

    let is_shutdown = |rx: &watch::Receiver<bool>| *rx.borrow();
    let mut backoff = Backoff::new();

    // What containerd already runs, before any session: those tasks must not start twice.
    let adopted = loop {
        match executor.list().await {
            Ok(list) => {
                break list
                    .into_iter()
                    .map(|o| (o.task_id, o.state))
                    .collect::<HashMap<_, _>>()
            }
            Err(e) => {
                warn!(error = %e, "cannot list containers to adopt; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.changed() => {}
                }
                if is_shutdown(&shutdown) || shutdown.has_changed().is_err() {
                    flusher.abort();
                    usage.abort();
                    return Ok(());
                }
            }
        }
    };
    info!(node = %cfg.node_id, containers = adopted.len(), "agent starting");
    backoff.reset();
    let mut worker = Worker {
        ctx,
        tasks: HashMap::new(),
        adopted: Some(adopted),
        cleanups: JoinSet::new(),
    };

    loop {
        if is_shutdown(&shutdown) {
            break;
        }
        let outcome = tokio::select! {
            res = session(&cfg, &mut dispatcher, &mut worker, &session_tx, &mut backoff) => res,
            _ = wait_shutdown(&mut shutdown) => break,
        };
        session_tx.send_replace(None);
        if let Err(reason) = outcome {
            warn!(%reason, "dispatcher session ended; reconnecting");
        }
        // Reap finished cleanups so the set does not grow.
        while worker.cleanups.try_join_next().is_some() {}
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = wait_shutdown(&mut shutdown) => break,
        }
    }

    info!(node = %cfg.node_id, "agent stopping; containers keep running");
    // Controllers stop first so that their last reports are in the final flush.
    worker.abort_all();
    let last_session = session_tx.borrow().clone();
    if let Some(handle) = last_session {
        let _ = tokio::time::timeout(FINAL_FLUSH, reporter.send(&handle)).await;
    }
    flusher.abort();
    usage.abort();
    Ok(())
}

/// Reports the running containers' resource usage every [`USAGE_PERIOD`] while a session is
/// open; see the module documentation. Usage is a sample, not a record: a report that fails
/// is dropped, the next one replaces it.
async fn usage_loop(
    node_id: String,
    executor: Arc<Executor>,
    mut session: watch::Receiver<Option<SessionHandle>>,
) {
    let layout = match stats::CgroupLayout::detect() {
        Ok(layout) => Arc::new(layout),
        Err(e) => {
            warn!(error = %e, "task resource usage will not be reported");
            return;
        }
    };
    debug!(?layout, "reading task usage from cgroups");
    let mut ticker = tokio::time::interval(USAGE_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let handle = loop {
            if let Some(h) = session.borrow_and_update().clone() {
                break h;
            }
            if session.changed().await.is_err() {
                return;
            }
        };
        let running: Vec<(String, u32)> = match executor.list().await {
            Ok(observed) => observed
                .into_iter()
                .filter_map(|o| match o.state {
                    ObservedState::Running { pid } => Some((o.task_id, pid)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                debug!(error = %e, "cannot list containers for the usage report");
                continue;
            }
        };
        let layout = layout.clone();
        // Plain file reads, a few per task: off the runtime's workers all the same.
        let tasks = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            running
                .into_iter()
                .filter_map(|(id, pid)| {
                    match stats::task_usage(&layout, &id, Some(pid), now) {
                        Ok(usage) => Some(usage),
                        Err(e) => {
                            // Not found: the task exited since the listing.
                            if !e.is_not_found() {
                                debug!(task = %id, error = %e, "cannot read the task's usage");
                            }
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
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

async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// One session: connect, open, then apply assignment sets and heartbeat until it breaks.
/// Returns why it ended. The session handle stays published while the agent stops, for the
/// final flush.
async fn session(
    cfg: &AgentConfig,
    dispatcher: &mut impl Connect,
    worker: &mut Worker,
    session_tx: &watch::Sender<Option<SessionHandle>>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let mut client = dispatcher.connect().await.map_err(|e| e.to_string())?;
    let mut stream = client
        .session(SessionRequest {
            node_id: cfg.node_id.clone(),
            description: Some(cfg.description.clone()),
            addr: cfg.addr.clone(),
        })
        .await
        .map_err(|s| format!("Session failed: {}", s.message()))?
        .into_inner();
    let first = match stream.message().await {
        Ok(Some(m)) => m,
        Ok(None) => return Err("the dispatcher closed the session at once".into()),
        Err(s) => return Err(format!("session stream failed: {}", s.message())),
    };
    let session_id = first.session_id.clone();
    info!(node = %cfg.node_id, session = %session_id, tasks = first.tasks.len(), "dispatcher session open");
    backoff.reset();
    session_tx.send_replace(Some(SessionHandle {
        client: client.clone(),
        session_id: session_id.clone(),
    }));

    let mut period = match first.heartbeat_period_ms {
        0 => DEFAULT_HEARTBEAT,
        ms => Duration::from_millis(ms),
    };
    if let Some(observe) = &cfg.on_session_message {
        observe(&first);
    }
    worker.reconcile(first.tasks);
    let mut next_beat = Instant::now() + period;
    loop {
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(m)) => {
                    debug!(tasks = m.tasks.len(), "assignment set");
                    if m.heartbeat_period_ms > 0 {
                        period = Duration::from_millis(m.heartbeat_period_ms);
                    }
                    if let Some(observe) = &cfg.on_session_message {
                        observe(&m);
                    }
                    worker.reconcile(m.tasks);
                    while worker.cleanups.try_join_next().is_some() {}
                }
                Ok(None) => return Err("the dispatcher closed the session".into()),
                Err(s) => return Err(format!("session stream failed: {}", s.message())),
            },
            _ = tokio::time::sleep_until(next_beat.into()) => {
                let req = HeartbeatRequest {
                    node_id: cfg.node_id.clone(),
                    session_id: session_id.clone(),
                };
                match tokio::time::timeout(RPC_TIMEOUT.min(period * 2), client.heartbeat(req)).await {
                    Ok(Ok(resp)) => {
                        let p = resp.into_inner().period_ms;
                        if p > 0 {
                            period = Duration::from_millis(p);
                        }
                    }
                    Ok(Err(s)) => return Err(format!("heartbeat failed: {}", s.message())),
                    Err(_) => return Err("heartbeat timed out".into()),
                }
                next_beat = Instant::now() + period;
            }
        }
    }
}
