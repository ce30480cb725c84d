//! One task's lifecycle (swarmkit's controller), run as one tokio task per assigned task:
//! ACCEPTED, PREPARING (the image, [`Executor::prepare`]), STARTING ([`Executor::start`]),
//! RUNNING, then COMPLETE/FAILED on exit or SHUTDOWN when the manager sets the desired state
//! past RUNNING. A task with a healthcheck (the service's over its image's) stays STARTING,
//! health "starting", until its first healthy probe, and is stopped and FAILED ("container
//! unhealthy") once unhealthy; see the `health` module. An exited container is removed at once; its log stays until the task leaves
//! the assignment set (the worker module's cleanup removes it).
//!
//! A task found at start (adoption) is not started again: a live container is watched, one
//! that exited meanwhile is reported. A terminal status is also written to
//! `<task dir>/status.json`, so a task whose container was already removed is never run twice
//! (the `finished` module says which tasks may have one).
//!
//! While PREPARING, side by side with the image, the task's network namespace is built
//! ([`TaskNetworks::attach`]); a task whose networks cannot be attached is rejected like one
//! whose image cannot be pulled, and is never started (nor is a task whose image fails kept
//! attached). The namespace goes with the container.
//!
//! The controller only talks to the [`Executor`] and [`TaskNetworks`] traits and the
//! [`Reporter`], so its unit tests need neither containerd nor netlink.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_proto::{HealthStatus, Task, TaskState, TaskStatus};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::dependencies::Dependencies;
use super::finished::{Finished, STATUS_FILE};
use super::health::{self, HealthWatch};
use super::reporter::Reporter;
use crate::executor::{Executor, ExecutorError, ExitInfo, ObservedState};
use crate::health::Healthcheck;
use crate::image::ResolvedImage;
use crate::logs;
use crate::network::TaskNetworks;

/// Docker's default stop grace period.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn system_time_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What controllers share.
pub(super) struct Ctx {
    pub(super) executor: Arc<dyn Executor>,
    pub(super) network: Arc<dyn TaskNetworks>,
    pub(super) reporter: Arc<Reporter>,
    /// The secrets and configs the dispatcher sent, for the tasks' files.
    pub(super) dependencies: Dependencies,
    /// The tasks whose final status may be on disk.
    finished: Finished,
}

impl Ctx {
    /// Learns from `executor`'s data directory which tasks finished in an earlier run.
    pub(super) fn new(
        executor: Arc<dyn Executor>,
        network: Arc<dyn TaskNetworks>,
        reporter: Arc<Reporter>,
    ) -> Self {
        let finished = Finished::load(executor.data_dir());
        Ctx {
            executor,
            network,
            reporter,
            dependencies: Dependencies::default(),
            finished,
        }
    }

    fn status_path(&self, task_id: &str) -> PathBuf {
        logs::task_dir(self.executor.data_dir(), task_id).join(STATUS_FILE)
    }

