//! Benchmark: how long Shoal takes to bring an N-replica service up and to remove it, against
//! the floor (the same containers started straight through containerd) and against Docker Swarm,
//! for several N in one run.
//!
//! On one private containerd (the test fixture's), one after the other so that only one of
//! them acts on containerd at a time:
//! - (A) Shoal: `shoal service create -d --replicas N busybox sleep 3600`, then the service
//!   list polled through the API until it shows N/N running (checked against containerd); then
//!   `service rm` until containerd holds none of its containers;
//! - (B) the floor: the same N containers (same image, args and log driver) started straight
//!   through `shoal_worker::executor::ContainerdExecutor`, all at once from one client;
//! - (C) Docker Swarm: Debian's dockerd on the same containerd (see `shoal_tests::swarm`), the
//!   same image loaded with `docker load`, `docker service create -d --replicas N` polled through
//!   the Engine API (`GET /services?status=true`, what `docker service ls` shows) until N/N
//!   (checked against containerd's `moby` namespace); then
//!   `docker service rm` until containerd holds none of its containers.
//!
//! Each side runs after a warm-up container, so none pays for unpacking the image. Both
//! orchestrators are created through their own CLI, as a user would, then polled every 10 ms
//! through their API from this process (a CLI process per poll would cost more than the poll
//! resolves, and compete with the daemon for the two cores; the floor is timed exactly, with no
//! polling at all), and get 3 s after each removal to finish cleaning up. Swarm uses the loaded image as it is (`--no-resolve-image`,
//! `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1`): no registry lookups, as for Shoal. After each
//! timed Shoal run, a second run of the same N samples the tasks' statuses every 10 ms through
//! the API (`shoal_tests::phases`) for a per-phase breakdown, also printed. Prints the times, the ratios
//! Shoal/floor and Swarm/Shoal, and the daemon's memory. Not a test: it asserts nothing about
//! speed.
//!
//! Each figure is the median of `--runs` runs (default 3), and with each start time the CPU
//! seconds the whole machine spent meanwhile are printed, which tell what each approach costs
//! whatever the background load.
//!
//! Usage: `bench-service-create [--replicas 1,10,30,100] [--runs R] [--quick]` (`--quick`:
//! N = 1 and 3, one run);
//! run by `bench/service_create.sh`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use shoal_proto::control_client::ControlClient;
use shoal_proto::{ContainerSpec, Empty, Task};
use shoal_tests::bench::machine_cpu_seconds;
use shoal_tests::daemon::{wait_until_every, ShoalHost, NAMESPACE};
use shoal_tests::phases::{self, TaskTimes, PHASES};
use shoal_tests::swarm::{
    container_count, running_task_count, wait_namespace_empty, DockerSwarm, DOCKER_IMAGE,
    DOCKER_NAMESPACE,
};
use shoal_worker::containerd::Containerd;
use shoal_worker::executor::ContainerdExecutor;
use tokio::runtime::Runtime;
use tonic::transport::Channel;

const IMAGE: &str = "docker.io/library/busybox:latest";
/// How often the orchestrators' APIs are polled while timing: short against the start of one
/// container (~80 ms), cheap against the daemons' work.
const POLL: Duration = Duration::from_millis(10);
/// How often containerd is polled (through `ctr`) for the removals, which take seconds.
const GONE_POLL: Duration = Duration::from_millis(50);
const TIMEOUT: Duration = Duration::from_secs(300);
/// How long to wait after a removal before the next measurement.
const SETTLE: Duration = Duration::from_secs(3);
/// How often the phase breakdown's run samples the tasks (in-process gRPC, cheap).
const PHASE_POLL: Duration = Duration::from_millis(10);
const USAGE: &str = "usage: bench-service-create [--replicas N[,N…]] [--runs R] [--quick]";

/// What one start of N containers took: wall-clock time, and the CPU seconds the whole machine
/// spent meanwhile (daemons, containerd, shims and runc alike).
#[derive(Clone, Copy)]
struct Start {
    wall: Duration,
    cpu: f64,
}

