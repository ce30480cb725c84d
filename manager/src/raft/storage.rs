//! The durable Raft log: a redb file holding the log entries, the hard state, the configuration
//! state and the latest snapshot, behind raft-rs's [`Storage`] trait.
//!
//! Every change commits one redb write transaction with immediate durability (fsync) before the
//! method returns, so once it returns `Ok` the Raft loop may acknowledge what was written. The
//! one exception is a hard state that only moves the commit index: Raft does not need it on disk
//! (see [`RaftStorage::persist`]), so it reaches the disk with the next durable write. The
//! entries after the last compaction and the metadata are mirrored in memory because raft-rs
//! reads them constantly and treats a read error as fatal (it panics); the file is read and
//! checked once at open, is written before the mirror changes, and is the truth on restart.
//!
//! Layout: the `raft_entries` table maps an index to an encoded `eraftpb::Entry`; `raft_meta`
//! holds the format version, the owning Raft ID, the hard state, the conf state, the members'
//! addresses (a `RaftMembers`), the latest snapshot (metadata and data), the compaction point
//! ("truncated": the index and term of the last entry dropped, which is never past the
//! snapshot) and the retired Raft IDs (members of the cluster this node left by forcing a new
//! one, as little-endian u64s back to back; absent until it did).
//!
//! The entries and the snapshot hold the cluster's secrets (root CA key, join tokens), so they
//! are sealed at rest with the log's data key (`cipher.rs`; the key files are `keys.rs`): each
//! value is `nonce || ciphertext || tag`, bound to its place (the entry's index, the snapshot's
//! key) so values cannot be swapped. The hard state, conf state, members and the other
//! bookkeeping stay plain: they hold no secret, and raft-rs needs them before anything else.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use redb::{Database, Durability, TableDefinition, WriteTransaction};
use tracing::{debug, info};

use super::cipher::DataKey;
use super::members::{self, Members};
use super::RaftError;
use load::open_database;

/// The data file's name inside the data directory.
pub const DATA_FILE: &str = "raft.redb";

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_FORMAT: &str = "format";
const KEY_RAFT_ID: &str = "raft_id";
const KEY_HARD_STATE: &str = "hard_state";
const KEY_CONF_STATE: &str = "conf_state";
const KEY_SNAPSHOT: &str = "snapshot";
const KEY_TRUNCATED: &str = "truncated";
const KEY_MEMBERS: &str = "members";
const KEY_RETIRED: &str = "retired";

/// Bumped whenever the layout above changes incompatibly (2: entries and snapshot sealed).
const FORMAT_VERSION: u32 = 2;

/// redb's page cache. The log is compacted every few thousand entries, so the file stays small
/// and the default (1 GiB) would only be a ceiling nobody reaches; keep the ceiling modest.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// A redb-backed [`Storage`] for one Raft node.
pub struct RaftStorage {
    /// Shared with the [`SnapshotWriter`]s, which write snapshots from their own thread.
    db: Arc<Database>,
    /// Seals the entries and the snapshot on disk.
    key: DataKey,
    path: PathBuf,
    raft_id: u64,
    hard_state: HardState,
    conf_state: ConfState,
    /// Raft address of each member, as replicated with the configuration.
    members: Members,
    /// Raft IDs of the cluster this node left by forcing a new one: never members again.
    retired: BTreeSet<u64>,
    snapshot: Snapshot,
    /// Set when raft-rs asked for a snapshot to send and the stored one would not do (too old,
    /// or taken before the receiver joined); the Raft loop then takes a fresh one.
    snapshot_wanted: Cell<bool>,
    /// Whether `hard_state` holds a newer commit index than the one on disk (see
    /// [`RaftStorage::persist`]); the next write of the log or [`RaftStorage::sync`] stores it.
    unsynced: Cell<bool>,
    /// Index and term of the last entry removed by compaction (0, 0 when none was).
    truncated_index: u64,
    truncated_term: u64,
    /// The log after `truncated_index`: `entries[i].index == truncated_index + 1 + i`.
    entries: Vec<Entry>,
}

