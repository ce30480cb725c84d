//! Unit tests of the redb-backed Raft storage: appends and conflicts, compaction, snapshots,
//! reopening, and refusing damaged or foreign data.

use super::*;
use redb::{ReadableDatabase as _, ReadableTable as _};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}t{term}").into_bytes().into(),
        ..Default::default()
    }
}

/// A log of node 1 holding entries 1 and 2, then changed by `damage` behind the storage's back.
fn two_entries_then(
    dir: &std::path::Path,
    damage: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
) {
    let mut s = RaftStorage::open_unlocked(dir, 1).expect("open");
    s.append(&[entry(1, 1), entry(2, 1)]).expect("append");
    s.write(damage).expect("damage the log");
}

/// A new log of node `id`, the one voter of its configuration.
fn bootstrapped(dir: &std::path::Path, id: u64) -> RaftStorage {
    let mut s = RaftStorage::open_unlocked(dir, id).expect("open");
    s.bootstrap(ConfState {
        voters: vec![id],
        ..Default::default()
    })
    .expect("bootstrap");
    s
}

/// The indexes of the entries in the file's log table, in order.
fn stored_indexes(s: &RaftStorage) -> Vec<u64> {
    let txn = s.db.begin_read().expect("read");
    let table = txn.open_table(ENTRIES).expect("entries table");
    table
        .iter()
        .expect("iterate")
        .map(|row| row.expect("row").0.value())
        .collect()
}

fn indices_terms(s: &RaftStorage) -> Vec<(u64, u64)> {
    s.entries.iter().map(|e| (e.index, e.term)).collect()
}

#[test]
fn raft_storage_append_truncates_conflicting_suffix_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = RaftStorage::open_unlocked(dir.path(), 1).expect("open");
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
    let s = RaftStorage::open_unlocked(dir.path(), 1).expect("reopen");
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
        let mut s = bootstrapped(dir.path(), 7);
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
        // Gone from the file too, and only those.
        assert_eq!(stored_indexes(&s), (7..=10).collect::<Vec<_>>());
        // A conflicting suffix goes from the file as well.
        s.append(&[entry(9, 2)]).expect("append conflicting");
        assert_eq!(stored_indexes(&s), vec![7, 8, 9]);
        s.append(&[entry(10, 2)]).expect("append");
    }
    let s = RaftStorage::open_unlocked(dir.path(), 7).expect("reopen");
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
fn a_snapshot_written_on_another_thread_while_the_log_grows_is_adopted_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = bootstrapped(dir.path(), 3);
        let ents: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
        let hs = HardState {
            term: 1,
            commit: 5,
            ..Default::default()
        };
        s.persist(&ents, Some(&hs)).expect("persist");
        let snapshot = Snapshot {
            data: b"state@4".to_vec().into(),
            metadata: Some(
                s.snapshot_metadata(4, s.conf_state().clone())
                    .expect("metadata"),
            )
            .into(),
            ..Default::default()
        };
        let writer = s.snapshot_writer();
        let thread = std::thread::spawn(move || writer.write(&snapshot).map(|()| snapshot));
        // The loop goes on appending meanwhile: redb runs the two writes one after the other.
        s.append(&[entry(6, 1), entry(7, 1)]).expect("append");
        let snapshot = thread.join().expect("writer thread").expect("write");
        // Until adopted, the log serves the snapshot it had (none) and refuses compaction.
        assert_eq!(s.snapshot_index(), 0);
        assert!(s.compact(4).is_err());
        s.adopt_snapshot(snapshot).expect("adopt");
        s.compact(4).expect("compact");
        // An older snapshot than the adopted one is refused.
        let mut stale = Snapshot::default();
        stale.mut_metadata().index = 3;
        assert!(s.adopt_snapshot(stale).is_err());
    }
    let s = RaftStorage::open_unlocked(dir.path(), 3).expect("reopen");
    assert_eq!(s.snapshot_index(), 4);
    assert_eq!(s.snapshot_ref().data.as_ref(), b"state@4");
    assert_eq!(indices_terms(&s), vec![(5, 1), (6, 1), (7, 1)]);
}

#[test]
fn raft_storage_apply_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = RaftStorage::open_unlocked(dir.path(), 2).expect("open");
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
    let s = RaftStorage::open_unlocked(dir.path(), 2).expect("reopen");
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
    drop(RaftStorage::open_unlocked(dir.path(), 1).expect("open"));
    let err = RaftStorage::open_unlocked(dir.path(), 2).expect_err("wrong node");
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
    two_entries_then(dir.path(), |txn| {
        txn.open_table(ENTRIES)?
            .insert(2u64, [0xffu8, 0xff, 0xff].as_slice())?;
        Ok(())
    });
    let err = RaftStorage::open_unlocked(dir.path(), 1).expect_err("corrupt");
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
        let mut s = RaftStorage::open_unlocked(dir.path(), 1).expect("open");
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .expect("append");
        s.write(|txn| {
            txn.open_table(ENTRIES)?.remove(2u64)?;
            Ok(())
        })
        .expect("remove entry");
    }
    let err = RaftStorage::open_unlocked(dir.path(), 1).expect_err("gap");
    assert!(err.to_string().contains("not contiguous"), "{err}");
}

