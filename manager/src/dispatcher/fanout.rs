//! Which sessions a store change concerns, so that a thousand sessions do not each re-read a
//! hundred thousand tasks after every log entry.
//!
//! One task per dispatcher ([`Fanout::run`]) follows the applied entries and keeps an index of
//! the tasks by node, and of the tasks that are on networks. After each entry it wakes the
//! sessions of the nodes whose tasks it touched (not for a worker's own status reports); a
//! change that may concern every node (a node, the cluster, a service with a VIP, a network, or
//! a task on a network, whose peer tables every node on that network holds) wakes them all. A
//! woken session computes its message from the store as before, taking its tasks from the
//! index instead of scanning the store.
//!
//! The index may lag the store by the entries not yet folded in, never lead it: a session that
//! misses a task just assigned is woken again once the entry is folded in.
//!
//! With each task the index keeps what a session compares before sending ([`Indexed`]: the
//! task's [`assignments::Key`] once it is the node's to run), so that a woken session finds what
//! changed for its node from the index alone, without reading its hundred tasks from the store
//! on every wake-up. A task's node is set
//! at most once (creation or assignment), so an indexed task stays until it is deleted. A lagged
//! receiver rebuilds the index from the store and wakes every session (reconcile, don't
//! replay).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use shoal_proto::{store_action::Action, StoreAction, Task, TaskState};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::Notify;

use super::assignments::{self, Delta, Key, Sent};
use crate::ids::IdMap;
use crate::store::{Applied, Store, StoreState};

/// What a session needs to know of a task of its node without reading it from the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Indexed {
    /// The task's key once it is the node's to run (ASSIGNED or later; a global task carries
    /// its node from creation, before the scheduler has checked it); `None` before.
    key: Option<Key>,
    /// It references secrets or configs.
    refs: bool,
}

impl Indexed {
    fn of(t: &Task) -> Self {
        Indexed {
            key: (t.state() >= TaskState::Assigned).then(|| assignments::key_of(t)),
            refs: t
                .spec
                .as_ref()
                .is_some_and(|c| !c.secrets.is_empty() || !c.configs.is_empty()),
        }
    }
}

/// A session's registration in the index.
struct Watch {
    notify: Arc<Notify>,
    pending: Pending,
}

/// What changed for a session since it last looked.
enum Pending {
    /// Anything may have: it compares every task of its node (its first look, and after an
    /// entry that woke every session).
    Everything,
    /// Only these tasks of its node.
    Tasks(BTreeSet<String>),
}

/// What a woken session learns from the index: how its node's tasks differ from what it sent,
/// and which of them reference secrets or configs.
pub(super) struct Look {
    pub delta: Delta,
    pub with_refs: Vec<String>,
}

#[derive(Default)]
struct Index {
    /// Node → its tasks (any state), by task ID (the store's order), with what a session
    /// compares of each.
    by_node: IdMap<BTreeMap<String, Indexed>>,
    /// Task → its node, for the tasks that have one.
    node_of: IdMap<String>,
    /// Tasks with network attachments: the only ones in peer tables.
    networked: BTreeSet<String>,
    /// Open sessions: node → session ID → its wake-up and what it has to look at.
    waiters: IdMap<IdMap<Watch>>,
    /// Built from the store and following its entries ([`Fanout::start`]).
    started: bool,
    /// The store's entries stopped: sessions end.
    closed: bool,
    /// Bumped whenever every session is woken: what does not depend on a node's own tasks
    /// can only have changed then.
    generation: u64,
}

impl Index {
    fn add(&mut self, t: &Task) {
        if !t.networks.is_empty() {
            self.networked.insert(t.id.clone());
        }
        self.refresh(t);
    }

    /// Indexes `t` under its node (if it has one) as it is now.
    fn refresh(&mut self, t: &Task) {
        if t.node_id.is_empty() {
            return;
        }
        let now = Indexed::of(t);
        if self.node_of.get(&t.id) == Some(&t.node_id) {
            if let Some(slot) = self
                .by_node
                .get_mut(&t.node_id)
                .and_then(|m| m.get_mut(&t.id))
            {
                *slot = now;
                return;
            }
        }
        self.place(&t.id, &t.node_id, now);
    }