/// Times what `f` does, as a [`Start`].
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Start)> {
    let cpu = machine_cpu_seconds()?;
    let started = Instant::now();
    let value = f()?;
    let wall = started.elapsed();
    let cpu = machine_cpu_seconds()? - cpu;
    Ok((value, Start { wall, cpu }))
}

/// What one orchestrator took for one N.
#[derive(Clone, Copy)]
struct Timing {
    create: Start,
    remove: Duration,
}

/// The median of each figure over repeated runs (runs on this machine vary by ±10 %: one run
/// cannot tell 1.05 from 1.15).
fn median_start(runs: &[Start]) -> Start {
    Start {
        wall: Duration::from_secs_f64(median(runs.iter().map(|r| r.wall.as_secs_f64()))),
        cpu: median(runs.iter().map(|r| r.cpu)),
    }
}

fn median_timing(runs: &[Timing]) -> Timing {
    let creates: Vec<Start> = runs.iter().map(|r| r.create).collect();
    Timing {
        create: median_start(&creates),
        remove: Duration::from_secs_f64(median(runs.iter().map(|r| r.remove.as_secs_f64()))),
    }
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `runs` repetitions of `f`.
fn repeat<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<Vec<T>> {
    (0..runs).map(|_| f()).collect()
}

fn main() -> Result<()> {
    let Args { counts, runs } = parse_args()?;
    DockerSwarm::check_installed()?;
    let mut host = ShoalHost::start_swarm();
    let socket = host.containerd_socket();

    let runtime = tokio::runtime::Runtime::new().context("start a tokio runtime")?;

    // (A) Shoal, every N; after each, the per-phase breakdown in a run of its own, because
    // sampling the API that often would slow the timed run down.
    shoal_service(&host, &runtime, "warmup", 1)?;
    let mut shoal = Vec::new();
    let mut memory = Vec::new();
    let mut phases = Vec::new();
    for &n in &counts {
        let timings = repeat(runs, || shoal_service(&host, &runtime, "bench", n))?;
        shoal.push(median_timing(&timings));
        let pid = host.daemon_pid().context("the daemon runs")?;
        memory.push(shoal_tests::bench::memory_kib(pid)?);
        phases.push(shoal_phases(&host, &runtime, n)?);
    }
    // Nothing else may act on containerd while (B) and (C) run.
    host.stop_daemon();

    // (B) the floor, every N.
    let direct_dir = host.dir().join("bench-direct");
    let mut floor = Vec::new();
    for &n in &counts {
        let starts = repeat(runs, || {
            runtime.block_on(start_directly(&socket, &direct_dir, n))
        })?;
        floor.push(median_start(&starts));
    }

    // (C) Docker Swarm, every N. Declared after `host`, so it is dropped (and cleaned up)
    // before the containerd it uses.
    let mut swarm = DockerSwarm::start(&socket)?;
    swarm.load_busybox()?;
    swarm_service(&swarm, &socket, "warmup", 1)?;
    let mut docker = Vec::new();
    for &n in &counts {
        let timings = repeat(runs, || swarm_service(&swarm, &socket, "bench", n))?;
        docker.push(median_timing(&timings));
    }
    swarm.shutdown()?;

    print_table(&counts, runs, &shoal, &floor, &docker, &memory);
    print_phases(&counts, &phases);
    Ok(())
}

struct Args {
    counts: Vec<usize>,
    /// Timed runs per N and side; the tables show their medians.
    runs: usize,
}

fn parse_args() -> Result<Args> {
    let mut counts = vec![1, 10, 30, 100];
    let mut runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--replicas" => {
                let value = args.next().context(USAGE)?;
                counts = value
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--replicas {value}: not a list of numbers"))?;
            }
            "--runs" => {
                let value = args.next().context(USAGE)?;
                runs = value
                    .parse()
                    .ok()
                    .filter(|&r| r > 0)
                    .with_context(|| format!("--runs {value}: not a positive number"))?;
            }
            "--quick" => {
                counts = vec![1, 3];
                runs = 1;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if counts.is_empty() || counts.contains(&0) {
        bail!("--replicas: every count must be at least 1");
    }
    Ok(Args { counts, runs })
}

/// `service create -d --name NAME --replicas N [EXTRA…] IMAGE sleep 3600`, for either CLI.
fn create_args<'a>(name: &'a str, n: &'a str, extra: &[&'a str], image: &'a str) -> Vec<&'a str> {
    let mut args = vec!["service", "create", "-d", "--name", name, "--replicas", n];
    args.extend_from_slice(extra);
    args.extend([image, "sleep", "3600"]);
    args
}

