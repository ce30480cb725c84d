//! Which tasks have a final status written down (`<task dir>/status.json`), so that a new
//! task's controller reads the disk only for a task that may have one. Every task used to open
//! its (nearly always missing) file as its controller began: a worker handed a hundred tasks at
//! once made a hundred failed path walks, and the hollow nodes of `bench/scale.sh` spent 8 % of
//! their CPU there.
//!
//! The set never misses a task that has the file: it starts from the task directories on disk
//! and takes in each task before its status is written. It may name a task whose file is gone
//! (removed by hand): the read then finds nothing, as before.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::logs;

/// The file a final status is written to, in the task's directory.
pub(super) const STATUS_FILE: &str = "status.json";

#[derive(Debug, Default)]
pub(super) struct Finished {
    ids: Mutex<HashSet<String>>,
}

impl Finished {
    /// The tasks under `data_dir` whose directory holds a final status (from an earlier run).
    pub(super) fn load(data_dir: &Path) -> Self {
        let ids = std::fs::read_dir(logs::tasks_dir(data_dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(STATUS_FILE).exists())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        Finished {
            ids: Mutex::new(ids),
        }
    }

    fn ids(&self) -> MutexGuard<'_, HashSet<String>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `task_id` may have a final status on disk.
    pub(super) fn may_have(&self, task_id: &str) -> bool {
        self.ids().contains(task_id)
    }

    /// `task_id`'s final status is about to be written.
    pub(super) fn insert(&self, task_id: &str) {
        self.ids().insert(task_id.to_string());
    }

    /// `task_id`'s directory is gone.
    pub(super) fn forget(&self, task_id: &str) {
        self.ids().remove(task_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_left_by_an_earlier_run_is_found_and_the_rest_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let done = logs::task_dir(dir.path(), "done");
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(done.join(STATUS_FILE), b"{}").unwrap();
        // A task that ran but never finished: its directory has logs, no status.
        std::fs::create_dir_all(logs::task_dir(dir.path(), "running")).unwrap();

        let finished = Finished::load(dir.path());
        assert!(finished.may_have("done"));
        assert!(!finished.may_have("running"));
        assert!(!finished.may_have("new"));

        finished.insert("new");
        assert!(finished.may_have("new"));
        finished.forget("done");
        assert!(!finished.may_have("done"));
    }

    #[test]
    fn a_data_dir_without_tasks_loads_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!Finished::load(&dir.path().join("missing")).may_have("t1"));
    }
}
