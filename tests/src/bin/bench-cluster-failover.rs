//! Benchmark: how fast a swarm gets over losing a node, at default settings, on the multi-host
//! test harness (one network namespace, containerd and `shoal daemon` per host).
//!
//! (A) Leader failover, 3 managers: SIGKILL the leader's daemon, then retry
//!     `service create -d` through another manager as fast as the CLI answers; the time from
//!     the kill to the first acknowledged write. Then the killed daemon is started again, the
//!     cluster is waited on until all three managers are Reachable, and the next round kills
//!     whoever leads then. `--leader-runs N` rounds (default 10); median and max.
//! (B) Worker loss, 1 manager + 2 workers, a 6-replica service spread 2/2/2, at a random point
//!     of the victim's heartbeat cycle (6–11 s after the service converged); the time until
//!     `service ls` shows 6/6 again with none of the service's desired-running tasks on the lost
//!     node (i.e. its tasks are RUNNING elsewhere). Two kinds of loss, `--worker-runs N` rounds
//!     each (default 5); median and max:
//!     - the worker's daemon is SIGKILLed, its host stays up: the kernel closes the session's
//!       connection, the node is Unknown at once and Down 2 s later (target < 5 s);
//!     - the worker's link is cut: the host goes silent, and is Down 3 heartbeat periods (15 s)
//!       after it was last heard from, so this is 10–15 s plus rescheduling (target < 16 s).
//!     The worker is then brought back (restarted, or its link healed) and the service
//!     recreated, so that every round starts from a 2/2/2 spread.
//!
//! Not a test: it asserts nothing about speed; it prints the figures.
//! Usage: `bench-cluster-failover [--leader-runs N] [--worker-runs N]` (run by
//! `bench/cluster_failover.sh`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_tests::cluster::{ClusterHost, TestCluster};
use shoal_tests::daemon::wait_until;
use shoal_tests::listing::{
    create_zero_replicas, leader_seen_by, placement, replica_counts, try_nodes,
};

