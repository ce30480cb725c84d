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
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("reading /proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/smaps_rollup"))
    };
    Ok(Memory {
        rss: field("Rss:")?,
        pss: field("Pss:")?,
    })
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
