//! The daemon process's own resource use, under the names every Prometheus client library uses
//! (`process_*`), plus `shoal_build_info`. Read from `/proc/self` at scrape time.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use super::encode::{counter, gauge, gauges};

#[derive(Debug)]
pub struct ProcessCollector {
    /// When the registry was made, which is when the daemon started (to the millisecond).
    start_time_seconds: f64,
    /// Clock ticks per second, the unit of the CPU times in `/proc/self/stat`.
    ticks_per_second: f64,
}

impl ProcessCollector {
    pub fn new() -> Self {
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ProcessCollector {
            start_time_seconds: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            // Linux has had 100 for decades; sysconf failing would be a broken libc.
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
        }
    }
}

/// utime + stime (fields 14 and 15 of `/proc/self/stat`) in ticks. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its closing parenthesis.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state): utime is the 12th field after it.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of `/proc/self/status`, in bytes.
pub fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        gauges(
            &mut enc,
            "shoal_build_info",
            "The running shoal's version (always 1).",
            None,
            [([("version", env!("CARGO_PKG_VERSION"))], 1u64)],
        )?;
        // A file that cannot be read leaves its series out of this scrape rather than failing
        // the whole scrape.
        if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(cpu_ticks)
        {
            counter(
                &mut enc,
                "process_cpu",
                "User and system CPU time the daemon used.",
                Some(&Unit::Seconds),
                ticks as f64 / self.ticks_per_second,
            )?;
        }
        if let Some(bytes) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(resident_bytes)
        {
            gauge(
                &mut enc,
                "process_resident_memory",
                "Resident memory of the daemon.",
                Some(&Unit::Bytes),
                bytes,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut enc,
                "process_open_fds",
                "File descriptors the daemon holds open.",
                None,
                dir.count() as u64,
            )?;
        }
        gauge(
            &mut enc,
            "process_start_time",
            "When the daemon started, in seconds since the Unix epoch.",
            Some(&Unit::Seconds),
            self.start_time_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (shoal (x) y) S 1 4242 4242 0 -1 4194560 2171 0 0 0 150 25 0 0 20 0 \
                    12 0 1234 0 0";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("garbage"), None);
        let status = "Name:\tshoal\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\nThreads:\t12\n";
        assert_eq!(resident_bytes(status), Some(2048 * 1024));
        assert!(cpu_ticks(&std::fs::read_to_string("/proc/self/stat").unwrap()).is_some());
    }
}
