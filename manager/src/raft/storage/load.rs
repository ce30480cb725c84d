//! Reading the Raft data file at open: opening it with redb's integrity check, then loading
//! the whole log into [`RaftStorage`]'s mirror and checking that it is one consistent log (format
//! and owner, hard state, configuration, members, retired IDs, compaction point, contiguous
//! entries, snapshot and commit within the log). A file that is not is refused as corrupt:
//! starting empty instead would silently forget the swarm.

use std::collections::BTreeSet;
use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tracing::info;

use super::{
    entry_aad, members, panic_message, Members, RaftError, RaftStorage, CACHE_BYTES, ENTRIES,
    FORMAT_VERSION, KEY_CONF_STATE, KEY_FORMAT, KEY_HARD_STATE, KEY_MEMBERS, KEY_RAFT_ID,
    KEY_RETIRED, KEY_SNAPSHOT, KEY_TRUNCATED, META,
};

impl RaftStorage {
    /// Reads the whole file into the mirror, checking that it is one consistent log.
    pub(super) fn load(&mut self) -> Result<(), RaftError> {
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
            self.write_meta(&[
                (KEY_FORMAT, &FORMAT_VERSION.to_le_bytes()),
                (KEY_RAFT_ID, &raft_id.to_le_bytes()),
            ])?;
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
        let snapshot = get(KEY_SNAPSHOT)?
            .map(|b| self.open_record(&b, KEY_SNAPSHOT.as_bytes(), "the snapshot"))
            .transpose()?;
        let snapshot: Snapshot = decode_opt(snapshot, "snapshot", self)?;
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
            let plain =
                self.open_record(value.value(), &entry_aad(key), &format!("entry {key}"))?;
            let entry = Entry::parse_from_bytes(&plain)
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

impl RaftStorage {
    /// Opens a sealed value of the file; one that does not open was damaged, moved, or sealed
    /// with another data key.
    fn open_record(&self, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>, RaftError> {
        self.key.open(sealed, aad).map_err(|_| {
            self.corrupt(format!(
                "{what} cannot be decrypted with the data key in `dek`: the file was damaged, \
                 or the key files belong to another raft log"
            ))
        })
    }
}

/// Opens the file with a full integrity check: a plain open trusts the file and may panic on
/// one damaged outside redb. The check reads the whole file, which compaction keeps small.
pub(super) fn open_database(path: &Path) -> Result<Database, RaftError> {
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