impl std::fmt::Debug for RaftStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStorage")
            .field("path", &self.path)
            .field("raft_id", &self.raft_id)
            .field("first_index", &self.first())
            .field("last_index", &self.last())
            .field("snapshot_index", &self.snapshot_index())
            .finish()
    }
}

impl RaftStorage {
    /// Opens (creating if needed) the Raft data file in `data_dir` for node `raft_id`, whose
    /// entries and snapshot are sealed with `key` (see `keys.rs` for where it comes from).
    ///
    /// A file that cannot be read back whole and consistent is refused with
    /// [`RaftError::Corrupt`] naming it: starting empty instead would silently forget the swarm.
    pub fn open(data_dir: &Path, raft_id: u64, key: DataKey) -> Result<Self, RaftError> {
        std::fs::create_dir_all(data_dir).map_err(|source| RaftError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DATA_FILE);
        let db = open_database(&path)?;
        // The log holds the root CA key and the join tokens: the owner's only, whatever the
        // umask made of the file (and of the directory).
        for (p, mode) in [(data_dir, 0o700), (path.as_path(), 0o600)] {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|source| RaftError::Io {
                    path: p.to_path_buf(),
                    source,
                })?;
        }
        let mut storage = RaftStorage {
            db: Arc::new(db),
            key,
            path,
            raft_id,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            members: Members::new(),
            retired: BTreeSet::new(),
            snapshot: Snapshot::default(),
            snapshot_wanted: Cell::new(false),
            unsynced: Cell::new(false),
            truncated_index: 0,
            truncated_term: 0,
            entries: Vec::new(),
        };
        storage.load()?;
        debug!(
            path = %storage.path.display(),
            raft_id,
            first_index = storage.first(),
            last_index = storage.last(),
            snapshot_index = storage.snapshot_index(),
            commit = storage.hard_state.commit,
            "raft storage opened"
        );
        Ok(storage)
    }

    /// [`RaftStorage::open`] with the data key in `data_dir`'s key files, unwrapped with the
    /// `kek` file there (a new directory gets new key files). A log locked with an unlock key is
    /// refused ([`super::keys::KeyError::Locked`]).
    pub fn open_unlocked(data_dir: &Path, raft_id: u64) -> Result<Self, RaftError> {
        let path = data_dir.join(DATA_FILE);
        let key = match super::keys::open_data_key(data_dir, None, path.exists()) {
            // The data file cannot be read without it: the file is as good as damaged.
            Err(super::keys::KeyError::Missing { dir }) => {
                return Err(RaftError::Corrupt {
                    path,
                    reason: format!(
                        "its key file {} is missing, so it cannot be decrypted",
                        dir.join(super::keys::DEK_FILE).display()
                    ),
                })
            }
            other => other?,
        };
        Self::open(data_dir, raft_id, key)
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the log belongs to a cluster yet (has a configuration). A new file does not until
    /// [`RaftStorage::bootstrap`] or a snapshot from a leader gives it one.
    pub fn is_initialized(&self) -> bool {
        self.conf_state != ConfState::default()
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The Raft address of every member this log knows of (a bootstrapped node's own, or the
    /// list replicated with the configuration).
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Raft IDs of the members of the cluster this node left when it forced a new one
    /// ([`RaftStorage::reset_to_snapshot`]): their messages are not to be trusted, and they
    /// must not be added again.
    pub fn retired(&self) -> &BTreeSet<u64> {
        &self.retired
    }

    /// The first entry still in the log (1 while the log was never compacted).
    pub fn first_log_index(&self) -> u64 {
        self.first()
    }

    /// Whether raft-rs wanted to send a peer a snapshot newer than the stored one since the
    /// last call; the caller should take one.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// The latest snapshot (index 0 and no data when none was taken).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// Gives a new log its first configuration (e.g. a single voter: this node).
    pub fn bootstrap(&mut self, conf_state: ConfState) -> Result<(), RaftError> {
        if self.is_initialized() || self.last() > 0 {
            return Err(self.invalid("bootstrap of a log that already belongs to a cluster"));
        }
        self.set_conf_state(conf_state)
    }

    /// Appends `ents`, first removing any entries at or after `ents[0].index` (a new leader's
    /// log wins over the conflicting suffix of ours).
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), RaftError> {
        self.persist(ents, None)
    }

    pub fn set_hardstate(&mut self, hs: HardState) -> Result<(), RaftError> {
        self.persist(&[], Some(&hs))
    }

    /// Records a newer commit index (hard state otherwise unchanged).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), RaftError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.persist(&[], Some(&hs))
    }

    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), RaftError> {
        let bytes = encode(&cs, &self.path)?;
        self.write_meta(&[(KEY_CONF_STATE, &bytes)])?;
        self.conf_state = cs;
        Ok(())
    }

    /// Records a new configuration and the members' addresses that go with it, in one durable
    /// write.
    pub fn set_membership(&mut self, cs: ConfState, members: Members) -> Result<(), RaftError> {
        let cs_bytes = encode(&cs, &self.path)?;
        let member_bytes = members::encode(&members);
        self.write_meta(&[(KEY_CONF_STATE, &cs_bytes), (KEY_MEMBERS, &member_bytes)])?;
        self.conf_state = cs;
        self.members = members;
        Ok(())
    }

    /// Records the members' addresses (e.g. this node's own address changed).
    pub fn set_members(&mut self, members: Members) -> Result<(), RaftError> {
        let bytes = members::encode(&members);
        self.write_meta(&[(KEY_MEMBERS, &bytes)])?;
        self.members = members;
        Ok(())
    }

    /// Appends `ents` (as [`RaftStorage::append`]) and records `hs`, in one durable write: what
    /// one Raft `Ready` asks to be persisted.
    pub fn persist(&mut self, ents: &[Entry], hs: Option<&HardState>) -> Result<(), RaftError> {
        if ents.is_empty() && hs.is_none() {
            return Ok(());
        }
        if let Some(hs) = hs {
            if ents.is_empty() && self.only_commit_changes(hs) {
                // A newer commit index alone need not be on disk before anything is
                // acknowledged: the entries it covers are (on a majority), and a node that
                // restarts with an older commit index learns the newer one from the leader
                // (the load takes at least the snapshot's index). Raft asks durability of the
                // entries, the term and the vote. So it is kept here and goes to disk with the
                // next write of the log, or at `sync`: on the leader every other Ready only
                // commits (between two that append), and on a follower every commit the
                // leader broadcasts; a write transaction each cost as much as an append's.
                self.hard_state = hs.clone();
                self.unsynced.set(true);
                return Ok(());
            }
        }
        if let Some(first) = ents.first() {
            self.check_append(ents, first.index)?;
        }
        let encoded: Vec<(u64, Vec<u8>)> = ents
            .iter()
            .map(|e| {
                Ok((
                    e.index,
                    self.seal(&encode(e, &self.path)?, &entry_aad(e.index))?,
                ))
            })
            .collect::<Result<_, RaftError>>()?;
        // The hard state given, or the newer commit index kept in memory since the last write.
        let hs = hs
            .cloned()
            .or_else(|| self.unsynced.get().then(|| self.hard_state.clone()));
        let hs_bytes = hs.as_ref().map(|hs| encode(hs, &self.path)).transpose()?;
        let old_last = self.last();
        self.write(|txn| {
            if let Some(&(first, _)) = encoded.first() {
                if first <= old_last {
                    // The conflicting suffix goes: entries past the new tail must not survive.
                    remove_entries(txn, first..=old_last)?;
                }
                let mut table = txn.open_table(ENTRIES)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            if let Some(bytes) = &hs_bytes {
                put_meta(txn, &[(KEY_HARD_STATE, bytes)])?;
            }
            Ok(())
        })?;
        if let Some(first) = ents.first() {
            let keep = (first.index - self.truncated_index - 1) as usize;
            self.entries.truncate(keep);
            self.entries.extend_from_slice(ents);
        }
        if let Some(hs) = hs {
            self.hard_state = hs;
            self.unsynced.set(false);
        }
        Ok(())
    }

    /// Replaces the log with a snapshot received from the leader: every entry goes, the
    /// snapshot's configuration and members (decoded from its data by the caller) become ours
    /// and everything up to it counts as committed.
    pub fn apply_snapshot(
        &mut self,
        snapshot: Snapshot,
        members: Members,
    ) -> Result<(), RaftError> {
        let meta = snapshot.get_metadata();
        let (index, term) = (meta.index, meta.term);
        if index < self.first() {
            return Err(self.invalid(&format!(
                "snapshot at index {index} is older than the log, which starts at {}",
                self.first()
            )));
        }
        let retired = self.retired.clone();
        self.replace_log(snapshot, members, retired)?;
        info!(index, term, "raft snapshot from the leader installed");
        Ok(())
    }

    /// Makes `snapshot` the whole log, for forcing a new cluster out of this node's data: every
    /// entry goes, the snapshot's configuration and `members` become ours, everything up to the
    /// snapshot counts as committed, and `retired` is recorded (added to the IDs retired
    /// before). One durable write, so a crash leaves either the old log or the new one.
    ///
    /// Unlike [`RaftStorage::apply_snapshot`], the snapshot may be at any index from the
    /// compaction point to the last entry, and must carry the term of the entry it replaces:
    /// the log up to it was this node's own. A snapshot at index 0 (nothing was ever written)
    /// only sets the configuration.
    pub fn reset_to_snapshot(
        &mut self,
        snapshot: Snapshot,
        members: Members,
        retired: &BTreeSet<u64>,
    ) -> Result<(), RaftError> {
        let meta = snapshot.get_metadata();
        let (index, term) = (meta.index, meta.term);
        if index < self.truncated_index || index > self.last() {
            return Err(self.invalid(&format!(
                "a snapshot at {index} cannot replace a log holding entries {} to {}",
                self.first(),
                self.last()
            )));
        }
        let log_term = self
            .term(index)
            .map_err(|e| self.invalid(&format!("snapshot at {index}: no term for it: {e}")))?;
        if term != log_term {
            return Err(self.invalid(&format!(
                "the snapshot at {index} has term {term} but the log's entry has term {log_term}"
            )));
        }
        let mut all_retired = self.retired.clone();
        all_retired.extend(retired);
        self.replace_log(snapshot, members, all_retired)
    }

    /// Makes `snapshot` the whole log in one durable write: every entry goes, its
    /// configuration, `members` and `retired` become ours, and everything up to it counts as
    /// committed. Callers check that the snapshot may replace the log.
    fn replace_log(
        &mut self,
        snapshot: Snapshot,
        members: Members,
        retired: BTreeSet<u64>,
    ) -> Result<(), RaftError> {
        let meta = snapshot.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let conf_state = meta.get_conf_state().clone();
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(term);
        hs.commit = index;
        let retired_bytes: Vec<u8> = retired.iter().flat_map(|id| id.to_le_bytes()).collect();
        let snap_bytes = self.seal(&encode(&snapshot, &self.path)?, KEY_SNAPSHOT.as_bytes())?;
        let cs_bytes = encode(&conf_state, &self.path)?;
        let hs_bytes = encode(&hs, &self.path)?;
        let member_bytes = members::encode(&members);
        let (first, last) = (self.first(), self.last());
        self.write(|txn| {
            remove_entries(txn, first..=last)?;
            put_meta(
                txn,
                &[
                    (KEY_SNAPSHOT, &snap_bytes),
                    (KEY_CONF_STATE, &cs_bytes),
                    (KEY_MEMBERS, &member_bytes),
                    (KEY_HARD_STATE, &hs_bytes),
                    (KEY_TRUNCATED, &truncated_bytes(index, term)),
                    (KEY_RETIRED, &retired_bytes),
                ],
            )
        })?;
        self.entries.clear();
        self.truncated_index = index;
        self.truncated_term = term;
        self.conf_state = conf_state;
        self.members = members;
        self.hard_state = hs;
        // Written whole above: nothing of it waits for the next write any more.
        self.unsynced.set(false);
        self.snapshot = snapshot;
        self.retired = retired;
        Ok(())
    }

    /// Stores `data` (the state machine as of entry `index`, which must be committed and still
    /// in the log) as the latest snapshot, replacing the previous one. On the caller's thread;
    /// the Raft loop's periodic snapshots go through [`RaftStorage::snapshot_metadata`], a
    /// [`SnapshotWriter`] on another thread and [`RaftStorage::adopt_snapshot`] instead.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), RaftError> {
        let snapshot = Snapshot {
            data: data.into(),
            metadata: Some(self.snapshot_metadata(index, conf_state)?).into(),
            ..Default::default()
        };
        self.snapshot_writer().write(&snapshot)?;
        self.adopt_snapshot(snapshot)
    }

    /// The metadata of a snapshot of the state as of entry `index`, which must be committed,
    /// still in the log and not older than the stored snapshot.
    pub fn snapshot_metadata(
        &self,
        index: u64,
        conf_state: ConfState,
    ) -> Result<SnapshotMetadata, RaftError> {
        if index < self.snapshot_index() {
            return Err(self.invalid(&format!(
                "snapshot at {index} is older than the stored one at {}",
                self.snapshot_index()
            )));
        }
        if index > self.hard_state.commit {
            return Err(self.invalid(&format!(
                "snapshot at {index} is past the commit index {}",
                self.hard_state.commit
            )));
        }
        let term = self
            .term(index)
            .map_err(|e| self.invalid(&format!("snapshot at {index}: no term for it: {e}")))?;
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        meta.set_conf_state(conf_state);
        Ok(meta)
    }

    /// What writes a snapshot into this log's file from another thread.
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter {
            db: self.db.clone(),
            key: self.key.clone(),
            path: self.path.clone(),
        }
    }

    /// Makes `snapshot`, which a [`SnapshotWriter`] of this log has written, the latest one
    /// (the one raft-rs sends peers, and the one compaction may go up to).
    pub fn adopt_snapshot(&mut self, snapshot: Snapshot) -> Result<(), RaftError> {
        let index = snapshot.get_metadata().index;
        if index < self.snapshot_index() {
            return Err(self.invalid(&format!(
                "snapshot at {index} is older than the stored one at {}",
                self.snapshot_index()
            )));
        }
        self.snapshot = snapshot;
        Ok(())
    }

    /// Drops every entry up to and including `index`. Only entries the stored snapshot covers
    /// may go, so the log and the snapshot together always rebuild the state.
    pub fn compact(&mut self, index: u64) -> Result<(), RaftError> {
        if index <= self.truncated_index {
            return Ok(());
        }
        if index > self.snapshot_index() {
            return Err(self.invalid(&format!(
                "compacting through {index} would drop entries the snapshot (at {}) does not cover",
                self.snapshot_index()
            )));
        }
        if index > self.last() {
            return Err(self.invalid(&format!(
                "compacting through {index} but the log ends at {}",
                self.last()
            )));
        }
        let term = self
            .term(index)
            .map_err(|e| self.invalid(&format!("compacting through {index}: {e}")))?;
        let first = self.first();
        self.write(|txn| {
            remove_entries(txn, first..=index)?;
            put_meta(txn, &[(KEY_TRUNCATED, &truncated_bytes(index, term))])
        })?;
        self.entries
            .drain(..(index - self.truncated_index) as usize);
        self.truncated_index = index;
        self.truncated_term = term;
        Ok(())
    }

    fn first(&self) -> u64 {
        self.truncated_index + 1
    }

    fn last(&self) -> u64 {
        self.truncated_index + self.entries.len() as u64
    }

    fn check_append(&self, ents: &[Entry], first: u64) -> Result<(), RaftError> {
        if first <= self.truncated_index {
            return Err(self.invalid(&format!(
                "entries from {first} would overwrite the compacted log (compacted through {})",
                self.truncated_index
            )));
        }
        if first > self.last() + 1 {
            return Err(self.invalid(&format!(
                "entries from {first} leave a gap after the last entry {}",
                self.last()
            )));
        }
        if ents.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(self.invalid(&format!("entries from {first} are not contiguous")));
        }
        Ok(())
    }

    /// Seals a value for the file, bound to `aad` (where it goes).
    fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, RaftError> {
        seal(&self.key, &self.path, plain, aad)
    }

    fn invalid(&self, reason: &str) -> RaftError {
        RaftError::InvalidWrite {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn corrupt(&self, reason: impl std::fmt::Display) -> RaftError {
        RaftError::Corrupt {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Stores the commit index kept in memory (see [`RaftStorage::persist`]): when the log is
    /// closed cleanly, so that the next start re-applies everything committed at once.
    pub fn sync(&self) -> Result<(), RaftError> {
        if !self.unsynced.get() {
            return Ok(());
        }
        let bytes = encode(&self.hard_state, &self.path)?;
        self.write_meta(&[(KEY_HARD_STATE, &bytes)])?;
        self.unsynced.set(false);
        Ok(())
    }

    /// Whether `hs` differs from the stored hard state in its commit index only.
    fn only_commit_changes(&self, hs: &HardState) -> bool {
        hs.term == self.hard_state.term && hs.vote == self.hard_state.vote
    }

    /// Runs `f` in one write transaction and commits it durably (fsync) before returning.
    fn write(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), RaftError> {
        commit(&self.db, &self.path, Durability::Immediate, f)
    }

    /// Records `records` in the meta table, in one durable write.
    fn write_meta(&self, records: &[(&str, &[u8])]) -> Result<(), RaftError> {
        self.write(|txn| put_meta(txn, records))
    }
}

impl Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let mut ents = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // The receiver refuses a snapshot whose configuration does not name it (it was taken
        // before the receiver joined), so such a snapshot is as useless as a too old one.
        let cs = self.snapshot.get_metadata().get_conf_state();
        let names_receiver = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .any(|&id| id == to);
        if self.snapshot_index() == 0 || self.snapshot_index() < request_index || !names_receiver {
            // Snapshots are taken by the Raft loop, which holds the store: ask it for a fresh
            // one. raft-rs retries sending at the peer's next heartbeat response.
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

/// What a caught panic said, for an error message.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

fn encode(message: &impl protobuf::Message, path: &Path) -> Result<Vec<u8>, RaftError> {
    message
        .write_to_bytes()
        .map_err(|e| RaftError::InvalidWrite {
            path: path.to_path_buf(),
            reason: format!("cannot encode raft record: {e}"),
        })
}

/// Runs `f` in one write transaction on `db` (the file at `path`) committed with
/// `durability`. Immediate is redb's default today, but the Raft contract depends on it:
/// nothing is acknowledged until it is on disk. Write transactions on one file run one at a
/// time (redb waits), whichever thread starts them.
fn commit(
    db: &Database,
    path: &Path,
    durability: Durability,
    f: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
) -> Result<(), RaftError> {
    let result = (|| {
        let mut txn = db.begin_write()?;
        txn.set_durability(durability)?;
        f(&txn)?;
        txn.commit()?;
        Ok::<(), redb::Error>(())
    })();
    result.map_err(|source| RaftError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Seals a value for the file at `path` with `key`, bound to `aad` (where it goes).
fn seal(key: &DataKey, path: &Path, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, RaftError> {
    key.seal(plain, aad).map_err(|e| RaftError::InvalidWrite {
        path: path.to_path_buf(),
        reason: format!("cannot encrypt a raft record: {e}"),
    })
}

/// Records `(key, value)` pairs in the meta table, within `txn`.
fn put_meta(txn: &WriteTransaction, records: &[(&str, &[u8])]) -> Result<(), redb::Error> {
    let mut meta = txn.open_table(META)?;
    for (key, value) in records {
        meta.insert(*key, *value)?;
    }
    Ok(())
}

/// Removes the entries at `indexes` from the log table, within `txn`: as one walk of the range
/// (a compaction drops 10,000 entries; one `remove` each searched the tree from its root for
/// every one of them).
fn remove_entries(txn: &WriteTransaction, indexes: RangeInclusive<u64>) -> Result<(), redb::Error> {
    let mut table = txn.open_table(ENTRIES)?;
    table.retain_in(indexes, |_, _| false)?;
    Ok(())
}

/// The associated data of entry `index`'s sealed value: an entry read from another index fails
/// to open.
fn entry_aad(index: u64) -> [u8; 8] {
    index.to_le_bytes()
}

fn truncated_bytes(index: u64, term: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&index.to_le_bytes());
    b[8..].copy_from_slice(&term.to_le_bytes());
    b
}

mod inspect;
mod load;
mod snapshot_writer;
pub use inspect::{decrypted_records, log_sizes, LogSizes};
pub use snapshot_writer::SnapshotWriter;
#[cfg(test)]
mod tests;
