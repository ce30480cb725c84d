//! The autoscaler: a writer role (leader only, started by [`crate::roles`]) that sets the
//! replica count of services with an autoscale policy (`ServiceSpec.autoscale`).
//!
//! Every [`EVALUATION_PERIOD`] it looks at each autoscaled service:
//!
//! 1. **Observe** ([`observe`], [`prometheus`]): the mean CPU or memory utilisation of the
//!    service's running tasks (from the usage workers report to the leader), or the value of a
//!    PromQL query on the swarm's Prometheus.
//! 2. **Decide** ([`decide`]): HPA's rule `ceil(current × observed / target)` with a tolerance,
//!    kept within the policy's bounds and stabilized over the scale-up and scale-down windows.
//! 3. **Act**: a changed count is an `UpdateService` through Raft, with the version it read
//!    (a concurrent user update wins; the autoscaler looks again next round), and the decision
//!    is recorded in the service's `autoscale_status` (the last [`MAX_DECISIONS`]).
//!
//! When the metric cannot be read (Prometheus unreachable, a query Prometheus refuses, no usage
//! reported for a while) the replica count is **held** and `autoscale_status.message` says why
//! (`service inspect` shows it); the message is written when it changes and cleared once the
//! metric reads again, so a lasting outage costs one log entry, not one per round. The count
//! never leaves `min..=max`, so it is never 0.
//!
//! **Leader change.** The stabilization windows live in the leader's memory. A manager that
//! becomes leader starts each service's window with its current count (see
//! [`decide::Stabilizer::seeded`]): it does not shrink a service until a full scale-down window
//! has passed, and so resumes without a burst; it grows one as soon as the metric says so.

pub mod decide;
pub mod observe;
pub mod prometheus;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::{
    store_action::Action, AutoscaleDecision, AutoscaleStatus, Service, StoreAction, Task,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::ids::now_ms;
use crate::store::Store;
use crate::usage::UsageStore;
use decide::Stabilizer;
use observe::{Basis, Resource};
use policy::{Policy, Target};
use prometheus::Prometheus;
/// Policies and their checks are the shared spec validation's (the CLI runs them too); the
/// old path stays for the autoscaler's modules.
pub use shoal_proto::validate::autoscale as policy;
pub use stats::{AutoscalerStats, Direction};

/// How often every policy is evaluated (HPA's default sync period is 15 s; usage reports come
/// every few seconds, so a shorter period reacts sooner without deciding on stale data).
pub const EVALUATION_PERIOD: Duration = Duration::from_secs(5);
/// Decisions kept in a service's `autoscale_status`.
pub const MAX_DECISIONS: usize = 10;
/// How long a CPU or memory policy may see no usage at all before it says so: a new task needs
/// two reports before it has a CPU rate.
pub const NO_USAGE_GRACE_MS: i64 = 30_000;

/// What was observed for one service this round.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Per-slot utilisation (percent), and what it is relative to.
    Readings {
        readings: Vec<Option<f64>>,
        basis: Option<Basis>,
    },
    /// The query's value.
    Value(f64),
    /// The metric could not be read, and why.
    Failed(String),
}

/// What to do with one service.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Set the replica count, recording the decision.
    Scale(AutoscaleDecision),
    /// Keep the count; the message says why the autoscaler cannot decide, if that is the case.
    Hold(Option<String>),
}

fn duration_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn describe(target: &Target, observed: f64, measured: usize, basis: Option<Basis>) -> String {
    match target {
        Target::Cpu(t) | Target::Memory(t) => {
            let what = if matches!(target, Target::Cpu(_)) {
                "CPU"
            } else {
                "memory"
            };
            let of = basis.map_or(String::new(), |b| format!(" of {}", b.describe()));
            let tasks = if measured == 1 { "task" } else { "tasks" };
            format!("{what} {observed:.1}%{of} (mean of {measured} {tasks}), target {t}%")
        }
        Target::Query { target, .. } => format!("query value {observed}, target {target}"),
    }
}

