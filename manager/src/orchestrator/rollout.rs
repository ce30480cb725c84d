//! How a rolling update (or rollback) moves on: docker's `--update-*` and `--rollback-*`
//! policies and its UpdateStatus, as swarmkit's updater applies them, but planned from the
//! store each round like the rest of the orchestrator (no updater goroutine to lose when the
//! leader changes).
//!
//! * **Pacing**: at most `parallelism` slots (or nodes) are being replaced at once (0: all),
//!   and after a replaced task runs, the next one waits `delay`.
//! * **Order**: stop-first (the old task stops, then the slot gets its new task) or
//!   start-first (the new task starts beside the old one, which stops once the new one runs).
//! * **Failures**: a task of the new spec, created since the update started, that fails, is
//!   rejected or exits, before or within `monitor` of starting to run, counts. Once the
//!   failures exceed `max_failure_ratio` of the service's tasks the failure action applies:
//!   `pause` (status PAUSED: nothing more is replaced until the next `service update`),
//!   `continue`, or `rollback` (the spec goes back to the previous one and the rollback
//!   policy applies; a failing rollback pauses, as swarmkit never rolls back a rollback).
//! * **Completion**: once every slot runs the current spec and `monitor` has passed since the
//!   last replaced task started, the status becomes COMPLETED (ROLLBACK_COMPLETED).
//!
//! The status is written by the control API when a change starts an update (UPDATING, or
//! ROLLBACK_STARTED for `service rollback`) and moved on here; a service whose tasks are
//! outdated without an update in progress (older stores) gets one started here.

use shoal_proto::{
    update_config::{FailureAction, Order},
    update_status::State,
    Service, Task, TaskState, UpdateConfig, UpdateStatus,
};

use super::update::outdated;
use super::Plan;

/// Docker's default `--update-monitor`.
pub const DEFAULT_MONITOR_MS: u64 = 5_000;

/// What the orchestrator writes about a service's update, apart from its tasks.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusChange {
    /// Only the status changes (applied to `version` only).
    Set {
        service_id: String,
        version: u64,
        status: UpdateStatus,
    },
    /// The update failed and rolls back: the spec becomes the previous one.
    Rollback {
        service_id: String,
        version: u64,
        status: UpdateStatus,
    },
}

/// One service's rollout in one planning round.
pub(crate) struct Rollout {
    config: UpdateConfig,
    /// Replacing tasks is allowed this round (not paused, no failure action taken).
    active: bool,
    /// When the running update (or rollback) began: failures of older tasks do not count.
    started_at_ms: i64,
    /// The latest time a task of this update started running (0: none yet).
    last_started_ms: i64,
    rollback: bool,
    now_ms: i64,
}

fn state_of(service: &Service) -> State {
    service
        .update_status
        .as_ref()
        .map_or(State::Unknown, |s| s.state())
}

/// The policy in force: the rollback policy while rolling back, else the update policy.
pub fn config_of(service: &Service) -> UpdateConfig {
    let spec = service.spec.as_ref();
    let rolling_back = matches!(
        state_of(service),
        State::RollbackStarted | State::RollbackPaused
    );
    let config = if rolling_back {
        spec.and_then(|s| s.rollback)
    } else {
        spec.and_then(|s| s.update)
    };
    config.unwrap_or(UpdateConfig {
        parallelism: 1,
        ..Default::default()
    })
}

