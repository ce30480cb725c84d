//! The store, not the certificate, decides who may call a manager.
//!
//! A node certificate stays CA-signed and unexpired for up to 90 days, whatever happens to the
//! node. On a swarm of two managers and a worker, the test keeps each node's certificate as it
//! was and presents it itself, over mutual TLS, after the store changed:
//! - concurrent `join-token --rotate`s through both managers: none is lost;
//! - Raft: a manager may send Raft messages only as its own Raft ID (the one the store gives
//!   its node), and only while that ID is a member;
//! - `node demote`: the demoted manager's (still valid) manager certificate is refused on the
//!   control API at once, its Raft messages are refused, and so are its calls to a worker's
//!   Agent service (the worker admits the managers its leader last named);
//! - `node rm --force` of a worker whose daemon still runs: its certificate opens no session
//!   and renews no certificate (it is on the revocation list), and the worker, which keeps
//!   trying, never comes back in `node ls`.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_proto::{Empty, GetNodeRequest, IssueCertificateRequest, RaftBatch, SessionRequest};
use shoal_tests::cluster::{ClusterHost, TestCluster};
use shoal_tests::daemon::{run_with_timeout, shoal_bin, wait_until, words};
use shoal_tests::listing::service_names;
use shoal_tests::mtls::{control, dispatcher, node_cert, node_client_config, raft, runtime};
use shoal_tls::NodeCert;
use tonic::{Code, Status};

const CONVERGE: Duration = Duration::from_secs(30);

/// The Raft ID the store gives node `id`, read through the leader's control API.
fn raft_id(rt: &tokio::runtime::Runtime, leader: &ClusterHost, cert: &NodeCert, id: &str) -> u64 {
    rt.block_on(async {
        let mut c = control(&leader.swarm_addr(), node_client_config(cert)).await?;
        c.get_node(GetNodeRequest { node: id.into() }).await
    })
    .unwrap_or_else(|e| panic!("get_node {id}: {e:?}"))
    .into_inner()
    .manager_status
    .unwrap_or_else(|| panic!("node {id} has no manager status"))
    .raft_id
}

/// An empty Raft batch to `to` at `host`, sent with `cert`, claiming to come from `from`; sent
/// both ways a manager sends (a `ProcessMessages` call, and the only batch of a
/// `StreamMessages` stream), which must be answered alike.
fn raft_batch(
    rt: &tokio::runtime::Runtime,
    host: &ClusterHost,
    cert: &NodeCert,
    from: u64,
    to: u64,
) -> Result<(), Status> {
    rt.block_on(async {
        let mut c = raft(&host.swarm_addr(), node_client_config(cert)).await?;
        let batch = || RaftBatch {
            from,
            to,
            messages: Vec::new(),
        };
        let called = c.process_messages(batch()).await.map(|_| ());
        let streamed = async {
            let mut answers = c
                .stream_messages(futures::stream::iter(vec![batch()]))
                .await?
                .into_inner();
            // The refusal, if any, ends the answer stream.
            while answers.message().await?.is_some() {}
            Ok::<(), Status>(())
        }
        .await;
        let alike = match (&called, &streamed) {
            (Ok(()), Ok(())) => true,
            (Err(a), Err(b)) => a.code() == b.code() && a.message() == b.message(),
            _ => false,
        };
        assert!(
            alike,
            "a Raft batch was answered {called:?} as a call but {streamed:?} on a stream"
        );
        called
    })
}

