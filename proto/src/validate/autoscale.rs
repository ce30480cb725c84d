//! Autoscale policies: their defaults, and the checks the control API makes before one is
//! stored (the CLI makes the same checks before it dials the daemon). The manager's
//! autoscaler reads policies through [`Policy`], so the defaults live in one place.
//!
//! Everything here is pure; the one check that needs the network, whether Prometheus accepts
//! a query, is the manager's (`shoal_manager::autoscaler::prometheus::check_query`).

use crate::{AutoscalePolicy, ServiceMode, ServiceSpec};

/// HPA's default tolerance: a deviation from the target of at most 10 % changes nothing.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// HPA's default scale-up stabilization window: none, scale up at once.
pub const DEFAULT_UP_WINDOW_MS: u64 = 0;
/// HPA's default scale-down stabilization window: five minutes.
pub const DEFAULT_DOWN_WINDOW_MS: u64 = 300_000;
/// The stored windows use 0 for "default", so a window of zero (act at once) is stored as this.
pub const ZERO_WINDOW_MS: u64 = 1;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("--autoscale-max must be at least 1")]
    MaxZero,
    #[error("--autoscale-min must be at least 1: the autoscaler never scales a service to 0")]
    MinZero,
    #[error("--autoscale-min {min} is above --autoscale-max {max}")]
    MinAboveMax { min: u64, max: u64 },
    #[error(
        "an autoscale policy needs a target: --autoscale-cpu PERCENT, --autoscale-memory \
         PERCENT, or --autoscale-query QUERY with --autoscale-target VALUE"
    )]
    NoTarget,
    #[error("an autoscale policy has one target; {0} were given (--autoscale-cpu, --autoscale-memory, --autoscale-query)")]
    SeveralTargets(usize),
    #[error(
        "--autoscale-{what} {value}% is out of range: give a percentage above 0 and at most 100"
    )]
    BadPercent { what: &'static str, value: f64 },
    #[error("--autoscale-target {0} is out of range: give a number above 0")]
    BadQueryTarget(f64),
    #[error("--autoscale-query needs --autoscale-target VALUE, the value the query should have")]
    QueryWithoutTarget,
    #[error("the autoscale query is empty")]
    EmptyQuery,
    #[error("invalid autoscale query {query:?}: {detail}")]
    UnbalancedQuery { query: String, detail: String },
    #[error("--autoscale-tolerance {0} is out of range: give a fraction above 0 and below 1")]
    BadTolerance(f64),
    #[error("autoscaling needs a replicated service: a global service runs one task per node")]
    Global,
    #[error(
        "--autoscale-memory measures the tasks' memory against their memory limit or \
         reservation: set --limit-memory or --reserve-memory as well"
    )]
    MemoryWithoutBasis,
    #[error("{replicas} replicas is outside the autoscale bounds (min {min}, max {max})")]
    ReplicasOutside { replicas: u64, min: u64, max: u64 },
    #[error(
        "service {service} is autoscaled (min {min}, max {max}): change the bounds with `shoal \
         service update --autoscale-min/--autoscale-max`, or disable autoscaling first \
         (`shoal service update --autoscale-disable {service}`)"
    )]
    Autoscaled { service: String, min: u64, max: u64 },
    #[error(
        "no Prometheus server is configured for the swarm, so --autoscale-query cannot be \
         evaluated: set one with `shoal swarm update --prometheus-url URL`"
    )]
    NoPrometheus,
}

/// What a policy measures, with its target.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Mean CPU utilisation of the running tasks, percent of their CPU basis.
    Cpu(f64),
    /// Mean memory working set of the running tasks, percent of their memory basis.
    Memory(f64),
    /// A PromQL query's value, with the value it should have.
    Query { query: String, target: f64 },
}

impl Target {
    /// The value the observation is compared with.
    pub fn value(&self) -> f64 {
        match self {
            Target::Cpu(v) | Target::Memory(v) => *v,
            Target::Query { target, .. } => *target,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Cpu(_) => "cpu",
            Target::Memory(_) => "memory",
            Target::Query { .. } => "query",
        }
    }
}

