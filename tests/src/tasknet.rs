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
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let exec_id = format!(
            "probe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut full = vec!["task", "exec", "--exec-id", &exec_id, task_id];
        full.extend_from_slice(args);
        run_with_deadline(&mut self.ctr_command(&full), EXEC_TIMEOUT)
    }

    /// `sh -c SCRIPT` inside the task; stdout when it exits 0, else `Err` with its output.
    pub fn sh_in_task(&self, task_id: &str, script: &str) -> Result<String, String> {
        match self.exec_in_task(task_id, &["sh", "-c", script]) {
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

    /// Where the daemon mounts task and overlay namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.data_dir().join("netns")
    }

    /// Names of the namespaces mounted under `netns/KIND` ("tasks" or "networks").
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
