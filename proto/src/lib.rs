//! Shoal's wire types (store objects, Raft proposals) and gRPC services, generated from
//! `shoal.proto`. Every other crate speaks these types; nothing here does I/O.

#![allow(clippy::derive_partial_eq_without_eq)]
#![allow(clippy::large_enum_variant)]

pub mod v1 {
    tonic::include_proto!("shoal.v1");
}

pub use v1::*;

impl TaskState {
    /// Past RUNNING a task is finished: its observed state never changes again.
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }

    /// Upper-case name as `service ps` prints it (docker prints e.g. "Running").
    pub fn display_name(self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
        }
    }
}

impl HealthStatus {
    /// How `service ps` and `docker ps` print it.
    pub fn display_name(self) -> &'static str {
        match self {
            HealthStatus::None => "none",
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl Task {
    pub fn state(&self) -> TaskState {
        self.status
            .as_ref()
            .and_then(|s| TaskState::try_from(s.state).ok())
            .unwrap_or(TaskState::New)
    }

    pub fn desired(&self) -> TaskState {
        TaskState::try_from(self.desired_state).unwrap_or(TaskState::New)
    }

    /// Whether the task is attached to the networks `spec` names, in order and with the same
    /// aliases (by network ID, as stored): part of what makes a task "up to date" for the
    /// orchestrator's rolling update and the CLI's progress display. The ingress network's
    /// attachment (first, for a service with routing-mesh ports) is not the spec's: it follows
    /// the published ports, which the task's `endpoint` records.
    pub fn has_networks_of(&self, spec: &ServiceSpec) -> bool {
        let own: Vec<&NetworkAttachment> = self
            .networks
            .iter()
            .filter(|a| !is_ingress_attachment(a))
            .collect();
        spec.networks.len() == own.len()
            && spec.networks.iter().zip(own).all(|(w, a)| {
                a.network.as_ref().is_some_and(|n| n.id == w.target) && a.aliases == w.aliases
            })
    }

    /// Whether the task was created for the service's current published ports and endpoint
    /// mode (its `endpoint`, copied at creation, against the service's): the rest of what
    /// makes a task "up to date". Not the VIPs, which move only with the networks; no
    /// endpoint counts as VIP mode without ports.
    pub fn has_endpoint_of(&self, service: &Service) -> bool {
        fn key(e: Option<&Endpoint>) -> (i32, &[PortConfig]) {
            let mode = e
                .and_then(|e| e.spec.as_ref())
                .map_or(endpoint_spec::Mode::Vip as i32, |s| s.mode);
            (mode, e.map_or(&[][..], |e| &e.ports[..]))
        }
        key(self.endpoint.as_ref()) == key(service.endpoint.as_ref())
    }

    /// Docker's task name, which its container and DNS answer to: `SERVICE.SLOT.TASKID` for a
    /// replicated task, `SERVICE.NODEID.TASKID` for a global one (slot 0).
    pub fn name(&self) -> String {
        if self.slot == 0 && !self.node_id.is_empty() {
            format!("{}.{}.{}", self.service_name, self.node_id, self.id)
        } else {
            format!("{}.{}.{}", self.service_name, self.slot, self.id)
        }
    }
}

/// Whether an attachment is to the ingress network (the routing mesh's), by the network copy
/// it carries.
pub fn is_ingress_attachment(a: &NetworkAttachment) -> bool {
    a.network
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .is_some_and(|s| s.ingress)
}

/// The largest request message any Shoal gRPC server decodes (tonic's default, made explicit
/// and set on every server, so no peer can make a daemon buffer more): a service spec is
/// bounded far below it (`validate::bounds`), image archives travel in chunks, and Raft, whose
/// batches and snapshots are larger, sets its own limit.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

pub mod leader_hint;
mod redact;
pub mod reference;

pub mod validate;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every action takes as much room as the largest kind of action, wherever actions are
    /// held (the scheduler's and the status batcher's `Vec`s, decoded entries): the large kinds
    /// are boxed (`build.rs`, `BOXED_ACTIONS`). A new kind of action that carries a large
    /// message unboxed fails here.
    #[test]
    fn a_store_action_stays_small() {
        let size = std::mem::size_of::<StoreAction>();
        assert!(
            size <= 160,
            "a StoreAction takes {size} bytes: box its new large kind in proto/build.rs \
             (BOXED_ACTIONS)"
        );
    }

    /// A service, and the requests that carry a spec, are moved through every control API
    /// call's futures and the store, and tasks by the hundred thousand: their specs are boxed
    /// (`build.rs`, `BOXED_SPECS`).
    #[test]
    fn services_tasks_and_requests_carry_their_specs_boxed() {
        use std::mem::size_of;
        for (what, size, most) in [
            ("Service", size_of::<Service>(), 400),
            ("Task", size_of::<Task>(), 600),
            (
                "CreateServiceRequest",
                size_of::<CreateServiceRequest>(),
                400,
            ),
            (
                "UpdateServiceRequest",
                size_of::<UpdateServiceRequest>(),
                400,
            ),
        ] {
            assert!(
                size <= most,
                "a {what} takes {size} bytes: box its large fields in proto/build.rs \
                 (BOXED_SPECS)"
            );
        }
    }
}
