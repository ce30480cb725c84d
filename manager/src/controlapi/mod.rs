//! The control API: what `shoal node …`, `service …`, `network …` and `swarm join-token` ask of
//! a manager.
//!
//! It validates requests, turns them into store proposals and answers from the store. It is
//! served by every daemon; on a node that is not a manager it answers with the message that
//! tells the user to `shoal swarm init` (or join) first.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use futures::Stream;
use shoal_proto::validate::{self, PolicyError, SpecError};
use shoal_proto::{
    control_server, store_action::Action, CreateNetworkRequest, CreateServiceRequest, Empty,
    GetNodeRequest, JoinTokenRequest, JoinTokenResponse, ListNodesResponse, ListServicesResponse,
    ListTasksRequest, ListTasksResponse, LogMessage, Node, RemoveNodeRequest, Service,
    ServiceLogsRequest, ServiceRef, ServiceSpec, ServiceSummary, StoreAction, TaskDesiredState,
    TaskLogsRequest, TaskState, UnlockKeyResponse, UpdateClusterRequest, UpdateNodeRequest,
    UpdateServiceRequest,
};
use shoal_proto::{
    Config, ConfigRef, CreateConfigRequest, CreateSecretRequest, ListConfigsResponse,
    ListSecretsResponse, Secret, SecretRef,
};
use shoal_proto::{ListNetworksResponse, Network, NetworkRef, Task};
use tonic::{Request, Response, Status};

use crate::authority::Authority;
use crate::ids::{new_id, now_ms};
use crate::leader::LeaderLink;
use crate::orchestrator::jobs;
use crate::store::{ApplyError, Store, StoreError, StoreState};
use crate::tokens;
use nodes::find_node;
use shoal_proto::control_client::ControlClient;

mod cluster;
mod endpoints;
mod networks;
mod nodes;
mod registry_auth;
mod rollout;
mod secrets;
mod service_logs;

pub(crate) use networks::initial_ingress;
pub use networks::INGRESS_NAME;

pub const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use `shoal swarm init` to \
     create a single-node swarm on this node, or `shoal swarm join` to connect this node to a \
     swarm and try again.";

pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogMessage, Status>> + Send>>;

/// Where task logs come from: the worker that ran the task.
#[tonic::async_trait]
pub trait LogSource: Send + Sync {
    async fn task_logs(&self, node_id: &str, req: TaskLogsRequest) -> Result<LogStream, Status>;
}

/// The manager this daemon runs, if any.
#[derive(Clone)]
pub struct ActiveManager {
    pub store: Store,
    pub node_id: String,
    pub leader: LeaderLink,
}

impl ActiveManager {
    /// What callers are checked against: this manager's store and Raft status.
    pub fn authority(&self) -> Authority {
        Authority::new(self.store.clone(), self.leader.raft().subscribe_status())
    }

    /// Reads see every write acknowledged before they began (Raft ReadIndex): a leader that
    /// was deposed without knowing it yet cannot answer from a stale state.
    async fn linearizable(&self) -> Result<(), Status> {
        self.leader
            .raft()
            .read_index()
            .await
            .map(|_| ())
            .map_err(store_status)
    }

    /// Manager status as Raft sees it now (stored addresses, live leadership and reachability).
    fn with_live_manager_status(&self, mut node: Node) -> Node {
        let status = self.leader.raft().status();
        if let Some(ms) = node.manager_status.as_mut() {
            ms.leader = ms.raft_id == status.leader_id;
            let reachable = ms.raft_id == status.id
                || status
                    .peers
                    .iter()
                    .any(|p| p.id == ms.raft_id && p.reachable);
            ms.reachability = if reachable {
                "reachable"
            } else {
                "unreachable"
            }
            .into();
        }
        node
    }
}

/// Serves the call on the leader: a follower passes it on unchanged.
macro_rules! forward {
    ($m:expr, $request:ident, $method:ident) => {
        if let Some(ch) = $m.leader.forward()? {
            // Boxed: inline, the client call's future (several KB) would be part of every
            // call's future, which each call's answer moves and copies, forwarded or not.
            return Box::pin(
                ControlClient::new(ch)
                    .max_decoding_message_size(usize::MAX)
                    .$method($request.into_inner()),
            )
            .await;
        }
    };
}

