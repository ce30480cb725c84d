//! When the leader gives up on a worker: the rules, kept pure so they are tested without clocks.
//!
//! Two signals mean different things. A session whose *connection closed* means the worker's
//! host answered (with a FIN or a reset): its daemon died or is restarting. That is certain and
//! immediate, so the node goes Unknown at once and Down after a short grace ([`closed_grace`]):
//! a daemon that restarts within it opens a new session and keeps its tasks; one that does not
//! has its tasks rescheduled within seconds. A session that merely goes *silent* may be a
//! partition that heals; it keeps Swarm's rule, Down after three heartbeat periods without a
//! heartbeat.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use shoal_proto::NodeState;

use crate::store::StoreState;

/// How long a node whose session connection closed keeps its tasks before it is marked Down.
/// Long enough for a daemon restart (which reopens its session in about a second), short
/// enough that a dead daemon's tasks run elsewhere in under 5 s.
pub const CLOSED_GRACE: Duration = Duration::from_secs(2);

/// Heartbeat periods a session may stay silent before its node is marked Down (Swarm's rule).
pub const MISSED_HEARTBEATS: u32 = 3;

/// A worker's session as the leader holds it.
pub(super) struct Session {
    pub id: String,
    pub last_heartbeat: Instant,
    /// When the session's connection closed; the session is kept for [`closed_grace`].
    pub closed_at: Option<Instant>,
}

/// Why a node is marked Down; the node's status message.
pub const SESSION_CLOSED: &str = "session closed: the node's daemon stopped and did not come back";
pub const HEARTBEAT_FAILURE: &str = "heartbeat failure";

/// The grace after a closed connection: [`CLOSED_GRACE`], never longer than the silent rule.
pub fn closed_grace(period: Duration) -> Duration {
    CLOSED_GRACE.min(period * MISSED_HEARTBEATS)
}

/// The leader's clock and settings for one check.
pub(super) struct Check {
    pub now: Instant,
    pub now_ms: i64,
    pub period: Duration,
    /// When this manager became leader: every node gets a full silent grace to reconnect.
    pub leader_since: Instant,
}

impl Check {
    fn silent_grace(&self) -> Duration {
        self.period * MISSED_HEARTBEATS
    }

    /// Whether `s` is over: closed for longer than the closed grace, or silent for too long.
    pub fn session_over(&self, s: &Session) -> bool {
        match s.closed_at {
            Some(closed) => self.now.duration_since(closed) >= closed_grace(self.period),
            None => self.now.duration_since(s.last_heartbeat) >= self.silent_grace(),
        }
    }
}

/// Drops the sessions that are over and returns the nodes to mark Down, with the reason: every
/// Ready or Unknown node that holds no session now. A node whose session just ended by closing
/// is down for that reason, at once; any other for missed heartbeats, and only once this leader
/// has led for a full silent grace (every node gets that long to reconnect to a new leader) and
/// the node has not gone Unknown only just now (it joined and has not opened its first session
/// yet).
pub(super) fn expire(
    sessions: &mut HashMap<String, Session>,
    st: &StoreState,
    check: &Check,
) -> Vec<(String, &'static str)> {
    let mut closed = HashSet::new();
    sessions.retain(|node, s| {
        let over = check.session_over(s);
        if over && s.closed_at.is_some() {
            closed.insert(node.clone());
        }
        !over
    });
    // A closed session was seen by this leader itself; everything else needs the grace.
    let settled = check.now.duration_since(check.leader_since) >= check.silent_grace();
    let recent_ms = i64::try_from(check.silent_grace().as_millis()).unwrap_or(i64::MAX);
    st.nodes
        .values()
        .filter(|n| !sessions.contains_key(&n.id))
        .filter(|n| n.state == NodeState::Ready as i32 || n.state == NodeState::Unknown as i32)
        .filter(|n| {
            closed.contains(&n.id)
                || (settled
                    && (n.state == NodeState::Ready as i32
                        || check.now_ms.saturating_sub(updated_ms(n)) >= recent_ms))
        })
        .map(|n| {
            let why = if closed.contains(&n.id) {
                SESSION_CLOSED
            } else {
                HEARTBEAT_FAILURE
            };
            (n.id.clone(), why)
        })
        .collect()
}

