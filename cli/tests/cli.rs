//! The `shoal` binary as a user runs it, with no real daemon: the error paths that need none,
//! and the client side of each command against a small in-process fake of the daemon's API
//! (canned answers; tasks advance one state per `ListTasks` poll). End-to-end behaviour against
//! a real daemon is tested in the `tests` crate.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use shoal_proto::{
    control_server::{Control, ControlServer},
    daemon_server::{Daemon, DaemonServer},
    CreateServiceRequest, Empty, GetNodeRequest, Image, ImageChunk, InfoResponse, JoinTokenRequest,
    JoinTokenResponse, ListImagesResponse, ListNodesResponse, ListServicesResponse,
    ListTasksRequest, ListTasksResponse, LoadImageResponse, LogMessage, ManagerStatus, Meta, Node,
    NodeDescription, NodeRole, NodeState, RemoveNodeRequest, Service, ServiceLogsRequest,
    ServiceRef, ServiceSummary, SwarmInitRequest, SwarmInitResponse, SwarmJoinRequest,
    SwarmLeaveRequest, Task, TaskState, TaskStatus, UpdateNodeRequest, UpdateServiceRequest,
};
use tonic::{Request, Response, Status};

fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env_remove("SHOAL_HOST");
    cmd.stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run shoal");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Without any daemon
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_daemon_says_how_to_start_it() {
    let (code, stdout, stderr) =
        run(shoal().args(["-H", "unix:///nonexistent/shoal.sock", "service", "ls"]));
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "Cannot connect to the Shoal daemon at unix:///nonexistent/shoal.sock. Is the shoal daemon running? (start it with `shoal daemon`)\n"
    );
}

#[test]
fn host_comes_from_the_environment() {
    let (code, _, stderr) = run(shoal()
        .env("SHOAL_HOST", "unix:///nonexistent/from-env.sock")
        .arg("info"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("at unix:///nonexistent/from-env.sock."),
        "{stderr}"
    );
    // -H wins over the environment.
    let (_, _, stderr) = run(shoal()
        .env("SHOAL_HOST", "unix:///nonexistent/from-env.sock")
        .args(["-H", "unix:///nonexistent/flag.sock", "info"]));
    assert!(
        stderr.contains("at unix:///nonexistent/flag.sock."),
        "{stderr}"
    );
}

#[test]
fn stale_socket_is_cannot_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let host = format!("unix://{}", path.display());
    let (code, _, stderr) = run(shoal().args(["-H", &host, "node", "ls"]));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("Cannot connect to the Shoal daemon at"),
        "{stderr}"
    );
}