pub type ManagerSlot = Arc<RwLock<Option<ActiveManager>>>;

/// The manager in the slot, or the refusal a node that runs no manager gives.
pub fn active(slot: &ManagerSlot) -> Result<ActiveManager, Status> {
    slot.read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))
}

pub struct ControlApi {
    manager: ManagerSlot,
    logs: Arc<dyn LogSource>,
}

impl ControlApi {
    pub fn new(manager: ManagerSlot, logs: Arc<dyn LogSource>) -> Self {
        ControlApi { manager, logs }
    }

    fn active(&self) -> Result<ActiveManager, Status> {
        active(&self.manager)
    }
}

pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Rejected(ApplyError::ServiceNameTaken(_)) => {
            Status::already_exists(e.to_string())
        }
        StoreError::Rejected(ApplyError::NetworkNameTaken(_)) => {
            Status::already_exists(e.to_string())
        }
        StoreError::Rejected(ApplyError::SecretNameTaken { .. }) => {
            Status::already_exists(e.to_string())
        }
        StoreError::Rejected(
            ApplyError::NoSuchService(_)
            | ApplyError::NoSuchNetwork(_)
            | ApplyError::NoSuchSecret { .. },
        ) => Status::not_found(e.to_string()),
        StoreError::Rejected(_) => Status::failed_precondition(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// Spec errors are the caller's to fix (InvalidArgument), except those that depend on the
/// service's current state or the swarm's settings (FailedPrecondition), as scaling an
/// autoscaled service by hand.
pub fn spec_status(e: SpecError) -> Status {
    match e {
        SpecError::Autoscale(PolicyError::Autoscaled { .. } | PolicyError::NoPrometheus) => {
            Status::failed_precondition(e.to_string())
        }
        _ => Status::invalid_argument(e.to_string()),
    }
}

/// Finds one object of `by_id` (the store's map of them, keyed by ID) by exact ID, exact
/// name, or unique ID prefix (docker's lookup order).
fn lookup<'a, T>(
    by_id: &'a BTreeMap<String, T>,
    key: &str,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
    kind: &str,
) -> Result<&'a T, Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument(format!("no {kind} given")));
    }
    // Scripts and the writes they repeat name objects by ID: one map lookup, not a scan.
    if let Some(x) = by_id.get(key) {
        return Ok(x);
    }
    let items = by_id.values();
    if let Some(x) = items.clone().find(|x| name(x) == key) {
        return Ok(x);
    }
    let matches: Vec<&T> = items.filter(|x| id(x).starts_with(key)).collect();
    match matches.len() {
        1 => Ok(matches[0]),
        0 => Err(Status::not_found(format!("no such {kind}: {key}"))),
        n => Err(Status::invalid_argument(format!(
            "{kind} {key} is ambiguous ({n} matches); give more of the ID"
        ))),
    }
}

fn find_service<'a>(st: &'a StoreState, key: &str) -> Result<&'a Service, Status> {
    lookup(
        &st.services,
        key,
        |s| &s.id,
        |s| s.spec.as_ref().map_or("", |sp| &sp.name),
        "service",
    )
}

/// A copy of `s` to update: all of it but its previous spec, which an update replaces (a
/// spec's copy is most of a service's, and this is on the path of every update).
fn copy_to_update(s: &Service) -> Service {
    Service {
        id: s.id.clone(),
        meta: s.meta,
        spec: s.spec.clone(),
        previous_spec: None,
        autoscale_status: s.autoscale_status.clone(),
        endpoint: s.endpoint.clone(),
        update_status: s.update_status.clone(),
        job_status: s.job_status,
    }
}

/// What an update answers: the service as stored after it, without its previous spec (which
/// `GetService` has) and without credentials. The previous spec was the request's own
/// service before the update; copying, sending and decoding it again on every update is
/// half the answer's cost for nothing the caller needs (Docker's update answers warnings only).
fn update_answer(stored: &Service) -> Service {
    registry_auth::hidden(copy_to_update(stored))
}

