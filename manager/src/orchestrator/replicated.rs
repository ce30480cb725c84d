//! Replicated services → tasks: one live task per slot `1..=replicas`, restarts by policy,
//! scale down from the highest slot, tasks moved off nodes that lost them, and rolling updates
//! slot by slot (see [`super::update`]).
//!
//! A live task whose node went away is replaced in the same slot at once, without the restart
//! delay and without using one of the policy's attempts: it did not fail by itself.
//!
//! * Node DOWN or removed: the task is dead already; every such slot is refilled in the same
//!   round.
//! * Node DRAINed, or its labels no longer satisfy the constraints: the task still runs, so the
//!   service is kept at most one task below its replicas while moving them. One such task per
//!   service is moved at a time — its replacement is created and the old task stopped in the
//!   same proposal (the replacement can only start on another node) — and the next only once no
//!   task of the service is starting (NEW, or ASSIGNED..STARTING). A task the scheduler cannot
//!   place (PENDING) does not hold the next move back: waiting would not make it start, and a
//!   drain must empty the node eventually. Until its turn, a task to be moved keeps running
//!   where it is.

use std::collections::BTreeMap;

use shoal_proto::{Node, Service, Task, TaskState};

use super::restart::{self, Restart};
use super::rollout::Rollout;
use super::{fate, is_live, new_task, starting, update, Fate, Plan};
use crate::constraint::Constraints;

pub(super) fn plan_service(
    service: &Service,
    tasks: &[&Task],
    nodes: &BTreeMap<String, Node>,
    now_ms: i64,
    plan: &mut Plan,
) {
    let replicas = service.spec.as_ref().map_or(0, |s| s.replicas);
    let constraints = Constraints::of_service(service).ok();
    let fate_of = |t: &Task| fate(t, nodes, constraints.as_ref());
    let mut by_slot = tasks.to_vec();
    let slots = restart::slot_histories(&mut by_slot);

    for &(slot, slot_tasks) in &slots {
        for t in slot_tasks {
            let live = t.desired() <= TaskState::Running;
            // Slot 0 holds the tasks of a global service whose mode was changed.
            if live && (slot == 0 || slot > replicas || t.state().is_terminal()) {
                // Scaled away, or ended by itself: it will not run again either way. Whether
                // the slot gets a new task is decided below from the history.
                plan.shut_down(t);
            }
        }
    }

    let any_outdated = tasks
        .iter()
        .any(|t| is_live(t) && update::outdated(service, t));
    let rollout = Rollout::begin(
        service,
        tasks,
        usize::try_from(replicas).unwrap_or(usize::MAX),
        any_outdated,
        now_ms,
        plan,
    );
    if plan.rolls_back(&service.id) {
        // The spec goes back this round: the next round plans with it.
        return;
    }

    let mut in_flight = tasks
        .iter()
        .filter(|t| is_live(t) && starting(t) && fate_of(t) == Fate::Stay)
        .count();
    let mut to_move: Vec<(u64, Vec<&Task>)> = Vec::new();
    // Rolling update state (see `update` and `rollout`): slots whose serving task has an old
    // spec, slots whose old task is still stopping, slots that run the current spec.
    let mut outdated_slots: Vec<&Task> = Vec::new();
    let mut stopping_old = 0;
    let mut stopped_now = 0;
    let mut running_current = 0;
    for slot in 1..=replicas {
        let history = restart::history_of(&slots, slot);
        let live: Vec<&Task> = history.iter().copied().filter(|t| is_live(t)).collect();
        if live.is_empty() {
            let newest = history.first().copied();
            if newest.is_some_and(|t| update::holds_place(service, t) && fate_of(t) == Fate::Stay) {
                // Stop-first: the slot's old task must stop before its replacement starts.
                stopping_old += 1;
                continue;
            }
            match restart::decision(history, now_ms) {
                Restart::Now => {
                    plan.create(new_task(service, slot, "", now_ms));
                    in_flight += 1;
                }
                Restart::At(at) => plan.wake_at(at),
                Restart::Never => {}
            }
            continue;
        }
        let (mut stays, mut moves) = (Vec::new(), Vec::new());
        for t in &live {
            match fate_of(t) {
                Fate::Stay => stays.push(*t),
                Fate::Lost => plan.shut_down(t),
                Fate::Move => moves.push(*t),
            }
        }
        if let Some(kept) = serving(&stays) {
            // Start-first: the slot's new task starts beside the old one, which serves until
            // the new one runs (then the new one is the furthest along and the old one goes).
            let replacing = update::starting_beside(service, kept, &stays);
            // The slot is served; anything else in it is surplus: tasks to move, and a second
            // task that stays (a plan made from a store missing the first one's creation, or a
            // proposal that timed out and yet committed, can give a slot two).
            moves.iter().for_each(|t| plan.shut_down(t));
            for t in stays
                .iter()
                .filter(|t| t.id != kept.id && Some(t.id.as_str()) != replacing)
            {
                plan.shut_down(t);
                // Start-first: the old task goes now that the new one runs; the slot is
                // being replaced until it has stopped.
                stopped_now += usize::from(update::outdated(service, t));
            }
            if replacing.is_none() && update::outdated(service, kept) {
                outdated_slots.push(kept);
            }
            if kept.state() == TaskState::Running && !update::outdated(service, kept) {
                running_current += 1;
            }
        } else if moves.is_empty() {
            // Every live task was lost with its node.
            plan.create(new_task(service, slot, "", now_ms));
            in_flight += 1;
        } else {
            to_move.push((slot, moves));
        }
    }
    for (slot, moves) in to_move {
        if in_flight > 0 {
            break;
        }
        plan.create(new_task(service, slot, "", now_ms));
        moves.iter().for_each(|t| plan.shut_down(t));
        in_flight += 1;
    }
    // Rolling-update steps, lowest slots first: stop-first stops the old task (the slot is
    // refilled with the current spec once it has stopped); start-first starts the new task
    // beside it.
    // Under either order a slot is being replaced until its old task has stopped.
    stopping_old = stopping_old.max(
        tasks
            .iter()
            .filter(|t| update::holds_place(service, t) && fate_of(t) == Fate::Stay)
            .count(),
    ) + stopped_now;
    let budget = rollout.budget(in_flight + stopping_old, plan);
    for old in outdated_slots.iter().take(budget) {
        if rollout.start_first() {
            plan.create(new_task(service, old.slot, "", now_ms));
            in_flight += 1;
        } else {
            plan.shut_down(old);
            stopping_old += 1;
        }
    }
    let settled = outdated_slots.is_empty()
        && stopping_old == 0
        && in_flight == 0
        && running_current == replicas;
    rollout.finish(service, settled, plan);
}

