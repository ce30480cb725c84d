//! Benchmark: committed writes per second through the control API on 3 managers, with 1, 10
//! and 100 concurrent clients, their latency (p50, p99), and the Raft log and snapshot sizes on
//! each manager's disk afterwards.
//!
//! The cluster is the multi-host test harness's (one network namespace, containerd and `shoal
//! daemon` per host, addresses in 198.18.0.0/15), so Raft traffic crosses real sockets between
//! real daemons. The clients are the generated tonic `Control` client, in this process, over the
//! leader's unix API socket: the socket the CLI uses, without the CLI's process start per call
//! (which would make the load generator the bottleneck), and without mutual TLS in the client,
//! whose handshake and encryption cost belongs to the transport, not to Raft. Followers would
//! only forward each call to the leader.
//!
//! A write is `UpdateService` changing one label of the client's own service (replicated, zero
//! replicas, so no task follows from it): the cheapest real change, answered only once its
//! entry is committed by a majority and applied on the leader (`Store::propose`). Each client
//! keeps its service's version from the previous answer, so the compare-and-set never fails
//! for want of a read. Every write is fsynced: each Raft `Ready` is persisted in one redb write
//! transaction with `Durability::Immediate` (`manager/src/raft/storage.rs`), on the leader and
//! on the followers before they acknowledge.
//!
//! Not a test: it asserts nothing about speed; it prints the figures, beside etcd's own
//! benchmark on 3 members (about 44,000 writes/s) and the project's target (20,000/s).
//! Usage: `bench-raft [--clients 1,10,100] [--duration SECS | --writes N] [--quick]` (run by
//! `bench/raft.sh`). `--quick` is a small run for CI: 1 and 10 clients, 2 s each.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_manager::raft::storage::{log_sizes, LogSizes};
use shoal_proto::control_client::ControlClient;
use shoal_proto::{
    ContainerSpec, CreateServiceRequest, Service, ServiceRef, ServiceSpec, UpdateServiceRequest,
};
use shoal_tests::bench::machine_cpu_seconds;
use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::wait_until;
use shoal_tests::http::sample;
use shoal_tests::listing::leader_seen_by;
use tonic::transport::Channel;

/// etcd's benchmark on 3 members (etcd.io "Performance": 44,341 writes/s, 1,000 clients).
const ETCD_ANCHOR: f64 = 44_000.0;
/// The project's target for this benchmark.
const TARGET: f64 = 20_000.0;
/// Clients sharing one HTTP/2 connection: a few connections, as several CLIs would open, without
/// one per client (which would measure connection handling more than Raft).
const CLIENTS_PER_CONNECTION: usize = 10;
const TIMEOUT: Duration = Duration::from_secs(120);
const IMAGE: &str = "docker.io/library/busybox:latest";
/// Each manager's metrics endpoint, inside its own network namespace.
const METRICS_PORT: u16 = 9464;

/// When a round stops.
#[derive(Clone, Copy)]
enum Stop {
    After(Duration),
    Writes(u64),
}

struct Args {
    clients: Vec<usize>,
    stop: Stop,
}

/// What one round measured.
struct Round {
    clients: usize,
    writes: u64,
    errors: u64,
    elapsed: Duration,
    /// Every write's latency, sorted.
    latencies: Vec<Duration>,
    /// CPU seconds the whole machine spent during the round (managers, client, kernel).
    cpu_seconds: f64,
    /// Durable appends to the Raft log during the round, per manager (from its metrics).
    appends: Vec<Appends>,
}

/// A manager's `shoal_raft_log_append_entries` histogram: appends (each one fsync) and the
/// entries they carried.
#[derive(Clone, Copy, Default)]
struct Appends {
    count: f64,
    entries: f64,
}

impl Appends {
    fn since(self, before: Appends) -> Appends {
        Appends {
            count: self.count - before.count,
            entries: self.entries - before.entries,
        }
    }

    fn entries_per_append(self) -> f64 {
        self.entries / self.count.max(1.0)
    }
}

/// Reads every manager's append histogram from its metrics endpoint.
fn read_appends(cluster: &TestCluster) -> Result<Vec<Appends>> {
    (0..cluster.len())
        .map(|i| {
            let text = cluster.metrics_text(i, METRICS_PORT)?;
            let series =
                |s| sample(&text, s).with_context(|| format!("host {i}'s metrics hold no {s}"));
            Ok(Appends {
                count: series("shoal_raft_log_append_entries_count")?,
                entries: series("shoal_raft_log_append_entries_sum")?,
            })
        })
        .collect()
}