#[test]
fn the_raft_file_and_its_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let raft = dir.path().join("raft");
    std::fs::create_dir(&raft).expect("mkdir");
    std::fs::set_permissions(&raft, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    drop(RaftStorage::open_unlocked(&raft, 1).expect("open"));
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&raft), 0o700);
    assert_eq!(mode(&raft.join(DATA_FILE)), 0o600);
    assert_eq!(mode(&raft.join(crate::raft::keys::DEK_FILE)), 0o600);
    assert_eq!(mode(&raft.join(crate::raft::keys::KEK_FILE)), 0o600);
}

/// Whether `needle` occurs anywhere in `path`'s bytes.
fn file_contains(path: &std::path::Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(path).expect("read file");
    bytes.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn entries_and_snapshots_are_sealed_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_entry = b"-----BEGIN PRIVATE KEY----- entry secret";
    let secret_snapshot = b"SHOAL-1-snapshot-secret";
    {
        let mut s = bootstrapped(dir.path(), 1);
        let mut e = entry(1, 1);
        e.data = secret_entry.to_vec().into();
        s.append(&[e, entry(2, 1)]).expect("append");
        s.set_commit(2).expect("commit");
        s.create_snapshot(1, s.conf_state().clone(), secret_snapshot.to_vec())
            .expect("snapshot");
    }
    let file = dir.path().join(DATA_FILE);
    assert!(!file_contains(&file, secret_entry), "entry in plaintext");
    assert!(
        !file_contains(&file, secret_snapshot),
        "snapshot in plaintext"
    );
    // What the manager reads back, and what someone holding the whole directory can read.
    let s = RaftStorage::open_unlocked(dir.path(), 1).expect("reopen");
    assert_eq!(s.entries[0].data.as_ref(), secret_entry);
    assert_eq!(s.snapshot_ref().data.as_ref(), secret_snapshot);
    drop(s);
    let records = decrypted_records(dir.path(), None).expect("read as the disk's holder");
    assert_eq!(records.len(), 3);
    assert!(records
        .iter()
        .any(|r| r.windows(secret_entry.len()).any(|w| w == secret_entry)));
}

#[test]
fn a_record_moved_to_another_index_or_opened_with_another_key_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Entry 1's sealed value copied over entry 2.
    two_entries_then(dir.path(), |txn| {
        let mut table = txn.open_table(ENTRIES)?;
        let one = table
            .get(1u64)?
            .map(|v| v.value().to_vec())
            .unwrap_or_default();
        table.insert(2u64, one.as_slice())?;
        Ok(())
    });
    let err = RaftStorage::open_unlocked(dir.path(), 1).expect_err("moved record");
    assert!(matches!(err, RaftError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("entry 2 cannot be decrypted"),
        "{err}"
    );

    let other = tempfile::tempdir().expect("tempdir");
    {
        let mut s = RaftStorage::open_unlocked(other.path(), 1).expect("open");
        s.append(&[entry(1, 1)]).expect("append");
    }
    let stranger = DataKey::generate().expect("key");
    let err = RaftStorage::open(other.path(), 1, stranger).expect_err("another key");
    assert!(
        err.to_string().contains("entry 1 cannot be decrypted"),
        "{err}"
    );
}

#[test]
fn a_format_1_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = RaftStorage::open_unlocked(dir.path(), 1).expect("open");
        s.write_meta(&[(KEY_FORMAT, &1u32.to_le_bytes())])
            .expect("old format");
    }
    let err = RaftStorage::open_unlocked(dir.path(), 1).expect_err("format 1");
    assert!(
        err.to_string()
            .contains("it uses data format 1, this shoal reads format 2"),
        "{err}"
    );
}

#[test]
fn a_log_without_its_key_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(RaftStorage::open_unlocked(dir.path(), 1).expect("open"));
    std::fs::remove_file(dir.path().join(crate::raft::keys::DEK_FILE)).expect("rm dek");
    let err = RaftStorage::open_unlocked(dir.path(), 1).expect_err("no dek");
    assert!(matches!(err, RaftError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("key file"), "{err}");
    assert!(err.to_string().contains("is missing"), "{err}");
}

#[test]
fn a_newer_commit_index_alone_is_stored_with_the_next_write_or_at_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hs = |commit| HardState {
        term: 1,
        vote: 1,
        commit,
        ..Default::default()
    };
    {
        let mut s = bootstrapped(dir.path(), 1);
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .expect("append");
        s.set_hardstate(hs(1)).expect("hard state");
        s.set_commit(2).expect("commit");
        // Kept in memory: what raft-rs reads back is current.
        assert_eq!(s.hard_state().commit, 2);
    }
    // Lost without a write or a sync (Raft can lose it: the leader tells it again).
    let mut s = RaftStorage::open_unlocked(dir.path(), 1).expect("reopen");
    assert_eq!(s.hard_state().commit, 1);
    // Carried by the next append.
    s.set_commit(2).expect("commit");
    s.append(&[entry(4, 1)]).expect("append");
    drop(s);
    let mut s = RaftStorage::open_unlocked(dir.path(), 1).expect("reopen");
    assert_eq!(s.hard_state().commit, 2);
    // Stored by a clean close's sync.
    s.set_commit(3).expect("commit");
    s.sync().expect("sync");
    drop(s);
    let s = RaftStorage::open_unlocked(dir.path(), 1).expect("reopen");
    assert_eq!(s.hard_state().commit, 3);
}
