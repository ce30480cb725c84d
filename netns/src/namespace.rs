//! Network namespaces, kept alive one of two ways:
//!
//! * **named, as bind mounts** in a directory of our own, the way iproute2 keeps them in
//!   /run/netns ([`NetnsDir`]): a namespace lives as long as its mount (or a process, or an open
//!   file) holds it, and a restarted daemon finds every namespace it made by listing the
//!   directory (reconcile after a kill -9). For the few namespaces a node has whatever its
//!   task count (one per overlay network, the ingress balancer's).
//! * **held by an open descriptor** of this process ([`Netns::new_held`], [`Netns::of_process`]):
//!   no mount at all, for the one namespace of each task. Every mount is a line of
//!   /proc/self/mountinfo, which runc and containerd's shim read and parse several times for
//!   each container they create, so a mount per task made each container start on the node
//!   slower in proportion to the tasks already there. A task's namespace needs no name on
//!   disk: its container holds it once started, and a restarted daemon finds it through the
//!   container's pid.
//!
//! The product uses e.g. /run/shoal/netns; tests use a private temporary directory, so they never
//! show up in `ip netns` and never collide with each other.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::FsType;

use crate::error::{Error, Result};

/// `statfs` type of the nsfs file system that namespace files (and their bind mounts) live on.
const NSFS_MAGIC: FsType = FsType(0x6e73_6673);

/// A directory of named network namespaces.
#[derive(Debug, Clone)]
pub struct NetnsDir {
    dir: PathBuf,
}

/// A network namespace: a name for logs and errors, and a path that opens it (for `nsenter
/// --net=PATH` or an OCI spec's `linux.namespaces[network].path`). Either a bind mount in a
/// [`NetnsDir`], which keeps the namespace alive (holding a `Netns` then does not), or an open
/// descriptor of this process, which every clone shares: the namespace then lives until the
/// last clone is dropped (or longer, while a process or socket is in it).
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
    path: PathBuf,
    held: Option<Arc<File>>,
}

/// Two handles are the same namespace when they name it and reach it the same way.
impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.path == other.path
    }
}

impl Eq for Netns {}

impl NetnsDir {
    /// Uses `dir` (created if missing) for namespaces. As iproute2 does, the directory is made a
    /// shared mount point (bind-mounted onto itself if it is not a mount point yet): a mount
    /// namespace copied later (a container's) then sees our unmounts, so deleting a namespace
    /// is not defeated by a stale copy of its mount elsewhere.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            op: "creating namespace directory",
            path: dir.clone(),
            source,
        })?;
        make_shared(&dir)?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace `name`, created if it does not exist yet. Creating what exists is not an
    /// error: the reconcile loop calls this for every namespace it wants. A leftover entry that
    /// is not a namespace (a create interrupted by a kill -9) is replaced.
    pub fn ensure(&self, name: &str) -> Result<Netns> {
        let ns = self.entry(name)?;
        if is_netns(&ns.path) {
            return Ok(ns);
        }
        remove_file_if_present(&ns.path)?;
        // An empty file to mount onto; O_EXCL so that two creators of one name do not both
        // think they made it.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&ns.path)
            .map_err(|source| Error::Io {
                op: "creating namespace file",
                path: ns.path.clone(),
                source,
            })?;
        if let Err(err) = new_netns_mounted_on(&ns) {
            let _ = fs::remove_file(&ns.path);
            return Err(err);
        }
        tracing::info!(netns = %ns.name, path = %ns.path.display(), "created network namespace");
        Ok(ns)
    }

    /// The namespace `name` if it exists.
    pub fn get(&self, name: &str) -> Result<Option<Netns>> {
        let ns = self.entry(name)?;
        Ok(is_netns(&ns.path).then_some(ns))
    }

    /// Unmounts and removes the namespace `name`; returns whether there was anything to remove.
    /// Deleting what is gone is not an error. The kernel frees the namespace, and with it every
    /// link inside (a veth's peer elsewhere too), once no process, open file or netlink socket
    /// (a [`crate::Netlink`] handle) refers to it any more.
    pub fn delete(&self, name: &str) -> Result<bool> {
        let ns = self.entry(name)?;
        let mounted = match umount2(&ns.path, MntFlags::MNT_DETACH) {
            Ok(()) => true,
            // Not a mount point (half-created) or no file at all: nothing mounted.
            Err(Errno::EINVAL | Errno::ENOENT) => false,
            Err(source) => {
                return Err(Error::Sys {
                    op: "unmounting namespace",
                    path: ns.path,
                    source,
                })
            }
        };
        let removed = remove_file_if_present(&ns.path)?;
        if mounted || removed {
            tracing::info!(netns = %ns.name, "deleted network namespace");
        }
        Ok(mounted || removed)
    }

    /// The names of all entries in the directory, sorted: what a restarted daemon compares with
    /// what it wants. A half-created entry is listed too, so that cleanup can delete it.
    pub fn list(&self) -> Result<Vec<String>> {
        let io_err = |source| Error::Io {
            op: "listing namespace directory",
            path: self.dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes the directory, which must be empty, and the mount of it onto itself that
    /// [`NetnsDir::new`] may have made.
    pub fn remove(self) -> Result<()> {
        match umount2(&self.dir, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point.
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(source) => {
                return Err(Error::Sys {
                    op: "unmounting namespace directory",
                    path: self.dir,
                    source,
                })
            }
        }
        fs::remove_dir(&self.dir).map_err(|source| Error::Io {
            op: "removing namespace directory",
            path: self.dir.clone(),
            source,
        })
    }

    fn entry(&self, name: &str) -> Result<Netns> {
        validate_name(name)?;
        Ok(Netns {
            name: name.to_string(),
            path: self.dir.join(name),
            held: None,
        })
    }
}

impl Netns {
    /// A new network namespace held by an open descriptor of this process, mounted nowhere.
    /// `name` is for logs and errors only. The unshare happens in a short-lived thread, for the
    /// reason [`NetnsDir::ensure`]'s does.
    pub fn new_held(name: &str) -> Result<Self> {
        let owned = name.to_string();
        let file = in_helper_thread(name, "shoal-netns-new", move || {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|source| Error::Sys {
                op: "unsharing network namespace",
                path: PathBuf::from(THREAD_NETNS),
                source,
            })?;
            open_netns_file(&owned, Path::new(THREAD_NETNS))
        })?;
        Ok(Self::held(name, file))
    }

    /// The network namespace process `pid` is in (a task's container, found again after a
    /// restart), held by an open descriptor of this process from now on.
    pub fn of_process(name: &str, pid: u32) -> Result<Self> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        Ok(Self::held(name, open_netns_file(name, &path)?))
    }

    /// Another process reaches the descriptor through this process's `/proc` entry (not
    /// `/proc/self`, which would be its own).
    fn held(name: &str, file: File) -> Self {
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        Self {
            name: name.to_string(),
            path,
            held: Some(Arc::new(file)),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted file, for `nsenter --net=PATH` or an OCI spec's
    /// `linux.namespaces[network].path`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets a network sysctl inside the namespace, e.g. `("net/ipv4/ip_forward", "1")`:
    /// `/proc/sys/net` shows the namespace of the thread that opens it, so a short-lived
    /// helper thread enters the namespace and writes it (libnetwork does the same).
    pub fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let file = self.open()?;
        let path = Path::new("/proc/sys").join(key);
        let value = value.to_string();
        let ns_path = self.path.clone();
        in_helper_thread(&self.name, "shoal-netns-sysctl", move || {
            enter(&file, ns_path)?;
            fs::write(&path, value).map_err(|source| Error::Io {
                op: "writing sysctl",
                path,
                source,
            })
        })
    }

    /// Opens the namespace file, for `setns` or to move a link into the namespace.
    pub(crate) fn open(&self) -> Result<File> {
        if let Some(file) = &self.held {
            return file.try_clone().map_err(|source| Error::Io {
                op: "duplicating the descriptor of namespace",
                path: self.path.clone(),
                source,
            });
        }
        open_netns_file(&self.name, &self.path)
    }
}

fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        "must be a plain file name"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_string(),
        reason,
    })
}

fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|fs| fs.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

fn remove_file_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Io {
            op: "removing namespace file",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn make_shared(dir: &Path) -> Result<()> {
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    let sys_err = |op, source| Error::Sys {
        op,
        path: dir.to_path_buf(),
        source,
    };
    match shared() {
        Ok(()) => return Ok(()),
        // EINVAL: not a mount point yet.
        Err(Errno::EINVAL) => {}
        Err(err) => return Err(sys_err("making namespace directory a shared mount", err)),
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|err| sys_err("bind-mounting namespace directory onto itself", err))?;
    shared().map_err(|err| sys_err("making namespace directory a shared mount", err))
}

/// The calling thread's network namespace.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Creates a new network namespace and bind-mounts it onto `ns.path`. The unshare happens in a
/// short-lived thread, because a network namespace belongs to a thread and the caller's threads
/// (a tokio runtime's) must stay in theirs; the mount keeps the namespace after the thread ends.
fn new_netns_mounted_on(ns: &Netns) -> Result<()> {
    let target = ns.path.clone();
    in_helper_thread(&ns.name, "shoal-netns-new", move || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|source| Error::Sys {
            op: "unsharing network namespace for",
            path: target.clone(),
            source,
        })?;
        mount(
            Some(THREAD_NETNS),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| Error::Sys {
            op: "bind-mounting new network namespace onto",
            path: target.clone(),
            source,
        })
    })
}

/// Runs `work` in a thread of its own that ends with it, so that a namespace it enters or
/// unshares never becomes a runtime thread's. `name` (the namespace's) is for errors.
pub(crate) fn in_helper_thread<T: Send + 'static>(
    name: &str,
    thread: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(work)
        .map_err(|source| Error::Io {
            op: "starting helper thread for namespace",
            path: PathBuf::from(name),
            source,
        })?
        .join()
        .map_err(|_| Error::HelperPanicked(name.to_string()))?
}

/// Moves the calling (helper) thread into the namespace open as `file` (found at `path`).
pub(crate) fn enter(file: &File, path: PathBuf) -> Result<()> {
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| Error::Sys {
        op: "entering network namespace",
        path,
        source,
    })
}

/// Opens the file of namespace `name` at `path`; a missing one is [`Error::NoSuchNamespace`].
fn open_netns_file(name: &str, path: &Path) -> Result<File> {
    File::open(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => Error::NoSuchNamespace(name.to_string()),
        _ => Error::Io {
            op: "opening namespace",
            path: path.to_path_buf(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_escape_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name(&"x".repeat(256)).is_err());
        assert!(validate_name("task-1.abc").is_ok());
    }
}
