//! The durable Raft log: a redb file holding the log entries, the hard state, the configuration
//! state and the latest snapshot, behind raft-rs's [`Storage`] trait.
//!
//! Every change commits one redb write transaction with immediate durability (fsync) before the
//! method returns, so once it returns `Ok` the Raft loop may acknowledge what was written. The
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

use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use tracing::{debug, info};

use super::members::{self, Members};
use super::RaftError;

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

/// Bumped whenever the layout above changes incompatibly.
const FORMAT_VERSION: u32 = 1;

/// redb's page cache. The log is compacted every few thousand entries, so the file stays small
/// and the default (1 GiB) would only be a ceiling nobody reaches; keep the ceiling modest.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// A redb-backed [`Storage`] for one Raft node.
pub struct RaftStorage {
    db: Database,
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
    /// Opens (creating if needed) the Raft data file in `data_dir` for node `raft_id`.
    ///
    /// A file that cannot be read back whole and consistent is refused with
    /// [`RaftError::Corrupt`] naming it: starting empty instead would silently forget the swarm.
    pub fn open(data_dir: &Path, raft_id: u64) -> Result<Self, RaftError> {
        std::fs::create_dir_all(data_dir).map_err(|source| RaftError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DATA_FILE);
        let db = open_database(&path)?;
        let mut storage = RaftStorage {
            db,
            path,
            raft_id,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            members: Members::new(),
            retired: BTreeSet::new(),
            snapshot: Snapshot::default(),
            snapshot_wanted: Cell::new(false),
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
        self.write(|txn| {
            txn.open_table(META)?
                .insert(KEY_CONF_STATE, bytes.as_slice())?;
            Ok(())
        })?;
        self.conf_state = cs;
        Ok(())
    }

    /// Records a new configuration and the members' addresses that go with it, in one durable
    /// write.
    pub fn set_membership(&mut self, cs: ConfState, members: Members) -> Result<(), RaftError> {
        let cs_bytes = encode(&cs, &self.path)?;
        let member_bytes = members::encode(&members);
        self.write(|txn| {
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_CONF_STATE, cs_bytes.as_slice())?;
            meta.insert(KEY_MEMBERS, member_bytes.as_slice())?;
            Ok(())
        })?;
        self.conf_state = cs;
        self.members = members;
        Ok(())
    }

    /// Records the members' addresses (e.g. this node's own address changed).
    pub fn set_members(&mut self, members: Members) -> Result<(), RaftError> {
        let bytes = members::encode(&members);
        self.write(|txn| {
            txn.open_table(META)?
                .insert(KEY_MEMBERS, bytes.as_slice())?;
            Ok(())
        })?;
        self.members = members;
        Ok(())
    }

