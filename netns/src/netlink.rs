//! A netlink handle bound to one network namespace. A netlink socket talks to the namespace it
//! was opened in for its whole life, so to work inside a task's namespace we open the socket
//! from a short-lived thread that has `setns`'d into it, and then use it from any thread; the
//! caller's own threads never change namespace.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkMessage;
use tokio::task::JoinHandle;

use crate::error::{errno, Error, Result};
use crate::namespace::{enter, in_helper_thread, Netns};

/// Name used in logs and errors for the namespace the process runs in.
const CURRENT: &str = "(current)";

/// rtnetlink in one network namespace. The link, address, route, VXLAN and FDB operations are
/// methods on this type (one module each). While it exists it keeps its namespace alive: drop
/// it before expecting a deleted namespace (and its links) to go away.
#[derive(Debug)]
pub struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
    pub(crate) netns: String,
    connection: JoinHandle<()>,
}

impl Netlink {
    /// A handle for the namespace the calling thread is in (the host's, in the daemon).
    /// Must be called inside a tokio runtime, which drives the connection.
    pub fn current() -> Result<Self> {
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        Self::start(new_connection(), CURRENT.to_string())
    }

    /// A handle for the named namespace. Must be called inside a tokio runtime. Blocks for the
    /// moment a helper thread takes to enter the namespace and open the socket.
    pub fn open(ns: &Netns) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let file = ns.open()?;
        let name = ns.name().to_string();
        let path = ns.path().to_path_buf();
        let opened = in_helper_thread(&name, "shoal-netns-nl", move || {
            enter(&file, path)?;
            // The socket registers with the runtime's reactor, so create it in its context.
            let _runtime = runtime.enter();
            Ok(new_connection())
        })?;
        Self::start(opened, name)
    }

    fn start(
        opened: std::io::Result<(Connection, rtnetlink::Handle)>,
        netns: String,
    ) -> Result<Self> {
        let (connection, handle) = opened.map_err(|source| Error::Socket {
            netns: netns.clone(),
            source,
        })?;
        let connection = tokio::spawn(connection);
        Ok(Self {
            handle,
            netns,
            connection,
        })
    }

    /// The namespace's name, as used in logs.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Wraps an rtnetlink error with the operation and this namespace.
    pub(crate) fn err(&self, op: impl Into<String>, source: rtnetlink::Error) -> Error {
        Error::Netlink {
            op: op.into(),
            netns: self.netns.clone(),
            source,
        }
    }

    /// The link called `name`, if there is one.
    pub(crate) async fn link_message(&self, name: &str) -> Result<Option<LinkMessage>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(link) => Ok(link),
            Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
            Err(err) => Err(self.err(format!("looking up link {name}"), err)),
        }
    }

    /// The index of the link called `name`, which must exist.
    pub(crate) async fn index_of(&self, name: &str) -> Result<u32> {
        match self.link_message(name).await? {
            Some(link) => Ok(link.header.index),
            None => Err(Error::NoSuchLink {
                name: name.to_string(),
                netns: self.netns.clone(),
            }),
        }
    }
}

/// The future that owns the socket and moves messages for every clone of the handle.
type Connection = rtnetlink::proto::Connection<rtnetlink::packet_route::RouteNetlinkMessage>;

/// A connection in the calling thread's namespace. Unsolicited messages (multicast) are not
/// subscribed to, so their channel is dropped.
fn new_connection() -> std::io::Result<(Connection, rtnetlink::Handle)> {
    let (connection, handle, _unsolicited) = rtnetlink::new_connection()?;
    Ok((connection, handle))
}

impl Drop for Netlink {
    fn drop(&mut self) {
        // The connection task owns the socket; ending it closes the socket, which releases the
        // namespace.
        self.connection.abort();
    }
}
