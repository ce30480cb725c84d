//! What the footprint benchmark reads from /proc: a process's resident and proportional set
//! sizes (PSS splits each shared page among the processes mapping it, so the PSS of a group of
//! processes adds up to the memory the group really costs), and finding processes by their
//! command line.

use std::fs;

use anyhow::{Context, Result};

/// One process's memory, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, o: Memory) -> Memory {
        Memory {
            rss: self.rss + o.rss,
            pss: self.pss + o.pss,
        }
    }
}

/// The memory of process `pid` now (from `/proc/PID/smaps_rollup`).
pub fn memory(pid: u32) -> Result<Memory> {
    let [rss, pss] = read_kib(&format!("/proc/{pid}/smaps_rollup"), ["Rss:", "Pss:"])?;
    Ok(Memory { rss, pss })
}

/// VmRSS and VmHWM (its peak) of `pid`, in KiB (from `/proc/PID/status`).
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let [rss, peak] = read_kib(&format!("/proc/{pid}/status"), ["VmRSS:", "VmHWM:"])?;
    Ok((rss, peak))
}

/// The number after each `NAME:` named, from a /proc file of `NAME: N kB` lines.
fn read_kib<const K: usize>(path: &str, names: [&str; K]) -> Result<[u64; K]> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut values = [0; K];
    for (value, name) in values.iter_mut().zip(names) {
        *value = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {name} in {path}"))?;
    }
    Ok(values)
}

/// Every process whose arguments satisfy `matches` (argv as strings), with its memory; those
/// that exit while being read are skipped.
pub fn processes(matches: impl Fn(&[String]) -> bool) -> Vec<(u32, Memory)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !matches(&argv) {
            continue;
        }
        if let Ok(m) = memory(pid) {
            found.push((pid, m));
        }
    }
    found
}

/// The sum of the processes' memory.
pub fn total(procs: &[(u32, Memory)]) -> Memory {
    procs.iter().fold(Memory::default(), |acc, (_, m)| acc + *m)
}
