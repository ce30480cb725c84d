//! The reporter's queue (order, dedup, the floor the manager sets) and its delivery, against
//! an in-process dispatcher on a unix socket.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use shoal_proto::dispatcher_server::{Dispatcher, DispatcherServer};
use shoal_proto::{
    Empty, HealthStatus, HeartbeatRequest, HeartbeatResponse, SessionMessage, SessionRequest,
    TaskState, TaskStatus, UpdateTaskStatusRequest, UsageReport,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::{eventually, FakeExecutor};
use crate::agent::reporter::{usage_loop, Reporter, SessionHandle};
use crate::executor::{Executor, ObservedState};

fn status(state: TaskState) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        ..Default::default()
    }
}

fn queued(reporter: &Reporter) -> Vec<(String, TaskState)> {
    reporter
        .take()
        .into_iter()
        .map(|u| {
            let state = TaskState::try_from(u.status.unwrap().state).unwrap();
            (u.task_id, state)
        })
        .collect()
}

#[test]
fn every_state_is_queued_once_in_order_and_never_backwards() {
    let r = Reporter::new("node".into());
    r.report("t1", status(TaskState::Accepted));
    r.report("t2", status(TaskState::Accepted));
    r.report("t1", status(TaskState::Preparing));
    r.report("t1", status(TaskState::Preparing)); // a duplicate
    r.report("t1", status(TaskState::Accepted)); // behind what was reported
    assert_eq!(
        queued(&r),
        [
            // t1's ACCEPTED was not sent yet: PREPARING took its place.
            ("t1".to_string(), TaskState::Preparing),
            ("t2".to_string(), TaskState::Accepted),
        ]
    );
    // Once sent, still never again.
    r.report("t1", status(TaskState::Preparing));
    assert!(queued(&r).is_empty());
}

#[test]
fn an_unsent_step_before_running_is_overtaken_but_running_and_after_are_all_sent() {
    let r = Reporter::new("node".into());
    for state in [
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Starting,
        TaskState::Running,
    ] {
        r.report("t1", status(state));
    }
    r.report("t1", status(TaskState::Failed));
    assert_eq!(
        queued(&r),
        [
            ("t1".to_string(), TaskState::Running),
            ("t1".to_string(), TaskState::Failed),
        ],
        "a task that started at once costs one report to start, and its end one more"
    );
    // A step already sent is not touched: the next state is a report of its own.
    r.report("t2", status(TaskState::Preparing));
    assert_eq!(queued(&r), [("t2".to_string(), TaskState::Preparing)]);
    r.report("t2", status(TaskState::Starting));
    assert_eq!(queued(&r), [("t2".to_string(), TaskState::Starting)]);
}

#[test]
fn what_the_manager_knows_is_not_reported_and_a_forgotten_task_starts_over() {
    let r = Reporter::new("node".into());
    r.observe("t1", TaskState::Running, HealthStatus::None);
    r.report("t1", status(TaskState::Starting));
    r.report("t1", status(TaskState::Running));
    assert!(queued(&r).is_empty());
    r.report("t1", status(TaskState::Failed));
    r.report("t2", status(TaskState::Accepted));
    r.forget("t1");
    assert_eq!(queued(&r), [("t2".to_string(), TaskState::Accepted)]);
    r.report("t1", status(TaskState::Accepted));
    assert_eq!(queued(&r), [("t1".to_string(), TaskState::Accepted)]);
}

#[test]
fn a_new_health_at_the_same_state_is_reported_once() {
    let with = |state: TaskState, health: HealthStatus| TaskStatus {
        state: state as i32,
        health: health as i32,
        ..Default::default()
    };
    let r = Reporter::new("node".into());
    r.report("t1", status(TaskState::Starting));
    r.report("t1", with(TaskState::Starting, HealthStatus::Starting));
    r.report("t1", with(TaskState::Starting, HealthStatus::Starting)); // a duplicate
    r.report("t1", with(TaskState::Running, HealthStatus::Healthy));
    r.report("t1", with(TaskState::Starting, HealthStatus::Unhealthy)); // behind
    let healths: Vec<(TaskState, HealthStatus)> = r
        .take()
        .into_iter()
        .map(|u| {
            let s = u.status.unwrap();
            (s.state(), s.health())
        })
        .collect();
    // STARTING's reports were not sent yet: RUNNING, healthy, says it all.
    assert_eq!(healths, [(TaskState::Running, HealthStatus::Healthy)]);
    // Sent one by one, each health is a report of its own.
    r.report("t3", status(TaskState::Starting));
    assert_eq!(r.take().len(), 1);
    r.report("t3", with(TaskState::Starting, HealthStatus::Starting));
    assert_eq!(r.take().len(), 1);
    r.report("t3", with(TaskState::Starting, HealthStatus::Starting)); // a duplicate
    assert!(r.take().is_empty());
    // What the manager already holds is not sent again; a change from it is.
    r.observe("t2", TaskState::Running, HealthStatus::Healthy);
    r.report("t2", with(TaskState::Running, HealthStatus::Healthy));
    assert!(r.take().is_empty());
    r.report("t2", with(TaskState::Running, HealthStatus::Unhealthy));
    assert_eq!(r.take().len(), 1);
}

