//! Objects the commands' unit tests share: a busybox container and the task of a service
//! `web` (ID `s1`) on node `n1`, an allocated overlay network, so that each test states only
//! what it is about.

use shoal_proto::{ContainerSpec, Meta, Network, NetworkSpec, Task, TaskState, TaskStatus};

pub fn container() -> Option<ContainerSpec> {
    Some(ContainerSpec {
        image: "docker.io/library/busybox:latest".into(),
        ..Default::default()
    })
}

/// Task `id` of slot `slot`, created (and in `state` since) `at` ms.
pub fn task(id: &str, slot: u64, at: i64, state: TaskState, desired: TaskState) -> Task {
    Task {
        id: id.into(),
        meta: Some(Meta {
            created_at_ms: at,
            ..Default::default()
        }),
        service_id: "s1".into(),
        service_name: "web".into(),
        slot,
        node_id: "n1".into(),
        spec: container().map(Box::new),
        desired_state: desired as i32,
        status: Some(TaskStatus {
            state: state as i32,
            timestamp_ms: at,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Overlay network `name`, allocated 10.0.1.0/24 (gateway .1) and VXLAN ID `vni`.
pub fn network(id: &str, name: &str, vni: u32) -> Network {
    Network {
        id: id.into(),
        meta: Some(Meta {
            version: 1,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_000,
        }),
        spec: Some(NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            ..Default::default()
        }),
        subnet: "10.0.1.0/24".into(),
        gateway: "10.0.1.1".into(),
        vni,
    }
}
