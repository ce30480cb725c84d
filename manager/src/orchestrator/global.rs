//! Global services → tasks: one live task on every eligible node.
//!
//! As in swarmkit, a global task has slot 0 and its node set at creation; the scheduler only
//! checks that node and assigns it. The restart policy applies per node as it does per slot.
//!
//! * A node gets a new task when it is not DOWN (a node that has just registered counts, its
//!   task waits in PENDING until the node is READY), is ACTIVE, and satisfies the service's
//!   constraints.
//! * A node keeps its task while it is not DOWN and not DRAINed and satisfies the constraints:
//!   PAUSE keeps what runs but gets nothing new, as docker.
//! * Otherwise the task is shut down; there is nowhere to move it, so no replacement is made.
//! * A changed container spec is rolled out node by node ([`super::update`], paced by
//!   [`super::rollout`]).

use std::collections::BTreeMap;

use shoal_proto::{Node, NodeAvailability, NodeState, Service, Task, TaskState};

use super::restart::{self, Restart};
use super::rollout::Rollout;
use super::{fate, is_live, new_task, starting, update, Fate, Plan};
use crate::constraint::Constraints;

/// Whether `node` should get a task of a global service with these constraints (`None`:
/// unparsable, ignored here; the scheduler reports the error).
pub(super) fn accepts_new(node: &Node, constraints: Option<&Constraints>) -> bool {
    node.state() != NodeState::Down
        && node.availability() == NodeAvailability::Active
        && constraints.is_none_or(|c| c.matches(node))
}

pub(super) fn plan_service(
    service: &Service,
    tasks: &[&Task],
    nodes: &BTreeMap<String, Node>,
    now_ms: i64,
    plan: &mut Plan,
) {
    let constraints = Constraints::of_service(service).ok();
    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        let desired_running = t.desired() <= TaskState::Running;
        if t.slot != 0 || t.node_id.is_empty() {
            // A task of the service's replicated past: it has no node of its own here.
            if desired_running {
                plan.shut_down(t);
            }
            continue;
        }
        if desired_running && t.state().is_terminal() {
            // Ended by itself; whether the node gets a new one is decided below.
            plan.shut_down(t);
        }
        by_node.entry(t.node_id.as_str()).or_default().push(t);
    }
    for history in by_node.values_mut() {
        restart::newest_first(history);
    }

    let any_outdated = tasks
        .iter()
        .any(|t| is_live(t) && update::outdated(service, t));
    let eligible = nodes
        .values()
        .filter(|n| accepts_new(n, constraints.as_ref()))
        .count();
    let rollout = Rollout::begin(service, tasks, eligible, any_outdated, now_ms, plan);
    if plan.rolls_back(&service.id) {
        // The spec goes back this round: the next round plans with it.
        return;
    }

    let mut in_flight = 0;
    let mut stopped_now = 0;
    let mut outdated: Vec<&Task> = Vec::new();
    for history in by_node.values() {
        // All tasks here share one node, so one fate. One task per node: the newest stays,
        // and under start-first the old task it is replacing, until the new one runs.
        let live: Vec<&Task> = history.iter().copied().filter(|t| is_live(t)).collect();
        let Some(&newest) = live.first() else {
            continue;
        };
        if fate(newest, nodes, constraints.as_ref()) != Fate::Stay {
            live.iter().for_each(|t| plan.shut_down(t));
            continue;
        }
        let beside = live
            .get(1)
            .copied()
            .filter(|old| update::starting_beside(service, old, &live) == Some(newest.id.as_str()));
        in_flight += usize::from(starting(newest));
        if beside.is_none() && update::outdated(service, newest) {
            outdated.push(newest);
        }
        for t in live
            .iter()
            .skip(1)
            .filter(|t| beside.is_none_or(|b| b.id != t.id))
        {
            plan.shut_down(t);
            // Start-first: the old task goes now that the new one runs; the node is being
            // replaced until it has stopped.
            stopped_now += usize::from(update::outdated(service, t));
        }
    }

    let (mut stopping_old, mut waiting) = (0, false);
    for node in nodes.values() {
        if !accepts_new(node, constraints.as_ref()) {
            continue;
        }
        let history = by_node.get(node.id.as_str()).map_or(&[][..], Vec::as_slice);
        if history.iter().any(|t| is_live(t)) {
            continue;
        }
        let newest = history.first().copied();
        if newest.is_some_and(|t| update::holds_place(service, t)) {
            // Stop-first: the node's old task must stop before its replacement starts (the
            // node accepts new tasks, so it is not DOWN: the old task can still stop).
            stopping_old += 1;
            continue;
        }
        match restart::decision(history, now_ms) {
            Restart::Now => {
                plan.create(new_task(service, 0, &node.id, now_ms));
                in_flight += 1;
            }
            Restart::At(at) => {
                plan.wake_at(at);
                waiting = true;
            }
            Restart::Never => waiting = true,
        }
    }
    // Rolling-update steps, node by node (in node ID order).
    // Under either order a node is being replaced until its old task has stopped.
    stopping_old = stopping_old.max(
        tasks
            .iter()
            .filter(|t| {
                update::holds_place(service, t)
                    && fate(t, nodes, constraints.as_ref()) == Fate::Stay
            })
            .count(),
    ) + stopped_now;
    let budget = rollout.budget(in_flight + stopping_old, plan);
    for old in outdated.iter().take(budget) {
        if rollout.start_first() {
            plan.create(new_task(service, 0, &old.node_id, now_ms));
            in_flight += 1;
        } else {
            plan.shut_down(old);
            stopping_old += 1;
        }
    }
    let settled = outdated.is_empty() && stopping_old == 0 && in_flight == 0 && !waiting;
    rollout.finish(service, settled, plan);
}

