//! A small in-process fake of the daemon's API on a Unix socket: canned answers, a fake
//! orchestrator (one task per slot) and tasks that advance one state per `ListTasks` poll, so
//! that the CLI's client side (tables, progress, errors) can be tested without containerd.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use shoal_proto::{
    control_server::{Control, ControlServer},
    daemon_server::{Daemon, DaemonServer},
    CreateNetworkRequest, CreateServiceRequest, Empty, GetNodeRequest, Image, ImageChunk,
    InfoResponse, JoinTokenRequest, JoinTokenResponse, ListImagesResponse, ListNetworksResponse,
    ListNodesResponse, ListServicesResponse, ListTasksRequest, ListTasksResponse,
    LoadImageResponse, LogMessage, ManagerStatus, Meta, Network, NetworkRef, Node, NodeDescription,
    NodeRole, NodeState, RemoveNodeRequest, Service, ServiceLogsRequest, ServiceRef,
    ServiceSummary, SwarmInitRequest, SwarmInitResponse, SwarmJoinRequest, SwarmLeaveRequest, Task,
    TaskState, TaskStatus, UpdateNodeRequest, UpdateServiceRequest,
};
use tonic::{Request, Response, Status};

use super::{run, shoal};

/// The one node the fake swarm has.
pub const SELF_ID: &str = "node1node1node1node1node1";

/// What the fake daemon was asked and holds, for the tests to look at.
#[derive(Default)]
pub struct State {
    pub node_updates: Vec<UpdateNodeRequest>,
    pub services: Vec<Service>,
    tasks: Vec<Task>,
    pub loaded_bytes: usize,
    pub networks: Vec<Network>,
    /// Every network RPC received, as "create NAME", "list", "get KEY" or "remove KEY", so a
    /// test can tell that a refused command never reached the daemon.
    pub network_calls: Vec<String>,
    next: u32,
}

/// The fake's Control and Daemon services, sharing one [`State`].
#[derive(Clone, Default)]
pub struct Fake(pub Arc<Mutex<State>>);

fn id(prefix: &str, n: u32) -> String {
    format!("{prefix}{n:x<width$}", width = 25 - prefix.len())
}

fn self_node() -> Node {
    Node {
        id: SELF_ID.into(),
        role: NodeRole::Manager as i32,
        state: NodeState::Ready as i32,
        description: Some(NodeDescription {
            hostname: "node1".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            nano_cpus_count: 2,
            memory_bytes: 2 << 30,
            containerd_version: "1.7.24".into(),
            ..Default::default()
        }),
        addr: "10.0.0.1".into(),
        manager_status: Some(ManagerStatus {
            raft_id: 1,
            addr: "10.0.0.1:2377".into(),
            leader: true,
            reachability: "reachable".into(),
        }),
        ..Default::default()
    }
}

impl State {
    fn find(&self, key: &str) -> Result<usize, Status> {
        self.services
            .iter()
            .position(|s| s.id.starts_with(key) || s.spec.as_ref().is_some_and(|sp| sp.name == key))
            .ok_or_else(|| Status::not_found(format!("no such service: {key}")))
    }

    fn find_network(&self, key: &str) -> Result<usize, Status> {
        self.networks
            .iter()
            .position(|n| {
                n.spec.as_ref().is_some_and(|s| s.name == key)
                    || (!key.is_empty() && n.id.starts_with(key))
            })
            .ok_or_else(|| Status::not_found(format!("network {key} not found")))
    }

