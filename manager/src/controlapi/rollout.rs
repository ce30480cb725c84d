//! What `service update` and `service rollback` mean for the service's update status: a change
//! that replaces tasks starts an update (UPDATING), a rollback starts one back to the previous
//! spec (ROLLBACK_STARTED, "manually requested rollback"), and any update resumes a paused
//! one. The orchestrator moves it on from there (`orchestrator::rollout`). A job has no rolling
//! update: its create and every update start a new iteration instead.

use shoal_proto::validate::jobs::is_job;
use shoal_proto::{update_status::State, JobStatus, Service, ServiceSpec, UpdateStatus};
use tonic::Status;

/// The spec `service rollback` goes back to.
pub(super) fn previous_spec(service: &Service) -> Result<Box<ServiceSpec>, Status> {
    let name = service
        .spec
        .as_ref()
        .map_or(service.id.as_str(), |s| &s.name);
    service.previous_spec.clone().ok_or_else(|| {
        Status::failed_precondition(format!(
            "service {name} does not have a previous spec to roll back to: it has not been \
             updated since it was created (or it was rolled back automatically already)"
        ))
    })
}

/// Whether tasks made from `old` no longer match `new` (what the orchestrator replaces).
fn replaces_tasks(old: Option<&ServiceSpec>, new: &ServiceSpec) -> bool {
    old.is_none_or(|old| {
        old.container != new.container
            || old.networks != new.networks
            || old.endpoint != new.endpoint
    })
}

/// The status an update of `service` to `new` starts, if it starts one.
pub(super) fn status_for_update(
    service: &Service,
    new: &ServiceSpec,
    rollback: bool,
    now_ms: i64,
) -> Option<UpdateStatus> {
    let paused = service
        .update_status
        .as_ref()
        .is_some_and(|s| matches!(s.state(), State::Paused | State::RollbackPaused));
    let (state, message) = if rollback {
        (State::RollbackStarted, "manually requested rollback")
    } else if paused || replaces_tasks(service.spec.as_deref(), new) {
        (State::Updating, "update in progress")
    } else {
        return None;
    };
    Some(UpdateStatus {
        state: state as i32,
        started_at_ms: now_ms,
        completed_at_ms: 0,
        message: message.into(),
    })
}

/// The job status a create (`current` None) or update of a job starts: the next iteration.
pub(super) fn next_job_iteration(
    current: Option<&JobStatus>,
    spec: &ServiceSpec,
    now_ms: i64,
) -> Option<JobStatus> {
    is_job(spec.mode()).then(|| JobStatus {
        iteration: current.map_or(0, |j| j.iteration) + 1,
        last_execution_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::ContainerSpec;

    fn spec(image: &str, replicas: u64) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            replicas,
            container: Some(ContainerSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_status(state: Option<State>) -> Service {
        Service {
            id: "s1".into(),
            spec: Some(Box::new(spec("a", 1))),
            previous_spec: None,
            update_status: state.map(|s| UpdateStatus {
                state: s as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_update_that_replaces_tasks_starts_one_scaling_does_not() {
        let s = with_status(None);
        let started = status_for_update(&s, &spec("b", 1), false, 7).unwrap();
        assert_eq!(started.state(), State::Updating);
        assert_eq!(started.started_at_ms, 7);
        assert_eq!(status_for_update(&s, &spec("a", 3), false, 7), None);
        let rollback = status_for_update(&s, &spec("a", 1), true, 7).unwrap();
        assert_eq!(rollback.state(), State::RollbackStarted);
        assert_eq!(rollback.message, "manually requested rollback");
    }

    #[test]
    fn any_update_resumes_a_paused_one() {
        for paused in [State::Paused, State::RollbackPaused] {
            let s = with_status(Some(paused));
            let resumed = status_for_update(&s, &spec("a", 1), false, 9).unwrap();
            assert_eq!(resumed.state(), State::Updating);
        }
        let done = with_status(Some(State::Completed));
        assert_eq!(status_for_update(&done, &spec("a", 2), false, 9), None);
    }

    #[test]
    fn no_previous_spec_no_rollback() {
        let err = previous_spec(&with_status(None)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("does not have a previous spec"));
    }
}