/// How often the CLI is polled while timing: short against the seconds measured, long enough
/// not to starve the daemons of the two cores.
const POLL: Duration = Duration::from_millis(50);
const TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> Result<()> {
    let (leader_runs, worker_runs) = parse_args()?;
    let leader = if leader_runs > 0 {
        bench_leader_failover(leader_runs)?
    } else {
        Vec::new()
    };
    let (killed, cut) = if worker_runs > 0 {
        (
            bench_worker_loss(worker_runs, Loss::DaemonKilled)?,
            bench_worker_loss(worker_runs, Loss::LinkCut)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    println!();
    if !leader.is_empty() {
        report(
            "(A) leader kill -9 -> first write accepted via another manager",
            &leader,
            "target: median < 3 s",
        );
    }
    if !killed.is_empty() {
        report(
            "(B) worker daemon kill -9, host up -> its tasks running elsewhere",
            &killed,
            "target: < 5 s",
        );
        report(
            "(B) worker link cut, host silent -> its tasks running elsewhere",
            &cut,
            "target: < 16 s",
        );
    }
    Ok(())
}

fn report(label: &str, runs: &[Duration], target: &str) {
    let mut sorted = runs.to_vec();
    sorted.sort();
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2
    };
    let all: Vec<String> = runs
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    println!("{label}");
    println!(
        "    runs {}: median {:.2} s, min {:.2} s, max {:.2} s ({target})",
        runs.len(),
        median.as_secs_f64(),
        sorted[0].as_secs_f64(),
        sorted[sorted.len() - 1].as_secs_f64()
    );
    println!("    each (s): {}", all.join(" "));
}

// ---------------------------------------------------------------------------------------------
// (A)
// ---------------------------------------------------------------------------------------------

fn bench_leader_failover(runs: usize) -> Result<Vec<Duration>> {
    let mut cluster = TestCluster::new(3);
    cluster.form(3, 0);
    let ids = cluster.node_ids();
    let mut times = Vec::new();
    for run in 0..runs {
        wait_healthy_managers(&cluster, &ids)?;
        let leader_id = (0..3)
            .find_map(|i| leader_seen_by(cluster.host(i)))
            .context("no leader before the kill")?;
        let leader = ids
            .iter()
            .position(|id| *id == leader_id)
            .context("the leader is not one of the hosts")?;
        // Writes go through the next manager after the leader.
        let via = (leader + 1) % 3;
        let name = format!("after-kill-{run}");
        let started = Instant::now();
        cluster.host_mut(leader).kill9();
        let mut attempts = 0;
        let accepted = loop {
            attempts += 1;
            let out = cluster.host(via).shoal(&create_zero_replicas(&name));
            if out.status.success() {
                break Some(started.elapsed());
            }
            if started.elapsed() > TIMEOUT {
                break None;
            }
            std::thread::sleep(POLL);
        };
        let Some(took) = accepted else {
            bail!("run {run}: no write accepted through host {via} within {TIMEOUT:?}");
        };
        println!(
            "(A) run {run}: killed leader host {leader}, write via host {via} accepted after \
             {:.3} s ({attempts} attempts)",
            took.as_secs_f64()
        );
        times.push(took);
        cluster.host_mut(leader).restart();
    }
    Ok(times)
}

/// Waits until every manager lists one leader and the other two Reachable, all Ready.
fn wait_healthy_managers(cluster: &TestCluster, ids: &[String]) -> Result<()> {
    if !cluster.wait_healthy(3, ids.len(), TIMEOUT) {
        bail!("the managers did not all become Reachable again within {TIMEOUT:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (B)
// ---------------------------------------------------------------------------------------------

const REPLICAS: usize = 6;
/// The daemons' default `--dispatcher-heartbeat`.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);
/// Time after convergence before the kill, plus a random part of a heartbeat period.
const SETTLE: Duration = Duration::from_secs(6);

/// A duration in `[0, max)` from the clock's nanoseconds: enough to spread kills over the
/// heartbeat cycle.
fn random_below(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos() as u64;
    Duration::from_nanos(nanos.wrapping_mul(2654435761) % max.as_nanos() as u64)
}

/// How a worker is lost.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// SIGKILL of its daemon; containerd, the containers and the host's network go on.
    DaemonKilled,
    /// Its link to the other hosts is cut: nothing it sends arrives, nothing is closed.
    LinkCut,
}

fn bench_worker_loss(runs: usize, loss: Loss) -> Result<Vec<Duration>> {
    let mut cluster = TestCluster::new(3);
    cluster.form(1, 2);
    cluster.load_busybox_everywhere();
    let ids = cluster.node_ids();
    let mut times = Vec::new();
    for run in 0..runs {
        let victim = 1 + run % 2;
        let name = format!("web{run}");
        let replicas = REPLICAS.to_string();
        if !wait_until(TIMEOUT, || manager_nodes_ready(cluster.host(0))) {
            bail!("run {run}: not every node is Ready");
        }
        cluster.host(0).shoal_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            &name,
            "--replicas",
            &replicas,
            "busybox",
            "sleep",
            "3600",
        ]);
        let manager = cluster.host(0);
        let spread_evenly = wait_until(TIMEOUT, || {
            replica_counts(manager, &name) == Some((REPLICAS, REPLICAS))
                && placement(manager, &name).get(&ids[victim]) == Some(&(REPLICAS / 3))
        });
        if !spread_evenly {
            bail!(
                "run {run}: {name} did not reach {REPLICAS}/{REPLICAS} spread over 3 nodes: {:?}",
                placement(manager, &name)
            );
        }
        // A worker's status reports count as heartbeats, and it just reported its tasks
        // running: killing it now would always hit the worst case (a full 3 periods of grace).
        // Settle, and kill at an arbitrary point of its heartbeat cycle, as a crash would.
        std::thread::sleep(SETTLE + random_below(HEARTBEAT_PERIOD));
        let started = Instant::now();
        match loss {
            Loss::DaemonKilled => cluster.host_mut(victim).kill9(),
            Loss::LinkCut => cluster.cut(victim),
        }
        let manager = cluster.host(0);
        let mut moved = None;
        while started.elapsed() < TIMEOUT {
            if replica_counts(manager, &name) == Some((REPLICAS, REPLICAS))
                && !placement(manager, &name).contains_key(&ids[victim])
            {
                moved = Some(started.elapsed());
                break;
            }
            std::thread::sleep(POLL);
        }
        let Some(took) = moved else {
            bail!("run {run}: the dead worker's tasks did not run elsewhere within {TIMEOUT:?}");
        };
        println!(
            "(B) run {run}: worker host {victim} lost ({loss:?}); its {} tasks running \
             elsewhere after {:.3} s",
            REPLICAS / 3,
            took.as_secs_f64()
        );
        times.push(took);
        // Back to a clean 3-node start: the service goes, the worker comes back (its old
        // containers are stopped by its agent), and the next round creates a new service.
        cluster.host(0).shoal_ok(&["service", "rm", &name]);
        match loss {
            Loss::DaemonKilled => cluster.host_mut(victim).restart(),
            Loss::LinkCut => cluster.heal(victim),
        }
        let host = cluster.host(victim);
        let clean = wait_until(TIMEOUT, || host.running_container_ids().is_empty());
        if !clean {
            bail!("run {run}: the restarted worker kept containers of the removed service");
        }
    }
    Ok(times)
}

fn manager_nodes_ready(manager: &ClusterHost) -> bool {
    try_nodes(manager).is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["Status"] == "Ready"))
}

fn parse_args() -> Result<(usize, usize)> {
    let mut leader_runs = 10;
    let mut worker_runs = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--leader-runs" => &mut leader_runs,
            "--worker-runs" => &mut worker_runs,
            other => bail!(
                "unknown argument {other}; usage: bench-cluster-failover [--leader-runs N] \
                 [--worker-runs N]"
            ),
        };
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a number"))?;
        *target = value
            .parse()
            .with_context(|| format!("{arg} {value}: not a number"))?;
    }
    Ok((leader_runs, worker_runs))
}