/// Times `shoal service create` until `n`/`n` run, then `service rm` until containerd holds
/// none of the service's containers.
fn shoal_service(host: &ShoalHost, runtime: &Runtime, name: &str, n: usize) -> Result<Timing> {
    let socket = host.containerd_socket();
    let n_arg = n.to_string();
    let expected = format!("{n}/{n}");
    let mut api = runtime.block_on(ShoalApi::connect(&host.api_socket()))?;
    let (converged, create) = timed(|| {
        host.shoal_ok(&create_args(name, &n_arg, &[], "busybox"));
        Ok(wait_until_every(POLL, TIMEOUT, || {
            runtime.block_on(api.replicas(name)) == Some((n as u64, n as u64))
        }))
    })?;
    if !converged {
        bail!(
            "shoal: {name} did not reach {expected} within {TIMEOUT:?}; daemon log:\n{}",
            shoal_tests::daemon::tail(&host.daemon_log(), 40)
        );
    }
    let running = running_task_count(&socket, NAMESPACE)?;
    if running != n {
        bail!("shoal: `service ls` says {expected} but containerd runs {running} tasks");
    }

    let started = Instant::now();
    host.shoal_ok(&["service", "rm", name]);
    let remove = wait_gone(&socket, NAMESPACE, started)?;
    Ok(Timing { create, remove })
}

/// Starts an `n`-replica service while sampling its tasks' statuses (see
/// `shoal_tests::phases`), then removes it.
fn shoal_phases(host: &ShoalHost, runtime: &Runtime, n: usize) -> Result<Vec<TaskTimes>> {
    let name = "phases";
    // Sampling starts before the service exists, so that the first states are seen too.
    let sampler = runtime.spawn(phases::sample(
        host.api_socket(),
        name.to_string(),
        n,
        PHASE_POLL,
        TIMEOUT,
    ));
    let n_arg = n.to_string();
    host.shoal_ok(&create_args(name, &n_arg, &[], "busybox"));
    let tasks = runtime
        .block_on(sampler)
        .context("the sampler panicked")??;
    host.shoal_ok(&["service", "rm", name]);
    wait_gone(&host.containerd_socket(), NAMESPACE, Instant::now())?;
    Ok(tasks)
}

/// The same for Docker Swarm.
fn swarm_service(swarm: &DockerSwarm, socket: &Path, name: &str, n: usize) -> Result<Timing> {
    let n_arg = n.to_string();
    let expected = format!("{n}/{n}");
    // No registry lookup for the image's digest: Shoal does none either.
    let extra = ["--no-resolve-image"];
    let mut polled = Ok(None);
    let (converged, create) = timed(|| {
        swarm.docker_ok(&create_args(name, &n_arg, &extra, DOCKER_IMAGE))?;
        Ok(wait_until_every(POLL, TIMEOUT, || {
            polled = swarm.api_replicas(name);
            matches!(&polled, Ok(Some(r)) if *r == (n as u64, n as u64))
        }))
    })?;
    polled?;
    if !converged {
        bail!(
            "swarm: {name} did not reach {expected} within {TIMEOUT:?}; dockerd log:\n{}",
            swarm.log_tail(40)
        );
    }
    let running = running_task_count(socket, DOCKER_NAMESPACE)?;
    if running != n {
        bail!("swarm: `service ls` says {expected} but containerd runs {running} tasks");
    }

    let started = Instant::now();
    swarm.docker_ok(&["service", "rm", name])?;
    let remove = wait_gone(socket, DOCKER_NAMESPACE, started)?;
    Ok(Timing { create, remove })
}

