//! Multi-host test clusters: [`TestCluster`] and its [`ClusterHost`]s.
//!
//! A cluster is a [`TestNetwork`] (a bridge and one network namespace per host) and, in each
//! namespace, a [`ShoalHost`]: a private containerd and a `shoal daemon`, both started under
//! `nsenter --net=…`, with their own directories and API socket. The API socket is a file, so the
//! CLI reaches every host from the root namespace; the swarm's own traffic (Raft, dispatcher)
//! goes over the hosts' `198.18.X.(10+i)` addresses and the bridge, where a test can cut a host
//! off ([`TestCluster::cut`]) and bring it back ([`TestCluster::heal`]).
//!
//! A [`ClusterHost`] dereferences to its [`ShoalHost`], so every single-host helper (`shoal_ok`,
//! `load_busybox`, `ctr_tasks`, `wait_for`…) works on it. On top it can die as a machine does
//! ([`ClusterHost::kill9_with_containerd`]) and come back ([`ClusterHost::restart`]).
//!
//! Teardown leaves nothing behind, even after a panic or a host killed mid-test: the daemons
//! stop, every task and container is killed and deleted through containerd (a containerd that
//! was killed is started again for that, since its shims and containers outlive it), the
//! directories are unmounted and removed, and then the network goes. [`cleanup_stale`] does the
//! same for what a crashed test process left.

use std::fs;
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::containerd::unmount_under;
use crate::daemon::{run_with_deadline, wait_until, ShoalHost, TEST_ADDR_POOL};
use crate::netns::{self, TestNetwork};
use crate::process::{cmdline_of, is_running, kill_tree, stop_child};

/// The port managers listen on for the swarm (Docker's).
pub const SWARM_PORT: u16 = 2377;

/// How long a restarted containerd may take to open its socket.
const CONTAINERD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd gets between SIGTERM and SIGKILL.
const CONTAINERD_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a formed cluster may take until every node is listed as Ready.
const FORM_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one `runc` call of the stale cleanup may take.
const RUNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Where runc keeps container state, per containerd namespace, for every containerd.
const RUNC_ROOT: &str = "/run/containerd/runc";
/// Where containerd's runc v2 shims keep a task's bundle: `STATE/…/NAMESPACE/ID`.
const TASK_STATE_DIR: &str = "io.containerd.runtime.v2.task";

/// One host of a [`TestCluster`]: a [`ShoalHost`] whose containerd and daemon run in the
/// host's network namespace. Dereferences to the [`ShoalHost`].
pub struct ClusterHost {
    index: usize,
    addr: Ipv4Addr,
    netns: PathBuf,
    /// Taken in Drop, so that containerd restarted by this type is stopped only after the
    /// containerd fixture inside has cleaned up through it.
    host: Option<ShoalHost>,
    /// containerd's command line, read from /proc when it was killed, to start it again.
    containerd_cmdline: Option<Vec<String>>,
    /// Whether the fixture's containerd was killed ([`ClusterHost::kill9_with_containerd`]).
    containerd_killed: bool,
    /// The containerd started again after a kill; the fixture only knows the one it started.
    containerd_again: Option<Child>,
}

impl ClusterHost {
    /// Starts containerd and the daemon for host `i` of `net` and waits until the daemon
    /// answers. The daemon is not in a swarm yet.
    pub fn start(net: &TestNetwork, i: usize) -> Self {
        Self::start_with(net, i, &[])
    }

    /// As [`ClusterHost::start`], with extra `shoal daemon` flags (kept for restarts).
    pub fn start_with(net: &TestNetwork, i: usize, daemon_args: &[&str]) -> Self {
        let netns = net.netns_path(i);
        ClusterHost {
            index: i,
            addr: net.host_addr(i),
            host: Some(ShoalHost::start_in_netns(&netns, daemon_args)),
            netns,
            containerd_cmdline: None,
            containerd_killed: false,
            containerd_again: None,
        }
    }

    /// The host's number in its cluster.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The host's address on the test network.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// `ADDR:2377`, the address a manager on this host listens on and others join.
    pub fn swarm_addr(&self) -> String {
        format!("{}:{SWARM_PORT}", self.addr)
    }

    /// The host's network namespace file.
    pub fn netns_path(&self) -> &Path {
        &self.netns
    }

    fn shoal_host(&self) -> &ShoalHost {
        self.host
            .as_ref()
            .expect("a cluster host's ShoalHost is only taken when it is dropped")
    }

    fn shoal_host_mut(&mut self) -> &mut ShoalHost {
        self.host
            .as_mut()
            .expect("a cluster host's ShoalHost is only taken when it is dropped")
    }

