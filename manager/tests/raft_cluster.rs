//! Raft across managers over real gRPC on 127.0.0.1: forming a cluster by adding voters,
//! replication, leader failover, catch-up after a restart (from the log and from a snapshot),
//! linearizable reads, removing members and moving leadership, and recovering from lost quorum
//! with `force_new_cluster`.
//!
//! Each node is a Raft loop with its own data directory, a `GrpcTransport` and a `RaftService`
//! served on an ephemeral port; "killing" a node stops both, and restarting it reopens the same
//! directory on the same port.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_manager::raft::{
    self, GrpcTransport, Members, MembershipError, RaftConfig, RaftError, RaftHandle, RaftService,
};
use shoal_manager::store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

mod common;
use common::{create_service, create_service_padded, service_names, start_err};

const TICK: Duration = Duration::from_millis(20);
const ELECTION_TICKS: usize = 10;
/// Generous bound for anything that should take a few election timeouts.
const WAIT: Duration = Duration::from_secs(10);

struct Node {
    id: u64,
    addr: String,
    /// How the node runs; a restart reuses it (with `join` ignored, as the log is initialized).
    cfg: RaftConfig,
    store: Store,
    handle: RaftHandle,
    server: Option<Server>,
    /// Whether its Raft service refuses `StreamMessages` ([`Opts::calls_only`]).
    calls_only: bool,
}

/// Binds `addr`, retrying briefly: a port just released by a stopped node may linger.
async fn bind(addr: &str) -> TcpListener {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => {
                eprintln!("binding {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

type Server = (oneshot::Sender<()>, JoinHandle<()>);

/// What differs between the tests' clusters.
#[derive(Clone, Copy)]
struct Opts {
    snapshot_interval: u64,
    catch_up_timeout: Duration,
    /// Serve Raft as a manager from before `StreamMessages` did: that call is unimplemented.
    calls_only: bool,
}

const DEFAULT: Opts = Opts {
    snapshot_interval: 1000,
    catch_up_timeout: WAIT,
    calls_only: false,
};

/// Snapshots (and compaction) every 8 entries, so a few writes move the log past a node.
const FREQUENT_SNAPSHOTS: Opts = Opts {
    snapshot_interval: 8,
    ..DEFAULT
};

impl Node {
    /// Starts node `id` in `dir` on a fresh port; `join` starts it empty, waiting to be added.
    /// `known` are peers its transport knows before Raft tells it any (a joiner's leader).
    async fn start(id: u64, dir: &Path, join: bool, known: &[(u64, String)], opts: Opts) -> Node {
        let listener = bind("127.0.0.1:0").await;
        let addr = listener.local_addr().expect("local addr").to_string();
        let mut cfg = RaftConfig::new(dir, id);
        cfg.tick = TICK;
        cfg.election_ticks = ELECTION_TICKS;
        cfg.heartbeat_ticks = 2;
        cfg.snapshot_interval = opts.snapshot_interval;
        cfg.addr = addr.clone();
        cfg.join = join;
        cfg.catch_up_timeout = opts.catch_up_timeout;
        let (store, handle, server) = run(cfg.clone(), listener, known, opts.calls_only).await;
        Node {
            id,
            addr,
            cfg,
            calls_only: opts.calls_only,
            store,
            handle,
            server: Some(server),
        }
    }

    /// Stops the Raft loop and the server, as a crash or `shoal daemon` stopping would.
    async fn kill(&mut self) {
        self.handle.shutdown().await.expect("clean raft shutdown");
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(WAIT, server).await;
        }
    }

    /// Starts the node again from its data directory, on the same port.
    async fn restart(&mut self) {
        let listener = bind(&self.addr).await;
        self.restart_on(listener).await;
    }

    /// Starts the node again from its data directory, on the same port, as the only voter of
    /// a new cluster keeping its state (`swarm init --force-new-cluster`). The flag is for this
    /// start only: a later [`Node::restart`] starts normally.
    async fn restart_forcing_new_cluster(&mut self) {
        self.cfg.force_new_cluster = true;
        self.restart().await;
        self.cfg.force_new_cluster = false;
    }

    /// Starts the node again from its data directory, listening on `listener`.
    async fn restart_on(&mut self, listener: TcpListener) {
        self.addr = listener.local_addr().expect("local addr").to_string();
        self.cfg.addr = self.addr.clone();
        let (store, handle, server) = run(self.cfg.clone(), listener, &[], self.calls_only).await;
        self.store = store;
        self.handle = handle;
        self.server = Some(server);
    }
}

/// A manager's Raft service as it was before `StreamMessages`: tonic answers a call that a
/// server does not know with `Unimplemented`, which this one answers too.
struct CallsOnly(RaftService);

#[tonic::async_trait]
impl shoal_proto::raft_server::Raft for CallsOnly {
    async fn process_messages(
        &self,
        request: tonic::Request<shoal_proto::RaftBatch>,
    ) -> Result<tonic::Response<shoal_proto::Empty>, tonic::Status> {
        self.0.process_messages(request).await
    }

    type StreamMessagesStream = tokio_stream::Empty<Result<shoal_proto::Empty, tonic::Status>>;

    async fn stream_messages(
        &self,
        _: tonic::Request<tonic::Streaming<shoal_proto::RaftBatch>>,
    ) -> Result<tonic::Response<Self::StreamMessagesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("StreamMessages"))
    }

    async fn stream_snapshot(
        &self,
        request: tonic::Request<tonic::Streaming<shoal_proto::RaftSnapshotChunk>>,
    ) -> Result<tonic::Response<shoal_proto::Empty>, tonic::Status> {
        self.0.stream_snapshot(request).await
    }
}

