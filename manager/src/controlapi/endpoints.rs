//! Published ports and VIPs for `service create/update`: the endpoint is allocated here, on the
//! leader, from the state read just before proposing, and the entry that creates or updates the
//! service carries it; applying the entry refuses a port or address someone else took
//! meanwhile. A VIP lost that way to a task the allocator role placed at the same moment is
//! allocated again (a port lost to another service is the user's to resolve, and reported).

use shoal_proto::{store_action::Action, Endpoint, Service, ServiceSpec};
use tonic::Status;

use super::{act, store_status, ActiveManager};
use crate::allocator::{allocate_endpoint, EndpointAllocError};
use crate::store::{ApplyError, StoreError};

/// How often a VIP taken between allocation and apply is allocated again.
const VIP_RETRIES: usize = 3;

fn endpoint_status(e: EndpointAllocError) -> Status {
    match e {
        EndpointAllocError::PortInUse { .. } => Status::already_exists(e.to_string()),
        EndpointAllocError::NoSuchNetwork(_) => Status::not_found(e.to_string()),
        EndpointAllocError::NoIngressNetwork { .. } => Status::failed_precondition(e.to_string()),
        _ => Status::resource_exhausted(e.to_string()),
    }
}

/// Allocates `service`'s endpoint (keeping what `current` holds where the spec still wants it)
/// and proposes `make(service)`: CreateService or UpdateService.
pub(super) async fn propose_with_endpoint(
    m: &ActiveManager,
    mut service: Service,
    current: Option<&Endpoint>,
    make: fn(Service) -> Action,
) -> Result<(), Status> {
    let no_spec = ServiceSpec::default();
    let mut attempt = 0;
    loop {
        let spec = service.spec.as_deref().unwrap_or(&no_spec);
        let endpoint = m
            .store
            .view(|st| allocate_endpoint(st, &service.id, spec, current))
            .map_err(endpoint_status)?;
        // Only a service with VIPs can lose a race for one and be proposed again: the others
        // are not copied (this is on the path of every service update).
        let again =
            (!endpoint.virtual_ips.is_empty() && attempt < VIP_RETRIES).then(|| service.clone());
        service.endpoint = Some(endpoint);
        match (m.store.propose(vec![act(make(service))]).await, again) {
            (Err(StoreError::Rejected(ApplyError::VipInUse { .. })), Some(previous)) => {
                service = previous;
                attempt += 1;
            }
            (Err(e @ StoreError::Rejected(ApplyError::PortInUse { .. })), _) => {
                return Err(Status::already_exists(e.to_string()));
            }
            (other, _) => return other.map(|_| ()).map_err(store_status),
        }
    }
}
