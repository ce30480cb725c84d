//! Who may touch the daemon's files and sockets, set explicitly whatever the umask, as dockerd
//! does with its `docker` group: the API socket is `root:GROUP 0660` when the group
//! (`shoal daemon --group`, default `shoal`) exists and `0600` otherwise; the manager's internal
//! dispatcher socket is `0600`; the data directory (the Raft log holds the root CA key and the
//! join tokens) is `0700`.

use std::fs::{self, DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::unistd::{chown, Gid, Group};

/// The group whose members may use the API socket unless `--group` names another.
pub const DEFAULT_GROUP: &str = "shoal";

/// Mode of a socket or file only its owner (root) may use.
const PRIVATE: u32 = 0o600;
/// Mode of the API socket when a group may use it too.
const GROUP_RW: u32 = 0o660;
/// Mode of the data directory.
const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` (and its parents) if needed and makes it private to its owner.
pub fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // An existing directory keeps its mode through create: set it.
    fs::set_permissions(dir, Permissions::from_mode(PRIVATE_DIR))
        .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))
}

/// Makes a socket usable by its owner only.
pub fn private_socket(path: &Path) -> Result<()> {
    fs::set_permissions(path, Permissions::from_mode(PRIVATE))
        .with_context(|| format!("cannot set the mode of {} to 0600", path.display()))
}

/// Gives the API socket to `group` (0660) when it exists, else keeps it to its owner (0600).
/// A group named explicitly (not the default) must exist: a typo must not silently lock out
/// the users it was meant for.
pub fn api_socket(path: &Path, group: &str) -> Result<()> {
    match lookup_group(group)? {
        Some(gid) => {
            chown(path, None, Some(gid))
                .with_context(|| format!("cannot give {} to group {group}", path.display()))?;
            fs::set_permissions(path, Permissions::from_mode(GROUP_RW))
                .with_context(|| format!("cannot set the mode of {} to 0660", path.display()))?;
            tracing::info!(socket = %path.display(), %group, "API socket open to the group");
            Ok(())
        }
        None if group == DEFAULT_GROUP => private_socket(path),
        None => bail!(
            "group {group:?} (--group) does not exist: create it (groupadd {group}) or leave \
             --group out to keep the API socket to root"
        ),
    }
}

fn lookup_group(name: &str) -> Result<Option<Gid>> {
    Ok(Group::from_name(name)
        .with_context(|| format!("cannot look up group {name:?}"))?
        .map(|g| g.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_sockets_are_private_whatever_they_were() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        fs::create_dir(&dir).expect("mkdir");
        fs::set_permissions(&dir, Permissions::from_mode(0o777)).expect("chmod");
        private_dir(&dir).expect("private");
        assert_eq!(mode(&dir), 0o700);
        let nested = tmp.path().join("a/b");
        private_dir(&nested).expect("created");
        assert_eq!(mode(&nested), 0o700);

        let file = tmp.path().join("sock");
        fs::write(&file, "").expect("file");
        fs::set_permissions(&file, Permissions::from_mode(0o666)).expect("chmod");
        api_socket(&file, DEFAULT_GROUP).ok();
        // With no `shoal` group on the machine, the socket is root's only.
        if lookup_group(DEFAULT_GROUP).ok().flatten().is_none() {
            assert_eq!(mode(&file), 0o600);
        }
    }

    #[test]
    fn a_named_group_that_does_not_exist_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("sock");
        fs::write(&file, "").expect("file");
        let err = api_socket(&file, "no-such-group-shoal-test").unwrap_err();
        assert!(
            format!("{err:#}").contains("groupadd no-such-group-shoal-test"),
            "{err:#}"
        );
    }
}