/// A validated policy with its defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min: u64,
    pub max: u64,
    pub target: Target,
    pub tolerance: f64,
    pub up_window_ms: u64,
    pub down_window_ms: u64,
}

impl Policy {
    pub fn from_proto(p: &AutoscalePolicy) -> Result<Policy, PolicyError> {
        if p.max_replicas == 0 {
            return Err(PolicyError::MaxZero);
        }
        if p.min_replicas == 0 {
            return Err(PolicyError::MinZero);
        }
        if p.min_replicas > p.max_replicas {
            return Err(PolicyError::MinAboveMax {
                min: p.min_replicas,
                max: p.max_replicas,
            });
        }
        let has_query = !p.query.is_empty() || p.query_target != 0.0;
        let given = [
            p.target_cpu_percent != 0.0,
            p.target_memory_percent != 0.0,
            has_query,
        ]
        .iter()
        .filter(|g| **g)
        .count();
        match given {
            0 => return Err(PolicyError::NoTarget),
            1 => {}
            n => return Err(PolicyError::SeveralTargets(n)),
        }
        let percent = |what: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 && value <= 100.0 {
                Ok(value)
            } else {
                Err(PolicyError::BadPercent { what, value })
            }
        };
        let target = if p.target_cpu_percent != 0.0 {
            Target::Cpu(percent("cpu", p.target_cpu_percent)?)
        } else if p.target_memory_percent != 0.0 {
            Target::Memory(percent("memory", p.target_memory_percent)?)
        } else {
            check_query_syntax(&p.query)?;
            if p.query_target == 0.0 {
                return Err(PolicyError::QueryWithoutTarget);
            }
            if !(p.query_target.is_finite() && p.query_target > 0.0) {
                return Err(PolicyError::BadQueryTarget(p.query_target));
            }
            Target::Query {
                query: p.query.clone(),
                target: p.query_target,
            }
        };
        let tolerance = if p.tolerance == 0.0 {
            DEFAULT_TOLERANCE
        } else if p.tolerance.is_finite() && p.tolerance > 0.0 && p.tolerance < 1.0 {
            p.tolerance
        } else {
            return Err(PolicyError::BadTolerance(p.tolerance));
        };
        let window = |ms: u64, default: u64| match ms {
            0 => default,
            ZERO_WINDOW_MS => 0,
            ms => ms,
        };
        Ok(Policy {
            min: p.min_replicas,
            max: p.max_replicas,
            target,
            tolerance,
            up_window_ms: window(p.scale_up_window_ms, DEFAULT_UP_WINDOW_MS),
            down_window_ms: window(p.scale_down_window_ms, DEFAULT_DOWN_WINDOW_MS),
        })
    }

    /// `replicas` brought within the bounds.
    pub fn clamp(&self, replicas: u64) -> u64 {
        replicas.clamp(self.min, self.max)
    }
}

/// The policy of a spec, when it has one that is valid.
pub fn of_spec(spec: &ServiceSpec) -> Option<Policy> {
    Policy::from_proto(spec.autoscale.as_ref()?).ok()
}

/// Everything about a spec's policy that can be checked without the network.
pub fn validate(spec: &ServiceSpec) -> Result<(), PolicyError> {
    let Some(p) = spec.autoscale.as_ref() else {
        return Ok(());
    };
    let policy = Policy::from_proto(p)?;
    if spec.mode() == ServiceMode::Global {
        return Err(PolicyError::Global);
    }
    if matches!(policy.target, Target::Memory(_)) {
        let r = spec
            .container
            .as_ref()
            .and_then(|c| c.resources.as_ref())
            .cloned()
            .unwrap_or_default();
        let limit = r.limits.map_or(0, |l| l.memory_bytes);
        let reservation = r.reservations.map_or(0, |l| l.memory_bytes);
        if limit == 0 && reservation == 0 {
            return Err(PolicyError::MemoryWithoutBasis);
        }
    }
    if spec.replicas < policy.min || spec.replicas > policy.max {
        return Err(PolicyError::ReplicasOutside {
            replicas: spec.replicas,
            min: policy.min,
            max: policy.max,
        });
    }
    Ok(())
}

