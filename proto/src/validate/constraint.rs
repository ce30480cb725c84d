//! Placement constraint syntax, as docker writes it: `node.role==manager`,
//! `node.labels.zone!=east`, `node.hostname==web-1`, `node.id==…`, and the other checks on a
//! service's mode and placement.
//!
//! The syntax follows swarmkit's `manager/constraint` package so that the same expressions mean
//! the same thing: the first `==` (else the first `!=`) splits key from value; keys are
//! case-insensitive except for the label name. Matching a parsed [`Constraint`] against a node
//! is the manager's (`shoal_manager::constraint`): only the syntax is shared with the CLI.
//!
//! Unlike swarmkit, an unknown key or a role other than manager/worker is refused when the
//! service is created instead of silently matching no node.

use std::fmt;

use crate::{ServiceMode, ServiceSpec};

const LABEL_PREFIX: &str = "node.labels.";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error(
        "invalid constraint {expr:?}: expected KEY==VALUE or KEY!=VALUE, e.g. node.role==manager"
    )]
    NoOperator { expr: String },
    #[error(
        "invalid constraint {expr:?}: key {key:?} may hold only letters, digits, '-', '_' and \
         '.', starting with a letter or '_'"
    )]
    InvalidKey { expr: String, key: String },
    #[error(
        "invalid constraint {expr:?}: unknown key {key}; use node.id, node.hostname, node.role \
         or node.labels.KEY"
    )]
    UnknownKey { expr: String, key: String },
    #[error(
        "invalid constraint {expr:?}: node.labels. needs a label name, e.g. node.labels.zone==east"
    )]
    NoLabelName { expr: String },
    #[error("invalid constraint {expr:?}: no value after the operator, e.g. node.role==manager")]
    EmptyValue { expr: String },
    #[error(
        "invalid constraint {expr:?}: value {value:?} may hold only letters, digits, spaces and \
         the characters : - _ . * ( ) ? + [ ] \\ ^ $ | /"
    )]
    InvalidValue { expr: String, value: String },
    #[error("invalid constraint {expr:?}: node.role is manager or worker, not {value:?}")]
    InvalidRole { expr: String, value: String },
}

/// What the control API refuses in a service's mode and placement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error("unknown service mode {0}; use replicated or global")]
    UnknownMode(i32),
    #[error(
        "--replicas-max-per-node can only be used with replicated mode: a global service runs \
         one task per node anyway; drop the flag or use --mode replicated"
    )]
    MaxReplicasWithGlobal,
    #[error(
        "a service's mode cannot be changed (it is {from}, not {to}); remove the service and \
         create it again with --mode {to}"
    )]
    ModeChange {
        from: &'static str,
        to: &'static str,
    },
}

/// What a constraint compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintKey {
    Id,
    Hostname,
    Role,
    /// The label name, case-sensitive as node labels are.
    Label(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintOp {
    Eq,
    Ne,
}

/// One parsed `KEY==VALUE` or `KEY!=VALUE`; only [`parse`] makes one, so its key and value
/// are always valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    key: ConstraintKey,
    op: ConstraintOp,
    value: String,
}

impl Constraint {
    pub fn key(&self) -> &ConstraintKey {
        &self.key
    }

    pub fn op(&self) -> ConstraintOp {
        self.op
    }

    /// The value as written (trimmed); it compares case-insensitively.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            ConstraintKey::Id => f.write_str("node.id")?,
            ConstraintKey::Hostname => f.write_str("node.hostname")?,
            ConstraintKey::Role => f.write_str("node.role")?,
            ConstraintKey::Label(l) => write!(f, "{LABEL_PREFIX}{l}")?,
        }
        let op = match self.op {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
        };
        write!(f, "{op}{}", self.value)
    }
}

/// swarmkit's key pattern: `[a-z_][a-z0-9\-_.]+`, case-insensitive.
fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && key.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// swarmkit's value pattern: no characters that are, or may become, operators (`=`, `!`, `<`,
/// `>`, `~`…).
fn valid_value(value: &str) -> bool {
    value.chars().all(|c| {
        c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || ":-_.*()?+[]\\^$|/".contains(c)
    })
}

/// Parses one constraint expression.
pub fn parse(expr: &str) -> Result<Constraint, ConstraintError> {
    let err_expr = || expr.to_string();
    let (op, (key, value)) = if let Some(kv) = expr.split_once("==") {
        (ConstraintOp::Eq, kv)
    } else if let Some(kv) = expr.split_once("!=") {
        (ConstraintOp::Ne, kv)
    } else {
        return Err(ConstraintError::NoOperator { expr: err_expr() });
    };
    let (key, value) = (key.trim(), value.trim());
    if !valid_key(key) {
        return Err(ConstraintError::InvalidKey {
            expr: err_expr(),
            key: key.to_string(),
        });
    }
    let lower = key.to_ascii_lowercase();
    let key = match lower.as_str() {
        "node.id" => ConstraintKey::Id,
        "node.hostname" => ConstraintKey::Hostname,
        "node.role" => ConstraintKey::Role,
        k if k.starts_with(LABEL_PREFIX) => {
            let name = &key[LABEL_PREFIX.len()..];
            if name.is_empty() {
                return Err(ConstraintError::NoLabelName { expr: err_expr() });
            }
            ConstraintKey::Label(name.to_string())
        }
        _ => {
            return Err(ConstraintError::UnknownKey {
                expr: err_expr(),
                key: key.to_string(),
            })
        }
    };
    if value.is_empty() {
        return Err(ConstraintError::EmptyValue { expr: err_expr() });
    }
    if !valid_value(value) {
        return Err(ConstraintError::InvalidValue {
            expr: err_expr(),
            value: value.to_string(),
        });
    }
    if key == ConstraintKey::Role
        && !value.eq_ignore_ascii_case("manager")
        && !value.eq_ignore_ascii_case("worker")
    {
        return Err(ConstraintError::InvalidRole {
            expr: err_expr(),
            value: value.to_string(),
        });
    }
    Ok(Constraint {
        key,
        op,
        value: value.to_string(),
    })
}

