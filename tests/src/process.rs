//! Processes as the harness sees them: read from `/proc` (to find what a fixture started, what
//! a crashed run left, and whether it is gone) and child processes stopped the way every
//! fixture stops them (SIGTERM, a grace period, then SIGKILL).

use std::fs;
use std::io;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Every process ID in `/proc`.
pub fn pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The argv of `pid`; empty if it is gone (or a kernel thread).
pub fn cmdline_of(pid: i32) -> Vec<String> {
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return Vec::new();
    };
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The state letter and the parent pid of `pid`, from `/proc/PID/stat`.
fn stat_of(pid: i32) -> Option<(String, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may hold spaces and parentheses: the state and the ppid are
    // the first two fields after the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_string();
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The parent of `pid`, if `pid` exists.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat_of(pid).map(|(_, ppid)| ppid)
}

/// Whether `pid` exists and is not a zombie (a zombie holds no files, mounts or namespaces).
pub fn is_running(pid: i32) -> bool {
    stat_of(pid).is_some_and(|(state, _)| state != "Z" && state != "X")
}

/// SIGKILLs `roots` and every process below them, and returns them all. The tree is read
/// first, since a killed parent's children are re-parented and could not be found any more.
pub fn kill_tree(roots: &[i32]) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = pids()
        .into_iter()
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut doomed: Vec<i32> = roots.to_vec();
    let mut i = 0;
    while i < doomed.len() {
        let parent = doomed[i];
        for (pid, ppid) in &parents {
            if *ppid == parent && !doomed.contains(pid) {
                doomed.push(*pid);
            }
        }
        i += 1;
    }
    for pid in &doomed {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    doomed
}

/// Stops a child process: SIGTERM, then SIGKILL once `grace` has passed, and reaps it. Returns
/// its exit status if it exited on its own (or already had), None if it had to be killed.
pub fn stop_child(child: &mut Child, grace: Duration) -> io::Result<Option<ExitStatus>> {
    // An exited but unreaped child is a zombie, which still takes the signal harmlessly.
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => break,
            Err(e) => {
                // Whatever went wrong with waiting, the process must not outlive the fixture.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
    child.kill()?;
    child.wait()?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id() as i32;
        assert!(pids().contains(&me));
        assert!(is_running(me));
        assert!(!cmdline_of(me).is_empty());
        assert_eq!(
            parent_of(me),
            Some(std::os::unix::process::parent_id() as i32)
        );
    }

    #[test]
    fn stop_child_ends_a_process_that_ignores_sigterm() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 60"])
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        // Once it is `sleep`, the trap is set (an ignored signal stays ignored across exec).
        let deadline = Instant::now() + Duration::from_secs(10);
        while cmdline_of(pid).first().map(String::as_str) != Some("sleep") {
            assert!(Instant::now() < deadline, "sh never exec'd sleep");
            thread::sleep(Duration::from_millis(10));
        }
        let status = stop_child(&mut child, Duration::from_millis(300)).expect("stop");
        assert!(status.is_none(), "it ignored SIGTERM, so it was killed");
        assert!(!is_running(pid));
    }
}
