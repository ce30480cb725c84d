//! Benchmark: what Shoal costs in memory and disk against Docker Swarm running the same tasks.
//!
//! On one private containerd (the test fixture's), one after the other:
//! - Shoal: a one-node swarm; its daemon's RSS and PSS idle, then with N (100) tasks of
//!   `busybox sleep 3600` running, plus the PSS of every per-task helper process it makes (the
//!   log driver containerd's shim starts for each container). Shoal's own processes are the
//!   daemon and those helpers.
//! - Docker Swarm: Debian's dockerd on the same containerd (`shoal_tests::swarm`), one-node
//!   swarm, idle, then the same N tasks. dockerd reads its containers' logs itself, so its own
//!   processes are dockerd alone.
//! - Both: the shims (containerd's, the same program for both) are listed apart, for context.
//! - The binaries' sizes on disk.
//!
//! PSS (proportional set size) divides each shared page among the processes that map it, so
//! the PSS of a group adds up to what the group costs; RSS counts shared pages in full for each.
//! Samples are taken after the tasks run and a few seconds of quiet. Not a test: it asserts
//! nothing; it prints the figures of this run.
//!
//! Usage: `bench-footprint [--tasks N] [--quick]` (`--quick`: N = 5); run by
//! `bench/footprint.sh`.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use shoal_tests::daemon::{shoal_bin, wait_until_every, ShoalHost, NAMESPACE};
use shoal_tests::memory::{self, Memory};
use shoal_tests::swarm::{running_task_count, DockerSwarm, DOCKER_IMAGE, DOCKER_NAMESPACE};

const POLL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(300);
/// Quiet time before each sample, so start-up work and its garbage are over.
const SETTLE: Duration = Duration::from_secs(5);
const DOCKERD: &str = "/usr/sbin/dockerd";
const USAGE: &str = "usage: bench-footprint [--tasks N] [--quick]";

/// One orchestrator's figures.
struct Footprint {
    idle: Memory,
    loaded: Memory,
    /// Per-task helper processes with N tasks: how many, and their total.
    helpers: (usize, Memory),
    shims: (usize, Memory),
}

fn main() -> Result<()> {
    let n = parse_args()?;
    DockerSwarm::check_installed()?;
    let mut host = ShoalHost::start_swarm();
    let socket = host.containerd_socket();

    let shoal = shoal_footprint(&host, n)?;
    let driver = installed_log_driver(&host.data_dir())?;
    host.stop_daemon();

    // Declared after `host`, so it is dropped (and cleaned up) before the containerd it uses.
    let mut swarm = DockerSwarm::start(&socket)?;
    swarm.load_busybox()?;
    let docker = swarm_footprint(&swarm, &socket, n)?;
    swarm.shutdown()?;

    print_memory(n, &shoal, &docker);
    print_sizes(&driver)?;
    Ok(())
}

