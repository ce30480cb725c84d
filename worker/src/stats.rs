//! Resource usage of one task: CPU, memory and limits from its cgroup, network bytes from its
//! network namespace. The agent reads it every few seconds and reports it to the leader
//! (`Dispatcher.ReportUsage`), which serves it as metrics and feeds the autoscaler.
//!
//! A task's container runs in the cgroup `/shoal/<task id>` ([`crate::spec::cgroups_path`]).
//! runc's cgroupfs driver creates that path under every cgroup v1 hierarchy, or under the root
//! of the unified (v2) hierarchy when the host runs cgroup v2 only. Which accounting applies is
//! read from the mount table ([`CgroupLayout::detect`]): where v1 controllers are mounted (a
//! legacy or hybrid host) runc uses them, and the controller-less cgroup2 mount that hybrid
//! hosts add beside them holds no usage; a host with no v1 controller is a cgroup v2 host.
//!
//! Every value is what the kernel exposes, converted to the units of [`TaskUsage`]: seconds of
//! CPU, bytes, and nano-CPUs for the CPU limit. The memory figure is the working set (usage
//! less inactive file cache), as cAdvisor and the kubelet count it: the cache the kernel can
//! drop at once is not memory the task needs.

use std::io;
use std::path::{Path, PathBuf};

use shoal_proto::TaskUsage;

/// v1 reports "no memory limit" as the largest page-aligned counter value, which depends on
/// the page size (0x7FFFFFFFFFFFF000 with 4 KiB pages). Anything this large is no real limit.
const V1_UNLIMITED_THRESHOLD: u64 = 1 << 62;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {reason}", .path.display())]
    Parse { path: PathBuf, reason: String },
    #[error(
        "no cgroup filesystem is mounted (neither v1 cpuacct/memory controllers nor cgroup2 in \
         /proc/self/mountinfo); task resource usage cannot be read"
    )]
    NoCgroupFs,
}

impl StatsError {
    /// True when the file is simply not there: the task's cgroup is gone (the task exited) or
    /// was never made.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StatsError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Where the cgroup controllers are mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// One hierarchy per controller (or per group of co-mounted controllers, such as
    /// `cpu,cpuacct`); each field is that controller's mount point.
    V1 {
        cpuacct: Option<PathBuf>,
        cpu: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
    /// The unified hierarchy, mounted at `root`.
    V2 { root: PathBuf },
}

/// What a task's cgroup says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu_seconds_total: f64,
    pub memory_working_set_bytes: u64,
    /// 0 = no limit.
    pub memory_limit_bytes: u64,
    /// 0 = no limit.
    pub cpu_limit_nano_cpus: u64,
}

