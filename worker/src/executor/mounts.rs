//! A task's `--mount`s on this node, before its container is made: a bind mount's source must
//! exist (docker refuses to make it up), a volume is made on first use in the node's
//! [`Volumes`] and, like docker's, filled with what the image holds at the target unless the
//! mount says `volume-nocopy`; a tmpfs needs nothing.
//!
//! The copy reads the image through the task's own snapshot, mounted read-only for the copy
//! only, before the container exists: the same files the container would have seen there.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt};
use std::path::{Path, PathBuf};

use containerd_client::types::Mount as SnapshotMount;
use nix::mount::{umount2, MntFlags, MsFlags};
use shoal_proto::{mount, ContainerSpec};
use tracing::{debug, warn};

use super::ExecutorError;
use crate::spec::options::ResolvedMount;
use crate::volumes::{anonymous_name, Volumes};

/// The task's mounts resolved, and the volumes made now that should get the image's files.
pub(super) struct TaskMounts<'a> {
    pub(super) resolved: Vec<ResolvedMount<'a>>,
    /// (volume data directory, target) of each volume made for this start.
    pub(super) fresh: Vec<(PathBuf, &'a str)>,
    /// The names of every volume mounted, for the container's label.
    pub(super) volumes: Vec<String>,
}

impl<'a> TaskMounts<'a> {
    /// Adds the read-only binds of the task's secret and config files
    /// ([`super::files::write`]).
    pub(super) fn add_files(&mut self, files: &'a [shoal_proto::Mount]) {
        self.resolved.extend(files.iter().map(|m| ResolvedMount {
            mount: m,
            source: Some(PathBuf::from(&m.source)),
        }));
    }
}

fn mount_error(task: &str, target: &str, reason: String) -> ExecutorError {
    ExecutorError::Mount {
        task: task.to_string(),
        target: target.to_string(),
        reason,
    }
}

/// Resolves every mount of `cs` for task `task_id`, making volumes that do not exist yet.
pub(super) fn resolve<'a>(
    volumes: &Volumes,
    task_id: &str,
    cs: &'a ContainerSpec,
) -> Result<TaskMounts<'a>, ExecutorError> {
    let mut out = TaskMounts {
        resolved: Vec::new(),
        fresh: Vec::new(),
        volumes: Vec::new(),
    };
    for (index, m) in cs.mounts.iter().enumerate() {
        let source = match mount::Type::try_from(m.r#type).unwrap_or_default() {
            mount::Type::Bind => {
                let path = PathBuf::from(&m.source);
                if fs::symlink_metadata(&path).is_err() {
                    return Err(mount_error(
                        task_id,
                        &m.target,
                        format!(
                            "bind source path {} does not exist on this node; create it, or \
                             constrain the service to nodes that have it",
                            m.source
                        ),
                    ));
                }
                Some(path)
            }
            mount::Type::Volume => {
                let (name, anonymous) = if m.source.is_empty() {
                    (anonymous_name(task_id, index), Some(task_id))
                } else {
                    (m.source.clone(), None)
                };
                let (info, made) = volumes
                    .ensure(&name, &m.volume_labels, anonymous)
                    .map_err(|e| mount_error(task_id, &m.target, e.to_string()))?;
                if made && !m.no_copy {
                    out.fresh.push((info.mountpoint.clone(), m.target.as_str()));
                }
                out.volumes.push(name);
                Some(info.mountpoint)
            }
            mount::Type::Tmpfs => None,
        };
        out.resolved.push(ResolvedMount { mount: m, source });
    }
    Ok(out)
}

