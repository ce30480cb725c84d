//! Raft snapshots in the loop: taking one of the store every `snapshot_interval` applied
//! entries (and compacting the log up to it), taking one for a peer the stored one cannot
//! serve, and installing one a leader sent.
//!
//! The loop (`raft_loop.rs`) owns the [`Snapshots`] and hands them the node and the store's
//! applier; nothing here knows the loop.
//!
//! Periodic snapshots and those for peers are written off the loop's thread: the loop only
//! copies the store (a consistent copy as of the applied index, taken between two applies),
//! and a thread of its own encodes, seals and fsyncs it (seconds for a 25 MB store on a loaded
//! machine, which held heartbeats past the election timeout). The loop picks the written
//! snapshot up on a later turn, makes it the log's latest and compacts the log up to it. At
//! most one is at work; before anything else replaces the stored snapshot (a snapshot from
//! the leader, the one taken before the first member joins) the loop waits for it, so two
//! writers never race and the stored snapshot never goes back.

use std::thread::JoinHandle;

use raft::eraftpb::Snapshot;
use raft::RawNode;
use tracing::info;

use super::instruments::RaftInstruments;
use super::members;
use super::storage::{panic_message, RaftStorage};
use super::RaftError;
use crate::store::StoreApplier;

/// When and how the loop snapshots the store.
pub(super) struct Snapshots {
    /// Applied entries between two snapshots.
    interval: u64,
    /// Counts the snapshots taken and records their size.
    instruments: RaftInstruments,
    /// The snapshot being written on its own thread, if one is.
    writing: Option<Writing>,
}

/// A snapshot being encoded, sealed and written by its own thread.
struct Writing {
    /// Whether the log is compacted up to it once written (periodic snapshots), or kept for
    /// the followers still reading it (a snapshot for a peer).
    compact: bool,
    thread: JoinHandle<Result<Snapshot, RaftError>>,
}

impl Snapshots {
    pub(super) fn new(interval: u64, instruments: RaftInstruments) -> Self {
        Snapshots {
            interval,
            instruments,
            writing: None,
        }
    }

    /// Every `snapshot_interval` applied entries: store the state as the Raft snapshot at the
    /// applied index and drop the log up to it. Also when raft-rs wanted to send a peer a
    /// snapshot the stored one cannot serve; that one keeps the log, which other followers may
    /// still be reading. Both are written on their own thread; a written one is taken up here.
    pub(super) fn maybe_snapshot(
        &mut self,
        node: &mut RawNode<RaftStorage>,
        applier: &StoreApplier,
        applied: u64,
    ) -> Result<(), RaftError> {
        self.finish(node, false)?;
        if self.writing.is_some() {
            // raft-rs asks again for a peer's snapshot at its next heartbeat response.
            return Ok(());
        }
        let wanted = node.store().take_snapshot_wanted();
        let snapshot_index = node.store().snapshot_index();
        if applied >= snapshot_index.saturating_add(self.interval) {
            self.start(node, applier, applied, true)
        } else if wanted && applied > snapshot_index {
            self.start(node, applier, applied, false)
        } else {
            Ok(())
        }
    }

    /// Waits for the snapshot being written, if any, and takes it up.
    pub(super) fn settle(&mut self, node: &mut RawNode<RaftStorage>) -> Result<(), RaftError> {
        self.finish(node, true)
    }

    /// Copies the state at the `applied` index (here, between two applies, so it is the state
    /// as of that entry) and starts writing it as the Raft snapshot, with the member list, on
    /// a thread of its own (after the one being written, if any); once written, the log is
    /// compacted up to it when `compact`. [`Snapshots::settle`] waits for it.
    pub(super) fn start(
        &mut self,
        node: &mut RawNode<RaftStorage>,
        applier: &StoreApplier,
        applied: u64,
        compact: bool,
    ) -> Result<(), RaftError> {
        if applied == 0 {
            return Ok(());
        }
        self.settle(node)?;
        let store = node.store();
        let metadata = store.snapshot_metadata(applied, store.conf_state().clone())?;
        let state = applier.snapshot();
        let list = store.members().clone();
        let writer = store.snapshot_writer();
        let thread = std::thread::Builder::new()
            .name("raft-snapshot".into())
            .spawn(move || {
                let snapshot = Snapshot {
                    data: members::snapshot_data(&state, &list).into(),
                    metadata: Some(metadata).into(),
                    ..Default::default()
                };
                drop(state);
                writer.write(&snapshot)?;
                Ok(snapshot)
            })
            .map_err(|e| RaftError::Failed {
                reason: format!("cannot start a thread to write the raft snapshot: {e}"),
            })?;
        self.writing = Some(Writing { compact, thread });
        Ok(())
    }

    /// Takes up the snapshot being written once its thread is done (or, when `wait`, waits
    /// for it): it becomes the log's latest, and the log is compacted up to it if asked.
    fn finish(&mut self, node: &mut RawNode<RaftStorage>, wait: bool) -> Result<(), RaftError> {
        match &self.writing {
            Some(w) if wait || w.thread.is_finished() => {}
            _ => return Ok(()),
        }
        let Some(Writing { compact, thread }) = self.writing.take() else {
            return Ok(());
        };
        let snapshot = thread.join().map_err(|panic| RaftError::Failed {
            reason: format!(
                "writing the raft snapshot failed: {}",
                panic_message(panic.as_ref())
            ),
        })??;
        let (index, bytes) = (snapshot.get_metadata().index, snapshot.data.len());
        let store = node.mut_store();
        store.adopt_snapshot(snapshot)?;
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
        &mut self,
        node: &mut RawNode<RaftStorage>,
        applier: &mut StoreApplier,
        snapshot: Snapshot,
    ) -> Result<u64, RaftError> {
        // Ours must not land over the leader's.
        self.settle(node)?;
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
