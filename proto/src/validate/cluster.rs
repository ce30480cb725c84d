//! Checks of the swarm-wide settings `swarm init` and `swarm update` take, shared by the CLI
//! (before it dials) and the daemon (before anything is stored).

use std::time::Duration;

/// The shortest heartbeat period: each heartbeat is a call per worker to the leader.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// The longest: a silent node is noticed after three periods.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "--dispatcher-heartbeat {0:?} is out of range: give a period from 100ms to 1h (Swarm's \
         default is 5s)"
    )]
    Heartbeat(Duration),
}

/// `--dispatcher-heartbeat`, in milliseconds as the API carries it.
pub fn dispatcher_heartbeat(ms: u64) -> Result<(), ClusterError> {
    let d = Duration::from_millis(ms);
    if (MIN_HEARTBEAT..=MAX_HEARTBEAT).contains(&d) {
        Ok(())
    } else {
        Err(ClusterError::Heartbeat(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_bounded() {
        assert_eq!(dispatcher_heartbeat(5_000), Ok(()));
        assert_eq!(dispatcher_heartbeat(100), Ok(()));
        for bad in [0, 99, 3_600_001] {
            assert!(dispatcher_heartbeat(bad).is_err(), "{bad} ms accepted");
        }
        assert!(dispatcher_heartbeat(0)
            .unwrap_err()
            .to_string()
            .contains("from 100ms to 1h"));
    }
}
