//! Fault injection: clients write and read through random managers while a nemesis kills,
//! cuts off and restarts nodes; afterwards the history is checked (`shoal_tests::history`).
//!
//! The swarm: 3 managers and 2 workers on the multi-host harness. Three client threads each own
//! their services and, through a manager picked at random per request, create them, scale them,
//! update their environment (a rolling update each time) and read them back (`service inspect`), recording every request with its start,
//! end and outcome. Meanwhile the nemesis runs a fixed list of rounds: kill -9 of the leader
//! (right after asking for a large scale-up, so the leader dies while the service scales), a
//! follower cut off and healed, a worker's daemon killed and restarted, the leader cut off, a
//! follower killed, a worker's daemon restarted. Each fault lasts a few seconds; the swarm is
//! waited on until every node is Ready and every manager Reachable before the next.
//!
//! Checked afterwards: every acknowledged create is present and every service holds its last
//! acknowledged scale and environment change (or a later write of unknown outcome); reads never went back in
//! time; every name kept one ID and no two services share one; once converged, exactly one task
//! runs per slot, also on the containers' side; and once every service is removed, no host has
//! a container, a container snapshot, a mount, a network namespace, a link, a route or an
//! nftables rule more than before the run. The counts (operations, faults, anomalies) are
//! printed.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::{run_with_deadline, shoal_bin, wait_until, words, ShoalHost};
use shoal_tests::history::{anomalies, Final, Op, Outcome, Request};
use shoal_tests::listing::{leader_seen_by, live_tasks};
use shoal_tests::tasknet::{node_state, NodeNetworkState};

const CLIENTS: usize = 3;
/// A request through a cut-off manager waits for its forward to fail.
const REQUEST_DEADLINE: Duration = Duration::from_secs(25);
const HEALTHY: Duration = Duration::from_secs(90);
const CONVERGE: Duration = Duration::from_secs(120);
const BIG: &str = "big";
const BIG_REPLICAS: u64 = 12;

