//! A task's healthcheck as docker runs one: which check applies ([`Healthcheck::resolve`]: the
//! service's fields over the image's `HEALTHCHECK`, field by field, with docker's defaults),
//! and what its results mean ([`HealthMonitor`]: `retries` failures in a row make the
//! container unhealthy, failures within the start period do not count until it was once
//! healthy).
//!
//! Pure: the agent's health loop (`agent::health`) runs the probes through the executor and
//! reports what the monitor says.

use std::time::Duration;

use shoal_proto::validate::health::{
    DEFAULT_INTERVAL, DEFAULT_RETRIES, DEFAULT_START_PERIOD, DEFAULT_TIMEOUT, TEST_CMD,
    TEST_CMD_SHELL,
};
use shoal_proto::{HealthConfig, HealthStatus};
use tokio::time::Instant;

/// The check a task's container gets, every field resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// What runs inside the container: `CMD`'s arguments, or `/bin/sh -c CMD` for `CMD-SHELL`.
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u64,
    pub start_period: Duration,
}

impl Healthcheck {
    /// The check docker would run: the service's config where it sets a field, else the
    /// image's, else the default; none when neither gives a test, or the test is `NONE`
    /// (`--no-healthcheck`).
    pub fn resolve(service: Option<&HealthConfig>, image: Option<&HealthConfig>) -> Option<Self> {
        let merged = match (service, image) {
            (None, None) => return None,
            (Some(s), None) => s.clone(),
            (None, Some(i)) => i.clone(),
            (Some(s), Some(i)) => {
                let or = |own: u64, theirs: u64| if own == 0 { theirs } else { own };
                HealthConfig {
                    test: if s.test.is_empty() {
                        i.test.clone()
                    } else {
                        s.test.clone()
                    },
                    interval_ms: or(s.interval_ms, i.interval_ms),
                    timeout_ms: or(s.timeout_ms, i.timeout_ms),
                    retries: or(s.retries, i.retries),
                    start_period_ms: or(s.start_period_ms, i.start_period_ms),
                }
            }
        };
        let argv = match merged.test.split_first() {
            Some((kind, rest)) if kind == TEST_CMD && !rest.is_empty() => rest.to_vec(),
            Some((kind, [cmd])) if kind == TEST_CMD_SHELL => {
                vec!["/bin/sh".into(), "-c".into(), cmd.clone()]
            }
            // NONE (`--no-healthcheck`), no test, or a form the control API refuses.
            _ => return None,
        };
        let duration = |ms: u64, default: Duration| match ms {
            0 => default,
            ms => Duration::from_millis(ms),
        };
        Some(Healthcheck {
            argv,
            interval: duration(merged.interval_ms, DEFAULT_INTERVAL),
            timeout: duration(merged.timeout_ms, DEFAULT_TIMEOUT),
            retries: match merged.retries {
                0 => DEFAULT_RETRIES,
                n => n,
            },
            start_period: duration(merged.start_period_ms, DEFAULT_START_PERIOD),
        })
    }
}

/// One probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// Exit 0.
    Healthy,
    /// A non-zero exit, a timeout, or a probe that could not run; the text says which.
    Failed(String),
}

/// What the probes so far make of a container (docker's `Health`): see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    retries: u64,
    /// Until then a failure does not count, while the container was never healthy (`None`: a
    /// start period too long to reach).
    grace_until: Option<Instant>,
    status: HealthStatus,
    failing_streak: u64,
}

impl HealthMonitor {
    /// A container started at `started`, not yet healthy.
    pub fn new(check: &Healthcheck, started: Instant) -> Self {
        Self::resume(check, started, HealthStatus::Starting)
    }

    /// A container whose health was already `status` (an adopted container: RUNNING with a
    /// check means it was healthy).
    pub fn resume(check: &Healthcheck, started: Instant, status: HealthStatus) -> Self {
        HealthMonitor {
            retries: check.retries.max(1),
            grace_until: started.checked_add(check.start_period),
            status,
            failing_streak: 0,
        }
    }

    pub fn status(&self) -> HealthStatus {
        self.status
    }

    pub fn failing_streak(&self) -> u64 {
        self.failing_streak
    }