impl CgroupLayout {
    /// Reads the mount table of this process.
    pub fn detect() -> Result<CgroupLayout, StatsError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = read(path)?;
        Self::from_mountinfo(&text).ok_or(StatsError::NoCgroupFs)
    }

    /// The layout a `/proc/<pid>/mountinfo` text describes; see the module documentation.
    pub fn from_mountinfo(text: &str) -> Option<CgroupLayout> {
        let (mut cpuacct, mut cpu, mut memory, mut unified) = (None, None, None, None);
        for line in text.lines() {
            let Some(m) = MountInfo::parse(line) else {
                continue;
            };
            match m.fstype {
                "cgroup" => {
                    for controller in m.super_options.split(',') {
                        let slot = match controller {
                            "cpuacct" => &mut cpuacct,
                            "cpu" => &mut cpu,
                            "memory" => &mut memory,
                            _ => continue,
                        };
                        // The first mount wins: a hierarchy mounted again elsewhere (a bind
                        // mount into a container) is the same one.
                        slot.get_or_insert_with(|| m.mount_point.clone());
                    }
                }
                // The unified hierarchy proper is the one at the conventional place;
                // otherwise the first one.
                "cgroup2" if unified.is_none() || m.mount_point == Path::new("/sys/fs/cgroup") => {
                    unified = Some(m.mount_point.clone());
                }
                _ => {}
            }
        }
        if cpuacct.is_some() || memory.is_some() {
            Some(CgroupLayout::V1 {
                cpuacct,
                cpu,
                memory,
            })
        } else {
            unified.map(|root| CgroupLayout::V2 { root })
        }
    }

    /// Reads the cgroup at `cgroup` (absolute within the hierarchy, e.g. `/shoal/<task id>`).
    pub fn read(&self, cgroup: &Path) -> Result<CgroupStats, StatsError> {
        let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
        match self {
            CgroupLayout::V1 {
                cpuacct,
                cpu,
                memory,
            } => {
                let mut stats = CgroupStats::default();
                if let Some(dir) = cpuacct {
                    let path = dir.join(rel).join("cpuacct.usage");
                    let ns = parse_u64(&path, &read(&path)?)?;
                    stats.cpu_seconds_total = ns as f64 / 1e9;
                }
                if let Some(dir) = memory {
                    let dir = dir.join(rel);
                    let usage_path = dir.join("memory.usage_in_bytes");
                    let usage = parse_u64(&usage_path, &read(&usage_path)?)?;
                    let stat_path = dir.join("memory.stat");
                    let stat = read(&stat_path)?;
                    let inactive = flat_keyed(&stat, "total_inactive_file").unwrap_or(0);
                    stats.memory_working_set_bytes = usage.saturating_sub(inactive);
                    let limit_path = dir.join("memory.limit_in_bytes");
                    stats.memory_limit_bytes =
                        v1_memory_limit(parse_u64(&limit_path, &read(&limit_path)?)?);
                }
                if let Some(dir) = cpu {
                    let dir = dir.join(rel);
                    let quota_path = dir.join("cpu.cfs_quota_us");
                    let quota = read(&quota_path)?;
                    let quota: i64 = quota.trim().parse().map_err(|e| StatsError::Parse {
                        path: quota_path.clone(),
                        reason: format!("{e}: {:?}", quota.trim()),
                    })?;
                    let period_path = dir.join("cpu.cfs_period_us");
                    let period = parse_u64(&period_path, &read(&period_path)?)?;
                    stats.cpu_limit_nano_cpus = v1_cpu_limit(quota, period);
                }
                Ok(stats)
            }
            CgroupLayout::V2 { root } => {
                let dir = root.join(rel);
                let cpu_path = dir.join("cpu.stat");
                let usage_usec = flat_keyed(&read(&cpu_path)?, "usage_usec").ok_or_else(|| {
                    StatsError::Parse {
                        path: cpu_path.clone(),
                        reason: "no usage_usec line".into(),
                    }
                })?;
                let current_path = dir.join("memory.current");
                let current = parse_u64(&current_path, &read(&current_path)?)?;
                let inactive = flat_keyed(&read(&dir.join("memory.stat"))?, "inactive_file");
                let max_path = dir.join("memory.max");
                let memory_max = read(&max_path)?;
                let memory_limit_bytes =
                    v2_memory_max(&memory_max).ok_or_else(|| StatsError::Parse {
                        path: max_path.clone(),
                        reason: format!("not a byte count or \"max\": {:?}", memory_max.trim()),
                    })?;
                // cpu.max exists only where the cpu controller is enabled for the group.
                let cpu_max_path = dir.join("cpu.max");
                let cpu_limit_nano_cpus = match read(&cpu_max_path) {
                    Ok(text) => v2_cpu_max(&text).ok_or_else(|| StatsError::Parse {
                        path: cpu_max_path.clone(),
                        reason: format!("not \"QUOTA PERIOD\": {:?}", text.trim()),
                    })?,
                    Err(e) if e.is_not_found() => 0,
                    Err(e) => return Err(e),
                };
                Ok(CgroupStats {
                    cpu_seconds_total: usage_usec as f64 / 1e6,
                    memory_working_set_bytes: current.saturating_sub(inactive.unwrap_or(0)),
                    memory_limit_bytes,
                    cpu_limit_nano_cpus,
                })
            }
        }
    }
}

