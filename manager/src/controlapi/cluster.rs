//! Changes to the cluster object (join tokens, `swarm update`, autolock and its unlock key),
//! made with a version check.
//!
//! The cluster object is one record that many callers change: token rotations, `swarm update`,
//! `node rm` (which adds to its revocation list). Each change reads it, changes one field and
//! proposes the whole record; the store applies it only if nobody wrote the record in between
//! (compare-and-set on `meta.version`), so concurrent changes cannot undo one another. A refused
//! change is read and made again, a bounded number of times.

use shoal_proto::{store_action::Action, Cluster, UnlockKeyResponse, UpdateClusterRequest};
use tonic::Status;

use crate::raft::keys::UnlockKey;

use super::{act, store_status, ActiveManager, NOT_A_MANAGER};
use crate::store::{ApplyError, StoreError};

/// How often a change is retried when other writers keep winning the race.
const ATTEMPTS: usize = 8;

/// Reads the cluster, lets `change` edit it, and proposes it with the version read; retried
/// from a fresh read when another change committed first. Returns the cluster as written.
pub(super) async fn update(
    m: &ActiveManager,
    mut change: impl FnMut(&mut Cluster) -> Result<(), Status>,
) -> Result<Cluster, Status> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let mut cluster = m
            .store
            .view(|st| st.cluster.clone())
            .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))?;
        change(&mut cluster)?;
        match m
            .store
            .propose(vec![act(Action::PutCluster(cluster.clone().into()))])
            .await
        {
            Ok(_) => return Ok(cluster),
            Err(e @ StoreError::Rejected(ApplyError::VersionConflict { .. })) => last = Some(e),
            Err(e) => return Err(store_status(e)),
        }
    }
    Err(last.map_or_else(
        || Status::aborted("the cluster object could not be updated"),
        |e| {
            Status::aborted(format!(
                "the cluster object kept changing while this change was made ({e}); try again"
            ))
        },
    ))
}

/// `swarm update` (and `swarm unlock-key --rotate`): applies the settings the request carries.
pub(super) async fn update_settings(
    m: &ActiveManager,
    req: UpdateClusterRequest,
) -> Result<Cluster, Status> {
    let url = match req.prometheus_url {
        Some(url) => {
            let url = url.trim().to_string();
            if !url.is_empty() {
                crate::autoscaler::prometheus::validate_url(&url)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            }
            Some(url)
        }
        None => None,
    };
    if let Some(ms) = req.dispatcher_heartbeat_ms {
        shoal_proto::validate::cluster::dispatcher_heartbeat(ms)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    if req.rotate_unlock_key && req.autolock == Some(false) {
        return Err(Status::invalid_argument(
            "cannot rotate the unlock key while turning autolock off: do one or the other",
        ));
    }
    // Made once, outside the retried change: every attempt proposes the same key.
    let new_key = UnlockKey::generate()
        .map_err(|e| Status::internal(e.to_string()))?
        .to_string();
    update(m, |c| {
        if let Some(url) = &url {
            c.prometheus_url = url.clone();
        }
        if let Some(ms) = req.dispatcher_heartbeat_ms {
            c.dispatcher_heartbeat_ms = ms;
        }
        match req.autolock {
            // Already on: the key stays (as Swarm), so nobody's stored key goes stale.
            Some(true) if !c.autolock => {
                c.autolock = true;
                c.unlock_key = new_key.clone();
            }
            Some(false) => {
                c.autolock = false;
                c.unlock_key.clear();
            }
            _ => {}
        }
        if req.rotate_unlock_key {
            if !c.autolock {
                return Err(Status::failed_precondition(
                    "cannot rotate the unlock key: autolock is not enabled; turn it on with \
                     `shoal swarm update --autolock=true`",
                ));
            }
            c.unlock_key = new_key.clone();
        }
        Ok(())
    })
    .await
}

/// `swarm unlock-key`: the cluster's unlock key ("" when autolock is off).
pub(super) fn unlock_key(m: &ActiveManager) -> Result<UnlockKeyResponse, Status> {
    let cluster = m
        .store
        .view(|st| st.cluster.clone())
        .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))?;
    Ok(UnlockKeyResponse {
        unlock_key: if cluster.autolock {
            cluster.unlock_key
        } else {
            String::new()
        },
    })
}