#[test]
fn non_unix_host_is_refused() {
    let (code, _, stderr) = run(shoal().args(["-H", "tcp://127.0.0.1:2375", "info"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("unix sockets"), "{stderr}");
}

#[test]
fn version_prints_the_client_even_without_daemon() {
    let (code, stdout, stderr) = run(shoal().args(["-H", "unix:///nonexistent/s.sock", "version"]));
    assert_eq!(code, 1);
    assert!(stdout.starts_with("Client:\n Version:    "), "{stdout}");
    assert!(stderr.starts_with("Cannot connect"), "{stderr}");
    let (code, stdout, _) = run(shoal().arg("-v"));
    assert_eq!(code, 0);
    assert!(stdout.starts_with("shoal "), "{stdout}");
}

#[test]
fn usage_errors_are_clear() {
    let (code, _, stderr) = run(shoal().args([
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "-1",
        "busybox",
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid replicas value \"-1\": must be a non-negative integer"),
        "{stderr}"
    );
    let (code, _, stderr) = run(shoal().args(["service", "scale", "web"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid scale specifier \"web\""),
        "{stderr}"
    );
    let (code, _, stderr) = run(shoal().args(["service", "scale", "web=abc"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid replicas value \"abc\""),
        "{stderr}"
    );
    let (code, _, stderr) = run(shoal().args([
        "service",
        "create",
        "--name",
        "web",
        "--restart-delay",
        "soon",
        "busybox",
    ]));
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid duration \"soon\""), "{stderr}");
}

#[test]
fn local_validation_happens_before_connecting() {
    let nowhere = ["-H", "unix:///nonexistent/s.sock"];
    let (code, _, stderr) = run(shoal()
        .args(nowhere)
        .args(["service", "create", "--name", "web", "Busybox"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("must be lowercase"), "{stderr}");
    let (code, _, stderr) =
        run(shoal()
            .args(nowhere)
            .args(["image", "load", "-i", "/nonexistent/image.tar"]));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("cannot open /nonexistent/image.tar"),
        "{stderr}"
    );
}

#[test]
fn log_driver_is_hidden_and_runs_without_a_runtime() {
    let (_, help, _) = run(shoal().arg("--help"));
    assert!(!help.contains("log-driver"), "{help}");
    for cmd in ["daemon", "info", "swarm", "node", "service", "image"] {
        assert!(help.contains(cmd), "{cmd} missing from {help}");
    }
    // No fds 3/4 from a shim: the driver itself explains.
    let (code, _, stderr) = run(shoal().args(["__log-driver", "--bogus", "x"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("__log-driver"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Against a fake daemon
// ---------------------------------------------------------------------------------------------

const SELF_ID: &str = "node1node1node1node1node1";

#[derive(Default)]
struct State {
    node_updates: Vec<UpdateNodeRequest>,
    services: Vec<Service>,
    tasks: Vec<Task>,
    loaded_bytes: usize,
    next: u32,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

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
            spec: spec.container.clone(),
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
}

/// A fake daemon on a socket in a temp dir, served from its own thread for the test's life.
struct FakeDaemon {
    fake: Fake,
    host: String,
    _dir: tempfile::TempDir,
}

impl FakeDaemon {
    fn start() -> FakeDaemon {
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

    fn shoal(&self, args: &[&str]) -> (i32, String, String) {
        run(shoal().args(["-H", &self.host]).args(args))
    }
}

fn write_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(&vec![42u8; len]).expect("write");
    path
}

#[test]
fn swarm_commands() {
    let d = FakeDaemon::start();
    let (code, stdout, _) = d.shoal(&["swarm", "init"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with(&format!(
        "Swarm initialized: current node ({SELF_ID}) is now a manager.\n\nTo add a worker to this swarm, run the following command:\n\n    shoal swarm join --token SWMTKN-1-worker 10.0.0.1:2377\n\n"
    )), "{stdout}");
    let (code, stdout, _) = d.shoal(&["swarm", "join-token", "-q", "manager"]);
    assert_eq!((code, stdout.as_str()), (0, "SWMTKN-1-manager\n"));
    let (_, stdout, _) = d.shoal(&["swarm", "join-token", "worker"]);
    assert_eq!(
        stdout,
        "To add a worker to this swarm, run the following command:\n\n    shoal swarm join --token SWMTKN-1-worker 10.0.0.1:2377\n\n"
    );
    let (code, _, stderr) = d.shoal(&["swarm", "leave"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "Error response from daemon: this node is the last manager: leaving loses the swarm; use `shoal swarm leave --force`\n"
    );
    let (code, stdout, _) = d.shoal(&["swarm", "leave", "--force"]);
    assert_eq!((code, stdout.as_str()), (0, "Node left the swarm.\n"));
    let (_, stdout, _) = d.shoal(&["info"]);
    assert!(
        stdout.contains(" Swarm: active\n  NodeID: node1"),
        "{stdout}"
    );
}

#[test]
fn node_changes() {
    let d = FakeDaemon::start();
    let (code, stdout, _) = d.shoal(&[
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "zone=a",
        "node1",
    ]);
    assert_eq!((code, stdout.as_str()), (0, "node1\n"));
    let (code, _, stderr) = d.shoal(&["node", "update", "node1"]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("nothing to update"), "{stderr}");
    let (code, stdout, stderr) = d.shoal(&["node", "promote", "node1", "ghost"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "Node node1 promoted to a manager in the swarm.\n");
    assert_eq!(stderr, "Error response from daemon: no such node: ghost\n");
    let (_, stdout, _) = d.shoal(&["node", "demote", "node1"]);
    assert_eq!(stdout, "Manager node1 demoted in the swarm.\n");
    let updates = d.fake.0.lock().expect("lock").node_updates.clone();
    assert_eq!(updates[0].availability, "drain");
    assert_eq!(
        updates[0].label_add.get("zone").map(String::as_str),
        Some("a")
    );
    assert_eq!(updates[1].role, "manager");
    assert_eq!(updates[2].role, "worker");
    let (code, _, stderr) = d.shoal(&["node", "rm", "node2"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("use --force"), "{stderr}");
    let (code, stdout, _) = d.shoal(&["node", "rm", "-f", "node2"]);
    assert_eq!((code, stdout.as_str()), (0, "node2\n"));

    let (code, stdout, stderr) = d.shoal(&[
        "swarm",
        "join",
        "--token",
        "SWMTKN-1-worker",
        "10.0.0.1:2377",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // The fake's Info says it is a manager.
    assert_eq!(stdout, "This node joined a swarm as a manager.\n");
}

#[test]
fn node_commands() {
    let d = FakeDaemon::start();
    let (code, stdout, _) = d.shoal(&["node", "ls"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        format!("ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n{SELF_ID} *   node1      Ready     Active         Leader           1.7.24\n")
    );
    let (_, stdout, _) = d.shoal(&["node", "ls", "-q"]);
    assert_eq!(stdout, format!("{SELF_ID}\n"));
    let (code, stdout, stderr) = d.shoal(&["node", "inspect", "self", "nope"]);
    assert_eq!(code, 1);
    let parsed: serde_json::Value = serde_json::from_str(&stdout).expect("json array");
    assert_eq!(parsed[0]["role"], "manager");
    assert_eq!(stderr, "Error response from daemon: no such node: nope\n");
    let (_, stdout, _) = d.shoal(&["node", "inspect", "--pretty", "self"]);
    assert!(
        stdout.contains("Hostname:") && stdout.contains(" Memory:") && stdout.contains("2GiB"),
        "{stdout}"
    );
}

#[test]
fn service_lifecycle() {
    let d = FakeDaemon::start();
    let (code, stdout, stderr) = d.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "busybox",
        "sleep",
        "1d",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let mut lines = stdout.lines();
    let id = lines.next().unwrap_or_default().to_string();
    assert_eq!(id.len(), 25);
    let rest: Vec<&str> = lines.collect();
    assert_eq!(
        rest.first().copied(),
        Some("overall progress: 0 out of 2 tasks")
    );
    assert!(
        rest.contains(&"1/2: preparing [=================================>                 ]"),
        "{stdout}"
    );
    assert!(
        rest.contains(&"overall progress: 2 out of 2 tasks"),
        "{stdout}"
    );
    assert_eq!(rest.last().copied(), Some("verify: Service converged"));

    let created = d.fake.0.lock().expect("lock").services[0].clone();
    let c = created.spec.and_then(|s| s.container).unwrap_or_default();
    assert_eq!(c.image, "docker.io/library/busybox:latest");
    assert_eq!(c.args, vec!["sleep", "1d"]);

    let (_, stdout, _) = d.shoal(&["service", "ls"]);
    assert_eq!(
        stdout,
        format!(
            "ID             NAME      MODE         REPLICAS   IMAGE            PORTS\n{}   web       replicated   2/2        busybox:latest\n",
            &id[..12]
        )
    );
    let (_, stdout, _) = d.shoal(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
    assert_eq!(stdout, "web 2/2\n");

    let (code, stdout, _) = d.shoal(&["service", "scale", "web=3", "-d"]);
    assert_eq!((code, stdout.as_str()), (0, "web scaled to 3\n"));
    let (code, stdout, _) = d.shoal(&["service", "scale", "web=1"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("web scaled to 1\n"), "{stdout}");
    assert!(stdout.ends_with("verify: Service converged\n"), "{stdout}");

    let (_, stdout, _) = d.shoal(&["service", "ps", "web"]);
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with(
            "ID             NAME      IMAGE            NODE      DESIRED STATE   CURRENT STATE"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("web.1     busybox:latest   node1     Running         Running "),
        "{stdout}"
    );
    let (_, stdout, _) = d.shoal(&["service", "ps", "-q", "-f", "desired-state=running", "web"]);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    let (_, stdout, _) = d.shoal(&["service", "inspect", "web"]);
    let parsed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(parsed[0]["spec"]["restart"]["condition"], "any");
    let (_, stdout, _) = d.shoal(&["service", "inspect", "--pretty", "web"]);
    assert!(
        stdout.contains("Service Mode:") && stdout.contains(" Replicas:"),
        "{stdout}"
    );

    let (code, stdout, stderr) = d.shoal(&["service", "logs", "web"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "web.1.abcdefghijkl@node1    | hello\n");
    assert_eq!(stderr, "web.1.abcdefghijkl@node1    | oops\n");

    let (code, stdout, stderr) = d.shoal(&["service", "rm", "nope", "web"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "web\n");
    assert_eq!(
        stderr,
        "Error response from daemon: no such service: nope\n"
    );
    let (_, stdout, _) = d.shoal(&["service", "ls", "-q"]);
    assert_eq!(stdout, "");
}

#[test]
fn create_stops_at_a_missing_image() {
    let d = FakeDaemon::start();
    let (code, stdout, stderr) = d.shoal(&["service", "create", "--name", "bad", "nope"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("1/1: No such image: docker.io/library/nope:latest"),
        "{stdout}"
    );
    assert!(
        stderr.starts_with("service bad cannot converge: task bad.1 was rejected: No such image: docker.io/library/nope:latest"),
        "{stderr}"
    );
    let (code, stdout, _) = d.shoal(&["service", "create", "-d", "--name", "bad2", "nope"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1, "-d prints only the ID: {stdout}");
}

#[test]
fn image_commands() {
    let d = FakeDaemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 2 * 1024 * 1024 + 12_345;
    let tar = write_file(dir.path(), "busybox.tar", len);
    let (code, stdout, stderr) =
        d.shoal(&["image", "load", "-i", tar.to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "Loaded image: busybox:latest\n");
    assert_eq!(d.fake.0.lock().expect("lock").loaded_bytes, len);

    // From stdin.
    let file = std::fs::File::open(&tar).expect("open");
    let (code, stdout, _) = run(shoal().args(["-H", &d.host, "image", "load"]).stdin(file));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "Loaded image: busybox:latest\n")
    );

    let (_, stdout, _) = d.shoal(&["image", "ls"]);
    assert_eq!(
        stdout,
        "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE\nbusybox      latest    6fd955f66c23   3 hours ago   4.26MB\n"
    );
}
