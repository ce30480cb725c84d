//! Multi-node swarms end to end, the tasks' side: where tasks run as nodes die, drain or carry
//! labels. Real daemons and containerds, one per network namespace, on a private bridge (see
//! `shoal_tests::cluster`); every check goes through the `shoal` CLI of the hosts, and what
//! runs is checked in each host's containerd as well.
//!
//! - a dead worker and a drained node (their tasks move; a drain never takes more than one
//!   task away at a time);
//! - placement (label constraints, global services, max replicas per node, tasks that fit
//!   nowhere stay pending with the reason).
//!
//! The managers' side (leader failover, partitions, promotion) is in `cluster.rs`. The tests
//! run the daemons with a 1 s `--dispatcher-heartbeat` (a node is DOWN after 3 s of silence)
//! to keep the suite short; `bench/cluster_failover.sh` measures the defaults.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::words;
use shoal_tests::listing::{live_tasks, placement, replica_counts, tasks, wait_replicas};

/// How long a service may take to converge on a loaded two-core machine.
const CONVERGE: Duration = Duration::from_secs(90);
/// The daemons' heartbeat period in these tests: a silent node is DOWN after three of them.
const HEARTBEAT: &[&str] = &["--dispatcher-heartbeat", "1s"];

/// Issue 3, point 4: a worker dies (machine gone: cut off, daemon and containerd killed);
/// after the heartbeat timeout its tasks run elsewhere. Then a node is drained: its tasks
/// move too, and meanwhile the service never has fewer than desired − 1 tasks running.
#[test]
fn tasks_leave_a_dead_worker_and_a_drained_node() {
    let mut cluster = TestCluster::new_with(3, HEARTBEAT);
    cluster.form(1, 2);
    let ids = cluster.node_ids();
    cluster.load_busybox_everywhere();
    let manager = cluster.host(0);
    manager.shoal_ok(&words(
        "service create -d --name web --replicas 6 busybox sleep 600",
    ));
    wait_replicas(manager, "web", 6, CONVERGE);
    let spread = placement(manager, "web");
    assert_eq!(
        spread,
        ids.iter().map(|id| (id.clone(), 2)).collect(),
        "6 tasks over 3 nodes should spread 2/2/2"
    );
    assert_eq!(cluster.running_per_host(&[0, 1, 2], "web"), vec![2, 2, 2]);

    // Worker 1 dies.
    cluster.power_off(1);
    let died = Instant::now();
    let manager = cluster.host(0);
    manager.wait_for(CONVERGE, "web back at 6/6 without the dead node", || {
        replica_counts(manager, "web") == Some((6, 6))
            && !placement(manager, "web").contains_key(&ids[1])
            && cluster
                .running_per_host(&[0, 2], "web")
                .iter()
                .sum::<usize>()
                == 6
    });
    eprintln!("tasks moved off the dead worker after {:?}", died.elapsed());
    let down = manager
        .nodes()
        .into_iter()
        .find(|n| n["ID"] == ids[1].as_str())
        .expect("the dead node is still listed");
    assert_eq!(down["Status"], "Down", "the dead node: {down:?}");
    // Its replacements were new tasks: the old ones are shut down, not moved.
    let old: Vec<Value> = tasks(manager, "web")
        .into_iter()
        .filter(|t| t["Node"] == ids[1].as_str())
        .collect();
    assert_eq!(old.len(), 2, "the dead node's tasks: {old:?}");
    assert!(
        old.iter().all(|t| t["DesiredState"] != "Running"),
        "the dead node's tasks should no longer be desired running: {old:?}"
    );

    // Drain worker 2 and watch the running count while its tasks move: `service ls` as fast
    // as the CLI answers, the placement only once the count is back.
    manager.shoal_ok(&["node", "update", "--availability", "drain", &ids[2]]);
    let mut lowest = usize::MAX;
    let mut samples = 0;
    let deadline = Instant::now() + CONVERGE;
    let moved = loop {
        if let Some((running, desired)) = replica_counts(manager, "web") {
            assert_eq!(desired, 6, "the drain changed the desired count");
            samples += 1;
            lowest = lowest.min(running);
            if running == 6 && placement(manager, "web") == BTreeMap::from([(ids[0].clone(), 6)]) {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(
        moved,
        "the drained node's tasks did not move to the manager: {:?}",
        placement(manager, "web")
    );
    eprintln!("drain: lowest running count {lowest}/6 over {samples} samples");
    assert!(
        lowest >= 5,
        "the running count dropped to {lowest}/6 while draining (at most one task may be \
         moving at a time)"
    );
    manager.wait_for(CONVERGE, "the drained node's containers to stop", || {
        cluster.running_per_host(&[0, 2], "web") == vec![6, 0]
    });
    let drained = manager
        .nodes()
        .into_iter()
        .find(|n| n["ID"] == ids[2].as_str())
        .expect("the drained node is listed");
    assert_eq!(drained["Availability"], "Drain", "{drained:?}");
    assert_eq!(drained["Status"], "Ready", "{drained:?}");
}

/// Issue 3, point 5: placement. A label added with `node update --label-add` steers a
/// constraint; `--constraint node.role==manager` keeps tasks on managers; a global service
/// runs one task per node; `--replicas-max-per-node` caps a node; a task that fits nowhere
/// stays Pending and says why.
#[test]
fn placement_follows_labels_roles_global_mode_and_explains_pending_tasks() {
    let cluster = TestCluster::new_with(3, HEARTBEAT);
    cluster.form(1, 2);
    let ids = cluster.node_ids();
    cluster.load_busybox_everywhere();
    let manager = cluster.host(0);

    manager.shoal_ok(&["node", "update", "--label-add", "zone=east", &ids[1]]);
    let inspected = manager.shoal_ok(&["node", "inspect", &ids[1]]);
    assert!(
        inspected.contains("zone") && inspected.contains("east"),
        "node inspect does not show the label: {inspected}"
    );
    manager.shoal_ok(&words(
        "service create -d --name east --replicas 3 --constraint node.labels.zone==east \
         busybox sleep 600",
    ));
    manager.shoal_ok(&words(
        "service create -d --name mgr --replicas 2 --constraint node.role==manager \
         busybox sleep 600",
    ));
    manager.shoal_ok(&words(
        "service create -d --name everywhere --mode global busybox sleep 600",
    ));
    manager.shoal_ok(&words(
        "service create -d --name capped --replicas 4 --replicas-max-per-node 1 \
         busybox sleep 600",
    ));
    manager.shoal_ok(&words(
        "service create -d --name nowhere --replicas 1 --constraint node.labels.zone==mars \
         busybox sleep 600",
    ));

    wait_replicas(manager, "east", 3, CONVERGE);
    assert_eq!(
        placement(manager, "east"),
        BTreeMap::from([(ids[1].clone(), 3)])
    );
    wait_replicas(manager, "mgr", 2, CONVERGE);
    assert_eq!(
        placement(manager, "mgr"),
        BTreeMap::from([(ids[0].clone(), 2)])
    );
    wait_replicas(manager, "everywhere", 3, CONVERGE);
    assert_eq!(
        placement(manager, "everywhere"),
        ids.iter().map(|id| (id.clone(), 1)).collect()
    );
    manager.wait_for(CONVERGE, "containers of every service", || {
        cluster.running_per_host(&[0, 1, 2], "east") == vec![0, 3, 0]
            && cluster.running_per_host(&[0, 1, 2], "mgr") == vec![2, 0, 0]
            && cluster.running_per_host(&[0, 1, 2], "everywhere") == vec![1, 1, 1]
            && cluster.running_per_host(&[0, 1, 2], "capped") == vec![1, 1, 1]
    });

    // Tasks that fit nowhere: pending, with swarmkit's explanation.
    let pending_with = |service: &str, want: usize, reason: &str| {
        manager.wait_for(
            CONVERGE,
            &format!("{want} pending task(s) of {service} saying {reason:?}"),
            || {
                let pending: Vec<Value> = live_tasks(manager, service)
                    .into_iter()
                    .filter(|t| {
                        t["CurrentState"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("Pending"))
                    })
                    .collect();
                pending.len() == want
                    && pending.iter().all(|t| {
                        t["Error"]
                            .as_str()
                            .is_some_and(|e| e.contains("no suitable node") && e.contains(reason))
                            && t["Node"] == ""
                    })
            },
        );
    };
    pending_with("nowhere", 1, "constraint");
    pending_with("capped", 1, "max replicas per node");
    assert_eq!(replica_counts(manager, "nowhere"), Some((0, 1)));
    assert_eq!(replica_counts(manager, "capped"), Some((3, 4)));
    let table = manager.shoal_ok(&["service", "ps", "nowhere"]);
    assert!(
        table.contains("Pending") && table.contains("no suitable node"),
        "service ps nowhere:\n{table}"
    );

    // The pending task is placed as soon as a node fits: label node 2 for mars.
    manager.shoal_ok(&["node", "update", "--label-add", "zone=mars", &ids[2]]);
    wait_replicas(manager, "nowhere", 1, CONVERGE);
    assert_eq!(
        placement(manager, "nowhere"),
        BTreeMap::from([(ids[2].clone(), 1)])
    );
    // Removing a label does not evict running tasks by itself in Docker either; but a task
    // of a new service needing it no longer fits.
    manager.shoal_ok(&["node", "update", "--label-rm", "zone", &ids[1]]);
    manager.shoal_ok(&words(
        "service create -d --name east2 --replicas 1 --constraint node.labels.zone==east \
         busybox sleep 600",
    ));
    pending_with("east2", 1, "constraint");
}