fn monitor_ms(config: &UpdateConfig) -> i64 {
    let ms = if config.monitor_ms == 0 {
        DEFAULT_MONITOR_MS
    } else {
        config.monitor_ms
    };
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn status_ms(t: &Task) -> i64 {
    t.status.as_ref().map_or(0, |s| s.timestamp_ms)
}

fn created_ms(t: &Task) -> i64 {
    t.meta.as_ref().map_or(0, |m| m.created_at_ms)
}

/// A task that ended by itself: failed, rejected, or exited (a service's task is meant to run).
fn ended_early(t: &Task) -> bool {
    matches!(
        t.state(),
        TaskState::Failed | TaskState::Rejected | TaskState::Complete
    )
}

impl Rollout {
    /// Reads where the service's update stands from its tasks (`total`: the slots or nodes it
    /// runs on), applies the failure action when failures exceed the policy's ratio, and says
    /// whether tasks may be replaced this round. `any_outdated`: a live task runs an older spec.
    pub(crate) fn begin(
        service: &Service,
        tasks: &[&Task],
        total: usize,
        any_outdated: bool,
        now_ms: i64,
        plan: &mut Plan,
    ) -> Rollout {
        let config = config_of(service);
        let state = state_of(service);
        let version = service.meta.as_ref().map_or(0, |m| m.version);
        let mut rollout = Rollout {
            config,
            active: true,
            started_at_ms: 0,
            last_started_ms: 0,
            rollback: matches!(state, State::RollbackStarted | State::RollbackPaused),
            now_ms,
        };
        match state {
            State::Paused | State::RollbackPaused => {
                rollout.active = false;
                return rollout;
            }
            State::Updating | State::RollbackStarted => {
                rollout.started_at_ms = service
                    .update_status
                    .as_ref()
                    .map_or(0, |s| s.started_at_ms);
            }
            State::Unknown | State::Completed | State::RollbackCompleted => {
                if !any_outdated {
                    // Nothing to roll out: only restarts and scaling happen.
                    return rollout;
                }
                // Tasks are outdated with no update under way (a store from before update
                // statuses, or a change the control API did not flag): one starts now. With
                // no status at all, the last spec change is when it began.
                rollout.started_at_ms = match state {
                    State::Unknown => service.meta.as_ref().map_or(0, |m| m.updated_at_ms),
                    _ => now_ms,
                };
                plan.status_changes.push(StatusChange::Set {
                    service_id: service.id.clone(),
                    version,
                    status: UpdateStatus {
                        state: State::Updating as i32,
                        started_at_ms: rollout.started_at_ms,
                        completed_at_ms: 0,
                        message: "update in progress".into(),
                    },
                });
            }
        }
        let monitor = monitor_ms(&rollout.config);
        let mut failed: Vec<&Task> = Vec::new();
        for t in tasks
            .iter()
            .copied()
            .filter(|t| created_ms(t) >= rollout.started_at_ms && !outdated(service, t))
        {
            if t.started_at_ms > 0 {
                rollout.last_started_ms = rollout.last_started_ms.max(t.started_at_ms);
            }
            let within_monitor =
                t.started_at_ms == 0 || status_ms(t) <= t.started_at_ms.saturating_add(monitor);
            if ended_early(t) && within_monitor {
                failed.push(t);
            }
        }
        let ratio = failed.len() as f64 / total.max(1) as f64;
        let Some(first) = failed.first() else {
            return rollout;
        };
        if ratio <= f64::from(rollout.config.max_failure_ratio) {
            return rollout;
        }
        let what = if rollout.rollback {
            "rollback"
        } else {
            "update"
        };
        let cause = format!("due to failure or early termination of task {}", first.id);
        let status = |state: State, message: String| UpdateStatus {
            state: state as i32,
            started_at_ms: rollout.started_at_ms,
            completed_at_ms: 0,
            message,
        };
        let action = rollout.config.failure_action();
        let change = match action {
            FailureAction::Continue => return rollout,
            FailureAction::Rollback if !rollout.rollback && service.previous_spec.is_some() => {
                StatusChange::Rollback {
                    service_id: service.id.clone(),
                    version,
                    status: UpdateStatus {
                        started_at_ms: now_ms,
                        ..status(
                            State::RollbackStarted,
                            format!("update rolled back {cause}"),
                        )
                    },
                }
            }
            _ => {
                let paused = if rollout.rollback {
                    State::RollbackPaused
                } else {
                    State::Paused
                };
                let mut message = format!("{what} paused {cause}");
                if action == FailureAction::Rollback && !rollout.rollback {
                    message.push_str(" (no previous spec to roll back to)");
                }
                StatusChange::Set {
                    service_id: service.id.clone(),
                    version,
                    status: status(paused, message),
                }
            }
        };
        plan.status_changes.push(change);
        rollout.active = false;
        rollout
    }

    pub(crate) fn start_first(&self) -> bool {
        self.config.order() == Order::StartFirst
    }

    /// How many more slots (or nodes) may start being replaced now, with `in_progress` of them
    /// being replaced already; waits out the policy's delay after the last one started.
    pub(crate) fn budget(&self, in_progress: usize, plan: &mut Plan) -> usize {
        if !self.active {
            return 0;
        }
        let delay = i64::try_from(self.config.delay_ms).unwrap_or(i64::MAX);
        if delay > 0 && self.last_started_ms > 0 {
            let next = self.last_started_ms.saturating_add(delay);
            if self.now_ms < next {
                plan.wake_at(next);
                return 0;
            }
        }
        match self.config.parallelism {
            0 => usize::MAX,
            n => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .saturating_sub(in_progress),
        }
    }

    /// Ends the update once `settled` (every slot or node runs the current spec, nothing is
    /// being replaced) and the monitor period after the last start has passed.
    pub(crate) fn finish(&self, service: &Service, settled: bool, plan: &mut Plan) {
        let state = state_of(service);
        if !self.active || !settled || !matches!(state, State::Updating | State::RollbackStarted) {
            return;
        }
        let done_at = self
            .last_started_ms
            .saturating_add(monitor_ms(&self.config));
        if self.last_started_ms > 0 && self.now_ms < done_at {
            plan.wake_at(done_at);
            return;
        }
        let (state, message) = if self.rollback {
            (State::RollbackCompleted, "rollback completed")
        } else {
            (State::Completed, "update completed")
        };
        plan.status_changes.push(StatusChange::Set {
            service_id: service.id.clone(),
            version: service.meta.as_ref().map_or(0, |m| m.version),
            status: UpdateStatus {
                state: state as i32,
                started_at_ms: self.started_at_ms,
                completed_at_ms: self.now_ms,
                message: message.into(),
            },
        });
    }
}

#[cfg(test)]
mod tests;