/// Polls containerd every [`POLL`] until `namespace` holds no container; the time since
/// `started`. Then waits [`SETTLE`].
fn wait_gone(socket: &Path, namespace: &str, started: Instant) -> Result<Duration> {
    let gone = wait_until_every(GONE_POLL, TIMEOUT, || {
        container_count(socket, namespace).is_ok_and(|c| c == 0)
    });
    let elapsed = started.elapsed();
    if !gone {
        // Once more, for the error message.
        wait_namespace_empty(socket, namespace, Duration::ZERO)?;
    }
    // The orchestrator still cleans up after containerd is done (networks, logs, its store):
    // the next measurement should not pay for this one.
    std::thread::sleep(SETTLE);
    Ok(elapsed)
}

/// Shoal's control API on the daemon's socket, as the CLI reaches it.
struct ShoalApi(ControlClient<Channel>);

impl ShoalApi {
    async fn connect(socket: &Path) -> Result<Self> {
        let channel = shoal_worker::containerd::connect_unix(socket)
            .await
            .context("connect to the daemon's API socket")?;
        Ok(ShoalApi(ControlClient::new(channel)))
    }

    /// Service `name`'s running and desired task counts (what `service ls` shows as
    /// REPLICAS), or `None` when it is not listed or the call fails.
    async fn replicas(&mut self, name: &str) -> Option<(u64, u64)> {
        let services = self
            .0
            .list_services(Empty {})
            .await
            .ok()?
            .into_inner()
            .services;
        services.into_iter().find_map(|s| {
            let listed = s.service.as_ref()?.spec.as_ref()?.name == name;
            listed.then_some((s.running, s.desired))
        })
    }
}

fn print_table(
    counts: &[usize],
    runs: usize,
    shoal: &[Timing],
    floor: &[Start],
    swarm: &[Timing],
    memory: &[(u64, u64)],
) {
    let s = |d: Duration| format!("{:.3}", d.as_secs_f64());
    let ratio = |a: Duration, b: Duration| format!("{:.2}", a.as_secs_f64() / b.as_secs_f64());
    println!("seconds from `service create` until N/N running, and from `service rm` until");
    println!("containerd holds none of the service's containers (stop grace period 10 s, both);");
    println!("each the median of {runs} runs");
    println!(
        "{:>5} {:>8} {:>8} {:>8} {:>11} {:>11} {:>8} {:>8} {:>11} {:>10}",
        "N",
        "shoal",
        "floor",
        "swarm",
        "shoal/floor",
        "swarm/shoal",
        "shoal rm",
        "swarm rm",
        "swarm/shoal",
        "shoal RSS"
    );
    for (i, n) in counts.iter().enumerate() {
        let (a, b, c) = (&shoal[i], floor[i], &swarm[i]);
        println!(
            "{n:>5} {:>8} {:>8} {:>8} {:>11} {:>11} {:>8} {:>8} {:>11} {:>6.1} MiB",
            s(a.create.wall),
            s(b.wall),
            s(c.create.wall),
            ratio(a.create.wall, b.wall),
            ratio(c.create.wall, a.create.wall),
            s(a.remove),
            s(c.remove),
            ratio(c.remove, a.remove),
            memory[i].0 as f64 / 1024.0,
        );
    }
    if let Some((_, peak)) = memory.last() {
        println!("shoal daemon peak RSS: {:.1} MiB", *peak as f64 / 1024.0);
    }
    println!();
    println!("CPU seconds the whole machine spent from `service create` until N/N running");
    println!("(median of {runs} runs)");
    println!(
        "{:>5} {:>8} {:>8} {:>8} {:>11} {:>11}",
        "N", "shoal", "floor", "swarm", "shoal/floor", "swarm/shoal"
    );
    for (i, n) in counts.iter().enumerate() {
        let (a, b, c) = (shoal[i].create.cpu, floor[i].cpu, swarm[i].create.cpu);
        println!(
            "{n:>5} {a:>8.2} {b:>8.2} {c:>8.2} {:>11.2} {:>11.2}",
            a / b,
            c / a
        );
    }
}

