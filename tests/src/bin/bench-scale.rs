//! Benchmark: the control plane at scale. Three managers (real `shoal daemon`s, each in a network
//! namespace of a test network in 198.18.0.0/15, drained so that no task lands on them) and N
//! hollow nodes (`hollow-nodes`: the real agent over real mutual TLS, starting no container;
//! see `shoal_tests::hollow`), then S services of R replicas created at once. Measures:
//!
//! - how long the N hollow nodes took to join (certificates) and to be listed Ready;
//! - from the first `service create` on: when every create returned, when every task had reached
//!   its hollow node (all assigned and delivered: the nodes count what they receive), when the
//!   nodes had started every task (and so reported RUNNING), and when `service ls` showed every
//!   service at R/R (RUNNING in the store);
//! - `service ls` and `service ps s0` latency (p50/p99, through the CLI) sampled in a loop each
//!   during that ramp;
//! - the pipeline's phases over time: every [`PHASE_POLL`] a follower's metrics endpoint
//!   (`shoal_tasks` by state; a follower applies every entry the leader does, a few ms later,
//!   and the leader is spared the scrape: its page carries every task's usage series) and the
//!   hollow nodes' counts are sampled, and for each phase
//!   (created, allocated, assigned, delivered, started, RUNNING in the store) the time it took
//!   to reach a quarter, half, 90 % and all of the tasks is printed: the phase that ends last
//!   after the one before it ended is the critical path;
//! - the leader's peak RSS (VmHWM) and the CPU seconds it used during the ramp (host 0, the
//!   first leader), and how many leadership changes host 0 saw meanwhile: creates that meet
//!   an election are retried, as a user would.
//!
//! The anchor: swarmkit's scheduler placed 100,000 tasks on 1,000 nodes in 22.6 s
//! (moby/swarmkit#193). Not a test: it asserts nothing about speed, it prints figures.
//!
//! Usage: `bench-scale [--nodes N] [--services S] [--replicas R] [--quick]` (defaults 1,000 ×
//! 100 × 1,000; `--quick`: 20 × 10 × 50); run by `bench/scale.sh`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_proto::TaskState;
use shoal_tests::bench::{
    cpu_seconds, machine_cpu_seconds, memory_kib, quantile, raise_nofile_limit,
};
use shoal_tests::cluster::{ClusterHost, TestCluster};
use shoal_tests::daemon::{shoal_bin, wait_until_every};
use shoal_tests::histogram::Histogram;
use shoal_tests::http::http_get;
use shoal_tests::table::parse_table;

const USAGE: &str = "usage: bench-scale [--nodes N] [--services S] [--replicas R] \
                     [--ramp-timeout SECS] [--quick]";
/// The published anchor (moby/swarmkit#193) and this target, in seconds.
const ANCHOR_S: f64 = 22.6;
const TARGET_S: f64 = 10.0;
/// Longest wait for the hollow nodes to join and be Ready, and for the ramp.
const JOIN_TIMEOUT: Duration = Duration::from_secs(600);
/// The default of `--ramp-timeout`.
const RAMP_TIMEOUT: Duration = Duration::from_secs(900);
/// How often progress is looked at while waiting.
const POLL: Duration = Duration::from_millis(100);
/// How often the leader's task counts are sampled for the phase breakdown.
const PHASE_POLL: Duration = Duration::from_millis(500);
/// The metrics port every manager listens on, inside its own network namespace.
const METRICS_PORT: u16 = 9464;
/// The manager whose metrics the phase breakdown reads: a follower not needed for the quorum
/// (the leader, host 0, and host 1 make one), so the scrape delays no commit.
const PHASE_HOST: usize = 2;
/// How many `service create`s run side by side.
const CREATORS: usize = 4;
/// How often one `service create` is tried while there is no leader.
const CREATE_ATTEMPTS: usize = 30;

struct Args {
    nodes: usize,
    services: usize,
    replicas: usize,
    /// How long the ramp may take before the run gives up (and says how far it got).
    ramp_timeout: Duration,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        nodes: 1000,
        services: 100,
        replicas: 1000,
        ramp_timeout: RAMP_TIMEOUT,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> Result<usize> {
            let v = args.next().context(USAGE)?;
            v.parse()
                .with_context(|| format!("{flag} {v}: not a number"))
        };
        match arg.as_str() {
            "--nodes" => a.nodes = number("--nodes")?,
            "--services" => a.services = number("--services")?,
            "--replicas" => a.replicas = number("--replicas")?,
            "--ramp-timeout" => {
                a.ramp_timeout = Duration::from_secs(number("--ramp-timeout")? as u64)
            }
            "--quick" => {
                a = Args {
                    nodes: 20,
                    services: 10,
                    replicas: 50,
                    ramp_timeout: a.ramp_timeout,
                }
            }
            _ => bail!("unknown argument {arg:?}; {USAGE}"),
        }
    }
    if a.nodes == 0 || a.services == 0 || a.replicas == 0 {
        bail!("--nodes, --services and --replicas must be at least 1");
    }
    Ok(a)
}