    /// `shoal swarm init`, advertising and listening on the host's test address.
    pub fn swarm_init(&self) -> String {
        self.swarm_init_with(&[])
    }

    /// [`ClusterHost::swarm_init`] with more flags (`--dispatcher-heartbeat 30s`…).
    pub fn swarm_init_with(&self, extra: &[&str]) -> String {
        let listen = self.swarm_addr();
        let advertise = self.addr.to_string();
        let mut args = vec![
            "swarm",
            "init",
            "--advertise-addr",
            &advertise,
            "--listen-addr",
            &listen,
            "--default-addr-pool",
            TEST_ADDR_POOL,
        ];
        args.extend_from_slice(extra);
        self.shoal_ok(&args)
    }

    /// `shoal swarm join --token TOKEN MANAGER`, advertising and listening on the host's test
    /// address.
    pub fn swarm_join(&self, token: &str, manager: &str) -> String {
        let args = self.swarm_join_args(token, manager);
        self.shoal_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The same `swarm join`, expected to fail: returns the error (see [`ShoalHost::shoal_err`]).
    pub fn swarm_join_err(&self, token: &str, manager: &str) -> String {
        let args = self.swarm_join_args(token, manager);
        self.shoal_err(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn swarm_join_args(&self, token: &str, manager: &str) -> Vec<String> {
        let listen = self.swarm_addr();
        let advertise = self.addr.to_string();
        [
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            &advertise,
            "--listen-addr",
            &listen,
            manager,
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    /// `shoal node ls --format json`: one object per node (ID, Hostname, Status,
    /// Availability, ManagerStatus, EngineVersion, Self).
    pub fn nodes(&self) -> Vec<Value> {
        self.shoal_ok(&["node", "ls", "--format", "json"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("`node ls --format json` printed {l:?}: {e}"))
            })
            .collect()
    }

    /// `shoal info --format json`: the daemon's InfoResponse (`swarm_state`, `node_id`,
    /// `is_manager`…).
    pub fn info(&self) -> Value {
        let out = self.shoal_ok(&["info", "--format", "json"]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`info --format json` printed {out:?}: {e}"))
    }

    /// This host's node ID in its swarm (empty while it is in none).
    pub fn node_id(&self) -> String {
        self.info()["node_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// SIGKILLs the daemon only, as a crash would; containerd and the containers go on.
    pub fn kill9(&mut self) {
        self.shoal_host_mut().kill9();
    }

    /// The machine dies: SIGKILLs the daemon and containerd. The containers' shims (and so the
    /// containers) are not killed; they go at teardown, or [`ClusterHost::restart`] brings
    /// containerd back to them. Combine with [`TestCluster::cut`] for a host that vanishes
    /// from the network too.
    pub fn kill9_with_containerd(&mut self) {
        self.kill9();
        if !self.containerd_running() {
            return;
        }
        let socket = self.containerd_socket();
        let Some(pid) = containerd_pid(&socket) else {
            panic!(
                "no containerd process serving {} was found to kill",
                socket.display()
            );
        };
        let cmdline = cmdline_of(pid);
        assert!(
            !cmdline.is_empty(),
            "could not read containerd's command line (pid {pid})"
        );
        self.containerd_cmdline = Some(cmdline);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        self.containerd_killed = true;
        // The fixture is containerd's parent and reaps it at teardown; until then it is a
        // zombie. Its leader thread turns zombie before the other threads have exited and
        // closed the socket, so the death counts only once connections are refused: a
        // containerd started again must not be taken for ready by reaching the dying one.
        let dead = wait_until(Duration::from_secs(10), || {
            !is_running(pid) && UnixStream::connect(&socket).is_err()
        });
        assert!(dead, "containerd (pid {pid}) survived SIGKILL");
        if let Some(mut child) = self.containerd_again.take() {
            let _ = child.wait();
        }
    }

    /// The pid of this host's containerd, if it runs.
    pub fn containerd_pid(&self) -> Option<i32> {
        containerd_pid(&self.containerd_socket()).filter(|pid| is_running(*pid))
    }

    /// Whether this host's containerd is up (not killed, or started again).
    pub fn containerd_running(&self) -> bool {
        !self.containerd_killed || self.containerd_again.is_some()
    }

    /// Stops the daemon if it runs (SIGTERM) and starts it again with the same data dir; a
    /// containerd killed by [`ClusterHost::kill9_with_containerd`] is started again first, with
    /// the same root and state, so it finds the tasks its shims still run.
    pub fn restart(&mut self) {
        if !self.containerd_running() {
            if let Err(e) = self.start_containerd_again() {
                panic!("{e:#}");
            }
        }
        self.shoal_host_mut().restart();
    }

    fn start_containerd_again(&mut self) -> Result<()> {
        let Some(cmdline) = &self.containerd_cmdline else {
            bail!("containerd's command line was not recorded when it was killed");
        };
        let child = start_containerd(&self.netns, cmdline, self.shoal_host())?;
        self.containerd_again = Some(child);
        Ok(())
    }
}

/// Starts containerd with `cmdline` (its own argv, as it ran before) inside `netns`, logging
/// to the fixture's containerd log, and waits until it accepts connections.
fn start_containerd(netns: &Path, cmdline: &[String], host: &ShoalHost) -> Result<Child> {
    let log_path = host.containerd().log_path();
    let socket = host.containerd_socket();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .args(cmdline)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting containerd again")?;
    let deadline = Instant::now() + CONTAINERD_START_TIMEOUT;
    // A killed containerd leaves its socket file behind: only an accepted connection means
    // the new one listens.
    while UnixStream::connect(&socket).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "containerd started again exited with {status}; its log:\n{}",
                host.containerd().log_tail(40)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "containerd started again did not open {} within \
                 {CONTAINERD_START_TIMEOUT:?}; its log:\n{}",
                socket.display(),
                host.containerd().log_tail(40)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

impl Deref for ClusterHost {
    type Target = ShoalHost;

    fn deref(&self) -> &ShoalHost {
        self.shoal_host()
    }
}

impl DerefMut for ClusterHost {
    fn deref_mut(&mut self) -> &mut ShoalHost {
        self.shoal_host_mut()
    }
}

impl Drop for ClusterHost {
    fn drop(&mut self) {
        let Some(mut host) = self.host.take() else {
            return;
        };
        if thread::panicking() {
            // The ShoalHost's own Drop prints its daemon log; this says whose it is.
            eprintln!(
                "cluster host {} ({}), dirs {} and {}; containerd log (tail):\n{}",
                self.index,
                self.addr,
                host.dir().display(),
                host.containerd().dir().display(),
                host.containerd().log_tail(30)
            );
        }
        host.stop_daemon();
        // A killed containerd's shims still run the containers: starting containerd again
        // lets the fixture kill and delete them through it as it always does.
        if !self.containerd_running() {
            let started = match &self.containerd_cmdline {
                Some(cmdline) => start_containerd(&self.netns, cmdline, &host),
                None => Err(anyhow::anyhow!(
                    "containerd's command line was not recorded"
                )),
            };
            match started {
                Ok(child) => self.containerd_again = Some(child),
                Err(e) => {
                    eprintln!("{e:#}\nremoving its containers with runc instead");
                    delete_with_runc(&host.containerd().state());
                }
            }
        }
        let containerd_dir = host.containerd().dir().to_path_buf();
        drop(host);
        if let Some(mut child) = self.containerd_again.take() {
            let _ = stop_child(&mut child, CONTAINERD_STOP_GRACE);
            // It ran while the fixture removed its directory: remove what it may have left.
            let _ = unmount_under(&containerd_dir);
            if containerd_dir.exists() {
                if let Err(e) = fs::remove_dir_all(&containerd_dir) {
                    eprintln!("removing {}: {e}", containerd_dir.display());
                }
            }
        }
    }
}

/// A [`TestNetwork`] with a [`ClusterHost`] in each namespace; see the module documentation.
pub struct TestCluster {
    // Field order is drop order: the hosts' processes must be gone before their namespaces.
    hosts: Vec<ClusterHost>,
    net: TestNetwork,
}

impl TestCluster {
    /// `n` hosts on a fresh network, each with containerd and a daemon that answers (no swarm
    /// yet). Leftovers of crashed runs are removed first.
    pub fn new(n: usize) -> Self {
        Self::new_with(n, &[])
    }

    /// As [`TestCluster::new`], with extra `shoal daemon` flags for every host.
    pub fn new_with(n: usize, daemon_args: &[&str]) -> Self {
        if let Err(e) = cleanup_stale() {
            eprintln!("cleaning up stale test clusters: {e:#}");
        }
        let net =
            TestNetwork::new(n).unwrap_or_else(|e| panic!("creating the test network: {e:#}"));
        // The hosts start side by side: each waits seconds for containerd and its daemon.
        let hosts = thread::scope(|s| {
            let starting: Vec<_> = (0..n)
                .map(|i| {
                    let net = &net;
                    s.spawn(move || ClusterHost::start_with(net, i, daemon_args))
                })
                .collect();
            let mut hosts = Vec::new();
            let mut failed = None;
            for (i, handle) in starting.into_iter().enumerate() {
                match handle.join() {
                    Ok(host) => hosts.push(host),
                    Err(panic) => {
                        failed.get_or_insert((i, panic));
                    }
                }
            }
            if let Some((i, panic)) = failed {
                // The hosts that did start are dropped (cleaned up) before the panic goes on.
                drop(hosts);
                eprintln!("cluster host {i} failed to start");
                std::panic::resume_unwind(panic);
            }
            hosts
        });
        TestCluster { hosts, net }
    }

    /// The network the hosts are on.
    pub fn net(&self) -> &TestNetwork {
        &self.net
    }

    /// Host `i`'s metrics page, from the daemon started with `--metrics-addr
    /// 127.0.0.1:PORT` (its own loopback, inside its namespace).
    pub fn metrics_text(&self, i: usize, port: u16) -> Result<String> {
        let (_, _, text) = self
            .net
            .run_in(i, || crate::http::http_get(port, "/metrics", None))?
            .with_context(|| format!("host {i}'s metrics endpoint did not answer"))?;
        Ok(text)
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &ClusterHost {
        &self.hosts[i]
    }

    /// Host `i`, for killing and restarting it.
    pub fn host_mut(&mut self, i: usize) -> &mut ClusterHost {
        &mut self.hosts[i]
    }

    /// Every host, by index.
    pub fn hosts(&self) -> &[ClusterHost] {
        &self.hosts
    }

    /// How many hosts the cluster has.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the cluster has no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Waits until each of the first `managers` hosts lists every one of `nodes` nodes Ready,
    /// one Leader and the other managers Reachable; false if that takes over `timeout`.
    pub fn wait_healthy(&self, managers: usize, nodes: usize, timeout: Duration) -> bool {
        wait_until(timeout, || {
            (0..managers).all(|i| {
                crate::listing::try_nodes(self.host(i)).is_some_and(|listed| {
                    let status = crate::listing::manager_statuses(&listed);
                    listed.len() == nodes
                        && listed.iter().all(|n| n["Status"] == "Ready")
                        && status.values().filter(|s| *s == "Leader").count() == 1
                        && status.values().filter(|s| *s == "Reachable").count() == managers - 1
                })
            })
        })
    }

    /// Every host's node ID, by host index; panics if a host is in no swarm.
    pub fn node_ids(&self) -> Vec<String> {
        let ids: Vec<String> = self.hosts.iter().map(|h| h.node_id()).collect();
        assert!(
            ids.iter().all(|id| !id.is_empty()),
            "a host is in no swarm: {ids:?}"
        );
        ids
    }

    /// Loads the busybox test image on every host, side by side.
    pub fn load_busybox_everywhere(&self) {
        thread::scope(|s| {
            for host in &self.hosts {
                s.spawn(move || host.load_busybox());
            }
        });
    }

    /// How many containers of `service` run (in containerd) on each of `hosts`.
    pub fn running_per_host(&self, hosts: &[usize], service: &str) -> Vec<usize> {
        hosts
            .iter()
            .map(|&i| self.host(i).running_containers_of(service).len())
            .collect()
    }

    /// Cuts host `i` off the network (see [`TestNetwork::cut`]).
    pub fn cut(&self, i: usize) {
        if let Err(e) = self.net.cut(i) {
            panic!("cutting host {i} off: {e:#}");
        }
    }

    /// Connects host `i` again (see [`TestNetwork::heal`]).
    pub fn heal(&self, i: usize) {
        if let Err(e) = self.net.heal(i) {
            panic!("healing host {i}: {e:#}");
        }
    }

    /// Host `i`'s machine dies: it is cut off first, so that not even the kernel's closing of
    /// its connections reaches the others, then its daemon and containerd are SIGKILLed.
    pub fn power_off(&mut self, i: usize) {
        self.cut(i);
        self.hosts[i].kill9_with_containerd();
    }

    /// Host `i`'s machine comes back: it is connected again, then containerd and the daemon
    /// start again (containerd finds the containers the shims kept).
    pub fn power_on(&mut self, i: usize) {
        self.heal(i);
        self.hosts[i].restart();
    }

    /// Forms a swarm: host 0 runs `swarm init`, hosts `1..managers` join as managers and the
    /// next `workers` hosts as workers, all through the CLI with the join tokens host 0 prints.
    /// Returns once host 0's `node ls` lists every one of them as Ready.
    pub fn form(&self, managers: usize, workers: usize) {
        assert!(managers >= 1, "a swarm needs a manager");
        assert!(
            managers + workers <= self.hosts.len(),
            "{managers} managers and {workers} workers need more than the cluster's {} hosts",
            self.hosts.len()
        );
        let leader = &self.hosts[0];
        leader.swarm_init();
        let manager_token = join_token(leader, "manager");
        let worker_token = join_token(leader, "worker");
        let target = leader.swarm_addr();
        for host in &self.hosts[1..managers] {
            host.swarm_join(&manager_token, &target);
        }
        for host in &self.hosts[managers..managers + workers] {
            host.swarm_join(&worker_token, &target);
        }
        let expected = managers + workers;
        let ready = wait_until(FORM_TIMEOUT, || {
            let out = leader.shoal(&["node", "ls", "--format", "json"]);
            let listed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            out.status.success()
                && listed.len() == expected
                && listed.iter().all(|n| n["Status"] == "Ready")
        });
        if !ready {
            panic!(
                "the swarm did not list {expected} Ready nodes within {FORM_TIMEOUT:?}; \
                 node ls on host 0:\n{}",
                String::from_utf8_lossy(&leader.shoal(&["node", "ls"]).stdout)
            );
        }
    }
}

/// `shoal swarm join-token -q ROLE` on `host`.
fn join_token(host: &ClusterHost, role: &str) -> String {
    host.shoal_ok(&["swarm", "join-token", "-q", role])
        .trim()
        .to_string()
}

/// Removes what crashed test processes left of their clusters: for every network namespace of
/// a dead run, the containers its containerd ran (through runc, which also removes their state
/// in the shared runc directory), every process in it (containerd, shims, daemons, log
/// drivers) and the directories of its containerd and daemon; then the network objects
/// ([`netns::cleanup_stale`]). Clusters of live test processes are not touched.
pub fn cleanup_stale() -> Result<()> {
    netns::cleanup_stale_with(|_, pids| {
        let mut dirs = Vec::new();
        for pid in pids {
            let args = cmdline_of(*pid);
            // containerd's `--root DIR/root`, its shims' `-address DIR/containerd.sock` and the
            // daemon's `--data-dir DIR/data` all sit in a fixture directory.
            for flag in ["--root", "-address", "--data-dir"] {
                if let Some(parent) = flag_value(&args, flag).and_then(|p| Path::new(p).parent()) {
                    dirs.push(parent.to_path_buf());
                }
            }
        }
        dirs.sort();
        dirs.dedup();
        for dir in &dirs {
            // Before the shims are killed: runc then finds the containers as they are.
            delete_with_runc(&dir.join("state"));
        }
        let killed = kill_tree(pids);
        // Their open files and mounts go only once they are gone (zombies hold neither).
        wait_until(Duration::from_secs(10), || {
            !killed.iter().any(|pid| is_running(*pid))
        });
        for dir in dirs {
            // Only the fixtures' own temp dirs, never a path a process was merely given.
            let in_tmp = dir.parent() == Some(std::env::temp_dir().as_path())
                || dir.parent() == Some(Path::new("/tmp"));
            let named = dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shoal-ctrd-") || n.starts_with("shoal-host-"));
            if in_tmp && named {
                let _ = unmount_under(&dir);
                let _ = fs::remove_dir_all(&dir);
            }
        }
    })
}

/// Force-deletes, with runc, every container containerd with state dir `state` had a task for:
/// kills its processes and removes its cgroup and its state under the shared runc root. For a
/// containerd that cannot clean up itself.
fn delete_with_runc(state: &Path) {
    let Ok(namespaces) = fs::read_dir(state.join(TASK_STATE_DIR)) else {
        return;
    };
    for ns in namespaces.flatten() {
        let Ok(tasks) = fs::read_dir(ns.path()) else {
            continue;
        };
        for task in tasks.flatten() {
            let mut cmd = Command::new("runc");
            cmd.arg("--root")
                .arg(Path::new(RUNC_ROOT).join(ns.file_name()))
                .args(["delete", "--force"])
                .arg(task.file_name());
            let _ = run_with_deadline(&mut cmd, RUNC_TIMEOUT);
        }
    }
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

/// The containerd process serving `socket` (started through nsenter, which execs it, so its
/// own command line holds `--address SOCKET`).
fn containerd_pid(socket: &Path) -> Option<i32> {
    let socket = socket.to_string_lossy();
    let entries = fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let args = cmdline_of(*pid);
            args.first()
                .is_some_and(|a| Path::new(a).file_name() == Some("containerd".as_ref()))
                && flag_value(&args, "--address") == Some(&*socket)
        })
}
