//! Matching placement constraints against nodes: which nodes a service's tasks may run on.
//!
//! The syntax (`node.role==manager`, `node.labels.zone!=east`, `node.hostname==web-1`,
//! `node.id==…`) and its checks are shared with the CLI in `shoal_proto::validate::constraint`;
//! the matching follows swarmkit's `manager/constraint` package so that the same expressions
//! mean the same thing: values compare case-insensitively; a label a node does not have
//! compares as the empty string (so `node.labels.x!=y` holds on a node without `x`). Several
//! constraints must all hold.

use shoal_proto::validate::constraint::{ConstraintKey, ConstraintOp};
use shoal_proto::{Node, NodeRole, Service};

pub use shoal_proto::validate::constraint::{parse, Constraint, ConstraintError};

/// Matching one parsed constraint against a node. A trait because [`Constraint`] is the shared
/// syntax's type and matching is the manager's business.
pub trait MatchNode {
    /// Whether `node` satisfies this constraint.
    fn matches(&self, node: &Node) -> bool;
}

impl MatchNode for Constraint {
    fn matches(&self, node: &Node) -> bool {
        let role = match node.role() {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        };
        let actual = match self.key() {
            ConstraintKey::Id => node.id.as_str(),
            ConstraintKey::Hostname => node
                .description
                .as_ref()
                .map_or("", |d| d.hostname.as_str()),
            ConstraintKey::Role => role,
            ConstraintKey::Label(name) => node.labels.get(name).map_or("", String::as_str),
        };
        let equal = self.value().eq_ignore_ascii_case(actual);
        match self.op() {
            ConstraintOp::Eq => equal,
            ConstraintOp::Ne => !equal,
        }
    }
}

/// A service's constraints, all of which must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints(Vec<Constraint>);

impl Constraints {
    pub fn parse<S: AsRef<str>>(exprs: &[S]) -> Result<Self, ConstraintError> {
        shoal_proto::validate::constraint::parse_all(exprs).map(Constraints)
    }

    /// The constraints of a service's current spec (none when it has no placement).
    pub fn of_service(service: &Service) -> Result<Self, ConstraintError> {
        let exprs = service
            .spec
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .map_or(&[][..], |p| p.constraints.as_slice());
        Self::parse(exprs)
    }

    pub fn matches(&self, node: &Node) -> bool {
        self.0.iter().all(|c| c.matches(node))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::NodeDescription;

    fn node(id: &str, hostname: &str, role: NodeRole, labels: &[(&str, &str)]) -> Node {
        Node {
            id: id.into(),
            role: role as i32,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            description: Some(NodeDescription {
                hostname: hostname.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn holds(expr: &str, n: &Node) -> bool {
        parse(expr).unwrap().matches(n)
    }

    #[test]
    fn matches_each_key_with_both_operators() {
        let n = node(
            "abc123",
            "web-1",
            NodeRole::Manager,
            &[("zone", "east"), ("Disk", "ssd")],
        );
        assert!(holds("node.id==abc123", &n));
        assert!(!holds("node.id!=abc123", &n));
        assert!(holds("node.hostname==web-1", &n));
        assert!(holds("node.hostname != web-2", &n), "spaces are trimmed");
        assert!(holds("node.role==manager", &n));
        assert!(!holds("node.role==worker", &n));
        assert!(holds("node.labels.zone==east", &n));
        assert!(holds("node.labels.zone!=west", &n));
        assert!(holds("node.labels.Disk==ssd", &n));
    }

    #[test]
    fn keys_and_values_compare_like_swarmkit() {
        let n = node("n1", "Web-1", NodeRole::Worker, &[("zone", "East")]);
        assert!(
            holds("NODE.Role==WORKER", &n),
            "keys and values ignore case"
        );
        assert!(holds("node.hostname==web-1", &n));
        assert!(holds("node.labels.zone==east", &n));
        assert!(
            !holds("node.labels.ZONE==east", &n),
            "the label name keeps its case"
        );
        assert!(
            holds("node.labels.rack!=r1", &n),
            "a missing label compares as empty, so != holds"
        );
        assert!(!holds("node.labels.rack==r1", &n));
        let bare = Node::default();
        assert!(
            holds("node.hostname!=web-1", &bare),
            "no description = empty hostname"
        );
    }

    #[test]
    fn all_constraints_must_hold() {
        let n = node("n1", "h", NodeRole::Worker, &[("zone", "east")]);
        let both = Constraints::parse(&["node.role==worker", "node.labels.zone==east"]).unwrap();
        assert!(both.matches(&n));
        let one_fails =
            Constraints::parse(&["node.role==worker", "node.labels.zone==west"]).unwrap();
        assert!(!one_fails.matches(&n));
        assert!(Constraints::parse::<&str>(&[]).unwrap().matches(&n));
    }
}
