//! The replicated state machine: cluster objects and the rules for applying log entries to them.
//!
//! Applying is deterministic (no clocks, no randomness: proposers stamp times and IDs), so
//! every manager that applies the same log holds the same state. An entry is all-or-nothing:
//! when one action is refused the earlier actions of the entry are rolled back.
//!
//! The task lifecycle is enforced here rather than trusted to callers: an observed state only
//! grows and freezes once past RUNNING; a desired state only grows; a task is assigned at most
//! once. Late or duplicated updates (a worker retrying a batch) are therefore harmless no-ops.

mod attachments;
mod endpoints;
mod ingress;
mod nodes;
mod secrets;
mod tasks;
mod update_status;

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use shoal_proto::validate::secrets::Kind;
use shoal_proto::{
    store_action::Action, Cluster, Config, Meta, Network, Node, NodeRole, Proposal, Secret,
    Service, StoreSnapshot, Task, TaskState, TaskStatus,
};

pub use attachments::{attachment_ip, attachment_network_id, holds_addresses};
pub use endpoints::vip_ip;
pub use ingress::{has_ingress_ports, is_ingress_network};
pub use secrets::{by_name, service_list, FileObject};
pub use tasks::{occupies, unallocated, unplaced, Occupancy, Tasks};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("a service named {0:?} already exists; choose another name or remove it with `shoal service rm {0}`")]
    ServiceNameTaken(String),
    #[error("service {0} does not exist")]
    NoSuchService(String),
    #[error("a service with ID {0} already exists")]
    ServiceIdTaken(String),
    #[error("a task with ID {0} already exists")]
    TaskIdTaken(String),
    #[error(
        "update out of sequence: {kind} {id} changed since it was read (version {expected} read, \
         {found} stored); read it again and retry"
    )]
    VersionConflict {
        kind: &'static str,
        id: String,
        expected: u64,
        found: u64,
    },
    #[error("network with name {0} already exists; choose another name or remove it with `shoal network rm {0}`")]
    NetworkNameTaken(String),
    #[error("a network with ID {0} already exists")]
    NetworkIdTaken(String),
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error(
        "subnet {subnet} overlaps subnet {other_subnet} of network {other}: choose a subnet that \
         no other network uses"
    )]
    SubnetOverlap {
        subnet: String,
        other: String,
        other_subnet: String,
    },
    #[error("VXLAN ID {vni} is already used by network {other}")]
    VniTaken { vni: u32, other: String },
    #[error("network {name} has no valid subnet ({subnet:?})")]
    InvalidSubnet { name: String, subnet: String },
    #[error("task {0} does not exist")]
    NoSuchTask(String),
    #[error("task {task} is already {state}: only a NEW task is given network addresses")]
    TaskNotNew { task: String, state: String },
    #[error(
        "the allocation for task {task} names networks [{given}], but the task is attached to \
         [{wanted}] (same networks, same order)"
    )]
    AttachmentsMismatch {
        task: String,
        wanted: String,
        given: String,
    },
    #[error("address {address:?} for task {task} on network {network} ({subnet}) is {why}")]
    BadTaskAddress {
        task: String,
        address: String,
        network: String,
        subnet: String,
        why: &'static str,
    },
    #[error("address {address} on network {network} is already held by task {holder}")]
    AddressInUse {
        address: String,
        network: String,
        holder: String,
    },
    #[error(
        "network {network} is in use by service {service}; remove the service or \
         `service update --network-rm {network} {service}` first"
    )]
    NetworkInUseByService { network: String, service: String },
    #[error(
        "network {network} is still in use by task {task}; wait until the task has stopped, \
         then remove the network"
    )]
    NetworkInUseByTask { network: String, task: String },
    #[error("port {port}/{protocol} is already published by service {service}")]
    PortInUse {
        port: u32,
        protocol: &'static str,
        service: String,
    },
    #[error("the published port for target port {target} was not allocated")]
    PortNotAllocated { target: u32 },
    #[error("VIP {address:?} on network {network} is {why}")]
    BadVip {
        address: String,
        network: String,
        why: &'static str,
    },
    #[error("VIP {address} on network {network} is already held by {holder}")]
    VipInUse {
        address: String,
        network: String,
        holder: String,
    },
    #[error("address {address} on network {network} is the VIP of service {service}")]
    AddressIsVip {
        address: String,
        network: String,
        service: String,
    },
    #[error("address {address} on network {network} is node {node}'s own")]
    AddressOfNode {
        address: String,
        network: String,
        node: String,
    },
    #[error("node {0} does not exist")]
    NoSuchNode(String),
    #[error(
        "node {0} was removed from the swarm (`node rm`) and its certificates are revoked; \
         it must join again with a join token, as a new node"
    )]
    NodeRemoved(String),
    #[error("address {address:?} for node {node} on network {network} ({subnet}) is {why}")]
    BadNodeAddress {
        node: String,
        address: String,
        network: String,
        subnet: String,
        why: &'static str,
    },
    #[error(
        "an ingress network already exists: {0}; the routing mesh has one (remove it first \
         with `shoal network rm {0}` to replace it)"
    )]
    IngressExists(String),
    #[error(
        "network {network} is the routing mesh of services with ingress-mode published ports \
         ({services}); remove those services or their published ports (`service update \
         --publish-rm`) first"
    )]
    IngressInUse { network: String, services: String },
    #[error("{kind} {name} already exists; choose another name or remove it with `shoal {kind} rm {name}`")]
    SecretNameTaken { kind: Kind, name: String },
    #[error("a {kind} with ID {id} already exists")]
    SecretIdTaken { kind: Kind, id: String },
    #[error("{kind} not found: {id}")]
    NoSuchSecret { kind: Kind, id: String },
    #[error(
        "{kind} '{name}' is in use by the following {}; remove it from them first \
         (`shoal service update --{kind}-rm {name} SERVICE`) or remove them",
        service_list(.services)
    )]
    SecretInUse {
        kind: Kind,
        name: String,
        services: Vec<String>,
    },
    #[error("empty store action in log entry")]
    EmptyAction,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoreState {
    pub cluster: Option<Cluster>,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub tasks: Tasks,
    pub networks: BTreeMap<String, Network>,
    pub secrets: BTreeMap<String, Secret>,
    pub configs: BTreeMap<String, Config>,
    /// Index of the last entry applied (accepted or refused).
    pub applied_index: u64,
}

