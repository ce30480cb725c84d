//! The dispatcher: worker sessions, heartbeats, task assignments and status reports.
//!
//! A worker opens a `Session` and receives the complete set of tasks assigned to its node,
//! then whenever that set changes the tasks added, changed or removed ([`assignments`]; the
//! whole set again for a worker that did not ask for that); it reports progress with
//! `UpdateTaskStatus`. The local worker of a manager uses this same protocol, so one path
//! serves every node.
//!
//! With the tasks go the peer tables of their networks ([`peers`]): who else is on each
//! network, at which address, behind which node; and the secrets and configs the node's live
//! tasks reference, and no others ([`dependencies`]).
//!
//! A node is marked DOWN when its session's connection closes and it does not come back within
//! a short grace, or when its heartbeats stop for three periods ([`liveness`]).

mod assignments;
mod batcher;
mod dependencies;
mod fanout;
mod liveness;
pub mod peers;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use shoal_proto::leader_hint;
use shoal_proto::{
    dispatcher_server, store_action::Action, Empty, HeartbeatRequest, HeartbeatResponse, NodeRole,
    NodeState, NodeStatusUpdate, SessionMessage, SessionRequest, StoreAction, Task, TaskState,
    TaskUsage, UpdateTaskStatusRequest, UsageReport,
};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::authority::Authority;
use crate::ids::new_id;
use crate::raft::RaftStatus;
use crate::usage::UsageStore;
use shoal_tls::Caller;

use crate::store::{Store, StoreError, StoreState};

/// Docker Swarm's default `--dispatcher-heartbeat`.
pub const DEFAULT_HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);

/// How often per heartbeat period the leader looks for nodes whose grace ran out.
const MONITOR_CHECKS_PER_PERIOD: u32 = 10;
/// ... but not more often than this.
const MONITOR_MIN_CHECK: Duration = Duration::from_millis(100);

use liveness::Session;
pub use liveness::CLOSED_GRACE;

#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    period: Duration,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Only the leader dispatches: a follower refuses, and a session ends when leadership
    /// moves, so the worker looks for the new leader.
    raft: watch::Receiver<RaftStatus>,
    usage: UsageStore,
    /// Wakes only the sessions a store change concerns; started with the first session.
    fanout: fanout::Fanout,
    /// Status reports of all sessions, proposed together; started with the first report.
    statuses: Arc<std::sync::OnceLock<batcher::Batcher>>,
    /// The sessions' common part as of the latest fan-out generation asked for.
    cluster: Arc<Mutex<Option<Arc<ClusterPart>>>>,
    /// Tasks in each session message sent (its count is the messages): how often workers
    /// hear from this leader, and how much each message carries.
    message_tasks: Histogram,
}

/// The caller must be the node it speaks for (or the local daemon on the unix socket), and a
/// member in the store: a removed or unknown node gets no session, however valid its
/// certificate.
fn authorize<T>(authority: &Authority, request: &Request<T>, node_id: &str) -> Result<(), Status> {
    match authority.require(request, shoal_tls::Role::Worker)? {
        Caller::Local => Ok(()),
        Caller::Node(peer) if peer.node_id == node_id => Ok(()),
        Caller::Node(peer) => Err(Status::permission_denied(format!(
            "node {} cannot speak for node {node_id}",
            peer.node_id
        ))),
    }
}

