//! What the benchmarks share: finding a service's running task and its network namespace, and
//! running the host's tools inside a namespace (`nsenter`), so the image needs none of them.

use std::path::{Path, PathBuf};
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

pub fn task_netns(host: &ClusterHost, task: &str) -> PathBuf {
    host.netns_dir().join("tasks").join(task)
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
