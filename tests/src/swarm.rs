//! A private Docker Swarm for benchmarks: [`DockerSwarm`], Debian's `dockerd` (package
//! `docker.io`) started against a containerd the caller already runs (the test fixture's), so
//! Shoal and Swarm start their containers through the same containerd on the same machine.
//!
//! Everything dockerd keeps lives in a fresh directory under `/tmp` (data root, exec root, pid
//! file, API socket, config file, trust key); its containers go into containerd's `moby`
//! namespace. Swarm listens on 127.0.0.1:2477 (not 2377, which a Shoal swarm may use) and takes
//! its overlay subnets from 198.18.192.0/18 and its `docker_gwbridge` from 198.19.240.0/20, so
//! no address leaves 198.18.0.0/15. No iptables rules, no default bridge, no userland proxy.
//!
//! Dropping it (or [`DockerSwarm::shutdown`]) leaves the swarm (which removes its services),
//! removes `docker_gwbridge`, stops dockerd, unmounts what is left under its directory and
//! removes the directory, plus `/run/docker` if dockerd made it (that path is hard-coded).

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::containerd::unmount_under;
use crate::daemon::{run_with_deadline, wait_until};
use crate::process::stop_child;

/// containerd namespace dockerd puts its containers in (its default).
pub const DOCKER_NAMESPACE: &str = "moby";
/// The image's name once loaded into Docker.
pub const DOCKER_IMAGE: &str = "busybox:latest";
const GWBRIDGE: &str = "docker_gwbridge";
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The Debian package's client, which matches its daemon's API version (another `docker` may
/// be first on PATH).
const DOCKER_CLI: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";

/// A private dockerd in swarm mode; see the module documentation.
pub struct DockerSwarm {
    dir: PathBuf,
    child: Option<Child>,
    made_run_docker: bool,
}

impl DockerSwarm {
    /// Starts dockerd against the containerd at `containerd_socket`, waits until it answers,
    /// and makes it a single-node swarm manager.
    pub fn start(containerd_socket: &Path) -> Result<Self> {
        Self::check_installed()?;
        if Path::new("/sys/class/net").join(GWBRIDGE).exists() {
            bail!("{GWBRIDGE} exists already: another dockerd runs in swarm mode here");
        }
        let dir = tempfile::Builder::new()
            .prefix("shoal-dockerd-")
            .tempdir_in("/tmp")
            .context("creating a directory for dockerd under /tmp")?
            .keep();
        let mut swarm = DockerSwarm {
            dir,
            child: None,
            made_run_docker: !Path::new("/run/docker").exists(),
        };
        // From here on a failure drops `swarm`, which cleans up what was made.
        swarm.spawn(containerd_socket)?;
        swarm.docker_ok(&[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            "127.0.0.1:2477",
            "--data-path-port",
            "47899",
            "--default-addr-pool",
            "198.18.192.0/18",
        ])?;
        Ok(swarm)
    }

    /// Fails unless Debian's dockerd and its client are installed (`scripts/install-deps.sh`
    /// installs them without starting the host's dockerd service).
    pub fn check_installed() -> Result<()> {
        if !Path::new(DOCKERD).exists() || !Path::new(DOCKER_CLI).exists() {
            bail!("{DOCKERD} or {DOCKER_CLI} missing: apt-get install -y docker.io");
        }
        Ok(())
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The last `lines` lines of dockerd's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::daemon::tail(
            &fs::read_to_string(self.log_path()).unwrap_or_default(),
            lines,
        )
    }

    fn spawn(&mut self, containerd_socket: &Path) -> Result<()> {
        let d = &self.dir;
        // A config file of its own, so /etc/docker/daemon.json (if any) does not apply; the
        // trust key's path (default /etc/docker/key.json) is settable only there.
        let config = serde_json::json!({ "deprecated-key-path": d.join("key.json") });
        fs::write(d.join("daemon.json"), config.to_string()).context("writing dockerd's config")?;
        fs::create_dir_all(d.join("cli")).context("creating the CLI's config directory")?;
        let log = fs::File::create(self.log_path()).context("creating dockerd's log")?;
        let mut cmd = Command::new(DOCKERD);
        cmd.arg("--containerd")
            .arg(containerd_socket)
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--userland-proxy=false",
                // Where docker_gwbridge (made by `swarm init`) takes its subnet from.
                "--default-address-pool",
                "base=198.19.240.0/20,size=24",
            ])
            // Use the loaded image rather than try a registry first for every task, as Shoal
            // does (there is no registry to reach here).
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup dockerd's log")?)
            .stderr(log);
        self.child = Some(cmd.spawn().context("starting dockerd")?);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if UnixStream::connect(self.socket()).is_ok() && self.docker_ok(&["info"]).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("waiting for dockerd")? {
                    self.child = None;
                    bail!(
                        "dockerd exited with {status}; its log:\n{}",
                        self.log_tail(40)
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "dockerd did not answer within {START_TIMEOUT:?}; its log:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// dockerd's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `docker ARGS` against this dockerd, not run yet.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            // The CLI's own config (~/.docker) stays untouched.
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .args(args);
        cmd
    }

    /// Runs `docker ARGS` and returns its stdout, or an error with its stderr.
    pub fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let out = run_with_deadline(&mut self.docker(args), CLI_TIMEOUT)
            .with_context(|| format!("`docker {}` timed out", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`docker {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Loads the busybox test image (built in Docker's archive format) as [`DOCKER_IMAGE`].
    pub fn load_busybox(&self) -> Result<()> {
        let archive = self.dir.join("busybox.tar");
        crate::image::build_busybox_docker_archive(&archive, DOCKER_IMAGE)?;
        let path = archive.display().to_string();
        self.docker_ok(&["load", "-i", &path])?;
        Ok(())
    }

    /// The REPLICAS cell ("2/3") of service `name` in `docker service ls`, if it is listed.
    pub fn replicas(&self, name: &str) -> Result<Option<String>> {
        let filter = format!("name={name}");
        let out = self.docker_ok(&[
            "service",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}} {{.Replicas}}",
        ])?;
        Ok(out.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(name)).then(|| words.next().unwrap_or_default().to_string())
        }))
    }

    /// Service `name`'s running and desired task counts, read from the Engine API
    /// (`GET /services?status=true`, API 1.41) over dockerd's socket; `None` when it is not
    /// listed. Cheaper than `docker service ls`, so it can be polled often without a process
    /// per poll competing with dockerd for the cores.
    pub fn api_replicas(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let services = self.api_get("/v1.41/services?status=true")?;
        let services = services
            .as_array()
            .context("dockerd's service list is not a JSON array")?;
        Ok(services.iter().find_map(|s| {
            (s["Spec"]["Name"].as_str() == Some(name)).then(|| {
                let status = &s["ServiceStatus"];
                (
                    status["RunningTasks"].as_u64().unwrap_or(0),
                    status["DesiredTasks"].as_u64().unwrap_or(0),
                )
            })
        }))
    }

    /// One Engine API GET over the unix socket, as HTTP/1.0 so that the body is neither
    /// chunked nor kept alive: it ends where the connection does.
    fn api_get(&self, path: &str) -> Result<serde_json::Value> {
        use std::io::{Read, Write};
        let socket = self.socket();
        let mut stream = UnixStream::connect(&socket)
            .with_context(|| format!("connect to dockerd at {}", socket.display()))?;
        stream
            .set_read_timeout(Some(CLI_TIMEOUT))
            .context("set a read timeout on dockerd's socket")?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")
            .with_context(|| format!("send GET {path} to dockerd"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .with_context(|| format!("read dockerd's answer to GET {path}"))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("dockerd's answer to GET {path} has no body: {text}"))?;
        let status_line = head.lines().next().unwrap_or_default();
        if status_line.split_whitespace().nth(1) != Some("200") {
            bail!("dockerd answered GET {path} with {status_line}: {body}");
        }
        serde_json::from_str(body).with_context(|| format!("dockerd's answer to GET {path}"))
    }

    /// Tears everything down (see the module documentation). Idempotent; also run on drop.
    pub fn shutdown(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(mut child) = self.child.take() {
            // Leaving removes the services, hence their containers; the bridge stays otherwise.
            if let Err(e) = self.docker_ok(&["swarm", "leave", "--force"]) {
                problems.push(format!("{e:#}"));
            }
            if let Ok(ids) = self.docker_ok(&["ps", "-aq"]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids);
                    if let Err(e) = self.docker_ok(&args) {
                        problems.push(format!("{e:#}"));
                    }
                }
            }
            let _ = self.docker_ok(&["network", "rm", GWBRIDGE]);
            if let Err(e) = stop_child(&mut child, Duration::from_secs(15)) {
                problems.push(format!("stopping dockerd: {e}"));
            }
        }
        if Path::new("/sys/class/net").join(GWBRIDGE).exists() {
            let ok = Command::new("ip")
                .args(["link", "del", GWBRIDGE])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                problems.push(format!("could not delete {GWBRIDGE}"));
            }
        }
        if self.dir.exists() {
            if let Err(e) = unmount_under(&self.dir) {
                problems.push(format!("{e:#}"));
            }
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                problems.push(format!("removing {}: {e}", self.dir.display()));
            }
        }
        if self.made_run_docker {
            // Only empty directories go: another dockerd may have started meanwhile.
            let _ = fs::remove_dir("/run/docker/plugins");
            let _ = fs::remove_dir("/run/docker");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("tearing down dockerd: {}", problems.join("; "))
        }
    }
}

impl Drop for DockerSwarm {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("{e:#}");
        }
    }
}

/// `ctr --address SOCKET -n NAMESPACE ARGS` output lines below the header, as words.
fn ctr_rows(socket: &Path, namespace: &str, args: &[&str]) -> Result<Vec<Vec<String>>> {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(socket)
        .arg("-n")
        .arg(namespace)
        .args(args);
    let out = run_with_deadline(&mut cmd, CLI_TIMEOUT).context("`ctr` timed out")?;
    if !out.status.success() {
        bail!(
            "`ctr {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect())
}

/// How many containers containerd holds in `namespace`.
pub fn container_count(socket: &Path, namespace: &str) -> Result<usize> {
    Ok(ctr_rows(socket, namespace, &["containers", "ls"])?.len())
}

/// How many tasks containerd runs (status RUNNING) in `namespace`.
pub fn running_task_count(socket: &Path, namespace: &str) -> Result<usize> {
    Ok(ctr_rows(socket, namespace, &["tasks", "ls"])?
        .iter()
        .filter(|cols| cols.get(2).map(String::as_str) == Some("RUNNING"))
        .count())
}

/// Waits (polling every 100 ms, up to `timeout`) until `namespace` holds no container.
pub fn wait_namespace_empty(socket: &Path, namespace: &str, timeout: Duration) -> Result<()> {
    if wait_until(timeout, || {
        container_count(socket, namespace).is_ok_and(|n| n == 0)
    }) {
        Ok(())
    } else {
        bail!("containers left in namespace {namespace} after {timeout:?}")
    }
}
