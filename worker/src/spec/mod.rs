//! The OCI runtime spec of a task's container, built the way Docker builds one by default.
//!
//! Everything here is pure (strings in, spec out) except the small helpers that read a file out
//! of an unmounted snapshot ([`read_rootfs_file`]) and write the per-task `/etc` files
//! ([`write_etc_files`]), so the rules — which args win, how env merges, how a user name becomes
//! a uid — are unit-tested without containerd.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use shoal_proto::{ContainerSpec, Task};

use crate::network::{host_resolv_conf, TaskNetwork};

use crate::image::ResolvedImage;

pub mod apparmor;
pub mod capabilities;
pub mod host;
pub mod options;
pub mod seccomp;

pub use capabilities::default_capabilities;
pub use host::Host;

/// PATH given to a process whose image and task set none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// RLIMIT_NOFILE soft and hard limit: what a Docker container gets from a dockerd started with
/// systemd's `LimitNOFILE=infinity` (the kernel's default `fs.nr_open`).
pub const NOFILE_LIMIT: u64 = 1_048_576;

/// The container's RLIMIT_NOFILE: Docker's [`NOFILE_LIMIT`], lowered to this process's own hard
/// limit, since raising a hard limit needs CAP_SYS_RESOURCE that a daemon in a restricted
/// environment may lack (runc then fails the whole start).
pub fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_max.min(NOFILE_LIMIT)
    } else {
        NOFILE_LIMIT
    }
}

/// Nameservers used when the host's resolv.conf has none reachable from a private network
/// namespace (Docker's fallback).
const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// Files bind-mounted into every container, written under the task's directory.
pub const ETC_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "task has no command to run: the image {image} defines neither ENTRYPOINT nor CMD; give \
         one when creating the service (`shoal service create IMAGE COMMAND…`)"
    )]
    NoCommand { image: String },
    #[error(
        "unable to find user {user}: no matching entries in the image's /etc/passwd; use a \
         numeric uid or a user that exists in the image"
    )]
    UnknownUser { user: String },
    #[error(
        "unable to find group {group}: no matching entries in the image's /etc/group; use a \
         numeric gid or a group that exists in the image"
    )]
    UnknownGroup { group: String },
    #[error("invalid user {user:?}: expected USER, UID, USER:GROUP or UID:GID")]
    InvalidUser { user: String },
    #[error("invalid stop signal {signal:?}: use a name such as SIGTERM or TERM, or a number")]
    InvalidSignal { signal: String },
    #[error("cannot build the OCI runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error(
        "unknown capability {0:?}: the service's --cap-add/--cap-drop must name a Linux capability"
    )]
    Capability(String),
    #[error("cannot apply the seccomp profile: {0}")]
    Seccomp(String),
    #[error("{0}")]
    AppArmor(String),
    #[error("unknown --ulimit {0:?}")]
    Ulimit(String),
    #[error("the mount at {target} has no source on this node")]
    MountSource { target: String },
    #[error(
        "--init needs an init binary on the node, and this one has none: install tini \
         (`apt-get install tini`, which provides /usr/bin/tini-static)"
    )]
    NoInit,
}

/// The process identity a container runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd (`/` when the user has no entry), for `HOME`.
    pub home: String,
}

/// The process arguments, as Docker (through swarmkit) computes them: the service's command
/// replaces the image's ENTRYPOINT and drops its CMD; the service's args replace only the CMD.
pub fn process_args(spec: &ContainerSpec, image: &ResolvedImage) -> Result<Vec<String>, SpecError> {
    let args: Vec<String> = if !spec.command.is_empty() {
        spec.command
            .iter()
            .chain(spec.args.iter())
            .cloned()
            .collect()
    } else if !spec.args.is_empty() {
        image
            .entrypoint
            .iter()
            .chain(spec.args.iter())
            .cloned()
            .collect()
    } else {
        image
            .entrypoint
            .iter()
            .chain(image.cmd.iter())
            .cloned()
            .collect()
    };
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            image: image.name.clone(),
        });
    }
    Ok(args)
}

