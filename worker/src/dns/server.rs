//! The node's DNS server: hickory's UDP and TCP listeners with our own request handler.
//!
//! A hickory `Catalog` answers the same zones to everyone; ours must answer by the asking
//! task (its source IP picks its networks), so the handler looks the name up in the current
//! [`DnsTable`] and either answers or forwards. The table sits behind a lock holding an `Arc`:
//! a query clones the `Arc` and never blocks an update for longer than that, and an update is
//! one pointer swap, so no query ever sees half a table and nothing restarts.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::forward::forward;
use super::table::{DnsTable, Resolution};
use super::DnsError;

/// How long a TCP client may stay idle before the server closes its connection.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP response buffer, in messages per connection (hickory's own default size).
const TCP_RESPONSE_BUFFER: usize = 32;
/// How many times to look for a port free for both UDP and TCP when asked for port 0.
const PORT_ATTEMPTS: usize = 16;

/// How to start the server.
#[derive(Debug, Clone)]
pub struct DnsServerConfig {
    /// Where to listen; each address serves UDP and TCP on the same port (port 0 = any).
    pub listen: Vec<SocketAddr>,
    /// The node's upstream servers, for clients without `--dns` and for unknown clients
    /// (usually [`super::host_nameservers`] of the host's /etc/resolv.conf).
    pub upstream: Vec<SocketAddr>,
    /// How long to wait for each upstream before trying the next (then SERVFAIL).
    pub forward_timeout: Duration,
}

impl DnsServerConfig {
    /// Listens on `listen`, forwards to `upstream` with the default 2 s timeout.
    pub fn new(listen: Vec<SocketAddr>, upstream: Vec<SocketAddr>) -> Self {
        DnsServerConfig {
            listen,
            upstream,
            forward_timeout: Duration::from_secs(2),
        }
    }
}