    fn place(&mut self, task: &str, node: &str, indexed: Indexed) {
        if let Some(old) = self.node_of.insert(task.to_string(), node.to_string()) {
            if old != node {
                if let Some(set) = self.by_node.get_mut(&old) {
                    set.remove(task);
                }
            }
        }
        self.by_node
            .entry(node.to_string())
            .or_default()
            .insert(task.to_string(), indexed);
    }

    fn remove(&mut self, task: &str) {
        self.networked.remove(task);
        if let Some(node) = self.node_of.remove(task) {
            if let Some(set) = self.by_node.get_mut(&node) {
                set.remove(task);
                if set.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
    }

    fn rebuild(&mut self, st: &StoreState) {
        self.by_node.clear();
        self.node_of.clear();
        self.networked.clear();
        for t in st.tasks.values() {
            self.add(t);
        }
    }

    fn wake(&self, node: &str) {
        for w in self.waiters.get(node).into_iter().flat_map(|m| m.values()) {
            w.notify.notify_one();
        }
    }

    fn wake_all(&mut self) {
        self.generation += 1;
        for w in self.waiters.values_mut().flat_map(|m| m.values_mut()) {
            w.pending = Pending::Everything;
            w.notify.notify_one();
        }
    }

    /// Notes for the sessions of `task`'s node that the task changed; returns the node.
    fn touch(&mut self, task: &str) -> Option<&String> {
        let node = self.node_of.get(task)?;
        for w in self
            .waiters
            .get_mut(node)
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            if let Pending::Tasks(ids) = &mut w.pending {
                ids.insert(task.to_string());
            }
        }
        Some(node)
    }
}

/// Whom one entry's actions concern.
enum Woken {
    All,
    Nodes(BTreeSet<String>),
}

/// See the module documentation. Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Fanout {
    index: Arc<Mutex<Index>>,
}

/// A session's registration; dropping it unregisters.
pub(super) struct Waiter {
    fanout: Fanout,
    node: String,
    session: String,
    pub(super) notify: Arc<Notify>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut ix = self.fanout.lock();
        if let Some(m) = ix.waiters.get_mut(&self.node) {
            m.remove(&self.session);
            if m.is_empty() {
                ix.waiters.remove(&self.node);
            }
        }
    }
}