/// What the hollow nodes said, with when it was read.
#[derive(Default)]
struct Progress {
    joined_ms: Option<u64>,
    prepared: u64,
    started: u64,
    /// When `prepared` / `started` first reached the goal.
    all_prepared: Option<Instant>,
    all_started: Option<Instant>,
    goal: u64,
}

/// The `hollow-nodes` process; stopped (stdin closed, then killed) when dropped, which also
/// removes its directory.
struct Hollow {
    child: Child,
    dir: PathBuf,
}

impl Drop for Hollow {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_hollow(
    args: &Args,
    token: &str,
    manager: &str,
    addr: &str,
    work: &std::path::Path,
    progress: Arc<Mutex<Progress>>,
) -> Result<Hollow> {
    let bin = shoal_bin().with_file_name("hollow-nodes");
    let dir = work.join("hollow");
    let log = std::fs::File::create(work.join("hollow.log")).context("create hollow.log")?;
    let mut child = Command::new(&bin)
        .args(["--token", token, "--manager", manager, "--addr", addr])
        .args(["--nodes", &args.nodes.to_string()])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {} (built by bench/scale.sh)", bin.display()))?;
    let stdout = child.stdout.take().context("hollow-nodes' stdout")?;
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let words: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|w| w.parse().ok())
                .collect();
            let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
            match (line.split_whitespace().next(), words.as_slice()) {
                (Some("joined"), [_, ms]) => p.joined_ms = Some(*ms),
                (Some("tasks"), [prepared, started, _stopped]) => {
                    let now = Instant::now();
                    (p.prepared, p.started) = (*prepared, *started);
                    if p.goal > 0 && p.prepared >= p.goal {
                        p.all_prepared.get_or_insert(now);
                    }
                    if p.goal > 0 && p.started >= p.goal {
                        p.all_started.get_or_insert(now);
                    }
                }
                _ => {}
            }
        }
    });
    Ok(Hollow { child, dir })
}

/// Latencies of one CLI command run in a loop until `stop`.
fn sample_loop(
    leader: &ClusterHost,
    cmd: &[&str],
    stop: &AtomicBool,
    mut each: impl FnMut(&str),
) -> Vec<Duration> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let out = leader.shoal(cmd);
        samples.push(t.elapsed());
        if out.status.success() {
            each(&String::from_utf8_lossy(&out.stdout));
        }
        thread::sleep(Duration::from_millis(20));
    }
    samples
}

