//! `service logs`: the logs of a service's tasks, read from the workers that ran them
//! ([`LogSource`]), merged into one stream. With `--follow` the stream also takes in the tasks
//! placed after it began (a scale-up, a replaced task, a rolling update), as docker's does:
//! each store change is looked at for tasks of the service on a node that are not streamed
//! yet, and their whole log is streamed from its start. The stream ends when the client goes
//! or the service is removed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use shoal_proto::{ServiceLogsRequest, TaskLogsRequest};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{find_service, LogSource, LogStream};
use crate::store::{Store, StoreState};

/// The service's tasks that have a node, by node, leaving out those in `seen`; `None` once
/// the service is gone.
fn placed_tasks(
    st: &StoreState,
    service_id: &str,
    seen: &HashSet<String>,
) -> Option<BTreeMap<String, Vec<String>>> {
    st.services.get(service_id)?;
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in st
        .tasks_of_service(service_id)
        .filter(|t| !t.node_id.is_empty() && !seen.contains(&t.id))
    {
        by_node
            .entry(t.node_id.clone())
            .or_default()
            .push(t.id.clone());
    }
    Some(by_node)
}

/// The streams of `by_node`'s tasks, one per node.
async fn open(
    logs: &dyn LogSource,
    by_node: BTreeMap<String, Vec<String>>,
    req: &ServiceLogsRequest,
    tail: i64,
) -> Result<Vec<LogStream>, Status> {
    let mut streams = Vec::new();
    for (node, task_ids) in by_node {
        let r = TaskLogsRequest {
            task_ids,
            follow: req.follow,
            tail,
            since_ms: req.since_ms,
        };
        streams.push(logs.task_logs(&node, r).await?);
    }
    Ok(streams)
}

/// Answers `ServiceLogs` on the leader; see the module documentation.
pub(super) async fn service_logs(
    store: &Store,
    logs: Arc<dyn LogSource>,
    req: ServiceLogsRequest,
) -> Result<LogStream, Status> {
    // Subscribed before the first read, so no task placed in between is missed.
    let mut events = store.subscribe();
    let (service_id, first) = store.view(|st| {
        let s = find_service(st, &req.service)?;
        let tasks = placed_tasks(st, &s.id, &HashSet::new()).unwrap_or_default();
        Ok::<_, Status>((s.id.clone(), tasks))
    })?;
    let mut seen: HashSet<String> = first.values().flatten().cloned().collect();
    let streams = open(logs.as_ref(), first, &req, req.tail).await?;
    let merged = futures::stream::select_all(streams);
    if !req.follow {
        return Ok(Box::pin(merged));
    }

    let (tx, rx) = mpsc::channel(256);
    let store = store.clone();
    tokio::spawn(async move {
        let mut merged = merged;
        loop {
            tokio::select! {
                () = tx.closed() => return,
                msg = merged.next(), if !merged.is_empty() => {
                    if let Some(msg) = msg {
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
                ev = events.recv() => {
                    if matches!(ev, Err(RecvError::Closed)) {
                        return;
                    }
                    let new = store.view(|st| placed_tasks(st, &service_id, &seen));
                    let Some(new) = new else {
                        // The service was removed: its logs end here.
                        return;
                    };
                    if new.is_empty() {
                        continue;
                    }
                    seen.extend(new.values().flatten().cloned());
                    // A task new to the stream is shown from its first line.
                    match open(logs.as_ref(), new, &req, -1).await {
                        Ok(streams) => streams.into_iter().for_each(|s| merged.push(s)),
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