/// One service's decision for this round: a pure function of its count, policy, observation,
/// stabilization memory and the time. `first_seen_ms` is when this leader first saw the
/// service's policy (for the no-usage grace).
pub fn evaluate(
    current: u64,
    policy: &Policy,
    observation: &Observation,
    stabilizer: &mut Stabilizer,
    first_seen_ms: i64,
    now_ms: i64,
) -> Outcome {
    let scale = |to: u64, observed: f64, reason: String| {
        Outcome::Scale(AutoscaleDecision {
            at_ms: now_ms,
            from_replicas: current,
            to_replicas: to,
            observed,
            reason,
        })
    };
    // The bounds apply at once, whatever the metric says (a policy whose bounds changed).
    if current < policy.min {
        return scale(
            policy.min,
            0.0,
            format!("{current} replicas is below the minimum {}", policy.min),
        );
    }
    if current > policy.max {
        return scale(
            policy.max,
            0.0,
            format!("{current} replicas is above the maximum {}", policy.max),
        );
    }
    let target = policy.target.value();
    let (recommendation, basis) = match observation {
        Observation::Failed(why) => {
            return Outcome::Hold(Some(format!("{why}; holding {current} replicas")))
        }
        Observation::Value(v) => (decide::value(current, *v, target, policy.tolerance), None),
        Observation::Readings { readings, basis } => {
            match decide::utilisation(current, readings, target, policy.tolerance) {
                Some(r) => (r, *basis),
                None if now_ms - first_seen_ms >= NO_USAGE_GRACE_MS => {
                    return Outcome::Hold(Some(format!(
                        "no resource usage reported for the service's running tasks; holding \
                         {current} replicas"
                    )))
                }
                None => return Outcome::Hold(None),
            }
        }
    };
    let bounded = policy.clamp(recommendation.replicas);
    let next = stabilizer.stabilize(
        now_ms,
        current,
        bounded,
        policy.up_window_ms,
        policy.down_window_ms,
    );
    if next == current {
        return Outcome::Hold(None);
    }
    let mut reason = describe(
        &policy.target,
        recommendation.observed,
        recommendation.measured,
        basis,
    );
    if bounded != recommendation.replicas {
        let bound = if bounded == policy.max {
            format!("capped at the maximum {}", policy.max)
        } else {
            format!("kept at the minimum {}", policy.min)
        };
        reason.push_str(&format!(
            "; {} replicas recommended, {bound}",
            recommendation.replicas
        ));
    }
    if next != bounded {
        let (which, window) = if next > current {
            ("lowest", policy.up_window_ms)
        } else {
            ("highest", policy.down_window_ms)
        };
        reason.push_str(&format!(
            "; {which} recommendation of the last {}",
            duration_text(window)
        ));
    }
    scale(next, recommendation.observed, reason)
}

/// The service with `outcome` applied, or `None` when nothing needs writing.
pub fn apply(service: &Service, outcome: &Outcome, now_ms: i64) -> Option<Service> {
    let mut updated = service.clone();
    let status = updated
        .autoscale_status
        .get_or_insert_with(AutoscaleStatus::default);
    match outcome {
        Outcome::Scale(decision) => {
            let spec = updated.spec.as_mut()?;
            spec.replicas = decision.to_replicas;
            status.decisions.push(decision.clone());
            let excess = status.decisions.len().saturating_sub(MAX_DECISIONS);
            status.decisions.drain(..excess);
            status.message.clear();
            status.message_at_ms = 0;
        }
        Outcome::Hold(message) => {
            let message = message.clone().unwrap_or_default();
            if status.message == message {
                return None;
            }
            status.message = message;
            status.message_at_ms = if status.message.is_empty() { 0 } else { now_ms };
        }
    }
    if let Some(meta) = updated.meta.as_mut() {
        // The version stays the one read: the store refuses the update if it changed since.
        meta.updated_at_ms = now_ms;
    }
    Some(updated)
}

/// Why a policy cannot be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Query(#[from] prometheus::QueryError),
}