/// Bytes received and sent on every interface but loopback of the network namespace `pid`
/// runs in. None when that is this process's own namespace: the host's traffic is not the
/// task's.
pub fn read_network(pid: u32) -> Result<Option<(u64, u64)>, StatsError> {
    let ns = |path: PathBuf| {
        std::fs::read_link(&path).map_err(|source| StatsError::Read { path, source })
    };
    if ns(PathBuf::from(format!("/proc/{pid}/ns/net")))? == ns(PathBuf::from("/proc/self/ns/net"))?
    {
        return Ok(None);
    }
    let path = PathBuf::from(format!("/proc/{pid}/net/dev"));
    let text = read(&path)?;
    parse_net_dev(&text)
        .map(Some)
        .ok_or_else(|| StatsError::Parse {
            path,
            reason: "not in the /proc/net/dev format".into(),
        })
}

/// The usage of task `task_id`, whose process is `pid` when known, stamped `timestamp_ms`.
pub fn task_usage(
    layout: &CgroupLayout,
    task_id: &str,
    pid: Option<u32>,
    timestamp_ms: i64,
) -> Result<TaskUsage, StatsError> {
    let cg = layout.read(&crate::spec::cgroups_path(task_id))?;
    let (network_rx_bytes, network_tx_bytes) = match pid {
        Some(pid) if pid > 0 => read_network(pid)?.unwrap_or_default(),
        _ => (0, 0),
    };
    Ok(TaskUsage {
        task_id: task_id.to_string(),
        cpu_seconds_total: cg.cpu_seconds_total,
        memory_working_set_bytes: cg.memory_working_set_bytes,
        memory_limit_bytes: cg.memory_limit_bytes,
        cpu_limit_nano_cpus: cg.cpu_limit_nano_cpus,
        network_rx_bytes,
        network_tx_bytes,
        timestamp_ms,
    })
}

fn read(path: &Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|source| StatsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, StatsError> {
    text.trim().parse().map_err(|e| StatsError::Parse {
        path: path.to_path_buf(),
        reason: format!("{e}: {:?}", text.trim()),
    })
}

/// The value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`: "key value" lines).
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// v1 `memory.limit_in_bytes`, with "unlimited" as 0.
pub fn v1_memory_limit(raw: u64) -> u64 {
    if raw >= V1_UNLIMITED_THRESHOLD {
        0
    } else {
        raw
    }
}

/// v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` as nano-CPUs; a quota of -1 (or no period) is
/// no limit.
pub fn v1_cpu_limit(quota_us: i64, period_us: u64) -> u64 {
    if quota_us <= 0 || period_us == 0 {
        return 0;
    }
    (quota_us as u128 * 1_000_000_000 / period_us as u128) as u64
}

/// v2 `memory.max`: bytes, or "max" (no limit, 0).
pub fn v2_memory_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => Some(0),
        n => n.parse().ok(),
    }
}

/// v2 `cpu.max` ("QUOTA PERIOD", QUOTA "max" for none) as nano-CPUs.
pub fn v2_cpu_max(text: &str) -> Option<u64> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period: u64 = fields.next()?.parse().ok()?;
    if quota == "max" {
        return Some(0);
    }
    Some(v1_cpu_limit(quota.parse().ok()?, period))
}

/// Received and transmitted bytes summed over every interface but `lo`, from the text of
/// `/proc/<pid>/net/dev`.
pub fn parse_net_dev(text: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines();
    // Two header lines: "Inter-|   Receive …" and " face |bytes    packets …".
    if !lines.next()?.contains('|') || !lines.next()?.contains('|') {
        return None;
    }
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in lines {
        let (iface, counters) = line.split_once(':')?;
        if iface.trim() == "lo" {
            continue;
        }
        let fields: Vec<&str> = counters.split_whitespace().collect();
        // 8 receive columns, then 8 transmit columns; bytes come first in each.
        let (r, t) = (fields.first()?, fields.get(8)?);
        rx = rx.saturating_add(r.parse().ok()?);
        tx = tx.saturating_add(t.parse().ok()?);
    }
    Some((rx, tx))
}