/// The previous value of one key, so a refused entry can be rolled back.
///
/// Each object is boxed. Inline, every record took the largest object's room (a service, 2.8
/// KB) whatever it held, and an entry creating 500 tasks (each recorded as "absent before")
/// grew a 1.4 MB `Vec` of them; boxed, such a record is 32 bytes and allocates nothing. Only an
/// entry that may be refused records anything (`UndoLog::needed`), so the allocation a replaced
/// object now costs is rare.
enum Undo {
    Cluster(Option<Box<Cluster>>),
    Node(String, Option<Box<Node>>),
    Service(String, Option<Box<Service>>),
    Task(String, Option<Box<Task>>),
    Network(String, Option<Box<Network>>),
    Secret(String, Option<Box<Secret>>),
    Config(String, Option<Box<Config>>),
}

/// The undo records of the entry being applied.
struct UndoLog {
    entries: Vec<Undo>,
    /// Whether the entry may yet be refused, so that task changes must be recorded.
    needed: bool,
}

impl UndoLog {
    fn push(&mut self, u: Undo) {
        self.entries.push(u);
    }
}

/// Actions that change a task or nothing, and are never refused.
fn never_refused(action: Option<&Action>) -> bool {
    matches!(
        action,
        Some(
            Action::UpdateTaskStatus(_)
                | Action::MarkTaskPending(_)
                | Action::AssignTask(_)
                | Action::SetTaskDesiredState(_)
                | Action::DeleteTask(_)
        )
    )
}

fn stamp(meta: &mut Option<Meta>, index: u64) {
    let m = meta.get_or_insert_with(Meta::default);
    m.version = index;
}

fn version(meta: &Option<Meta>) -> u64 {
    meta.as_ref().map_or(0, |m| m.version)
}

/// Compare-and-set: a change applies only to the version it was made from.
fn check_version(
    kind: &'static str,
    id: &str,
    expected: u64,
    found: u64,
) -> Result<(), ApplyError> {
    if expected == found {
        return Ok(());
    }
    Err(ApplyError::VersionConflict {
        kind,
        id: id.to_string(),
        expected,
        found,
    })
}

impl StoreState {
    pub fn to_snapshot(&self) -> StoreSnapshot {
        StoreSnapshot {
            cluster: self.cluster.clone(),
            nodes: self.nodes.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            tasks: self.tasks.values().cloned().collect(),
            networks: self.networks.values().cloned().collect(),
            secrets: self.secrets.values().cloned().collect(),
            configs: self.configs.values().cloned().collect(),
        }
    }