    /// Appends `ents` (as [`RaftStorage::append`]) and records `hs`, in one durable write: what
    /// one Raft `Ready` asks to be persisted.
    pub fn persist(&mut self, ents: &[Entry], hs: Option<&HardState>) -> Result<(), RaftError> {
        if ents.is_empty() && hs.is_none() {
            return Ok(());
        }
        if let Some(first) = ents.first() {
            self.check_append(ents, first.index)?;
        }
        let encoded: Vec<(u64, Vec<u8>)> = ents
            .iter()
            .map(|e| Ok((e.index, encode(e, &self.path)?)))
            .collect::<Result<_, RaftError>>()?;
        let hs_bytes = hs.map(|hs| encode(hs, &self.path)).transpose()?;
        let old_last = self.last();
        self.write(|txn| {
            if let Some(&(first, _)) = encoded.first() {
                let mut table = txn.open_table(ENTRIES)?;
                // The conflicting suffix goes: entries past the new tail must not survive.
                for index in first..=old_last {
                    table.remove(index)?;
                }
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            if let Some(bytes) = &hs_bytes {
                txn.open_table(META)?
                    .insert(KEY_HARD_STATE, bytes.as_slice())?;
            }
            Ok(())
        })?;
        if let Some(first) = ents.first() {
            let keep = (first.index - self.truncated_index - 1) as usize;
            self.entries.truncate(keep);
            self.entries.extend_from_slice(ents);
        }
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
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
        let snap_bytes = encode(&snapshot, &self.path)?;
        let cs_bytes = encode(&conf_state, &self.path)?;
        let hs_bytes = encode(&hs, &self.path)?;
        let member_bytes = members::encode(&members);
        let (first, last) = (self.first(), self.last());
        self.write(|txn| {
            let mut table = txn.open_table(ENTRIES)?;
            for i in first..=last {
                table.remove(i)?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_SNAPSHOT, snap_bytes.as_slice())?;
            meta.insert(KEY_CONF_STATE, cs_bytes.as_slice())?;
            meta.insert(KEY_MEMBERS, member_bytes.as_slice())?;
            meta.insert(KEY_HARD_STATE, hs_bytes.as_slice())?;
            meta.insert(KEY_TRUNCATED, truncated_bytes(index, term).as_slice())?;
            meta.insert(KEY_RETIRED, retired_bytes.as_slice())?;
            Ok(())
        })?;
        self.entries.clear();
        self.truncated_index = index;
        self.truncated_term = term;
        self.conf_state = conf_state;
        self.members = members;
        self.hard_state = hs;
        self.snapshot = snapshot;
        self.retired = retired;
        Ok(())
    }

    /// Stores `data` (the state machine as of entry `index`, which must be committed and still
    /// in the log) as the latest snapshot, replacing the previous one.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), RaftError> {
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
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        let bytes = encode(&snapshot, &self.path)?;
        self.write(|txn| {
            txn.open_table(META)?
                .insert(KEY_SNAPSHOT, bytes.as_slice())?;
            Ok(())
        })?;
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
            let mut table = txn.open_table(ENTRIES)?;
            for i in first..=index {
                table.remove(i)?;
            }
            txn.open_table(META)?
                .insert(KEY_TRUNCATED, truncated_bytes(index, term).as_slice())?;
            Ok(())
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

    /// Runs `f` in one write transaction and commits it durably (fsync) before returning.
    fn write(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), RaftError> {
        let result = (|| {
            let mut txn = self.db.begin_write()?;
            // The default today, but the Raft contract depends on it: nothing is acknowledged
            // until it is on disk.
            txn.set_durability(Durability::Immediate)?;
            f(&txn)?;
            txn.commit()?;
            Ok::<(), redb::Error>(())
        })();
        result.map_err(|source| RaftError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Reads the whole file into the mirror, checking that it is one consistent log.
    fn load(&mut self) -> Result<(), RaftError> {
        // Creating the tables up front means a read never meets a missing table; on an existing
        // file this changes nothing.
        self.write(|txn| {
            txn.open_table(ENTRIES)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        let txn = self.db.begin_read().map_err(|e| self.corrupt(e))?;
        let meta = txn.open_table(META).map_err(|e| self.corrupt(e))?;
        let entries = txn.open_table(ENTRIES).map_err(|e| self.corrupt(e))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, RaftError> {
            meta.get(key)
                .map(|v| v.map(|guard| guard.value().to_vec()))
                .map_err(|e| self.corrupt(format!("reading {key}: {e}")))
        };

        let Some(format) = get(KEY_FORMAT)? else {
            let meta_len = meta.len().map_err(|e| self.corrupt(e))?;
            let entries_len = entries.len().map_err(|e| self.corrupt(e))?;
            if meta_len > 0 || entries_len > 0 {
                return Err(self.corrupt("it holds raft data but no format marker"));
            }
            drop((meta, entries, txn));
            let raft_id = self.raft_id;
            self.write(|txn| {
                let mut meta = txn.open_table(META)?;
                meta.insert(KEY_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
                meta.insert(KEY_RAFT_ID, raft_id.to_le_bytes().as_slice())?;
                Ok(())
            })?;
            info!(path = %self.path.display(), raft_id, "new raft data file created");
            return Ok(());
        };
        let format = u32::from_le_bytes(
            format
                .as_slice()
                .try_into()
                .map_err(|_| self.corrupt("the format marker is malformed"))?,
        );
        if format != FORMAT_VERSION {
            return Err(self.corrupt(format!(
                "it uses data format {format}, this shoal reads format {FORMAT_VERSION}"
            )));
        }

        let stored_id = get(KEY_RAFT_ID)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| self.corrupt("the owning raft ID is missing or malformed"))?;
        if stored_id != self.raft_id {
            return Err(RaftError::WrongNode {
                path: self.path.clone(),
                stored: stored_id,
                configured: self.raft_id,
            });
        }

        let mut hard_state: HardState = decode_opt(get(KEY_HARD_STATE)?, "hard state", self)?;
        let conf_state: ConfState = decode_opt(get(KEY_CONF_STATE)?, "conf state", self)?;
        let snapshot: Snapshot = decode_opt(get(KEY_SNAPSHOT)?, "snapshot", self)?;
        let members = match get(KEY_MEMBERS)? {
            None => Members::new(),
            Some(b) => members::decode(&b)
                .map_err(|e| self.corrupt(format!("the member list cannot be decoded: {e}")))?,
        };
        let retired = match get(KEY_RETIRED)? {
            None => BTreeSet::new(),
            Some(b) => {
                if b.len() % 8 != 0 {
                    return Err(self.corrupt(format!(
                        "the retired raft IDs are malformed ({} bytes, not a multiple of 8)",
                        b.len()
                    )));
                }
                // Every chunk is exactly 8 bytes: the length was checked above.
                b.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()
            }
        };
        let (truncated_index, truncated_term) = match get(KEY_TRUNCATED)? {
            None => (0, 0),
            Some(b) => {
                let b: [u8; 16] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt("the compaction point is malformed"))?;
                let (i, t) = b.split_at(8);
                // Both halves are exactly 8 bytes by construction.
                let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
                (word(i), word(t))
            }
        };

        let mut log = Vec::new();
        let rows = entries.iter().map_err(|e| self.corrupt(e))?;
        for (expected, item) in (truncated_index + 1..).zip(rows) {
            let (key, value) = item.map_err(|e| self.corrupt(format!("reading entries: {e}")))?;
            let key = key.value();
            let entry = Entry::parse_from_bytes(value.value())
                .map_err(|e| self.corrupt(format!("entry {key} cannot be decoded: {e}")))?;
            if key != expected || entry.index != key {
                return Err(self.corrupt(format!(
                    "the log is not contiguous: expected entry {expected}, found key {key} \
                     holding entry {}",
                    entry.index
                )));
            }
            log.push(entry);
        }

        let snap_meta = snapshot.get_metadata();
        if snap_meta.index < truncated_index {
            return Err(self.corrupt(format!(
                "the log was compacted through {truncated_index} but the snapshot only reaches {}",
                snap_meta.index
            )));
        }
        if snap_meta.index == truncated_index && snap_meta.term != truncated_term {
            return Err(self.corrupt(format!(
                "the snapshot at {} has term {} but the compaction point has term {truncated_term}",
                snap_meta.index, snap_meta.term
            )));
        }
        let last = truncated_index + log.len() as u64;
        if snap_meta.index > last {
            return Err(self.corrupt(format!(
                "the snapshot at {} is past the last log entry {last}",
                snap_meta.index
            )));
        }
        if hard_state.commit > last {
            return Err(self.corrupt(format!(
                "the commit index {} is past the last log entry {last}",
                hard_state.commit
            )));
        }
        // Everything the snapshot holds was committed, even if a crash lost the commit index
        // written after it; raft-rs refuses a commit index below its first entry.
        hard_state.commit = hard_state.commit.max(snap_meta.index);

        drop((meta, entries, txn));
        self.hard_state = hard_state;
        self.conf_state = conf_state;
        self.members = members;
        self.retired = retired;
        self.snapshot = snapshot;
        self.truncated_index = truncated_index;
        self.truncated_term = truncated_term;
        self.entries = log;
        Ok(())
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

/// Opens the file with a full integrity check: a plain open trusts the file and may panic on
/// one damaged outside redb. The check reads the whole file, which compaction keeps small.
fn open_database(path: &Path) -> Result<Database, RaftError> {
    let opened = std::panic::catch_unwind(|| {
        redb::Builder::new()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(path)
    });
    let corrupt = |reason: String| RaftError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen))
        | Ok(Err(redb::DatabaseError::LockProtocolMismatch)) => Err(RaftError::InUse {
            path: path.to_path_buf(),
        }),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Err(RaftError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
        Ok(Err(e)) => Err(corrupt(e.to_string())),
        Err(panic) => Err(corrupt(format!(
            "the database engine failed reading it ({})",
            panic_message(panic.as_ref())
        ))),
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

fn decode_opt<M: protobuf::Message + Default>(
    bytes: Option<Vec<u8>>,
    what: &str,
    storage: &RaftStorage,
) -> Result<M, RaftError> {
    match bytes {
        None => Ok(M::default()),
        Some(b) => M::parse_from_bytes(&b)
            .map_err(|e| storage.corrupt(format!("the {what} cannot be decoded: {e}"))),
    }
}

fn truncated_bytes(index: u64, term: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&index.to_le_bytes());
    b[8..].copy_from_slice(&term.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}t{term}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn indices_terms(s: &RaftStorage) -> Vec<(u64, u64)> {
        s.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn raft_storage_append_truncates_conflicting_suffix_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = RaftStorage::open(dir.path(), 1).expect("open");
            assert!(!s.is_initialized());
            s.bootstrap(ConfState {
                voters: vec![1],
                ..Default::default()
            })
            .expect("bootstrap");
            s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
                .expect("append");
            // A new leader at term 2 overwrites from 2 on.
            s.append(&[entry(2, 2)]).expect("append conflicting");
            assert_eq!(indices_terms(&s), vec![(1, 1), (2, 2)]);
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: 2,
                ..Default::default()
            };
            s.set_hardstate(hs).expect("hard state");
            // A gap after the last entry is refused.
            assert!(matches!(
                s.append(&[entry(5, 2)]),
                Err(RaftError::InvalidWrite { .. })
            ));
        }
        let s = RaftStorage::open(dir.path(), 1).expect("reopen");
        assert!(s.is_initialized());
        assert_eq!(s.conf_state().voters, vec![1]);
        assert_eq!(indices_terms(&s), vec![(1, 1), (2, 2)]);
        assert_eq!(s.hard_state().commit, 2);
        assert_eq!(s.hard_state().term, 2);
        assert_eq!(s.first_index().ok(), Some(1));
        assert_eq!(s.last_index().ok(), Some(2));
        assert_eq!(s.term(0).ok(), Some(0));
        assert_eq!(s.term(2).ok(), Some(2));
        let got = s
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(got, vec![entry(1, 1), entry(2, 2)]);
    }

    #[test]
    fn raft_storage_snapshot_then_compact_keeps_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = RaftStorage::open(dir.path(), 7).expect("open");
            s.bootstrap(ConfState {
                voters: vec![7],
                ..Default::default()
            })
            .expect("bootstrap");
            let ents: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
            s.persist(
                &ents,
                Some(&HardState {
                    term: 1,
                    commit: 8,
                    ..Default::default()
                }),
            )
            .expect("persist");
            // Compaction past the snapshot would lose entries: refused.
            assert!(matches!(s.compact(3), Err(RaftError::InvalidWrite { .. })));
            // A snapshot past the commit index is refused too.
            assert!(s
                .create_snapshot(9, s.conf_state().clone(), vec![])
                .is_err());
            s.create_snapshot(6, s.conf_state().clone(), b"state@6".to_vec())
                .expect("snapshot");
            s.compact(6).expect("compact");
            assert_eq!(s.first_index().ok(), Some(7));
            assert_eq!(s.term(6).ok(), Some(1));
            assert_eq!(
                s.entries(5, 8, None, GetEntriesContext::empty(false)),
                Err(raft::Error::Store(StorageError::Compacted))
            );
        }
        let s = RaftStorage::open(dir.path(), 7).expect("reopen");
        assert_eq!(s.first_index().ok(), Some(7));
        assert_eq!(s.last_index().ok(), Some(10));
        assert_eq!(s.snapshot_index(), 6);
        let snap = s.snapshot(0, 7).expect("snapshot");
        assert_eq!(snap.data.as_ref(), b"state@6");
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![7]);
        assert!(!s.take_snapshot_wanted());
        // Node 2 joined after the snapshot: it would refuse it, so the loop must take a new one.
        assert_eq!(
            s.snapshot(0, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        );
        assert!(s.take_snapshot_wanted());
        assert!(!s.take_snapshot_wanted());
        // So must a request for a newer snapshot than the stored one.
        assert!(s.snapshot(9, 7).is_err());
        assert!(s.take_snapshot_wanted());
    }

    #[test]
    fn raft_storage_apply_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = RaftStorage::open(dir.path(), 2).expect("open");
            s.append(&[entry(1, 1), entry(2, 1)]).expect("append");
            let mut snap = Snapshot {
                data: b"leader state".to_vec().into(),
                ..Default::default()
            };
            snap.mut_metadata().index = 20;
            snap.mut_metadata().term = 3;
            snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
            let members = Members::from([(1, "10.0.0.1:4242".to_string())]);
            s.apply_snapshot(snap, members).expect("apply snapshot");
            assert_eq!(s.first_index().ok(), Some(21));
            assert_eq!(s.last_index().ok(), Some(20));
            assert_eq!(s.hard_state().commit, 20);
            s.append(&[entry(21, 3)]).expect("append after snapshot");
        }
        let s = RaftStorage::open(dir.path(), 2).expect("reopen");
        assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(
            s.members().get(&1).map(String::as_str),
            Some("10.0.0.1:4242")
        );
        assert_eq!(s.term(20).ok(), Some(3));
        assert_eq!(s.last_index().ok(), Some(21));
        assert_eq!(s.snapshot_ref().data.as_ref(), b"leader state");
    }

    #[test]
    fn raft_storage_refuses_another_nodes_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(RaftStorage::open(dir.path(), 1).expect("open"));
        let err = RaftStorage::open(dir.path(), 2).expect_err("wrong node");
        assert!(matches!(
            err,
            RaftError::WrongNode {
                stored: 1,
                configured: 2,
                ..
            }
        ));
    }

    #[test]
    fn raft_storage_reports_an_undecodable_entry_as_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = RaftStorage::open(dir.path(), 1).expect("open");
            s.append(&[entry(1, 1), entry(2, 1)]).expect("append");
            s.write(|txn| {
                txn.open_table(ENTRIES)?
                    .insert(2u64, [0xffu8, 0xff, 0xff].as_slice())?;
                Ok(())
            })
            .expect("damage entry");
        }
        let err = RaftStorage::open(dir.path(), 1).expect_err("corrupt");
        let msg = err.to_string();
        assert!(matches!(err, RaftError::Corrupt { .. }), "{msg}");
        assert!(msg.contains("entry 2"), "{msg}");
        assert!(msg.contains(DATA_FILE), "{msg}");
        assert!(msg.contains("move it away"), "{msg}");
    }

    #[test]
    fn raft_storage_reports_a_log_gap_as_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = RaftStorage::open(dir.path(), 1).expect("open");
            s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
                .expect("append");
            s.write(|txn| {
                txn.open_table(ENTRIES)?.remove(2u64)?;
                Ok(())
            })
            .expect("remove entry");
        }
        let err = RaftStorage::open(dir.path(), 1).expect_err("gap");
        assert!(err.to_string().contains("not contiguous"), "{err}");
    }
}