/// The check a query policy gets when it is created or its query changes: the swarm has a
/// Prometheus, it answers, and it accepts the query. (An unchanged query is not checked again,
/// so a service can be updated while Prometheus is down.)
pub async fn check_query_policy(
    prometheus_url: &str,
    old: Option<&shoal_proto::ServiceSpec>,
    new: &shoal_proto::ServiceSpec,
) -> Result<(), CheckError> {
    let Some(Target::Query { query, .. }) = policy::of_spec(new).map(|p| p.target) else {
        return Ok(());
    };
    let old_query = old.and_then(policy::of_spec).and_then(|p| match p.target {
        Target::Query { query, .. } => Some(query),
        _ => None,
    });
    if old_query.as_deref() == Some(query.as_str()) {
        return Ok(());
    }
    if prometheus_url.is_empty() {
        return Err(policy::PolicyError::NoPrometheus.into());
    }
    Prometheus::new()?
        .check_query(prometheus_url, &query)
        .await?;
    Ok(())
}

/// What the autoscaler remembers of a service while this manager leads.
struct Memory {
    stabilizer: Stabilizer,
    first_seen_ms: i64,
}

/// An autoscaled service as read this round.
struct Candidate {
    service: Service,
    policy: Policy,
    tasks: Vec<Task>,
}

/// Runs until `shutdown` flips; only the leader runs it.
pub async fn run(
    store: Store,
    usage: UsageStore,
    stats: Arc<AutoscalerStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let prometheus = match Prometheus::new() {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(error = %e, "autoscaler: no HTTP client; query policies will hold");
            None
        }
    };
    let mut memory: HashMap<String, Memory> = HashMap::new();
    let mut tick = tokio::time::interval(EVALUATION_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        round(&store, &usage, prometheus.as_ref(), &stats, &mut memory).await;
    }
}

async fn round(
    store: &Store,
    usage: &UsageStore,
    prometheus: Option<&Prometheus>,
    stats: &AutoscalerStats,
    memory: &mut HashMap<String, Memory>,
) {
    let (candidates, prometheus_url) = store.view(|st| {
        let candidates: Vec<Candidate> = st
            .services
            .values()
            .filter_map(|s| {
                let spec = s.spec.as_ref()?;
                if spec.mode() != shoal_proto::ServiceMode::Replicated {
                    return None;
                }
                Some(Candidate {
                    policy: policy::of_spec(spec)?,
                    tasks: st.tasks_of_service(&s.id).cloned().collect(),
                    service: s.clone(),
                })
            })
            .collect();
        let url = st
            .cluster
            .as_ref()
            .map(|c| c.prometheus_url.clone())
            .unwrap_or_default();
        (candidates, url)
    });
    memory.retain(|id, _| candidates.iter().any(|c| &c.service.id == id));
    let names: Vec<String> = candidates.iter().map(|c| name(&c.service)).collect();
    stats.retain_services(|s| names.iter().any(|n| n == s));
    if candidates.is_empty() {
        return;
    }
    stats.evaluated();
    let all_usage = usage.all();
    let observations = futures::future::join_all(
        candidates
            .iter()
            .map(|c| observe_one(c, &all_usage, prometheus, &prometheus_url)),
    )
    .await;

    let now = now_ms();
    for (c, observation) in candidates.iter().zip(observations) {
        let current = c.service.spec.as_ref().map_or(0, |s| s.replicas);
        let service_name = name(&c.service);
        let mem = memory
            .entry(c.service.id.clone())
            .or_insert_with(|| Memory {
                stabilizer: Stabilizer::seeded(now, current),
                first_seen_ms: now,
            });
        match &observation {
            Observation::Failed(why) => {
                stats.metric_failed(&service_name);
                debug!(service = %service_name, reason = %why, "autoscaler: metric unavailable");
            }
            Observation::Value(v) => {
                stats.record_observation(&service_name, *v, c.policy.target.value())
            }
            Observation::Readings { readings, .. } => {
                let measured: Vec<f64> = readings.iter().flatten().copied().collect();
                if !measured.is_empty() {
                    let mean = measured.iter().sum::<f64>() / measured.len() as f64;
                    stats.record_observation(&service_name, mean, c.policy.target.value());
                }
            }
        }
        let outcome = evaluate(
            current,
            &c.policy,
            &observation,
            &mut mem.stabilizer,
            mem.first_seen_ms,
            now,
        );
        let Some(updated) = apply(&c.service, &outcome, now) else {
            continue;
        };
        let result = store
            .propose(vec![StoreAction {
                action: Some(Action::UpdateService(updated.into())),
            }])
            .await;
        match (&outcome, result) {
            (Outcome::Scale(d), Ok(_)) => {
                let direction = if d.to_replicas > d.from_replicas {
                    Direction::Up
                } else {
                    Direction::Down
                };
                stats.decided(&service_name, direction);
                info!(
                    service = %service_name,
                    from = d.from_replicas,
                    to = d.to_replicas,
                    reason = %d.reason,
                    "autoscaler scaled the service"
                );
            }
            (Outcome::Hold(Some(message)), Ok(_)) => {
                warn!(service = %service_name, reason = %message, "autoscaler holds the replica count");
            }
            (_, Ok(_)) => {}
            (_, Err(e)) => {
                // Usually a concurrent update of the service: the next round reads it again.
                debug!(service = %service_name, error = %e, "autoscaler update not applied");
            }
        }
    }
}

