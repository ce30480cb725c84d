//! The connection to the local daemon: gRPC over its unix socket, and the errors a user sees
//! when that fails.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};
use shoal_proto::{control_client::ControlClient, daemon_client::DaemonClient};
use tonic::transport::Channel;

/// Docker's rule: `-H` wins, then the environment (`SHOAL_HOST`), then the default socket.
pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoal.sock";

/// The socket path of a `unix://` host.
pub fn socket_path(host: &str) -> Result<PathBuf> {
    let Some(path) = host.strip_prefix("unix://") else {
        if host.starts_with('/') {
            bail!("invalid host {host:?}: write it as unix://{host}");
        }
        bail!("invalid host {host:?}: Shoal only listens on unix sockets (unix:///PATH)");
    };
    if !path.starts_with('/') {
        bail!("invalid host {host:?}: the socket path must be absolute (unix:///PATH)");
    }
    Ok(PathBuf::from(path))
}

/// A connected client. The channel is cheap to clone; each RPC family gets its own stub.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects now rather than lazily, so that a missing daemon is reported as such before a
    /// command does anything else.
    pub async fn connect(host: &str) -> Result<Client> {
        let path = socket_path(host)?;
        let channel = shoal_worker::containerd::connect_unix(&path)
            .await
            .map_err(|e| connect_error(host, &e))?;
        Ok(Client { channel })
    }

    pub fn daemon(&self) -> DaemonClient<Channel> {
        // Images can be large: lift tonic's 4 MiB default for decoded messages.
        DaemonClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    pub fn control(&self) -> ControlClient<Channel> {
        ControlClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }
}

/// Why the socket could not be dialled, in docker's words. A missing or refusing socket is the
/// daemon not running; anything else keeps its cause so that it can be told apart.
fn connect_error(host: &str, err: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let mut source = Some(err);
    let mut cause = None;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    return anyhow::anyhow!(
                        "permission denied while trying to connect to the Shoal daemon socket at {host}: run the command as root, or as a member of the daemon's group (`shoal` unless `shoal daemon --group` names another)"
                    );
                }
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    cause = None;
                    break;
                }
                _ => {}
            }
        }
        cause = Some(e.to_string());
        source = e.source();
    }
    anyhow::Error::new(CannotConnect {
        host: host.to_string(),
        cause,
    })
}

/// The daemon is not there: the message tells how to start it.
#[derive(Debug)]
pub struct CannotConnect {
    pub host: String,
    /// The innermost error, when it is not simply "no such socket" or "refused".
    pub cause: Option<String>,
}

impl fmt::Display for CannotConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cannot connect to the Shoal daemon at {}", self.host)?;
        if let Some(cause) = &self.cause {
            write!(f, " ({cause})")?;
        }
        write!(
            f,
            ". Is the shoal daemon running? (start it with `shoal daemon`)"
        )
    }
}

impl std::error::Error for CannotConnect {}

/// A failed RPC. The daemon's own errors are printed as docker prints them; a transport
/// failure (the daemon went away mid-call) says so instead of blaming the daemon.
#[derive(Debug)]
pub struct DaemonError(pub tonic::Status);

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = &self.0;
        let message = if status.message().is_empty() {
            status.code().description()
        } else {
            status.message()
        };
        if status.code() == tonic::Code::Unimplemented && status.message().is_empty() {
            // The socket answers but not this service: an older or mismatched daemon.
            return write!(
                f,
                "Error response from daemon: this daemon does not serve the request ({message}); is it the same version as this client?"
            );
        }
        if let Some(source) = std::error::Error::source(status) {
            return write!(f, "error talking to the Shoal daemon: {message}: {source}");
        }
        write!(f, "Error response from daemon: {message}")
    }
}

impl std::error::Error for DaemonError {}

/// `.or_daemon_error()` turns an RPC result into the message body or a [`DaemonError`].
pub trait RpcResult<T> {
    fn or_daemon_error(self) -> Result<T>;
}

impl<T> RpcResult<T> for std::result::Result<tonic::Response<T>, tonic::Status> {
    fn or_daemon_error(self) -> Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|s| DaemonError(s).into())
    }
}

/// For results that are not a `Response`, such as the messages of a stream.
pub fn daemon_error(status: tonic::Status) -> anyhow::Error {
    DaemonError(status).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parsing() {
        assert_eq!(
            socket_path("unix:///run/shoal/shoal.sock").unwrap(),
            PathBuf::from("/run/shoal/shoal.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:2375")
            .unwrap_err()
            .to_string()
            .contains("unix sockets"));
        assert!(socket_path("/run/x.sock")
            .unwrap_err()
            .to_string()
            .contains("unix:///run/x.sock"));
        assert!(socket_path("unix://relative").is_err());
    }

    #[test]
    fn daemon_errors_read_like_docker() {
        let e = DaemonError(tonic::Status::not_found("no such service: web"));
        assert_eq!(
            e.to_string(),
            "Error response from daemon: no such service: web"
        );
    }

    #[tokio::test]
    async fn missing_socket_says_start_the_daemon() {
        let host = "unix:///nonexistent/shoal.sock";
        let err = Client::connect(host).await.err().expect("no daemon there");
        assert_eq!(
            err.to_string(),
            "Cannot connect to the Shoal daemon at unix:///nonexistent/shoal.sock. Is the shoal daemon running? (start it with `shoal daemon`)"
        );
    }
}