/// Nodes with a live (open, not closed) session that the store does not show Ready: a session
/// that closed and one that reopened can race in the log, and the node must not stay Unknown
/// while it is connected.
pub(super) fn connected_not_ready(
    sessions: &HashMap<String, Session>,
    st: &StoreState,
) -> Vec<String> {
    sessions
        .iter()
        .filter(|(_, s)| s.closed_at.is_none())
        .filter(|(node, _)| {
            st.nodes
                .get(*node)
                .is_some_and(|n| n.state != NodeState::Ready as i32)
        })
        .map(|(node, _)| node.clone())
        .collect()
}

fn updated_ms(n: &shoal_proto::Node) -> i64 {
    n.meta.as_ref().map_or(0, |m| m.updated_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Meta, Node};

    const PERIOD: Duration = Duration::from_secs(5);

    fn node(id: &str, state: NodeState, updated_at_ms: i64) -> Node {
        Node {
            id: id.into(),
            state: state as i32,
            meta: Some(Meta {
                updated_at_ms,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn store(nodes: Vec<Node>) -> StoreState {
        StoreState {
            nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
            ..Default::default()
        }
    }

    fn session(last_heartbeat: Instant, closed_at: Option<Instant>) -> Session {
        Session {
            id: "s".into(),
            last_heartbeat,
            closed_at,
        }
    }

    #[test]
    fn a_closed_session_marks_its_node_down_after_the_short_grace_only() {
        let t0 = Instant::now();
        let leader_since = t0 - Duration::from_secs(1);
        let st = store(vec![node("w", NodeState::Unknown, 0)]);
        let mut sessions = HashMap::from([("w".to_string(), session(t0, Some(t0)))]);
        let at = |secs: f64| Check {
            now: t0 + Duration::from_secs_f64(secs),
            now_ms: 60_000,
            period: PERIOD,
            leader_since,
        };
        // Within the grace: kept, nothing marked (a restarting daemon keeps its tasks).
        assert!(expire(&mut sessions, &st, &at(1.9)).is_empty());
        assert!(sessions.contains_key("w"));
        // After it: Down, for the closed connection, long before three heartbeat periods (and
        // even though this leader is new: it saw the connection close itself).
        let down = expire(&mut sessions, &st, &at(2.0));
        assert_eq!(down, [("w".to_string(), SESSION_CLOSED)]);
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_silent_session_keeps_swarms_three_periods() {
        let t0 = Instant::now();
        let st = store(vec![node("w", NodeState::Ready, 0)]);
        let mut sessions = HashMap::from([("w".to_string(), session(t0, None))]);
        let at = |secs: u64| Check {
            now: t0 + Duration::from_secs(secs),
            now_ms: 60_000,
            period: PERIOD,
            leader_since: t0 - Duration::from_secs(60),
        };
        assert!(expire(&mut sessions, &st, &at(14)).is_empty());
        assert_eq!(
            expire(&mut sessions, &st, &at(15)),
            [("w".to_string(), HEARTBEAT_FAILURE)]
        );
    }

    #[test]
    fn new_leaders_and_newly_joined_nodes_get_a_full_grace() {
        let t0 = Instant::now();
        let st = store(vec![
            node("ready", NodeState::Ready, 0),
            node("joined", NodeState::Unknown, 59_000),
            node("stale", NodeState::Unknown, 1_000),
            node("down", NodeState::Down, 0),
        ]);
        let mut sessions = HashMap::new();
        let fresh_leader = Check {
            now: t0,
            now_ms: 60_000,
            period: PERIOD,
            leader_since: t0 - Duration::from_secs(10),
        };
        assert!(expire(&mut sessions, &st, &fresh_leader).is_empty());
        let settled = Check {
            leader_since: t0 - Duration::from_secs(15),
            ..fresh_leader
        };
        let mut down: Vec<String> = expire(&mut sessions, &st, &settled)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        down.sort();
        assert_eq!(down, ["ready", "stale"]);
    }

    #[test]
    fn a_connected_node_left_unknown_by_a_race_is_found() {
        let t0 = Instant::now();
        let st = store(vec![
            node("raced", NodeState::Unknown, 0),
            node("fine", NodeState::Ready, 0),
            node("closing", NodeState::Unknown, 0),
        ]);
        let sessions = HashMap::from([
            ("raced".to_string(), session(t0, None)),
            ("fine".to_string(), session(t0, None)),
            ("closing".to_string(), session(t0, Some(t0))),
        ]);
        assert_eq!(connected_not_ready(&sessions, &st), ["raced"]);
    }
}
