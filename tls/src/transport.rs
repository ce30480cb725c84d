//! tonic over our rustls configs: a stream of accepted mutual-TLS connections to hand to
//! `Server::serve_with_incoming`, and a connector for `Endpoint::connect_with_connector`.
//!
//! tonic's own `ServerTlsConfig` / `ClientTlsConfig` cannot take a custom certificate verifier
//! (the join's pinned CA) nor a certificate that changes while serving (renewal), hence these.
//! Handshakes run in their own tasks, with a timeout and a bound on how many are in flight, so
//! a slow or silent client cannot stall the listener.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::{server, TlsAcceptor};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::identity::{identity_of, PeerIdentity};
use crate::{x509, TlsError};

/// How long a TLS handshake (and, for clients, the TCP connect before it) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in flight at once; further connections wait in the kernel's accept queue.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// What a server knows about a connection, put into every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    pub local_addr: Option<SocketAddr>,
    /// From the client certificate; `None` if the client presented none (only possible with
    /// [`crate::ClientAuth::Optional`]).
    pub identity: Option<PeerIdentity>,
}

/// An accepted, handshaken server-side connection.
pub struct TlsConn {
    stream: server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl TlsConn {
    pub fn peer_info(&self) -> &PeerInfo {
        &self.info
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The identity in a verified client chain. rustls has already checked the chain against the
/// cluster CA; a certificate the CA signed without Shoal's names cannot occur, and is treated as
/// no certificate.
fn identity_from(certs: Option<&[CertificateDer<'static>]>) -> Option<PeerIdentity> {
    let leaf = certs?.first()?;
    let parsed = x509::inspect(leaf, "client certificate")
        .and_then(|info| identity_of(&info, "client certificate"));
    match parsed {
        Ok((node_id, role, cluster_id)) => Some(PeerIdentity {
            node_id,
            role,
            cluster_id,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "client certificate verified but names no node");
            None
        }
    }
}

/// Accepted mutual-TLS connections, for `Server::serve_with_incoming`. Dropping it stops
/// accepting.
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsConn>,
    accept_task: JoinHandle<()>,
    local_addr: Option<SocketAddr>,
}

impl TlsIncoming {
    /// Starts accepting on `listener` (needs a tokio runtime).
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> Self {
        let local_addr = listener.local_addr().ok();
        let (tx, rx) = mpsc::channel(64);
        let accept_task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        TlsIncoming {
            rx,
            accept_task,
            local_addr,
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsConn, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, tx: mpsc::Sender<TlsConn>) {
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (tcp, remote) = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends pass; back off instead of spinning on them.
                    tracing::warn!(error = %e, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // gRPC messages are small and latency-bound.
            let _ = tcp.set_nodelay(true);
            let local_addr = tcp.local_addr().ok();
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let identity = identity_from(stream.get_ref().1.peer_certificates());
            tracing::debug!(
                %remote,
                node_id = identity.as_ref().map(|i| i.node_id.as_str()),
                "TLS connection accepted"
            );
            let conn = TlsConn {
                stream,
                info: PeerInfo {
                    remote_addr: Some(remote),
                    local_addr,
                    identity,
                },
            };
            // The server may be shutting down; then the connection just closes.
            let _ = tx.send(conn).await;
        });
    }
}

/// Connects to `host:port` from the channel's URI with TLS, verifying the server as
/// `server_name` whatever the address is. For `Endpoint::connect_with_connector`.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsConnector {
    /// `server_name` is a role's name (`Role::Manager.server_name()`, any manager) or a node
    /// ID (exactly that node).
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::Config(format!("server name {server_name:?}: {e}")))?;
        Ok(TlsConnector {
            config,
            server_name,
        })
    }
}

/// rustls prints an application's certificate error with `Debug` inside its own; give the
/// verifier's message (e.g. the pinned-CA mismatch) as the error instead.
fn explain(error: io::Error) -> io::Error {
    let reason = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                Some(other.0.to_string())
            }
            _ => None,
        });
    match reason {
        Some(reason) => io::Error::new(error.kind(), reason),
        None => error,
    }
}

fn target(uri: &Uri) -> io::Result<(String, u16)> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {what}"));
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
    Ok((host.to_string(), port))
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let (host, port) = target(&uri)?;
            let connect = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                let _ = tcp.set_nodelay(true);
                connector.connect(server_name, tcp).await.map_err(explain)
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect).await {
                Ok(Ok(stream)) => Ok(TokioIo::new(stream)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {host}:{port} timed out"),
                )),
            }
        })
    }
}

/// `error` and its sources, outermost first, without repeats (wrappers often repeat the inner
/// message).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn endpoint(addr: &str) -> Result<Endpoint, TlsError> {
    Endpoint::from_shared(format!("http://{addr}")).map_err(|e| TlsError::InvalidAddr {
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}

/// A channel to `addr` (`host:port`) over TLS with `config`, verifying the server as
/// `server_name`; connects now, so a wrong address or certificate fails here.
pub async fn connect(
    addr: &str,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> Result<Channel, TlsError> {
    let connector = TlsConnector::new(config, server_name)?;
    endpoint(addr)?
        .connect_with_connector(connector)
        .await
        .map_err(|e| TlsError::Connect {
            addr: addr.to_string(),
            detail: error_chain(&e),
        })
}

/// [`connect`] that connects on first use and reconnects after failures (long-lived channels:
/// a renewed certificate in a [`crate::LiveCert`] is presented on reconnect). `keepalive`
/// (interval, timeout), if given, pings the server while the connection is open: a call
/// streaming to a server that vanished without closing the connection fails after at most
/// both, where it would otherwise wait for TCP to give up.
pub fn connect_lazy(
    addr: &str,
    config: Arc<ClientConfig>,
    server_name: &str,
    keepalive: Option<(Duration, Duration)>,
) -> Result<Channel, TlsError> {
    let connector = TlsConnector::new(config, server_name)?;
    let mut endpoint = endpoint(addr)?;
    if let Some((interval, timeout)) = keepalive {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(timeout);
    }
    Ok(endpoint.connect_with_connector_lazy(connector))
}
