//! Writing the leader's log entries on a thread of their own while the Raft loop goes on.
//!
//! A leader may send its entries to the followers before they are on its own disk; it counts
//! its own acknowledgement once they are (Raft thesis 10.2.1; raft-rs's asynchronous `Ready`:
//! `advance_append_async`, then `on_persist_ready`). With the write on the loop's thread the
//! loop stood still for every fsync: the followers' answers, new proposals and the apply of
//! what was committed all waited behind it. A [`LogWriter`] takes each `Ready`'s write
//! ([`LogWrite`]) in order, seals it, puts whatever is queued into one transaction (one fsync
//! for several `Ready`s when the disk is slower than the loop) and tells the loop which
//! `Ready` is on disk.
//!
//! Every other write of the log (a follower's appends, the configuration, compaction, a
//! snapshot) stays on the loop's thread and first waits until the writer has written all it
//! was given ([`LogWriter::wait_idle`]): the file changes in the order the loop made the
//! changes, and the in-memory mirror (`RaftStorage::entries`), which is updated when a write
//! is handed over, never describes a write that a later one could overtake.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use raft::eraftpb::{Entry, HardState};
use redb::{Database, Durability, WriteTransaction};
use tokio::sync::Notify;
use tracing::warn;

use super::{commit, encode, entry_aad, put_meta, remove_entries, seal, ENTRIES, KEY_HARD_STATE};
use crate::raft::cipher::DataKey;
use crate::raft::RaftError;

/// What one `Ready` asks to be written: the same for the loop's own writes and the writer's.
#[derive(Debug)]
pub(super) struct LogWrite {
    /// The conflicting suffix dropped before `entries` go in (a new leader's log wins).
    pub remove: Option<RangeInclusive<u64>>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

/// A [`LogWrite`] encoded and sealed, ready to go into a transaction.
pub(super) struct SealedWrite {
    remove: Option<RangeInclusive<u64>>,
    entries: Vec<(u64, Vec<u8>)>,
    hard_state: Option<Vec<u8>>,
}

impl LogWrite {
    /// Encodes and seals the entries (bound to their index) and encodes the hard state.
    pub fn seal(self, key: &DataKey, path: &Path) -> Result<SealedWrite, RaftError> {
        let entries = self
            .entries
            .iter()
            .map(|e| {
                Ok((
                    e.index,
                    seal(key, path, &encode(e, path)?, &entry_aad(e.index))?,
                ))
            })
            .collect::<Result<_, RaftError>>()?;
        let hard_state = self
            .hard_state
            .as_ref()
            .map(|hs| encode(hs, path))
            .transpose()?;
        Ok(SealedWrite {
            remove: self.remove,
            entries,
            hard_state,
        })
    }
}

impl SealedWrite {
    /// Puts the write into `txn`.
    pub fn put(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        if let Some(range) = &self.remove {
            remove_entries(txn, range.clone())?;
        }
        if !self.entries.is_empty() {
            let mut table = txn.open_table(ENTRIES)?;
            for (index, bytes) in &self.entries {
                table.insert(*index, bytes.as_slice())?;
            }
        }
        if let Some(bytes) = &self.hard_state {
            put_meta(txn, &[(KEY_HARD_STATE, bytes)])?;
        }
        Ok(())
    }
}

/// The writer's thread, and what the loop knows of the `Ready`s handed to it.
pub(super) struct LogWriter {
    jobs: Option<mpsc::Sender<(u64, LogWrite)>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    /// Numbers of the `Ready`s handed over whose write was not seen done yet, in order.
    in_flight: VecDeque<u64>,
    /// The last `Ready` handed over or noted ([`LogWriter::note`]).
    last: u64,
    /// The last `Ready` reported on disk ([`LogWriter::persisted`]).
    reported: u64,
}

/// What the thread tells the loop.
struct Shared {
    state: Mutex<WriterState>,
    /// Signalled when a write is done or failed, for [`LogWriter::wait_idle`].
    changed: Condvar,
    /// Wakes the Raft loop when a write is done or failed.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct WriterState {
    /// The last `Ready` whose write is on disk.
    written: u64,
    /// Why the writer stopped: a write failed, and nothing after it was written.
    error: Option<RaftError>,
    /// The failure's message, once `error` was handed to the loop.
    failed: Option<String>,
}

impl WriterState {
    /// The failure, if a write failed: the error itself the first time, its message after.
    fn failure(&mut self) -> Result<(), RaftError> {
        if let Some(error) = self.error.take() {
            self.failed = Some(error.to_string());
            return Err(error);
        }
        match &self.failed {
            Some(reason) => Err(RaftError::Failed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl LogWriter {
    /// Starts the thread writing into `db` (the file at `path`), sealing with `key`; `wake` is
    /// notified whenever a write is done or failed.
    pub fn start(
        db: Arc<Database>,
        key: DataKey,
        path: PathBuf,
        wake: Arc<Notify>,
    ) -> Result<Self, RaftError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(WriterState::default()),
            changed: Condvar::new(),
            wake,
        });
        let (jobs, queue) = mpsc::channel();
        let thread = {
            let (shared, path) = (shared.clone(), path.clone());
            std::thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || write_loop(&queue, &db, &key, &path, &shared))
                .map_err(RaftError::Spawn)?
        };
        Ok(LogWriter {
            jobs: Some(jobs),
            shared,
            thread: Some(thread),
            path,
            in_flight: VecDeque::new(),
            last: 0,
            reported: 0,
        })
    }

