//! The crate's one error type. Every variant names what failed (the namespace, the link, the
//! netlink operation) so that a worker's log line says what to look at without a backtrace.

use std::path::PathBuf;

/// Errors from namespace and netlink operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace or link name that the kernel or the file system would refuse or misread.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// A MAC address that is not six colon-separated hex pairs.
    #[error("invalid MAC address {0:?}: expected six hex pairs such as 02:42:c6:12:00:02")]
    InvalidMac(String),

    /// A file-system step of namespace handling (create, open, read the directory, remove).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A system call of namespace handling (unshare, setns, mount, umount).
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// The named namespace has no entry in the namespace directory.
    #[error("network namespace {0:?} does not exist")]
    NoSuchNamespace(String),

    /// An operation needs a link that is not there.
    #[error("no link named {name:?} in network namespace {netns}")]
    NoSuchLink { name: String, netns: String },

    /// "Ensure" found a link of the right name but of another kind; it is not ours to replace.
    #[error(
        "link {name:?} in network namespace {netns} is a {actual}, not a {expected}: \
         delete it or choose another name"
    )]
    WrongKind {
        name: String,
        netns: String,
        expected: &'static str,
        actual: String,
    },

    /// A netlink request the kernel refused (the message carries the errno).
    #[error("netlink: {op} in network namespace {netns}: {source}")]
    Netlink {
        op: String,
        netns: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// Opening the netlink socket itself failed.
    #[error("opening a netlink socket in network namespace {netns}: {source}")]
    Socket {
        netns: String,
        #[source]
        source: std::io::Error,
    },

    /// [`crate::Netlink`] runs its connection on the caller's tokio runtime.
    #[error("a netlink handle must be opened inside a tokio runtime")]
    NoRuntime,

    /// The short-lived helper thread that enters a namespace died.
    #[error("the helper thread for network namespace {0} panicked")]
    HelperPanicked(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The positive errno of a netlink error reply, if the error is one.
pub(crate) fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}
