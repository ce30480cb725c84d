//! The daemon's own resource limits.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tracing::{info, warn};

/// Raises the soft limit on open files to the hard one, as dockerd and containerd (Go programs)
/// do at start. The daemon holds a descriptor for each task's network namespace on top of its
/// connections, sockets and files, and the soft limit a shell gives (usually 1,024) would cap a
/// node at fewer tasks than that. A failure is logged, not fatal: the daemon runs, with room
/// for fewer tasks.
pub fn raise_open_files() {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open files limit"),
            Err(e) => warn!(soft, hard, error = %e, "cannot raise the open files limit"),
        },
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the open files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("read the limit");
        // Lowered first (to half: plenty for the other tests of this process meanwhile), so
        // that the raise has something to do whatever limit the test runs with.
        setrlimit(Resource::RLIMIT_NOFILE, hard / 2, hard).expect("lower the soft limit");
        raise_open_files();
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).expect("read the limit"),
            (hard, hard)
        );
    }
}
