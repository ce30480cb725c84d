//! Changes to the cluster object (join tokens, `swarm update`), made with a version check.
//!
//! The cluster object is one record that many callers change: token rotations, `swarm update`,
//! `node rm` (which adds to its revocation list). Each change reads it, changes one field and
//! proposes the whole record; the store applies it only if nobody wrote the record in between
//! (compare-and-set on `meta.version`), so concurrent changes cannot undo one another. A refused
//! change is read and made again, a bounded number of times.

use shoal_proto::{store_action::Action, Cluster};
use tonic::Status;

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
            .propose(vec![act(Action::PutCluster(cluster.clone()))])
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