/// A running DNS server. Dropping it stops the server too; [`DnsServer::shutdown`] also waits
/// until the sockets are closed.
pub struct DnsServer {
    table: Arc<RwLock<Arc<DnsTable>>>,
    local_addrs: Vec<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds every listen address (UDP and TCP) and starts answering from `table`.
    pub async fn start(config: DnsServerConfig, table: DnsTable) -> Result<Self, DnsError> {
        let table = Arc::new(RwLock::new(Arc::new(table)));
        let mut sockets = Vec::with_capacity(config.listen.len());
        let mut local_addrs = Vec::with_capacity(config.listen.len());
        for addr in config.listen {
            let (udp, tcp) = bind_pair(addr).await?;
            local_addrs.push(udp.local_addr().map_err(|e| DnsError::Bind(addr, e))?);
            sockets.push((udp, tcp));
        }
        let handler = Handler {
            table: table.clone(),
            upstream: config.upstream,
            forward_timeout: config.forward_timeout,
            own: local_addrs.clone(),
        };
        let mut server = Server::new(handler);
        for (udp, tcp) in sockets {
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
        }
        tracing::info!(addrs = ?local_addrs, "DNS server listening");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            // Either an explicit stop or the DnsServer being dropped ends the server.
            let _ = stopped.await;
            if let Err(error) = server.shutdown_gracefully().await {
                tracing::warn!(%error, "DNS server stopped with an error");
            }
        });
        Ok(DnsServer {
            table,
            local_addrs,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound addresses (UDP and TCP share each), in the order of the config's `listen`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Replaces the table; queries arriving from now on are answered from it.
    pub fn update(&self, table: DnsTable) {
        let table = Arc::new(table);
        match self.table.write() {
            Ok(mut current) => *current = table,
            // A panic elsewhere while holding the lock cannot leave a half-swapped Arc behind.
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    /// Stops the server and waits until its sockets are closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds UDP and TCP on one port; for port 0, retries until the port the kernel gave UDP is
/// also free for TCP.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| DnsError::Bind(addr, e))?;
        let port = udp
            .local_addr()
            .map_err(|e| DnsError::Bind(addr, e))?
            .port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last_error = Some(e),
            Err(e) => return Err(DnsError::Bind(addr, e)),
        }
    }
    let error = last_error.unwrap_or_else(|| std::io::Error::other("no port free for both"));
    Err(DnsError::Bind(addr, error))
}

struct Handler {
    table: Arc<RwLock<Arc<DnsTable>>>,
    upstream: Vec<SocketAddr>,
    forward_timeout: Duration,
    /// Our own listen addresses: never an upstream, or a query would loop through us forever.
    own: Vec<SocketAddr>,
}

impl Handler {
    fn snapshot(&self) -> Arc<DnsTable> {
        match self.table.read() {
            Ok(table) => table.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `upstream` without our own addresses (also when we listen on the unspecified address).
    fn upstreams(&self, upstream: &[SocketAddr]) -> Vec<SocketAddr> {
        let is_own = |u: &SocketAddr| {
            self.own.iter().any(|own| {
                own.port() == u.port() && (own.ip() == u.ip() || own.ip().is_unspecified())
            })
        };
        upstream.iter().copied().filter(|u| !is_own(u)).collect()
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let src = request.src().ip();
        let edns = response_edns(request);
        let builder = || {
            let mut builder = MessageResponseBuilder::from_message_request(request);
            if let Some(edns) = &edns {
                builder.edns(edns);
            }
            builder
        };
        let query = match request.queries.queries() {
            [query] if request.metadata.op_code == OpCode::Query => query,
            _ => {
                tracing::debug!(%src, "DNS request other than one query: not implemented");
                let reply = builder().error_msg(&request.metadata, ResponseCode::NotImp);
                return send(&mut response, reply, request).await;
            }
        };
        let name = query.name().to_string();
        let qtype = query.query_type();
        let table = self.snapshot();
        let upstream = match table.resolve(src, &name, qtype == RecordType::A) {
            Resolution::Local(addrs) => {
                tracing::debug!(%src, %name, %qtype, answers = addrs.len(), "DNS answered locally");
                let owner = Name::from(query.name().clone());
                let records: Vec<Record> = addrs
                    .into_iter()
                    .map(|ip| Record::from_rdata(owner.clone(), 0, RData::A(A(ip))))
                    .collect();
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                metadata.recursion_available = true;
                let reply = builder().build(metadata, records.iter(), [], [], []);
                return send(&mut response, reply, request).await;
            }
            Resolution::Forward([]) => self.upstreams(&self.upstream),
            Resolution::Forward(own) => self.upstreams(own),
        };
        drop(table);
        let queries = vec![query.original().clone()];
        let rd = request.metadata.recursion_desired;
        let protocol = request.protocol();
        match forward(&upstream, queries, rd, protocol, self.forward_timeout).await {
            Some(answer) => {
                tracing::debug!(%src, %name, %qtype, code = %answer.metadata.response_code, "DNS forwarded");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = answer.metadata.response_code;
                metadata.recursion_available = answer.metadata.recursion_available;
                metadata.authentic_data = answer.metadata.authentic_data;
                let reply = builder().build(
                    metadata,
                    answer.answers.iter(),
                    answer.authorities.iter(),
                    [],
                    answer.additionals.iter(),
                );
                send(&mut response, reply, request).await
            }
            None => {
                tracing::debug!(%src, %name, %qtype, upstreams = ?upstream, "DNS forward failed: SERVFAIL");
                let reply = builder().error_msg(&request.metadata, ResponseCode::ServFail);
                send(&mut response, reply, request).await
            }
        }
    }
}

/// The EDNS of our response when the query had one (RFC 6891: answer OPT with OPT), keeping
/// the client's payload size so that larger answers need no TCP retry.
fn response_edns(request: &Request) -> Option<Edns> {
    let asked = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(asked.max_payload().max(512));
    Some(edns)
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    reply: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match response.send_response(reply).await {
        Ok(info) => info,
        Err(error) => {
            // The task went away or the socket failed: nothing to tell it; count it as failed.
            tracing::debug!(src = %request.src(), %error, "DNS response not sent");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        }
    }
}
