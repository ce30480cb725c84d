//! What the benchmarks share: finding a service's running task and its network namespace, and
//! running the host's tools inside a namespace (`nsenter`), so the image needs none of them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cluster::ClusterHost;
use crate::daemon::wait_until;

/// How long a benchmark waits for anything to be ready.
pub const TIMEOUT: Duration = Duration::from_secs(120);

pub fn running_task(host: &ClusterHost, service: &str) -> Result<String> {
    let mut found = None;
    if !wait_until(TIMEOUT, || {
        found = host.running_containers_of(service).into_iter().next();
        found.is_some()
    }) {
        bail!("no running task of {service}");
    }
    Ok(found.map(|c| c.id).unwrap_or_default())
}

/// The outbound bridge's address of `host`: its DNS server.
pub fn gateway(host: &ClusterHost) -> String {
    let (_, bip) = host.bridge();
    bip.split('/').next().unwrap_or(bip).to_string()
}

/// `program args` inside the network namespace at `ns`.
pub fn in_netns(ns: &Path, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.display()))
        .arg(program)
        .args(args);
    c
}

pub fn output(mut cmd: Command) -> Result<String> {
    let out = cmd.output().context("running a probe")?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// eth0's address in a task's namespace.
pub fn overlay_addr(ns: &Path) -> Result<String> {
    let out = output(in_netns(ns, "ip", &["-o", "-4", "addr", "show", "eth0"]))?;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .map(str::to_string)
        .with_context(|| format!("no address on eth0: {out}"))
}

pub use crate::memory::memory_kib;

/// CPU seconds (user + system) `pid` has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat has no field {}", i + 3))
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) as f64 / hz)
}

/// CPU seconds the whole machine has spent busy so far (every CPU: user, nice, system, irq,
/// softirq and steal time from `/proc/stat`): the difference over a run is what the run cost,
/// whichever processes did the work, including short-lived ones such as runc.
pub fn machine_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no `cpu` line")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(busy as f64 / hz)
}

/// Raises this process's open-file limit to its hard limit (inherited by the processes it
/// starts): a thousand hollow nodes hold a thousand connections, at both ends.
pub fn raise_nofile_limit() -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The `q`-quantile (0..=1) of `samples`, sorted in place; `None` when there are none.
pub fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    samples.sort_unstable();
    let last = samples.len().checked_sub(1)?;
    samples.get(((last as f64) * q).round() as usize).copied()
}