/// The task a slot keeps when several could serve it: the furthest along (a running task
/// over one still starting), and of those the newest (`stays` is newest first).
fn serving<'a>(stays: &[&'a Task]) -> Option<&'a Task> {
    stays
        .iter()
        .enumerate()
        .max_by_key(|(i, t)| (t.state(), std::cmp::Reverse(*i)))
        .map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{plan, DEFAULT_RESTART_DELAY_MS};
    use shoal_proto::{
        restart_policy::Condition, NodeAvailability, NodeState, Placement, RestartPolicy,
        ServiceMode, TaskStatus,
    };

    use super::*;
    use crate::store::StoreState;

    fn svc(replicas: u64, restart: Option<RestartPolicy>) -> Service {
        let mut s = service("s1", ServiceMode::Replicated, replicas);
        s.spec.as_mut().unwrap().restart = restart;
        s
    }

    fn state_with(service: Service, tasks: Vec<Task>) -> StoreState {
        state(vec![service], vec![], tasks)
    }

    fn with_desired(mut t: Task, desired: TaskState) -> Task {
        t.desired_state = desired as i32;
        t
    }

    fn slots(p: &Plan) -> Vec<u64> {
        created(p).into_iter().map(|(slot, _)| slot).collect()
    }

    #[test]
    fn a_slots_history_is_newest_first_and_empty_when_it_has_none() {
        let t = |id: &str, slot, at| task(id, slot, "", TaskState::Failed, at);
        let (a, b, c, d) = (
            t("a", 2, 1_000),
            t("b", 1, 1_000),
            t("c", 2, 3_000),
            t("d", 1, 2_000),
        );
        let mut tasks = vec![&a, &b, &c, &d];
        let histories = restart::slot_histories(&mut tasks);
        let ids = |h: &[&Task]| h.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        let slots: Vec<u64> = histories.iter().map(|&(slot, _)| slot).collect();
        assert_eq!(slots, [1, 2]);
        assert_eq!(ids(restart::history_of(&histories, 1)), ["d", "b"]);
        assert_eq!(ids(restart::history_of(&histories, 2)), ["c", "a"]);
        assert!(restart::history_of(&histories, 3).is_empty());
    }

    #[test]
    fn creates_one_task_per_slot() {
        let p = plan(&state_with(svc(3, None), vec![]), 0);
        assert_eq!(slots(&p), vec![1, 2, 3]);
        assert!(
            created(&p).iter().all(|(_, n)| n.is_empty()),
            "the scheduler picks the node"
        );
    }

    #[test]
    fn a_slot_with_two_live_tasks_keeps_one() {
        // Slot 1: a running task and a newer one still starting: the running one stays.
        // Slot 2: two running tasks: the newer stays.
        let tasks = vec![
            task("t1", 1, "", TaskState::Running, 1_000),
            task("t2", 1, "", TaskState::Assigned, 2_000),
            task("t3", 2, "", TaskState::Running, 1_000),
            task("t4", 2, "", TaskState::Running, 2_000),
        ];
        let p = plan(&state_with(svc(2, None), tasks), 3_000);
        assert!(created(&p).is_empty());
        assert_eq!(shut_down(&p), vec!["t2", "t3"]);
    }

    #[test]
    fn scale_down_stops_highest_slots() {
        let tasks = (1..=3)
            .map(|i| task(&format!("t{i}"), i, "", TaskState::Running, 0))
            .collect();
        let p = plan(&state_with(svc(1, None), tasks), 0);
        assert!(created(&p).is_empty());
        assert_eq!(shut_down(&p), vec!["t2", "t3"]);
    }

    #[test]
    fn failed_task_is_replaced_after_the_restart_delay() {
        let policy = RestartPolicy {
            delay_ms: 1000,
            ..Default::default()
        };
        let mut t = task("t1", 1, "", TaskState::Failed, 10_000);
        t.restart = Some(policy);
        let s = state_with(svc(1, Some(policy)), vec![t]);
        let early = plan(&s, 10_500);
        assert_eq!(
            shut_down(&early),
            vec!["t1"],
            "the dead task is marked at once"
        );
        assert!(created(&early).is_empty());
        assert_eq!(early.wake_at_ms, Some(11_000));
        let late = plan(&s, 11_000);
        assert_eq!(slots(&late), vec![1]);
    }

    #[test]
    fn default_restart_delay_applies_without_a_policy() {
        let t = with_desired(
            task("t1", 1, "", TaskState::Failed, 1_000),
            TaskState::Shutdown,
        );
        let mut t = t;
        t.restart = None;
        let p = plan(&state_with(svc(1, None), vec![t]), 1_000);
        assert_eq!(p.wake_at_ms, Some(1_000 + DEFAULT_RESTART_DELAY_MS as i64));
    }

    #[test]
    fn restart_condition_none_leaves_the_slot_finished() {
        let policy = RestartPolicy {
            condition: Condition::None as i32,
            ..Default::default()
        };
        let mut t = with_desired(
            task("t1", 1, "", TaskState::Complete, 0),
            TaskState::Shutdown,
        );
        t.restart = Some(policy);
        let p = plan(&state_with(svc(1, Some(policy)), vec![t]), 100_000);
        assert!(created(&p).is_empty());
    }

    #[test]
    fn on_failure_does_not_restart_a_clean_exit() {
        let policy = RestartPolicy {
            condition: Condition::OnFailure as i32,
            ..Default::default()
        };
        let mut ok = with_desired(
            task("t1", 1, "", TaskState::Complete, 0),
            TaskState::Shutdown,
        );
        ok.restart = Some(policy);
        let mut bad = with_desired(task("t2", 2, "", TaskState::Failed, 0), TaskState::Shutdown);
        bad.restart = Some(policy);
        let p = plan(&state_with(svc(2, Some(policy)), vec![ok, bad]), 100_000);
        assert_eq!(slots(&p), vec![2]);
    }

    #[test]
    fn max_attempts_stops_restarting() {
        let policy = RestartPolicy {
            max_attempts: 1,
            ..Default::default()
        };
        let mut a = with_desired(task("t1", 1, "", TaskState::Failed, 0), TaskState::Shutdown);
        a.restart = Some(policy);
        let mut b = with_desired(task("t2", 1, "", TaskState::Failed, 1), TaskState::Shutdown);
        b.restart = Some(policy);
        let p = plan(&state_with(svc(1, Some(policy)), vec![a, b]), 100_000);
        assert!(created(&p).is_empty());
    }

    #[test]
    fn scaled_down_slot_is_refilled_when_scaled_up_again() {
        let tasks = vec![with_desired(
            task("t2", 2, "", TaskState::Shutdown, 0),
            TaskState::Shutdown,
        )];
        let p = plan(&state_with(svc(2, None), tasks), 0);
        assert_eq!(slots(&p), vec![1, 2]);
    }

    #[test]
    fn tasks_of_a_removed_service_are_stopped() {
        let s = state(
            vec![],
            vec![],
            vec![task("t1", 1, "", TaskState::Running, 0)],
        );
        assert_eq!(shut_down(&plan(&s, 0)), vec!["t1"]);
    }

    #[test]
    fn tasks_of_a_former_global_service_are_stopped() {
        let s = state_with(
            svc(1, None),
            vec![task("g", 0, "n1", TaskState::Running, 0)],
        );
        let p = plan(&s, 0);
        assert_eq!(shut_down(&p), vec!["g"]);
        assert_eq!(slots(&p), vec![1]);
    }

    #[test]
    fn tasks_on_a_down_node_are_replaced_at_once_without_using_an_attempt() {
        let policy = RestartPolicy {
            max_attempts: 1,
            delay_ms: 60_000,
            ..Default::default()
        };
        // Slot 1 has used its one restart already; slots 2 and 3 run on the node that died.
        let mut used = with_desired(
            task("old", 1, "n2", TaskState::Failed, 0),
            TaskState::Shutdown,
        );
        used.restart = Some(policy);
        let mut t1 = task("t1", 1, "n1", TaskState::Running, 1);
        t1.restart = Some(policy);
        let t2 = task("t2", 2, "n1", TaskState::Starting, 1);
        let t3 = task("t3", 3, "n2", TaskState::Running, 1);
        let s = state(
            vec![svc(3, Some(policy))],
            vec![
                node("n1", NodeState::Down, NodeAvailability::Active),
                ready("n2"),
            ],
            vec![used, t1, t2, t3],
        );
        let p = plan(&s, 2);
        assert_eq!(shut_down(&p), vec!["t1", "t2"]);
        assert_eq!(slots(&p), vec![1, 2], "no delay, max attempts not consumed");
        let mut reported = reported(&p);
        reported.sort();
        assert_eq!(
            reported,
            vec![
                ("t1".to_string(), "node is down".to_string()),
                ("t2".to_string(), "node is down".to_string()),
            ]
        );
    }

    #[test]
    fn the_slot_of_a_task_reported_shut_down_for_a_dead_node_is_not_refilled_twice() {
        let lost = with_desired(
            task("lost", 1, "n1", TaskState::Shutdown, 0),
            TaskState::Shutdown,
        );
        let replacement = task("new", 1, "n2", TaskState::Running, 1);
        let s = state(
            vec![svc(1, None)],
            vec![
                node("n1", NodeState::Down, NodeAvailability::Active),
                ready("n2"),
            ],
            vec![lost, replacement],
        );
        let p = plan(&s, 2);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
    }

    fn drained_state(extra: Vec<Task>) -> StoreState {
        let mut tasks: Vec<Task> = (1..=3)
            .map(|i| task(&format!("t{i}"), i, "n1", TaskState::Running, 0))
            .collect();
        tasks.extend(extra);
        state(
            vec![svc(3, None)],
            vec![
                node("n1", NodeState::Ready, NodeAvailability::Drain),
                ready("n2"),
            ],
            tasks,
        )
    }

    #[test]
    fn drain_moves_one_task_at_a_time() {
        let p = plan(&drained_state(vec![]), 5);
        assert_eq!(slots(&p), vec![1]);
        assert_eq!(shut_down(&p), vec!["t1"]);
        assert!(reported(&p).is_empty(), "a drained node reports for itself");
        // The proposal creates the replacement before it stops the old task.
        let create_at = p.actions.iter().position(|a| {
            matches!(
                a.action,
                Some(shoal_proto::store_action::Action::CreateTask(_))
            )
        });
        let stop_at = p.actions.iter().position(|a| {
            matches!(
                a.action,
                Some(shoal_proto::store_action::Action::SetTaskDesiredState(_))
            )
        });
        assert!(create_at < stop_at);
    }

    #[test]
    fn drain_waits_while_the_previous_replacement_starts() {
        let old = with_desired(
            task("t1", 1, "n1", TaskState::Running, 0),
            TaskState::Shutdown,
        );
        for state_now in [TaskState::New, TaskState::Assigned, TaskState::Starting] {
            let replacement = task(
                "r1",
                1,
                if state_now == TaskState::New {
                    ""
                } else {
                    "n2"
                },
                state_now,
                5,
            );
            let mut s = drained_state(vec![replacement]);
            s.tasks.insert("t1".into(), old.clone());
            let p = plan(&s, 6);
            assert!(p.actions.is_empty(), "{state_now:?}: {:?}", p.actions);
        }
        let running = task("r1", 1, "n2", TaskState::Running, 5);
        let mut s = drained_state(vec![running]);
        s.tasks.insert("t1".into(), old.clone());
        let p = plan(&s, 6);
        assert_eq!(slots(&p), vec![2], "the next one moves once the last runs");
        assert_eq!(shut_down(&p), vec!["t2"]);
    }

    #[test]
    fn drain_does_not_wait_for_a_replacement_that_cannot_be_placed() {
        let old = with_desired(
            task("t1", 1, "n1", TaskState::Running, 0),
            TaskState::Shutdown,
        );
        let pending = task("r1", 1, "", TaskState::Pending, 5);
        let mut s = drained_state(vec![pending]);
        s.tasks.insert("t1".into(), old);
        let p = plan(&s, 6);
        assert_eq!(slots(&p), vec![2]);
    }

    #[test]
    fn tasks_no_longer_satisfying_constraints_are_moved() {
        let mut service = svc(2, None);
        service.spec.as_mut().unwrap().placement = Some(Placement {
            constraints: vec!["node.labels.zone==east".into()],
            max_replicas_per_node: 0,
        });
        let mut east = ready("east");
        east.labels.insert("zone".into(), "east".into());
        let mut west = ready("west");
        west.labels.insert("zone".into(), "west".into());
        let s = state(
            vec![service],
            vec![east, west],
            vec![
                task("ok", 1, "east", TaskState::Running, 0),
                task("bad", 2, "west", TaskState::Running, 0),
            ],
        );
        let p = plan(&s, 1);
        assert_eq!(shut_down(&p), vec!["bad"]);
        assert_eq!(slots(&p), vec![2]);
    }

    #[test]
    fn unparsable_constraints_do_not_stop_running_tasks() {
        let mut service = svc(1, None);
        service.spec.as_mut().unwrap().placement = Some(Placement {
            constraints: vec!["node.nope==1".into()],
            max_replicas_per_node: 0,
        });
        let s = state(
            vec![service],
            vec![ready("n1")],
            vec![task("t1", 1, "n1", TaskState::Running, 0)],
        );
        assert!(plan(&s, 1).actions.is_empty());
    }

    #[test]
    fn a_paused_node_keeps_its_tasks() {
        let s = state(
            vec![svc(1, None)],
            vec![node("n1", NodeState::Ready, NodeAvailability::Pause)],
            vec![task("t1", 1, "n1", TaskState::Running, 0)],
        );
        assert!(plan(&s, 1).actions.is_empty());
    }

    #[test]
    fn failed_status_keeps_the_restart_timestamp() {
        // A failure on a drained node is an ordinary failure: the policy applies.
        let mut t = task("t1", 1, "n1", TaskState::Failed, 1_000);
        t.restart = Some(RestartPolicy {
            delay_ms: 500,
            ..Default::default()
        });
        t.status = Some(TaskStatus {
            state: TaskState::Failed as i32,
            timestamp_ms: 1_000,
            exit_code: 1,
            ..Default::default()
        });
        let s = state(
            vec![svc(1, None)],
            vec![node("n1", NodeState::Ready, NodeAvailability::Drain)],
            vec![t],
        );
        let p = plan(&s, 1_100);
        assert_eq!(shut_down(&p), vec!["t1"]);
        assert!(created(&p).is_empty());
        assert_eq!(p.wake_at_ms, Some(1_500));
    }
}