/// Parses several expressions; the first bad one is the error.
pub fn parse_all<S: AsRef<str>>(exprs: &[S]) -> Result<Vec<Constraint>, ConstraintError> {
    exprs.iter().map(|e| parse(e.as_ref())).collect()
}

fn mode_name(mode: ServiceMode) -> &'static str {
    match mode {
        ServiceMode::Replicated => "replicated",
        ServiceMode::Global => "global",
        ServiceMode::ReplicatedJob => "replicated-job",
        ServiceMode::GlobalJob => "global-job",
    }
}

/// Checks a service spec's mode and placement, for `service create` and `service update`.
pub fn validate_placement(spec: &ServiceSpec) -> Result<(), PlacementError> {
    let mode =
        ServiceMode::try_from(spec.mode).map_err(|_| PlacementError::UnknownMode(spec.mode))?;
    let Some(placement) = &spec.placement else {
        return Ok(());
    };
    parse_all(&placement.constraints)?;
    let global = matches!(mode, ServiceMode::Global | ServiceMode::GlobalJob);
    if global && placement.max_replicas_per_node > 0 {
        return Err(PlacementError::MaxReplicasWithGlobal);
    }
    Ok(())
}

/// Refuses a `service update` that changes the mode, as docker does: the tasks of one mode mean
/// nothing in the other (slots versus nodes).
pub fn validate_mode_change(old: &ServiceSpec, new: &ServiceSpec) -> Result<(), PlacementError> {
    if old.mode == new.mode {
        return Ok(());
    }
    Err(PlacementError::ModeChange {
        from: mode_name(old.mode()),
        to: mode_name(new.mode()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Placement;

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let msg = |e: &str| parse(e).unwrap_err().to_string();
        assert_eq!(
            msg("node.foo==x"),
            "invalid constraint \"node.foo==x\": unknown key node.foo; use node.id, \
             node.hostname, node.role or node.labels.KEY"
        );
        assert!(matches!(
            parse("node.role=manager"),
            Err(ConstraintError::NoOperator { .. })
        ));
        assert!(matches!(
            parse("node.role==boss"),
            Err(ConstraintError::InvalidRole { .. })
        ));
        assert!(matches!(
            parse("node.labels.==x"),
            Err(ConstraintError::NoLabelName { .. })
        ));
        assert!(matches!(
            parse("node.labels.zone=="),
            Err(ConstraintError::EmptyValue { .. })
        ));
        assert!(matches!(
            parse("node.labels.zone==a=b"),
            Err(ConstraintError::InvalidValue { .. })
        ));
        assert!(matches!(
            parse("node labels==x"),
            Err(ConstraintError::InvalidKey { .. })
        ));
        assert!(matches!(
            parse("==x"),
            Err(ConstraintError::InvalidKey { .. })
        ));
    }

    #[test]
    fn display_round_trips() {
        for e in ["node.id==a", "node.labels.Zone!=east", "node.role==manager"] {
            assert_eq!(parse(e).unwrap().to_string(), e);
        }
    }

    #[test]
    fn placement_validation() {
        let spec = |mode: ServiceMode, constraints: &[&str], max: u64| ServiceSpec {
            mode: mode as i32,
            placement: Some(Placement {
                constraints: constraints.iter().map(|c| c.to_string()).collect(),
                max_replicas_per_node: max,
            }),
            ..Default::default()
        };
        assert!(validate_placement(&ServiceSpec::default()).is_ok());
        assert!(
            validate_placement(&spec(ServiceMode::Replicated, &["node.role==worker"], 2)).is_ok()
        );
        assert!(matches!(
            validate_placement(&spec(ServiceMode::Global, &[], 1)),
            Err(PlacementError::MaxReplicasWithGlobal)
        ));
        assert!(matches!(
            validate_placement(&spec(ServiceMode::Global, &["node.x==1"], 0)),
            Err(PlacementError::Constraint(
                ConstraintError::UnknownKey { .. }
            ))
        ));
        let bad_mode = ServiceSpec {
            mode: 7,
            ..Default::default()
        };
        assert_eq!(
            validate_placement(&bad_mode),
            Err(PlacementError::UnknownMode(7))
        );
        let global = spec(ServiceMode::Global, &[], 0);
        assert!(validate_mode_change(&global, &global).is_ok());
        assert_eq!(
            validate_mode_change(&ServiceSpec::default(), &global)
                .unwrap_err()
                .to_string(),
            "a service's mode cannot be changed (it is replicated, not global); remove the \
             service and create it again with --mode global"
        );
    }
}
