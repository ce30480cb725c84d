//! The restart policy: whether a slot (replicated) or a node (global) whose task ended gets a
//! new one, and when. One rule for both modes, fed the history of that slot or node.

use shoal_proto::{restart_policy::Condition, RestartPolicy, Task, TaskState};

/// Docker's default restart delay.
pub const DEFAULT_RESTART_DELAY_MS: u64 = 5_000;

pub(crate) enum Restart {
    Now,
    At(i64),
    Never,
}

/// Whether a slot or node with no live task gets a new one, from its history (newest first).
pub(crate) fn decision(history: &[&Task], now_ms: i64) -> Restart {
    let Some(newest) = history.first() else {
        return Restart::Now;
    };
    let state = newest.state();
    // Not finished yet (being shut down) or stopped by us (scale down, drain, node down, then
    // wanted again): the task did not end by itself, so the policy does not apply.
    if !state.is_terminal() || state == TaskState::Shutdown {
        return Restart::Now;
    }
    let policy = newest.restart.unwrap_or_default();
    let failed = state != TaskState::Complete || exit_code(newest) != 0;
    let wanted = match Condition::try_from(policy.condition).unwrap_or(Condition::Any) {
        Condition::Any => true,
        Condition::None => false,
        Condition::OnFailure => failed,
    };
    if !wanted || attempts_exhausted(&policy, history, now_ms) {
        return Restart::Never;
    }
    let delay = if policy.delay_ms == 0 && newest.restart.is_none() {
        DEFAULT_RESTART_DELAY_MS
    } else {
        policy.delay_ms
    };
    let at = status_ms(newest).saturating_add(delay as i64);
    if at <= now_ms {
        Restart::Now
    } else {
        Restart::At(at)
    }
}

/// `max_attempts` restarts are allowed (within `window_ms` when set): the first run does not
/// count, so the slot has used `ended - 1` restarts. Tasks that we shut down (SHUTDOWN: scaled
/// away, drained, lost with their node) did not end by themselves and use no attempt.
fn attempts_exhausted(policy: &RestartPolicy, history: &[&Task], now_ms: i64) -> bool {
    if policy.max_attempts == 0 {
        return false;
    }
    let ended = history
        .iter()
        .filter(|t| {
            let s = t.state();
            s.is_terminal() && s != TaskState::Shutdown
        })
        .filter(|t| policy.window_ms == 0 || now_ms - status_ms(t) <= policy.window_ms as i64)
        .count() as u64;
    ended > policy.max_attempts
}

/// Creation order: time, then the Raft index that created it (same-millisecond tasks).
pub(crate) fn created_ms(t: &Task) -> (i64, u64) {
    let meta = t.meta.as_ref();
    (
        meta.map_or(0, |m| m.created_at_ms),
        meta.map_or(0, |m| m.version),
    )
}

/// Sorts a slot's or node's history newest first, as [`decision`] expects.
pub(crate) fn newest_first(tasks: &mut [&Task]) {
    tasks.sort_by_key(|t| std::cmp::Reverse(created_ms(t)));
}

/// Every slot's history in `tasks`, by slot, each newest first, as runs of `tasks` (sorted in
/// place): one sort instead of a map holding a vector per slot. A round plans a
/// thousand-replica service from these, and did so many times while its tasks started.
pub(crate) fn slot_histories<'s, 't>(tasks: &'s mut [&'t Task]) -> Vec<(u64, &'s [&'t Task])> {
    // Stable, like `newest_first`: tasks created in the same entry keep the caller's order.
    tasks.sort_by_key(|t| (t.slot, std::cmp::Reverse(created_ms(t))));
    tasks
        .chunk_by(|a, b| a.slot == b.slot)
        .map(|run| (run[0].slot, run))
        .collect()
}

/// The history of `slot` among `histories` (from [`slot_histories`]); empty if it has none.
pub(crate) fn history_of<'s, 't>(histories: &[(u64, &'s [&'t Task])], slot: u64) -> &'s [&'t Task] {
    histories
        .binary_search_by_key(&slot, |&(s, _)| s)
        .map_or(&[], |i| histories[i].1)
}

fn status_ms(t: &Task) -> i64 {
    t.status.as_ref().map_or(0, |s| s.timestamp_ms)
}

fn exit_code(t: &Task) -> i32 {
    t.status.as_ref().map_or(0, |s| s.exit_code)
}
