//! `network create/ls/inspect/rm`: the control API's network calls. A new network gets its
//! subnet, gateway and VXLAN ID here, on the leader, from allocators rebuilt from the networks
//! the store holds (reconcile, don't replay: there is no allocator state to lose on a leader
//! change); the entry that creates the network carries the allocation, and applying it refuses
//! anything another network took meanwhile. A network named by a service or attached to a
//! live task is not removed. Services name their networks by ID: `resolve_attachments` turns
//! the user's `--network` names into IDs before a service is stored.
//!
//! The ingress network (the routing mesh's, docker's `ingress`) is made by `swarm init` in the
//! entry that creates the cluster ([`initial_ingress`]), or by `network create --ingress` when
//! there is none; services never name it (their routing-mesh ports attach their tasks to it).

use shoal_proto::validate::network::{self as checks, NetworkError, NetworkRequest};
use shoal_proto::{store_action::Action, Meta, Network, NetworkSpec, ServiceSpec};
use tonic::Status;

use super::{act, lookup, store_status, ActiveManager};
use crate::allocator::{NetworkAddresses, PoolConfig, SubnetPool, VniAllocator};
use crate::ids::{new_id, now_ms};
use crate::store::state::is_ingress_network;
use crate::store::StoreState;

fn invalid(e: NetworkError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Checks the spec, allocates, and stores the network.
pub(super) async fn create(m: &ActiveManager, spec: NetworkSpec) -> Result<Network, Status> {
    let labels: Vec<String> = spec
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let checked = checks::network_create(&NetworkRequest {
        name: &spec.name,
        driver: &spec.driver,
        subnet: Some(spec.subnet.as_str()).filter(|s| !s.is_empty()),
        gateway: Some(spec.gateway.as_str()).filter(|s| !s.is_empty()),
        labels: &labels,
    })
    .map_err(invalid)?;
    let network = m.store.view(|st| {
        check_new(st, &checked.name, spec.ingress)?;
        let (subnet, gateway, vni) = allocate(st, pool_config(st)?, &checked)?;
        Ok::<_, Status>(new_network(spec, &checked, subnet, gateway, vni))
    })?;
    let id = network.id.clone();
    m.store
        .propose(vec![act(Action::CreateNetwork(network.into()))])
        .await
        .map_err(store_status)?;
    m.store
        .view(|st| st.networks.get(&id).cloned())
        .ok_or_else(|| Status::internal("network vanished right after creation"))
}

/// A new network's name is free, and a new ingress network is the only one (the store checks
/// both again when it applies the entry).
fn check_new(st: &StoreState, name: &str, ingress: bool) -> Result<(), Status> {
    if st.network_by_name(name).is_some() {
        return Err(Status::already_exists(format!(
            "network with name {name} already exists; choose another name or remove it with \
             `shoal network rm {name}`"
        )));
    }
    if let Some(other) = st.ingress_network().filter(|_| ingress) {
        return Err(Status::already_exists(format!(
            "an ingress network already exists: {}; the routing mesh has one (remove it first \
             with `shoal network rm {}` to replace it)",
            name_of(other),
            name_of(other)
        )));
    }
    Ok(())
}

/// The network as stored, stamped now with a new ID.
fn new_network(
    spec: NetworkSpec,
    checked: &checks::CheckedNetwork,
    subnet: String,
    gateway: String,
    vni: u32,
) -> Network {
    let now = now_ms();
    Network {
        id: new_id(),
        meta: Some(Meta {
            version: 0,
            created_at_ms: now,
            updated_at_ms: now,
        }),
        spec: Some(NetworkSpec {
            driver: checked.driver.to_string(),
            ..spec
        }),
        subnet,
        gateway,
        vni,
    }
}

/// The name swarm init gives the ingress network, as docker.
pub const INGRESS_NAME: &str = "ingress";

/// Swarm init's ingress network: the first subnet of the cluster's address pool, allocated as
/// any network's (the swarm has none yet), for the entry that creates the cluster.
pub(crate) fn initial_ingress(pool: PoolConfig) -> Result<Network, Status> {
    let spec = NetworkSpec {
        name: INGRESS_NAME.to_string(),
        driver: checks::OVERLAY_DRIVER.to_string(),
        ingress: true,
        ..Default::default()
    };
    let checked = checks::network_create(&NetworkRequest {
        name: &spec.name,
        driver: &spec.driver,
        subnet: None,
        gateway: None,
        labels: &[],
    })
    .map_err(invalid)?;
    let (subnet, gateway, vni) = allocate(&StoreState::default(), pool, &checked)?;
    Ok(new_network(spec, &checked, subnet, gateway, vni))
}

/// The subnet (the user's, checked against every other network's, or the lowest free one of
/// the address pool), the gateway and a VXLAN ID, as text and number for the store.
fn allocate(
    st: &StoreState,
    pool: PoolConfig,
    checked: &checks::CheckedNetwork,
) -> Result<(String, String, u32), Status> {
    let existing = st.networks.values().filter_map(|n| {
        let name = n.spec.as_ref().map_or("", |s| s.name.as_str());
        n.subnet
            .parse()
            .ok()
            .map(|subnet| (name.to_string(), subnet))
    });
    let mut pool = SubnetPool::from_allocated(pool, existing)
        .map_err(|e| Status::internal(format!("the stored networks are inconsistent: {e}")))?;
    let subnet = match checked.subnet {
        Some(subnet) => {
            pool.reserve(&checked.name, subnet)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            subnet
        }
        None => pool
            .allocate(&checked.name)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?,
    };
    let addresses = NetworkAddresses::new(subnet, checked.gateway)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut vnis = VniAllocator::from_allocated(st.networks.values().map(|n| n.vni))
        .map_err(|e| Status::internal(format!("the stored networks are inconsistent: {e}")))?;
    let vni = vnis
        .allocate()
        .map_err(|e| Status::resource_exhausted(e.to_string()))?;
    Ok((subnet.to_string(), addresses.gateway().to_string(), vni))
}

/// The cluster's address pool (`swarm init --default-addr-pool`), docker's when it has none.
fn pool_config(st: &StoreState) -> Result<PoolConfig, Status> {
    let Some(c) = st
        .cluster
        .as_ref()
        .filter(|c| !c.default_addr_pool.is_empty())
    else {
        return Ok(PoolConfig::docker_default());
    };
    let mask_len = u8::try_from(c.default_addr_pool_mask_len).unwrap_or(u8::MAX);
    checks::default_addr_pool(&c.default_addr_pool, mask_len)
        .and_then(|(base, len)| PoolConfig::new(base, len))
        .map_err(|e| Status::internal(format!("the cluster's address pool is unusable: {e}")))
}

/// Every network, by name.
pub(super) fn list(st: &StoreState) -> Vec<Network> {
    let mut networks: Vec<Network> = st.networks.values().cloned().collect();
    networks.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    networks
}

/// One network by exact ID, exact name or unique ID prefix.
pub(super) fn find(st: &StoreState, key: &str) -> Result<Network, Status> {
    lookup(&st.networks, key, |n| &n.id, name_of, "network").cloned()
}

/// Removes a network, unless a service names it or a live task is still attached (checked
/// here for a clean refusal; applying the entry checks again).
pub(super) async fn remove(m: &ActiveManager, key: &str) -> Result<(), Status> {
    let id = m.store.view(|st| {
        let id = find(st, key)?.id;
        st.check_network_unused(&id)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok::<_, Status>(id)
    })?;
    m.store
        .propose(vec![act(Action::DeleteNetwork(id))])
        .await
        .map_err(store_status)?;
    Ok(())
}

fn name_of(n: &Network) -> &str {
    n.spec.as_ref().map_or("", |s| s.name.as_str())
}

/// The service's `--network` targets (name, ID or unique ID prefix, as `network inspect`
/// takes them) replaced by network IDs, which is what the store keeps. An unknown network or
/// one named twice is refused, and nothing is stored.
pub(super) fn resolve_attachments(st: &StoreState, spec: &mut ServiceSpec) -> Result<(), Status> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for attachment in &mut spec.networks {
        let given = attachment.target.clone();
        let network = find(st, &given).map_err(|e| match e.code() {
            tonic::Code::NotFound => Status::not_found(format!("network {given} not found")),
            _ => e,
        })?;
        if is_ingress_network(&network) {
            // Docker's rule and words: the routing mesh attaches tasks to it by their ports.
            return Err(Status::invalid_argument(format!(
                "service cannot be explicitly attached to the ingress network {:?}: publish a \
                 port (--publish P:T) and its tasks join it by themselves",
                name_of(&network)
            )));
        }
        if let Some((first, _)) = seen.iter().find(|(_, id)| *id == network.id) {
            return Err(Status::invalid_argument(format!(
                "network {} is given twice ({first} and {given}): attach a service to a network \
                 once, with all its aliases in one --network name={},alias=…",
                name_of(&network),
                name_of(&network)
            )));
        }
        seen.push((given, network.id.clone()));
        attachment.target = network.id;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_proto::NetworkAttachmentConfig;

    use super::*;

    fn with_ingress() -> StoreState {
        let mut st = StoreState::default();
        let mut ingress = initial_ingress(PoolConfig::docker_default()).unwrap();
        ingress.id = "ing".into();
        st.networks.insert(ingress.id.clone(), ingress);
        st
    }

    #[test]
    fn swarm_init_makes_ingress_from_the_first_subnet_of_the_pool() {
        let st = with_ingress();
        let n = &st.networks["ing"];
        assert!(is_ingress_network(n));
        assert_eq!(name_of(n), "ingress");
        assert_eq!(n.subnet, "10.0.0.0/24");
        assert_eq!(n.gateway, "10.0.0.1");
        assert_eq!(n.vni, crate::allocator::VNI_FIRST);
        assert_eq!(n.spec.as_ref().map(|s| s.driver.as_str()), Some("overlay"));
    }

    #[test]
    fn a_second_ingress_network_is_refused_but_other_networks_are_not() {
        let st = with_ingress();
        let err = check_new(&st, "mesh", true).unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        assert!(
            err.message()
                .starts_with("an ingress network already exists: ingress"),
            "{}",
            err.message()
        );
        check_new(&st, "front", false).unwrap();
        check_new(&StoreState::default(), "mesh", true).unwrap();
        let err = check_new(&st, "ingress", false).unwrap_err();
        assert!(
            err.message().contains("already exists"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn services_cannot_name_the_ingress_network() {
        let st = with_ingress();
        for given in ["ingress", "ing"] {
            let mut spec = ServiceSpec {
                networks: vec![NetworkAttachmentConfig {
                    target: given.into(),
                    aliases: vec![],
                }],
                ..Default::default()
            };
            let err = resolve_attachments(&st, &mut spec).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(
                err.message().starts_with(
                    "service cannot be explicitly attached to the ingress network \"ingress\""
                ),
                "{}",
                err.message()
            );
        }
    }
}
