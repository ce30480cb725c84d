//! Losing a worker's daemon while its host stays up: the session's connection closes at once,
//! and that is enough for the leader to act (no waiting for missed heartbeats).
//!
//! The swarm runs with a heartbeat period of 30 s (`swarm init --dispatcher-heartbeat 30s`), so
//! the heartbeat rule alone would take 90 s to mark a silent node down: anything faster than
//! that can only come from the closed connection.
//! - A daemon stopped and started again (a restart, an upgrade) comes back within the short
//!   grace and keeps its tasks: same task IDs, nothing rescheduled.
//! - A daemon killed with SIGKILL (containerd and the containers go on) is marked Unknown, then
//!   Down ("session closed"), and its tasks run on the other worker well within the 90 s; when
//!   the daemon comes back its old containers are stopped, and exactly one task per slot runs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::words;
use shoal_tests::listing::{live_tasks, wait_replicas};

/// Far below the 90 s the heartbeat rule would take with a 30 s period.
const RESCHEDULED: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(60);

/// (task ID, node ID) of every task of `service` that should run.
fn placed(tasks: &[Value]) -> BTreeSet<(String, String)> {
    tasks
        .iter()
        .map(|t| {
            (
                t["ID"].as_str().unwrap_or_default().to_string(),
                t["Node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn node_field(nodes: &[Value], id: &str, field: &str) -> String {
    nodes
        .iter()
        .find(|n| n["ID"] == id)
        .map(|n| n[field].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[test]
fn a_dead_daemon_loses_its_tasks_in_seconds_and_a_restarted_one_keeps_them() {
    let mut cluster = TestCluster::new(3);
    let manager = cluster.host(0);
    manager.swarm_init_with(&["--dispatcher-heartbeat", "30s"]);
    let token = manager.shoal_ok(&["swarm", "join-token", "-q", "worker"]);
    for i in 1..3 {
        cluster
            .host(i)
            .swarm_join(token.trim(), &cluster.host(0).swarm_addr());
    }
    cluster.load_busybox_everywhere();
    let ids = cluster.node_ids();
    let manager = cluster.host(0);
    manager.shoal_ok(&words(
        "service create -d --name work --replicas 4 --constraint node.role==worker busybox \
         sleep 3600",
    ));
    wait_replicas(manager, "work", 4, CONVERGE);
    let before = placed(&live_tasks(manager, "work"));
    assert!(
        before.iter().any(|(_, n)| n == &ids[2]),
        "no task on the worker to be restarted: {before:?}"
    );

    // A restart within the grace: same tasks, same places.
    cluster.host_mut(2).restart();
    let manager = cluster.host(0);
    manager.wait_for(CONVERGE, "the restarted worker Ready again", || {
        node_field(&manager.nodes(), &ids[2], "Status") == "Ready"
    });
    wait_replicas(manager, "work", 4, CONVERGE);
    assert_eq!(
        placed(&live_tasks(manager, "work")),
        before,
        "a daemon restart moved tasks"
    );

    // SIGKILL: the closed connection is the signal.
    let on_victim = before.iter().filter(|(_, n)| n == &ids[2]).count();
    cluster.host_mut(2).kill9();
    let killed = Instant::now();
    let manager = cluster.host(0);
    manager.wait_for(
        RESCHEDULED,
        "the killed worker's tasks running elsewhere",
        || {
            let live = live_tasks(manager, "work");
            live.len() == 4
                && live.iter().all(|t| {
                    t["Node"] == ids[1].as_str()
                        && t["CurrentState"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("Running"))
                })
        },
    );
    eprintln!(
        "{on_victim} tasks of the killed worker ran elsewhere {:.1} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    let nodes = manager.nodes();
    assert_eq!(node_field(&nodes, &ids[2], "Status"), "Down", "{nodes:?}");
    let inspected = manager.shoal_ok(&["node", "inspect", &ids[2]]);
    assert!(
        inspected.contains("session closed"),
        "node inspect does not say why the node is down: {inspected}"
    );

    // Back again: its stale containers go, one task per slot runs.
    cluster.host_mut(2).restart();
    let manager = cluster.host(0);
    manager.wait_for(CONVERGE, "the worker Ready again", || {
        node_field(&manager.nodes(), &ids[2], "Status") == "Ready"
    });
    cluster
        .host(2)
        .wait_for(CONVERGE, "the old containers stopped", || {
            cluster.host(2).running_containers_of("work").is_empty()
        });
    wait_replicas(manager, "work", 4, CONVERGE);
    let mut slots: Vec<String> = live_tasks(manager, "work")
        .iter()
        .map(|t| t["Name"].as_str().unwrap_or_default().to_string())
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 4, "not one task per slot: {slots:?}");
}