    /// Takes the result of a probe that began at `at`; returns the health after it.
    pub fn record(&mut self, result: &ProbeResult, at: Instant) -> HealthStatus {
        match result {
            ProbeResult::Healthy => {
                self.failing_streak = 0;
                self.status = HealthStatus::Healthy;
            }
            ProbeResult::Failed(_) => {
                // Docker: while starting, failures within the start period are forgiven.
                let in_grace = self.status == HealthStatus::Starting
                    && self.grace_until.is_none_or(|until| at < until);
                if !in_grace {
                    self.failing_streak += 1;
                    if self.failing_streak >= self.retries {
                        self.status = HealthStatus::Unhealthy;
                    }
                }
            }
        }
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(test: &[&str], interval_ms: u64, retries: u64) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval_ms,
            retries,
            ..Default::default()
        }
    }

    #[test]
    fn the_service_overrides_the_image_field_by_field() {
        let image = HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval_ms: 5_000,
            timeout_ms: 2_000,
            retries: 7,
            start_period_ms: 1_000,
        };
        let service = config(&[], 500, 0);
        let check = Healthcheck::resolve(Some(&service), Some(&image)).unwrap();
        assert_eq!(
            check,
            Healthcheck {
                argv: vec!["true".into()],
                interval: Duration::from_millis(500),
                timeout: Duration::from_secs(2),
                retries: 7,
                start_period: Duration::from_secs(1),
            }
        );
        let service = config(&["CMD-SHELL", "test -f /ok"], 0, 2);
        let check = Healthcheck::resolve(Some(&service), Some(&image)).unwrap();
        assert_eq!(check.argv, ["/bin/sh", "-c", "test -f /ok"]);
        assert_eq!((check.interval, check.retries), (Duration::from_secs(5), 2));
    }

    #[test]
    fn defaults_and_no_check() {
        let check = Healthcheck::resolve(Some(&config(&["CMD-SHELL", "true"], 0, 0)), None);
        assert_eq!(
            check,
            Some(Healthcheck {
                argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(30),
                retries: 3,
                start_period: Duration::ZERO,
            })
        );
        let image = config(&["CMD", "true"], 0, 0);
        assert!(Healthcheck::resolve(None, Some(&image)).is_some());
        // --no-healthcheck turns the image's off; no test anywhere is no check.
        assert_eq!(
            Healthcheck::resolve(Some(&config(&["NONE"], 0, 0)), Some(&image)),
            None
        );
        assert_eq!(Healthcheck::resolve(Some(&config(&[], 100, 1)), None), None);
        assert_eq!(Healthcheck::resolve(None, None), None);
        assert_eq!(
            Healthcheck::resolve(Some(&config(&["CMD-SHELL", "a", "b"], 0, 0)), None),
            None
        );
    }

    fn check(retries: u64, start_period: Duration) -> Healthcheck {
        Healthcheck {
            argv: vec!["true".into()],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries,
            start_period,
        }
    }

    fn failed() -> ProbeResult {
        ProbeResult::Failed("exit 1".into())
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy() {
        let t0 = Instant::now();
        let mut m = HealthMonitor::new(&check(3, Duration::ZERO), t0);
        assert_eq!(m.status(), HealthStatus::Starting);
        assert_eq!(m.record(&failed(), t0), HealthStatus::Starting);
        assert_eq!(m.record(&ProbeResult::Healthy, t0), HealthStatus::Healthy);
        assert_eq!(m.record(&failed(), t0), HealthStatus::Healthy);
        assert_eq!(m.record(&failed(), t0), HealthStatus::Healthy);
        // A success in between starts the count over.
        assert_eq!(m.record(&ProbeResult::Healthy, t0), HealthStatus::Healthy);
        assert_eq!(m.failing_streak(), 0);
        m.record(&failed(), t0);
        m.record(&failed(), t0);
        assert_eq!(m.record(&failed(), t0), HealthStatus::Unhealthy);
        assert_eq!(m.failing_streak(), 3);
        // Never healthy at all is unhealthy too.
        let mut m = HealthMonitor::new(&check(2, Duration::ZERO), t0);
        m.record(&failed(), t0);
        assert_eq!(m.record(&failed(), t0), HealthStatus::Unhealthy);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_healthy() {
        let t0 = Instant::now();
        let period = Duration::from_secs(10);
        let mut m = HealthMonitor::new(&check(1, period), t0);
        for s in 0..10 {
            let at = t0 + Duration::from_secs(s);
            assert_eq!(m.record(&failed(), at), HealthStatus::Starting, "{s}s");
        }
        assert_eq!(m.failing_streak(), 0);
        assert_eq!(
            m.record(&failed(), t0 + period),
            HealthStatus::Unhealthy,
            "the period is over"
        );
        // Once healthy, the start period forgives nothing.
        let mut m = HealthMonitor::new(&check(1, period), t0);
        m.record(&ProbeResult::Healthy, t0);
        assert_eq!(m.record(&failed(), t0), HealthStatus::Unhealthy);
        // A start period past the clock's end forgives for good.
        let mut m = HealthMonitor::new(&check(1, Duration::MAX), t0);
        assert_eq!(
            m.record(&failed(), t0 + Duration::from_secs(3600)),
            HealthStatus::Starting
        );
        // An adopted healthy container starts healthy.
        let m = HealthMonitor::resume(&check(1, period), t0, HealthStatus::Healthy);
        assert_eq!(m.status(), HealthStatus::Healthy);
    }
}