impl Round {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Machine CPU per acknowledged write, in µs: steadier than writes/s on a shared machine,
    /// since it does not count the time the work waited for a core.
    fn cpu_per_write_us(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.writes.max(1) as f64
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let metrics_addr = format!("127.0.0.1:{METRICS_PORT}");
    let cluster = TestCluster::new_with(3, &["--metrics-addr", &metrics_addr]);
    cluster.form(3, 0);
    let ids = cluster.node_ids();
    let mut leader = None;
    if !wait_until(TIMEOUT, || {
        leader = leader_seen_by(cluster.host(0)).and_then(|id| ids.iter().position(|i| *i == id));
        leader.is_some()
    }) {
        bail!("no leader among the 3 managers within {TIMEOUT:?}");
    }
    let leader = leader.context("leader found")?;
    let socket = cluster.host(leader).api_socket();
    println!(
        "3 managers formed; the leader is host {leader}; clients call its API socket {}",
        socket.display()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let rounds = runtime.block_on(run_rounds(socket, &args, || read_appends(&cluster)))?;
    let raft_dirs: Vec<(usize, PathBuf)> = (0..3)
        .map(|i| (i, cluster.host(i).data_dir().join("raft")))
        .collect();
    report(&rounds, &raft_dirs, leader);
    Ok(())
}

/// Creates one service per client of the largest round, then runs each round on them.
/// `appends` reads each manager's appends so far (before and after each round).
async fn run_rounds(
    socket: PathBuf,
    args: &Args,
    appends: impl Fn() -> Result<Vec<Appends>>,
) -> Result<Vec<Round>> {
    let max = args.clients.iter().copied().max().unwrap_or(1);
    let connections = max.div_ceil(CLIENTS_PER_CONNECTION);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(
            shoal_worker::containerd::connect_unix(&socket)
                .await
                .with_context(|| format!("connect to {}", socket.display()))?,
        );
    }
    let mut services = Vec::new();
    let mut client = ControlClient::new(channels[0].clone());
    for i in 0..max {
        let spec = ServiceSpec {
            name: format!("raftbench-{i}"),
            container: Some(ContainerSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            replicas: 0,
            ..Default::default()
        };
        let created = client
            .create_service(CreateServiceRequest {
                spec: Some(Box::new(spec)),
            })
            .await
            .with_context(|| format!("create service raftbench-{i}"))?;
        services.push(created.into_inner().id);
    }
    let mut rounds = Vec::new();
    for &clients in &args.clients {
        let before = appends()?;
        let mut round = run_round(&channels, &services[..clients], args.stop).await?;
        round.appends = appends()?
            .into_iter()
            .zip(before)
            .map(|(after, before)| after.since(before))
            .collect();
        println!(
            "{clients:>3} clients: {} writes in {:.2} s = {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, {:.0} µs CPU a write, entries per log append {}",
            round.writes,
            round.elapsed.as_secs_f64(),
            round.rate(),
            ms(round.percentile(0.5)),
            ms(round.percentile(0.99)),
            round.errors,
            round.cpu_per_write_us(),
            per_append(&round.appends)
        );
        rounds.push(round);
    }
    Ok(rounds)
}

/// One client per service, all started together, until `stop`.
async fn run_round(channels: &[Channel], services: &[String], stop: Stop) -> Result<Round> {
    let clients = services.len();
    let cpu_before = machine_cpu_seconds()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let client = ControlClient::new(channels[i / CLIENTS_PER_CONNECTION].clone());
        let quota = match stop {
            Stop::Writes(n) => {
                Some(n / clients as u64 + u64::from((i as u64) < n % clients as u64))
            }
            Stop::After(_) => None,
        };
        let deadline = match stop {
            Stop::After(d) => Some(started + d),
            Stop::Writes(_) => None,
        };
        tasks.push(tokio::spawn(client_loop(
            client,
            service.clone(),
            quota,
            deadline,
        )));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut error_kinds: HashMap<String, u64> = HashMap::new();
    for task in tasks {
        let (lat, errs) = task.await.context("client task")??;
        latencies.extend(lat);
        for e in errs {
            errors += 1;
            *error_kinds.entry(e).or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    let cpu_seconds = machine_cpu_seconds()? - cpu_before;
    for (kind, n) in &error_kinds {
        println!("    {n} × {kind}");
    }
    latencies.sort_unstable();
    Ok(Round {
        clients,
        writes: latencies.len() as u64,
        errors,
        elapsed,
        latencies,
        cpu_seconds,
        appends: Vec::new(),
    })
}

/// Updates `service`'s label until `quota` writes are done or `deadline` passes; returns the
/// latency of every acknowledged write and the message of every refused one.
async fn client_loop(
    mut client: ControlClient<Channel>,
    service: String,
    quota: Option<u64>,
    deadline: Option<Instant>,
) -> Result<(Vec<Duration>, Vec<String>)> {
    let mut current = get_service(&mut client, &service).await?;
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    let mut n: u64 = 0;
    loop {
        if quota.is_some_and(|q| n >= q) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        n += 1;
        let mut spec = current.spec.clone().unwrap_or_default();
        spec.labels.insert("raftbench".into(), n.to_string());
        let version = current.meta.as_ref().map_or(0, |m| m.version);
        let sent = Instant::now();
        let answer = client
            .update_service(UpdateServiceRequest {
                service: service.clone(),
                version,
                spec: Some(spec),
                rollback: false,
            })
            .await;
        match answer {
            Ok(updated) => {
                latencies.push(sent.elapsed());
                current = updated.into_inner();
            }
            Err(status) => {
                errors.push(format!("{:?}: {}", status.code(), status.message()));
                if errors.len() > 100 {
                    bail!("service {service}: more than 100 writes refused, last: {status}");
                }
                current = get_service(&mut client, &service).await?;
            }
        }
    }
    Ok((latencies, errors))
}

async fn get_service(client: &mut ControlClient<Channel>, service: &str) -> Result<Service> {
    Ok(client
        .get_service(ServiceRef {
            service: service.into(),
        })
        .await
        .with_context(|| format!("get service {service}"))?
        .into_inner())
}

/// Entries per append of each manager, host by host ("12.3/40.1/40.0").
fn per_append(appends: &[Appends]) -> String {
    appends
        .iter()
        .map(|a| format!("{:.1}", a.entries_per_append()))
        .collect::<Vec<_>>()
        .join("/")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(rounds: &[Round], raft_dirs: &[(usize, PathBuf)], leader: usize) {
    println!();
    println!(
        "Raft: committed writes through the control API (UpdateService, leader's API socket), \
         3 managers, every write fsynced"
    );
    println!(
        "{:>7}  {:>8}  {:>7}  {:>9}  {:>8}  {:>8}  {:>6}  {:>10}  {:>10}  {:>12}  {:>16}",
        "clients",
        "writes",
        "secs",
        "writes/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "/etcd 44k",
        "/target 20k",
        "CPU µs/write",
        "entries/append"
    );
    for r in rounds {
        println!(
            "{:>7}  {:>8}  {:>7.2}  {:>9.0}  {:>8.2}  {:>8.2}  {:>6}  {:>10.3}  {:>10.3}  {:>12.0}  {:>16}",
            r.clients,
            r.writes,
            r.elapsed.as_secs_f64(),
            r.rate(),
            ms(r.percentile(0.5)),
            ms(r.percentile(0.99)),
            r.errors,
            r.rate() / ETCD_ANCHOR,
            r.rate() / TARGET,
            r.cpu_per_write_us(),
            per_append(&r.appends)
        );
    }
    println!(
        "CPU µs/write: CPU seconds the whole machine spent in the round (3 managers, the client, \
         the kernel) per acknowledged write"
    );
    println!(
        "entries/append: Raft log entries per durable append (one fsync) on hosts 0/1/2, from \
         their shoal_raft_log_append_entries histograms"
    );
    println!(
        "anchor: etcd ~{ETCD_ANCHOR:.0} writes/s on 3 members (its own benchmark); target: \
         >= {TARGET:.0} writes/s"
    );
    println!();
    println!(
        "Raft log on disk after the run (sealed records; the log is compacted at each snapshot)"
    );
    println!(
        "{:>6}  {:>6}  {:>12}  {:>8}  {:>12}  {:>14}",
        "host", "role", "file bytes", "entries", "entry bytes", "snapshot bytes"
    );
    for (i, dir) in raft_dirs {
        let role = if *i == leader { "leader" } else { "follower" };
        match log_sizes(dir) {
            Ok(LogSizes {
                file_bytes,
                entries,
                entry_bytes,
                snapshot_bytes,
            }) => println!(
                "{i:>6}  {role:>6}  {file_bytes:>12}  {entries:>8}  {entry_bytes:>12}  {snapshot_bytes:>14}"
            ),
            Err(e) => println!("{i:>6}  {role:>6}  cannot read {}: {e}", dir.display()),
        }
    }
}

fn parse_args() -> Result<Args> {
    let usage = "usage: bench-raft [--clients 1,10,100] [--duration SECS | --writes N] [--quick]";
    let mut parsed = Args {
        clients: vec![1, 10, 100],
        stop: Stop::After(Duration::from_secs(10)),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value; {usage}"))
        };
        match arg.as_str() {
            "--quick" => {
                parsed.clients = vec![1, 10];
                parsed.stop = Stop::After(Duration::from_secs(2));
            }
            "--clients" => {
                let v = value()?;
                parsed.clients = v
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--clients {v}: not a list of numbers"))?;
                if parsed.clients.contains(&0) {
                    bail!("--clients {v}: a round needs at least one client");
                }
            }
            "--duration" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .with_context(|| format!("--duration {v}: not a number"))?;
                parsed.stop = Stop::After(Duration::from_secs_f64(secs));
            }
            "--writes" => {
                let v = value()?;
                parsed.stop = Stop::Writes(
                    v.parse()
                        .with_context(|| format!("--writes {v}: not a number"))?,
                );
            }
            other => bail!("unknown argument {other}; {usage}"),
        }
    }
    Ok(parsed)
}