fn node_status(update: NodeStatusUpdate) -> StoreAction {
    StoreAction {
        action: Some(Action::NodeStatus(update.into())),
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Rejected(e) => Status::failed_precondition(e.to_string()),
        StoreError::NotLeader { .. } => Status::unavailable(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

impl Dispatcher {
    pub fn new(
        store: Store,
        period: Duration,
        raft: watch::Receiver<RaftStatus>,
        usage: UsageStore,
    ) -> Self {
        Dispatcher {
            store,
            period,
            sessions: Arc::default(),
            raft,
            usage,
            fanout: fanout::Fanout::default(),
            statuses: Arc::default(),
            cluster: Arc::default(),
            // 1 … 2,048 tasks.
            message_tasks: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        }
    }

    fn authority(&self) -> Authority {
        Authority::new(self.store.clone(), self.raft.clone())
    }

    fn check_leader(&self) -> Result<(), Status> {
        let status = self.raft.borrow();
        if status.is_leader {
            return Ok(());
        }
        Err(leader_hint::not_leader(status.leader_addr()))
    }

    /// Tasks per session message sent, for metrics.
    pub fn message_tasks(&self) -> &Histogram {
        &self.message_tasks
    }

    /// Worker sessions held now, for metrics.
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_session(&self, node_id: &str, session_id: &str) -> Result<(), Status> {
        match self.sessions().get_mut(node_id) {
            Some(s) if s.id == session_id && s.closed_at.is_none() => {
                s.last_heartbeat = Instant::now();
                Ok(())
            }
            _ => Err(Status::not_found(format!(
                "session {session_id} of node {node_id} is not known to this manager; open a new session"
            ))),
        }
    }

    /// The tasks assigned to `node_id`, by task ID: the node's tasks as the fan-out indexed
    /// them, read from the store (a node holds a fraction of the cluster's tasks).
    fn assigned(&self, node_id: &str) -> Vec<Task> {
        self.assigned_of(node_id, &self.fanout.tasks_of(node_id))
    }

    /// How `node_id`'s tasks differ from what its session `sent`, from the fan-out's index
    /// (no task is read from the store), and the secrets and configs the tasks need (only the
    /// tasks that reference some are read).
    fn look(
        &self,
        waiter: &fanout::Waiter,
        node_id: &str,
        sent: &assignments::Sent,
    ) -> (assignments::Delta, dependencies::DependencyIds) {
        let look = self.fanout.look(waiter, sent);
        let deps = self
            .store
            .view(|st| dependencies::ids(st, assigned_in(st, node_id, &look.with_refs)));
        (look.delta, deps)
    }

    /// Copies of those of the tasks `ids` that are assigned to `node_id`.
    fn assigned_of(&self, node_id: &str, ids: &[String]) -> Vec<Task> {
        self.store
            .view(|st| assigned_in(st, node_id, ids).cloned().collect())
    }

    /// The cluster's part of `node_id`'s session message as of fan-out `generation`;
    /// `cert_role` is the role its certificate grants, when it came with one.
    fn shared(
        &self,
        generation: u64,
        node_id: &str,
        cert_role: Option<shoal_tls::Role>,
        tasks: &[Task],
    ) -> Shared {
        let cluster = self.cluster_part(generation);
        let (manager, networks) = self.store.view(|st| {
            let manager = st
                .nodes
                .get(node_id)
                .is_some_and(|n| n.role == NodeRole::Manager as i32);
            (manager, cluster.peers.tables(st, node_id, tasks.iter()))
        });
        Shared {
            managers: cluster.managers.clone(),
            manager_ids: cluster.manager_ids.clone(),
            renew_certificate: cert_role
                .is_some_and(|r| manager != (r == shoal_tls::Role::Manager)),
            networks,
        }
    }

    /// What every session's message takes from the whole cluster, as of fan-out `generation`
    /// or later: built by the first session to ask after a change that woke them all, and
    /// shared by the others. A newer one serves an older generation too (a session that read
    /// its generation just before another's change): it only holds more of the store.
    fn cluster_part(&self, generation: u64) -> Arc<ClusterPart> {
        // Held while building, so that the sessions woken together wait for one build
        // instead of each doing its own.
        let mut cached = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(part) = cached.as_ref().filter(|p| p.generation >= generation) {
            return part.clone();
        }
        let networked = self.fanout.networked();
        let previous = cached.as_ref().map(|p| &p.peers);
        let part = Arc::new(self.store.view(|st| ClusterPart {
            generation,
            managers: st.manager_addrs(),
            manager_ids: st.manager_ids(),
            peers: peers::Peers::of(
                st,
                networked.iter().filter_map(|id| st.tasks.get(id)),
                previous,
            ),
        }));
        *cached = Some(part.clone());
        part
    }

    /// The heartbeat period: the cluster's (`swarm init/update --dispatcher-heartbeat`), else
    /// this daemon's `--dispatcher-heartbeat`.
    fn period(&self) -> Duration {
        self.store
            .view(|st| st.cluster.as_ref().map(|c| c.dispatcher_heartbeat_ms))
            .filter(|&ms| ms > 0)
            .map_or(self.period, Duration::from_millis)
    }

    /// The session's connection closed (the worker's daemon died or restarts): the node goes
    /// Unknown now, and Down if no new session comes within the grace.
    async fn session_closed(&self, node_id: &str, session_id: &str) {
        {
            let mut sessions = self.sessions();
            match sessions.get_mut(node_id) {
                Some(s) if s.id == session_id => s.closed_at = Some(Instant::now()),
                _ => return,
            }
        }
        let grace = liveness::closed_grace(self.period());
        info!(node = %node_id, ?grace, "worker session closed; node unknown until it comes back");
        let update = NodeStatusUpdate {
            node_id: node_id.to_string(),
            state: NodeState::Unknown as i32,
            message: format!("session closed; waiting {grace:?} for the node to come back"),
            timestamp_ms: crate::ids::now_ms(),
            ..Default::default()
        };
        if let Err(e) = self.store.propose(vec![node_status(update)]).await {
            warn!(node = %node_id, error = %e, "could not mark the node unknown");
        }
    }

    /// Marks nodes DOWN whose session closed or went silent ([`liveness`]), and Ready again
    /// those connected but left otherwise by a race. Runs on the leader beside the other roles.
    pub async fn monitor(self, mut shutdown: watch::Receiver<bool>) {
        let leader_since = Instant::now();
        // Sessions held with an earlier term's leadership are gone: every node reconnects.
        self.sessions().clear();
        if self.fanout.started() {
            self.fanout.resync(&self.store);
        }
        loop {
            // Checked several times per period, so that a node is marked DOWN within a
            // fraction of a period of its grace running out.
            let period = self.period();
            let check_every = (period / MONITOR_CHECKS_PER_PERIOD)
                .min(liveness::closed_grace(period) / 4)
                .max(MONITOR_MIN_CHECK);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(check_every) => {}
            }
            let check = liveness::Check {
                now: Instant::now(),
                now_ms: crate::ids::now_ms(),
                period,
                leader_since,
            };
            let (down, up) = {
                let mut sessions = self.sessions();
                self.store.view(|st| {
                    let down = liveness::expire(&mut sessions, st, &check);
                    (down, liveness::connected_not_ready(&sessions, st))
                })
            };
            let actions: Vec<StoreAction> = down
                .into_iter()
                .map(|(node_id, why)| {
                    warn!(node = %node_id, reason = why, "marking node down");
                    (node_id, NodeState::Down, why)
                })
                .chain(up.into_iter().map(|n| (n, NodeState::Ready, "")))
                .map(|(node_id, state, why)| {
                    node_status(NodeStatusUpdate {
                        node_id,
                        state: state as i32,
                        message: why.into(),
                        timestamp_ms: check.now_ms,
                        ..Default::default()
                    })
                })
                .collect();
            if actions.is_empty() {
                continue;
            }
            if let Err(e) = self.store.propose(actions).await {
                warn!(error = %e, "could not update node states");
            }
        }
    }
}

/// Those of the tasks `ids` that are `node_id`'s to run.
fn assigned_in<'a>(
    st: &'a StoreState,
    node_id: &'a str,
    ids: &'a [String],
) -> impl Iterator<Item = &'a Task> + 'a {
    ids.iter()
        .filter_map(|id| st.tasks.get(id))
        .filter(move |t| assigned_to(t, node_id))
}

/// Whether a task the fan-out indexed under `node_id` is the node's to run: global tasks carry
/// their node from creation, and the worker sees them only once the scheduler has checked the
/// node (ASSIGNED).
fn assigned_to(t: &Task, node_id: &str) -> bool {
    t.node_id == node_id && t.state() >= TaskState::Assigned
}

/// What a session last sent besides its tasks: managers, the renew flag and the secrets and
/// configs (the peer tables are followed apart, see the session loop).
type SentRest = (
    (Vec<String>, Vec<String>),
    bool,
    dependencies::DependencyIds,
);

/// What all sessions' messages take from the whole cluster as of a fan-out generation.
struct ClusterPart {
    generation: u64,
    managers: Vec<String>,
    manager_ids: Vec<String>,
    peers: peers::Peers,
}

/// What a session message holds that depends on the whole cluster, not on the node's tasks.
struct Shared {
    managers: Vec<String>,
    manager_ids: Vec<String>,
    renew_certificate: bool,
    networks: Vec<peers::Table>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send>>;

#[tonic::async_trait]
impl dispatcher_server::Dispatcher for Dispatcher {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.check_leader()?;
        authorize(&self.authority(), &request, &request.get_ref().node_id)?;
        // The role the node's certificate grants; when the store says otherwise (promote,
        // demote) the node is told to renew its certificate.
        let cert_role = shoal_tls::peer_identity(&request).map(|p| p.role);
        let req = request.into_inner();
        if req.node_id.is_empty() {
            return Err(Status::invalid_argument(
                "session request without a node ID",
            ));
        }
        let report = NodeStatusUpdate {
            node_id: req.node_id.clone(),
            description: req.description.clone(),
            addr: req.addr.clone(),
            state: NodeState::Ready as i32,
            message: String::new(),
            timestamp_ms: crate::ids::now_ms(),
        };
        self.store
            .propose(vec![StoreAction {
                action: Some(Action::NodeStatus(report.into())),
            }])
            .await
            .map_err(store_status)?;

        let session_id = new_id();
        self.sessions().insert(
            req.node_id.clone(),
            Session {
                id: session_id.clone(),
                last_heartbeat: Instant::now(),
                closed_at: None,
            },
        );
        info!(node = %req.node_id, session = %session_id, "worker session opened");

        // Before the session's first look (see `Fanout::start`).
        self.fanout.start(&self.store);
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        let node_id = req.node_id;
        let incremental = req.incremental_assignments;
        let waiter = self.fanout.register(&node_id, &session_id);
        let mut raft = self.raft.clone();
        tokio::spawn(async move {
            // What the node was last sent: its tasks, and the rest of the message.
            let mut sent = assignments::Sent::default();
            let mut last: Option<SentRest> = None;
            // What the whole cluster contributes (managers, role, peer tables) as of a fan-out
            // generation: only entries that wake every session change it, so a session woken
            // for its own tasks does not build it again.
            let mut shared: Option<(u64, Shared)> = None;
            // Whether the node holds the current peer tables: a message may then leave them
            // out (`peers_unchanged`), which spares sending every node's routing-mesh address
            // to each node whenever one of its tasks changes.
            let mut tables_sent = false;
            loop {
                // A newer session of the same node replaces this one.
                if this.sessions().get(&node_id).map(|s| &s.id) != Some(&session_id) {
                    return;
                }
                // The tasks are copied only when there is something to send.
                let (delta, deps) = this.look(&waiter, &node_id, &sent);
                let mut tasks = None;
                let generation = this.fanout.generation();
                if shared.as_ref().map(|(g, _)| *g) != Some(generation) {
                    let now = this.shared(
                        generation,
                        &node_id,
                        cert_role,
                        tasks.insert(this.assigned(&node_id)),
                    );
                    if shared
                        .as_ref()
                        .is_none_or(|(_, s)| s.networks != now.networks)
                    {
                        tables_sent = false;
                    }
                    shared = Some((generation, now));
                }
                let Some((_, sh)) = &shared else {
                    return;
                };
                let rest = (
                    (sh.managers.clone(), sh.manager_ids.clone()),
                    sh.renew_certificate,
                    deps,
                );
                if last.as_ref() != Some(&rest) || !delta.is_empty() || !tables_sent {
                    // After the first message, a worker that asked for it hears only of what
                    // changed; the others get the whole set every time.
                    let incremental = incremental && last.is_some();
                    let (tasks, removed_task_ids) = if incremental {
                        let changed = this.assigned_of(&node_id, &delta.changed_ids());
                        (changed, delta.removed.clone())
                    } else {
                        (tasks.unwrap_or_else(|| this.assigned(&node_id)), Vec::new())
                    };
                    let (secrets, configs) =
                        this.store.view(|st| dependencies::objects(st, &rest.2));
                    let msg = SessionMessage {
                        session_id: session_id.clone(),
                        heartbeat_period_ms: this.period().as_millis() as u64,
                        tasks,
                        managers: sh.managers.clone(),
                        renew_certificate: sh.renew_certificate,
                        networks: if tables_sent {
                            Vec::new()
                        } else {
                            sh.networks.iter().map(peers::Table::to_message).collect()
                        },
                        peers_unchanged: tables_sent,
                        manager_ids: sh.manager_ids.clone(),
                        secrets,
                        configs,
                        incremental,
                        removed_task_ids,
                    };
                    this.message_tasks.observe(msg.tasks.len() as f64);
                    if tx.send(Ok(msg)).await.is_err() {
                        this.session_closed(&node_id, &session_id).await;
                        return;
                    }
                    sent.apply(&delta);
                    last = Some(rest);
                    tables_sent = true;
                }
                tokio::select! {
                    _ = tx.closed() => {
                        this.session_closed(&node_id, &session_id).await;
                        return;
                    }
                    changed = raft.changed() => {
                        if changed.is_ok() && raft.borrow().is_leader {
                            continue;
                        }
                        let refusal = leader_hint::not_leader(raft.borrow().leader_addr());
                        let _ = tx.send(Err(refusal)).await;
                        return;
                    }
                    _ = waiter.notify.notified() => {
                        if this.fanout.closed() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.check_leader()?;
        authorize(&self.authority(), &request, &request.get_ref().node_id)?;
        let req = request.into_inner();
        self.check_session(&req.node_id, &req.session_id)?;
        Ok(Response::new(HeartbeatResponse {
            period_ms: self.period().as_millis() as u64,
        }))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.check_leader()?;
        authorize(&self.authority(), &request, &request.get_ref().node_id)?;
        let req = request.into_inner();
        self.check_session(&req.node_id, &req.session_id)?;
        // A worker reports only on its own tasks.
        let actions: Vec<StoreAction> = self.store.view(|st| {
            req.updates
                .into_iter()
                .filter(|u| {
                    st.tasks.get(&u.task_id).is_some_and(|t| {
                        t.node_id == req.node_id && t.state() >= TaskState::Assigned
                    })
                })
                .map(|u| StoreAction {
                    action: Some(Action::UpdateTaskStatus(u)),
                })
                .collect()
        });
        if !actions.is_empty() {
            let statuses = self
                .statuses
                .get_or_init(|| batcher::Batcher::start(self.store.clone()));
            statuses.propose(actions).await?;
        }
        Ok(Response::new(Empty {}))
    }

    async fn report_usage(&self, request: Request<UsageReport>) -> Result<Response<Empty>, Status> {
        self.check_leader()?;
        authorize(&self.authority(), &request, &request.get_ref().node_id)?;
        let req = request.into_inner();
        self.check_session(&req.node_id, &req.session_id)?;
        let tasks = self
            .store
            .view(|st| assigned_usage(st, &req.node_id, req.tasks));
        self.usage.record(&req.node_id, tasks);
        Ok(Response::new(Empty {}))
    }
}

/// The samples of a usage report that are about tasks assigned to the reporting node: like a
/// status report, a node speaks only of its own tasks, so a compromised worker cannot feed the
/// metrics and the autoscaler numbers for other nodes' tasks.
fn assigned_usage(st: &StoreState, node_id: &str, tasks: Vec<TaskUsage>) -> Vec<TaskUsage> {
    let (own, foreign): (Vec<TaskUsage>, Vec<TaskUsage>) = tasks.into_iter().partition(|u| {
        st.tasks
            .get(&u.task_id)
            .is_some_and(|t| t.node_id == node_id)
    });
    if !foreign.is_empty() {
        warn!(node = %node_id, refused = foreign.len(),
            "usage report about tasks not assigned to the node; those samples are dropped");
    }
    own
}

#[cfg(test)]
mod tests;
