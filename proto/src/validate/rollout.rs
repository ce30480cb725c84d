//! The update and rollback policies (`--update-*`, `--rollback-*`): the parsers the CLI uses
//! for their words, and the checks the control API repeats on a stored spec.

use crate::update_config::{FailureAction, Order};
use crate::{ServiceSpec, UpdateConfig};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutError {
    #[error(
        "invalid --{flag} {value:?}: the failure action is pause, continue or rollback \
         (rollback only for --update-failure-action)"
    )]
    FailureAction { flag: &'static str, value: String },
    #[error(
        "--rollback-failure-action cannot be rollback: a rollback is never rolled back; use \
         pause or continue"
    )]
    RollbackOfRollback,
    #[error("invalid --{flag} {value:?}: the order is stop-first or start-first")]
    Order { flag: &'static str, value: String },
    #[error("invalid --{flag} {value:?}: give a fraction between 0 and 1, e.g. 0.2")]
    Ratio { flag: &'static str, value: String },
}

/// `pause`, `continue` or (for updates only) `rollback`.
pub fn parse_failure_action(
    flag: &'static str,
    value: &str,
) -> Result<FailureAction, RolloutError> {
    match value {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" if flag.starts_with("update") => Ok(FailureAction::Rollback),
        "rollback" => Err(RolloutError::RollbackOfRollback),
        _ => Err(RolloutError::FailureAction {
            flag,
            value: value.to_string(),
        }),
    }
}

/// `stop-first` or `start-first`.
pub fn parse_order(flag: &'static str, value: &str) -> Result<Order, RolloutError> {
    match value {
        "stop-first" => Ok(Order::StopFirst),
        "start-first" => Ok(Order::StartFirst),
        _ => Err(RolloutError::Order {
            flag,
            value: value.to_string(),
        }),
    }
}

/// A fraction in [0, 1].
pub fn parse_ratio(flag: &'static str, value: &str) -> Result<f32, RolloutError> {
    match value.trim().parse::<f32>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(RolloutError::Ratio {
            flag,
            value: value.to_string(),
        }),
    }
}

fn check(flag: &'static str, c: &UpdateConfig) -> Result<(), RolloutError> {
    if !(0.0..=1.0).contains(&c.max_failure_ratio) {
        return Err(RolloutError::Ratio {
            flag,
            value: c.max_failure_ratio.to_string(),
        });
    }
    if FailureAction::try_from(c.failure_action).is_err() {
        return Err(RolloutError::FailureAction {
            flag,
            value: c.failure_action.to_string(),
        });
    }
    if Order::try_from(c.order).is_err() {
        return Err(RolloutError::Order {
            flag,
            value: c.order.to_string(),
        });
    }
    Ok(())
}

/// The spec's policies hold values the flags could have given.
pub fn policies(spec: &ServiceSpec) -> Result<(), RolloutError> {
    if let Some(u) = &spec.update {
        check("update-max-failure-ratio", u)?;
    }
    if let Some(r) = &spec.rollback {
        check("rollback-max-failure-ratio", r)?;
        if r.failure_action() == FailureAction::Rollback {
            return Err(RolloutError::RollbackOfRollback);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_the_flags() {
        assert_eq!(
            parse_failure_action("update-failure-action", "rollback"),
            Ok(FailureAction::Rollback)
        );
        assert_eq!(
            parse_failure_action("rollback-failure-action", "rollback"),
            Err(RolloutError::RollbackOfRollback)
        );
        assert!(parse_failure_action("update-failure-action", "stop").is_err());
        assert_eq!(
            parse_order("update-order", "start-first"),
            Ok(Order::StartFirst)
        );
        assert!(parse_order("update-order", "first").is_err());
        assert_eq!(parse_ratio("update-max-failure-ratio", "0.25"), Ok(0.25));
        for bad in ["-0.1", "1.5", "x", "NaN"] {
            assert!(
                parse_ratio("update-max-failure-ratio", bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn stored_policies_are_checked() {
        let mut spec = ServiceSpec {
            update: Some(UpdateConfig {
                max_failure_ratio: 2.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(policies(&spec).is_err());
        spec.update = None;
        spec.rollback = Some(UpdateConfig {
            failure_action: FailureAction::Rollback as i32,
            ..Default::default()
        });
        assert_eq!(policies(&spec), Err(RolloutError::RollbackOfRollback));
        spec.rollback = Some(UpdateConfig::default());
        assert!(policies(&spec).is_ok());
    }
}