/// An update may not set the replica count of an autoscaled service by hand (`service scale`):
/// the autoscaler owns it. Bringing the count within new bounds is allowed.
pub fn check_replicas_change(old: &ServiceSpec, new: &ServiceSpec) -> Result<(), PolicyError> {
    let (Some(old_policy), Some(new_policy)) = (of_spec(old), of_spec(new)) else {
        return Ok(());
    };
    if new.replicas == old.replicas || new.replicas == new_policy.clamp(old.replicas) {
        return Ok(());
    }
    Err(PolicyError::Autoscaled {
        service: old.name.clone(),
        min: old_policy.min,
        max: old_policy.max,
    })
}

/// The checks PromQL gets before Prometheus sees it: not empty, and brackets that pair up
/// (outside string literals). Prometheus's own parser has the last word, at creation when it
/// is reachable and at every evaluation.
pub fn check_query_syntax(query: &str) -> Result<(), PolicyError> {
    if query.trim().is_empty() {
        return Err(PolicyError::EmptyQuery);
    }
    let bad = |detail: String| PolicyError::UnbalancedQuery {
        query: query.to_string(),
        detail,
    };
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in query.chars().enumerate() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '[' | '{' => open.push((c, i)),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match open.pop() {
                    Some((o, _)) if o == want => {}
                    Some((o, at)) => {
                        return Err(bad(format!(
                            "'{c}' at position {} closes '{o}' opened at position {}",
                            i + 1,
                            at + 1
                        )))
                    }
                    None => {
                        return Err(bad(format!(
                            "unexpected '{c}' at position {} (nothing to close)",
                            i + 1
                        )))
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(q) = quote {
        return Err(bad(format!("unterminated string (opened with {q})")));
    }
    if let Some((o, at)) = open.pop() {
        return Err(bad(format!("'{o}' at position {} is never closed", at + 1)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContainerSpec, ResourceAmounts, Resources};

    fn cpu(min: u64, max: u64, target: f64) -> AutoscalePolicy {
        AutoscalePolicy {
            min_replicas: min,
            max_replicas: max,
            target_cpu_percent: target,
            ..Default::default()
        }
    }

    fn spec(replicas: u64, policy: Option<AutoscalePolicy>) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            replicas,
            autoscale: policy,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_in() {
        let p = Policy::from_proto(&cpu(1, 4, 70.0)).unwrap();
        assert_eq!(p.target, Target::Cpu(70.0));
        assert_eq!(p.tolerance, DEFAULT_TOLERANCE);
        assert_eq!((p.up_window_ms, p.down_window_ms), (0, 300_000));
        let mut raw = cpu(1, 4, 70.0);
        raw.scale_down_window_ms = ZERO_WINDOW_MS;
        raw.scale_up_window_ms = 30_000;
        raw.tolerance = 0.2;
        let p = Policy::from_proto(&raw).unwrap();
        assert_eq!((p.up_window_ms, p.down_window_ms), (30_000, 0));
        assert_eq!(p.tolerance, 0.2);
        assert_eq!(p.clamp(0), 1);
        assert_eq!(p.clamp(9), 4);
    }

    #[test]
    fn bad_policies_are_refused_clearly() {
        let err = |p: AutoscalePolicy| Policy::from_proto(&p).unwrap_err().to_string();
        assert_eq!(
            err(cpu(5, 2, 50.0)),
            "--autoscale-min 5 is above --autoscale-max 2"
        );
        assert_eq!(err(cpu(0, 0, 50.0)), "--autoscale-max must be at least 1");
        assert!(err(cpu(0, 3, 50.0)).contains("never scales a service to 0"));
        assert!(err(cpu(1, 3, 0.0)).starts_with("an autoscale policy needs a target"));
        assert!(err(cpu(1, 3, 150.0)).contains("--autoscale-cpu 150% is out of range"));
        assert!(err(cpu(1, 3, -5.0)).contains("out of range"));
        let mut two = cpu(1, 3, 50.0);
        two.target_memory_percent = 50.0;
        assert!(err(two).contains("one target; 2 were given"));
        let q = |query: &str, target: f64| AutoscalePolicy {
            min_replicas: 1,
            max_replicas: 3,
            query: query.into(),
            query_target: target,
            ..Default::default()
        };
        assert!(err(q("up", 0.0)).contains("needs --autoscale-target"));
        assert_eq!(err(q("", 5.0)), "the autoscale query is empty");
        assert!(err(q("up", -1.0)).contains("--autoscale-target -1 is out of range"));
        assert!(Policy::from_proto(&q("sum(rate(x[5m]))", 10.0)).is_ok());
        let mut tol = cpu(1, 3, 50.0);
        tol.tolerance = 1.5;
        assert!(err(tol).contains("tolerance"));
    }

    #[test]
    fn query_brackets_must_pair_up() {
        assert!(check_query_syntax("sum(rate(http_requests_total{job=\"a(\"}[5m]))").is_ok());
        assert!(check_query_syntax("  ").is_err());
        let e = check_query_syntax("sum(rate(x[5m])")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'(' at position 4 is never closed"), "{e}");
        let e = check_query_syntax("sum(x))").unwrap_err().to_string();
        assert!(e.contains("unexpected ')' at position 7"), "{e}");
        let e = check_query_syntax("sum(x[5m)]").unwrap_err().to_string();
        assert!(e.contains("closes '['"), "{e}");
        assert!(check_query_syntax("x{a=\"b}").is_err());
        assert!(check_query_syntax(r#"x{a="\"("}"#).is_ok());
    }

    #[test]
    fn spec_level_checks() {
        assert!(validate(&spec(2, Some(cpu(1, 4, 50.0)))).is_ok());
        assert!(validate(&spec(3, None)).is_ok());
        assert_eq!(
            validate(&spec(7, Some(cpu(1, 4, 50.0)))).unwrap_err(),
            PolicyError::ReplicasOutside {
                replicas: 7,
                min: 1,
                max: 4
            }
        );
        let mut global = spec(0, Some(cpu(1, 4, 50.0)));
        global.mode = ServiceMode::Global as i32;
        assert_eq!(validate(&global).unwrap_err(), PolicyError::Global);
        let memory = AutoscalePolicy {
            min_replicas: 1,
            max_replicas: 2,
            target_memory_percent: 80.0,
            ..Default::default()
        };
        assert_eq!(
            validate(&spec(1, Some(memory.clone()))).unwrap_err(),
            PolicyError::MemoryWithoutBasis
        );
        let mut limited = spec(1, Some(memory));
        limited.container = Some(ContainerSpec {
            resources: Some(Resources {
                limits: Some(ResourceAmounts {
                    nano_cpus: 0,
                    memory_bytes: 64 << 20,
                }),
                reservations: None,
            }),
            ..Default::default()
        });
        assert!(validate(&limited).is_ok());
    }

    #[test]
    fn scaling_an_autoscaled_service_by_hand_is_refused() {
        let old = spec(2, Some(cpu(1, 4, 50.0)));
        let e = check_replicas_change(&old, &spec(3, Some(cpu(1, 4, 50.0)))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service web is autoscaled (min 1, max 4): change the bounds with `shoal service \
             update --autoscale-min/--autoscale-max`, or disable autoscaling first (`shoal \
             service update --autoscale-disable web`)"
        );
        // Same count, or the count brought within new bounds: fine.
        assert!(check_replicas_change(&old, &spec(2, Some(cpu(1, 8, 60.0)))).is_ok());
        assert!(check_replicas_change(&old, &spec(3, Some(cpu(3, 8, 50.0)))).is_ok());
        // Disabling, or enabling, is not scaling by hand.
        assert!(check_replicas_change(&old, &spec(5, None)).is_ok());
        assert!(check_replicas_change(&spec(5, None), &spec(2, Some(cpu(1, 4, 50.0)))).is_ok());
    }
}
