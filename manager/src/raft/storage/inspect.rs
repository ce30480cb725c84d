//! Reading a Raft log as someone holding the whole data directory could: the data file and the
//! key files. For tests, benchmarks and forensics (the manager itself never calls it); the data
//! file is read from a copy, so a running manager's lock on it does not stand in the way.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::{entry_aad, load::open_database, RaftError, DATA_FILE, ENTRIES, KEY_SNAPSHOT, META};
use crate::raft::keys::{self, UnlockKey};

/// Every entry and the snapshot of the log in `raft_dir`, decrypted (encoded `eraftpb`
/// messages), unwrapping the data key with the `kek` file there or with `unlock`.
pub fn decrypted_records(
    raft_dir: &Path,
    unlock: Option<&UnlockKey>,
) -> Result<Vec<Vec<u8>>, RaftError> {
    let key = keys::open_data_key(raft_dir, unlock, true)?;
    let sealed = read_copy(raft_dir, |db, corrupt| {
        let txn = db.begin_read().map_err(|e| corrupt(&e))?;
        let mut sealed: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let entries = txn.open_table(ENTRIES).map_err(|e| corrupt(&e))?;
        for row in entries.iter().map_err(|e| corrupt(&e))? {
            let (index, value) = row.map_err(|e| corrupt(&e))?;
            sealed.push((entry_aad(index.value()).to_vec(), value.value().to_vec()));
        }
        let meta = txn.open_table(META).map_err(|e| corrupt(&e))?;
        if let Some(snapshot) = meta.get(KEY_SNAPSHOT).map_err(|e| corrupt(&e))? {
            sealed.push((KEY_SNAPSHOT.as_bytes().to_vec(), snapshot.value().to_vec()));
        }
        Ok(sealed)
    })?;
    sealed
        .iter()
        .map(|(aad, value)| {
            key.open(value, aad).map_err(|e| RaftError::Corrupt {
                path: raft_dir.join(DATA_FILE),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// How big the log in `raft_dir` is, as stored (sealed): for the Raft benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSizes {
    /// The data file's size on disk.
    pub file_bytes: u64,
    /// Entries kept after the last compaction, and their bytes.
    pub entries: u64,
    pub entry_bytes: u64,
    /// The latest snapshot's bytes (0 when there is none).
    pub snapshot_bytes: u64,
}

/// Measures the log in `raft_dir` (no key needed: the sizes are those of the sealed records).
pub fn log_sizes(raft_dir: &Path) -> Result<LogSizes, RaftError> {
    let file_bytes = std::fs::metadata(raft_dir.join(DATA_FILE))
        .map_err(|source| RaftError::Io {
            path: raft_dir.join(DATA_FILE),
            source,
        })?
        .len();
    read_copy(raft_dir, |db, corrupt| {
        let txn = db.begin_read().map_err(|e| corrupt(&e))?;
        let mut sizes = LogSizes {
            file_bytes,
            ..Default::default()
        };
        let entries = txn.open_table(ENTRIES).map_err(|e| corrupt(&e))?;
        for row in entries.iter().map_err(|e| corrupt(&e))? {
            let (_, value) = row.map_err(|e| corrupt(&e))?;
            sizes.entries += 1;
            sizes.entry_bytes += value.value().len() as u64;
        }
        let meta = txn.open_table(META).map_err(|e| corrupt(&e))?;
        if let Some(snapshot) = meta.get(KEY_SNAPSHOT).map_err(|e| corrupt(&e))? {
            sizes.snapshot_bytes = snapshot.value().len() as u64;
        }
        Ok(sizes)
    })
}

/// Opens a copy of the data file in `raft_dir` and runs `read` on it; `read` is handed the
/// database and a way to name a read failure as corruption of the original file.
fn read_copy<T>(
    raft_dir: &Path,
    read: impl FnOnce(&Database, &dyn Fn(&dyn std::fmt::Display) -> RaftError) -> Result<T, RaftError>,
) -> Result<T, RaftError> {
    let copy = std::env::temp_dir().join(format!(
        "shoal-raft-copy-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let io = |source| RaftError::Io {
        path: copy.clone(),
        source,
    };
    std::fs::create_dir(&copy).map_err(io)?;
    let result = (|| {
        let path = copy.join(DATA_FILE);
        std::fs::copy(raft_dir.join(DATA_FILE), &path).map_err(io)?;
        let db = open_database(&path)?;
        let corrupt = |e: &dyn std::fmt::Display| RaftError::Corrupt {
            path: raft_dir.join(DATA_FILE),
            reason: e.to_string(),
        };
        read(&db, &corrupt)
    })();
    let _ = std::fs::remove_dir_all(&copy);
    result
}