#[cfg(test)]
mod tests {
    use super::super::plan;
    use super::super::testing::*;
    use super::*;
    use shoal_proto::{NodeRole, Placement, RestartPolicy, ServiceMode};

    fn global(constraints: &[&str]) -> Service {
        let mut s = service("s1", ServiceMode::Global, 0);
        s.spec.as_mut().unwrap().placement = Some(Placement {
            constraints: constraints.iter().map(|c| c.to_string()).collect(),
            max_replicas_per_node: 0,
        });
        s
    }

    fn on(id: &str, node: &str, state: TaskState, at: i64) -> Task {
        task(id, 0, node, state, at)
    }

    fn nodes_of(p: &Plan) -> Vec<String> {
        let mut n: Vec<String> = created(p)
            .into_iter()
            .map(|(slot, node)| {
                assert_eq!(slot, 0, "global tasks have slot 0");
                node
            })
            .collect();
        n.sort();
        n
    }

    #[test]
    fn one_task_per_eligible_node() {
        let mut manager = ready("m");
        manager.role = NodeRole::Manager as i32;
        let s = state(
            vec![global(&[])],
            vec![
                manager,
                ready("w1"),
                node("new", NodeState::Unknown, NodeAvailability::Active),
                node("down", NodeState::Down, NodeAvailability::Active),
                node("paused", NodeState::Ready, NodeAvailability::Pause),
                node("drained", NodeState::Ready, NodeAvailability::Drain),
            ],
            vec![],
        );
        assert_eq!(nodes_of(&plan(&s, 0)), vec!["m", "new", "w1"]);
    }

    #[test]
    fn constraints_choose_the_nodes() {
        let mut manager = ready("m");
        manager.role = NodeRole::Manager as i32;
        let s = state(
            vec![global(&["node.role==worker"])],
            vec![manager, ready("w1"), ready("w2")],
            vec![],
        );
        assert_eq!(nodes_of(&plan(&s, 0)), vec!["w1", "w2"]);
    }