/// Per phase, the median over tasks for each N, in ms, with how many tasks it was taken over.
fn print_phases(counts: &[usize], phases: &[Vec<TaskTimes>]) {
    println!();
    println!("shoal: where a task's start time goes, median ms over tasks (tasks measured),");
    println!("from status timestamps sampled every {PHASE_POLL:?} in a separate run per N");
    print!("{:<50}", "phase");
    for n in counts {
        print!(" {:>13}", format!("N={n}"));
    }
    println!();
    for (label, from, to) in PHASES {
        print!("{label:<50}");
        for tasks in phases {
            let cell = match phases::median_ms(tasks, from, to) {
                (Some(ms), k) => format!("{ms} ({k})"),
                (None, _) => "-".to_string(),
            };
            print!(" {cell:>13}");
        }
        println!();
    }
}

/// A random hex ID from the kernel's generator: container IDs must be unique machine-wide
/// because runc's state directory is shared by every containerd.
fn random_id() -> Result<String> {
    let mut bytes = [0u8; 12];
    let mut f = fs::File::open("/dev/urandom").context("open /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut bytes).context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Starts `n` busybox containers at once through the executor and returns how long it took
/// until every one was started; removes them afterwards.
async fn start_directly(socket: &Path, data_dir: &Path, n: usize) -> Result<Start> {
    let cd = Containerd::connect(socket, NAMESPACE)
        .await
        .context("connect to the benchmark's containerd")?;
    // The same log driver the daemon uses, so both sides do the same work.
    let log_driver = shoal_worker::logdriver::install(&data_dir.join("bin"))
        .context("install the log driver")?;
    let executor = ContainerdExecutor::new(cd, PathBuf::from(data_dir), log_driver)
        .context("set up the executor")?;
    let tasks = (1..=n as u64)
        .map(|slot| {
            Ok(Task {
                id: random_id()?,
                service_id: "bench-direct".into(),
                service_name: "bench-direct".into(),
                slot,
                node_id: "bench".into(),
                spec: Some(Box::new(ContainerSpec {
                    image: IMAGE.into(),
                    args: vec!["sleep".into(), "3600".into()],
                    ..Default::default()
                })),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<Task>>>()?;

    let cpu = machine_cpu_seconds()?;
    let started = Instant::now();
    let results = futures::future::join_all(tasks.iter().map(|task| {
        let executor = &executor;
        async move {
            let image = executor.prepare(task).await?;
            executor
                .start(
                    task,
                    &image,
                    &shoal_worker::network::TaskNetwork::default(),
                    &[],
                )
                .await
        }
    }))
    .await;
    let elapsed = Start {
        wall: started.elapsed(),
        cpu: machine_cpu_seconds()? - cpu,
    };

    // Remove every container whether or not all started, then report a failure.
    for task in &tasks {
        // Killed first: `remove` alone does not stop a running task on containerd 1.6, which
        // reports "cannot delete a running process" with code Unknown.
        if let Err(e) = executor
            .stop(&task.id, Some(Signal::SIGKILL), Duration::ZERO)
            .await
        {
            eprintln!("killing {}: {e}", task.id);
        }
        if let Err(e) = executor.remove(&task.id).await {
            eprintln!("removing {}: {e}", task.id);
        }
        if let Err(e) = executor.remove_logs(&task.id) {
            eprintln!("removing the logs of {}: {e}", task.id);
        }
    }
    for result in results {
        result.context("starting a container directly")?;
    }
    Ok(elapsed)
}