    fn new_task(&mut self, service: &Service, slot: u64) {
        self.next += 1;
        let spec = service.spec.clone().unwrap_or_default();
        self.tasks.push(Task {
            id: id("task", self.next),
            meta: Some(Meta {
                created_at_ms: now_ms(),
                ..Default::default()
            }),
            service_id: service.id.clone(),
            service_name: spec.name.clone(),
            slot,
            node_id: SELF_ID.into(),
            spec: spec.container.clone().map(Box::new),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: TaskState::New as i32,
                timestamp_ms: now_ms(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    /// The fake orchestrator: tasks for missing slots, extras shut down.
    fn reconcile(&mut self, index: usize) {
        let service = self.services[index].clone();
        let replicas = service.spec.as_ref().map_or(0, |s| s.replicas);
        for slot in 1..=replicas {
            if !self
                .tasks
                .iter()
                .any(|t| t.service_id == service.id && t.slot == slot)
            {
                self.new_task(&service, slot);
            }
        }
        for t in &mut self.tasks {
            if t.service_id == service.id && t.slot > replicas {
                t.desired_state = TaskState::Shutdown as i32;
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tonic::async_trait]
impl Control for Fake {
    async fn get_join_token(
        &self,
        r: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        let token = format!("SWMTKN-1-{}", r.into_inner().role);
        Ok(Response::new(JoinTokenResponse {
            join_command: format!("shoal swarm join --token {token} 10.0.0.1:2377"),
            token,
        }))
    }

    async fn list_nodes(&self, _: Request<Empty>) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(ListNodesResponse {
            nodes: vec![self_node()],
            self_id: SELF_ID.into(),
        }))
    }

    async fn get_node(&self, r: Request<GetNodeRequest>) -> Result<Response<Node>, Status> {
        let key = r.into_inner().node;
        if key == "self" || SELF_ID.starts_with(&key) || key == "node1" {
            return Ok(Response::new(self_node()));
        }
        Err(Status::not_found(format!("no such node: {key}")))
    }

    async fn create_service(
        &self,
        r: Request<CreateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        let mut st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        st.next += 1;
        let service = Service {
            id: id("svc", st.next),
            meta: Some(Meta {
                version: 1,
                created_at_ms: now_ms(),
                updated_at_ms: now_ms(),
            }),
            spec: r.into_inner().spec,
            previous_spec: None,
            autoscale_status: None,
            endpoint: None,
            update_status: None,
            job_status: None,
        };
        st.services.push(service.clone());
        let index = st.services.len() - 1;
        st.reconcile(index);
        Ok(Response::new(service))
    }

    async fn list_services(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        let services = st
            .services
            .iter()
            .map(|s| ServiceSummary {
                service: Some(s.clone()),
                running: st
                    .tasks
                    .iter()
                    .filter(|t| t.service_id == s.id && t.state() == TaskState::Running)
                    .count() as u64,
                desired: s.spec.as_ref().map_or(0, |sp| sp.replicas),
                completed: 0,
                job_total: 0,
            })
            .collect();
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn get_service(&self, r: Request<ServiceRef>) -> Result<Response<Service>, Status> {
        let st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        let i = st.find(&r.into_inner().service)?;
        Ok(Response::new(st.services[i].clone()))
    }

    async fn update_service(
        &self,
        r: Request<UpdateServiceRequest>,
    ) -> Result<Response<Service>, Status> {
        let req = r.into_inner();
        let mut st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        let i = st.find(&req.service)?;
        let version = st.services[i].meta.as_ref().map_or(0, |m| m.version);
        if version != req.version {
            return Err(Status::aborted("the service changed meanwhile; retry"));
        }
        st.services[i].spec = req.spec;
        st.services[i].meta = Some(Meta {
            version: version + 1,
            created_at_ms: 0,
            updated_at_ms: now_ms(),
        });
        st.reconcile(i);
        Ok(Response::new(st.services[i].clone()))
    }

    async fn remove_service(&self, r: Request<ServiceRef>) -> Result<Response<Empty>, Status> {
        let mut st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        let i = st.find(&r.into_inner().service)?;
        let removed = st.services.remove(i);
        st.tasks.retain(|t| t.service_id != removed.id);
        Ok(Response::new(Empty {}))
    }

    async fn update_node(&self, r: Request<UpdateNodeRequest>) -> Result<Response<Node>, Status> {
        let req = r.into_inner();
        if req.node != "node1" && !SELF_ID.starts_with(&req.node) {
            return Err(Status::not_found(format!("no such node: {}", req.node)));
        }
        let mut st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        st.node_updates.push(req);
        Ok(Response::new(self_node()))
    }

    async fn update_cluster(
        &self,
        _: Request<shoal_proto::UpdateClusterRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("the fake has no cluster settings"))
    }

    async fn get_unlock_key(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<shoal_proto::UnlockKeyResponse>, Status> {
        Err(Status::unimplemented("the fake has no unlock key"))
    }

    async fn create_secret(
        &self,
        _: Request<shoal_proto::CreateSecretRequest>,
    ) -> Result<Response<shoal_proto::Secret>, Status> {
        Err(Status::unimplemented("the fake has no secrets"))
    }

    async fn list_secrets(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<shoal_proto::ListSecretsResponse>, Status> {
        Err(Status::unimplemented("the fake has no secrets"))
    }

    async fn get_secret(
        &self,
        _: Request<shoal_proto::SecretRef>,
    ) -> Result<Response<shoal_proto::Secret>, Status> {
        Err(Status::unimplemented("the fake has no secrets"))
    }

    async fn remove_secret(
        &self,
        _: Request<shoal_proto::SecretRef>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("the fake has no secrets"))
    }

    async fn create_config(
        &self,
        _: Request<shoal_proto::CreateConfigRequest>,
    ) -> Result<Response<shoal_proto::Config>, Status> {
        Err(Status::unimplemented("the fake has no configs"))
    }

    async fn list_configs(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<shoal_proto::ListConfigsResponse>, Status> {
        Err(Status::unimplemented("the fake has no configs"))
    }

    async fn get_config(
        &self,
        _: Request<shoal_proto::ConfigRef>,
    ) -> Result<Response<shoal_proto::Config>, Status> {
        Err(Status::unimplemented("the fake has no configs"))
    }

    async fn remove_config(
        &self,
        _: Request<shoal_proto::ConfigRef>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("the fake has no configs"))
    }

    async fn remove_node(&self, r: Request<RemoveNodeRequest>) -> Result<Response<Empty>, Status> {
        let req = r.into_inner();
        if req.force {
            return Ok(Response::new(Empty {}));
        }
        Err(Status::failed_precondition(format!(
            "node {} is not down and can't be removed; use --force",
            req.node
        )))
    }

    async fn list_tasks(
        &self,
        r: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let req = r.into_inner();
        let mut st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        // Each poll moves every live task one step: New → Pending → … → Running, or Rejected
        // for the image this fake does not have.
        for t in &mut st.tasks {
            let state = t.state();
            let image = t.spec.as_ref().map_or("", |c| c.image.as_str()).to_string();
            let Some(status) = t.status.as_mut() else {
                continue;
            };
            if state.is_terminal() || state == TaskState::Running {
                continue;
            }
            if image.contains("/nope:") && state == TaskState::Assigned {
                status.state = TaskState::Rejected as i32;
                status.err = format!("No such image: {image}");
                t.desired_state = TaskState::Shutdown as i32;
                continue;
            }
            let next = match state {
                TaskState::New => TaskState::Pending,
                TaskState::Pending => TaskState::Assigned,
                TaskState::Assigned => TaskState::Preparing,
                TaskState::Preparing => TaskState::Starting,
                _ => TaskState::Running,
            };
            status.state = next as i32;
            status.timestamp_ms = now_ms();
        }
        let tasks = st
            .tasks
            .iter()
            .filter(|t| req.service.is_empty() || t.service_id == req.service)
            .filter(|t| !req.desired_running_only || t.desired() == TaskState::Running)
            .cloned()
            .collect();
        Ok(Response::new(ListTasksResponse {
            tasks,
            node_names: HashMap::from([(SELF_ID.to_string(), "node1".to_string())]),
        }))
    }

    async fn create_network(
        &self,
        r: Request<CreateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let mut st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        let spec = r.into_inner().spec.unwrap_or_default();
        st.network_calls.push(format!("create {}", spec.name));
        if st
            .networks
            .iter()
            .any(|n| n.spec.as_ref().is_some_and(|s| s.name == spec.name))
        {
            return Err(Status::already_exists(format!(
                "network with name {} already exists",
                spec.name
            )));
        }
        st.next += 1;
        let n = st.next;
        // The fake allocator: the user's subnet and gateway, else 10.0.N.0/24.
        let or = |given: &str, default: String| {
            if given.is_empty() {
                default
            } else {
                given.to_string()
            }
        };
        let network = Network {
            id: id("net", n),
            meta: Some(Meta {
                version: 1,
                created_at_ms: now_ms(),
                updated_at_ms: now_ms(),
            }),
            subnet: or(&spec.subnet, format!("10.0.{n}.0/24")),
            gateway: or(&spec.gateway, format!("10.0.{n}.1")),
            vni: 4096 + n,
            spec: Some(spec),
        };
        st.networks.push(network.clone());
        Ok(Response::new(network))
    }

    async fn list_networks(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let mut st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        st.network_calls.push("list".into());
        Ok(Response::new(ListNetworksResponse {
            networks: st.networks.clone(),
        }))
    }

    async fn get_network(&self, r: Request<NetworkRef>) -> Result<Response<Network>, Status> {
        let key = r.into_inner().network;
        let mut st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        st.network_calls.push(format!("get {key}"));
        let i = st.find_network(&key)?;
        Ok(Response::new(st.networks[i].clone()))
    }

    async fn remove_network(&self, r: Request<NetworkRef>) -> Result<Response<Empty>, Status> {
        let key = r.into_inner().network;
        let mut st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        st.network_calls.push(format!("remove {key}"));
        let i = st.find_network(&key)?;
        st.networks.remove(i);
        Ok(Response::new(Empty {}))
    }

    type ServiceLogsStream = tokio_stream::Iter<std::vec::IntoIter<Result<LogMessage, Status>>>;

    async fn service_logs(
        &self,
        r: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let req = r.into_inner();
        let st = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        let i = st.find(&req.service)?;
        let service = &st.services[i];
        let msg = |stream: &str, line: &[u8]| {
            Ok(LogMessage {
                task_id: "abcdefghijklmnopqrstuvwxy".into(),
                slot: 1,
                node_id: SELF_ID.into(),
                stream: stream.into(),
                timestamp_ms: 1_700_000_000_000,
                line: line.to_vec(),
                service_name: service
                    .spec
                    .as_ref()
                    .map_or(String::new(), |s| s.name.clone()),
            })
        };
        let messages = vec![msg("stdout", b"hello\n"), msg("stderr", b"oops")];
        Ok(Response::new(tokio_stream::iter(messages)))
    }
}

#[tonic::async_trait]
impl Daemon for Fake {
    async fn info(&self, _: Request<Empty>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            node_id: SELF_ID.into(),
            swarm_state: "active".into(),
            is_manager: true,
            cluster_id: "cluster1".into(),
            managers: 1,
            nodes: 1,
            node_addr: "10.0.0.1".into(),
            manager_addrs: vec!["10.0.0.1:2377".into()],
            shoal_version: "0.1.0".into(),
            ..Default::default()
        }))
    }

    async fn swarm_init(
        &self,
        r: Request<SwarmInitRequest>,
    ) -> Result<Response<SwarmInitResponse>, Status> {
        let req = r.into_inner();
        if req.listen_addr != "0.0.0.0:2377" {
            return Err(Status::invalid_argument(format!(
                "unexpected listen address {}",
                req.listen_addr
            )));
        }
        Ok(Response::new(SwarmInitResponse {
            node_id: SELF_ID.into(),
            worker_join_command: "shoal swarm join --token SWMTKN-1-worker 10.0.0.1:2377".into(),
            unlock_key: String::new(),
        }))
    }

    async fn swarm_leave(&self, r: Request<SwarmLeaveRequest>) -> Result<Response<Empty>, Status> {
        if !r.into_inner().force {
            return Err(Status::failed_precondition(
                "this node is the last manager: leaving loses the swarm; use `shoal swarm leave --force`",
            ));
        }
        Ok(Response::new(Empty {}))
    }

    async fn swarm_unlock(
        &self,
        _: Request<shoal_proto::SwarmUnlockRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::failed_precondition("swarm is not locked"))
    }

    async fn swarm_join(&self, r: Request<SwarmJoinRequest>) -> Result<Response<Empty>, Status> {
        let req = r.into_inner();
        if req.token != "SWMTKN-1-worker" || req.remote_addr != "10.0.0.1:2377" {
            return Err(Status::invalid_argument(format!(
                "unexpected join {} at {}",
                req.token, req.remote_addr
            )));
        }
        Ok(Response::new(Empty {}))
    }

    async fn load_image(
        &self,
        r: Request<tonic::Streaming<ImageChunk>>,
    ) -> Result<Response<LoadImageResponse>, Status> {
        let mut stream = r.into_inner();
        let mut total = 0;
        while let Some(chunk) = stream.message().await? {
            if chunk.data.len() > 1024 * 1024 {
                return Err(Status::invalid_argument("chunk over 1 MiB"));
            }
            total += chunk.data.len();
        }
        self.0
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .loaded_bytes = total;
        Ok(Response::new(LoadImageResponse {
            names: vec!["docker.io/library/busybox:latest".into()],
        }))
    }

    async fn list_images(&self, _: Request<Empty>) -> Result<Response<ListImagesResponse>, Status> {
        Ok(Response::new(ListImagesResponse {
            images: vec![Image {
                name: "docker.io/library/busybox:latest".into(),
                digest: format!("sha256:6fd955f66c23{}", "0".repeat(52)),
                size: 4_261_000,
                created_at_ms: now_ms() - 3 * 3_600_000,
            }],
        }))
    }

    // Volumes are the node's own files: the end-to-end tests cover them on real daemons.
    async fn create_volume(
        &self,
        _: Request<shoal_proto::CreateVolumeRequest>,
    ) -> Result<Response<shoal_proto::Volume>, Status> {
        Err(Status::unimplemented("the fake daemon keeps no volumes"))
    }

    async fn list_volumes(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<shoal_proto::ListVolumesResponse>, Status> {
        Err(Status::unimplemented("the fake daemon keeps no volumes"))
    }

    async fn inspect_volume(
        &self,
        _: Request<shoal_proto::VolumeRef>,
    ) -> Result<Response<shoal_proto::Volume>, Status> {
        Err(Status::unimplemented("the fake daemon keeps no volumes"))
    }

    async fn remove_volume(
        &self,
        _: Request<shoal_proto::RemoveVolumeRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("the fake daemon keeps no volumes"))
    }

    async fn registry_login(
        &self,
        _: Request<shoal_proto::RegistryAuth>,
    ) -> Result<Response<shoal_proto::RegistryLoginResponse>, Status> {
        Err(Status::unimplemented("the fake daemon reaches no registry"))
    }
}

/// A fake daemon on a socket in a temp dir, served from its own thread for the test's life.
pub struct FakeDaemon {
    pub fake: Fake,
    /// `unix://…/shoal.sock`, as given to `-H`.
    pub host: String,
    _dir: tempfile::TempDir,
}

impl FakeDaemon {
    pub fn start() -> FakeDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = dir.path().join("shoal.sock");
        let fake = Fake::default();
        let served = fake.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sock = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
                let _ = ready_tx.send(());
                let _ = tonic::transport::Server::builder()
                    .add_service(ControlServer::new(served.clone()))
                    .add_service(DaemonServer::new(served))
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                    .await;
            });
        });
        ready_rx.recv().expect("fake daemon started");
        FakeDaemon {
            fake,
            host: format!("unix://{}", path.display()),
            _dir: dir,
        }
    }

    /// Runs `shoal -H FAKE ARGS`: (exit code, stdout, stderr).
    pub fn shoal(&self, args: &[&str]) -> (i32, String, String) {
        run(shoal().args(["-H", &self.host]).args(args))
    }
}
