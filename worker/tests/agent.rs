//! The agent against a test dispatcher (a real tonic Dispatcher server on a unix socket that
//! hands out a task set, records status updates and, like a manager, applies them to the tasks
//! it sends next) and a real private containerd running the busybox test image.
//!
//! As in tests/executor.rs, this test binary doubles as the log driver.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use shoal_proto::dispatcher_server::{Dispatcher, DispatcherServer};
use shoal_proto::{
    ContainerSpec, Empty, HeartbeatRequest, HeartbeatResponse, NodeDescription, SessionMessage,
    SessionRequest, Task, TaskState, TaskStatus, TaskStatusUpdate, UpdateTaskStatusRequest,
};
use shoal_tests::containerd::ContainerdHost;
use shoal_worker::agent::{self, AgentConfig};
use shoal_worker::executor::{ContainerdExecutor, ObservedState};
use shoal_worker::logs;
use shoal_worker::network::Loopback;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

mod common;

use common::NODE;

#[derive(Default)]
struct Recorded {
    updates: Vec<TaskStatusUpdate>,
    sessions: u32,
    heartbeats: u32,
    /// UpdateTaskStatus calls still to refuse.
    fail_updates: u32,
}

/// The test peer: see the module documentation.
#[derive(Clone)]
struct TestDispatcher {
    tasks: watch::Sender<Vec<Task>>,
    /// Bumped to end every open session stream.
    generation: watch::Sender<u64>,
    rec: Arc<Mutex<Recorded>>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Dispatcher for TestDispatcher {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<SessionStream>, Status> {
        let req = request.into_inner();
        assert_eq!(req.node_id, NODE);
        let n = {
            let mut rec = self.rec.lock().unwrap();
            rec.sessions += 1;
            rec.sessions
        };
        let session_id = format!("session-{n}");
        let mut generation = self.generation.subscribe();
        generation.borrow_and_update();
        let ended = async move {
            let _ = generation.changed().await;
        };
        let stream = tokio_stream::wrappers::WatchStream::new(self.tasks.subscribe())
            .map(move |tasks| {
                Ok(SessionMessage {
                    session_id: session_id.clone(),
                    heartbeat_period_ms: 200,
                    tasks,
                    ..Default::default()
                })
            })
            .take_until(ended);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(
        &self,
        _request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.rec.lock().unwrap().heartbeats += 1;
        Ok(Response::new(HeartbeatResponse { period_ms: 200 }))
    }

    async fn report_usage(
        &self,
        _request: Request<shoal_proto::UsageReport>,
    ) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        {
            let mut rec = self.rec.lock().unwrap();
            if rec.fail_updates > 0 {
                rec.fail_updates -= 1;
                return Err(Status::unavailable("test: refusing this update"));
            }
            rec.updates.extend(req.updates.iter().cloned());
        }
        // As the manager does: the tasks sent next carry the reported status.
        self.tasks.send_modify(|tasks| {
            for u in &req.updates {
                if let Some(t) = tasks.iter_mut().find(|t| t.id == u.task_id) {
                    t.status = u.status.clone();
                }
            }
        });
        Ok(Response::new(Empty {}))
    }
}

impl TestDispatcher {
    fn set_tasks(&self, tasks: Vec<Task>) {
        self.tasks.send_replace(tasks);
    }

    fn modify_task(&self, id: &str, f: impl FnOnce(&mut Task)) {
        self.tasks.send_modify(|tasks| {
            if let Some(t) = tasks.iter_mut().find(|t| t.id == id) {
                f(t);
            }
        });
    }

    fn remove_task(&self, id: &str) {
        self.tasks.send_modify(|tasks| tasks.retain(|t| t.id != id));
    }

    fn statuses(&self, task_id: &str) -> Vec<TaskStatus> {
        self.rec
            .lock()
            .unwrap()
            .updates
            .iter()
            .filter(|u| u.task_id == task_id)
            .filter_map(|u| u.status.clone())
            .collect()
    }

