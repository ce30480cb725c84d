//! The dispatcher's sessions against a store fed by an in-process apply loop (no Raft): what a
//! worker is sent, and the usage reports it may make.

use shoal_proto::dispatcher_server::Dispatcher as _;
use shoal_proto::{TaskDesiredState, TaskStatus};
use tokio_stream::StreamExt;

use super::*;
use crate::store::new_store;

#[test]
fn usage_of_tasks_on_other_nodes_is_dropped() {
    let task = |id: &str, node: &str| Task {
        id: id.into(),
        node_id: node.into(),
        ..Default::default()
    };
    let st = StoreState {
        tasks: [task("mine", "n1"), task("theirs", "n2")]
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect(),
        ..Default::default()
    };
    let usage = |id: &str| TaskUsage {
        task_id: id.into(),
        cpu_seconds_total: 1.0,
        ..Default::default()
    };
    let kept = assigned_usage(
        &st,
        "n1",
        vec![usage("mine"), usage("theirs"), usage("ghost")],
    );
    let ids: Vec<&str> = kept.iter().map(|u| u.task_id.as_str()).collect();
    assert_eq!(ids, ["mine"]);
}
/// A dispatcher that leads a store whose proposals are applied at once, in order.
fn leading_dispatcher(initial: StoreState) -> (Dispatcher, watch::Sender<RaftStatus>) {
    let (store, mut applier, mut proposals) = new_store(initial);
    tokio::spawn(async move {
        let mut index = 0;
        while let Some(req) = proposals.recv().await {
            index += 1;
            let applied = applier.apply(index, req.proposal).map(|()| index);
            applier.publish();
            let _ = req.reply.send(applied.map_err(StoreError::from));
        }
    });
    let (raft_tx, raft) = watch::channel(RaftStatus {
        is_leader: true,
        leader_ready: true,
        ..Default::default()
    });
    let dispatcher = Dispatcher::new(store, DEFAULT_HEARTBEAT_PERIOD, raft, UsageStore::default());
    (dispatcher, raft_tx)
}

