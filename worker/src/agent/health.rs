//! The agent's side of a task's healthcheck (swarmkit's dockerexec health wait): a probe every
//! interval through [`Executor::probe`], its result fed to the [`HealthMonitor`], the first
//! healthy result announced. A task with a check is STARTING (health "starting") until then,
//! and RUNNING (healthy) after; [`watch`] returns once the container is unhealthy, and the
//! controller stops it and fails the task, so the restart policy replaces it as Swarm does.

use std::path::{Path, PathBuf};

use shoal_proto::{HealthConfig, HealthStatus};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::executor::Executor;
use crate::health::{HealthMonitor, Healthcheck, ProbeResult};
use crate::logs;

/// Where the image's `HEALTHCHECK` is kept for a task whose check uses it, so that a
/// restarted daemon adopting the container checks it the same way without the image.
fn image_check_path(data_dir: &Path, task_id: &str) -> PathBuf {
    logs::task_dir(data_dir, task_id).join("image-healthcheck.json")
}

/// Records the image's part of a starting task's check (nothing when the image has none).
pub(super) fn record_image_check(data_dir: &Path, task_id: &str, image: Option<&HealthConfig>) {
    let Some(image) = image else {
        return;
    };
    let path = image_check_path(data_dir, task_id);
    let written = serde_json::to_vec(image)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&path, bytes));
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e,
            "cannot record the image's healthcheck; after a daemon restart only the service's applies");
    }
}

/// The image's check recorded by [`record_image_check`], if any.
pub(super) fn recorded_image_check(data_dir: &Path, task_id: &str) -> Option<HealthConfig> {
    let bytes = std::fs::read(image_check_path(data_dir, task_id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A running container's check and what its probes said so far.
pub(super) struct HealthWatch {
    pub(super) check: Healthcheck,
    pub(super) monitor: HealthMonitor,
    /// The container's process, for the statuses that announce a new health.
    pub(super) pid: u32,
}

impl HealthWatch {
    /// A container just started (or adopted before it was ever healthy).
    pub(super) fn starting(check: Healthcheck, pid: u32) -> Self {
        let monitor = HealthMonitor::new(&check, Instant::now());
        HealthWatch {
            check,
            monitor,
            pid,
        }
    }

    /// An adopted container that was already healthy (its task RUNNING).
    pub(super) fn healthy(check: Healthcheck, pid: u32) -> Self {
        let monitor = HealthMonitor::resume(&check, Instant::now(), HealthStatus::Healthy);
        HealthWatch {
            check,
            monitor,
            pid,
        }
    }

    pub(super) fn status(&self) -> HealthStatus {
        self.monitor.status()
    }
}

/// Probes the task's container every interval until it is unhealthy, calling `on_healthy` when
/// it first turns healthy; returns why the last probe failed. Probes that cannot get an answer
/// (containerd away) are no verdict: a restarting containerd does not kill healthy tasks.
pub(super) async fn watch(
    executor: &dyn Executor,
    task_id: &str,
    w: &mut HealthWatch,
    mut on_healthy: impl FnMut(),
) -> String {
    let mut last_failure = String::new();
    loop {
        tokio::time::sleep(w.check.interval).await;
        let at = Instant::now();
        let result = match executor
            .probe(task_id, &w.check.argv, w.check.timeout)
            .await
        {
            Ok(result) => result,
            Err(e) if e.is_unavailable() => {
                warn!(error = %e, "cannot run the healthcheck now; trying again next interval");
                continue;
            }
            Err(e) => ProbeResult::Failed(e.to_string()),
        };
        let before = w.monitor.status();
        let after = w.monitor.record(&result, at);
        if let ProbeResult::Failed(why) = &result {
            debug!(reason = %why, streak = w.monitor.failing_streak(), "healthcheck failed");
            last_failure.clone_from(why);
        }
        if after == before {
            continue;
        }
        match after {
            HealthStatus::Healthy => {
                info!("the task's container is healthy");
                on_healthy();
            }
            HealthStatus::Unhealthy => return last_failure,
            HealthStatus::Starting | HealthStatus::None => {}
        }
    }
}