    /// Hands over the write of `Ready` number `number`; `Ready`s must come in order.
    pub fn submit(&mut self, number: u64, write: LogWrite) -> Result<(), RaftError> {
        // Nothing goes after a failed write.
        self.lock().failure()?;
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send((number, write)).is_ok());
        if !sent {
            // The thread ended: a write failed (its error says which), or it panicked.
            self.lock().failure()?;
            return Err(RaftError::Failed {
                reason: format!(
                    "the writer of the raft log at {} stopped",
                    self.path.display()
                ),
            });
        }
        self.in_flight.push_back(number);
        self.last = number;
        Ok(())
    }

    /// Notes `Ready` number `number`, which had nothing to write: it is on disk as soon as
    /// every write handed over before it is.
    pub fn note(&mut self, number: u64) {
        self.last = self.last.max(number);
    }

    /// Whether a write handed over is not done yet.
    pub fn busy(&mut self) -> Result<bool, RaftError> {
        self.refresh()?;
        Ok(!self.in_flight.is_empty())
    }

    /// The number of the last `Ready` that is now on disk with every one before it, if that
    /// moved since the last call; the error of a failed write.
    pub fn persisted(&mut self) -> Result<Option<u64>, RaftError> {
        self.refresh()?;
        let upto = match self.in_flight.front() {
            Some(&next) => next - 1,
            None => self.last,
        };
        if upto > self.reported {
            self.reported = upto;
            return Ok(Some(upto));
        }
        Ok(None)
    }

    /// Waits until every write handed over is on disk (or one failed).
    pub fn wait_idle(&self) -> Result<(), RaftError> {
        let Some(&last) = self.in_flight.back() else {
            return Ok(());
        };
        let mut state = self.lock();
        loop {
            state.failure()?;
            if state.written >= last || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                break;
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.written < last {
            return Err(RaftError::Failed {
                reason: format!(
                    "the writer of the raft log at {} stopped before writing everything",
                    self.path.display()
                ),
            });
        }
        Ok(())
    }

    /// Drops the writes seen done from `in_flight`; the error of a failed write.
    fn refresh(&mut self) -> Result<(), RaftError> {
        let written = {
            let mut state = self.lock();
            state.failure()?;
            state.written
        };
        while self.in_flight.front().is_some_and(|&n| n <= written) {
            self.in_flight.pop_front();
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        // The state is a few numbers, consistent after any panic.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for LogWriter {
    /// Lets the thread write what it was given, then waits for it: the file is closed only
    /// once nobody writes into it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!(path = %self.path.display(), "the raft log's writer thread panicked");
            }
        }
    }
}

/// The thread: takes what is queued, writes it in one durable transaction, reports; stops at
/// the first failure (nothing after a failed write may reach the file) or when the loop drops
/// its end.
fn write_loop(
    queue: &mpsc::Receiver<(u64, LogWrite)>,
    db: &Database,
    key: &DataKey,
    path: &Path,
    shared: &Shared,
) {
    while let Ok(first) = queue.recv() {
        let mut last = first.0;
        let mut writes = vec![first.1];
        while let Ok((number, write)) = queue.try_recv() {
            last = number;
            writes.push(write);
        }
        let result = writes
            .into_iter()
            .map(|w| w.seal(key, path))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|sealed| {
                commit(db, path, Durability::Immediate, |txn| {
                    sealed.iter().try_for_each(|w| w.put(txn))
                })
            });
        let failed = result.is_err();
        {
            let mut state = shared
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match result {
                Ok(()) => state.written = last,
                Err(e) => state.error = Some(e),
            }
        }
        shared.changed.notify_all();
        shared.wake.notify_one();
        if failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