/// `service create -d NAME`; when the answer is "no quorum" or "may or may not take effect"
/// (an election under load), looks whether the service exists and tries again if not, as a
/// user would. Panics on any other refusal, and after [`CREATE_ATTEMPTS`]. Returns how long
/// the first attempt took (the CLI process included).
fn create_service(leader: &ClusterHost, name: &str, replicas: &str) -> Duration {
    let args = shoal_tests::listing::create_replicas(name, replicas);
    let started = Instant::now();
    let mut took = None;
    for _ in 0..CREATE_ATTEMPTS {
        let out = leader.shoal(&args);
        let took = *took.get_or_insert_with(|| started.elapsed());
        if out.status.success() {
            return took;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let exists = || leader.shoal(&["service", "inspect", name]).status.success();
        if err.contains("already exists") || (err.contains("may or may not") && exists()) {
            return took;
        }
        if !err.contains("no quorum") && !err.contains("may or may not") {
            panic!("service create {name}: {err}");
        }
        eprintln!("service create {name}: {}; retrying", err.trim());
        thread::sleep(Duration::from_secs(1));
        if exists() {
            return took;
        }
    }
    panic!("service create {name}: no leader to take it after {CREATE_ATTEMPTS} attempts");
}

/// How many leadership changes `host`'s daemon log records so far.
fn leader_changes(host: &ClusterHost) -> usize {
    host.daemon_log().matches("raft leadership changed").count()
}

/// Whether `service ls` shows every one of `services` at R/R.
fn all_running(table: &str, services: usize, replicas: usize) -> bool {
    let want = format!("{replicas}/{replicas}");
    let rows = parse_table(table);
    rows.len() == services
        && rows
            .iter()
            .all(|r| r.get("REPLICAS").map(String::as_str) == Some(want.as_str()))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    raise_nofile_limit()?;
    let total = (args.services * args.replicas) as u64;
    println!(
        "bench-scale: 3 managers, {} hollow nodes, {} services × {} replicas = {total} tasks",
        args.nodes, args.services, args.replicas
    );
    let work = tempfile::Builder::new()
        .prefix("shoal-bench-scale-")
        .tempdir()
        .context("create a work directory")?;

    // Declared before the hollow nodes, so that they stop before the managers do.
    let metrics_addr = format!("127.0.0.1:{METRICS_PORT}");
    let cluster = TestCluster::new_with(3, &["--metrics-addr", &metrics_addr]);
    let leader = cluster.host(0);
    // The ingress network is the address pool's first subnet, and every node takes an address
    // on it: a /21 holds a thousand nodes and more, where the default /24 holds 253 (as with
    // Docker, whose default ingress is a /24 too, a large swarm needs a larger one).
    leader.swarm_init_with(&["--default-addr-pool-mask-length", "21"]);
    let manager_token = leader
        .shoal_ok(&["swarm", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    for host in &cluster.hosts()[1..] {
        host.swarm_join(&manager_token, &leader.swarm_addr());
    }
    if !cluster.wait_healthy(3, 3, JOIN_TIMEOUT) {
        bail!("the 3 managers did not form a healthy swarm within {JOIN_TIMEOUT:?}");
    }
    for id in cluster.node_ids() {
        leader.shoal_ok(&["node", "update", "--availability", "drain", &id]);
    }
    let token = leader
        .shoal_ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();

    let progress = Arc::new(Mutex::new(Progress {
        goal: total,
        ..Default::default()
    }));
    let join_started = Instant::now();
    let hollow_addr = cluster.net().bridge_addr().to_string();
    let hollow = start_hollow(
        &args,
        &token,
        &leader.swarm_addr(),
        &hollow_addr,
        work.path(),
        progress.clone(),
    )?;
    let expected_nodes = args.nodes + 3;
    let ready = wait_until_every(Duration::from_millis(500), JOIN_TIMEOUT, || {
        let out = leader.shoal(&["node", "ls"]);
        let rows = parse_table(&String::from_utf8_lossy(&out.stdout));
        rows.len() == expected_nodes
            && rows
                .iter()
                .all(|r| r.get("STATUS").map(String::as_str) == Some("Ready"))
    });
    if !ready {
        bail!(
            "{} hollow nodes were not all Ready within {JOIN_TIMEOUT:?}; see {}",
            args.nodes,
            work.path().join("hollow.log").display()
        );
    }
    let ready_after = join_started.elapsed();
    let joined_ms = progress.lock().map_or(None, |p| p.joined_ms);

    let pid = leader.daemon_pid().context("the leader's daemon runs")?;
    let server_before = ServerSide::read(&cluster)?;
    let cpu_before = cpu_seconds(pid)?;
    let split_before = CpuSplit::read(&cluster, &hollow)?;
    let changes_before = leader_changes(leader);
    let stop = AtomicBool::new(false);
    let running_at: Mutex<Option<Instant>> = Mutex::new(None);
    let t0 = Instant::now();
    let (created_after, creates, ls, ps, phases) = thread::scope(|s| -> Result<_> {
        let ls = s.spawn(|| {
            sample_loop(leader, &["service", "ls"], &stop, |table| {
                if all_running(table, args.services, args.replicas) {
                    running_at
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert_with(Instant::now);
                }
            })
        });
        let ps = s.spawn(|| sample_loop(leader, &["service", "ps", "s0"], &stop, |_| {}));
        let phases = s.spawn(|| {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(phase_sample(&cluster, &progress, t0));
                thread::sleep(PHASE_POLL);
            }
            // One more, so that a phase that ended with the ramp is seen ended.
            samples.push(phase_sample(&cluster, &progress, t0));
            samples
        });
        let creators: Vec<_> = (0..CREATORS)
            .map(|c| {
                let args = &args;
                s.spawn(move || {
                    let replicas = args.replicas.to_string();
                    (c..args.services)
                        .step_by(CREATORS)
                        .map(|i| create_service(leader, &format!("s{i}"), &replicas))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut creates = Vec::new();
        for c in creators {
            match c.join() {
                Ok(took) => creates.extend(took),
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    bail!("a service create failed (see above)");
                }
            }
        }
        let created_after = t0.elapsed();
        let converged = wait_until_every(POLL, args.ramp_timeout, || {
            running_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        });
        stop.store(true, Ordering::Relaxed);
        let ls = ls.join().unwrap_or_default();
        let ps = ps.join().unwrap_or_default();
        let phases = phases.join().unwrap_or_default();
        if !converged {
            let p = progress.lock().unwrap_or_else(|e| e.into_inner());
            let (_, hwm_kib) = memory_kib(pid).unwrap_or_default();
            let at = |t: Option<Instant>| {
                t.map_or("-".to_string(), |t| {
                    format!("{:.2} s", t.saturating_duration_since(t0).as_secs_f64())
                })
            };
            bail!(
                "not every task RUNNING within {:?}: hollow nodes received {} (all at {}) and \
                 started {} (all at {}) of {total}; the leader saw {} leadership changes, used \
                 {:.1} CPU s, peak RSS {} MiB",
                args.ramp_timeout,
                p.prepared,
                at(p.all_prepared),
                p.started,
                at(p.all_started),
                leader_changes(leader) - changes_before,
                cpu_seconds(pid).unwrap_or(cpu_before) - cpu_before,
                hwm_kib / 1024
            );
        }
        Ok((created_after, creates, ls, ps, phases))
    })?;
    let cpu = cpu_seconds(pid)? - cpu_before;
    let split = CpuSplit::read(&cluster, &hollow)?.since(&split_before);
    let server = ServerSide::read(&cluster)?.since(&server_before);
    let elections = leader_changes(leader) - changes_before;
    let (rss_kib, hwm_kib) = memory_kib(pid)?;
    let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(t0).as_secs_f64());
    let (assigned, started) = {
        let p = progress.lock().unwrap_or_else(|e| e.into_inner());
        (since(p.all_prepared), since(p.all_started))
    };
    let running = since(*running_at.lock().unwrap_or_else(|e| e.into_inner()));

    print_table(&Figures {
        args: &args,
        total,
        joined_ms,
        ready_after,
        created_after,
        creates,
        assigned,
        started,
        running,
        ls,
        ps,
        cpu,
        rss_kib,
        hwm_kib,
        elections,
        server,
        split,
    });
    print_phases(&phases, total);
    Ok(())
}

/// The steps of a task's way to RUNNING, in the pipeline's order: the orchestrator creates it,
/// the allocator lets it go on (PENDING), the scheduler assigns it, the dispatcher delivers it
/// to its node, the node starts it, and its RUNNING report is committed.
const PHASES: [&str; 6] = [
    "created in the store (orchestrator)",
    "allocated: PENDING or later (allocator)",
    "assigned to a node (scheduler)",
    "delivered to its node (dispatcher)",
    "started by its node (hollow agent)",
    "RUNNING in the store (status reports)",
];

/// How many tasks had passed each of [`PHASES`], `at` seconds into the ramp.
struct PhaseSample {
    at: f64,
    counts: [u64; PHASES.len()],
}

/// The task counts by state on [`PHASE_HOST`] (its metrics endpoint, read from inside its
/// network namespace) and the hollow nodes' counts, now. A failed scrape counts nothing for the store's
/// phases; the next one will.
fn phase_sample(cluster: &TestCluster, progress: &Mutex<Progress>, t0: Instant) -> PhaseSample {
    let at = t0.elapsed().as_secs_f64();
    let body = cluster
        .net()
        .run_in(PHASE_HOST, || http_get(METRICS_PORT, "/metrics", None))
        .ok()
        .flatten()
        .map(|(_, _, body)| body)
        .unwrap_or_default();
    let mut counts = [0u64; PHASES.len()];
    for (state, n) in tasks_by_state(&body) {
        counts[0] += n;
        if state >= TaskState::Pending {
            counts[1] += n;
        }
        if state >= TaskState::Assigned {
            counts[2] += n;
        }
        if state >= TaskState::Running {
            counts[5] += n;
        }
    }
    let p = progress.lock().unwrap_or_else(|e| e.into_inner());
    (counts[3], counts[4]) = (p.prepared, p.started);
    PhaseSample { at, counts }
}

/// `shoal_tasks{state="S",desired_state="D"} N` lines of a metrics page, as (S, N).
fn tasks_by_state(metrics: &str) -> Vec<(TaskState, u64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("shoal_tasks{state=\"")?;
            let (label, rest) = rest.split_once('"')?;
            let n = rest.rsplit_once(' ')?.1.parse().ok()?;
            let name = format!("TASK_STATE_{}", label.to_ascii_uppercase());
            Some((TaskState::from_str_name(&name)?, n))
        })
        .collect()
}

/// For each phase, when (seconds into the ramp) it first reached a quarter, half, 90 % and all
/// of the tasks, as sampled every [`PHASE_POLL`].
fn print_phases(samples: &[PhaseSample], total: u64) {
    const SHARES: [f64; 4] = [0.25, 0.5, 0.9, 1.0];
    println!();
    println!(
        "Phases: seconds into the ramp at which a share of the {total} tasks had passed each \
         (sampled every {} ms)",
        PHASE_POLL.as_millis()
    );
    println!(
        "{:<42} {:>8} {:>8} {:>8} {:>8}",
        "phase", "25 %", "50 %", "90 %", "100 %"
    );
    for (i, phase) in PHASES.iter().enumerate() {
        let reached = SHARES.map(|share| {
            let goal = (total as f64 * share).ceil() as u64;
            samples
                .iter()
                .find(|s| s.counts[i] >= goal)
                .map_or("-".to_string(), |s| format!("{:.1}", s.at))
        });
        let [a, b, c, d] = reached;
        println!("{phase:<42} {a:>8} {b:>8} {c:>8} {d:>8}");
    }
}

struct Figures<'a> {
    args: &'a Args,
    total: u64,
    joined_ms: Option<u64>,
    ready_after: Duration,
    created_after: Duration,
    /// Each `service create`'s latency.
    creates: Vec<Duration>,
    assigned: Option<f64>,
    started: Option<f64>,
    running: Option<f64>,
    ls: Vec<Duration>,
    ps: Vec<Duration>,
    cpu: f64,
    rss_kib: u64,
    hwm_kib: u64,
    elections: usize,
    server: ServerSide,
    split: CpuSplit,
}

/// CPU seconds used so far by the followers, the hollow nodes and the whole machine: where the
/// ramp's CPU went besides the leader, and whether the machine had any to spare.
struct CpuSplit {
    followers: f64,
    hollow: f64,
    machine: f64,
    /// Wall-clock seconds: when read, then (after [`CpuSplit::since`]) between the readings.
    wall: f64,
    at: Instant,
}

impl CpuSplit {
    fn read(cluster: &TestCluster, hollow: &Hollow) -> Result<CpuSplit> {
        let mut followers = 0.0;
        for host in &cluster.hosts()[1..] {
            followers += cpu_seconds(host.daemon_pid().context("a follower's daemon runs")?)?;
        }
        Ok(CpuSplit {
            followers,
            hollow: cpu_seconds(hollow.child.id())?,
            machine: machine_cpu_seconds()?,
            wall: 0.0,
            at: Instant::now(),
        })
    }

    fn since(&self, before: &CpuSplit) -> CpuSplit {
        CpuSplit {
            followers: self.followers - before.followers,
            hollow: self.hollow - before.hollow,
            machine: self.machine - before.machine,
            wall: self.at.duration_since(before.at).as_secs_f64(),
            at: self.at,
        }
    }
}

/// The leader's own view of the ramp, from its metrics endpoint: how long it took to answer
/// each `service create` (without the CLI's process start and its wait for a core) and how
/// long its Raft proposals waited to be applied, which tells the queue in the daemon from the
/// cost of the CLI.
struct ServerSide {
    creates: Histogram,
    proposals: Histogram,
    /// Applying one entry, the wait for the store's write lock included.
    applies: Histogram,
    /// Tasks per session message sent to a node: its count is the messages.
    messages: Histogram,
}

impl ServerSide {
    /// Reads host 0's (the leader's) histograms.
    fn read(cluster: &TestCluster) -> Result<ServerSide> {
        let text = cluster.metrics_text(0, METRICS_PORT)?;
        Ok(ServerSide {
            creates: Histogram::parse(
                &text,
                "shoal_api_request_duration_seconds",
                &["method=\"CreateService\""],
            ),
            proposals: Histogram::parse(&text, "shoal_raft_proposal_duration_seconds", &[]),
            applies: Histogram::parse(&text, "shoal_raft_apply_duration_seconds", &[]),
            messages: Histogram::parse(&text, "shoal_dispatcher_message_tasks", &[]),
        })
    }

    fn since(&self, before: &ServerSide) -> ServerSide {
        ServerSide {
            creates: self.creates.since(&before.creates),
            proposals: self.proposals.since(&before.proposals),
            applies: self.applies.since(&before.applies),
            messages: self.messages.since(&before.messages),
        }
    }
}

fn print_table(f: &Figures) {
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.2} s"));
    let ms = |samples: &[Duration], q: f64| {
        let mut v = samples.to_vec();
        quantile(&mut v, q).map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
    };
    let a = f.args;
    println!();
    println!(
        "Control plane at scale: 3 managers, {} hollow nodes, {} × {} = {} tasks",
        a.nodes, a.services, a.replicas, f.total
    );
    println!("{:<58} {:>12}", "figure", "this run");
    let row = |name: &str, v: String| println!("{name:<58} {v:>12}");
    row(
        "hollow nodes joined (certificates issued)",
        f.joined_ms
            .map_or("-".into(), |ms| format!("{:.2} s", ms as f64 / 1e3)),
    );
    row(
        "hollow nodes listed Ready (from the first join)",
        format!("{:.2} s", f.ready_after.as_secs_f64()),
    );
    row(
        "every `service create` returned",
        format!("{:.2} s", f.created_after.as_secs_f64()),
    );
    row(
        &format!(
            "`service create` latency p50 / p99 ({} at a time)",
            CREATORS
        ),
        format!("{} / {}", ms(&f.creates, 0.5), ms(&f.creates, 0.99)),
    );
    let server_ms = |h: &Histogram| {
        let q = |q| {
            h.quantile(q)
                .map_or("-".into(), |s| format!("{:.1}", s * 1e3))
        };
        let mean = h.mean().map_or("-".into(), |s| format!("{:.1}", s * 1e3));
        format!("{} / {} ms, mean {mean}", q(0.5), q(0.99))
    };
    row(
        "  of which the leader's answer p50 / p99 (its histogram)",
        server_ms(&f.server.creates),
    );
    row(
        &format!(
            "leader's Raft proposals: proposed → applied p50 / p99 ({:.0})",
            f.server.proposals.count()
        ),
        server_ms(&f.server.proposals),
    );
    row(
        &format!(
            "leader's applies, store lock included, p50 / p99 ({:.0})",
            f.server.applies.count()
        ),
        server_ms(&f.server.applies),
    );
    let messages = &f.server.messages;
    row(
        "session messages sent to the nodes (per node), tasks in each",
        format!(
            "{:.0} ({:.1}), {}",
            messages.count(),
            messages.count() / (a.nodes.max(1) as f64),
            messages.mean().map_or("-".into(), |m| format!("{m:.1}"))
        ),
    );
    row(
        "every task assigned and delivered to its node",
        secs(f.assigned),
    );
    row(
        "every task started by its node (RUNNING reported)",
        secs(f.started),
    );
    row(
        "every service R/R in `service ls` (RUNNING in the store)",
        secs(f.running),
    );
    row(
        "  anchor: swarmkit, 100k tasks on 1k nodes (#193)",
        format!("{ANCHOR_S} s"),
    );
    row("  target on this machine", format!("< {TARGET_S} s"));
    row(
        &format!("`service ls` latency p50 / p99 ({} samples)", f.ls.len()),
        format!("{} / {}", ms(&f.ls, 0.5), ms(&f.ls, 0.99)),
    );
    row(
        &format!("`service ps s0` latency p50 / p99 ({} samples)", f.ps.len()),
        format!("{} / {}", ms(&f.ps, 0.5), ms(&f.ps, 0.99)),
    );
    row(
        "leader RSS peak (VmHWM) / at the end",
        format!("{} / {} MiB", f.hwm_kib / 1024, f.rss_kib / 1024),
    );
    row(
        "leader CPU seconds during the ramp",
        format!("{:.1} s", f.cpu),
    );
    row(
        "the two followers' CPU seconds during the ramp",
        format!("{:.1} s", f.split.followers),
    );
    row(
        "the hollow nodes' CPU seconds during the ramp",
        format!("{:.1} s", f.split.hollow),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    row(
        &format!("the machine's CPU seconds during the ramp (of {cores} cores)"),
        format!(
            "{:.1} s, {:.0} %",
            f.split.machine,
            100.0 * f.split.machine / (f.split.wall * cores as f64).max(1e-9)
        ),
    );
    row(
        "leadership changes seen by host 0 during the ramp",
        f.elections.to_string(),
    );
}
