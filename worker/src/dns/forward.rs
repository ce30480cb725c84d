//! Forwarding the names the node does not own to upstream DNS servers.
//!
//! The task's question and recursion flag go out over the protocol the task used (UDP from a
//! connected socket of our own, so a dead upstream fails at once; TCP through hickory's client); a truncated UDP answer is asked again over TCP so
//! the task gets the whole answer in one exchange. Upstreams are tried in order, each with a
//! timeout, and the first answer wins whatever its code (an NXDOMAIN is an answer too).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::{DnsHandle, NetError};
use hickory_server::proto::op::{DnsRequest, DnsRequestOptions, Edns, Message, Query};
use tokio::net::UdpSocket;

/// Asks `upstreams` in order for `queries`; `None` when none answered within `timeout` each.
pub(super) async fn forward(
    upstreams: &[SocketAddr],
    queries: Vec<Query>,
    recursion_desired: bool,
    protocol: Protocol,
    timeout: Duration,
) -> Option<Message> {
    for &upstream in upstreams {
        let request = || request(queries.clone(), recursion_desired);
        let answer = match protocol {
            Protocol::Udp => match exchange_udp(upstream, request(), timeout).await {
                Ok(answer) if answer.metadata.truncation => {
                    exchange_tcp(upstream, request(), timeout).await
                }
                other => other,
            },
            _ => exchange_tcp(upstream, request(), timeout).await,
        };
        match answer {
            Ok(answer) => return Some(answer),
            Err(error) => {
                tracing::debug!(%upstream, %error, "upstream DNS server did not answer");
            }
        }
    }
    None
}

fn request(queries: Vec<Query>, recursion_desired: bool) -> DnsRequest {
    let mut message = Message::query();
    message.metadata.recursion_desired = recursion_desired;
    message.add_queries(queries);
    let mut options = DnsRequestOptions::default();
    options.recursion_desired = recursion_desired;
    DnsRequest::new(message, options)
}

/// Largest UDP answer asked for (the EDNS payload size DNS flag day 2020 settled on).
const UDP_PAYLOAD: u16 = 1232;

/// One question over UDP from a socket connected to `upstream`, so that a server that is down
/// (ICMP port unreachable) fails the exchange at once rather than after the timeout. Only an
/// answer with the question's ID and questions is taken; anything else is ignored.
async fn exchange_udp(
    upstream: SocketAddr,
    request: DnsRequest,
    timeout: Duration,
) -> Result<Message, NetError> {
    let (mut message, options) = request.into_parts();
    message.metadata.id = rand::random();
    if options.use_edns && message.edns.is_none() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        message.set_edns(edns);
    }
    let bytes = message.to_vec()?;
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(&bytes).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; usize::from(UDP_PAYLOAD.max(512)) * 4];
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Ok(received) => received?,
            Err(_) => return Err(NetError::from("timed out")),
        };
        let Some(answer) = buf.get(..n).and_then(|b| Message::from_vec(b).ok()) else {
            continue;
        };
        if answer.metadata.id == message.metadata.id && answer.queries == message.queries {
            return Ok(answer);
        }
    }
}

async fn exchange_tcp(
    upstream: SocketAddr,
    request: DnsRequest,
    timeout: Duration,
) -> Result<Message, NetError> {
    // The provider owns the task that drives the connection: it must live until the answer
    // is in, or the connection is dropped under the request.
    let provider = TokioRuntimeProvider::new();
    let connect = TcpClientStream::exchange(upstream, None, timeout, None, provider.clone());
    let client = match tokio::time::timeout(timeout, connect).await {
        Ok(client) => client?,
        Err(_) => return Err(NetError::from("timed out connecting over TCP")),
    };
    let answer = first_answer(client, request, timeout).await;
    drop(provider);
    answer
}

/// The first response of an exchange, bounded by `timeout` whatever the transport does.
async fn first_answer(
    client: impl DnsHandle,
    request: DnsRequest,
    timeout: Duration,
) -> Result<Message, NetError> {
    let mut responses = client.send(request);
    match tokio::time::timeout(timeout, responses.next()).await {
        Ok(Some(response)) => Ok(response?.into_message()),
        Ok(None) => Err(NetError::from("no response")),
        Err(_) => Err(NetError::from("timed out")),
    }
}