/// Starts a Raft loop with a gRPC transport and serves its Raft service on `listener`
/// (refusing `StreamMessages` if `calls_only`).
async fn run(
    cfg: RaftConfig,
    listener: TcpListener,
    known: &[(u64, String)],
    calls_only: bool,
) -> (Store, RaftHandle, Server) {
    let transport = GrpcTransport::plain(cfg.raft_id).expect("transport");
    for (id, addr) in known {
        transport.add_peer(*id, addr);
    }
    let (store, handle) = raft::start_with_transport(cfg, Box::new(transport))
        .await
        .expect("raft starts");
    let service = RaftService::new(handle.clone());
    let mut router = tonic::transport::Server::builder();
    let router = if calls_only {
        router.add_service(shoal_proto::raft_server::RaftServer::new(CallsOnly(
            service,
        )))
    } else {
        router.add_service(service.into_server())
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let result = router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = result {
            eprintln!("raft server stopped: {e}");
        }
    });
    (store, handle, (stop, server))
}

/// Polls `cond` until it holds or `WAIT` passes.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The one node among `nodes` that leads, once the others agree on it.
async fn leader_of(nodes: &[&Node]) -> u64 {
    let mut leader = 0;
    wait_until("a leader is elected and known to all", || {
        let leaders: Vec<u64> = nodes.iter().map(|n| n.handle.status().leader_id).collect();
        leader = leaders[0];
        leader != 0
            && leaders.iter().all(|&l| l == leader)
            && nodes
                .iter()
                .any(|n| n.id == leader && n.handle.status().is_leader)
    })
    .await;
    leader
}

