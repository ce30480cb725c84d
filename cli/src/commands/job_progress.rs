//! Following a job after `service create` or `service update`, as docker 20.10 does:
//!
//! ```text
//! job progress: 3 out of 10 complete
//! active tasks: 2 out of 2 tasks
//! ```
//!
//! until every completion is done ("job complete"). Unlike docker, the wait ends with an error
//! when a slot or node cannot complete (its task failed repeatedly, or the restart policy will
//! not run it again).

use std::collections::HashMap;

use anyhow::{bail, Result};
use shoal_proto::{restart_policy::Condition, Empty, Service, ServiceSummary, Task, TaskState};

use crate::client::{Client, RpcResult};
use crate::commands::progress::{describe_end, tasks_of, Display, MAX_FAILURES_PER_SLOT, POLL};

/// Why the job cannot complete, from its current iteration's tasks.
pub fn stuck(service: &Service, tasks: &[Task]) -> Option<String> {
    let spec = service.spec.clone().unwrap_or_default();
    let name = spec.name.as_str();
    let iteration = service.job_status.as_ref().map_or(0, |j| j.iteration);
    let restart = spec.restart.unwrap_or_default();
    let mut failures: HashMap<(u64, &str), Vec<&Task>> = HashMap::new();
    for t in tasks
        .iter()
        .filter(|t| t.job_iteration == iteration)
        .filter(|t| matches!(t.state(), TaskState::Failed | TaskState::Rejected))
    {
        let place = if t.slot == 0 {
            (0, t.node_id.as_str())
        } else {
            (t.slot, "")
        };
        failures.entry(place).or_default().push(t);
    }
    let limit = match (restart.condition(), restart.max_attempts) {
        (Condition::None, _) => 1,
        (_, 0) => MAX_FAILURES_PER_SLOT,
        (_, n) => usize::try_from(n).unwrap_or(usize::MAX).saturating_add(1),
    };
    let ((slot, node), failed) = failures.into_iter().find(|(_, f)| f.len() >= limit)?;
    let task = if slot == 0 {
        format!("{name} on node {node}")
    } else {
        format!("{name}.{slot}")
    };
    let last = failed
        .iter()
        .max_by_key(|t| t.meta.as_ref().map_or(0, |m| m.created_at_ms))?;
    Some(format!(
        "task {task} failed {} time(s) and will not be run again; the last one {}",
        failed.len(),
        describe_end(last)
    ))
}

fn lines(s: &ServiceSummary) -> Vec<(String, String)> {
    vec![
        (
            "job".into(),
            format!(
                "job progress: {} out of {} complete",
                s.completed, s.job_total
            ),
        ),
        (
            "active".into(),
            format!("active tasks: {} out of {} tasks", s.running, s.desired),
        ),
    ]
}

/// Polls until the job's current iteration has completed, or cannot.
pub async fn wait(client: &Client, service: &Service, quiet: bool) -> Result<()> {
    let name = service
        .spec
        .as_ref()
        .map_or(service.id.clone(), |s| s.name.clone());
    let mut display = Display::new(quiet);
    let mut control = client.control();
    loop {
        let summary = control
            .list_services(Empty {})
            .await
            .or_daemon_error()?
            .services
            .into_iter()
            .find(|s| s.service.as_ref().is_some_and(|x| x.id == service.id));
        let Some(summary) = summary else {
            bail!("service {name} was removed while its job ran");
        };
        let current = summary.service.clone().unwrap_or_default();
        let tasks = tasks_of(&mut control, &service.id).await?;
        display.show(&lines(&summary));
        if let Some(why) = stuck(&current, &tasks) {
            bail!(
                "job {name} cannot complete: {why}\n\
                 See its tasks with `shoal service ps {name}`."
            );
        }
        let done = summary.job_total > 0
            && summary.completed >= summary.job_total
            && summary.running == 0
            && summary.desired == 0;
        if done {
            display.show(&[("verify".into(), "job complete".into())]);
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!(
                    "Operation continuing in background.\nUse `shoal service ps {name}` to check progress."
                );
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{JobStatus, Meta, RestartPolicy, ServiceSpec, TaskStatus};

    fn job(condition: Condition) -> Service {
        Service {
            id: "s1".into(),
            spec: Some(Box::new(ServiceSpec {
                name: "batch".into(),
                restart: Some(RestartPolicy {
                    condition: condition as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            job_status: Some(JobStatus {
                iteration: 2,
                last_execution_ms: 0,
            }),
            ..Default::default()
        }
    }

    fn failed(id: &str, slot: u64, iteration: u64) -> Task {
        Task {
            id: id.into(),
            slot,
            job_iteration: iteration,
            meta: Some(Meta::default()),
            status: Some(TaskStatus {
                state: TaskState::Failed as i32,
                exit_code: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_job_is_stuck_when_a_slot_will_not_run_again() {
        let on_failure = job(Condition::OnFailure);
        let two = vec![failed("a", 1, 2), failed("b", 1, 2), failed("c", 1, 1)];
        assert_eq!(
            stuck(&on_failure, &two),
            None,
            "old iterations do not count"
        );
        let three = vec![failed("a", 1, 2), failed("b", 1, 2), failed("c", 1, 2)];
        let why = stuck(&on_failure, &three).unwrap();
        assert!(why.contains("batch.1 failed 3 time(s)"), "{why}");
        let once = vec![failed("a", 2, 2)];
        assert!(stuck(&job(Condition::None), &once).is_some());
    }
}
