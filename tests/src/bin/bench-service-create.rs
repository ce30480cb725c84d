//! Benchmark: how long Shoal takes to bring a 30-replica service up, against the time the same
//! containers take to start when one client drives containerd directly.
//!
//! On one private containerd (the test fixture's), in one run:
//! - (A) `shoal service create -d --replicas N busybox sleep 3600`, then `service ls` polled until
//!   it shows N/N (checked against containerd);
//! - (B) the same N containers (same image, args and log driver) started straight through
//!   `shoal_worker::executor::ContainerdExecutor`, all at once from one client, then removed.
//!
//! Both run after a warm-up container, so neither pays for unpacking the image. Prints both
//! times, the ratio A/B, and the daemon's memory. Not a test: it asserts nothing about speed.
//!
//! Usage: `bench-service-create [--replicas N]` (run by `bench/service_create.sh`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use shoal_proto::{ContainerSpec, Task};
use shoal_tests::daemon::{shoal_bin, wait_until, wait_until_every, ShoalHost, NAMESPACE};
use shoal_worker::containerd::Containerd;
use shoal_worker::executor::ContainerdExecutor;

const IMAGE: &str = "docker.io/library/busybox:latest";
/// How often `service ls` is polled while timing (A): short against the seconds measured, long
/// enough that the polling CLI does not compete with the daemon for the two cores.
const POLL: Duration = Duration::from_millis(50);
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> Result<()> {
    let replicas = parse_args()?;
    let replicas_arg = replicas.to_string();
    let mut host = ShoalHost::start_swarm();

    // Warm-up: the first container unpacks the image into a snapshot; neither side should pay.
    host.shoal_ok(&[
        "service", "create", "-d", "--name", "warmup", "busybox", "sleep", "3600",
    ]);
    wait_or_bail(&host, "the warm-up task to run", || {
        host.running_containers_of("warmup").len() == 1
    })?;
    host.shoal_ok(&["service", "rm", "warmup"]);
    wait_or_bail(&host, "the warm-up container to go", || {
        host.containers().is_empty()
    })?;

    // (A) through Shoal.
    let expected = format!("{replicas}/{replicas}");
    let started = Instant::now();
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "bench",
        "--replicas",
        &replicas_arg,
        "busybox",
        "sleep",
        "3600",
    ]);
    let converged = wait_until_every(POLL, TIMEOUT, || {
        host.replicas("bench").as_deref() == Some(&expected)
    });
    let shoal_time = started.elapsed();
    if !converged {
        bail!("the service did not reach {expected} within {TIMEOUT:?}");
    }
    let running = host.running_containers_of("bench").len();
    if running != replicas {
        bail!("`service ls` says {expected} but containerd runs {running} containers");
    }
    let pid = host.daemon_pid().context("the daemon runs")?;
    let (rss_kib, peak_kib) = memory_kib(pid)?;

    host.shoal_ok(&["service", "rm", "bench"]);
    wait_or_bail(&host, "the service's containers to go", || {
        host.containers().is_empty()
    })?;
    // Nothing else may act on the namespace while (B) runs.
    host.stop_daemon();

    // (B) straight through containerd.
    let direct_dir = host.dir().join("bench-direct");
    let runtime = tokio::runtime::Runtime::new().context("start a tokio runtime")?;
    let direct_time = runtime.block_on(start_directly(
        &host.containerd_socket(),
        &direct_dir,
        replicas,
    ))?;

    let ratio = shoal_time.as_secs_f64() / direct_time.as_secs_f64();
    let rows = [
        (
            format!("(A) shoal service create until {expected} running"),
            format!("{:.3} s", shoal_time.as_secs_f64()),
        ),
        (
            format!("(B) {replicas} containers started directly"),
            format!("{:.3} s", direct_time.as_secs_f64()),
        ),
        ("ratio A/B".to_string(), format!("{ratio:.2}")),
        (
            format!("daemon RSS with {replicas} tasks"),
            format!(
                "{:.1} MiB (peak {:.1} MiB)",
                rss_kib as f64 / 1024.0,
                peak_kib as f64 / 1024.0
            ),
        ),
    ];
    for (label, value) in rows {
        println!("{label:<44} {value}");
    }
    Ok(())
}

fn parse_args() -> Result<usize> {
    let mut replicas = 30;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--replicas" => {
                let value = args.next().context("--replicas needs a number")?;
                replicas = value
                    .parse()
                    .with_context(|| format!("--replicas {value}: not a number"))?;
            }
            other => bail!("unknown argument {other}; usage: bench-service-create [--replicas N]"),
        }
    }
    if replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    Ok(replicas)
}

fn wait_or_bail(host: &ShoalHost, what: &str, cond: impl FnMut() -> bool) -> Result<()> {
    if wait_until(Duration::from_secs(120), cond) {
        Ok(())
    } else {
        bail!(
            "timed out waiting for {what}; daemon log:\n{}",
            shoal_tests::daemon::tail(&host.daemon_log(), 40)
        )
    }
}

/// VmRSS and VmHWM (peak) of `pid`, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
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
async fn start_directly(socket: &Path, data_dir: &Path, n: usize) -> Result<Duration> {
    let cd = Containerd::connect(socket, NAMESPACE)
        .await
        .context("connect to the benchmark's containerd")?;
    // The same log driver the daemon uses (the shoal binary), so both sides do the same work.
    let executor = ContainerdExecutor::new(cd, PathBuf::from(data_dir), shoal_bin())
        .context("set up the executor")?;
    let tasks = (1..=n as u64)
        .map(|slot| {
            Ok(Task {
                id: random_id()?,
                service_id: "bench-direct".into(),
                service_name: "bench-direct".into(),
                slot,
                node_id: "bench".into(),
                spec: Some(ContainerSpec {
                    image: IMAGE.into(),
                    args: vec!["sleep".into(), "3600".into()],
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<Task>>>()?;

    let started = Instant::now();
    let results = futures::future::join_all(tasks.iter().map(|task| {
        let executor = &executor;
        async move {
            let image = executor.prepare(task).await?;
            executor
                .start(task, &image, &shoal_worker::network::TaskNetwork::default())
                .await
        }
    }))
    .await;
    let elapsed = started.elapsed();

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