/// Copies what the image holds at each fresh volume's target into the volume, reading the
/// task's snapshot through a private read-only mount of it under `scratch`.
pub(super) fn copy_image_content(
    task_id: &str,
    snapshot: &[SnapshotMount],
    fresh: &[(PathBuf, &str)],
    scratch: &Path,
) -> Result<(), ExecutorError> {
    if fresh.is_empty() {
        return Ok(());
    }
    let io_err = |what: &'static str, path: &Path| ExecutorError::io(task_id, what, path);
    fs::create_dir_all(scratch).map_err(io_err("cannot create", scratch))?;
    mount_snapshot(snapshot, scratch).map_err(io_err("cannot mount the image at", scratch))?;
    let copied = fresh.iter().try_for_each(|(volume, target)| {
        let from = scratch.join(target.trim_start_matches('/'));
        if !from.is_dir() {
            return Ok(());
        }
        debug!(task = %task_id, target, volume = %volume.display(), "copying the image's files into a new volume");
        copy_tree(&from, volume).map_err(io_err("cannot copy the image's files into", volume))
    });
    if let Err(e) = umount2(scratch, MntFlags::MNT_DETACH) {
        warn!(task = %task_id, path = %scratch.display(), error = %e, "unmounting the image copy failed");
    }
    let _ = fs::remove_dir(scratch);
    copied
}

/// Mounts the snapshot's one mount (overlay or bind) read-only at `at`.
fn mount_snapshot(snapshot: &[SnapshotMount], at: &Path) -> io::Result<()> {
    let m = snapshot
        .first()
        .ok_or_else(|| io::Error::other("the snapshot has no mount"))?;
    let mut options: Vec<&str> = Vec::new();
    let mut flags = MsFlags::MS_RDONLY;
    for o in &m.options {
        match o.as_str() {
            "ro" => {}
            "rw" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => options.push(other),
        }
    }
    let data = options.join(",");
    nix::mount::mount(
        Some(m.source.as_str()),
        at,
        Some(m.r#type.as_str()),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(io::Error::from)
}

/// Copies the tree under `from` into `to` (which exists), keeping modes, owners and symlinks;
/// sockets, FIFOs and devices are skipped.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&dst)?;
            copy_tree(&src, &dst)?;
            fs::set_permissions(&dst, meta.permissions())?;
        } else if ft.is_file() {
            fs::copy(&src, &dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else {
            continue;
        }
        lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_files_modes_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let from = dir.path().join("from");
        fs::create_dir_all(from.join("sub")).expect("mkdir");
        fs::write(from.join("sub/f"), "hello").expect("write");
        fs::set_permissions(from.join("sub/f"), fs::Permissions::from_mode(0o640)).expect("chmod");
        std::os::unix::fs::symlink("sub/f", from.join("link")).expect("symlink");
        let to = dir.path().join("to");
        fs::create_dir(&to).expect("mkdir");
        copy_tree(&from, &to).expect("copy");
        assert_eq!(fs::read_to_string(to.join("sub/f")).expect("read"), "hello");
        let mode = fs::metadata(to.join("sub/f"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            fs::read_link(to.join("link")).expect("link"),
            Path::new("sub/f")
        );
    }

    #[test]
    fn a_missing_bind_source_is_refused_and_volumes_are_made() {
        use shoal_proto::validate::mounts::parse_mount;
        let dir = tempfile::tempdir().expect("tempdir");
        let volumes = Volumes::new(dir.path());
        let cs = ContainerSpec {
            mounts: vec![parse_mount("type=bind,source=/nonexistent/x,target=/x").expect("valid")],
            ..Default::default()
        };
        let err = resolve(&volumes, "t1", &cs)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("bind source path /nonexistent/x does not exist"),
            "{err}"
        );

        let cs = ContainerSpec {
            mounts: vec![
                parse_mount("source=data,target=/data").expect("valid"),
                parse_mount("target=/anon,volume-nocopy").expect("valid"),
                parse_mount("type=tmpfs,target=/t").expect("valid"),
            ],
            ..Default::default()
        };
        let m = resolve(&volumes, "t1", &cs).expect("resolved");
        assert_eq!(m.volumes, vec!["data", "t1-1"]);
        assert_eq!(m.fresh.len(), 1, "nocopy volumes get nothing copied");
        assert!(m.resolved[2].source.is_none());
        // Made once: a second start copies nothing.
        let m = resolve(&volumes, "t2", &cs).expect("resolved");
        assert_eq!(m.volumes, vec!["data", "t2-1"]);
        assert!(m.fresh.is_empty());
    }
}