/// `Agent.TaskLogs` (no task) on `host`, node `node_id`, presenting `cert`.
fn task_logs(
    rt: &tokio::runtime::Runtime,
    host: &ClusterHost,
    node_id: &str,
    cert: &NodeCert,
) -> Result<(), Status> {
    rt.block_on(async {
        let channel = shoal_tls::connect(&host.swarm_addr(), node_client_config(cert), node_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        shoal_proto::agent_client::AgentClient::new(channel)
            .task_logs(shoal_proto::TaskLogsRequest::default())
            .await
            .map(|_| ())
    })
}

fn list_services(
    rt: &tokio::runtime::Runtime,
    host: &ClusterHost,
    cert: &NodeCert,
) -> Result<usize, Status> {
    rt.block_on(async {
        let mut c = control(&host.swarm_addr(), node_client_config(cert)).await?;
        c.list_services(Empty {}).await
    })
    .map(|r| r.into_inner().services.len())
}

fn assert_denied(what: &str, result: Result<impl std::fmt::Debug, Status>, says: &str) {
    match result {
        Ok(v) => panic!("{what} was accepted: {v:?}"),
        Err(status) => {
            assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
            assert!(
                status.message().contains(says),
                "{what}: the refusal does not say {says:?}: {}",
                status.message()
            );
        }
    }
}

/// `swarm join-token -q --rotate ROLE` `times` times through the daemon at `api`; the token
/// each rotation printed.
fn rotate(api: &str, role: &str, times: usize) -> Vec<String> {
    (0..times)
        .map(|_| {
            let mut cmd = std::process::Command::new(shoal_bin());
            cmd.args(["-H", api, "swarm", "join-token", "-q", "--rotate", role]);
            let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
            assert!(out.status.success(), "rotate {role}: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect()
}

fn node_ids_listed(host: &ClusterHost) -> BTreeSet<String> {
    host.nodes()
        .iter()
        .filter_map(|n| n["ID"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_store_not_the_certificate_decides_who_may_call() {
    let cluster = TestCluster::new(3);
    cluster.form(2, 1);
    let ids = cluster.node_ids();
    let (leader, second, worker) = (cluster.host(0), cluster.host(1), cluster.host(2));
    leader.shoal_ok(&words(
        "service create -d --name probe --replicas 0 busybox",
    ));
    let rt = runtime();
    let leader_cert = node_cert(leader);
    let second_cert = node_cert(second);
    let worker_cert = node_cert(worker);
    let leader_raft = raft_id(&rt, leader, &leader_cert, &ids[0]);

    // Token rotations through both managers at once: the cluster object is written
    // compare-and-set, so none undoes another, and the last token each printed is current.
    let (a, b) = (leader.api_url(), second.api_url());
    let (workers, managers) = std::thread::scope(|s| {
        let w = s.spawn(|| rotate(&a, "worker", 6));
        let m = s.spawn(|| rotate(&b, "manager", 6));
        (
            w.join().expect("worker rotations"),
            m.join().expect("manager rotations"),
        )
    });
    let current = |role: &str| {
        leader
            .shoal_ok(&["swarm", "join-token", "-q", role])
            .trim()
            .to_string()
    };
    assert_eq!(
        workers.last().map(String::as_str),
        Some(current("worker").as_str())
    );
    assert_eq!(
        managers.last().map(String::as_str),
        Some(current("manager").as_str())
    );
    let second_raft = raft_id(&rt, leader, &leader_cert, &ids[1]);

    // Raft: the control case, a manager speaking as itself, is let in…
    raft_batch(&rt, leader, &second_cert, second_raft, leader_raft)
        .expect("a manager's Raft batch under its own Raft ID");
    // …but a manager's certificate cannot speak as another member.
    assert_denied(
        "a Raft batch from the leader's certificate claiming the second manager's Raft ID",
        raft_batch(&rt, leader, &leader_cert, second_raft, leader_raft),
        "belongs to node",
    );
    assert_denied(
        "a Raft batch claiming a Raft ID that is no member",
        raft_batch(&rt, leader, &second_cert, 0x5eed, leader_raft),
        "not a member",
    );

    // Demotion takes away manager rights at once, whatever the certificate says.
    assert_eq!(
        list_services(&rt, leader, &second_cert).expect("a manager's list"),
        1
    );
    leader.shoal_ok(&["node", "demote", &ids[1]]);
    assert_denied(
        "the control API with the demoted manager's certificate",
        list_services(&rt, leader, &second_cert),
        "is a worker in this swarm",
    );
    let refused = wait_until(CONVERGE, || {
        raft_batch(&rt, leader, &second_cert, second_raft, leader_raft)
            .is_err_and(|s| s.code() == Code::PermissionDenied)
    });
    assert!(
        refused,
        "the demoted manager's Raft batches are still accepted"
    );
    // A worker has no store: it admits the managers the leader last named, so the demoted
    // manager's certificate cannot read its task logs either; a manager's can.
    let refused = wait_until(CONVERGE, || {
        task_logs(&rt, worker, &ids[2], &second_cert)
            .is_err_and(|s| s.code() == Code::PermissionDenied)
    });
    assert!(
        refused,
        "the worker still serves the demoted manager: {:?}",
        task_logs(&rt, worker, &ids[2], &second_cert)
    );
    task_logs(&rt, worker, &ids[2], &leader_cert).expect("the leader reads a worker's task logs");

    // node rm of a worker whose daemon runs: revoked, never re-created.
    assert!(node_ids_listed(leader).contains(&ids[2]));
    leader.shoal_ok(&["node", "rm", "--force", &ids[2]]);
    let session = rt.block_on(async {
        let mut d = dispatcher(&leader.swarm_addr(), node_client_config(&worker_cert)).await?;
        d.session(SessionRequest {
            node_id: ids[2].clone(),
            ..Default::default()
        })
        .await
        .map(|_| ())
    });
    assert_denied(
        "a session of the removed worker",
        session,
        "was removed from the swarm",
    );
    let renewal = rt.block_on(async {
        let channel = shoal_tls::connect(
            &leader.swarm_addr(),
            node_client_config(&worker_cert),
            shoal_tls::Role::Manager.server_name(),
        )
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
        shoal_proto::membership_client::MembershipClient::new(channel)
            .issue_certificate(IssueCertificateRequest::default())
            .await
            .map(|_| ())
    });
    assert_denied(
        "a certificate renewal of the removed worker",
        renewal,
        "was removed",
    );
    // The worker's agent keeps trying to open a session: it must never come back.
    let came_back = wait_until(Duration::from_secs(4), || {
        node_ids_listed(leader).contains(&ids[2])
    });
    assert!(
        !came_back,
        "the removed worker is listed again: {:?}",
        leader.nodes()
    );
    assert!(service_names(leader).contains("probe"));
}
