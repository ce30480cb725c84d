//! Writing a snapshot into the log's file from a thread other than the Raft loop's.
//!
//! A snapshot of a large store (25 MB at 100,000 tasks) takes a while to encode, seal and
//! fsync; on the loop's thread it held heartbeats and appends past the election timeout. A
//! [`SnapshotWriter`] shares the open file and the data key, so `raft/snapshots.rs` can do that
//! work on its own thread and hand the written snapshot back to the loop
//! ([`super::RaftStorage::adopt_snapshot`]), which then compacts the log up to it.

use std::path::PathBuf;
use std::sync::Arc;

use raft::eraftpb::Snapshot;
use redb::{Database, Durability};

use super::{commit, encode, put_meta, seal, KEY_SNAPSHOT};
use crate::raft::cipher::DataKey;
use crate::raft::RaftError;

/// Writes snapshots into one log's file; made by [`super::RaftStorage::snapshot_writer`].
pub struct SnapshotWriter {
    pub(super) db: Arc<Database>,
    pub(super) key: DataKey,
    pub(super) path: PathBuf,
}

impl SnapshotWriter {
    /// Seals `snapshot` and stores it as the log's latest, durably (fsync), replacing the
    /// previous one. The log's entries are untouched: until it is compacted, the log still
    /// holds everything the previous snapshot needs, so a crash at any point restarts from
    /// one snapshot or the other. The caller makes sure no other snapshot is written meanwhile
    /// (the Raft loop has at most one writer at work, and waits for it before installing one).
    pub fn write(&self, snapshot: &Snapshot) -> Result<(), RaftError> {
        let plain = encode(snapshot, &self.path)?;
        let sealed = seal(&self.key, &self.path, &plain, KEY_SNAPSHOT.as_bytes())?;
        drop(plain);
        commit(&self.db, &self.path, Durability::Immediate, |txn| {
            put_meta(txn, &[(KEY_SNAPSHOT, &sealed)])
        })
    }
}