/// The key of a `KEY=VALUE` entry (a bare `KEY` is its own key).
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Replaces the entry with the same key, or appends: later lists win, order of first
/// appearance is kept (Docker's `ReplaceOrAppendEnvValues`).
fn replace_or_append(env: &mut Vec<String>, entries: &[String]) {
    for entry in entries {
        let key = env_key(entry);
        match env.iter_mut().find(|e| env_key(e) == key) {
            Some(existing) => existing.clone_from(entry),
            None => env.push(entry.clone()),
        }
    }
}

/// The process environment: Docker's defaults (`PATH`, `HOSTNAME`), then the image's env, then
/// the task's (the task wins), then `HOME` from the user's passwd entry when nothing set it.
pub fn merge_env(
    image_env: &[String],
    task_env: &[String],
    hostname: &str,
    home: &str,
) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    replace_or_append(&mut env, image_env);
    replace_or_append(&mut env, task_env);
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    env
}

/// One parsed /etc/passwd line.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn parse_passwd(content: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    content.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

/// One parsed /etc/group line.
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_group(content: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    content.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolves `user` (`""`, `USER`, `UID`, `USER:GROUP`, `UID:GID`, any mix) against the image's
/// /etc/passwd and /etc/group contents, as runc's `GetExecUser` does for Docker: a numeric uid
/// needs no entry, a name must have one; the primary gid comes from the passwd entry unless a
/// group is given; supplementary groups are those listing the user, only when no group is given.
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if group_part == Some("") || (user_part.is_empty() && group_part.is_some()) {
        return Err(SpecError::InvalidUser {
            user: user.to_string(),
        });
    }
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");

    // Docker's default when USER is unset is root.
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let (uid, mut gid, name, home) = match user_part.parse::<u32>() {
        Ok(uid) => match parse_passwd(passwd).find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name.to_string()), e.home.to_string()),
            None => (uid, 0, None, String::new()),
        },
        Err(_) => match parse_passwd(passwd).find(|e| e.name == user_part) {
            Some(e) => (e.uid, e.gid, Some(e.name.to_string()), e.home.to_string()),
            None => {
                return Err(SpecError::UnknownUser {
                    user: user_part.to_string(),
                })
            }
        },
    };

    let mut additional_gids = Vec::new();
    match group_part {
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => match parse_group(group).find(|e| e.name == g) {
                    Some(e) => e.gid,
                    None => {
                        return Err(SpecError::UnknownGroup {
                            group: g.to_string(),
                        })
                    }
                },
            };
        }
        None => {
            if let Some(name) = &name {
                let mut seen = HashSet::new();
                for e in parse_group(group) {
                    if e.members.contains(&name.as_str()) && seen.insert(e.gid) {
                        additional_gids.push(e.gid);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

/// The container's hostname: the service's, or the first 12 characters of the task ID (Docker
/// uses the short container ID, and the container ID is the task ID).
pub fn hostname_for(task: &Task) -> String {
    match task.spec.as_ref().map(|s| s.hostname.as_str()) {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => task.id.chars().take(12).collect(),
    }
}

/// `/etc/hosts` as Docker writes it for a container; `addresses` are the container's own,
/// `extra` the service's `--host` lines ("IP HOST").
pub fn hosts_file(hostname: &str, addresses: &[Ipv4Addr], extra: &[String]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for addr in addresses {
        s.push_str(&format!("{addr}\t{hostname}\n"));
    }
    for line in extra {
        let mut words = line.split_whitespace();
        if let Some(ip) = words.next() {
            s.push_str(&format!("{ip}\t{}\n", words.collect::<Vec<_>>().join(" ")));
        }
    }
    s
}

/// The container's resolv.conf from the host's: nameservers on loopback are unreachable from
/// the container's network namespace, so they are dropped as Docker does, and Docker's public
/// fallback is used when none remain.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut nameservers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            let ip = addr.split('%').next().unwrap_or("");
            match ip.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_loopback() => continue,
                Ok(_) => nameservers += 1,
                Err(_) => continue,
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if nameservers == 0 {
        for ns in FALLBACK_NAMESERVERS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

/// Writes `hostname`, `hosts` and `resolv.conf` into `task_dir` (created if needed); they are
/// bind-mounted over the container's `/etc` files. The resolv.conf is the network's (pointing
/// at the node's DNS server) when the task has one, else derived from the host's; `hosts` holds
/// the service's `--host` lines.
pub fn write_etc_files(
    task_dir: &Path,
    hostname: &str,
    net: &TaskNetwork,
    hosts: &[String],
) -> io::Result<()> {
    fs::create_dir_all(task_dir)?;
    fs::write(task_dir.join("hostname"), format!("{hostname}\n"))?;
    fs::write(
        task_dir.join("hosts"),
        hosts_file(hostname, &net.addresses, hosts),
    )?;
    let resolv = match &net.resolv_conf {
        Some(r) => r.clone(),
        None => resolv_conf(&host_resolv_conf()),
    };
    fs::write(task_dir.join("resolv.conf"), resolv)?;
    Ok(())
}

/// Parses a stop signal as Docker accepts it: `SIGTERM`, `TERM`, `sigterm` or `15`.
pub fn parse_signal(signal: &str) -> Result<nix::sys::signal::Signal, SpecError> {
    use std::str::FromStr;
    let invalid = || SpecError::InvalidSignal {
        signal: signal.to_string(),
    };
    let s = signal.trim();
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| invalid());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| invalid())
}

/// The cgroup of a task: its own, under the `shoal` parent. runc's cgroupfs driver treats an
/// absolute path as relative to each v1 hierarchy's root, or to the v2 unified root.
pub fn cgroups_path(task_id: &str) -> PathBuf {
    PathBuf::from(format!("/shoal/{task_id}"))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// Docker's default mounts, then the per-task `/etc` files bind-mounted from `task_dir`.
fn mounts(task_dir: &Path) -> Result<Vec<Mount>, SpecError> {
    let mut m = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ];
    for name in ETC_FILES {
        let source = task_dir.join(name);
        m.push(
            MountBuilder::default()
                .destination(format!("/etc/{name}"))
                .typ("bind")
                .source(source)
                .options(vec!["rbind".to_string(), "rprivate".to_string()])
                .build()?,
        );
    }
    Ok(m)
}

/// Docker's device cgroup rules: deny everything, then allow mknod of any device and use of the
/// standard ones (runc adds its own default list on top).
fn device_rules() -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>, SpecError> {
    let rule =
        |allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(allow)
                .access(access);
            if typ != LinuxDeviceType::A {
                b = b.typ(typ);
            }
            if let Some(major) = major {
                b = b.major(major);
            }
            if let Some(minor) = minor {
                b = b.minor(minor);
            }
            b.build()
        };
    use LinuxDeviceType::{A, B, C};
    Ok(vec![
        rule(false, A, None, None, "rwm")?,
        rule(true, C, None, None, "m")?,
        rule(true, B, None, None, "m")?,
        rule(true, C, Some(1), Some(3), "rwm")?,    // null
        rule(true, C, Some(1), Some(8), "rwm")?,    // random
        rule(true, C, Some(1), Some(7), "rwm")?,    // full
        rule(true, C, Some(5), Some(0), "rwm")?,    // tty
        rule(true, C, Some(1), Some(5), "rwm")?,    // zero
        rule(true, C, Some(1), Some(9), "rwm")?,    // urandom
        rule(true, C, Some(136), None, "rwm")?,     // pts
        rule(true, C, Some(5), Some(2), "rwm")?,    // ptmx
        rule(true, C, Some(10), Some(200), "rwm")?, // tun
    ])
}

/// The CFS period docker uses for `--cpus` (100 ms, in µs).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The task's cgroup settings: the device rules, and its limits as docker applies a service's
/// `--limit-cpu`/`--limit-memory`/`--reserve-memory`:
///
/// * CPU limit: CFS quota over a 100 ms period (`quota = nano_cpus × period / 1e9`), which runc
///   writes as `cpu.cfs_quota_us`/`cpu.cfs_period_us` on cgroup v1 and `cpu.max` on v2.
/// * Memory limit: `memory.limit_in_bytes` (v1) / `memory.max` (v2). Like docker with no
///   `--memory-swap`, the container may also use as much swap as its limit (the OCI `swap`
///   field is memory + swap); that is only set when the kernel accounts swap per cgroup
///   (`swap_accounting`), since runc fails to start a container whose swap limit it cannot
///   write.
/// * Memory reservation: the soft limit (`memory.soft_limit_in_bytes` / `memory.low`), as
///   docker sets it. A CPU reservation is a scheduling promise only; no cgroup setting.
pub fn linux_resources(
    cs: &ContainerSpec,
    swap_accounting: bool,
) -> Result<LinuxResources, SpecError> {
    let mut b = LinuxResourcesBuilder::default().devices(device_rules()?);
    let limits = cs
        .resources
        .as_ref()
        .and_then(|r| r.limits)
        .unwrap_or_default();
    let reservations = cs
        .resources
        .as_ref()
        .and_then(|r| r.reservations)
        .unwrap_or_default();
    if limits.nano_cpus > 0 {
        let quota = (u128::from(limits.nano_cpus) * u128::from(CPU_PERIOD_US) / 1_000_000_000)
            // The kernel refuses quotas under 1 ms.
            .max(1_000);
        b = b.cpu(
            LinuxCpuBuilder::default()
                .period(CPU_PERIOD_US)
                .quota(i64::try_from(quota).unwrap_or(i64::MAX))
                .build()?,
        );
    }
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    if limits.memory_bytes > 0 || reservations.memory_bytes > 0 {
        let mut m = LinuxMemoryBuilder::default();
        if limits.memory_bytes > 0 {
            m = m.limit(as_i64(limits.memory_bytes));
            if swap_accounting {
                m = m.swap(as_i64(limits.memory_bytes.saturating_mul(2)));
            }
        }
        if reservations.memory_bytes > 0 {
            m = m.reservation(as_i64(reservations.memory_bytes));
        }
        b = b.memory(m.build()?);
    }
    Ok(b.build()?)
}

/// Whether the kernel accounts swap per cgroup, so that a swap limit can be written: cgroup
/// v1's `memory.memsw.*` files, or v2's `memory.swap.max` (present in every non-root cgroup
/// when enabled; the root has none, so this process's own cgroup and the top-level ones are
/// looked at). Read once per process.
pub fn swap_accounting() -> bool {
    static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(|| {
        let root = Path::new("/sys/fs/cgroup");
        if !root.join("cgroup.controllers").exists() {
            return root.join("memory/memory.memsw.limit_in_bytes").exists();
        }
        let own = fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
            })
            .map(|p| root.join(p.trim_start_matches('/')).join("memory.swap.max"));
        if own.is_some_and(|p| p.exists()) {
            return true;
        }
        fs::read_dir(root)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().join("memory.swap.max").exists())
            })
            .unwrap_or(false)
    })
}