    /// A terminal status reported before a daemon restart.
    fn final_status(&self, task_id: &str) -> Option<TaskStatus> {
        if !self.finished.may_have(task_id) {
            return None;
        }
        let bytes = std::fs::read(self.status_path(task_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Reports a terminal status, first writing it down so it survives a restart.
    pub(super) fn report_final(&self, task_id: &str, status: TaskStatus) {
        self.finished.insert(task_id);
        let path = self.status_path(task_id);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, serde_json::to_vec(&status).unwrap_or_default()));
        if let Err(e) = written {
            warn!(task = %task_id, path = %path.display(), error = %e,
                "cannot record the task's final status; a daemon restart may report it again");
        }
        self.reporter.report(task_id, status);
    }

    /// Removes a task's directory: its logs and its final status. A directory that could not
    /// be removed may still hold the status, so the task stays in the finished set.
    pub(super) fn remove_logs(&self, task_id: &str) {
        match self.executor.remove_logs(task_id) {
            Ok(()) => self.finished.forget(task_id),
            Err(e) => warn!(task = %task_id, error = %e, "removing the task's logs failed"),
        }
    }

    /// Removes an exited task's container and snapshot, retrying while containerd is away,
    /// then its network namespace.
    pub(super) async fn remove_container(&self, task_id: &str) {
        let mut backoff = Backoff::new();
        for _ in 0..10 {
            match self.executor.remove(task_id).await {
                Ok(()) => return self.detach_network(task_id).await,
                Err(e) => {
                    warn!(task = %task_id, container = %task_id, error = %e, "removing the container failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

impl Ctx {
    /// Takes the task's network namespace down; a failure is logged (the next start's
    /// `retain` removes what is left).
    async fn detach_network(&self, task_id: &str) {
        if let Err(e) = self.network.detach(task_id).await {
            warn!(task = %task_id, error = %e, "removing the task's network failed");
        }
    }
}

fn status(state: TaskState, message: &str) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        timestamp_ms: now_ms(),
        message: message.to_string(),
        ..Default::default()
    }
}

/// COMPLETE for exit 0, FAILED with Docker's error text otherwise.
fn exit_status(task_id: &str, exit: ExitInfo) -> TaskStatus {
    let mut st = if exit.exit_code == 0 {
        status(TaskState::Complete, "finished")
    } else {
        let mut st = status(TaskState::Failed, "started");
        st.err = format!("task: non-zero exit ({})", exit.exit_code);
        st
    };
    st.exit_code = exit.exit_code;
    st.container_id = task_id.to_string();
    if let Some(t) = exit.exited_at {
        st.timestamp_ms = system_time_ms(t);
    }
    st
}

/// The status of a started container: RUNNING, or STARTING (health "starting") until a task
/// with a healthcheck is first healthy; with its pid.
fn started_status(id: &str, pid: u32, health: Option<HealthStatus>) -> TaskStatus {
    let mut st = match health {
        Some(HealthStatus::Starting) => {
            let mut st = status(TaskState::Starting, "starting");
            st.health = HealthStatus::Starting as i32;
            st
        }
        Some(h) => {
            let mut st = status(TaskState::Running, "started");
            st.health = h as i32;
            st
        }
        None => status(TaskState::Running, "started"),
    };
    st.pid = pid;
    st.container_id = id.to_string();
    st
}

/// The task's healthcheck: the service's over the image's.
fn healthcheck(task: &Task, image: &ResolvedImage) -> Option<Healthcheck> {
    let service = task.spec.as_ref().and_then(|c| c.healthcheck.as_ref());
    Healthcheck::resolve(service, image.healthcheck.as_ref())
}

pub(super) fn stop_grace(task: &Task) -> Duration {
    match task.spec.as_ref().map(|s| s.stop_grace_period_ms) {
        Some(ms) if ms > 0 => Duration::from_millis(ms),
        _ => DEFAULT_STOP_GRACE,
    }
}

/// Why a controller must stop what it is doing.
enum Cancel {
    /// The desired state moved past RUNNING.
    Shutdown(Box<Task>),
    /// The task left the assignment set.
    Removed,
}

fn cancel_of(current: &Option<Task>) -> Option<Cancel> {
    match current {
        None => Some(Cancel::Removed),
        Some(t) if t.desired() > TaskState::Running => Some(Cancel::Shutdown(Box::new(t.clone()))),
        Some(_) => None,
    }
}

/// Resolves once the task is to be shut down or is removed. A dropped sender means the agent
/// is stopping, which must not touch the containers: that never resolves.
async fn cancelled(rx: &mut watch::Receiver<Option<Task>>) -> Cancel {
    loop {
        if let Some(c) = cancel_of(&rx.borrow_and_update()) {
            return c;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One task's lifecycle; see the module documentation.
pub(super) async fn controller(
    ctx: Arc<Ctx>,
    mut rx: watch::Receiver<Option<Task>>,
    adopted: Option<ObservedState>,
) {
    let Some(task) = rx.borrow().clone() else {
        return;
    };
    let id = task.id.clone();
    let r = &ctx.reporter;

    if let Some(st) = ctx.final_status(&id) {
        // Already finished before a restart: say so again, never run it twice.
        debug!("task finished before the daemon restarted");
        r.report(&id, st);
        if adopted.is_some() {
            ctx.remove_container(&id).await;
        }
        return;
    }

    match adopted {
        Some(ObservedState::Running { pid }) => {
            info!(pid, "adopted a running container");
            // Its namespace is still wired: attaching again finds it through the container
            // and registers its addresses and DNS client anew.
            if let Err(e) = ctx.network.attach(&task, Some(pid)).await {
                warn!(error = %e, "re-attaching the adopted task's network failed");
            }
            // The image's part of the check, as recorded when the container started.
            let image_check = health::recorded_image_check(ctx.executor.data_dir(), &id);
            let service_check = task.spec.as_ref().and_then(|c| c.healthcheck.as_ref());
            let check = Healthcheck::resolve(service_check, image_check.as_ref());
            // RUNNING with a check means it was healthy; STARTING means not yet.
            let health = check.map(|c| match task.state() {
                TaskState::Running => HealthWatch::healthy(c, pid),
                _ => HealthWatch::starting(c, pid),
            });
            r.report(
                &id,
                started_status(&id, pid, health.as_ref().map(HealthWatch::status)),
            );
            return supervise(&ctx, &mut rx, &task, health).await;
        }
        Some(ObservedState::Exited(exit)) => {
            info!(
                exit_code = exit.exit_code,
                "adopted a container that exited while the daemon was down"
            );
            ctx.report_final(&id, exit_status(&id, exit));
            ctx.remove_container(&id).await;
            return;
        }
        Some(ObservedState::Created) => {
            // Created but never started: the daemon died mid-start. Start over cleanly.
            ctx.remove_container(&id).await;
        }
        None => {}
    }

    if let Some(c) = cancel_of(&rx.borrow()) {
        if let Cancel::Shutdown(_) = c {
            ctx.report_final(&id, status(TaskState::Shutdown, "shutdown"));
        }
        return;
    }
    if task.state() >= TaskState::Running {
        let mut st = status(TaskState::Failed, "started");
        st.err = "the task's container is gone: containerd no longer has it (was the node \
                  restarted?)"
            .into();
        ctx.report_final(&id, st);
        return;
    }

    r.report(&id, status(TaskState::Accepted, "accepted"));
    r.report(&id, status(TaskState::Preparing, "preparing"));
    // The image and the network do not depend on each other: prepared side by side, a start
    // waits for the slower of the two rather than for both in turn.
    let prepared = tokio::select! {
        res = async { tokio::join!(ctx.executor.prepare(&task), ctx.network.attach(&task, None)) } => res,
        c = cancelled(&mut rx) => {
            ctx.detach_network(&id).await;
            if let Cancel::Shutdown(_) = c {
                ctx.report_final(&id, status(TaskState::Shutdown, "shutdown"));
            }
            return;
        }
    };
    let (image, net) = match prepared {
        (Ok(image), Ok(net)) => (image, net),
        (Err(e), net) => {
            warn!(error = %e, "preparing the task failed");
            if net.is_ok() {
                ctx.detach_network(&id).await;
            }
            let mut st = status(TaskState::Rejected, "preparing");
            st.err = e.to_string();
            ctx.report_final(&id, st);
            return;
        }
        (Ok(_), Err(e)) => {
            warn!(error = %e, "attaching the task's networks failed");
            let mut st = status(TaskState::Rejected, "preparing");
            st.err = format!("attaching the task's networks: {e}");
            ctx.report_final(&id, st);
            return;
        }
    };
    let cancel = cancel_of(&rx.borrow());
    if let Some(c) = cancel {
        ctx.detach_network(&id).await;
        if let Cancel::Shutdown(_) = c {
            ctx.report_final(&id, status(TaskState::Shutdown, "shutdown"));
        }
        return;
    }

    let files = match ctx.dependencies.files_of(&task) {
        Ok(files) => files,
        Err(e) => {
            warn!(error = %e, "the task's secrets or configs are missing");
            let mut st = status(TaskState::Rejected, "preparing");
            st.err = e.to_string();
            ctx.report_final(&id, st);
            ctx.detach_network(&id).await;
            return;
        }
    };
    r.report(&id, status(TaskState::Starting, "starting"));
    let check = healthcheck(&task, &image);
    let health = match ctx.executor.start(&task, &image, &net, &files).await {
        Ok(pid) => {
            if check.is_some() {
                let image_check = image.healthcheck.as_ref();
                health::record_image_check(ctx.executor.data_dir(), &id, image_check);
            }
            let health = check.map(|c| HealthWatch::starting(c, pid));
            r.report(
                &id,
                started_status(&id, pid, health.as_ref().map(HealthWatch::status)),
            );
            health
        }
        Err(e) => {
            warn!(error = %e, "starting the task failed");
            let mut st = status(TaskState::Failed, "starting");
            st.err = e.to_string();
            st.container_id = id.clone();
            ctx.report_final(&id, st);
            ctx.detach_network(&id).await;
            return;
        }
    };
    supervise(&ctx, &mut rx, &task, health).await
}

/// Watches a running task until it exits, is shut down or turns unhealthy, then reports and
/// removes it.
async fn supervise(
    ctx: &Ctx,
    rx: &mut watch::Receiver<Option<Task>>,
    task: &Task,
    health: Option<HealthWatch>,
) {
    let id = task.id.as_str();
    let mut backoff = Backoff::new();
    let unhealthy = async {
        let Some(mut w) = health else {
            return std::future::pending().await;
        };
        let pid = w.pid;
        health::watch(ctx.executor.as_ref(), id, &mut w, || {
            let st = started_status(id, pid, Some(HealthStatus::Healthy));
            ctx.reporter.report(id, st);
        })
        .await
    };
    tokio::pin!(unhealthy);
    loop {
        tokio::select! {
            why = &mut unhealthy => {
                warn!(reason = %why, "the task's container is unhealthy; stopping it");
                let exit = match ctx.executor.stop(id, None, stop_grace(task)).await {
                    Ok(exit) => exit,
                    Err(e) => {
                        warn!(error = %e, "stopping the unhealthy task failed");
                        None
                    }
                };
                let mut st = status(TaskState::Failed, "started");
                st.err = format!("container unhealthy: {why}");
                st.health = HealthStatus::Unhealthy as i32;
                st.container_id = id.to_string();
                if let Some(exit) = exit {
                    st.exit_code = exit.exit_code;
                }
                ctx.report_final(id, st);
                ctx.remove_container(id).await;
                return;
            }
            res = ctx.executor.wait(id) => match res {
                Ok(exit) => {
                    info!(exit_code = exit.exit_code, "task exited");
                    ctx.report_final(id, exit_status(id, exit));
                    ctx.remove_container(id).await;
                    return;
                }
                Err(ExecutorError::NotFound { .. }) => {
                    let mut st = status(TaskState::Failed, "started");
                    st.err = "the task's container disappeared from containerd".into();
                    st.container_id = id.to_string();
                    ctx.report_final(id, st);
                    ctx.remove_container(id).await;
                    return;
                }
                Err(e) => {
                    // containerd restarting, most likely: the container itself lives on.
                    warn!(error = %e, "waiting for the task failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            },
            c = cancelled(rx) => {
                let grace = match &c {
                    Cancel::Shutdown(t) => stop_grace(t),
                    Cancel::Removed => stop_grace(task),
                };
                info!(?grace, "stopping the task");
                let exit = match ctx.executor.stop(id, None, grace).await {
                    Ok(exit) => exit,
                    Err(e) => {
                        warn!(error = %e, "stopping the task failed");
                        None
                    }
                };
                if let Cancel::Shutdown(_) = c {
                    let mut st = status(TaskState::Shutdown, "shutdown");
                    st.container_id = id.to_string();
                    if let Some(exit) = exit {
                        st.exit_code = exit.exit_code;
                    }
                    ctx.report_final(id, st);
                    ctx.remove_container(id).await;
                }
                // Removed: the cleanup that follows the controller removes everything.
                return;
            }
        }
    }
}
