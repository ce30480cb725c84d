//! `volume create/ls/inspect/rm`: the node's local volumes ([`shoal_worker::volumes`]) through
//! the node-local `Daemon` API. A volume a container still mounts is not removed: the
//! containers carry the names of their volumes ([`LABEL_VOLUMES`]).

use std::collections::HashMap;

use containerd_client::services::v1::ListContainersRequest;
use shoal_proto::validate::mounts::volume_name;
use shoal_worker::executor::{LABEL_SERVICE_NAME, LABEL_TASK_SLOT};
use shoal_worker::volumes::{VolumeError, VolumeInfo, Volumes, LABEL_VOLUMES};
use tonic::Status;

use super::Daemon;

fn volumes(daemon: &Daemon) -> Volumes {
    Volumes::new(&daemon.worker_dir())
}

fn status(e: VolumeError) -> Status {
    match e {
        VolumeError::NotFound(name) => Status::not_found(format!(
            "no such volume: {name} (`shoal volume ls` lists this node's volumes)"
        )),
        e => Status::internal(e.to_string()),
    }
}

fn to_proto(v: VolumeInfo) -> shoal_proto::Volume {
    shoal_proto::Volume {
        name: v.name,
        driver: "local".into(),
        mountpoint: v.mountpoint.display().to_string(),
        created_at: v.created_at,
        labels: v.labels,
        scope: "local".into(),
    }
}

/// A new volume; an existing one of that name is returned as it is (docker's behaviour).
pub(super) fn create(
    daemon: &Daemon,
    name: &str,
    labels: &HashMap<String, String>,
) -> Result<shoal_proto::Volume, Status> {
    let name = if name.is_empty() {
        random_name()
    } else {
        name.to_string()
    };
    if !volume_name(&name) {
        return Err(Status::invalid_argument(format!(
            "invalid volume name {name:?}: use letters, digits, '_', '.' and '-', starting with \
             a letter or digit (at least 2 characters)"
        )));
    }
    let (info, _) = volumes(daemon)
        .ensure(&name, labels, None)
        .map_err(status)?;
    Ok(to_proto(info))
}

fn random_name() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn list(daemon: &Daemon) -> Result<Vec<shoal_proto::Volume>, Status> {
    Ok(volumes(daemon)
        .list()
        .map_err(status)?
        .into_iter()
        .map(to_proto)
        .collect())
}

pub(super) fn inspect(daemon: &Daemon, name: &str) -> Result<shoal_proto::Volume, Status> {
    volumes(daemon).get(name).map(to_proto).map_err(status)
}

/// Removes the volume unless a container uses it; `force` makes a missing volume no error.
pub(super) async fn remove(daemon: &Daemon, name: &str, force: bool) -> Result<(), Status> {
    let vols = volumes(daemon);
    match vols.get(name) {
        Ok(_) => {}
        Err(VolumeError::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(status(e)),
    }
    let users = users_of(daemon, name).await?;
    if !users.is_empty() {
        return Err(Status::failed_precondition(format!(
            "volume {name} is in use by {}: remove or update the service first",
            users.join(", ")
        )));
    }
    vols.remove(name).map_err(status)
}

/// The tasks (`service.slot (container)`) whose containers mount `name`.
async fn users_of(daemon: &Daemon, name: &str) -> Result<Vec<String>, Status> {
    let cd = &daemon.containerd;
    let containers = cd
        .containers()
        .list(cd.request(ListContainersRequest {
            filters: vec![format!("labels.\"{LABEL_VOLUMES}\"")],
        }))
        .await
        .map_err(|s| {
            Status::unavailable(format!(
                "cannot tell whether volume {name} is in use: containerd: {}",
                s.message()
            ))
        })?
        .into_inner()
        .containers;
    Ok(containers
        .into_iter()
        .filter(|c| {
            c.labels
                .get(LABEL_VOLUMES)
                .is_some_and(|v| v.split(',').any(|n| n == name))
        })
        .map(|c| {
            let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
            format!(
                "task {}.{} (container {})",
                label(LABEL_SERVICE_NAME),
                label(LABEL_TASK_SLOT),
                c.id
            )
        })
        .collect())
}
