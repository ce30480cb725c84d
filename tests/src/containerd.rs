//! A private containerd for tests: [`ContainerdHost`].
//!
//! Each host runs its own `containerd` with root, state, sockets and config inside a fresh
//! directory under `/tmp`, optionally inside a network namespace, so tests never touch the
//! machine's own containerd (`/run/containerd/containerd.sock`, `/var/lib/containerd`) nor each
//! other. Dropping the host (or calling [`ContainerdHost::shutdown`]) tears everything down in
//! the order that leaves nothing behind:
//!
//! 1. kill and delete every task and container in every containerd namespace, because
//!    containerd exits without stopping them and their shims would otherwise live on;
//! 2. stop containerd (SIGTERM, then SIGKILL);
//! 3. kill shims still serving this containerd's socket, and their children;
//! 4. unmount whatever is still mounted under the host's directory (overlay rootfs, shm…);
//! 5. remove the directory.
//!
//! Runc keeps its state in `/run/containerd/runc/NAMESPACE/ID` for every containerd on the
//! machine, so container IDs must be unique across all hosts running at the same time; a test
//! should put something unique (e.g. the host's directory name) into its container IDs.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{cmdline_of, kill_tree, pids, stop_child};

/// How long containerd gets to open its socket before the start counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd gets to exit on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A private containerd process; see the module documentation.
pub struct ContainerdHost {
    dir: PathBuf,
    socket: PathBuf,
    netns: Option<PathBuf>,
    child: Option<Child>,
}

impl ContainerdHost {
    /// Starts a containerd in the current network namespace and waits until it answers.
    pub fn start() -> Result<Self> {
        Self::launch(None)
    }

    /// Starts a containerd inside the network namespace at `netns` (e.g. `/run/netns/NAME`).
    ///
    /// It is started through `nsenter --net=…` rather than `ip netns exec`, which also gives the
    /// process a private mount namespace with a fresh /sys where runc finds no cgroup mounts.
    pub fn start_in_netns(netns: &Path) -> Result<Self> {
        Self::launch(Some(netns.to_path_buf()))
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's `--root` directory (content store, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// containerd's `--state` directory.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The private directory everything of this host lives in; removed on shutdown.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's combined stdout/stderr, useful when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The network namespace containerd runs in, if not the caller's.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// The last `lines` lines of containerd's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn launch(netns: Option<PathBuf>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-ctrd-")
            .tempdir_in("/tmp")
            .context("creating a temporary directory for containerd under /tmp")?
            .keep();
        let mut host = ContainerdHost {
            socket: dir.join("containerd.sock"),
            dir,
            netns,
            child: None,
        };
        // From here on a failure drops `host`, which removes the directory again.
        host.spawn()?;
        Ok(host)
    }

    fn spawn(&mut self) -> Result<()> {
        for sub in ["root", "state"] {
            fs::create_dir_all(self.dir.join(sub))?;
        }
        let config = self.dir.join("config.toml");
        fs::write(&config, self.config_toml())
            .with_context(|| format!("writing {}", config.display()))?;
        let log = fs::File::create(self.log_path())?;

        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("containerd");
                c
            }
            None => Command::new("containerd"),
        };
        cmd.arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--address")
            .arg(&self.socket)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .context("starting containerd (is the containerd package installed?)")?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "containerd exited with {status} before opening {}; its log:\n{}",
                        self.socket.display(),
                        self.log_tail(40)
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not open {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.socket.display(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn config_toml(&self) -> String {
        let d = self.dir.display();
        // The CRI plugin would start a second, Kubernetes-facing server and want CNI; the
        // debug and metrics endpoints default to shared paths, so they are set or disabled.
        format!(
            r#"version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"
  level = "info"

[metrics]
  address = ""
"#
        )
    }

    /// Tears the host down (see the module documentation). Idempotent; also run on drop.
    pub fn shutdown(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        let mut containers = Vec::new();
        if self.child.is_some() {
            match self.remove_all_containers() {
                Ok(c) => containers = c,
                Err(e) => problems.push(format!("removing containers: {e:#}")),
            }
        }
        if let Some(mut child) = self.child.take() {
            if let Err(e) = stop_child(&mut child, STOP_TIMEOUT) {
                problems.push(format!("stopping containerd: {e:#}"));
            }
        }
        kill_leftover_shims(&self.socket);
        // Runc keeps its state outside this host's directory, in a path every containerd
        // shares; what a container left there (its task could not be deleted) is removed so
        // it does not pile up.
        for (ns, id) in &containers {
            let state = Path::new("/run/containerd/runc").join(ns).join(id);
            if state.exists() {
                let _ = fs::remove_dir_all(&state);
            }
        }
        if let Err(e) = unmount_under(&self.dir) {
            problems.push(format!("unmounting: {e:#}"));
        }
        if self.dir.exists() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                problems.push(format!("removing {}: {e}", self.dir.display()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "containerd test host {} left things behind: {}",
                self.dir.display(),
                problems.join("; ")
            )
        }
    }

    /// Kills and deletes every task, then deletes every container, in every namespace.
    /// Returns the (namespace, container id) pairs that existed.
    fn remove_all_containers(&self) -> Result<Vec<(String, String)>> {
        let mut removed = Vec::new();
        for ns in self.ctr_lines(None, &["namespaces", "ls", "-q"])? {
            for task in self.ctr_lines(Some(&ns), &["tasks", "ls", "-q"])? {
                let _ = self.ctr(Some(&ns), &["tasks", "kill", "-a", "-s", "SIGKILL", &task]);
                // `delete -f` waits for the killed process and removes the task (and its shim).
                let _ = self.ctr(Some(&ns), &["tasks", "delete", "-f", &task]);
            }
            for container in self.ctr_lines(Some(&ns), &["containers", "ls", "-q"])? {
                let _ = self.ctr(Some(&ns), &["containers", "delete", &container]);
                removed.push((ns.clone(), container));
            }
        }
        Ok(removed)
    }

    fn ctr(&self, ns: Option<&str>, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).args([
            "--connect-timeout",
            "5s",
            "--timeout",
            "30s",
        ]);
        if let Some(ns) = ns {
            cmd.args(["-n", ns]);
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ctr (is the containerd package installed?)")?;
        if !out.status.success() {
            bail!(
                "ctr {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ctr_lines(&self, ns: Option<&str>, args: &[&str]) -> Result<Vec<String>> {
        Ok(self
            .ctr(ns, args)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }
}

impl Drop for ContainerdHost {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("{e:#}");
        }
    }
}

/// Kills every `containerd-shim*` process started for the containerd at `socket`, together
/// with the processes below it (containers whose tasks could not be deleted).
fn kill_leftover_shims(socket: &Path) {
    let socket = socket.to_string_lossy();
    let shims: Vec<i32> = pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = cmdline_of(*pid);
            cmdline
                .first()
                .is_some_and(|arg0| arg0.contains("containerd-shim"))
                && cmdline
                    .windows(2)
                    .any(|w| w[0].trim_start_matches('-') == "address" && w[1] == socket)
        })
        .collect();
    kill_tree(&shims);
}