/// A small xorshift generator: the run's choices, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Runs the CLI against the daemon at `api`; the outcome and stdout.
fn call(api: &str, args: &[String]) -> (Outcome, String) {
    let mut cmd = Command::new(shoal_bin());
    cmd.arg("-H").arg(api).args(args).env_remove("SHOAL_HOST");
    match run_with_deadline(&mut cmd, REQUEST_DEADLINE) {
        Some(out) if out.status.success() => (
            Outcome::Ok,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
        Some(out) => (
            Outcome::Unknown(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            String::new(),
        ),
        None => (Outcome::Unknown("no answer in time".into()), String::new()),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// One client: its own services, requests through random managers until `stop`.
fn client(
    c: usize,
    managers: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Op>>>,
) {
    let mut rng = Rng(seed);
    let mut mine: Vec<String> = Vec::new();
    let mut seq = 0u64;
    let mut created = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let api = &managers[rng.below(managers.len())];
        let roll = rng.below(10);
        let (service, request, args) = if mine.len() < 2 || roll == 0 {
            created += 1;
            let name = format!("c{c}s{created}");
            mine.push(name.clone());
            let args = strings(&[
                "service",
                "create",
                "-d",
                "--name",
                &name,
                "--replicas",
                "1",
                "busybox",
                "sleep",
                "3600",
            ]);
            (name, Request::Create, args)
        } else {
            let name = mine[rng.below(mine.len())].clone();
            seq += 1;
            match roll {
                1..=3 => {
                    let n = rng.below(4) as u64;
                    let args = strings(&["service", "scale", "-d", &format!("{name}={n}")]);
                    (name, Request::Scale(n), args)
                }
                4..=6 => {
                    let env = format!("SEQ={seq}");
                    let args = strings(&["service", "update", "-d", "--env-add", &env, &name]);
                    (name, Request::Env(seq), args)
                }
                _ => {
                    let args = strings(&["service", "inspect", &name]);
                    (name, Request::Read(None), args)
                }
            }
        };
        let start = Instant::now();
        let (outcome, out) = call(api, &args);
        let request = match request {
            Request::Read(_) => Request::Read(read_version(&out)),
            other => other,
        };
        if let Outcome::Unknown(why) = &outcome {
            if why.contains("no such service") {
                // Its create was not acknowledged and did not land: stop using the name.
                mine.retain(|n| *n != service);
            } else {
                // A daemon that is down refuses at once: do not spin on it.
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        log.lock().unwrap_or_else(|e| e.into_inner()).push(Op {
            client: c,
            service,
            request,
            start,
            end: Instant::now(),
            outcome,
        });
    }
}

/// The ID and version `service inspect` printed.
fn read_version(out: &str) -> Option<(String, u64)> {
    let v: Value = serde_json::from_str(out).ok()?;
    let s = &v[0];
    Some((
        s["id"].as_str()?.to_string(),
        s["meta"]["version"].as_u64()?,
    ))
}

/// Waits until every node is Ready and the three managers show one leader, two Reachable.
fn wait_healthy(cluster: &TestCluster) {
    assert!(
        cluster.wait_healthy(3, 5, HEALTHY),
        "the swarm did not recover within {HEALTHY:?}"
    );
}

/// The host index of the leader, and of a follower.
fn leader_and_follower(cluster: &TestCluster, ids: &[String]) -> (usize, usize) {
    let leader_id = (0..3)
        .find_map(|i| leader_seen_by(cluster.host(i)))
        .expect("a leader");
    let leader = ids
        .iter()
        .position(|id| *id == leader_id)
        .expect("the leader is a host");
    (leader, (leader + 1) % 3)
}

/// What a host holds that a run could leak.
#[derive(Debug, PartialEq)]
struct Footprint {
    network: NodeNetworkState,
    containers: usize,
    active_snapshots: usize,
    mounts: BTreeSet<String>,
}

fn footprint(host: &ShoalHost) -> Footprint {
    let dir = host.dir().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&dir))
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
        .collect();
    Footprint {
        network: node_state(host),
        containers: host.containers().len(),
        active_snapshots: host
            .snapshots()
            .iter()
            .filter(|s| s.kind == "Active")
            .count(),
        mounts,
    }
}

#[test]
fn a_swarm_under_faults_keeps_every_acknowledged_write_and_one_task_per_slot() {
    let mut cluster = TestCluster::new(5);
    cluster.form(3, 2);
    cluster.load_busybox_everywhere();
    let ids = cluster.node_ids();
    let before: Vec<Footprint> = (0..5).map(|i| footprint(cluster.host(i))).collect();
    let managers: Vec<String> = (0..3).map(|i| cluster.host(i).api_url()).collect();
    cluster.host(0).shoal_ok(&words(
        "service create -d --name big --replicas 1 busybox sleep 3600",
    ));

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    println!("fault injection seed {seed}");
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (managers, stop, log) = (managers.clone(), stop.clone(), log.clone());
            let seed = seed.wrapping_mul(c as u64 + 7) | 1;
            std::thread::spawn(move || client(c, managers, seed, stop, log))
        })
        .collect();

    let mut faults = Vec::new();
    for round in 0..6 {
        wait_healthy(&cluster);
        let (leader, follower) = leader_and_follower(&cluster, &ids);
        let worker = 3 + round % 2;
        let fault = match round {
            0 => {
                // The leader dies while the service scales.
                cluster.host(follower).shoal_ok(&[
                    "service",
                    "scale",
                    "-d",
                    &format!("{BIG}={BIG_REPLICAS}"),
                ]);
                cluster.host_mut(leader).kill9();
                std::thread::sleep(Duration::from_secs(3));
                cluster.host_mut(leader).restart();
                format!("kill -9 leader host {leader} during a scale-up")
            }
            1 | 3 => {
                let victim = if round == 1 { follower } else { leader };
                cluster.cut(victim);
                std::thread::sleep(Duration::from_secs(5));
                cluster.heal(victim);
                format!(
                    "cut and heal host {victim} ({})",
                    if round == 1 { "follower" } else { "leader" }
                )
            }
            2 => {
                cluster.host_mut(worker).kill9();
                std::thread::sleep(Duration::from_secs(3));
                cluster.host_mut(worker).restart();
                format!("kill -9 worker host {worker}")
            }
            4 => {
                cluster.host_mut(follower).kill9();
                std::thread::sleep(Duration::from_secs(3));
                cluster.host_mut(follower).restart();
                format!("kill -9 follower host {follower}")
            }
            _ => {
                cluster.host_mut(worker).restart();
                format!("restart worker host {worker}")
            }
        };
        println!("fault {round}: {fault}");
        faults.push(fault);
    }
    wait_healthy(&cluster);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client thread panicked");
    }
    let ops = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));

    // Converged: every service at its replicas, one running task per slot.
    let manager = cluster.host(0);
    let listed = manager.service_ls();
    let names: Vec<String> = listed
        .iter()
        .filter_map(|r| r.get("NAME").cloned())
        .collect();
    let mut finals = BTreeMap::new();
    for name in &names {
        let v: Value = serde_json::from_str(&manager.shoal_ok(&["service", "inspect", name]))
            .expect("inspect JSON");
        let s = &v[0];
        let replicas = s["spec"]["replicas"].as_u64().unwrap_or(0);
        finals.insert(
            name.clone(),
            Final {
                id: s["id"].as_str().unwrap_or_default().to_string(),
                replicas,
                seq: s["spec"]["container"]["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str()?.strip_prefix("SEQ="))
                    .find_map(|v| v.parse().ok()),
            },
        );
        manager.wait_for(
            CONVERGE,
            &format!("{name} at {replicas}/{replicas}"),
            || {
                let live = live_tasks(manager, name);
                let running: Vec<&Value> = live
                    .iter()
                    .filter(|t| {
                        t["CurrentState"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("Running"))
                    })
                    .collect();
                let slots: BTreeSet<&str> =
                    running.iter().filter_map(|t| t["Name"].as_str()).collect();
                live.len() as u64 == replicas
                    && running.len() == live.len()
                    && slots.len() == live.len()
            },
        );
        // Containers of stopped tasks take their stop grace period to go (`sleep` ignores
        // SIGTERM): wait for the containers' side too.
        let containers = || -> usize {
            (0..5)
                .map(|i| cluster.host(i).running_containers_of(name).len())
                .sum()
        };
        let one_each = wait_until(CONVERGE, || containers() as u64 == replicas);
        assert!(
            one_each,
            "{name}: {} running containers for {replicas} tasks",
            containers()
        );
    }
    assert_eq!(finals.get(BIG).map(|f| f.replicas), Some(BIG_REPLICAS));

    let found = anomalies(&ops, &finals);
    let acked = ops.iter().filter(|o| o.outcome == Outcome::Ok).count();
    println!(
        "fault injection: {} operations ({acked} acknowledged, {} of unknown outcome), {} \
         faults injected, {} services, {} anomalies",
        ops.len(),
        ops.len() - acked,
        faults.len(),
        finals.len(),
        found.len()
    );
    // Also kept in a file, which scripts/test.sh prints: a passing test's output is captured.
    let summary = format!(
        "fault injection (seed {seed}): {} operations ({acked} acknowledged), {} faults \
         injected ({}), {} services, {} anomalies\n",
        ops.len(),
        faults.len(),
        faults.join("; "),
        finals.len(),
        found.len()
    );
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-injection-summary.txt"),
        &summary,
    );
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for op in &ops {
        if let Outcome::Unknown(why) = &op.outcome {
            *reasons.entry(why.chars().take(120).collect()).or_default() += 1;
        }
    }
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (why, n) in reasons.iter().take(6) {
        println!("  {n} × {why}");
    }
    assert!(found.is_empty(), "anomalies:\n{}", found.join("\n"));
    assert!(
        ops.len() >= 30,
        "too few operations to mean anything: {}",
        ops.len()
    );

    // Nothing leaked once everything is removed.
    for name in &names {
        manager.shoal_ok(&["service", "rm", name]);
    }
    for (i, expected) in before.iter().enumerate() {
        let host = cluster.host(i);
        let clean = wait_until(CONVERGE, || footprint(host) == *expected);
        assert!(
            clean,
            "host {i} kept something after every service went: before {expected:#?}, after {:#?}",
            footprint(host)
        );
    }
}
