//! What a host's CLI lists, parsed for tests and benchmarks: nodes and their manager status,
//! services, a service's tasks and where they are placed, replica counts. Every function drives
//! the real `shoal` binary of a [`ShoalHost`] (a `ClusterHost` dereferences to one) and reads
//! its JSON or template output.
//!
//! `try_*` functions return None when the command fails (no leader yet, a cut-off manager…),
//! for polling; the others panic with the command's error.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{wait_until, ShoalHost};

/// The CLI arguments of `service create -d --name NAME --replicas 0 busybox`: a write to the
/// swarm's store that starts no container, for tests of the store itself.
pub fn create_zero_replicas(name: &str) -> [&str; 8] {
    create_replicas(name, "0")
}

/// `service create -d --name NAME --replicas N busybox`.
pub fn create_replicas<'a>(name: &'a str, replicas: &'a str) -> [&'a str; 8] {
    [
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--replicas",
        replicas,
        "busybox",
    ]
}

/// One JSON object per line of `out`'s stdout, or None if the command failed or a line is no
/// JSON.
fn json_lines(out: &std::process::Output) -> Option<Vec<Value>> {
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// nodes
// ---------------------------------------------------------------------------------------------

/// `node ls --format json` on `host`, or None if the command fails (no leader yet, …).
pub fn try_nodes(host: &ShoalHost) -> Option<Vec<Value>> {
    json_lines(&host.shoal(&["node", "ls", "--format", "json"]))
}

/// Node ID → the string `field` ("Status", "ManagerStatus"…) of each of `nodes`.
pub fn by_node_id(nodes: &[Value], field: &str) -> BTreeMap<String, String> {
    nodes
        .iter()
        .map(|n| {
            (
                n["ID"].as_str().unwrap_or_default().to_string(),
                n[field].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Node ID → MANAGER STATUS ("Leader", "Reachable", "Unreachable" or "") as `host` lists them.
pub fn manager_statuses(nodes: &[Value]) -> BTreeMap<String, String> {
    by_node_id(nodes, "ManagerStatus")
}

/// The node ID `host` lists as Leader, if exactly one is.
pub fn leader_seen_by(host: &ShoalHost) -> Option<String> {
    let nodes = try_nodes(host)?;
    let leaders: Vec<String> = manager_statuses(&nodes)
        .into_iter()
        .filter(|(_, s)| s == "Leader")
        .map(|(id, _)| id)
        .collect();
    match leaders.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Waits until `host`'s `node ls` answers and satisfies `cond`; otherwise panics with `failure`
/// and the listing.
pub fn wait_node_ls(
    host: &ShoalHost,
    timeout: Duration,
    failure: &str,
    mut cond: impl FnMut(&[Value]) -> bool,
) {
    let ok = wait_until(timeout, || try_nodes(host).is_some_and(|n| cond(&n)));
    assert!(
        ok,
        "{failure} (within {timeout:?}); node ls:\n{}",
        String::from_utf8_lossy(&host.shoal(&["node", "ls"]).stdout)
    );
}

/// Waits until `host` lists every node of `ids` (and no other) as Ready.
pub fn wait_all_ready(host: &ShoalHost, ids: &[String], timeout: Duration) {
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    wait_node_ls(
        host,
        timeout,
        &format!("host does not list {want:?} as Ready"),
        |nodes| {
            let mut listed: Vec<&str> = nodes.iter().filter_map(|n| n["ID"].as_str()).collect();
            listed.sort();
            listed == want && nodes.iter().all(|n| n["Status"] == "Ready")
        },
    );
}

// ---------------------------------------------------------------------------------------------
// services and tasks
// ---------------------------------------------------------------------------------------------

/// The names of the services `host` lists (panics if `service ls` fails).
pub fn service_names(host: &ShoalHost) -> BTreeSet<String> {
    host.shoal_ok(&["service", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `service inspect SERVICE`: the service object as JSON.
pub fn inspect_service(host: &ShoalHost, service: &str) -> Value {
    let out = host.shoal_ok(&["service", "inspect", service]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v[0].clone()
}

/// `service ps SERVICE` with node IDs and whole errors, one JSON object per task (ID, Name,
/// Node, DesiredState, CurrentState, Error…), or None if the command fails.
pub fn try_tasks(host: &ShoalHost, service: &str) -> Option<Vec<Value>> {
    json_lines(&host.shoal(&[
        "service",
        "ps",
        "--no-resolve",
        "--no-trunc",
        "--format",
        "json",
        service,
    ]))
}

/// [`try_tasks`], panicking with the CLI's error if it fails.
pub fn tasks(host: &ShoalHost, service: &str) -> Vec<Value> {
    try_tasks(host, service).unwrap_or_else(|| {
        panic!(
            "`service ps {service}` failed: {}",
            host.shoal_err(&["service", "ps", service])
        )
    })
}

/// The tasks of `service` that should run (desired state Running), as `host` lists them.
pub fn live_tasks(host: &ShoalHost, service: &str) -> Vec<Value> {
    tasks(host, service)
        .into_iter()
        .filter(|t| t["DesiredState"] == "Running")
        .collect()
}

/// Node ID → how many tasks of `service` that should run are placed there.
pub fn placement(host: &ShoalHost, service: &str) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for t in live_tasks(host, service) {
        *by_node
            .entry(t["Node"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    by_node
}

/// The (running, desired) pair of `service ls`'s REPLICAS cell, e.g. "5/6" → (5, 6).
pub fn replica_counts(host: &ShoalHost, service: &str) -> Option<(usize, usize)> {
    let cell = host.replicas(service)?;
    let (running, desired) = cell.split_once('/')?;
    Some((running.trim().parse().ok()?, desired.trim().parse().ok()?))
}

/// Waits until `service ls` on `host` shows `service` at n/n.
pub fn wait_replicas(host: &ShoalHost, service: &str, n: usize, timeout: Duration) {
    host.wait_for(timeout, &format!("{service} at {n}/{n}"), || {
        replica_counts(host, service) == Some((n, n))
    });
}

// ---------------------------------------------------------------------------------------------
// tables
// ---------------------------------------------------------------------------------------------

/// The `service logs` lines of `name` without their task prefix (and a tty's `\r`).
pub fn log_lines(host: &ShoalHost, name: &str) -> Vec<String> {
    let out = host.shoal(&["service", "logs", name]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.split_once('|')
                .map_or(l, |(_, t)| t)
                .trim()
                .trim_end_matches('\r')
                .to_string()
        })
        .collect()
}
