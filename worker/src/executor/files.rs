//! A task's secret and config files (`--secret`, `--config`): written into an in-memory
//! filesystem of the task's own (a tmpfs at `<task dir>/files`), each bind-mounted read-only at
//! its place in the container. Nothing of them touches the node's disk, and they go with the
//! container ([`remove`]): the tmpfs is unmounted, so its memory is freed.
//!
//! The mount outlives a daemon restart (it is the kernel's), so an adopted task keeps its
//! files; a start always builds them afresh.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{chown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags, MsFlags};
use shoal_proto::{mount, Mount};

use super::ExecutorError;

/// One file to put into a task's containers.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskFile {
    /// Absolute path inside the container.
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Never the data: a task's files may be secrets.
impl std::fmt::Debug for TaskFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFile")
            .field("path", &self.path)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:o}", self.mode))
            .field(
                "data",
                &format_args!("[REDACTED; {} bytes]", self.data.len()),
            )
            .finish()
    }
}

/// The task's in-memory filesystem.
pub fn files_dir(task_dir: &Path) -> PathBuf {
    task_dir.join("files")
}

fn io_err(task: &str, what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExecutorError {
    let (task, path) = (task.to_string(), path.to_path_buf());
    move |source| ExecutorError::Io {
        task,
        what,
        path,
        source,
    }
}

/// Whether `dir` is a mount point (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (fs::metadata(dir), dir.parent().map(fs::metadata)) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Makes the task's tmpfs and writes `files` into it; returns the read-only bind mounts that
/// put them in the container. No files: nothing is mounted.
pub(super) fn write(
    task_id: &str,
    task_dir: &Path,
    files: &[TaskFile],
) -> Result<Vec<Mount>, ExecutorError> {
    let dir = files_dir(task_dir);
    // An earlier start that died half-way may have left one: start afresh.
    remove(task_id, task_dir)?;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    fs::create_dir_all(&dir).map_err(io_err(task_id, "cannot create", &dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(
        task_id,
        "cannot set the mode of",
        &dir,
    ))?;
    // A page per file at least, plus room for the directory.
    let size: usize = files
        .iter()
        .map(|f| f.data.len().div_ceil(4096) * 4096 + 4096)
        .sum();
    let options = format!(
        "mode=0700,size={},nr_inodes={}",
        size + 4096,
        files.len() + 16
    );
    nix::mount::mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|e| io_err(task_id, "cannot mount a tmpfs at", &dir)(io::Error::from(e)))?;
    let written = files.iter().enumerate().try_for_each(|(i, f)| {
        let path = dir.join(i.to_string());
        write_one(&path, f).map_err(io_err(task_id, "cannot write", &path))
    });
    if let Err(e) = written {
        let _ = remove(task_id, task_dir);
        return Err(e);
    }
    Ok(files
        .iter()
        .enumerate()
        .map(|(i, f)| Mount {
            r#type: mount::Type::Bind as i32,
            source: dir.join(i.to_string()).to_string_lossy().into_owned(),
            target: f.path.clone(),
            read_only: true,
            ..Default::default()
        })
        .collect())
}

fn write_one(path: &Path, f: &TaskFile) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&f.data)?;
    chown(path, Some(f.uid), Some(f.gid))?;
    // After chown, which clears the set-id bits a mode could not carry anyway.
    fs::set_permissions(path, fs::Permissions::from_mode(f.mode))
}

/// Unmounts the task's tmpfs (freeing its memory) and removes its directory. Idempotent.
pub(crate) fn remove(task_id: &str, task_dir: &Path) -> Result<(), ExecutorError> {
    let dir = files_dir(task_dir);
    if is_mount_point(&dir) {
        umount2(&dir, MntFlags::MNT_DETACH).map_err(|e| {
            io_err(task_id, "cannot unmount the task's files at", &dir)(io::Error::from(e))
        })?;
    }
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(task_id, "cannot remove", &dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_data() {
        let f = TaskFile {
            path: "/run/secrets/pw".into(),
            uid: 0,
            gid: 0,
            mode: 0o400,
            data: b"hunter2".to_vec(),
        };
        let printed = format!("{f:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("/run/secrets/pw") && printed.contains("400"),
            "{printed}"
        );
    }
}
