//! Looking at task networking from outside: running commands inside a task's container and in
//! the host's network namespace, and reading what the kernel holds there (links, namespaces,
//! nftables), so tests can check what was built and that nothing is left behind.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::daemon::{run_with_deadline, ShoalHost};

/// How long one command inside a task may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

impl ShoalHost {
    /// Runs `args` inside task `task_id`'s container (`ctr task exec`); `None` when it did not
    /// finish in time.
    pub fn exec_in_task(&self, task_id: &str, args: &[&str]) -> Option<Output> {
        self.exec_in_task_within(task_id, args, EXEC_TIMEOUT)
    }

    /// As [`Self::exec_in_task`], for a command that may take up to `timeout`.
    pub fn exec_in_task_within(
        &self,
        task_id: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Option<Output> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let exec_id = format!(
            "probe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut full = vec!["task", "exec", "--exec-id", &exec_id, task_id];
        full.extend_from_slice(args);
        run_with_deadline(&mut self.ctr_command(&full), timeout)
    }

    /// `sh -c SCRIPT` inside the task; stdout when it exits 0, else `Err` with its output.
    pub fn sh_in_task(&self, task_id: &str, script: &str) -> Result<String, String> {
        self.sh_in_task_within(task_id, script, EXEC_TIMEOUT)
    }

    /// As [`Self::sh_in_task`], for a script that may take up to `timeout`.
    pub fn sh_in_task_within(
        &self,
        task_id: &str,
        script: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        match self.exec_in_task_within(task_id, &["sh", "-c", script], timeout) {
            Some(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
            Some(out) => Err(format!(
                "`{script}` in task {task_id} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            None => Err(format!("`{script}` in task {task_id} did not finish")),
        }
    }

    /// A command that runs in the host's network namespace (the machine's for a host started
    /// without one).
    pub fn host_command(&self, program: &str) -> Command {
        match self.containerd().netns() {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// stdout of `program args` in the host's network namespace ("" when it fails).
    pub fn host_output(&self, program: &str, args: &[&str]) -> String {
        let mut cmd = self.host_command(program);
        cmd.args(args);
        run_with_deadline(&mut cmd, EXEC_TIMEOUT)
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Where the daemon mounts overlay and balancer namespaces (task namespaces it holds by
    /// descriptor, mounted nowhere).
    pub fn netns_dir(&self) -> PathBuf {
        self.data_dir().join("netns")
    }

    /// The network namespace task `task_id`'s running container is in, for `nsenter --net=`:
    /// the daemon holds task namespaces by descriptor, mounted nowhere. Panics when the task
    /// has no running container.
    pub fn task_netns(&self, task_id: &str) -> PathBuf {
        let tasks = self.ctr_tasks();
        let pid = tasks
            .iter()
            .find(|t| t.id == task_id && t.status == "RUNNING")
            .map(|t| t.pid)
            .unwrap_or_else(|| panic!("task {task_id} has no running container: {tasks:?}"));
        PathBuf::from(format!("/proc/{pid}/ns/net"))
    }

    /// The identity of task `task_id`'s network namespace (`net:[INODE]`), as
    /// [`Self::held_namespaces`] lists it.
    pub fn task_netns_id(&self, task_id: &str) -> String {
        let ns = self.task_netns(task_id);
        std::fs::read_link(&ns)
            .unwrap_or_else(|e| panic!("reading {}: {e}", ns.display()))
            .display()
            .to_string()
    }

    /// The network namespaces the daemon holds open (`net:[INODE]`, sorted, once each): one
    /// per task it has attached. Empty while no daemon runs.
    pub fn held_namespaces(&self) -> Vec<String> {
        let Some(pid) = self.daemon_pid() else {
            return Vec::new();
        };
        let mut held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|target| target.display().to_string())
                    .filter(|target| target.starts_with("net:["))
                    .collect()
            })
            .unwrap_or_default();
        held.sort();
        held.dedup();
        held
    }

    /// Names of the namespaces mounted under `netns/KIND` ("networks" or "lb").
    pub fn namespaces(&self, kind: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.netns_dir().join(kind))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The interface names in the host's namespace.
    pub fn host_links(&self) -> Vec<String> {
        let out = self.host_output("ip", &["-o", "link", "show"]);
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect();
        names.sort();
        names
    }

    /// The host's nftables tables with their rules, as `nft list ruleset` prints them.
    pub fn nft_ruleset(&self) -> String {
        self.host_output("nft", &["list", "ruleset"])
    }
}

/// The task's address on its first network (`eth0`), without prefix.
pub fn eth0_addr(host: &ShoalHost, task: &str) -> String {
    let out = host
        .sh_in_task(task, "ip -o -4 addr show eth0")
        .unwrap_or_else(|e| panic!("{e}"));
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on eth0 of {task}: {out}"))
        .to_string()
}

/// `nslookup NAME` inside the task: the addresses answered (the server's own line excluded).
pub fn lookup(host: &ShoalHost, task: &str, name: &str) -> Vec<String> {
    let Ok(out) = host.sh_in_task(task, &format!("nslookup {name}")) else {
        return Vec::new();
    };
    let mut addrs: Vec<String> = out
        .split("Name:")
        .skip(1)
        .flat_map(|answer| {
            answer
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    addrs.sort();
    addrs
}

/// What a node holds for task networking, to compare before and after.
#[derive(Debug, PartialEq)]
pub struct NodeNetworkState {
    pub links: Vec<String>,
    pub ruleset: String,
    /// The task namespaces the daemon holds.
    pub task_namespaces: Vec<String>,
    pub network_namespaces: Vec<String>,
    pub balancer_namespaces: Vec<String>,
    pub routes: String,
    pub rules: String,
}

pub fn node_state(host: &ShoalHost) -> NodeNetworkState {
    NodeNetworkState {
        links: host.host_links(),
        ruleset: host.nft_ruleset(),
        task_namespaces: host.held_namespaces(),
        network_namespaces: host.namespaces("networks"),
        balancer_namespaces: host.namespaces("lb"),
        // A bridge whose last port went is "linkdown": its state, not something left behind.
        routes: host
            .host_output("ip", &["-4", "route", "show", "table", "all"])
            .replace(" linkdown", ""),
        rules: host.host_output("ip", &["-4", "rule"]),
    }
}

/// The service's VIPs (without prefix), as `service inspect` shows them.
pub fn service_vips(host: &ShoalHost, service: &str) -> Vec<String> {
    let out = host.shoal_ok(&["service", "inspect", service]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .map(|vips| {
            vips.iter()
                .filter_map(|vip| vip["Addr"].as_str())
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Tasks of `service` running and wanted running (serving), as `service ps` shows them.
pub fn serving(m: &ShoalHost, service: &str) -> usize {
    m.service_ps(service)
        .iter()
        .filter(|r| {
            r.get("DESIRED STATE").map(String::as_str) == Some("Running")
                && r.get("CURRENT STATE")
                    .is_some_and(|s| s.starts_with("Running"))
        })
        .count()
}

/// Waits (up to a minute each) until every host's networking state is `before` again: what a
/// test made is gone, nothing left behind.
pub fn wait_back_to<H: std::ops::Deref<Target = ShoalHost>>(
    hosts: &[&H],
    before: &[NodeNetworkState],
    what: &str,
) {
    for (host, before) in hosts.iter().zip(before) {
        assert!(
            crate::daemon::wait_until(Duration::from_secs(60), || node_state(host) == *before),
            "a node kept {what} state: {:#?}\nexpected {before:#?}",
            node_state(host)
        );
    }
}