fn parse_args() -> Result<usize> {
    let mut n = 100;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => n = 5,
            "--tasks" => {
                let v = args.next().context(USAGE)?;
                n =
                    v.parse().ok().filter(|&n| n > 0).with_context(|| {
                        format!("--tasks {v:?}: not a positive number; {USAGE}")
                    })?;
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(n)
}

fn shoal_footprint(host: &ShoalHost, n: usize) -> Result<Footprint> {
    let pid = host.daemon_pid().context("the daemon runs")?;
    thread::sleep(SETTLE);
    let idle = memory::memory(pid)?;
    let n_arg = n.to_string();
    host.shoal_ok(&create_args(&n_arg, "busybox"));
    let expected = format!("{n}/{n}");
    if !wait_until_every(POLL, TIMEOUT, || {
        host.replicas("footprint").as_deref() == Some(&expected)
    }) {
        bail!("shoal: footprint did not reach {expected} within {TIMEOUT:?}");
    }
    check_running(&host.containerd_socket(), NAMESPACE, n)?;
    thread::sleep(SETTLE);
    let loaded = memory::memory(pid)?;
    // The log drivers of this host: their options name a log under its data directory.
    let data = host.data_dir().display().to_string();
    let helpers = memory::processes(|argv| {
        argv.get(1).map(String::as_str) == Some("__log-driver")
            && argv.get(2).is_some_and(|o| o.contains(&data))
    });
    let shims = shims_of(&host.containerd_socket(), NAMESPACE);
    host.shoal_ok(&["service", "rm", "footprint"]);
    wait_no_containers(&host.containerd_socket(), NAMESPACE)?;
    Ok(Footprint {
        idle,
        loaded,
        helpers: (helpers.len(), memory::total(&helpers)),
        shims,
    })
}

fn swarm_footprint(swarm: &DockerSwarm, socket: &Path, n: usize) -> Result<Footprint> {
    let pid = swarm.pid().context("dockerd runs")?;
    thread::sleep(SETTLE);
    let idle = memory::memory(pid)?;
    let n_arg = n.to_string();
    let mut args = create_args(&n_arg, DOCKER_IMAGE);
    // No registry lookup for the image's digest: Shoal does none either.
    args.insert(2, "--no-resolve-image");
    swarm.docker_ok(&args)?;
    let expected = format!("{n}/{n}");
    let mut polled = Ok(None);
    let converged = wait_until_every(POLL, TIMEOUT, || {
        polled = swarm.replicas("footprint");
        matches!(&polled, Ok(Some(r)) if *r == expected)
    });
    polled?;
    if !converged {
        bail!(
            "swarm: footprint did not reach {expected} within {TIMEOUT:?}; dockerd log:\n{}",
            swarm.log_tail(40)
        );
    }
    check_running(socket, DOCKER_NAMESPACE, n)?;
    thread::sleep(SETTLE);
    let loaded = memory::memory(pid)?;
    let shims = shims_of(socket, DOCKER_NAMESPACE);
    swarm.docker_ok(&["service", "rm", "footprint"])?;
    wait_no_containers(socket, DOCKER_NAMESPACE)?;
    Ok(Footprint {
        idle,
        loaded,
        // dockerd copies its containers' output itself: no process per task.
        helpers: (0, Memory::default()),
        shims,
    })
}

/// `service create -d --name footprint --replicas N IMAGE sleep 3600`, for either CLI.
fn create_args<'a>(n: &'a str, image: &'a str) -> Vec<&'a str> {
    vec![
        "service",
        "create",
        "-d",
        "--name",
        "footprint",
        "--replicas",
        n,
        image,
        "sleep",
        "3600",
    ]
}

fn check_running(socket: &Path, namespace: &str, n: usize) -> Result<()> {
    let running = running_task_count(socket, namespace)?;
    if running != n {
        bail!("{namespace}: the service shows {n}/{n} but containerd runs {running} tasks");
    }
    Ok(())
}

fn wait_no_containers(socket: &Path, namespace: &str) -> Result<()> {
    shoal_tests::swarm::wait_namespace_empty(socket, namespace, TIMEOUT)
}

/// containerd's shims of `namespace` on the containerd at `socket`.
fn shims_of(socket: &Path, namespace: &str) -> (usize, Memory) {
    let socket = socket.display().to_string();
    let shims = memory::processes(|argv| {
        argv.first().is_some_and(|a| a.contains("containerd-shim"))
            && argv.contains(&socket)
            && argv
                .windows(2)
                .any(|w| w[0] == "-namespace" && w[1] == namespace)
    });
    (shims.len(), memory::total(&shims))
}

/// The log driver program the daemon installed in its data directory.
fn installed_log_driver(data_dir: &Path) -> Result<PathBuf> {
    let bin = data_dir.join("bin");
    fs::read_dir(&bin)
        .with_context(|| format!("reading {}", bin.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("shoal-log-driver-"))
        })
        .with_context(|| format!("no log driver installed in {}", bin.display()))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn print_memory(n: usize, shoal: &Footprint, docker: &Footprint) {
    println!();
    println!("memory in MiB with {n} tasks of `busybox sleep 3600` (PSS: shared pages split among");
    println!("the processes sharing them; RSS: counted whole in each)");
    println!("{:<48} {:>12} {:>12}", "", "shoal", "swarm");
    let row = |what: &str, a: String, b: String| println!("{what:<48} {a:>12} {b:>12}");
    row(
        "daemon RSS, idle",
        mib(shoal.idle.rss),
        mib(docker.idle.rss),
    );
    row(
        "daemon PSS, idle",
        mib(shoal.idle.pss),
        mib(docker.idle.pss),
    );
    row(
        &format!("daemon RSS, {n} tasks"),
        mib(shoal.loaded.rss),
        mib(docker.loaded.rss),
    );
    row(
        &format!("daemon PSS, {n} tasks"),
        mib(shoal.loaded.pss),
        mib(docker.loaded.pss),
    );
    row(
        "per-task helper processes (count)",
        shoal.helpers.0.to_string(),
        docker.helpers.0.to_string(),
    );
    row(
        "per-task helpers' PSS, total",
        mib(shoal.helpers.1.pss),
        mib(docker.helpers.1.pss),
    );
    let per_helper = |f: &Footprint| match f.helpers.0 {
        0 => "-".to_string(),
        c => format!("{:.2}", f.helpers.1.pss as f64 / 1024.0 / c as f64),
    };
    row(
        "per-task helper PSS, each",
        per_helper(shoal),
        per_helper(docker),
    );
    let own = |f: &Footprint| f.loaded.pss + f.helpers.1.pss;
    row(
        "own processes' PSS, total (target: shoal <= 60)",
        mib(own(shoal)),
        mib(own(docker)),
    );
    row(
        "containerd shims' PSS (count), for context",
        format!("{} ({})", mib(shoal.shims.1.pss), shoal.shims.0),
        format!("{} ({})", mib(docker.shims.1.pss), docker.shims.0),
    );
    println!(
        "ratio swarm/shoal, own processes' PSS: {:.2}",
        own(docker) as f64 / own(shoal).max(1) as f64
    );
}

fn print_sizes(driver: &Path) -> Result<()> {
    let size = |p: &Path| -> Result<u64> {
        Ok(fs::metadata(p)
            .with_context(|| format!("reading {}", p.display()))?
            .len())
    };
    let shoal = size(&shoal_bin())?;
    println!();
    println!("binaries on disk, MiB");
    println!(
        "shoal {} (of which the embedded log driver {:.2}), dockerd {}",
        mib(shoal / 1024),
        size(driver)? as f64 / 1024.0 / 1024.0,
        mib(size(Path::new(DOCKERD))? / 1024)
    );
    Ok(())
}
