//! Raft snapshots in the loop: taking one of the store every `snapshot_interval` applied
//! entries (and compacting the log up to it), taking one for a peer the stored one cannot
//! serve, and installing one a leader sent.

use raft::eraftpb::Snapshot;
use tracing::info;

use super::members;
use super::raft_loop::RaftLoop;
use super::RaftError;

impl RaftLoop {
    /// Every `snapshot_interval` applied entries: store the state as the Raft snapshot at the
    /// applied index and drop the log up to it. Also when raft-rs wanted to send a peer a
    /// snapshot the stored one cannot serve; that one keeps the log, which other followers may
    /// still be reading.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), RaftError> {
        let wanted = self.node.store().take_snapshot_wanted();
        let snapshot_index = self.node.store().snapshot_index();
        if self.applied >= snapshot_index.saturating_add(self.snapshot_interval) {
            self.snapshot_at_applied(true)
        } else if wanted && self.applied > snapshot_index {
            self.snapshot_at_applied(false)
        } else {
            Ok(())
        }
    }

    /// Stores the state at the applied index as the Raft snapshot, with the member list, and
    /// compacts the log up to it when `compact`.
    pub(super) fn snapshot_at_applied(&mut self, compact: bool) -> Result<(), RaftError> {
        let index = self.applied;
        if index == 0 {
            return Ok(());
        }
        let data = members::snapshot_data(&self.applier.snapshot(), self.node.store().members());
        let bytes = data.len();
        let conf_state = self.node.store().conf_state().clone();
        let store = self.node.mut_store();
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
    /// the snapshot's, and the store is replaced by its state.
    pub(super) fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), RaftError> {
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
            list = self.node.store().members().clone();
        }
        let list = members::restrict(&list, snapshot.get_metadata().get_conf_state());
        self.instruments
            .snapshot_bytes
            .set(snapshot.data.len() as i64);
        self.node.mut_store().apply_snapshot(snapshot, list)?;
        self.applier.restore(state, index);
        self.applied = index;
        self.sync_peers();
        Ok(())
    }
}
