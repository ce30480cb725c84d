//! `ShoalHost`: one test host, i.e. a private containerd ([`ContainerdHost`]) plus a
//! `shoal daemon` process started from the built binary, and the helpers the integration tests
//! use to drive the CLI and to look at what really runs in containerd.
//!
//! Every path the host uses (data dir, API socket, daemon log) lives in its own temp dir, so
//! hosts can run side by side and nothing touches `/var/lib/shoal` or the host's containerd.
//! Drop stops the daemon (SIGTERM, then SIGKILL) before the containerd fixture cleans up
//! tasks, containers and mounts.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::containerd::ContainerdHost;
use crate::process::stop_child;
use crate::table::parse_table;

/// The containerd namespace the daemon is started with (its default, passed explicitly so a
/// change of default cannot make the helpers look in the wrong place).
pub const NAMESPACE: &str = "shoal";

/// How long one CLI call may take before the test fails instead of hanging.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a freshly started daemon may take to answer `shoal info`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The `shoal` binary under test: `$SHOAL_BIN`, or `shoal` next to the running executable
/// (tests run from `target/debug/deps/`, bins such as the benchmark from `target/<profile>/`).
pub fn shoal_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOAL_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("path of the running test executable");
    let mut dir = exe
        .parent()
        .expect("test executable has a parent directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("shoal");
    if !bin.is_file() {
        panic!(
            "the shoal binary is not at {}: build it first with `cargo build -p shoal-cli` \
             (scripts/test.sh builds everything before testing), or set SHOAL_BIN",
            bin.display()
        );
    }
    bin
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_until_every(Duration::from_millis(100), timeout, cond)
}

/// Polls `cond` every `period` until it holds or `timeout` passes; returns whether it held.
/// Benchmarks poll faster than [`wait_until`] to time what they wait for.
pub fn wait_until_every(
    period: Duration,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(period);
    }
}

/// Runs `cmd` with captured output, killing it and panicking if it outlives `timeout`: a hung
/// CLI call must fail the test, not hang the suite.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    run_with_deadline(cmd, timeout)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {timeout:?}"))
}

/// Runs `cmd` with captured output; None (after killing it) if it outlives `timeout`.
pub fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Read both pipes on threads so a chatty child cannot block on a full pipe while we wait.
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    Some(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// A command line split on whitespace, for CLI calls whose arguments hold no spaces:
/// `host.shoal_ok(&words("service scale web=5"))`.
pub fn words(cmdline: &str) -> Vec<&str> {
    cmdline.split_whitespace().collect()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Label the worker puts on a task's container: the service's name.
pub const LABEL_SERVICE_NAME: &str = "shoal.service.name";
/// Label the worker puts on a task's container: the task's ID.
pub const LABEL_TASK_ID: &str = "shoal.task.id";
/// Label the worker puts on a task's container: the task's slot (decimal).
pub const LABEL_TASK_SLOT: &str = "shoal.task.slot";

/// A container as containerd stores it.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

impl Container {
    pub fn service_name(&self) -> Option<&str> {
        self.labels.get(LABEL_SERVICE_NAME).map(String::as_str)
    }

    pub fn task_id(&self) -> Option<&str> {
        self.labels.get(LABEL_TASK_ID).map(String::as_str)
    }

    pub fn slot(&self) -> Option<u64> {
        self.labels.get(LABEL_TASK_SLOT)?.parse().ok()
    }
}

/// A containerd task (the running process of a container), as `ctr tasks ls` shows it.
#[derive(Debug, Clone)]
pub struct CtrTask {
    pub id: String,
    pub pid: u32,
    /// RUNNING, STOPPED, CREATED, PAUSED …
    pub status: String,
}

/// A snapshot, as `ctr snapshots ls` shows it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub key: String,
    pub parent: String,
    /// "Committed" for image layers, "Active" for a container's writable rootfs.
    pub kind: String,
}

/// The address pool every test swarm allocates network subnets from (in /24s): inside
/// 198.18.0.0/15, the range set aside for benchmarks, never docker's 10.0.0.0/8.
pub const TEST_ADDR_POOL: &str = "198.18.128.0/17";

/// Outbound bridges of test daemons: 198.19.0.0/16 (inside the benchmark range, apart from
/// the hosts' 198.18.0.0/17 and the swarm pool 198.18.128.0/17), one /24 per host.
const TEST_BRIDGE_PREFIX: &str = "198.19";

pub struct ShoalHost {
    // Field order is drop order: the daemon is stopped in Drop::drop, then containerd cleans
    // up its tasks and mounts, and only then is the temp dir (data dir, logs) removed.
    containerd: ContainerdHost,
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    extra_args: Vec<String>,
    /// This host's outbound bridge (`--bridge`, `--bip`): unique, because daemons of parallel
    /// tests may share the machine's network namespace.
    bridge: String,
    bip: String,
}

/// A bridge name and `--bip` no other host of this test process has (and, through the pid,
/// unlikely in another).
fn test_bridge() -> (String, String) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    let subnet = (pid.wrapping_mul(37).wrapping_add(n)) % 256;
    (
        format!("shb{}x{n}", pid % 100_000),
        format!("{TEST_BRIDGE_PREFIX}.{subnet}.1/24"),
    )
}