/// Everything a task's spec is built from.
pub struct SpecInput<'a> {
    pub task: &'a Task,
    pub image: &'a ResolvedImage,
    pub user: &'a ResolvedUser,
    pub hostname: &'a str,
    /// Directory holding the task's `hostname`, `hosts` and `resolv.conf`.
    pub task_dir: &'a Path,
    /// RLIMIT_NOFILE soft and hard limit, normally [`nofile_limit`].
    pub nofile: u64,
    /// The network namespace the worker built for the task; `None`: runc makes an empty one.
    pub netns: Option<&'a Path>,
    /// The node's facts the security settings depend on, normally [`Host::current`].
    pub host: &'a Host,
    /// The task's `--mount`s, with their sources on this node.
    pub mounts: &'a [options::ResolvedMount<'a>],
    /// The node's init binary for `--init` ([`options::find_init`]).
    pub init: Option<&'a Path>,
}

/// Builds the OCI runtime spec of a task's container.
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let default_spec = ContainerSpec::default();
    let cs = input.task.spec.as_deref().unwrap_or(&default_spec);
    let mut args = process_args(cs, input.image)?;
    let mut mounts = mounts(input.task_dir)?;
    if cs.init {
        let init = input.init.ok_or(SpecError::NoInit)?;
        args = options::with_init(args);
        mounts.push(options::init_mount(init)?);
    }
    // A task's own mount replaces a default one at the same place (a tmpfs at /dev/shm).
    mounts.retain(|m| {
        !input
            .mounts
            .iter()
            .any(|u| Path::new(&u.mount.target) == m.destination())
    });
    for m in input.mounts {
        mounts.push(options::user_mount(m)?);
    }
    // Parents before children, as docker sorts them: a volume at /etc must not hide the
    // /etc/hosts mounted on it. Stable, so equal depths keep their order.
    mounts.sort_by_key(|m| m.destination().components().count());
    let env = merge_env(&input.image.env, &cs.env, input.hostname, &input.user.home);
    let cwd = [cs.dir.as_str(), input.image.working_dir.as_str()]
        .into_iter()
        .find(|d| !d.is_empty())
        .unwrap_or("/")
        .to_string();

    // Seccomp rules depend on the final capabilities, so they come first (as docker).
    let caps = capabilities::container_capabilities(cs, input.host.last_cap)?;
    let seccomp = seccomp::for_container(cs, &caps, input.host)?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    let mut user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid);
    if !input.user.additional_gids.is_empty() {
        user = user.additional_gids(input.user.additional_gids.clone());
    }
    let mut process = ProcessBuilder::default()
        .terminal(cs.tty)
        .user(user.build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(options::rlimits(cs, input.nofile)?)
        .no_new_privileges(false);
    if let Some(profile) = apparmor::profile_for(&input.host.apparmor, cs)? {
        process = process.apparmor_profile(profile);
    }

    let namespaces = [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
    ]
    .into_iter()
    .map(|typ| {
        let ns = LinuxNamespaceBuilder::default().typ(typ);
        match (typ, input.netns) {
            // Joined, not created: the worker has wired it already.
            (LinuxNamespaceType::Network, Some(path)) => ns.path(path).build(),
            _ => ns.build(),
        }
    })
    .collect::<Result<Vec<_>, _>>()?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(cgroups_path(&input.task.id))
        .resources(linux_resources(cs, swap_accounting())?)
        .masked_paths(
            [
                "/proc/asound",
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
                "/sys/devices/virtual/powercap",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        )
        .readonly_paths(
            [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        );
    if let Some(seccomp) = seccomp {
        linux = linux.seccomp(seccomp);
    }
    if !cs.sysctls.is_empty() {
        linux = linux.sysctl(cs.sysctls.clone());
    }

    Ok(SpecBuilder::default()
        // The spec version runc 1.1 implements.
        .version("1.0.2-dev")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(cs.read_only)
                .build()?,
        )
        .hostname(input.hostname)
        .mounts(mounts)
        .process(process.build()?)
        .linux(linux.build()?)
        .build()?)
}

/// The directories of an unmounted snapshot, top layer first, from the mounts containerd's
/// Snapshots.Prepare returned: an `overlay` mount (`upperdir`, then `lowerdir` left to right)
/// or a `bind` mount of a single directory.
pub fn rootfs_layers(mounts: &[containerd_client::types::Mount]) -> Vec<PathBuf> {
    let mut layers = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "overlay" => {
                let opt = |key: &str| {
                    m.options
                        .iter()
                        .find_map(|o| o.strip_prefix(key).map(str::to_string))
                };
                if let Some(upper) = opt("upperdir=") {
                    layers.push(PathBuf::from(upper));
                }
                if let Some(lower) = opt("lowerdir=") {
                    layers.extend(lower.split(':').map(PathBuf::from));
                }
            }
            "bind" | "rbind" => layers.push(PathBuf::from(&m.source)),
            _ => {}
        }
    }
    layers
}

/// Reads `path` (absolute, inside the container) from a stack of overlay layers without
/// mounting them: the topmost layer holding the path wins, and an overlay whiteout (a 0:0
/// character device) hides it. One level of symlink inside the rootfs is followed, enough for
/// images that link /etc/passwd elsewhere.
pub fn read_rootfs_file(layers: &[PathBuf], path: &str) -> Option<String> {
    read_layered(layers, path, 4)
}

fn read_layered(layers: &[PathBuf], path: &str, depth: u32) -> Option<String> {
    let rel = path.trim_start_matches('/');
    for layer in layers {
        let candidate = layer.join(rel);
        let Ok(meta) = fs::symlink_metadata(&candidate) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            return None;
        }
        if ft.is_symlink() {
            if depth == 0 {
                return None;
            }
            let target = fs::read_link(&candidate).ok()?;
            let target = if target.is_absolute() {
                target
            } else {
                Path::new(path).parent()?.join(target)
            };
            return read_layered(layers, target.to_str()?, depth - 1);
        }
        return fs::read_to_string(&candidate).ok();
    }
    None
}

#[cfg(test)]
mod tests;