/// A query policy needs a Prometheus that answers and accepts the query.
async fn check_query_policy(
    m: &ActiveManager,
    old: Option<&ServiceSpec>,
    new: &ServiceSpec,
) -> Result<(), Status> {
    use crate::autoscaler::{prometheus::QueryError, CheckError};
    let url = m.store.view(|st| {
        st.cluster
            .as_ref()
            .map(|c| c.prometheus_url.clone())
            .unwrap_or_default()
    });
    crate::autoscaler::check_query_policy(&url, old, new)
        .await
        .map_err(|e| match e {
            CheckError::Query(QueryError::Unreachable { .. }) => Status::unavailable(format!(
                "{e}; the autoscale query cannot be checked: start Prometheus or fix the URL \
                 (`shoal swarm update --prometheus-url URL`)"
            )),
            CheckError::Policy(_) => Status::failed_precondition(e.to_string()),
            _ => Status::invalid_argument(format!("invalid autoscale query: {e}")),
        })
}

fn act(a: Action) -> StoreAction {
    StoreAction { action: Some(a) }
}

#[tonic::async_trait]
impl control_server::Control for ControlApi {
    async fn get_join_token(
        &self,
        request: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        let m = self.active()?;
        forward!(m, request, get_join_token);
        let req = request.into_inner();
        let role = match req.role.as_str() {
            "worker" | "manager" => req.role.clone(),
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown role {other:?}: use `worker` or `manager`"
                )))
            }
        };
        let cluster = if req.rotate {
            cluster::update(&m, |c| {
                let current = if role == "worker" {
                    &mut c.worker_join_token
                } else {
                    &mut c.manager_join_token
                };
                *current = tokens::rotate(current).map_err(|e| Status::internal(e.to_string()))?;
                Ok(())
            })
            .await?
        } else {
            // A token read is linearizable like every other read: a token rotated just before
            // is never answered with the old one by a leader that was deposed meanwhile.
            m.linearizable().await?;
            m.store
                .view(|st| st.cluster.clone())
                .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))?
        };
        let addr = m.store.view(|st| {
            st.nodes
                .get(&m.node_id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        });
        let token = if role == "worker" {
            cluster.worker_join_token
        } else {
            cluster.manager_join_token
        };
        Ok(Response::new(JoinTokenResponse {
            join_command: tokens::join_command(&token, &addr),
            token,
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let m = self.active()?;
        if let Some(ch) = m.leader.forward()? {
            // The leader answers for itself; "self" is this node.
            let mut resp = ControlClient::new(ch)
                .list_nodes(request.into_inner())
                .await?;
            resp.get_mut().self_id = m.node_id.clone();
            return Ok(resp);
        }
        m.linearizable().await?;
        let nodes: Vec<Node> = m.store.view(|st| st.nodes.values().cloned().collect());
        let nodes = nodes
            .into_iter()
            .map(|n| m.with_live_manager_status(n))
            .collect();
        Ok(Response::new(ListNodesResponse {
            nodes,
            self_id: m.node_id,
        }))
    }

    async fn get_node(
        &self,
        mut request: Request<GetNodeRequest>,
    ) -> Result<Response<Node>, Status> {
        let m = self.active()?;
        if request.get_ref().node == "self" {
            request.get_mut().node = m.node_id.clone();
        }
        forward!(m, request, get_node);
        m.linearizable().await?;
        let key = request.into_inner().node;
        let node = m.store.view(|st| find_node(st, &key, &m.node_id))?;
        Ok(Response::new(m.with_live_manager_status(node)))
    }

    async fn create_service(
        &self,
        request: Request<CreateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        let m = self.active()?;
        forward!(m, request, create_service);
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("no service spec given"))?;
        let mut spec = spec;
        validate::service_spec(&spec).map_err(spec_status)?;
        m.store.view(|st| {
            networks::resolve_attachments(st, &mut spec)?;
            secrets::resolve_references(st, &mut spec)
        })?;
        check_query_policy(&m, None, &spec).await?;
        let now = now_ms();
        let job_status = rollout::next_job_iteration(None, &spec, now);
        let service = Service {
            id: new_id(),
            meta: Some(shoal_proto::Meta {
                version: 0,
                created_at_ms: now,
                updated_at_ms: now,
            }),
            spec: Some(spec),
            previous_spec: None,
            autoscale_status: None,
            endpoint: None,
            update_status: None,
            job_status,
        };
        let id = service.id.clone();
        endpoints::propose_with_endpoint(&m, service, None, |s| Action::CreateService(s.into()))
            .await?;
        let stored = m
            .store
            .view(|st| st.services.get(&id).cloned())
            .ok_or_else(|| Status::internal("service vanished right after creation"))?;
        Ok(Response::new(registry_auth::hidden(stored)))
    }

    async fn list_services(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let m = self.active()?;
        forward!(m, request, list_services);
        m.linearizable().await?;
        let services = m.store.view(|st| {
            st.services
                .values()
                .map(|s| {
                    // Counted by the store as tasks change, not by a walk of every task.
                    let running = st.tasks.running_of_service(&s.id);
                    let is_job = s.spec.as_ref().is_some_and(|s| jobs::is_job(s.mode()));
                    let (completed, job_total) = if is_job {
                        jobs::progress(st, s)
                    } else {
                        (0, 0)
                    };
                    ServiceSummary {
                        service: Some(registry_auth::hidden(s.clone())),
                        running,
                        desired: crate::orchestrator::desired_tasks(st, s),
                        completed,
                        job_total,
                    }
                })
                .collect()
        });
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn get_service(&self, request: Request<ServiceRef>) -> Result<Response<Service>, Status> {
        let m = self.active()?;
        forward!(m, request, get_service);
        m.linearizable().await?;
        let key = request.into_inner().service;
        let service = m.store.view(|st| find_service(st, &key).cloned())?;
        Ok(Response::new(registry_auth::hidden(service)))
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        let m = self.active()?;
        forward!(m, request, update_service);
        let req = request.into_inner();
        let (current, previous) = m.store.view(|st| {
            let s = find_service(st, &req.service)?;
            let previous = match req.rollback {
                true => Some(rollout::previous_spec(s)?),
                false => None,
            };
            Ok::<_, Status>((copy_to_update(s), previous))
        })?;
        let mut spec = match previous {
            Some(previous) => previous,
            None => req
                .spec
                .ok_or_else(|| Status::invalid_argument("no service spec given"))?,
        };
        validate::service_spec(&spec).map_err(spec_status)?;
        m.store.view(|st| {
            networks::resolve_attachments(st, &mut spec)?;
            secrets::resolve_references(st, &mut spec)
        })?;
        let current_name = current.spec.as_ref().map_or("", |s| &s.name);
        if spec.name != current_name {
            return Err(Status::invalid_argument(format!(
                "renaming services is not supported (service {current_name:?})"
            )));
        }
        if let Some(old) = current.spec.as_ref() {
            validate::spec_change(old, &spec).map_err(spec_status)?;
        }
        check_query_policy(&m, current.spec.as_deref(), &spec).await?;
        registry_auth::keep_stored(current.spec.as_deref(), &mut spec);
        // The copy read from the store becomes the update: no further copy of the service
        // (this is the control API's hottest write).
        let mut updated = current;
        let current_endpoint = updated.endpoint.take();
        let now = now_ms();
        let meta = updated.meta.get_or_insert_with(Default::default);
        meta.version = req.version;
        meta.updated_at_ms = now;
        if jobs::is_job(spec.mode()) {
            // A job has no rolling update: every change runs it again.
            updated.job_status =
                rollout::next_job_iteration(updated.job_status.as_ref(), &spec, now);
        } else if let Some(status) = rollout::status_for_update(&updated, &spec, req.rollback, now)
        {
            updated.update_status = Some(status);
        }
        updated.previous_spec = updated.spec.replace(spec);
        let id = updated.id.clone();
        endpoints::propose_with_endpoint(&m, updated, current_endpoint.as_ref(), |s| {
            Action::UpdateService(s.into())
        })
        .await?;
        let answer = m
            .store
            .view(|st| st.services.get(&id).map(update_answer))
            .ok_or_else(|| Status::not_found(format!("service {id} was removed meanwhile")))?;
        Ok(Response::new(answer))
    }

    async fn remove_service(
        &self,
        request: Request<ServiceRef>,
    ) -> Result<Response<Empty>, Status> {
        let m = self.active()?;
        forward!(m, request, remove_service);
        let key = request.into_inner().service;
        // The service and the shutdown of its tasks land in one entry: no task outlives its
        // service with a desired state of RUNNING.
        let actions = m.store.view(|st| {
            let s = find_service(st, &key)?;
            let mut actions = vec![act(Action::DeleteService(s.id.clone()))];
            actions.extend(
                st.tasks_of_service(&s.id)
                    .filter(|t| t.desired() <= TaskState::Running)
                    .map(|t| {
                        act(Action::SetTaskDesiredState(TaskDesiredState {
                            task_id: t.id.clone(),
                            desired_state: TaskState::Shutdown as i32,
                            timestamp_ms: crate::ids::now_ms(),
                        }))
                    }),
            );
            Ok::<_, Status>(actions)
        })?;
        m.store.propose(actions).await.map_err(store_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let m = self.active()?;
        forward!(m, request, list_tasks);
        m.linearizable().await?;
        let req = request.into_inner();
        let resp = m.store.view(|st| {
            let service_id = if req.service.is_empty() {
                None
            } else {
                Some(find_service(st, &req.service)?.id.clone())
            };
            let node_id = if req.node.is_empty() {
                None
            } else {
                Some(find_node(st, &req.node, &m.node_id)?.id)
            };
            // A service's tasks through the store's index, not a walk of every task.
            let candidates: Box<dyn Iterator<Item = &Task>> = match &service_id {
                Some(id) => Box::new(st.tasks_of_service(id)),
                None => Box::new(st.tasks.values()),
            };
            let tasks = candidates
                .filter(|t| node_id.as_ref().is_none_or(|n| &t.node_id == n))
                .filter(|t| !req.desired_running_only || t.desired() <= TaskState::Running)
                .map(|t| Task {
                    registry_auth: None,
                    ..t.clone()
                })
                .collect();
            let node_names = st
                .nodes
                .values()
                .map(|n| {
                    let host = n.description.as_ref().map_or("", |d| &d.hostname);
                    (n.id.clone(), host.to_string())
                })
                .collect();
            Ok::<_, Status>(ListTasksResponse { tasks, node_names })
        })?;
        Ok(Response::new(resp))
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<Node>, Status> {
        let m = self.active()?;
        forward!(m, request, update_node);
        Ok(Response::new(
            nodes::update(&m, request.into_inner()).await?,
        ))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let m = self.active()?;
        forward!(m, request, remove_node);
        nodes::remove(&m, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn create_network(
        &self,
        request: Request<CreateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let m = self.active()?;
        forward!(m, request, create_network);
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("no network spec given"))?;
        Ok(Response::new(networks::create(&m, spec).await?))
    }

    async fn list_networks(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let m = self.active()?;
        forward!(m, request, list_networks);
        m.linearizable().await?;
        let networks = m.store.view(networks::list);
        Ok(Response::new(ListNetworksResponse { networks }))
    }

    async fn get_network(&self, request: Request<NetworkRef>) -> Result<Response<Network>, Status> {
        let m = self.active()?;
        forward!(m, request, get_network);
        m.linearizable().await?;
        let key = request.into_inner().network;
        Ok(Response::new(m.store.view(|st| networks::find(st, &key))?))
    }

    async fn remove_network(
        &self,
        request: Request<NetworkRef>,
    ) -> Result<Response<Empty>, Status> {
        let m = self.active()?;
        forward!(m, request, remove_network);
        networks::remove(&m, &request.into_inner().network).await?;
        Ok(Response::new(Empty {}))
    }

    async fn get_unlock_key(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        let m = self.active()?;
        forward!(m, request, get_unlock_key);
        m.linearizable().await?;
        Ok(Response::new(cluster::unlock_key(&m)?))
    }

    async fn update_cluster(
        &self,
        request: Request<UpdateClusterRequest>,
    ) -> Result<Response<Empty>, Status> {
        let m = self.active()?;
        forward!(m, request, update_cluster);
        cluster::update_settings(&m, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn create_secret(
        &self,
        request: Request<CreateSecretRequest>,
    ) -> Result<Response<Secret>, Status> {
        let m = self.active()?;
        forward!(m, request, create_secret);
        let spec = request.into_inner().spec.unwrap_or_default();
        Ok(Response::new(secrets::create_secret(&m, spec).await?))
    }

    async fn list_secrets(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        let m = self.active()?;
        forward!(m, request, list_secrets);
        m.linearizable().await?;
        let secrets = m.store.view(secrets::list);
        Ok(Response::new(ListSecretsResponse { secrets }))
    }

    async fn get_secret(&self, request: Request<SecretRef>) -> Result<Response<Secret>, Status> {
        let m = self.active()?;
        forward!(m, request, get_secret);
        m.linearizable().await?;
        let key = request.into_inner().secret;
        Ok(Response::new(m.store.view(|st| secrets::find(st, &key))?))
    }

    async fn remove_secret(&self, request: Request<SecretRef>) -> Result<Response<Empty>, Status> {
        let m = self.active()?;
        forward!(m, request, remove_secret);
        secrets::remove::<Secret>(&m, &request.into_inner().secret).await?;
        Ok(Response::new(Empty {}))
    }

    async fn create_config(
        &self,
        request: Request<CreateConfigRequest>,
    ) -> Result<Response<Config>, Status> {
        let m = self.active()?;
        forward!(m, request, create_config);
        let spec = request.into_inner().spec.unwrap_or_default();
        Ok(Response::new(secrets::create_config(&m, spec).await?))
    }

    async fn list_configs(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListConfigsResponse>, Status> {
        let m = self.active()?;
        forward!(m, request, list_configs);
        m.linearizable().await?;
        let configs = m.store.view(secrets::list);
        Ok(Response::new(ListConfigsResponse { configs }))
    }

    async fn get_config(&self, request: Request<ConfigRef>) -> Result<Response<Config>, Status> {
        let m = self.active()?;
        forward!(m, request, get_config);
        m.linearizable().await?;
        let key = request.into_inner().config;
        Ok(Response::new(m.store.view(|st| secrets::find(st, &key))?))
    }

    async fn remove_config(&self, request: Request<ConfigRef>) -> Result<Response<Empty>, Status> {
        let m = self.active()?;
        forward!(m, request, remove_config);
        secrets::remove::<Config>(&m, &request.into_inner().config).await?;
        Ok(Response::new(Empty {}))
    }

    type ServiceLogsStream = LogStream;

    async fn service_logs(
        &self,
        request: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let m = self.active()?;
        if let Some(ch) = m.leader.forward()? {
            let stream = ControlClient::new(ch)
                .service_logs(request.into_inner())
                .await?
                .into_inner();
            return Ok(Response::new(Box::pin(stream)));
        }
        service_logs::service_logs(&m.store, self.logs.clone(), request.into_inner())
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_id_name_and_prefix() {
        let mut st = StoreState::default();
        for (id, name) in [("abc111", "web"), ("abd222", "db")] {
            st.services.insert(
                id.into(),
                Service {
                    id: id.into(),
                    spec: Some(Box::new(ServiceSpec {
                        name: name.into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            );
        }
        assert_eq!(find_service(&st, "web").unwrap().id, "abc111");
        assert_eq!(find_service(&st, "abd").unwrap().id, "abd222");
        assert_eq!(
            find_service(&st, "ab").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            find_service(&st, "zz").unwrap_err().code(),
            tonic::Code::NotFound
        );
    }

    #[test]
    fn an_update_answers_the_stored_service_without_its_previous_spec_or_credentials() {
        let spec = |image: &str| {
            Some(Box::new(ServiceSpec {
                name: "web".into(),
                registry_auth: Some(Default::default()),
                container: Some(shoal_proto::ContainerSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
        };
        let stored = Service {
            id: "abc111".into(),
            meta: Some(shoal_proto::Meta {
                version: 7,
                ..Default::default()
            }),
            spec: spec("busybox:2"),
            previous_spec: spec("busybox:1"),
            ..Default::default()
        };
        let answer = update_answer(&stored);
        assert_eq!(answer.id, "abc111");
        assert_eq!(answer.meta.map(|m| m.version), Some(7));
        assert!(answer.previous_spec.is_none());
        let spec = answer.spec.expect("the answer carries the new spec");
        assert!(
            spec.registry_auth.is_none(),
            "credentials never leave the store"
        );
        assert_eq!(
            spec.container.map(|c| c.image),
            Some("busybox:2".to_string())
        );
    }
}