    /// The state as of log entry `index`, where the snapshot was taken.
    pub fn from_snapshot(snapshot: StoreSnapshot, index: u64) -> Self {
        StoreState {
            cluster: snapshot.cluster,
            nodes: snapshot
                .nodes
                .into_iter()
                .map(|n| (n.id.clone(), n))
                .collect(),
            services: snapshot
                .services
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect(),
            tasks: snapshot
                .tasks
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect(),
            networks: snapshot
                .networks
                .into_iter()
                .map(|n| (n.id.clone(), n))
                .collect(),
            secrets: snapshot
                .secrets
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect(),
            configs: snapshot
                .configs
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect(),
            applied_index: index,
        }
    }

    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.services
            .values()
            .find(|s| s.spec.as_ref().is_some_and(|spec| spec.name == name))
    }

    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.networks
            .values()
            .find(|n| n.spec.as_ref().is_some_and(|spec| spec.name == name))
    }

    /// A new network's name, subnet and VNI must be its own: the allocator chose them from the
    /// state it read, and this re-check at apply time is what makes two racing creates safe.
    fn check_new_network(&self, n: &Network) -> Result<(), ApplyError> {
        let name = n.spec.as_ref().map_or("", |s| s.name.as_str());
        if self.network_by_name(name).is_some() {
            return Err(ApplyError::NetworkNameTaken(name.to_string()));
        }
        if self.networks.contains_key(&n.id) {
            return Err(ApplyError::NetworkIdTaken(n.id.clone()));
        }
        self.check_one_ingress(n)?;
        let subnet = network_subnet(n)?;
        for other in self.networks.values() {
            let other_name = other.spec.as_ref().map_or("", |s| s.name.as_str());
            let other_subnet = network_subnet(other)?;
            if subnet.contains(&other_subnet) || other_subnet.contains(&subnet) {
                return Err(ApplyError::SubnetOverlap {
                    subnet: subnet.to_string(),
                    other: other_name.to_string(),
                    other_subnet: other_subnet.to_string(),
                });
            }
            if n.vni != 0 && other.vni == n.vni {
                return Err(ApplyError::VniTaken {
                    vni: n.vni,
                    other: other_name.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The addresses managers advertise, for nodes to reach the managers by (manager nodes that
    /// have not advertised one yet are left out).
    pub fn manager_addrs(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.role == NodeRole::Manager as i32 && !n.addr.is_empty())
            .map(|n| n.addr.clone())
            .collect()
    }

    /// The node IDs of the managers, as the store holds them.
    pub fn manager_ids(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.role == NodeRole::Manager as i32)
            .map(|n| n.id.clone())
            .collect()
    }

    /// The tasks of `service_id` in ID order, through the index (not a walk of every task).
    pub fn tasks_of_service<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Task> {
        self.tasks
            .ids_of_service(service_id)
            .filter_map(|id| self.tasks.get(id))
    }

    /// Applies one committed entry. On error nothing has changed.
    pub fn apply(&mut self, index: u64, proposal: &Proposal) -> Result<(), ApplyError> {
        self.applied_index = index;
        let mut undo = UndoLog {
            entries: Vec::new(),
            // An entry that nothing in it can refuse (a batch of status reports, of
            // assignments) is never rolled back: no copy of each task it changes.
            needed: !proposal
                .actions
                .iter()
                .all(|a| never_refused(a.action.as_ref())),
        };
        for action in &proposal.actions {
            if let Err(e) = self.apply_action(index, action.action.as_ref(), &mut undo) {
                self.roll_back(undo.entries);
                return Err(e);
            }
        }
        Ok(())
    }

    fn roll_back(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Cluster(old) => self.cluster = old.map(|c| *c),
                Undo::Node(id, old) => restore(&mut self.nodes, id, old),
                Undo::Service(id, old) => restore(&mut self.services, id, old),
                Undo::Task(id, old) => match old {
                    Some(t) => {
                        self.tasks.insert(id, t);
                    }
                    None => {
                        self.tasks.remove(&id);
                    }
                },
                Undo::Network(id, old) => restore(&mut self.networks, id, old),
                Undo::Secret(id, old) => restore(&mut self.secrets, id, old),
                Undo::Config(id, old) => restore(&mut self.configs, id, old),
            }
        }
    }

    fn apply_action(
        &mut self,
        index: u64,
        action: Option<&Action>,
        undo: &mut UndoLog,
    ) -> Result<(), ApplyError> {
        match action.ok_or(ApplyError::EmptyAction)? {
            Action::PutCluster(c) => {
                // Compare-and-set: the version read before the change (0 creates the cluster),
                // so concurrent token rotations and `swarm update`s cannot undo one another.
                let found = self.cluster.as_ref().map_or(0, |o| version(&o.meta));
                check_version("cluster", &c.id, version(&c.meta), found)?;
                let mut c = c.clone();
                stamp(&mut c.meta, index);
                undo.push(Undo::Cluster(self.cluster.replace(*c).map(Box::new)));
            }
            Action::PutNode(n) => {
                // Version 0 creates or replaces unconditionally (bootstrap); otherwise it is
                // the version read before the change, as for services.
                let expected = version(&n.meta);
                if expected != 0 {
                    let found = self.nodes.get(&n.id).map_or(0, |o| version(&o.meta));
                    check_version("node", &n.id, expected, found)?;
                }
                self.check_not_removed(n)?;
                let mut n = n.clone();
                // A node's own addresses are the allocator's (`allocate_node`): a node update
                // never changes them, whatever copy it was made from.
                n.attachments = self
                    .nodes
                    .get(&n.id)
                    .map(|o| o.attachments.clone())
                    .unwrap_or_default();
                stamp(&mut n.meta, index);
                undo.push(Undo::Node(
                    n.id.clone(),
                    self.nodes.insert(n.id.clone(), *n).map(Box::new),
                ));
            }
            Action::NodeStatus(u) => self.apply_node_status(index, u, &mut undo.entries)?,
            Action::RemoveNode(r) => self.apply_remove_node(r, &mut undo.entries)?,
            Action::SetUpdateStatus(c) => self.apply_update_status(c, &mut undo.entries)?,
            Action::CreateService(s) => {
                self.check_service_networks(s)?;
                self.check_service_endpoint(s)?;
                self.check_service_references(s)?;
                let name = service_name(s);
                if self.service_by_name(name).is_some() {
                    return Err(ApplyError::ServiceNameTaken(name.to_string()));
                }
                if self.services.contains_key(&s.id) {
                    return Err(ApplyError::ServiceIdTaken(s.id.clone()));
                }
                let mut s = s.clone();
                stamp(&mut s.meta, index);
                undo.push(Undo::Service(
                    s.id.clone(),
                    self.services.insert(s.id.clone(), *s).map(Box::new),
                ));
            }
            Action::UpdateService(s) => {
                let stored = self
                    .services
                    .get(&s.id)
                    .ok_or_else(|| ApplyError::NoSuchService(s.id.clone()))?;
                check_version("service", &s.id, version(&s.meta), version(&stored.meta))?;
                self.check_service_networks(s)?;
                self.check_service_endpoint(s)?;
                self.check_service_references(s)?;
                // Names are unique, so keeping its own name cannot take another's (and saves a
                // scan of every service on the control API's hottest write).
                let name = service_name(s);
                if name != service_name(stored)
                    && self
                        .service_by_name(name)
                        .is_some_and(|other| other.id != s.id)
                {
                    return Err(ApplyError::ServiceNameTaken(name.to_string()));
                }
                let mut s = s.clone();
                stamp(&mut s.meta, index);
                undo.push(Undo::Service(
                    s.id.clone(),
                    self.services.insert(s.id.clone(), *s).map(Box::new),
                ));
            }
            Action::DeleteService(id) => {
                let old = self
                    .services
                    .remove(id)
                    .ok_or_else(|| ApplyError::NoSuchService(id.clone()))?;
                undo.push(Undo::Service(id.clone(), Some(old.into())));
            }
            Action::CreateNetwork(n) => {
                self.check_new_network(n)?;
                let mut n = n.clone();
                stamp(&mut n.meta, index);
                undo.push(Undo::Network(
                    n.id.clone(),
                    self.networks.insert(n.id.clone(), *n).map(Box::new),
                ));
            }
            Action::DeleteNetwork(id) => {
                self.check_network_unused(id)?;
                let old = self
                    .networks
                    .remove(id)
                    .ok_or_else(|| ApplyError::NoSuchNetwork(id.clone()))?;
                undo.push(Undo::Network(id.clone(), Some(old.into())));
                self.drop_node_attachments(index, id, &mut undo.entries);
            }
            Action::CreateSecret(s) => {
                let old = secrets::create(&mut self.secrets, index, s)?;
                undo.push(Undo::Secret(s.id.clone(), old.map(Box::new)));
            }
            Action::DeleteSecret(id) => {
                self.check_unused(&self.secrets, id)?;
                let old = self.secrets.remove(id);
                undo.push(Undo::Secret(id.clone(), old.map(Box::new)));
            }
            Action::CreateConfig(c) => {
                let old = secrets::create(&mut self.configs, index, c)?;
                undo.push(Undo::Config(c.id.clone(), old.map(Box::new)));
            }
            Action::DeleteConfig(id) => {
                self.check_unused(&self.configs, id)?;
                let old = self.configs.remove(id);
                undo.push(Undo::Config(id.clone(), old.map(Box::new)));
            }
            Action::AllocateNode(alloc) => {
                let attachments = self.checked_node_allocation(alloc)?;
                if let Some(node) = self.nodes.get_mut(&alloc.node_id) {
                    if node.attachments != attachments {
                        let before = node.clone();
                        node.attachments = attachments;
                        stamp(&mut node.meta, index);
                        undo.push(Undo::Node(alloc.node_id.clone(), Some(before.into())));
                    }
                }
            }
            Action::AllocateTask(alloc) if !alloc.error.is_empty() => {
                // Why the task cannot be allocated yet; it stays NEW and is tried again.
                self.change_task(index, &alloc.task_id, alloc.timestamp_ms, undo, |t| {
                    let same = t.status.as_ref().is_some_and(|s| s.err == alloc.error);
                    if t.state() != TaskState::New || same {
                        return false;
                    }
                    let mut st = t.status.clone().unwrap_or_default();
                    st.err = alloc.error.clone();
                    t.status = Some(st);
                    true
                });
            }
            Action::AllocateTask(alloc) => {
                let networks = self.checked_allocation(alloc)?;
                self.change_task(index, &alloc.task_id, alloc.timestamp_ms, undo, |t| {
                    t.networks = networks;
                    // swarmkit's words once the allocator is done: the scheduler's turn.
                    set_status(
                        t,
                        TaskState::Pending,
                        "pending task scheduling",
                        alloc.timestamp_ms,
                    );
                    true
                });
            }
            Action::CreateTask(t) => {
                if self.tasks.contains_key(&t.id) {
                    return Err(ApplyError::TaskIdTaken(t.id.clone()));
                }
                let mut t = t.clone();
                stamp(&mut t.meta, index);
                undo.push(Undo::Task(t.id.clone(), self.tasks.insert(t.id.clone(), t)));
            }
            Action::DeleteTask(id) => {
                if let Some(old) = self.tasks.remove(id) {
                    undo.push(Undo::Task(id.clone(), Some(old)));
                }
            }
            Action::AssignTask(a) => {
                self.change_task(index, &a.task_id, a.timestamp_ms, undo, |t| {
                    if t.state() > TaskState::Pending || t.desired() > TaskState::Running {
                        return false;
                    }
                    t.node_id = a.node_id.clone();
                    set_status(t, TaskState::Assigned, &a.message, a.timestamp_ms);
                    true
                });
            }
            Action::MarkTaskPending(u) => {
                self.change_task(index, &u.task_id, status_ms(u), undo, |t| {
                    let Some(status) = &u.status else {
                        return false;
                    };
                    // Only a task not yet placed can be (re)marked pending; a changed reason
                    // is worth recording, an unchanged one is not.
                    let same_reason = t
                        .status
                        .as_ref()
                        .is_some_and(|s| s.message == status.message && s.err == status.err);
                    if t.state() > TaskState::Pending
                        || (t.state() == TaskState::Pending && same_reason)
                    {
                        return false;
                    }
                    let mut st = status.clone();
                    st.state = TaskState::Pending as i32;
                    t.status = Some(st);
                    true
                });
            }
            Action::UpdateTaskStatus(u) => {
                self.change_task(index, &u.task_id, status_ms(u), undo, |t| {
                    let Some(status) = &u.status else {
                        return false;
                    };
                    let new = TaskState::try_from(status.state).unwrap_or(TaskState::New);
                    let old = t.state();
                    // The same state with another health (a healthcheck's verdict) is news
                    // too; the state itself still only moves forward.
                    let health_changed =
                        new == old && t.status.as_ref().map_or(0, |s| s.health) != status.health;
                    if (new <= old && !health_changed) || old.is_terminal() {
                        return false;
                    }
                    if new == TaskState::Running && old < TaskState::Running {
                        // Where a rolling update's monitor period starts (a task with a
                        // healthcheck: once healthy).
                        t.started_at_ms = status.timestamp_ms;
                    }
                    t.status = Some(status.clone());
                    true
                });
            }
            Action::SetTaskDesiredState(d) => {
                self.change_task(index, &d.task_id, d.timestamp_ms, undo, |t| {
                    if d.desired_state <= t.desired_state {
                        return false;
                    }
                    t.desired_state = d.desired_state;
                    true
                });
            }
        }
        Ok(())
    }

    /// Applies `f` to a task if it exists; `f` says whether it changed anything. A missing task
    /// is not an error: it may have been deleted by an earlier entry that the proposer had not
    /// seen yet. A change made at `at_ms` (the proposer's clock, carried by the action: applying
    /// reads no clock) is the task's `updated_at_ms`; 0 (an entry from an older proposer)
    /// leaves it.
    fn change_task(
        &mut self,
        index: u64,
        id: &str,
        at_ms: i64,
        undo: &mut UndoLog,
        f: impl FnOnce(&mut Task) -> bool,
    ) {
        let changed = self.tasks.modify(id, |task| {
            let before = undo.needed.then(|| task.clone());
            if !f(task) {
                return None;
            }
            stamp(&mut task.meta, index);
            if at_ms != 0 {
                task.meta.get_or_insert_with(Meta::default).updated_at_ms = at_ms;
            }
            Some(before)
        });
        if let Some(Some(Some(before))) = changed {
            undo.push(Undo::Task(id.to_string(), Some(before.into())));
        }
    }
}

/// A stored network's subnet; every network has one from the moment it is created.
fn network_subnet(n: &Network) -> Result<Ipv4Net, ApplyError> {
    n.subnet.parse().map_err(|_| ApplyError::InvalidSubnet {
        name: n.spec.as_ref().map_or("", |s| s.name.as_str()).to_string(),
        subnet: n.subnet.clone(),
    })
}

impl StoreState {
    /// A stored network by ID, with its name and subnet, for the entries that give out its
    /// addresses.
    fn network_for_addresses(
        &self,
        network_id: &str,
    ) -> Result<(&Network, &str, Ipv4Net), ApplyError> {
        let network = self
            .networks
            .get(network_id)
            .ok_or_else(|| ApplyError::NoSuchNetwork(network_id.to_string()))?;
        let name = network.spec.as_ref().map_or("", |s| s.name.as_str());
        Ok((network, name, network_subnet(network)?))
    }
}

/// Whether `address` (a CIDR) may be handed out on `network` (subnet `subnet`) at all: the
/// parsed address, or why not. Task addresses, VIPs and node addresses all obey this; who holds it is
/// each caller's check.
fn usable_address(
    network: &Network,
    subnet: Ipv4Net,
    address: &str,
) -> Result<Ipv4Net, &'static str> {
    let addr: Ipv4Net = address.parse().map_err(|_| "not an IPv4 CIDR")?;
    let ip = addr.addr();
    if addr.prefix_len() != subnet.prefix_len() || !subnet.contains(&ip) {
        return Err("outside the network's subnet");
    }
    if ip == subnet.network() || ip == subnet.broadcast() {
        return Err("the subnet's network or broadcast address");
    }
    if network.gateway.parse::<std::net::Ipv4Addr>().ok() == Some(ip) {
        return Err("the network's gateway");
    }
    Ok(addr)
}

fn restore<T>(map: &mut BTreeMap<String, T>, id: String, old: Option<Box<T>>) {
    match old {
        Some(v) => {
            map.insert(id, *v);
        }
        None => {
            map.remove(&id);
        }
    }
}

/// The time a status update carries (0 without a status).
fn status_ms(u: &shoal_proto::TaskStatusUpdate) -> i64 {
    u.status.as_ref().map_or(0, |s| s.timestamp_ms)
}

fn service_name(s: &Service) -> &str {
    s.spec.as_ref().map_or("", |spec| &spec.name)
}

/// The status's time is when the change was decided (`timestamp_ms`); 0, from a proposer older
/// than that field, keeps the previous status's time.
fn set_status(t: &mut Task, state: TaskState, message: &str, timestamp_ms: i64) {
    let ts = if timestamp_ms != 0 {
        timestamp_ms
    } else {
        t.status.as_ref().map_or(0, |s| s.timestamp_ms)
    };
    t.status = Some(TaskStatus {
        state: state as i32,
        timestamp_ms: ts,
        message: message.to_string(),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests;