fn assigned(id: &str, node: &str) -> Task {
    Task {
        id: id.into(),
        node_id: node.into(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ids(tasks: &[Task]) -> Vec<&str> {
    let mut ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    ids.sort_unstable();
    ids
}

async fn next(stream: &mut SessionStream) -> SessionMessage {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a session message within 10 s")
        .expect("the session is open")
        .expect("a message, not an error")
}

/// A session opened as the local agent does, over the unix socket.
async fn open(d: &Dispatcher, node: &str, incremental: bool) -> SessionStream {
    let mut request = Request::new(SessionRequest {
        node_id: node.into(),
        incremental_assignments: incremental,
        ..Default::default()
    });
    request
        .extensions_mut()
        .insert(tonic::transport::server::UdsConnectInfo {
            peer_addr: None,
            peer_cred: None,
        });
    d.session(request).await.expect("a session").into_inner()
}

fn action(action: Action) -> StoreAction {
    StoreAction {
        action: Some(action),
    }
}

/// Stops "a", deletes "b" and assigns a new "c" to n1, in one entry; "d" (on n2) stays.
async fn change_n1(d: &Dispatcher) {
    d.store
        .propose(vec![
            action(Action::SetTaskDesiredState(TaskDesiredState {
                task_id: "a".into(),
                desired_state: TaskState::Shutdown as i32,
                timestamp_ms: 1,
            })),
            action(Action::DeleteTask("b".into())),
            action(Action::CreateTask(assigned("c", "n1").into())),
        ])
        .await
        .expect("the change applies");
}

fn initial() -> StoreState {
    StoreState {
        tasks: [
            assigned("a", "n1"),
            assigned("b", "n1"),
            assigned("k", "n1"),
            assigned("d", "n2"),
        ]
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect(),
        nodes: ["n1", "n2"]
            .map(|id| {
                let node = shoal_proto::Node {
                    id: id.into(),
                    ..Default::default()
                };
                (id.to_string(), node)
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// A manager restarted with tasks running: the first message of the first session lists
/// them, whichever thread runs first. An empty first message made the worker stop them all
/// (the index of tasks by node was built on a task of its own, which could run after the
/// session's first look).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_session_of_a_new_leader_lists_the_tasks_already_in_the_store() {
    let (d, _raft) = leading_dispatcher(initial());
    // Built when `start` returns, not later.
    d.fanout.start(&d.store);
    assert_eq!(d.fanout.tasks_of("n1"), ["a", "b", "k"]);
    for _ in 0..20 {
        let (d, _raft) = leading_dispatcher(initial());
        let mut session = open(&d, "n1", true).await;
        assert_eq!(ids(&next(&mut session).await.tasks), ["a", "b", "k"]);
    }
}

#[tokio::test]
async fn after_the_first_message_a_worker_hears_only_what_changed() {
    let (d, _raft) = leading_dispatcher(initial());
    let mut session = open(&d, "n1", true).await;

    let first = next(&mut session).await;
    assert!(!first.incremental, "the first message is the whole set");
    assert_eq!(ids(&first.tasks), ["a", "b", "k"]);

    change_n1(&d).await;
    let msg = next(&mut session).await;
    assert!(msg.incremental);
    assert_eq!(ids(&msg.tasks), ["a", "c"], "the stopped and the new task");
    assert_eq!(msg.removed_task_ids, ["b"]);
    let stopped = msg.tasks.iter().find(|t| t.id == "a");
    assert_eq!(
        stopped.map(Task::desired),
        Some(TaskState::Shutdown),
        "with its new desired state"
    );
}

#[tokio::test]
async fn a_worker_that_did_not_ask_gets_the_whole_set_every_time() {
    let (d, _raft) = leading_dispatcher(initial());
    let mut session = open(&d, "n1", false).await;
    assert_eq!(ids(&next(&mut session).await.tasks), ["a", "b", "k"]);

    change_n1(&d).await;
    let msg = next(&mut session).await;
    assert!(!msg.incremental);
    assert_eq!(ids(&msg.tasks), ["a", "c", "k"]);
    assert!(msg.removed_task_ids.is_empty());
}

/// A store with an ingress network and nodes n1 (with its ingress address), n2 and n3
/// (without one yet).
fn with_ingress() -> StoreState {
    let ingress = shoal_proto::Network {
        id: "ing".into(),
        subnet: "198.18.128.0/24".into(),
        vni: 4096,
        spec: Some(shoal_proto::NetworkSpec {
            name: "ingress".into(),
            ingress: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = |id: &str, ip: &str, address: Option<&str>| shoal_proto::Node {
        id: id.into(),
        addr: format!("{ip}:2377"),
        attachments: address
            .map(|a| shoal_proto::NetworkAttachment {
                network: Some(ingress.clone()),
                address: a.into(),
                aliases: Vec::new(),
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    StoreState {
        nodes: [
            node("n1", "198.18.0.1", Some("198.18.128.2/24")),
            node("n2", "198.18.0.2", None),
            node("n3", "198.18.0.3", None),
        ]
        .into_iter()
        .map(|n| (n.id.clone(), n))
        .collect(),
        networks: [("ing".to_string(), ingress.clone())].into_iter().collect(),
        ..Default::default()
    }
}

async fn give_ingress_address(d: &Dispatcher, node: &str, address: &str) {
    d.store
        .propose(vec![action(Action::AllocateNode(
            shoal_proto::NodeAllocation {
                node_id: node.into(),
                attachments: vec![shoal_proto::NetworkAttachment {
                    network: Some(shoal_proto::Network {
                        id: "ing".into(),
                        ..Default::default()
                    }),
                    address: address.into(),
                    aliases: Vec::new(),
                }],
            },
        ))])
        .await
        .expect("the allocation applies");
}

/// The node endpoints of the ingress table in `msg`, and the table's local address.
fn ingress_of(msg: &SessionMessage) -> (Vec<(String, String)>, String) {
    let table = msg
        .networks
        .iter()
        .find(|t| t.network.as_ref().is_some_and(|n| n.id == "ing"));
    let endpoints = table
        .map(|t| {
            t.endpoints
                .iter()
                .map(|e| (e.node_id.clone(), e.address.clone()))
                .collect()
        })
        .unwrap_or_default();
    (
        endpoints,
        table.map(|t| t.local_address.clone()).unwrap_or_default(),
    )
}

fn eps(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect()
}

/// The peer tables are built once per change that wakes every session and shared; each
/// session still gets the tables of its own node, with its own address, and every join after
/// (a new node's ingress address) reaches every session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_gets_each_new_ingress_address_in_its_own_tables() {
    let (d, _raft) = leading_dispatcher(with_ingress());
    let mut s1 = open(&d, "n1", true).await;
    let mut s2 = open(&d, "n2", true).await;
    let only_n1 = eps(&[("n1", "198.18.128.2")]);
    assert_eq!(
        ingress_of(&next(&mut s1).await),
        (only_n1, "198.18.128.2/24".to_string())
    );
    // n2 has no ingress address yet: no table.
    assert!(next(&mut s2).await.networks.is_empty());

    // Each join reaches both sessions, each with its own address as the local one.
    let mut nodes = vec![("n1", "198.18.128.2")];
    for (node, ip) in [("n2", "198.18.128.3"), ("n3", "198.18.128.4")] {
        give_ingress_address(&d, node, &format!("{ip}/24")).await;
        nodes.push((node, ip));
        for (session, own) in [(&mut s1, "198.18.128.2/24"), (&mut s2, "198.18.128.3/24")] {
            assert_eq!(
                ingress_of(&next(session).await),
                (eps(&nodes), own.to_string()),
                "after {node} joined"
            );
        }
    }
}

/// The sessions' common part is built once per fan-out generation; a newer one serves an
/// older generation, and a newer generation builds it again from the store.
#[tokio::test]
async fn the_cluster_part_is_built_once_per_generation() {
    let (d, _raft) = leading_dispatcher(with_ingress());
    d.fanout.start(&d.store);
    let g = d.fanout.generation();
    let first = d.cluster_part(g);
    assert!(Arc::ptr_eq(&first, &d.cluster_part(g)), "reused");
    assert_eq!(
        first.peers.tables(&with_ingress(), "n2", [].iter()).len(),
        0
    );

    give_ingress_address(&d, "n2", "198.18.128.3/24").await;
    // The fan-out folds the entry on a task of its own.
    for _ in 0..100 {
        if d.fanout.generation() > g {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let newer = d.fanout.generation();
    assert!(newer > g, "a node's new address wakes every session");
    let second = d.cluster_part(newer);
    assert!(!Arc::ptr_eq(&first, &second), "built again");
    assert!(
        Arc::ptr_eq(&second, &d.cluster_part(g)),
        "serves the older one"
    );
    let tables = d.store.view(|st| second.peers.tables(st, "n2", [].iter()));
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].to_message().endpoints.len(), 2);
}