impl ShoalHost {
    /// A fresh containerd and a daemon that answers on its API socket (not in a swarm yet).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`ShoalHost::start`], with extra `shoal daemon` flags (kept for restarts).
    pub fn start_with(extra_args: &[&str]) -> Self {
        let mut host = Self::new_stopped(extra_args);
        host.start_daemon();
        host
    }

    /// The containerd fixture and the temp dir, with no daemon running: for tests that start
    /// the daemon themselves with bad flags or a damaged data dir.
    pub fn new_stopped(extra_args: &[&str]) -> Self {
        Self::with_containerd(
            ContainerdHost::start().expect("start a private containerd"),
            extra_args,
        )
    }

    /// A host whose containerd and daemon run inside the network namespace at `netns`
    /// (`/run/netns/NAME`), for multi-host tests.
    pub fn start_in_netns(netns: &Path, extra_args: &[&str]) -> Self {
        let containerd = ContainerdHost::start_in_netns(netns)
            .unwrap_or_else(|e| panic!("start containerd in {}: {e:#}", netns.display()));
        let mut host = Self::with_containerd(containerd, extra_args);
        host.start_daemon();
        host
    }

    fn with_containerd(containerd: ContainerdHost, extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shoal-host-")
            .tempdir()
            .expect("create the host's temp dir");
        let (bridge, bip) = test_bridge();
        ShoalHost {
            containerd,
            dir,
            daemon: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            bridge,
            bip,
        }
    }

    /// A host whose daemon is already in a one-node swarm and has the busybox image.
    pub fn start_swarm() -> Self {
        let host = Self::start();
        host.swarm_init();
        host.load_busybox();
        host
    }

    /// `shoal swarm init` listening on a free loopback port: hosts that share the machine's
    /// network namespace (tests run in parallel) cannot all have the default 0.0.0.0:2377.
    /// Network subnets come from [`TEST_ADDR_POOL`].
    pub fn swarm_init(&self) -> String {
        let listen = format!("127.0.0.1:{}", free_loopback_port());
        self.shoal_ok(&[
            "swarm",
            "init",
            "--listen-addr",
            &listen,
            "--default-addr-pool",
            TEST_ADDR_POOL,
        ])
    }

