//! Raft snapshots in the loop: taking one of the store every `snapshot_interval` applied
//! entries (and compacting the log up to it), taking one for a peer the stored one cannot
//! serve, and installing one a leader sent.
//!
//! The loop (`raft_loop.rs`) owns the [`Snapshots`] and hands them the node and the store's
//! applier; nothing here knows the loop.

use raft::eraftpb::Snapshot;
use raft::RawNode;
use tracing::info;

use super::instruments::RaftInstruments;
use super::members;
use super::storage::RaftStorage;
use super::RaftError;
use crate::store::StoreApplier;

/// When and how the loop snapshots the store.
pub(super) struct Snapshots {
    /// Applied entries between two snapshots.
    interval: u64,
    /// Counts the snapshots taken and records their size.
    instruments: RaftInstruments,
}

impl Snapshots {
    pub(super) fn new(interval: u64, instruments: RaftInstruments) -> Self {
        Snapshots {
            interval,
            instruments,
        }
    }

    /// Every `snapshot_interval` applied entries: store the state as the Raft snapshot at the
    /// applied index and drop the log up to it. Also when raft-rs wanted to send a peer a
    /// snapshot the stored one cannot serve; that one keeps the log, which other followers may
    /// still be reading.
    pub(super) fn maybe_snapshot(
        &self,
        node: &mut RawNode<RaftStorage>,
        applier: &StoreApplier,
        applied: u64,
    ) -> Result<(), RaftError> {
        let wanted = node.store().take_snapshot_wanted();
        let snapshot_index = node.store().snapshot_index();
        if applied >= snapshot_index.saturating_add(self.interval) {
            self.snapshot_at_applied(node, applier, applied, true)
        } else if wanted && applied > snapshot_index {
            self.snapshot_at_applied(node, applier, applied, false)
        } else {
            Ok(())
        }
    }

    /// Stores the state at the `applied` index as the Raft snapshot, with the member list, and
    /// compacts the log up to it when `compact`.
    pub(super) fn snapshot_at_applied(
        &self,
        node: &mut RawNode<RaftStorage>,
        applier: &StoreApplier,
        applied: u64,
        compact: bool,
    ) -> Result<(), RaftError> {
        let index = applied;
        if index == 0 {
            return Ok(());
        }
        let data = members::snapshot_data(&applier.snapshot(), node.store().members());
        let bytes = data.len();
        let conf_state = node.store().conf_state().clone();
        let store = node.mut_store();
        store.create_snapshot(index, conf_state, data)?;
        self.instruments.snapshot_bytes.set(bytes as i64);
        self.instruments.snapshots.inc();
        if compact {
            store.compact(index)?;
            info!(index, bytes, "raft snapshot taken and log compacted");
        } else {
            info!(index, bytes, "raft snapshot taken for a peer");
        }
        Ok(())
    }

    /// Installs a snapshot the leader sent: the log, the configuration and the members become
    /// the snapshot's, and the store is replaced by its state. Returns the index it was taken
    /// at, which the store is now applied up to.
    pub(super) fn install(
        &self,
        node: &mut RawNode<RaftStorage>,
        applier: &mut StoreApplier,
        snapshot: Snapshot,
    ) -> Result<u64, RaftError> {
        let index = snapshot.get_metadata().index;
        let (state, mut list) =
            members::decode_snapshot_data(&snapshot.data).map_err(|reason| {
                RaftError::CorruptEntry {
                    index,
                    reason: format!("snapshot from the leader cannot be decoded: {reason}"),
                }
            })?;
        if list.is_empty() {
            // A snapshot from before members were replicated: keep what we know.
            list = node.store().members().clone();
        }
        let list = members::restrict(&list, snapshot.get_metadata().get_conf_state());
        self.instruments
            .snapshot_bytes
            .set(snapshot.data.len() as i64);
        node.mut_store().apply_snapshot(snapshot, list)?;
        applier.restore(state, index);
        Ok(index)
    }
}