impl Fanout {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session of `node`; it is woken (a stored permit, so no wake-up is lost
    /// between two looks) whenever an entry may change what it sends.
    pub(super) fn register(&self, node: &str, session: &str) -> Waiter {
        let notify = Arc::new(Notify::new());
        self.lock()
            .waiters
            .entry(node.to_string())
            .or_default()
            .insert(
                session.to_string(),
                Watch {
                    notify: notify.clone(),
                    pending: Pending::Everything,
                },
            );
        Waiter {
            fanout: self.clone(),
            node: node.to_string(),
            session: session.to_string(),
            notify,
        }
    }

    /// See [`Index::generation`].
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(super) fn closed(&self) -> bool {
        self.lock().closed
    }

    /// The IDs of `node`'s tasks as indexed, by task ID.
    pub(super) fn tasks_of(&self, node: &str) -> Vec<String> {
        self.lock()
            .by_node
            .get(node)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// How the tasks of `waiter`'s node as indexed differ from what its session `sent`:
    /// looking only at the tasks that changed since its last look, unless anything may have.
    pub(super) fn look(&self, waiter: &Waiter, sent: &Sent) -> Look {
        let mut ix = self.lock();
        let pending = ix
            .waiters
            .get_mut(&waiter.node)
            .and_then(|m| m.get_mut(&waiter.session))
            .map_or(Pending::Everything, |w| {
                std::mem::replace(&mut w.pending, Pending::Tasks(BTreeSet::new()))
            });
        let empty = BTreeMap::new();
        let tasks = ix.by_node.get(&waiter.node).unwrap_or(&empty);
        let now = |id: &str| tasks.get(id).and_then(|i| i.key);
        let delta = match &pending {
            Pending::Everything => {
                let gone = sent.ids().filter(|id| !tasks.contains_key(*id));
                sent.delta(tasks.keys().map(String::as_str).chain(gone), now)
            }
            Pending::Tasks(ids) => sent.delta(ids.iter().map(String::as_str), now),
        };
        Look {
            delta,
            with_refs: tasks
                .iter()
                .filter(|(_, i)| i.refs && i.key.is_some())
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }

    /// The IDs of the tasks with network attachments, by task ID.
    pub(super) fn networked(&self) -> Vec<String> {
        self.lock().networked.iter().cloned().collect()
    }

    /// Rebuilds the index from the store and wakes every session. Besides a lagged receiver,
    /// a new term of leadership does it: as a follower this manager may have installed a
    /// leader's snapshot, which replaces the store without an entry to fold.
    pub(super) fn resync(&self, store: &Store) {
        store.view(|st| {
            let mut ix = self.lock();
            ix.rebuild(st);
            ix.wake_all();
        });
    }

    /// Builds the index from the store and follows its entries from then on, on a task of its
    /// own; does nothing if it already does. When it returns the index holds every task applied
    /// so far, so a session registered after it never looks at an index not yet built: that
    /// look would tell its worker it runs nothing, and the worker would stop its containers (a
    /// manager restarted with running tasks did, now and then, when the index was built on the
    /// following task only).
    pub(super) fn start(&self, store: &Store) {
        store.view(|st| {
            let mut ix = self.lock();
            if ix.started {
                return;
            }
            ix.started = true;
            // Subscribed while the store cannot change: every entry `st` lacks is received.
            let events = store.subscribe();
            ix.rebuild(st);
            ix.wake_all();
            tokio::spawn(self.clone().follow(store.clone(), events));
        });
    }

    /// Whether [`Fanout::start`] ran.
    pub(super) fn started(&self) -> bool {
        self.lock().started
    }

    /// Folds the store's entries in until they stop; see the module documentation.
    async fn follow(self, store: Store, mut events: broadcast::Receiver<Arc<Applied>>) {
        loop {
            match events.recv().await {
                Ok(applied) => {
                    let woken = store.view(|st| self.fold(st, &applied.actions));
                    let mut ix = self.lock();
                    match woken {
                        Woken::All => ix.wake_all(),
                        Woken::Nodes(nodes) => nodes.iter().for_each(|n| ix.wake(n)),
                    }
                }
                Err(RecvError::Lagged(_)) => self.resync(&store),
                Err(RecvError::Closed) => {
                    let mut ix = self.lock();
                    ix.closed = true;
                    ix.wake_all();
                    return;
                }
            }
        }
    }

    /// Folds one applied entry into the index; returns whom it concerns. `st` is the store as
    /// of this entry or later.
    fn fold(&self, st: &StoreState, actions: &[StoreAction]) -> Woken {
        let mut ix = self.lock();
        let mut nodes = BTreeSet::new();
        let mut all = false;
        for a in actions {
            let task_id = match &a.action {
                Some(Action::CreateTask(t)) => {
                    ix.add(t);
                    &t.id
                }
                Some(Action::AssignTask(a)) => {
                    ix.place(&a.task_id, &a.node_id, Indexed::default());
                    &a.task_id
                }
                // A status past ASSIGNED is the worker's own report (or the orchestrator's for
                // a node that is down): sending it back tells the worker nothing, so it wakes
                // no session, as in swarmkit's dispatcher. Otherwise each report re-sent a
                // node its whole task set: four reports per task, a hundred tasks per node.
                // A task on a network is in peer tables, which its state changes.
                Some(Action::UpdateTaskStatus(u))
                    if u.status
                        .as_ref()
                        .is_some_and(|s| s.state > TaskState::Assigned as i32) =>
                {
                    let task = st.tasks.get(&u.task_id);
                    let networked = ix.networked.contains(&u.task_id)
                        || task.is_some_and(|t| !t.networks.is_empty());
                    all |= networked;
                    // Its key changes once it is finished: the node hears of it with the
                    // next change that wakes its session.
                    if let Some(t) = task {
                        ix.refresh(t);
                        ix.touch(&t.id);
                    }
                    continue;
                }
                Some(Action::UpdateTaskStatus(u)) | Some(Action::MarkTaskPending(u)) => &u.task_id,
                Some(Action::SetTaskDesiredState(d)) => &d.task_id,
                Some(Action::AllocateTask(a)) => &a.task_id,
                Some(Action::DeleteTask(id)) => {
                    if ix.networked.contains(id) {
                        all = true;
                    }
                    if let Some(node) = ix.touch(id) {
                        nodes.insert(node.clone());
                    }
                    ix.remove(id);
                    continue;
                }
                // A new service is in peer tables only through its VIPs: one without (no
                // network, no published port) concerns no session until its tasks are placed,
                // which their own entries tell. Creating a hundred services then does not
                // rebuild a thousand sessions' messages a hundred times.
                Some(Action::CreateService(s))
                    if s.endpoint.as_ref().is_none_or(|e| e.virtual_ips.is_empty()) =>
                {
                    continue;
                }
                // A new secret or config is in no session's message until a task references it
                // (through a service created or updated after it), which that task's entries
                // tell. Deleting one (rare) reaches every session below.
                Some(Action::CreateSecret(_)) | Some(Action::CreateConfig(_)) => continue,
                // Nodes, services, networks and the cluster reach every session (managers'
                // addresses, roles, peer tables, VIPs).
                _ => {
                    all = true;
                    continue;
                }
            };
            // The task as the store holds it now (this entry, or a later one this fold has
            // not seen yet) is what the index keeps.
            if let Some(t) = st.tasks.get(task_id) {
                if !t.networks.is_empty() {
                    ix.networked.insert(t.id.clone());
                }
                ix.refresh(t);
            }
            if ix.networked.contains(task_id) {
                all = true;
            }
            if let Some(node) = ix.touch(task_id) {
                nodes.insert(node.clone());
            }
        }
        if all {
            Woken::All
        } else {
            Woken::Nodes(nodes)
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_proto::{NetworkAttachment, TaskAssignment, TaskStatusUpdate};

    use super::*;

    fn act(a: Action) -> StoreAction {
        StoreAction { action: Some(a) }
    }

    fn task(id: &str, node: &str, networked: bool) -> Task {
        Task {
            id: id.into(),
            node_id: node.into(),
            networks: if networked {
                vec![NetworkAttachment::default()]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    fn woken_nodes(w: Woken) -> Option<Vec<String>> {
        match w {
            Woken::All => None,
            Woken::Nodes(n) => Some(n.into_iter().collect()),
        }
    }

    #[test]
    fn task_changes_wake_only_their_node_and_networked_ones_wake_all() {
        let f = Fanout::default();
        let mut st = StoreState::default();
        // Created unplaced: nobody to wake yet.
        let w = f.fold(
            &st,
            &[act(Action::CreateTask(task("t1", "", false).into()))],
        );
        assert_eq!(woken_nodes(w), Some(vec![]));
        st.tasks.insert("t1".into(), task("t1", "n1", false));
        let assign = Action::AssignTask(TaskAssignment {
            task_id: "t1".into(),
            node_id: "n1".into(),
            message: String::new(),
            timestamp_ms: 0,
        });
        assert_eq!(
            woken_nodes(f.fold(&st, &[act(assign)])),
            Some(vec!["n1".into()])
        );
        assert_eq!(f.tasks_of("n1"), ["t1"]);
        let status = Action::UpdateTaskStatus(TaskStatusUpdate {
            task_id: "t1".into(),
            status: None,
        });
        assert_eq!(
            woken_nodes(f.fold(&st, &[act(status)])),
            Some(vec!["n1".into()])
        );
        // The worker's own report of a state past ASSIGNED goes back to nobody.
        let running = |id: &str| {
            act(Action::UpdateTaskStatus(TaskStatusUpdate {
                task_id: id.into(),
                status: Some(shoal_proto::TaskStatus {
                    state: TaskState::Running as i32,
                    ..Default::default()
                }),
            }))
        };
        assert_eq!(woken_nodes(f.fold(&st, &[running("t1")])), Some(vec![]));

        // A task on a network is in other nodes' peer tables: everyone.
        st.tasks.insert("t2".into(), task("t2", "n2", true));
        let w = f.fold(
            &st,
            &[act(Action::CreateTask(task("t2", "n2", true).into()))],
        );
        assert!(woken_nodes(w).is_none());
        assert_eq!(f.networked(), ["t2"]);
        assert!(
            woken_nodes(f.fold(&st, &[running("t2")])).is_none(),
            "its state is in peer tables"
        );

        // Deleted: its node is told, and it leaves the index.
        st.tasks.remove("t1");
        let w = f.fold(&st, &[act(Action::DeleteTask("t1".into()))]);
        assert_eq!(woken_nodes(w), Some(vec!["n1".into()]));
        assert!(f.tasks_of("n1").is_empty());

        // Anything else reaches every session.
        let w = f.fold(&st, &[act(Action::DeleteService("s".into()))]);
        assert!(woken_nodes(w).is_none());

        // But a new service without a VIP is in no peer table.
        let plain = shoal_proto::Service::default();
        let w = f.fold(&st, &[act(Action::CreateService(plain.clone().into()))]);
        assert_eq!(woken_nodes(w), Some(vec![]));
        let mut with_vip = plain;
        with_vip.endpoint = Some(shoal_proto::Endpoint {
            virtual_ips: vec![shoal_proto::VirtualIp::default()],
            ..Default::default()
        });
        let w = f.fold(&st, &[act(Action::CreateService(with_vip.into()))]);
        assert!(woken_nodes(w).is_none());

        // A new secret is in no session's message until a task references it.
        let w = f.fold(
            &st,
            &[act(Action::CreateSecret(
                shoal_proto::Secret::default().into(),
            ))],
        );
        assert_eq!(woken_nodes(w), Some(vec![]));
    }

    #[test]
    fn a_session_looks_up_what_changed_in_the_index_alone() {
        let f = Fanout::default();
        let mut st = StoreState::default();
        let with_state = |state: TaskState| {
            let mut t = task("t1", "n1", false);
            t.desired_state = TaskState::Running as i32;
            t.status = Some(shoal_proto::TaskStatus {
                state: state as i32,
                ..Default::default()
            });
            t
        };
        // A global task carries its node from creation: not the node's to run yet.
        st.tasks.insert("t1".into(), with_state(TaskState::New));
        f.fold(
            &st,
            &[act(Action::CreateTask(with_state(TaskState::New).into()))],
        );
        let mut sent = Sent::default();
        let session = f.register("n1", "s1");
        assert!(f.look(&session, &sent).delta.is_empty());

        st.tasks
            .insert("t1".into(), with_state(TaskState::Assigned));
        let assign = Action::AssignTask(TaskAssignment {
            task_id: "t1".into(),
            node_id: "n1".into(),
            message: String::new(),
            timestamp_ms: 0,
        });
        f.fold(&st, &[act(assign)]);
        let look = f.look(&session, &sent);
        assert_eq!(look.delta.changed_ids(), ["t1"]);
        assert!(look.with_refs.is_empty());
        sent.apply(&look.delta);

        // The worker's progress changes nothing to send; its end does.
        let report = |state: TaskState| {
            act(Action::UpdateTaskStatus(TaskStatusUpdate {
                task_id: "t1".into(),
                status: Some(shoal_proto::TaskStatus {
                    state: state as i32,
                    ..Default::default()
                }),
            }))
        };
        st.tasks.insert("t1".into(), with_state(TaskState::Running));
        f.fold(&st, &[report(TaskState::Running)]);
        assert!(f.look(&session, &sent).delta.is_empty());
        st.tasks.insert("t1".into(), with_state(TaskState::Failed));
        f.fold(&st, &[report(TaskState::Failed)]);
        assert_eq!(f.look(&session, &sent).delta.changed_ids(), ["t1"]);

        st.tasks.remove("t1");
        f.fold(&st, &[act(Action::DeleteTask("t1".into()))]);
        assert_eq!(f.look(&session, &sent).delta.removed, ["t1"]);
    }

    #[tokio::test]
    async fn a_registered_session_keeps_its_wake_up_until_it_looks() {
        let f = Fanout::default();
        let w = f.register("n1", "s1");
        f.lock().wake("n1");
        // The permit was stored: this returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), w.notify.notified())
            .await
            .expect("the wake-up was kept");
        drop(w);
        assert!(f.lock().waiters.is_empty());
    }
}