fn name(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .map_or_else(|| service.id.clone(), |s| s.name.clone())
}

async fn observe_one(
    c: &Candidate,
    usage: &HashMap<String, crate::usage::UsageSamples>,
    prometheus: Option<&Prometheus>,
    prometheus_url: &str,
) -> Observation {
    let replicas = c.service.spec.as_ref().map_or(0, |s| s.replicas);
    let resource = match &c.policy.target {
        Target::Cpu(_) => Resource::Cpu,
        Target::Memory(_) => Resource::Memory,
        Target::Query { query, .. } => {
            if prometheus_url.is_empty() {
                return Observation::Failed(policy::PolicyError::NoPrometheus.to_string());
            }
            let Some(p) = prometheus else {
                return Observation::Failed("no HTTP client for Prometheus".into());
            };
            return match p.query(prometheus_url, query).await {
                Ok(v) => Observation::Value(v),
                Err(e) => Observation::Failed(e.to_string()),
            };
        }
    };
    let (readings, basis) = observe::readings(&c.tasks, replicas, usage, resource);
    Observation::Readings { readings, basis }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{AutoscalePolicy, Meta, ServiceSpec};

    fn cpu_policy(min: u64, max: u64, down_window_ms: u64) -> Policy {
        Policy::from_proto(&AutoscalePolicy {
            min_replicas: min,
            max_replicas: max,
            target_cpu_percent: 50.0,
            scale_down_window_ms: down_window_ms,
            ..Default::default()
        })
        .unwrap()
    }

    fn readings(values: &[Option<f64>]) -> Observation {
        Observation::Readings {
            readings: values.to_vec(),
            basis: Some(Basis::Limit),
        }
    }

    #[test]
    fn scales_up_on_load_and_back_down_after_the_window() {
        let p = cpu_policy(1, 4, 20_000);
        let mut s = Stabilizer::seeded(0, 1);
        let up = evaluate(1, &p, &readings(&[Some(100.0)]), &mut s, 0, 5_000);
        let Outcome::Scale(d) = up else {
            panic!("{up:?}")
        };
        assert_eq!((d.from_replicas, d.to_replicas), (1, 2));
        assert_eq!(d.reason, "CPU 100.0% of limit (mean of 1 task), target 50%");
        // Busy beyond the maximum: capped.
        let up = evaluate(2, &p, &readings(&[Some(150.0); 2]), &mut s, 0, 10_000);
        let Outcome::Scale(d) = up else {
            panic!("{up:?}")
        };
        assert_eq!(d.to_replicas, 4);
        assert!(
            d.reason
                .ends_with("; 6 replicas recommended, capped at the maximum 4"),
            "{}",
            d.reason
        );
        // Idle: held by the down window, then down to the minimum at once.
        assert_eq!(
            evaluate(4, &p, &readings(&[Some(0.0); 4]), &mut s, 0, 15_000),
            Outcome::Hold(None)
        );
        assert_eq!(
            evaluate(4, &p, &readings(&[Some(0.0); 4]), &mut s, 0, 25_000),
            Outcome::Hold(None),
            "4 recommended at 10 s is still in the window"
        );
        let down = evaluate(4, &p, &readings(&[Some(0.0); 4]), &mut s, 0, 30_001);
        let Outcome::Scale(d) = down else {
            panic!("{down:?}")
        };
        assert_eq!((d.from_replicas, d.to_replicas), (4, 1));
        assert!(d.reason.contains("kept at the minimum 1"), "{}", d.reason);
    }

    #[test]
    fn an_unreadable_metric_holds_and_says_why() {
        let p = cpu_policy(2, 4, 0);
        let mut s = Stabilizer::seeded(0, 3);
        let out = evaluate(
            3,
            &p,
            &Observation::Failed("cannot reach Prometheus at http://x: refused".into()),
            &mut s,
            0,
            1_000,
        );
        assert_eq!(
            out,
            Outcome::Hold(Some(
                "cannot reach Prometheus at http://x: refused; holding 3 replicas".into()
            ))
        );
        // No usage yet: quiet during the grace period, then said.
        assert_eq!(
            evaluate(3, &p, &readings(&[None, None, None]), &mut s, 0, 10_000),
            Outcome::Hold(None)
        );
        let Outcome::Hold(Some(m)) =
            evaluate(3, &p, &readings(&[None, None, None]), &mut s, 0, 31_000)
        else {
            panic!()
        };
        assert!(m.starts_with("no resource usage reported"), "{m}");
    }

    #[test]
    fn bounds_apply_at_once() {
        let p = cpu_policy(2, 4, 300_000);
        let mut s = Stabilizer::seeded(0, 1);
        let Outcome::Scale(d) = evaluate(1, &p, &Observation::Failed("x".into()), &mut s, 0, 1)
        else {
            panic!()
        };
        assert_eq!(d.to_replicas, 2);
        assert_eq!(d.reason, "1 replicas is below the minimum 2");
        let Outcome::Scale(d) = evaluate(6, &p, &readings(&[Some(50.0); 6]), &mut s, 0, 1) else {
            panic!()
        };
        assert_eq!(d.to_replicas, 4);
    }

    #[test]
    fn query_values_scale_the_whole_service() {
        let p = Policy::from_proto(&AutoscalePolicy {
            min_replicas: 1,
            max_replicas: 3,
            query: "vector(150)".into(),
            query_target: 100.0,
            ..Default::default()
        })
        .unwrap();
        let mut s = Stabilizer::seeded(0, 1);
        let Outcome::Scale(d) = evaluate(1, &p, &Observation::Value(150.0), &mut s, 0, 1) else {
            panic!()
        };
        assert_eq!(d.to_replicas, 2);
        assert_eq!(d.reason, "query value 150, target 100");
    }

    fn service(replicas: u64) -> Service {
        Service {
            id: "s1".into(),
            meta: Some(Meta {
                version: 7,
                ..Default::default()
            }),
            spec: Some(Box::new(ServiceSpec {
                name: "web".into(),
                replicas,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn status_keeps_the_last_decisions_and_writes_messages_once() {
        let mut s = service(1);
        for i in 0..12 {
            let d = AutoscaleDecision {
                at_ms: i,
                from_replicas: 1,
                to_replicas: 2,
                observed: 0.0,
                reason: format!("r{i}"),
            };
            s = apply(&s, &Outcome::Scale(d), i).unwrap();
        }
        let status = s.autoscale_status.clone().unwrap();
        assert_eq!(status.decisions.len(), MAX_DECISIONS);
        assert_eq!(status.decisions[0].reason, "r2");
        assert_eq!(s.spec.as_ref().unwrap().replicas, 2);
        assert_eq!(s.meta.as_ref().unwrap().version, 7, "the version read");

        let held = Outcome::Hold(Some("down".into()));
        let s = apply(&s, &held, 100).unwrap();
        assert_eq!(s.autoscale_status.as_ref().unwrap().message_at_ms, 100);
        assert_eq!(apply(&s, &held, 200), None, "unchanged message: no write");
        let cleared = apply(&s, &Outcome::Hold(None), 300).unwrap();
        assert_eq!(cleared.autoscale_status.unwrap().message, "");
        assert_eq!(apply(&service(1), &Outcome::Hold(None), 1), None);
    }
}