    #[test]
    fn a_node_with_a_task_gets_no_second_one() {
        let s = state(
            vec![global(&[])],
            vec![ready("n1"), ready("n2")],
            vec![on("t1", "n1", TaskState::Running, 0)],
        );
        let p = plan(&s, 1);
        assert_eq!(nodes_of(&p), vec!["n2"], "a new node gets a task");
        assert!(shut_down(&p).is_empty());
    }

    #[test]
    fn tasks_leave_drained_down_and_unsuitable_nodes() {
        let mut relabelled = ready("relabelled");
        relabelled.labels.insert("zone".into(), "west".into());
        let mut east = ready("east");
        east.labels.insert("zone".into(), "east".into());
        let mut paused = node("paused", NodeState::Ready, NodeAvailability::Pause);
        paused.labels.insert("zone".into(), "east".into());
        let s = state(
            vec![global(&["node.labels.zone==east"])],
            vec![
                relabelled,
                east,
                paused,
                node("drained", NodeState::Ready, NodeAvailability::Drain),
                node("down", NodeState::Down, NodeAvailability::Active),
            ],
            vec![
                on("t-relabelled", "relabelled", TaskState::Running, 0),
                on("t-east", "east", TaskState::Running, 0),
                on("t-paused", "paused", TaskState::Running, 0),
                on("t-drained", "drained", TaskState::Running, 0),
                on("t-down", "down", TaskState::Running, 0),
                on("t-removed", "removed", TaskState::Running, 0),
            ],
        );
        let p = plan(&s, 1);
        assert_eq!(
            shut_down(&p),
            vec!["t-down", "t-drained", "t-relabelled", "t-removed"]
        );
        assert!(created(&p).is_empty(), "nowhere to move a global task");
        let mut reported = reported(&p);
        reported.sort();
        assert_eq!(
            reported,
            vec![
                ("t-down".to_string(), "node is down".to_string()),
                (
                    "t-removed".to_string(),
                    "node was removed from the swarm".to_string()
                ),
            ]
        );
    }

    #[test]
    fn restart_policy_applies_per_node() {
        let policy = RestartPolicy {
            delay_ms: 1_000,
            max_attempts: 1,
            ..Default::default()
        };
        let mut service = global(&[]);
        service.spec.as_mut().unwrap().restart = Some(policy);
        let failed = |id: &str, node: &str, at: i64| {
            let mut t = on(id, node, TaskState::Failed, at);
            t.desired_state = TaskState::Shutdown as i32;
            t.restart = Some(policy);
            t
        };
        let s = state(
            vec![service],
            vec![ready("a"), ready("b")],
            // a: failed once (a restart is left); b: failed twice (none left).
            vec![
                failed("a1", "a", 10_000),
                failed("b1", "b", 0),
                failed("b2", "b", 10_000),
            ],
        );
        let early = plan(&s, 10_500);
        assert!(created(&early).is_empty());
        assert_eq!(early.wake_at_ms, Some(11_000));
        assert_eq!(nodes_of(&plan(&s, 11_000)), vec!["a"]);
    }

    #[test]
    fn a_reactivated_node_gets_a_task_again_at_once() {
        let mut stopped = on("t1", "n1", TaskState::Shutdown, 0);
        stopped.desired_state = TaskState::Shutdown as i32;
        let s = state(vec![global(&[])], vec![ready("n1")], vec![stopped]);
        assert_eq!(nodes_of(&plan(&s, 1)), vec!["n1"]);
    }

    #[test]
    fn replicated_leftovers_and_duplicates_are_stopped() {
        let s = state(
            vec![global(&[])],
            vec![ready("n1")],
            vec![
                task("slot1", 1, "n1", TaskState::Running, 0),
                on("older", "n1", TaskState::Running, 0),
                on("newer", "n1", TaskState::Running, 1),
            ],
        );
        let p = plan(&s, 2);
        assert_eq!(shut_down(&p), vec!["older", "slot1"]);
        assert!(created(&p).is_empty());
    }
}