    fn states(&self, task_id: &str) -> Vec<TaskState> {
        self.statuses(task_id)
            .iter()
            .map(|s| TaskState::try_from(s.state).unwrap())
            .collect()
    }

    async fn wait_for(&self, task_id: &str, state: TaskState) -> TaskStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self
                .statuses(task_id)
                .into_iter()
                .find(|s| s.state == state as i32)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} never reported {state:?}; it reported {:?}",
                self.statuses(task_id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A busybox task as the manager assigns it: slot 1, state ASSIGNED.
fn task_with(args: &[&str], f: impl FnOnce(&mut ContainerSpec)) -> Task {
    Task {
        slot: 1,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        ..common::busybox_task(args, f)
    }
}

fn task(args: &[&str]) -> Task {
    task_with(args, |_| {})
}

/// The stop switch and task of a running agent.
type RunningAgent = (
    watch::Sender<bool>,
    JoinHandle<Result<(), agent::AgentError>>,
);

struct Env {
    dispatcher: TestDispatcher,
    socket: PathBuf,
    data: PathBuf,
    agent: Option<RunningAgent>,
    executor: Arc<ContainerdExecutor>,
    host: ContainerdHost,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let (host, dir, data) = common::containerd_with_busybox().await;
        let executor = Arc::new(common::executor(&host, &data).await);

        let dispatcher = TestDispatcher {
            tasks: watch::channel(Vec::new()).0,
            generation: watch::channel(0).0,
            rec: Arc::new(Mutex::new(Recorded::default())),
        };
        let socket = dir.path().join("dispatcher.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(DispatcherServer::new(dispatcher.clone()))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
        tokio::spawn(server);

        Env {
            dispatcher,
            socket,
            data,
            agent: None,
            executor,
            host,
            _dir: dir,
        }
    }

    /// Starts the agent with a fresh executor, as a (re)started daemon does.
    async fn start_agent(&mut self) {
        self.executor = Arc::new(common::executor(&self.host, &self.data).await);
        let cfg = AgentConfig {
            node_id: NODE.into(),
            addr: "127.0.0.1:4243".into(),
            description: NodeDescription {
                hostname: "test".into(),
                ..Default::default()
            },
            data_dir: self.data.clone(),
            on_session_message: None,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(agent::run(
            cfg,
            self.executor.clone(),
            Arc::new(Loopback),
            self.socket.clone(),
            stop_rx,
        ));
        self.agent = Some((stop_tx, handle));
    }

    async fn stop_agent(&mut self) {
        let (stop, handle) = self.agent.take().expect("agent running");
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the agent stops promptly")
            .unwrap()
            .unwrap();
    }

    async fn observed(&self) -> HashMap<String, ObservedState> {
        self.executor
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.task_id, o.state))
            .collect()
    }

    async fn eventually(&self, what: &str, mut cond: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self, task_id: &str) -> String {
        std::fs::read_to_string(logs::log_path(&self.data, task_id)).unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.agent.take() {
            stop.send_replace(true);
            handle.abort();
        }
    }
}

fn assert_forward_only(d: &TestDispatcher, task_id: &str) {
    let states = d.states(task_id);
    assert!(
        states.windows(2).all(|w| w[0] < w[1]),
        "states of {task_id} went backwards or repeated: {states:?}"
    );
}

/// The task's reports went forward only and ended with `last`; any before those are steps on
/// the way (ACCEPTED, PREPARING, STARTING), which the agent sends only when no later state
/// overtook them before the next send: how many arrive depends on timing.
fn assert_reported(d: &TestDispatcher, task_id: &str, last: &[TaskState]) {
    assert_forward_only(d, task_id);
    let states = d.states(task_id);
    assert!(
        states.ends_with(last),
        "{task_id}: {states:?}, want {last:?} last"
    );
    let steps = &states[..states.len() - last.len()];
    assert!(
        steps
            .iter()
            .all(|s| *s > TaskState::Assigned && *s < TaskState::Running),
        "{task_id}: {states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_tasks_through_their_lifecycle_and_cleans_up() {
    let mut env = Env::new().await;
    let failing = task(&["sh", "-c", "echo hi; sleep 1; exit 3"]);
    let completing = task(&["sh", "-c", "echo done"]);
    env.dispatcher
        .set_tasks(vec![failing.clone(), completing.clone()]);
    env.start_agent().await;

    let failed = env
        .dispatcher
        .wait_for(&failing.id, TaskState::Failed)
        .await;
    assert_eq!(failed.exit_code, 3);
    assert_eq!(failed.err, "task: non-zero exit (3)");
    assert_reported(
        &env.dispatcher,
        &failing.id,
        &[TaskState::Running, TaskState::Failed],
    );
    let running = env
        .dispatcher
        .statuses(&failing.id)
        .into_iter()
        .find(|s| s.state == TaskState::Running as i32)
        .unwrap();
    assert!(running.pid > 0);
    assert_eq!(running.container_id, failing.id);

    let complete = env
        .dispatcher
        .wait_for(&completing.id, TaskState::Complete)
        .await;
    assert_eq!(complete.exit_code, 0);
    assert_forward_only(&env.dispatcher, &completing.id);

    // Exited containers are removed; their logs stay.
    env.eventually("exited containers are removed", async || {
        env.observed().await.is_empty()
    })
    .await;
    assert_eq!(env.log_text(&failing.id).matches("\"hi\\n\"").count(), 1);
    assert!(env.log_text(&completing.id).contains("done"));
    assert!(env.dispatcher.rec.lock().unwrap().heartbeats > 0);

    // Tasks leaving the set take their logs with them.
    env.dispatcher.set_tasks(vec![completing.clone()]);
    env.eventually("the removed task's logs are gone", async || {
        !logs::task_dir(&env.data, &failing.id).exists()
    })
    .await;
    assert!(logs::task_dir(&env.data, &completing.id).exists());
    // Nothing is run twice.
    assert_reported(
        &env.dispatcher,
        &completing.id,
        &[TaskState::Running, TaskState::Complete],
    );
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_with_the_grace_period_and_removal_stops_and_forgets() {
    let mut env = Env::new().await;
    // `sleep` as PID 1 ignores SIGTERM: only the SIGKILL after the grace period ends it.
    let stubborn = task_with(&["sleep", "300"], |s| s.stop_grace_period_ms = 1000);
    let polite = task(&[
        "sh",
        "-c",
        "trap 'exit 0' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    env.dispatcher
        .set_tasks(vec![stubborn.clone(), polite.clone()]);
    env.start_agent().await;
    env.dispatcher
        .wait_for(&stubborn.id, TaskState::Running)
        .await;
    env.dispatcher
        .wait_for(&polite.id, TaskState::Running)
        .await;

    let started = Instant::now();
    env.dispatcher.modify_task(&stubborn.id, |t| {
        t.desired_state = TaskState::Shutdown as i32
    });
    let shutdown = env
        .dispatcher
        .wait_for(&stubborn.id, TaskState::Shutdown)
        .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(shutdown.exit_code, 137);
    assert_forward_only(&env.dispatcher, &stubborn.id);
    env.eventually("the shut-down container is removed", async || {
        !env.observed().await.contains_key(&stubborn.id)
    })
    .await;
    assert!(logs::task_dir(&env.data, &stubborn.id).exists());

    // Leaving the set while running: stopped, removed, logs gone, nothing more reported.
    env.dispatcher.remove_task(&polite.id);
    env.eventually("the unassigned task is gone", async || {
        !env.observed().await.contains_key(&polite.id)
            && !logs::task_dir(&env.data, &polite.id).exists()
    })
    .await;
    assert_eq!(
        env.dispatcher.states(&polite.id).last(),
        Some(&TaskState::Running)
    );
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_rejects_the_task() {
    let mut env = Env::new().await;
    // Nothing listens on port 1: the pull fails at once.
    let t = task_with(&["true"], |s| s.image = "127.0.0.1:1/nope:latest".into());
    env.dispatcher.set_tasks(vec![t.clone()]);
    env.start_agent().await;
    let rejected = env.dispatcher.wait_for(&t.id, TaskState::Rejected).await;
    assert!(rejected.err.contains("nope"), "{}", rejected.err);
    assert_reported(&env.dispatcher, &t.id, &[TaskState::Rejected]);
    assert!(env.observed().await.is_empty());
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_instead_of_duplicating() {
    let mut env = Env::new().await;
    let long = task(&["sleep", "300"]);
    let exits_while_down = task(&["sh", "-c", "sleep 3; exit 5"]);
    let unassigned_while_down = task(&["sleep", "300"]);
    env.dispatcher.set_tasks(vec![
        long.clone(),
        exits_while_down.clone(),
        unassigned_while_down.clone(),
    ]);
    env.start_agent().await;
    let mut pids = HashMap::new();
    for t in [&long, &exits_while_down, &unassigned_while_down] {
        pids.insert(
            t.id.clone(),
            env.dispatcher.wait_for(&t.id, TaskState::Running).await.pid,
        );
    }

    // The daemon stops; containers keep running.
    env.stop_agent().await;
    assert_eq!(env.observed().await.len(), 3);
    env.dispatcher.remove_task(&unassigned_while_down.id);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reports_before = env.dispatcher.statuses(&long.id).len();

    env.start_agent().await;
    let failed = env
        .dispatcher
        .wait_for(&exits_while_down.id, TaskState::Failed)
        .await;
    assert_eq!(failed.exit_code, 5);
    env.eventually("adoption settles", async || {
        let observed = env.observed().await;
        observed.len() == 1 && !logs::task_dir(&env.data, &unassigned_while_down.id).exists()
    })
    .await;
    // The long task's container is the one from before: same pid, nothing restarted or
    // reported again.
    let observed = env.observed().await;
    assert_eq!(
        observed.get(&long.id),
        Some(&ObservedState::Running {
            pid: pids[&long.id]
        })
    );
    assert_eq!(env.dispatcher.statuses(&long.id).len(), reports_before);
    assert!(env.dispatcher.rec.lock().unwrap().sessions >= 2);

    // ...and it is watched: its exit is reported.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[&long.id] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let failed = env.dispatcher.wait_for(&long.id, TaskState::Failed).await;
    assert_eq!(failed.exit_code, 137);
    for t in [&long, &exits_while_down] {
        assert_forward_only(&env.dispatcher, &t.id);
    }

    // A second restart after everything finished runs nothing again.
    env.stop_agent().await;
    let reports = env.dispatcher.rec.lock().unwrap().updates.len();
    env.start_agent().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.observed().await.is_empty());
    assert_eq!(env.dispatcher.rec.lock().unwrap().updates.len(), reports);
    env.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_retried_and_sessions_reconnect() {
    let mut env = Env::new().await;
    env.dispatcher.rec.lock().unwrap().fail_updates = 3;
    let first = task(&["sh", "-c", "echo one"]);
    env.dispatcher.set_tasks(vec![first.clone()]);
    env.start_agent().await;
    env.dispatcher
        .wait_for(&first.id, TaskState::Complete)
        .await;
    assert_forward_only(&env.dispatcher, &first.id);

    // The dispatcher ends the session; the agent opens a new one and keeps working.
    env.dispatcher.generation.send_modify(|g| *g += 1);
    env.eventually("the agent reconnects", async || {
        env.dispatcher.rec.lock().unwrap().sessions >= 2
    })
    .await;
    let second = task(&["sh", "-c", "echo two"]);
    env.dispatcher.tasks.send_modify(|t| t.push(second.clone()));
    env.dispatcher
        .wait_for(&second.id, TaskState::Complete)
        .await;
    assert_reported(
        &env.dispatcher,
        &first.id,
        &[TaskState::Running, TaskState::Complete],
    );
    env.stop_agent().await;
}
