//! What the netns integration tests share: a `Lab`, a private namespace directory whose Drop
//! deletes every namespace in it (and with them every link the test made), and helpers that run
//! `ip`/`ping` inside a namespace to check the kernel's state from the outside.
//!
//! Each test works only inside namespaces of its own, under a temporary directory, with random
//! names and addresses in 198.18.0.0/15; nothing touches the host's links.

#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_netns::{Ipv4Net, MacAddr, Netlink, Netns, NetnsDir};

pub struct Lab {
    pub dir: NetnsDir,
    tmp: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("shoal-netns-test")
            .tempdir()
            .expect("temporary directory");
        let dir = NetnsDir::new(tmp.path().join("netns")).expect("namespace directory");
        Self { dir, tmp }
    }

    /// A new namespace with a random name.
    pub fn netns(&self) -> Netns {
        self.dir.ensure(&unique("ns")).expect("create namespace")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.dir.list().unwrap_or_default() {
            if let Err(err) = self.dir.delete(&name) {
                eprintln!("cleanup: deleting namespace {name}: {err}");
            }
        }
        // NetnsDir::new made the directory a mount point of its own; undo that before the
        // temporary directory is removed.
        if let Err(err) = nix::mount::umount2(self.dir.dir(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("cleanup: unmounting {}: {err}", self.dir.dir().display());
        }
    }
}

/// `shl` + a prefix + random hex, at most 15 bytes: a valid, unique interface or namespace name.
pub fn unique(prefix: &str) -> String {
    let mut name = format!("shl{prefix}{:08x}", rand::random::<u32>());
    name.truncate(15);
    name
}

/// Runs `ip ARGS` inside `ns` and returns its standard output; panics if it fails.
pub fn ip(ns: &Netns, args: &[&str]) -> String {
    let out = nsenter(ns.path())
        .arg("ip")
        .args(args)
        .output()
        .expect("run nsenter ip");
    assert!(
        out.status.success(),
        "ip {args:?} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `bridge ARGS` inside `ns` and returns its standard output.
pub fn bridge(ns: &Netns, args: &[&str]) -> String {
    let out = nsenter(ns.path())
        .arg("bridge")
        .args(args)
        .output()
        .expect("run nsenter bridge");
    assert!(out.status.success(), "bridge {args:?} in {}", ns.name());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One ping from inside `ns` to `ip`, with a one second timeout. Busybox's ping, because
/// busybox-static is already one of the project's dependencies (scripts/install-deps.sh) and
/// iputils-ping is not.
pub fn ping(ns: &Netns, ip: &str) -> bool {
    nsenter(ns.path())
        .args(["busybox", "ping", "-c1", "-W1", ip])
        .output()
        .expect("run nsenter ping")
        .status
        .success()
}

/// A few pings: the first may be lost while neighbours resolve.
pub fn reachable(ns: &Netns, ip: &str) -> bool {
    (0..3).any(|_| ping(ns, ip))
}

fn nsenter(path: &Path) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", path.display()));
    cmd
}

/// Waits up to `limit` for `check` to hold.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Plugs `task` into `bridge` in the namespace behind `switch`, as the worker will: veth
/// `host_end` ↔ the task's eth0 (with `mac`, if given, and `address`), both ends and the task's
/// loopback up.
pub async fn plug(
    switch: &Netlink,
    bridge: &str,
    task: &Netns,
    host_end: &str,
    address: Ipv4Net,
    mtu: u32,
    mac: Option<MacAddr>,
) {
    switch
        .ensure_veth(host_end, task, "eth0", Some(mtu))
        .await
        .expect("veth");
    switch
        .attach_to_bridge(host_end, bridge)
        .await
        .expect("attach");
    switch.set_up(host_end).await.expect("host end up");
    let inside = Netlink::open(task).expect("netlink in task");
    if let Some(mac) = mac {
        inside.set_mac("eth0", mac).await.expect("MAC");
    }
    inside
        .ensure_address("eth0", address)
        .await
        .expect("address");
    inside.set_up("eth0").await.expect("eth0 up");
    inside.set_up("lo").await.expect("lo up");
}