/// Lazily unmounts every mount point at or below `dir`, deepest first. A mount stacked under
/// another on the same path (a bind of a directory onto itself copies what is mounted in it)
/// shows only once the one above is gone, so this goes over the table again while anything is
/// left under `dir`, a bounded number of times.
pub fn unmount_under(dir: &Path) -> Result<()> {
    const PASSES: usize = 4;
    for _ in 0..PASSES {
        let points = mount_points_under(dir)?;
        if points.is_empty() {
            return Ok(());
        }
        let mut failed = Vec::new();
        for point in points {
            if let Err(e) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
                // EINVAL: already gone through an earlier lazy unmount of a parent.
                if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
                    failed.push(format!("{}: {e}", point.display()));
                }
            }
        }
        if !failed.is_empty() {
            bail!("could not unmount {}", failed.join(", "));
        }
    }
    let left = mount_points_under(dir)?;
    if left.is_empty() {
        Ok(())
    } else {
        bail!("still mounted after {PASSES} passes: {left:?}")
    }
}

/// The mount points at or below `dir`, deepest first.
fn mount_points_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    Ok(points)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(d) = octal {
            let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shims_of(socket: &Path) -> Vec<i32> {
        let socket = socket.to_string_lossy();
        pids()
            .into_iter()
            .filter(|pid| {
                let cmdline = cmdline_of(*pid);
                cmdline.iter().any(|a| a == socket.as_ref())
                    && cmdline
                        .first()
                        .is_some_and(|a| a.contains("containerd-shim"))
            })
            .collect()
    }

    /// A running container must not survive the host: its task, shim, rootfs mount and
    /// directory all go.
    #[test]
    fn shutdown_removes_running_containers() {
        let mut host = ContainerdHost::start().unwrap();
        let dir = host.dir().to_path_buf();
        let archive = dir.join("busybox.tar");
        crate::image::build_busybox_oci_archive(&archive, crate::image::BUSYBOX_IMAGE).unwrap();
        host.ctr(
            Some("fixture"),
            &["images", "import", &archive.to_string_lossy()],
        )
        .unwrap();
        let id = format!("fixture-{}", dir.file_name().unwrap().to_string_lossy());
        host.ctr(
            Some("fixture"),
            &[
                "run",
                "-d",
                crate::image::BUSYBOX_IMAGE,
                &id,
                "sleep",
                "600",
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.log_tail(30)));
        assert_eq!(shims_of(host.socket()).len(), 1);
        let socket = host.socket().to_path_buf();

        host.shutdown().unwrap();
        assert!(shims_of(&socket).is_empty());
        assert!(!dir.exists());
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mountinfo.contains(&*dir.to_string_lossy()));
        assert!(!Path::new("/run/containerd/runc/fixture").join(&id).exists());
        // A second shutdown (as Drop does) is harmless.
        host.shutdown().unwrap();
    }

    #[test]
    fn starts_inside_a_network_namespace() {
        let name = format!("shoal-fixture-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
        let netns = Path::new("/run/netns").join(&name);
        let result = std::panic::catch_unwind(|| {
            let host = ContainerdHost::start_in_netns(&netns).unwrap();
            assert_eq!(host.netns(), Some(netns.as_path()));
            let pid = host.child.as_ref().unwrap().id();
            let theirs = fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
            let ours = fs::read_link("/proc/self/ns/net").unwrap();
            assert_ne!(theirs, ours, "containerd runs in the test's own netns");
            assert!(host.ctr(None, &["version"]).is_ok());
        });
        let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    /// Two mounts stacked on one path, as a directory bound onto itself over a mount in it
    /// leaves them: both go.
    #[test]
    fn stacked_mounts_are_all_unmounted() {
        let tmp = tempfile::tempdir().unwrap();
        let point = tmp.path().join("x");
        fs::create_dir(&point).unwrap();
        for _ in 0..2 {
            nix::mount::mount(
                Some("tmpfs"),
                &point,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
        }
        assert_eq!(mount_points_under(tmp.path()).unwrap(), vec![point.clone()]);
        unmount_under(tmp.path()).unwrap();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(&*point.to_string_lossy()),
            "{mountinfo}"
        );
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/tmp/x\134y"), r"/tmp/x\y");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
