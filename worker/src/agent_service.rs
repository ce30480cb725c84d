//! The `Agent` gRPC service a manager calls on a worker: task logs, read where the tasks ran.
//!
//! `TaskLogs` streams the json-file logs of the given tasks ([`crate::logs`]): the last `tail`
//! lines of each task (all when negative), merged in time order, then — with `follow` — every
//! new line as it is written, until the caller hangs up.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use shoal_proto::agent_server::Agent;
use shoal_proto::{LogMessage, TaskLogsRequest};
use tonic::{Request, Response, Status};

use crate::executor::ContainerdExecutor;
use crate::logs::{self, LogOptions, LogsError};

/// A stream of log messages as gRPC handlers return it.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogMessage, Status>> + Send>>;

/// Task IDs become path components: anything but a plain name is refused.
pub fn is_valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn to_status(e: LogsError) -> Status {
    Status::internal(e.to_string())
}

/// The logs of `req.task_ids` from the executor's data directory; what `TaskLogs` answers.
/// Node IDs in the messages come from each task's stored metadata.
pub fn task_logs(executor: &ContainerdExecutor, req: TaskLogsRequest) -> Result<LogStream, Status> {
    if let Some(bad) = req.task_ids.iter().find(|id| !is_valid_task_id(id)) {
        return Err(Status::invalid_argument(format!(
            "invalid task ID {bad:?}: task IDs are letters, digits, '-', '_' and '.'"
        )));
    }
    let data_dir = executor.data_dir().to_path_buf();
    if !req.follow {
        let ids = req.task_ids;
        let (tail, since_ms) = (req.tail, req.since_ms);
        // Reading files blocks: done on the blocking pool, then merged by time (stable, so
        // each task's own order is kept for equal timestamps).
        let read = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for id in &ids {
                all.extend(logs::read_logs(&data_dir, id, "", tail, since_ms)?);
            }
            all.sort_by_key(|m| m.timestamp_ms);
            Ok::<_, LogsError>(all)
        });
        let stream = futures::stream::once(async move {
            match read.await {
                Ok(Ok(msgs)) => futures::stream::iter(msgs.into_iter().map(Ok)).left_stream(),
                Ok(Err(e)) => futures::stream::iter([Err(to_status(e))]).right_stream(),
                Err(e) => futures::stream::iter([Err(Status::internal(format!(
                    "reading logs failed: {e}"
                )))])
                .right_stream(),
            }
        })
        .flatten();
        return Ok(Box::pin(stream));
    }
    let streams = req.task_ids.into_iter().map(|id| {
        logs::stream_logs(
            data_dir.clone(),
            id,
            String::new(),
            LogOptions {
                follow: true,
                tail: req.tail,
                since_ms: req.since_ms,
            },
        )
        .map(|r| r.map_err(to_status))
    });
    Ok(Box::pin(futures::stream::select_all(streams)))
}

/// The `Agent` service over an executor's task logs.
pub struct AgentService {
    executor: Arc<ContainerdExecutor>,
}

impl AgentService {
    pub fn new(executor: Arc<ContainerdExecutor>) -> Self {
        AgentService { executor }
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type TaskLogsStream = LogStream;

    async fn task_logs(
        &self,
        request: Request<TaskLogsRequest>,
    ) -> Result<Response<Self::TaskLogsStream>, Status> {
        task_logs(&self.executor, request.into_inner()).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_plain_names() {
        assert!(is_valid_task_id("k2j3h4g5f6d7s8a9"));
        assert!(is_valid_task_id("a.b-c_d"));
        for bad in ["", ".", "..", "../etc", "a/b", "/abs", "a b"] {
            assert!(!is_valid_task_id(bad), "{bad:?} accepted");
        }
    }
}