    pub fn containerd(&self) -> &ContainerdHost {
        &self.containerd
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.containerd.socket().to_path_buf()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn api_socket(&self) -> PathBuf {
        self.dir.path().join("shoal.sock")
    }

    /// `unix:///…/shoal.sock`, as given to `-H`.
    pub fn api_url(&self) -> String {
        format!("unix://{}", self.api_socket().display())
    }

    pub fn daemon_log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.daemon_log_path()).unwrap_or_default()
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    /// The daemon's command line with the standard flags plus `args` (for starting it by hand,
    /// e.g. with a wrong containerd socket). Runs inside the containerd host's netns if any.
    pub fn daemon_command(&self, args: &[&str]) -> Command {
        let bin = shoal_bin();
        let mut cmd = match self.containerd.netns() {
            // nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroup
            // hierarchy runc needs. nsenter execs the daemon, so the child pid is the daemon's.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("-H").arg(self.api_url()).arg("daemon");
        cmd.args(args);
        cmd.env_remove("SHOAL_HOST");
        // The log is a file: colour codes would only make it harder to read.
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd
    }

    /// `--data-dir`, `--containerd`, `--containerd-namespace`, `--bridge` and `--bip` as this
    /// host uses them.
    pub fn standard_daemon_args(&self) -> Vec<String> {
        vec![
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--containerd".into(),
            self.containerd_socket().display().to_string(),
            "--containerd-namespace".into(),
            NAMESPACE.into(),
            "--bridge".into(),
            self.bridge.clone(),
            "--bip".into(),
            self.bip.clone(),
        ]
    }

    /// The outbound bridge's name and address (`--bridge`, `--bip`).
    pub fn bridge(&self) -> (&str, &str) {
        (&self.bridge, &self.bip)
    }

    /// Removes what the daemon built in the network namespace it shares with the machine: the
    /// outbound bridge and its nftables table (a netns host's go with its namespace), and the
    /// namespace mounts under the data dir.
    fn remove_node_network(&self) {
        if let Err(e) = crate::containerd::unmount_under(&self.data_dir()) {
            eprintln!("unmounting the network namespaces: {e:#}");
        }
        if self.containerd.netns().is_some() {
            return;
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let table = format!(
            "shoal_{}",
            self.bridge
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &table])
            .stderr(Stdio::null())
            .status();
    }

    fn open_log(&self) -> (Stdio, Stdio) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log_path())
            .expect("open the daemon log");
        let log2 = log.try_clone().expect("clone the daemon log handle");
        (Stdio::from(log), Stdio::from(log2))
    }

    /// Starts the daemon with the standard flags and waits until its API answers.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "the daemon is already running");
        let mut args = self.standard_daemon_args();
        args.extend(self.extra_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, err) = self.open_log();
        let child = self
            .daemon_command(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn shoal daemon");
        self.daemon = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.daemon_exited() {
                self.daemon = None;
                panic!(
                    "shoal daemon exited during start-up ({status}); log:\n{}",
                    tail(&self.daemon_log(), 80)
                );
            }
            // A socket file can exist before the server accepts, and a stale one survives a
            // kill -9: only an answered call means the daemon is up.
            if self.api_socket().exists() && self.shoal(&["info"]).status.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "shoal daemon did not answer `shoal info` within {READY_TIMEOUT:?}; log:\n{}",
                    tail(&self.daemon_log(), 80)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the daemon with the standard flags replaced by `args` and expects it to exit on its
    /// own within `timeout`; returns its status and what it printed. Panics if it keeps running.
    pub fn run_daemon_expecting_exit(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> (ExitStatus, String) {
        assert!(self.daemon.is_none(), "stop the host's daemon first");
        let out = run_with_deadline(&mut self.daemon_command(args), timeout);
        match out {
            Some(out) => (
                out.status,
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            None => panic!(
                "shoal daemon {args:?} was expected to exit with an error but was still \
                 running after {timeout:?}"
            ),
        }
    }

    /// Like [`ShoalHost::start_daemon`] but with the standard flags replaced by `args` and no
    /// readiness check: the caller decides what "started" means.
    pub fn spawn_daemon_raw(&mut self, args: &[&str]) {
        assert!(self.daemon.is_none(), "the daemon is already running");
        let (out, err) = self.open_log();
        let child = self
            .daemon_command(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn shoal daemon");
        self.daemon = Some(child);
    }

    /// The daemon's exit status if it has exited (reaping it), None while it runs.
    pub fn daemon_exited(&mut self) -> Option<ExitStatus> {
        let child = self.daemon.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status),
            Ok(None) => None,
            Err(e) => panic!("waiting for the daemon: {e}"),
        }
    }

    /// SIGKILLs the daemon, as a crash would: no shutdown code runs. Containers keep running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after a grace period; returns the exit status if it exited.
    pub fn stop_daemon(&mut self) -> Option<ExitStatus> {
        let mut child = self.daemon.take()?;
        stop_child(&mut child, STOP_GRACE).ok().flatten()
    }

    /// Stops the daemon if it runs and starts it again with the same flags and data dir.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.start_daemon();
    }

    /// Runs `f` with a Control client on the API socket: for requests the CLI would never
    /// send, to see what the daemon itself checks.
    pub fn with_control<T>(
        &self,
        f: impl AsyncFnOnce(shoal_proto::control_client::ControlClient<tonic::transport::Channel>) -> T,
    ) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let channel = shoal_worker::containerd::connect_unix(&self.api_socket())
                .await
                .expect("connect to the API socket");
            f(shoal_proto::control_client::ControlClient::new(channel)).await
        })
    }

    /// Runs `shoal -H unix://… ARGS`.
    pub fn shoal(&self, args: &[&str]) -> Output {
        run_with_timeout(&mut self.shoal_command(args), CLI_TIMEOUT)
    }

    /// Runs `shoal -H unix://… ARGS`; None (after killing it) if it has not finished within
    /// `timeout`, for tests whose point is that a call answers at all.
    pub fn shoal_within(&self, args: &[&str], timeout: Duration) -> Option<Output> {
        run_with_deadline(&mut self.shoal_command(args), timeout)
    }

    /// `shoal -H unix://… ARGS` as a command not started yet, for tests that need it running
    /// beside them (`service logs -f`).
    pub fn shoal_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(shoal_bin());
        cmd.arg("-H").arg(self.api_url()).args(args);
        cmd.env_remove("SHOAL_HOST");
        cmd
    }

    /// Runs the CLI, asserts success and returns stdout. On failure the panic shows the
    /// command's output (and, as for every panic, Drop prints the daemon log's tail).
    pub fn shoal_ok(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            panic!(
                "`shoal {}` failed ({}).\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr),
            );
        }
        stdout
    }

    /// Runs the CLI, asserts it fails, and returns stderr followed by stdout (the error text).
    pub fn shoal_err(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            panic!(
                "`shoal {}` was expected to fail but succeeded.\nstdout:\n{stdout}\nstderr:\n{stderr}",
                args.join(" ")
            );
        }
        format!("{stderr}{stdout}")
    }

    /// Polls `cond` until it holds; on timeout panics naming `what`, with `shoal service ls`
    /// and containerd's tasks, which is what one needs to see why (Drop adds the daemon log).
    pub fn wait_for(&self, timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
        if !wait_until(timeout, cond) {
            let ls = self.shoal(&["service", "ls"]);
            panic!(
                "timed out after {timeout:?} waiting for {what}.\nservice ls:\n{}{}\n\
                 containerd tasks: {:?}",
                String::from_utf8_lossy(&ls.stdout),
                String::from_utf8_lossy(&ls.stderr),
                self.ctr_tasks(),
            );
        }
    }

    /// Builds the busybox test image (once per process) and loads it with `shoal image load`.
    pub fn load_busybox(&self) {
        let archive = busybox_archive();
        let path = archive.display().to_string();
        self.shoal_ok(&["image", "load", "-i", &path]);
    }

    /// `shoal service ls`, one map per row keyed by column header.
    pub fn service_ls(&self) -> Vec<BTreeMap<String, String>> {
        parse_table(&self.shoal_ok(&["service", "ls"]))
    }

    /// The REPLICAS cell ("2/3") of service `name` in `shoal service ls`, if it is listed.
    pub fn replicas(&self, name: &str) -> Option<String> {
        self.service_ls()
            .into_iter()
            .find(|row| row.get("NAME").map(String::as_str) == Some(name))
            .and_then(|row| row.get("REPLICAS").cloned())
    }

    /// `shoal service ps NAME`, one map per row keyed by column header.
    pub fn service_ps(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        parse_table(&self.shoal_ok(&["service", "ps", name]))
    }

    /// Containers of service `name` whose containerd task is RUNNING.
    pub fn running_containers_of(&self, name: &str) -> Vec<Container> {
        let running = self.running_container_ids();
        self.containers()
            .into_iter()
            .filter(|c| c.service_name() == Some(name) && running.contains(&c.id))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // containerd, seen directly (not through Shoal)
    // -----------------------------------------------------------------------------------------

    /// `ctr --address SOCK -n shoal ARGS`, not run yet.
    pub(crate) fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.containerd_socket())
            .arg("-n")
            .arg(NAMESPACE)
            .args(args);
        cmd
    }

    /// Runs `ctr --address SOCK -n shoal ARGS` and returns stdout, panicking on failure.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = run_with_timeout(&mut self.ctr_command(args), CLI_TIMEOUT);
        if !out.status.success() {
            panic!(
                "`ctr {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every container in the `shoal` namespace, with its labels.
    pub fn containers(&self) -> Vec<Container> {
        let ids = self.ctr(&["containers", "ls", "-q"]);
        let mut containers = Vec::new();
        for id in ids.split_whitespace() {
            // A container can be deleted between the listing and this call: skip it then.
            let out = run_with_timeout(
                &mut self.ctr_command(&["containers", "info", id]),
                CLI_TIMEOUT,
            );
            if !out.status.success() {
                continue;
            }
            let info: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("`ctr containers info {id}` printed bad JSON: {e}"));
            let labels = info["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            containers.push(Container {
                id: id.to_string(),
                image: info["Image"].as_str().unwrap_or_default().to_string(),
                labels,
            });
        }
        containers
    }

    /// The rows `ctr ARGS` prints under its header line, split on whitespace.
    fn ctr_rows(&self, args: &[&str]) -> Vec<Vec<String>> {
        self.ctr(args)
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().map(str::to_string).collect())
            .collect()
    }

    /// Every containerd task in the `shoal` namespace.
    pub fn ctr_tasks(&self) -> Vec<CtrTask> {
        self.ctr_rows(&["tasks", "ls"])
            .into_iter()
            .filter_map(|cols| match cols.as_slice() {
                // TASK PID STATUS
                [id, pid, status, ..] => Some(CtrTask {
                    id: id.clone(),
                    pid: pid.parse().ok()?,
                    status: status.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// IDs of the containers whose task is RUNNING, sorted.
    pub fn running_container_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .ctr_tasks()
            .into_iter()
            .filter(|t| t.status == "RUNNING")
            .map(|t| t.id)
            .collect();
        ids.sort();
        ids
    }

    /// Every snapshot of the default snapshotter in the `shoal` namespace.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.ctr_rows(&["snapshots", "ls"])
            .into_iter()
            .filter_map(|cols| match cols.as_slice() {
                // KEY PARENT KIND
                [key, parent, kind] => Some(Snapshot {
                    key: key.clone(),
                    parent: parent.clone(),
                    kind: kind.clone(),
                }),
                // The base layer has no parent, so its PARENT column is empty.
                [key, kind] => Some(Snapshot {
                    key: key.clone(),
                    parent: String::new(),
                    kind: kind.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}

impl Drop for ShoalHost {
    fn drop(&mut self) {
        self.stop_daemon();
        self.remove_node_network();
        if thread::panicking() {
            eprintln!(
                "daemon log of the failed test's host (tail):\n{}",
                tail(&self.daemon_log(), 60)
            );
            // Leave the temp dir behind when asked to, so a failed test's logs can be read.
            if std::env::var_os("SHOAL_KEEP_TEST_DIRS").is_some() {
                eprintln!(
                    "keeping {} (SHOAL_KEEP_TEST_DIRS)",
                    self.dir.path().display()
                );
                self.dir.disable_cleanup(true);
            }
        }
    }
}

/// A loopback TCP port nothing listens on right now, for a daemon or a server a test starts.
///
/// Taken below the kernel's ephemeral range: a port from that range (what binding port 0
/// gives) can become the source port of any outgoing loopback connection on the machine before
/// the daemon binds it, and CI saw `swarm init --listen-addr` refused with "Address already in
/// use" that way. Below the range (and below the routing mesh's dynamic published ports) only
/// listeners take ports, and the tests of one process (parallel threads) take turns through a
/// counter, from an offset of this process's own so that one test binary after another does
/// not retry the same ports.
pub fn free_loopback_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // Above the well-known and the usual fixed service ports, and below the routing mesh's
    // dynamic published ports (30000-32767, as Docker's).
    let top = low.min(30_000);
    let base = 10_000.min(top.saturating_sub(1024));
    let span = top.saturating_sub(base).max(1);
    let offset = std::process::id() % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = base + (offset + n) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {base} and {top}");
}

/// Path of the busybox OCI archive, built on first use in this process next to the test
/// binaries (so it never accumulates in /tmp) and replaced atomically (so concurrent test
/// processes never see a half-written file).
pub fn busybox_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let dir = shoal_bin()
                .parent()
                .expect("shoal binary has a parent directory")
                .join("shoal-test-images");
            fs::create_dir_all(&dir).expect("create the test image directory");
            let path = dir.join("busybox.tar");
            let tmp = dir.join(format!("busybox.tar.{}", std::process::id()));
            crate::image::build_busybox_oci_archive(&tmp, crate::image::BUSYBOX_IMAGE)
                .expect("build the busybox test image");
            fs::rename(&tmp, &path).expect("move the busybox test image into place");
            path
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
