//! Helpers shared by the manager's integration tests (`raft.rs`, `raft_cluster.rs`): the store
//! actions they propose, what they read back, and starts that must fail.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use shoal_manager::raft::{self, RaftConfig, RaftError};
use shoal_manager::store::Store;
use shoal_proto::{store_action::Action, Service, ServiceSpec, StoreAction};

/// Creates a one-replica service named `name` (ID `id-NAME`).
pub fn create_service(name: &str) -> StoreAction {
    create_service_padded(name, 0)
}

/// As [`create_service`], with a `padding` label of `padding` bytes (none when 0), to make
/// large log entries and snapshots.
pub fn create_service_padded(name: &str, padding: usize) -> StoreAction {
    let mut spec = ServiceSpec {
        name: name.to_string(),
        replicas: 1,
        ..Default::default()
    };
    if padding > 0 {
        spec.labels.insert("padding".into(), "x".repeat(padding));
    }
    StoreAction {
        action: Some(Action::CreateService(
            Service {
                id: format!("id-{name}"),
                spec: Some(Box::new(spec)),
                ..Default::default()
            }
            .into(),
        )),
    }
}

/// The names of the services in `store`, sorted.
pub fn service_names(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = store.view(|s| {
        s.services
            .values()
            .filter_map(|svc| svc.spec.as_ref().map(|spec| spec.name.clone()))
            .collect()
    });
    names.sort();
    names
}

/// Starts a Raft loop that must refuse to start (`why` says why it should), and returns its
/// error; `Store` has no `Debug`, so `expect_err` is not available.
pub async fn start_err(cfg: RaftConfig, why: &str) -> RaftError {
    match raft::start(cfg).await {
        Ok((_, handle)) => {
            let _ = handle.shutdown().await;
            panic!("raft started but should not have: {why}");
        }
        Err(e) => e,
    }
}