/// Records what the agent sends; refuses the first `refuse` status updates.
#[derive(Clone, Default)]
struct Recorder {
    updates: Arc<Mutex<Vec<UpdateTaskStatusRequest>>>,
    usage: Arc<Mutex<Vec<UsageReport>>>,
    refuse: Arc<Mutex<u32>>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Dispatcher for Recorder {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        _request: Request<SessionRequest>,
    ) -> Result<Response<SessionStream>, Status> {
        Err(Status::unimplemented("the reporter tests open no session"))
    }

    async fn heartbeat(
        &self,
        _request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        Err(Status::unimplemented(
            "the reporter tests send no heartbeat",
        ))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<Empty>, Status> {
        let mut refuse = self.refuse.lock().unwrap();
        if *refuse > 0 {
            *refuse -= 1;
            return Err(Status::unavailable("test: refusing this update"));
        }
        self.updates.lock().unwrap().push(request.into_inner());
        Ok(Response::new(Empty {}))
    }

    async fn report_usage(&self, request: Request<UsageReport>) -> Result<Response<Empty>, Status> {
        self.usage.lock().unwrap().push(request.into_inner());
        Ok(Response::new(Empty {}))
    }
}

/// Serves `recorder` on a unix socket in `dir` and returns the session handle a session
/// would publish.
async fn serve(recorder: Recorder, dir: &tempfile::TempDir) -> SessionHandle {
    let socket = dir.path().join("dispatcher.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DispatcherServer::new(recorder))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let channel = crate::containerd::connect_unix(&socket).await.unwrap();
    SessionHandle {
        client: shoal_proto::dispatcher_client::DispatcherClient::new(channel),
        session_id: "session-1".into(),
    }
}

#[tokio::test]
async fn reports_made_together_go_in_one_update_and_a_refused_one_is_retried_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::default();
    *recorder.refuse.lock().unwrap() = 1;
    let handle = serve(recorder.clone(), &dir).await;
    let reporter = Arc::new(Reporter::new("node".into()));
    let (_session_tx, session_rx) = watch::channel(Some(handle));

    reporter.report("t1", status(TaskState::Accepted));
    reporter.report("t1", status(TaskState::Preparing));
    reporter.report("t2", status(TaskState::Accepted));
    let flusher = tokio::spawn(reporter.clone().flush_loop(session_rx));

    let sent = eventually("the first delivered update", || {
        recorder.updates.lock().unwrap().first().cloned()
    })
    .await;
    flusher.abort();
    assert_eq!(sent.node_id, "node");
    assert_eq!(sent.session_id, "session-1");
    let sent: Vec<_> = sent
        .updates
        .iter()
        .map(|u| (u.task_id.as_str(), u.status.as_ref().unwrap().state))
        .collect();
    assert_eq!(
        sent,
        [
            ("t1", TaskState::Preparing as i32),
            ("t2", TaskState::Accepted as i32),
        ],
        "one batch, in order, after the refused attempt"
    );
}

#[tokio::test]
async fn usage_of_running_containers_is_reported_on_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::default();
    let handle = serve(recorder.clone(), &dir).await;
    let exec = FakeExecutor::new();
    exec.put("t1", ObservedState::Running { pid: 5 });
    exec.put("t2", super::exited(0));
    let executor: Arc<dyn Executor> = exec.clone();
    let (_session_tx, session_rx) = watch::channel(Some(handle));
    let usage = tokio::spawn(usage_loop("node".into(), executor, session_rx));

    let report = eventually("a usage report", || {
        recorder.usage.lock().unwrap().first().cloned()
    })
    .await;
    usage.abort();
    assert_eq!(report.node_id, "node");
    assert_eq!(report.session_id, "session-1");
    let tasks: Vec<_> = report.tasks.iter().map(|u| u.task_id.as_str()).collect();
    assert_eq!(tasks, ["t1"], "only what runs");
    assert_eq!(report.tasks[0].cpu_seconds_total, 1.5);
}