/// One line of `/proc/<pid>/mountinfo`: "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…]
/// - FSTYPE SOURCE SUPER_OPTIONS".
struct MountInfo<'a> {
    mount_point: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

impl<'a> MountInfo<'a> {
    fn parse(line: &'a str) -> Option<MountInfo<'a>> {
        let (head, tail) = line.split_once(" - ")?;
        let mount_point = head.split(' ').nth(4)?;
        let mut tail = tail.split(' ');
        let fstype = tail.next()?;
        let _source = tail.next()?;
        let super_options = tail.next().unwrap_or("");
        Some(MountInfo {
            mount_point: PathBuf::from(unescape_octal(mount_point)),
            fstype,
            super_options,
        })
    }
}

/// Undoes mountinfo's escaping of space, tab, newline and backslash as `\NNN` (octal).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\')
            .then(|| bytes.get(i + 1..i + 4))
            .flatten()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's kind of host: cgroup v1 controllers each on their own hierarchy, plus
    /// the controller-less cgroup2 mount of a hybrid systemd host.
    const MOUNTINFO_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:7 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const MOUNTINFO_COMOUNTED: &str = "\
25 20 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
26 20 0:23 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";

    const MOUNTINFO_V2: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn layout_from_mountinfo() {
        assert_eq!(
            CgroupLayout::from_mountinfo(MOUNTINFO_HYBRID),
            Some(CgroupLayout::V1 {
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into()),
                cpu: Some("/sys/fs/cgroup/cpu".into()),
                memory: Some("/sys/fs/cgroup/memory".into()),
            })
        );
        assert_eq!(
            CgroupLayout::from_mountinfo(MOUNTINFO_COMOUNTED),
            Some(CgroupLayout::V1 {
                cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
                cpu: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
                memory: Some("/sys/fs/cgroup/memory".into()),
            })
        );
        assert_eq!(
            CgroupLayout::from_mountinfo(MOUNTINFO_V2),
            Some(CgroupLayout::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert_eq!(
            CgroupLayout::from_mountinfo("22 1 0:21 / /proc rw - proc proc rw\n"),
            None
        );
    }

    #[test]
    fn mount_points_are_unescaped() {
        let line = "40 31 0:37 / /mnt/with\\040space rw - cgroup cgroup rw,memory";
        assert_eq!(
            MountInfo::parse(line).map(|m| m.mount_point),
            Some(PathBuf::from("/mnt/with space"))
        );
    }

    #[test]
    fn v1_values() {
        assert_eq!(v1_memory_limit(9223372036854771712), 0, "4 KiB pages");
        assert_eq!(v1_memory_limit(9223372036854710272), 0, "64 KiB pages");
        assert_eq!(v1_memory_limit(268435456), 268435456);
        assert_eq!(v1_cpu_limit(-1, 100000), 0);
        assert_eq!(v1_cpu_limit(50000, 100000), 500_000_000);
        assert_eq!(v1_cpu_limit(200000, 100000), 2_000_000_000);
        assert_eq!(v1_cpu_limit(150000, 0), 0);
        let stat = "cache 1000\nrss 5000\ninactive_file 300\ntotal_cache 1000\n\
                    total_inactive_file 700\ntotal_rss 5000\n";
        assert_eq!(flat_keyed(stat, "total_inactive_file"), Some(700));
        assert_eq!(flat_keyed(stat, "inactive_file"), Some(300));
        assert_eq!(flat_keyed(stat, "missing"), None);
    }

    #[test]
    fn v2_values() {
        assert_eq!(v2_memory_max("max\n"), Some(0));
        assert_eq!(v2_memory_max("536870912\n"), Some(536870912));
        assert_eq!(v2_memory_max("lots"), None);
        assert_eq!(v2_cpu_max("max 100000\n"), Some(0));
        assert_eq!(v2_cpu_max("50000 100000\n"), Some(500_000_000));
        assert_eq!(v2_cpu_max("150000 100000"), Some(1_500_000_000));
        assert_eq!(v2_cpu_max("50000"), None);
        let cpu_stat = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n\
                        nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";
        assert_eq!(flat_keyed(cpu_stat, "usage_usec"), Some(2_500_000));
    }

    #[test]
    fn net_dev_sums_all_but_loopback() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0
  eth0:    1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
vxlan1:     500       5    0    0    0     0          0         0      700       7    0    0    0     0       0          0
";
        assert_eq!(parse_net_dev(text), Some((1500, 2700)));
        let only_lo = "Inter-|   Receive |  Transmit\n face |bytes |bytes\n    lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n";
        assert_eq!(parse_net_dev(only_lo), Some((0, 0)));
        assert_eq!(parse_net_dev("garbage"), None);
        assert_eq!(
            parse_net_dev("Inter-| x\n face | y\n  eth0: 1 2\n"),
            None,
            "a short line is not silently read as zero"
        );
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn reads_a_v1_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let (acct, cpu, mem) = (
            tmp.path().join("cpuacct"),
            tmp.path().join("cpu"),
            tmp.path().join("memory"),
        );
        let task = Path::new("/shoal/t1");
        write(&acct.join("shoal/t1"), "cpuacct.usage", "1500000000\n");
        write(&cpu.join("shoal/t1"), "cpu.cfs_quota_us", "50000\n");
        write(&cpu.join("shoal/t1"), "cpu.cfs_period_us", "100000\n");
        write(&mem.join("shoal/t1"), "memory.usage_in_bytes", "10000\n");
        write(
            &mem.join("shoal/t1"),
            "memory.stat",
            "cache 4000\ntotal_inactive_file 3000\n",
        );
        write(
            &mem.join("shoal/t1"),
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        let layout = CgroupLayout::V1 {
            cpuacct: Some(acct),
            cpu: Some(cpu),
            memory: Some(mem),
        };
        assert_eq!(
            layout.read(task).unwrap(),
            CgroupStats {
                cpu_seconds_total: 1.5,
                memory_working_set_bytes: 7000,
                memory_limit_bytes: 0,
                cpu_limit_nano_cpus: 500_000_000,
            }
        );
        let gone = layout.read(Path::new("/shoal/gone")).unwrap_err();
        assert!(gone.is_not_found(), "{gone}");
    }

    #[test]
    fn reads_a_v2_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shoal/t2");
        write(&dir, "cpu.stat", "usage_usec 250000\nuser_usec 200000\n");
        write(&dir, "memory.current", "8192\n");
        write(&dir, "memory.stat", "anon 4096\ninactive_file 1024\n");
        write(&dir, "memory.max", "268435456\n");
        write(&dir, "cpu.max", "200000 100000\n");
        let layout = CgroupLayout::V2 {
            root: tmp.path().to_path_buf(),
        };
        assert_eq!(
            layout.read(Path::new("/shoal/t2")).unwrap(),
            CgroupStats {
                cpu_seconds_total: 0.25,
                memory_working_set_bytes: 7168,
                memory_limit_bytes: 268435456,
                cpu_limit_nano_cpus: 2_000_000_000,
            }
        );
        write(&dir, "memory.max", "max\n");
        std::fs::remove_file(dir.join("cpu.max")).unwrap();
        let st = layout.read(Path::new("/shoal/t2")).unwrap();
        assert_eq!((st.memory_limit_bytes, st.cpu_limit_nano_cpus), (0, 0));
        write(&dir, "memory.max", "a lot\n");
        assert!(matches!(
            layout.read(Path::new("/shoal/t2")),
            Err(StatsError::Parse { .. })
        ));
    }

    #[test]
    fn own_network_namespace_is_not_a_tasks() {
        assert_eq!(read_network(std::process::id()).unwrap(), None);
    }
}
