//! Unit tests of the log's writer thread: order, reports, the wait of the loop's own writes,
//! and a failed write.

use super::super::tests::{bootstrapped, entry, indices_terms};
use super::super::*;
use super::LogWriter;
use raft::eraftpb::HardState;
use redb::TableDefinition;

fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
        ..Default::default()
    }
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|i| entry(i, term)).collect()
}

#[test]
fn a_leaders_writes_reach_the_disk_in_order_and_are_reported_once_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = bootstrapped(dir.path(), 1);
        s.start_writer(Arc::new(Notify::new())).expect("writer");
        s.persist_async(1, entries(1..=2, 1), Some(&hard_state(1, 0)))
            .expect("first ready");
        // raft-rs reads what it handed over at once, written or not.
        assert_eq!(indices_terms(&s), vec![(1, 1), (2, 1)]);
        s.persist_async(2, Vec::new(), None)
            .expect("a ready with nothing to write");
        s.persist_async(3, entries(3..=3, 1), None)
            .expect("third ready");
        s.wait_written().expect("written");
        // Everything up to the last ready is on disk, and said so once.
        assert_eq!(s.persisted_ready().expect("persisted"), Some(3));
        assert_eq!(s.persisted_ready().expect("persisted"), None);
        // A ready with nothing to write while nothing is in flight is on disk already.
        assert!(!s.persist_async(4, Vec::new(), None).expect("idle ready"));
        assert_eq!(s.persisted_ready().expect("persisted"), Some(4));
    }
    let s = RaftStorage::open_unlocked(dir.path(), 1).expect("reopen");
    assert_eq!(indices_terms(&s), vec![(1, 1), (2, 1), (3, 1)]);
    assert_eq!(s.hard_state().term, 1);
}

#[test]
fn a_write_on_the_loops_thread_waits_for_the_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = bootstrapped(dir.path(), 1);
        s.start_writer(Arc::new(Notify::new())).expect("writer");
        // Enough for the writer to be still at it when the loop writes the conflicting
        // suffix itself: written out of order, the old tail would come back after it.
        for (number, first) in (1..=20u64).zip((1..).step_by(100)) {
            s.persist_async(
                number,
                entries(first..=first + 99, 1),
                Some(&hard_state(1, 0)),
            )
            .expect("leader's ready");
        }
        s.persist(&entries(1_500..=1_500, 2), Some(&hard_state(2, 0)))
            .expect("the new leader's entry");
        assert_eq!(s.persisted_ready().expect("persisted"), Some(20));
    }
    let s = RaftStorage::open_unlocked(dir.path(), 1).expect("reopen");
    let stored = indices_terms(&s);
    assert_eq!(stored.len(), 1_500);
    assert_eq!(stored.last(), Some(&(1_500, 2)));
    assert_eq!(s.hard_state().term, 2);
}

#[test]
fn a_failed_write_stops_the_writer_and_every_later_write_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DATA_FILE);
    let db = Arc::new(load::open_database(&path).expect("open"));
    // The entries' table made with another key type: opening it for the entries fails.
    const WRONG: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_entries");
    commit(&db, &path, Durability::Immediate, |txn| {
        txn.open_table(WRONG)?;
        Ok(())
    })
    .expect("make the table");
    let key = crate::raft::cipher::DataKey::generate().expect("key");
    let wake = Arc::new(Notify::new());
    let mut writer = LogWriter::start(db, key, path.clone(), wake).expect("writer");
    let write = |first| LogWrite {
        remove: None,
        entries: entries(first..=first, 1),
        hard_state: None,
    };
    writer.submit(1, write(1)).expect("handed over");
    let first = writer.wait_idle().expect_err("the write fails");
    assert!(matches!(first, RaftError::Write { .. }), "{first}");
    assert!(
        first.to_string().contains("writing raft data at"),
        "{first}"
    );
    // Said again, by message, to whoever asks next; nothing more is taken.
    let again = writer.persisted().expect_err("still failed");
    assert!(again.to_string().contains(&first.to_string()), "{again}");
    assert!(writer.submit(2, write(2)).is_err());
    assert!(writer.busy().is_err());
}
