//! What a job service (`--mode replicated-job|global-job`) may and may not have: its tasks run
//! to completion, so a policy that restarts a task that succeeded, or an autoscaler that keeps
//! a count running, makes no sense; `--max-concurrent` belongs to replicated jobs alone.

use crate::restart_policy::Condition;
use crate::{ServiceMode, ServiceSpec};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error(
        "--restart-condition any cannot be used with jobs: a job's task that completes is not \
         run again; use on-failure (the default for jobs) or none"
    )]
    RestartAny,
    #[error("--autoscale-* cannot be used with jobs: a job runs a fixed number of completions")]
    Autoscale,
    #[error("--max-concurrent can only be used with --mode replicated-job")]
    MaxConcurrentWithoutJob,
}

pub fn is_job(mode: ServiceMode) -> bool {
    matches!(mode, ServiceMode::ReplicatedJob | ServiceMode::GlobalJob)
}

pub fn validate(spec: &ServiceSpec) -> Result<(), JobError> {
    let mode = spec.mode();
    if spec.max_concurrent > 0 && mode != ServiceMode::ReplicatedJob {
        return Err(JobError::MaxConcurrentWithoutJob);
    }
    if !is_job(mode) {
        return Ok(());
    }
    if spec.autoscale.is_some() {
        return Err(JobError::Autoscale);
    }
    let condition = spec
        .restart
        .as_ref()
        .map_or(Condition::OnFailure, |r| r.condition());
    if condition == Condition::Any {
        return Err(JobError::RestartAny);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AutoscalePolicy, RestartPolicy};

    fn job(mode: ServiceMode, condition: Condition) -> ServiceSpec {
        ServiceSpec {
            mode: mode as i32,
            restart: Some(RestartPolicy {
                condition: condition as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn jobs_refuse_what_would_keep_them_running() {
        assert!(validate(&job(ServiceMode::ReplicatedJob, Condition::OnFailure)).is_ok());
        assert!(validate(&job(ServiceMode::GlobalJob, Condition::None)).is_ok());
        assert_eq!(
            validate(&job(ServiceMode::GlobalJob, Condition::Any)),
            Err(JobError::RestartAny)
        );
        let mut scaled = job(ServiceMode::ReplicatedJob, Condition::OnFailure);
        scaled.autoscale = Some(AutoscalePolicy::default());
        assert_eq!(validate(&scaled), Err(JobError::Autoscale));
        let mut service = job(ServiceMode::Replicated, Condition::Any);
        service.max_concurrent = 2;
        assert_eq!(validate(&service), Err(JobError::MaxConcurrentWithoutJob));
        assert!(validate(&job(ServiceMode::Replicated, Condition::Any)).is_ok());
    }
}