/// Starts node 1 alone, then adds nodes 2 and 3 as voters through it.
async fn form_cluster(dirs: &[tempfile::TempDir; 3], opts: Opts) -> Vec<Node> {
    let n1 = Node::start(1, dirs[0].path(), false, &[], opts).await;
    n1.handle.wait_leader(WAIT).await.expect("node 1 leads");
    let mut nodes = vec![n1];
    for id in [2, 3] {
        let leader = &nodes[0];
        let known = [(1, leader.addr.clone())];
        let node = Node::start(id, dirs[id as usize - 1].path(), true, &known, opts).await;
        leader
            .handle
            .add_voter(id, &node.addr)
            .await
            .unwrap_or_else(|e| panic!("adding node {id}: {e}"));
        nodes.push(node);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    wait_until("every node sees three voters", || {
        all.iter()
            .all(|n| n.handle.status().voters == vec![1, 2, 3])
    })
    .await;
    nodes
}

async fn propose(node: &Node, name: &str, padding: usize) -> u64 {
    node.store
        .propose(vec![create_service_padded(name, padding)])
        .await
        .unwrap_or_else(|e| panic!("proposing {name} on node {}: {e}", node.id))
}

/// Proposes one service per name on `node`, in order, and records each name in `written`;
/// returns the log index of the last.
async fn propose_each(
    node: &Node,
    names: impl IntoIterator<Item = String>,
    padding: usize,
    written: &mut Vec<String>,
) -> u64 {
    let mut last = 0;
    for name in names {
        last = propose(node, &name, padding).await;
        written.push(name);
    }
    last
}

async fn wait_applied(nodes: &[&Node], index: u64) {
    wait_until(&format!("every node applied {index}"), || {
        nodes
            .iter()
            .all(|n| n.store.view(|s| s.applied_index) >= index)
    })
    .await;
}

/// Stops every node in `nodes`.
async fn kill_all(nodes: &mut [Node]) {
    for n in nodes {
        n.kill().await;
    }
}

fn tempdirs() -> [tempfile::TempDir; 3] {
    [(); 3].map(|_| tempfile::tempdir().expect("tempdir"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster_replicates_fails_over_and_catches_up_a_restarted_node() {
    let dirs = tempdirs();
    let mut nodes = form_cluster(&dirs, DEFAULT).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    {
        let all: Vec<&Node> = nodes.iter().collect();
        assert_eq!(leader_of(&all).await, 1);
        // Every node learned every address through the replicated member list.
        for n in &all {
            let members = n.handle.status().members;
            for (i, addr) in addrs.iter().enumerate() {
                assert_eq!(members.get(&(i as u64 + 1)), Some(addr), "node {}", n.id);
            }
        }
    }

    // Writes on the leader reach every store.
    let mut written = Vec::new();
    let names = (0..10).map(|i| format!("svc-{i:02}"));
    let last = propose_each(&nodes[0], names, 0, &mut written).await;
    wait_applied(&nodes.iter().collect::<Vec<_>>(), last).await;
    for n in &nodes {
        assert_eq!(service_names(&n.store), written, "node {}", n.id);
    }
    // The leader tracks both followers as reachable voters holding the writes.
    wait_until("the leader sees both followers caught up", || {
        let peers = nodes[0].handle.status().peers;
        peers.len() == 2
            && peers
                .iter()
                .all(|p| p.voter && p.reachable && p.matched >= last)
    })
    .await;

    // A follower refuses writes and names the leader, with its address, for forwarding.
    let err = nodes[1]
        .store
        .propose(vec![create_service("on-follower")])
        .await
        .expect_err("followers do not write");
    match &err {
        StoreError::NotLeader { leader } => {
            assert!(leader.contains(&addrs[0]), "{leader}")
        }
        other => panic!("expected NotLeader, got {other}"),
    }
    assert_eq!(nodes[1].handle.leader(), Some((1, addrs[0].clone())));

    // A linearizable read on a follower sees a write acknowledged just before it.
    let index = propose(&nodes[0], "svc-read", 0).await;
    written.push("svc-read".into());
    written.sort();
    let read = nodes[2].handle.read_index().await.expect("read index");
    assert!(read >= index, "read index {read} before write {index}");
    assert!(service_names(&nodes[2].store).contains(&"svc-read".to_string()));
    let read = nodes[0].handle.read_index().await.expect("read on leader");
    assert!(read >= index);

    // Kill the leader: the others elect a new one (within `WAIT`; how fast is for
    // bench/cluster_failover.sh to measure), and it accepts writes.
    nodes[0].kill().await;
    let survivors: Vec<&Node> = nodes[1..].iter().collect();
    let new_leader = leader_of(&survivors).await;
    assert!(new_leader == 2 || new_leader == 3, "leader {new_leader}");
    let leader = survivors
        .iter()
        .find(|n| n.id == new_leader)
        .expect("leader node");
    let names = (0..5).map(|i| format!("after-{i}"));
    let last = propose_each(leader, names, 0, &mut written).await;
    written.sort();
    wait_applied(&survivors, last).await;
    // Every write acknowledged before the kill survived it.
    for n in &survivors {
        assert_eq!(service_names(&n.store), written, "node {}", n.id);
    }

    // The old leader comes back as a follower and catches up from the log.
    nodes[0].restart().await;
    let all: Vec<&Node> = nodes.iter().collect();
    wait_applied(&all, last).await;
    assert_eq!(service_names(&nodes[0].store), written);
    assert_eq!(leader_of(&all).await, new_leader);
    assert_eq!(nodes[0].handle.status().voters, vec![1, 2, 3]);

    kill_all(&mut nodes).await;
}

/// Managers from before `StreamMessages` (during a rolling upgrade) refuse it: the senders
/// fall back to one `ProcessMessages` call per batch, and the cluster forms, replicates and
/// elects a new leader as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster_works_with_managers_that_take_no_streamed_messages() {
    let dirs = tempdirs();
    let opts = Opts {
        calls_only: true,
        ..DEFAULT
    };
    let mut nodes = form_cluster(&dirs, opts).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_of(&all).await;
    let index = propose(&nodes[leader as usize - 1], "web", 0).await;
    wait_applied(&all, index).await;

    nodes[leader as usize - 1].kill().await;
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != leader).collect();
    let new_leader = leader_of(&rest).await;
    assert_ne!(new_leader, leader);
    let index = propose(&nodes[new_leader as usize - 1], "db", 0).await;
    wait_applied(&rest, index).await;
    for node in &rest {
        assert_eq!(
            service_names(&node.store),
            vec!["db".to_string(), "web".to_string()],
            "node {}",
            node.id
        );
    }
    for node in nodes.iter_mut().filter(|n| n.id != leader) {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster_node_down_during_compaction_catches_up_by_snapshot() {
    let dirs = tempdirs();
    // Snapshots every 8 entries, so the log moves past node 3 while it is down.
    let opts = FREQUENT_SNAPSHOTS;
    let mut nodes = form_cluster(&dirs, opts).await;
    let mut written = Vec::new();
    let first = propose(&nodes[0], "before", 0).await;
    written.push("before".to_string());
    wait_applied(&nodes.iter().collect::<Vec<_>>(), first).await;

    nodes[2].kill().await;
    let down_last = nodes[2].handle.status().last_index;
    // Large entries make a snapshot of several chunks (each 1 MiB).
    let names = (0..24).map(|i| format!("big-{i:02}"));
    let last = propose_each(&nodes[0], names, 100 * 1024, &mut written).await;
    written.sort();
    // Snapshots are written on their own thread: the last one lands a moment after its entry.
    wait_until("the leader compacted past node 3", || {
        nodes[0].handle.status().snapshot_index > down_last
    })
    .await;

    nodes[2].restart().await;
    let all: Vec<&Node> = nodes.iter().collect();
    wait_applied(&all, last).await;
    assert_eq!(service_names(&nodes[2].store), written);
    let status = nodes[2].handle.status();
    assert!(
        status.snapshot_index > down_last,
        "node 3 caught up by snapshot: its snapshot is at {}, it had {down_last}",
        status.snapshot_index
    );
    let padding = nodes[2].store.view(|s| {
        s.service_by_name("big-23")
            .and_then(|svc| svc.spec.as_ref())
            .and_then(|spec| spec.labels.get("padding"))
            .map(String::len)
    });
    assert_eq!(padding, Some(100 * 1024));

    // It still takes part: a write after the catch-up reaches it too.
    let index = propose(&nodes[0], "after", 0).await;
    wait_applied(&all, index).await;
    assert!(service_names(&nodes[2].store).contains(&"after".to_string()));

    kill_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster_removes_voters_and_transfers_leadership() {
    let dirs = tempdirs();
    // A short catch-up timeout, for the member that never comes up.
    let opts = Opts {
        catch_up_timeout: Duration::from_secs(2),
        ..DEFAULT
    };
    let mut nodes = form_cluster(&dirs, opts).await;

    // Membership changes go through the leader only.
    let err = nodes[1]
        .handle
        .remove_voter(3)
        .await
        .expect_err("followers do not change membership");
    assert!(
        matches!(err, MembershipError::Store(StoreError::NotLeader { .. })),
        "{err}"
    );
    let err = nodes[0]
        .handle
        .remove_voter(1)
        .await
        .expect_err("the leader does not remove itself");
    assert!(
        matches!(err, MembershipError::RemovingLeader { id: 1 }),
        "{err}"
    );

    // Remove node 3: the others drop it, and two voters still commit without it.
    nodes[0]
        .handle
        .remove_voter(3)
        .await
        .expect("remove node 3");
    wait_until("nodes 1 and 2 see voters 1 and 2", || {
        nodes[..2]
            .iter()
            .all(|n| n.handle.status().voters == vec![1, 2])
    })
    .await;
    assert!(!nodes[0].handle.status().members.contains_key(&3));
    nodes[2].kill().await;
    let index = propose(&nodes[0], "without-3", 0).await;
    wait_applied(&nodes[..2].iter().collect::<Vec<_>>(), index).await;
    // Removing a non-member is a no-op.
    nodes[0].handle.remove_voter(3).await.expect("idempotent");

    // A node that never comes up stays a learner: the cluster keeps committing.
    let listener = bind("127.0.0.1:0").await;
    let ghost = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let pair: Vec<&Node> = nodes[..2].iter().collect();
    let (leader, other) = (pair[0], pair[1]);
    match leader.handle.add_voter(9, &ghost).await {
        Err(MembershipError::NotCaughtUp { id: 9, .. }) => {}
        Ok(_) => panic!("a node that does not run became a voter"),
        Err(e) => panic!("unexpected error: {e}"),
    }
    let status = leader.handle.status();
    assert_eq!(status.voters, vec![1, 2]);
    assert_eq!(status.learners, vec![9]);
    let index = propose(leader, "with-a-learner", 0).await;
    wait_applied(&pair, index).await;
    leader.handle.remove_voter(9).await.expect("remove learner");
    assert!(leader.handle.status().learners.is_empty());

    // Leadership moves on request, and the old leader follows the new one.
    let to = leader
        .handle
        .transfer_leadership(None)
        .await
        .expect("transfer");
    assert_eq!(to, other.id);
    assert_eq!(leader_of(&pair).await, other.id);
    let index = propose(other, "after-transfer", 0).await;
    wait_applied(&pair, index).await;

    kill_all(&mut nodes[..2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster_joining_node_waits_empty_and_reads_need_a_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut joiner = Node::start(5, dir.path(), true, &[], DEFAULT).await;
    // Nobody added it: it has no configuration, elects nobody and answers reads NotLeader.
    tokio::time::sleep(TICK * ELECTION_TICKS as u32 * 3).await;
    let status = joiner.handle.status();
    assert!(!status.is_leader);
    assert_eq!(status.leader_id, 0);
    assert!(status.voters.is_empty());
    let err = joiner.handle.read_index().await.expect_err("no leader");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    let err = joiner
        .store
        .propose(vec![create_service("web")])
        .await
        .expect_err("not a leader");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    joiner.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster_member_moves_to_a_new_address() {
    let dirs = tempdirs();
    let mut nodes = form_cluster(&dirs, DEFAULT).await;
    let old_addr = nodes[2].addr.clone();
    nodes[2].kill().await;
    nodes[2].restart_on(bind("127.0.0.1:0").await).await;
    let new_addr = nodes[2].addr.clone();
    assert_ne!(new_addr, old_addr);

    // The leader records the new address; every member learns it through the log.
    nodes[0]
        .handle
        .update_address(3, &new_addr)
        .await
        .expect("update address");
    let index = propose(&nodes[0], "after-move", 0).await;
    let all: Vec<&Node> = nodes.iter().collect();
    wait_applied(&all, index).await;
    assert!(service_names(&nodes[2].store).contains(&"after-move".to_string()));
    wait_until("every member knows the new address", || {
        all.iter()
            .all(|n| n.handle.status().members.get(&3) == Some(&new_addr))
    })
    .await;
    // Unchanged addresses change nothing.
    let applied = nodes[0].handle.status().applied;
    let unchanged = nodes[0]
        .handle
        .update_address(3, &new_addr)
        .await
        .expect("same address");
    assert!(unchanged <= applied + 1);

    kill_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_service_refuses_misaddressed_and_truncated_messages() {
    use shoal_proto::raft_client::RaftClient;
    use shoal_proto::{RaftBatch, RaftSnapshotChunk};
    use tonic::Code;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(1, dir.path(), false, &[], DEFAULT).await;
    node.handle.wait_leader(WAIT).await.expect("leads");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = RaftClient::new(channel);

    // A batch for another raft ID: the address now belongs to someone else.
    let err = client
        .process_messages(RaftBatch {
            from: 2,
            to: 7,
            messages: vec![],
        })
        .await
        .expect_err("misaddressed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("raft node 1"), "{err}");

    // Bytes that are not a raft message.
    let err = client
        .process_messages(RaftBatch {
            from: 2,
            to: 1,
            messages: vec![vec![0xff, 0xff, 0xff]],
        })
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    // On a stream, the first batch refused ends it with the reason; the batches before it
    // were taken (an empty one here).
    let batches = vec![
        RaftBatch {
            from: 2,
            to: 1,
            messages: vec![],
        },
        RaftBatch {
            from: 2,
            to: 7,
            messages: vec![],
        },
    ];
    let err = stream_batches(&mut client, batches)
        .await
        .expect_err("misaddressed on a stream");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("raft node 1"), "{err}");
    let garbage = RaftBatch {
        from: 2,
        to: 1,
        messages: vec![vec![0xff, 0xff, 0xff]],
    };
    let err = stream_batches(&mut client, vec![garbage])
        .await
        .expect_err("garbage on a stream");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    // A stream the sender ends is answered OK.
    stream_batches(&mut client, Vec::new())
        .await
        .expect("an empty stream");

    // A snapshot stream that ends before the announced size.
    let chunk = RaftSnapshotChunk {
        from: 2,
        to: 1,
        total_bytes: 10,
        data: vec![1, 2, 3],
    };
    let err = client
        .stream_snapshot(tokio_stream::iter(vec![chunk]))
        .await
        .expect_err("truncated");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("not the 10 announced"), "{err}");

    // Still healthy: a single manager reads and writes at once.
    let index = propose(&node, "web", 0).await;
    let read = node.handle.read_index().await.expect("read index");
    assert!(read >= index);
    node.kill().await;
}

/// Sends `batches` on one `StreamMessages` stream and ends it: Ok if the stream ended without
/// a refusal, else the refusal.
async fn stream_batches(
    client: &mut shoal_proto::raft_client::RaftClient<tonic::transport::Channel>,
    batches: Vec<shoal_proto::RaftBatch>,
) -> Result<(), tonic::Status> {
    let mut answers = client
        .stream_messages(tokio_stream::iter(batches))
        .await?
        .into_inner();
    while answers.message().await?.is_some() {}
    Ok(())
}

/// Lost quorum, recovered: a follower that survives the loss of the two other managers is
/// restarted with `force_new_cluster` and runs alone with every write, for good, and grows
/// again with new members; the old members cannot take it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster_force_new_cluster_recovers_a_survivor_of_lost_quorum() {
    let dirs = tempdirs();
    // Snapshots every 8 entries: the recovery starts from a snapshot plus the log after it.
    let opts = FREQUENT_SNAPSHOTS;
    let mut nodes = form_cluster(&dirs, opts).await;
    let mut written = Vec::new();
    let names = (0..21).map(|i| format!("svc-{i:02}"));
    let last = propose_each(&nodes[0], names, 0, &mut written).await;
    // Node 3 survives. It must hold the writes (entries on disk); whether it has also learned
    // that the last ones were committed is up to timing, and must not matter.
    wait_until("node 3 holds every acknowledged write", || {
        nodes[2].handle.status().last_index >= last
    })
    .await;
    assert!(nodes[2].handle.status().snapshot_index > 0);

    // Quorum lost: the survivor can neither lead nor commit.
    nodes[0].kill().await;
    nodes[1].kill().await;
    tokio::time::sleep(TICK * ELECTION_TICKS as u32 * 4).await;
    let status = nodes[2].handle.status();
    assert!(!status.is_leader, "{status:?}");
    assert_eq!(status.voters, vec![1, 2, 3]);
    match nodes[2]
        .store
        .propose(vec![create_service("no-quorum")])
        .await
    {
        Err(StoreError::NotLeader { .. }) | Err(StoreError::Timeout(_)) => {}
        other => panic!("expected NotLeader or Timeout without quorum, got {other:?}"),
    }

    // Forced into a new cluster, it leads alone at once, with every acknowledged write.
    nodes[2].kill().await;
    let started = Instant::now();
    nodes[2].restart_forcing_new_cluster().await;
    let survivor = &nodes[2];
    survivor
        .handle
        .wait_leader(WAIT)
        .await
        .expect("the recovered node leads");
    eprintln!("recovered node leads after {:?}", started.elapsed());
    let status = survivor.handle.status();
    assert_eq!(status.voters, vec![3]);
    assert!(status.learners.is_empty());
    assert_eq!(status.members, Members::from([(3, survivor.addr.clone())]));
    assert!(status.snapshot_index >= last, "{status:?}");
    assert_eq!(service_names(&survivor.store), written);
    let names = (0..3).map(|i| format!("recovered-{i}"));
    let index = propose_each(survivor, names, 0, &mut written).await;
    written.sort();
    assert!(index > last);
    assert_eq!(service_names(&survivor.store), written);

    // A plain restart keeps the new cluster: nothing in the log brings the old members back.
    nodes[2].kill().await;
    nodes[2].restart().await;
    let survivor = &nodes[2];
    survivor
        .handle
        .wait_leader(WAIT)
        .await
        .expect("leads after a plain restart");
    let status = survivor.handle.status();
    assert_eq!(status.voters, vec![3]);
    assert_eq!(status.members.keys().copied().collect::<Vec<_>>(), vec![3]);
    assert_eq!(service_names(&survivor.store), written);
    let index = propose(survivor, "after-restart", 0).await;
    written.push("after-restart".into());
    written.sort();
    wait_applied(&[survivor], index).await;

    // The old managers come back with their old logs: two of the three old voters are a
    // quorum of the old configuration, and they elect a leader of it. The recovered node
    // ignores them: it keeps leading its own cluster, state intact.
    let term = survivor.handle.status().term;
    nodes[0].restart().await;
    nodes[1].restart().await;
    let old: Vec<&Node> = nodes[..2].iter().collect();
    let mut old_leader = leader_of(&old).await;
    // Move their leadership back and forth until their term passes the recovered node's: a
    // message of theirs would then depose it, were it heeded.
    for _ in 0..10 {
        let leader = old.iter().find(|n| n.id == old_leader).expect("old leader");
        if leader.handle.status().term > term {
            break;
        }
        leader
            .handle
            .transfer_leadership(None)
            .await
            .expect("old members move leadership");
        old_leader = leader_of(&old).await;
    }
    let old_term = old
        .iter()
        .find(|n| n.id == old_leader)
        .expect("old leader")
        .handle
        .status()
        .term;
    assert!(
        old_term > term,
        "old term {old_term}, recovered term {term}"
    );
    tokio::time::sleep(TICK * ELECTION_TICKS as u32 * 5).await;
    let survivor = &nodes[2];
    let status = survivor.handle.status();
    assert!(status.is_leader, "{status:?}");
    assert_eq!(
        status.term, term,
        "the old members disturbed the recovered leader"
    );
    assert_eq!(status.voters, vec![3]);
    assert_eq!(service_names(&survivor.store), written);
    // Nor can they be added again under their old raft IDs.
    let err = survivor
        .handle
        .add_voter(1, &nodes[0].addr)
        .await
        .expect_err("a retired member is not added again");
    assert!(matches!(err, MembershipError::Retired { id: 1 }), "{err}");
    assert!(err.to_string().contains("new raft ID"), "{err}");
    nodes[0].kill().await;
    nodes[1].kill().await;

    // A new manager joins with a new raft ID and becomes a voter with all the state.
    let dir4 = tempfile::tempdir().expect("tempdir");
    let survivor = &nodes[2];
    let known = [(3, survivor.addr.clone())];
    let mut n4 = Node::start(4, dir4.path(), true, &known, opts).await;
    survivor
        .handle
        .add_voter(4, &n4.addr)
        .await
        .expect("a new manager joins the recovered cluster");
    let pair = [survivor, &n4];
    wait_until("both see voters 3 and 4", || {
        pair.iter().all(|n| n.handle.status().voters == vec![3, 4])
    })
    .await;
    let index = propose(survivor, "with-4", 0).await;
    written.push("with-4".into());
    written.sort();
    wait_applied(&pair, index).await;
    assert_eq!(service_names(&n4.store), written);
    assert_eq!(
        n4.handle.status().members,
        Members::from([(3, survivor.addr.clone()), (4, n4.addr.clone())])
    );

    n4.kill().await;
    nodes[2].kill().await;
}

/// `force_new_cluster` needs a log to recover: a data directory that never held one, or that
/// of a manager still waiting to join, is refused with the path, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_force_new_cluster_refuses_a_data_dir_with_nothing_to_recover() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("never-used");
    let mut cfg = RaftConfig::new(&missing, 1);
    cfg.force_new_cluster = true;
    let err = start_err(cfg, "nothing to recover").await;
    assert!(matches!(err, RaftError::NothingToRecover { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "nothing to recover: no raft data at {}",
            missing.join("raft.redb").display()
        )),
        "{msg}"
    );
    assert!(
        !missing.exists(),
        "the refused start created {}",
        missing.display()
    );

    // A joiner that was never added holds a data file but no cluster.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut joiner = Node::start(5, dir.path(), true, &[], DEFAULT).await;
    joiner.kill().await;
    let mut cfg = joiner.cfg.clone();
    cfg.force_new_cluster = true;
    let err = start_err(cfg, "nothing to recover").await;
    assert!(matches!(err, RaftError::NothingToRecover { .. }), "{err}");
    // The refusal changed nothing: the joiner still starts, waiting to be added.
    joiner.restart().await;
    assert!(joiner.handle.status().voters.is_empty());
    joiner.kill().await;
}
