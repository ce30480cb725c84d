//! Raft between managers over gRPC (`service Raft` in `shoal.proto`).
//!
//! Sending: [`GrpcTransport`] keeps one bounded queue and one sender task per peer (on the
//! transport's own runtime, `net_runtime.rs`), so the Raft loop only ever queues. A sender
//! task takes whatever is queued (up to a size) and sends it as one batch on a long-lived
//! `StreamMessages` call to the peer: a batch is one message on an open stream, not a call of
//! its own with its headers, its answer and a task on each end (most of the transport's CPU
//! when each call carried one batch). A peer that does not know that call (an older manager)
//! gets each batch as a `ProcessMessages` call instead. A snapshot message, which holds the
//! whole store, goes on its own task as a `StreamSnapshot` stream of chunks, so heartbeats keep
//! flowing meanwhile. A failed delivery — a call refused or ended, a stream that takes no
//! batch, a connection whose keepalive pings go unanswered ([`KEEPALIVE`]) — is reported to the
//! loop ([`PeerReports`]): raft-rs then probes the peer instead of streaming to it, and after a
//! lost snapshot sends a new one. The sender backs off while a peer stays unreachable and
//! drops what queued meanwhile; Raft resends what matters, and also what a stream that broke
//! had taken without delivering.
//!
//! Channels come from a [`ChannelFactory`], so the transport does not decide how to connect:
//! [`PlainHttp`] in tests, mutual TLS with keepalive pings in the daemon (`node/src/net.rs`).
//!
//! Receiving: [`RaftService`] hands each message to [`RaftHandle::step`], and reassembles
//! snapshot streams first. It refuses messages addressed to another Raft ID, which tells a
//! sender that the address it holds now belongs to a different manager.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use shoal_proto::raft_client::RaftClient;
use shoal_proto::raft_server::{Raft, RaftServer};
use shoal_proto::{Empty, RaftBatch, RaftSnapshotChunk};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::handle::RaftHandle;
use super::net_runtime::NetRuntime;
use super::transport::{Outbound, PeerReports, RaftTransport};
use super::RaftError;

/// Messages queued for one peer before new ones are dropped (and the peer reported
/// unreachable): enough for bursts of appends, small enough that a dead peer costs little.
const QUEUE_LEN: usize = 4096;

/// A batch stops growing past this many bytes; one larger message still goes alone.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Largest batch the server accepts: a batch holds at most `MAX_BATCH_BYTES` plus one message,
/// and raft-rs caps a message's entries at about 1 MiB unless one entry alone is larger.
const MAX_BATCH_DECODE: usize = 64 * 1024 * 1024;

/// How long one `ProcessMessages` call, or handing a batch to an open stream, may take before
/// the peer counts as unreachable.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 keepalive of the channels to other managers (interval, timeout): a stream carries
/// batches without an answer each, so a peer that vanished without closing the connection is
/// noticed by its unanswered ping, within 5 s as a call's [`RPC_TIMEOUT`] would.
pub const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(3));

/// Batches handed to an open stream and not yet sent: a few rounds of appends; beyond that the
/// connection is not keeping up, and the peer's queue fills instead.
const STREAM_BUFFER: usize = 64;

/// Bytes per snapshot chunk.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// Largest snapshot message the server reassembles.
const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024 * 1024;

/// A snapshot transfer may take this long, plus [`SNAPSHOT_TIME_PER_MIB`] for each MiB.
const SNAPSHOT_BASE_TIMEOUT: Duration = Duration::from_secs(30);
const SNAPSHOT_TIME_PER_MIB: Duration = Duration::from_secs(1);

/// Backoff between attempts while a peer is unreachable.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Why the transport could not be set up or reach a peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid raft peer address {addr:?}: {reason}; give host:port of the manager's raft service")]
    InvalidAddress { addr: String, reason: String },
    #[error("cannot start the raft transport's runtime thread: {reason}")]
    NoRuntime { reason: String },
    #[error("cannot set up the connection to the raft peer at {addr}: {reason}")]
    Channel { addr: String, reason: String },
}

/// Makes the gRPC channel to a peer's Raft service (TLS, keepalive: the daemon's choice).
pub trait ChannelFactory: Send + Sync + 'static {
    /// A channel to the Raft service at `addr` (host:port). It must not wait for the
    /// connection: build it with [`Endpoint::connect_lazy`], since the peer may be down. It is
    /// called from the transport's tasks, inside a tokio runtime.
    fn channel(&self, addr: &str) -> Result<Channel, TransportError>;
}

impl<F> ChannelFactory for F
where
    F: Fn(&str) -> Result<Channel, TransportError> + Send + Sync + 'static,
{
    fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        self(addr)
    }
}

/// Plain HTTP/2 channels, no TLS.
#[derive(Debug, Clone)]
pub struct PlainHttp {
    /// How long connecting may take before the peer counts as unreachable.
    pub connect_timeout: Duration,
}

impl Default for PlainHttp {
    fn default() -> Self {
        PlainHttp {
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl PlainHttp {
    /// The endpoint for the Raft service at `addr` with the transport's connection settings;
    /// a TLS factory can start from it (after changing the scheme) and add its configuration.
    pub fn endpoint(&self, scheme: &str, addr: &str) -> Result<Endpoint, TransportError> {
        if addr.is_empty() || addr.contains('/') {
            return Err(TransportError::InvalidAddress {
                addr: addr.to_string(),
                reason: "expected host:port".to_string(),
            });
        }
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| {
            TransportError::InvalidAddress {
                addr: addr.to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // A peer that vanished without closing the connection is noticed by the keepalive
            // rather than by a stream waiting for TCP to give up.
            .http2_keep_alive_interval(KEEPALIVE.0)
            .keep_alive_timeout(KEEPALIVE.1))
    }
}

impl ChannelFactory for PlainHttp {
    fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        Ok(self.endpoint("http", addr)?.connect_lazy())
    }
}

/// Sends Raft messages to the other managers over gRPC. Cheap to clone: clones share the peers,
/// so the caller may keep one to add peers the Raft loop does not know yet (the leader a joining
/// node is told about). The sender tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<Inner>,
}

struct Inner {
    /// Our Raft ID, stamped on every batch.
    id: u64,
    factory: Arc<dyn ChannelFactory>,
    reports: Arc<Mutex<Option<PeerReports>>>,
    peers: Mutex<HashMap<u64, Peer>>,
    /// The runtime the sender tasks run on: one of their own (see `net_runtime.rs`), neither
    /// the Raft loop's nor the daemon's. Declared (so dropped) last, after the peers' tasks
    /// are aborted.
    runtime: NetRuntime,
}

struct Peer {
    addr: String,
    queue: mpsc::Sender<Outbound>,
    task: AbortHandle,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // A removed or re-addressed peer gets nothing more from the old task, not even a retry.
        self.task.abort();
    }
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("id", &self.inner.id)
            .field("peers", &self.peers())
            .finish()
    }
}

impl GrpcTransport {
    /// A transport for the manager with Raft ID `id`, connecting through `factory`. The sender
    /// tasks run on a runtime of the transport's own, on its own thread.
    pub fn new(id: u64, factory: Arc<dyn ChannelFactory>) -> Result<Self, TransportError> {
        let runtime = NetRuntime::start("raft-net").map_err(|e| TransportError::NoRuntime {
            reason: e.to_string(),
        })?;
        Ok(GrpcTransport {
            inner: Arc::new(Inner {
                id,
                factory,
                runtime,
                reports: Arc::new(Mutex::new(None)),
                peers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The runtime the sender tasks run on (a thread of its own): the daemon serves the other
    /// managers' connections, which carry their Raft messages, on it too.
    pub fn runtime(&self) -> tokio::runtime::Handle {
        self.inner.runtime.handle().clone()
    }

    /// A transport with plain HTTP channels ([`PlainHttp`]).
    pub fn plain(id: u64) -> Result<Self, TransportError> {
        Self::new(id, Arc::new(PlainHttp::default()))
    }

    /// Sends to raft node `id` at `addr` from now on. The same address again changes nothing;
    /// a new one replaces the old (and drops what was queued for it).
    pub fn add_peer(&self, id: u64, addr: &str) {
        if id == self.inner.id {
            return;
        }
        let mut peers = self.inner.lock_peers();
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let (queue, rx) = mpsc::channel(QUEUE_LEN);
        let link = PeerLink {
            from: self.inner.id,
            to: id,
            addr: addr.to_string(),
            factory: self.inner.factory.clone(),
            reports: self.inner.reports.clone(),
        };
        let task = self
            .inner
            .runtime
            .handle()
            .spawn(link.run(rx))
            .abort_handle();
        info!(peer = id, addr, "raft peer added to the transport");
        peers.insert(
            id,
            Peer {
                addr: addr.to_string(),
                queue,
                task,
            },
        );
    }

    /// Stops sending to raft node `id`.
    pub fn remove_peer(&self, id: u64) {
        if self.inner.lock_peers().remove(&id).is_some() {
            info!(peer = id, "raft peer removed from the transport");
        }
    }

    /// The peers and their addresses.
    pub fn peers(&self) -> Vec<(u64, String)> {
        let mut peers: Vec<(u64, String)> = self
            .inner
            .lock_peers()
            .iter()
            .map(|(&id, p)| (id, p.addr.clone()))
            .collect();
        peers.sort();
        peers
    }

    fn report(&self, f: impl FnOnce(&PeerReports)) {
        if let Some(reports) = lock(&self.inner.reports).as_ref() {
            f(reports);
        }
    }
}

impl Inner {
    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Peer>> {
        lock(&self.peers)
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain map; the map is
/// still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RaftTransport for GrpcTransport {
    fn attach(&mut self, reports: PeerReports) {
        *lock(&self.inner.reports) = Some(reports);
    }

    fn send(&mut self, message: Outbound) {
        let (to, is_snapshot) = (message.to, message.is_snapshot);
        let queued = match self.inner.lock_peers().get(&to) {
            None => Err("no address known for it"),
            Some(peer) => peer.queue.try_send(message).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => "its queue is full",
                mpsc::error::TrySendError::Closed(_) => "its sender stopped",
            }),
        };
        if let Err(why) = queued {
            debug!(peer = to, why, "raft message dropped");
            self.report(|r| {
                r.unreachable(to);
                if is_snapshot {
                    r.snapshot_finished(to, false);
                }
            });
        }
    }

    fn add_peer(&mut self, id: u64, addr: &str) {
        GrpcTransport::add_peer(self, id, addr);
    }

    fn remove_peer(&mut self, id: u64) {
        GrpcTransport::remove_peer(self, id);
    }
}

/// Everything a sender task needs to reach one peer.
#[derive(Clone)]
struct PeerLink {
    from: u64,
    to: u64,
    addr: String,
    factory: Arc<dyn ChannelFactory>,
    reports: Arc<Mutex<Option<PeerReports>>>,
}

impl PeerLink {
    fn report(&self, f: impl FnOnce(&PeerReports)) {
        if let Some(reports) = lock(&self.reports).as_ref() {
            f(reports);
        }
    }

    fn unreachable(&self) {
        self.report(|r| r.unreachable(self.to));
    }

    fn snapshot_finished(&self, delivered: bool) {
        self.report(|r| r.snapshot_finished(self.to, delivered));
    }

    /// The sender task: batches what is queued and delivers it, in order.
    async fn run(self, mut queue: mpsc::Receiver<Outbound>) {
        let mut channel: Option<Channel> = None;
        // The `StreamMessages` call open to the peer, once a batch opened it.
        let mut stream: Option<OpenStream> = None;
        // Whether the peer takes streamed batches; an older manager takes calls only.
        let mut streaming = true;
        let mut backoff = MIN_BACKOFF;
        let mut reachable = true;
        while let Some(first) = queue.recv().await {
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                if message.is_snapshot {
                    self.spawn_snapshot(channel.clone(), message);
                } else {
                    bytes += message.bytes.len();
                    batch.push(message.bytes);
                }
                if bytes >= MAX_BATCH_BYTES {
                    break;
                }
                next = queue.try_recv().ok();
            }
            if batch.is_empty() {
                continue;
            }
            let count = batch.len();
            let delivered = if streaming {
                self.send_on_stream(&mut channel, &mut stream, batch).await
            } else {
                self.deliver(&mut channel, batch).await
            };
            match delivered {
                Ok(()) => {
                    if !reachable {
                        info!(peer = self.to, addr = %self.addr, "raft peer reachable again");
                    }
                    reachable = true;
                    backoff = MIN_BACKOFF;
                }
                Err(status) if streaming && status.code() == Code::Unimplemented => {
                    // Said once per peer and run: the batch is lost, Raft sends it again.
                    info!(peer = self.to, addr = %self.addr, "raft peer takes no streamed messages (an older manager): sending it one call per batch");
                    streaming = false;
                }
                Err(status) => {
                    let error = format!("{}: {}", status.code(), status.message());
                    stream = None;
                    self.unreachable();
                    if reachable {
                        warn!(peer = self.to, addr = %self.addr, %error, "cannot reach raft peer; retrying in the background");
                    } else {
                        debug!(peer = self.to, addr = %self.addr, %error, count, "raft messages to an unreachable peer dropped");
                    }
                    reachable = false;
                    // A fresh channel next time: the old one may hold a connection to a
                    // process that is gone.
                    channel = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    // What queued meanwhile is stale; Raft sends again what still matters.
                    while let Ok(stale) = queue.try_recv() {
                        if stale.is_snapshot {
                            self.snapshot_finished(false);
                        }
                    }
                }
            }
        }
    }

    fn channel(&self, channel: &mut Option<Channel>) -> Result<Channel, TransportError> {
        if let Some(ch) = channel {
            return Ok(ch.clone());
        }
        let ch = self.factory.channel(&self.addr)?;
        *channel = Some(ch.clone());
        Ok(ch)
    }

    fn batch(&self, messages: Vec<Vec<u8>>) -> RaftBatch {
        RaftBatch {
            from: self.from,
            to: self.to,
            messages,
        }
    }

    /// Delivers `messages` as one `ProcessMessages` call, answered once the peer queued them.
    async fn deliver(
        &self,
        channel: &mut Option<Channel>,
        messages: Vec<Vec<u8>>,
    ) -> Result<(), Status> {
        let ch = self.channel(channel).map_err(unavailable)?;
        let batch = self.batch(messages);
        let call = async {
            RaftClient::new(ch)
                .max_decoding_message_size(MAX_BATCH_DECODE)
                .process_messages(batch)
                .await
        };
        match tokio::time::timeout(RPC_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {RPC_TIMEOUT:?}"
            ))),
        }
    }

    /// Hands `messages` as one batch to the `StreamMessages` call open to the peer, opening
    /// one first if none is. Ok means the stream took the batch, not that the peer has it: a
    /// stream that breaks loses what it took (Raft sends it again), and the break is reported
    /// with the next batch. The error is why the call ended or could not open, or that it took
    /// nothing for [`RPC_TIMEOUT`] (the connection stalled); the stream is closed then.
    async fn send_on_stream(
        &self,
        channel: &mut Option<Channel>,
        stream: &mut Option<OpenStream>,
        messages: Vec<Vec<u8>>,
    ) -> Result<(), Status> {
        if let Some(ended) = stream.take_if(|open| open.call.is_finished()) {
            return Err(ended.outcome().await);
        }
        let open = match stream {
            Some(open) => open,
            None => stream.insert(self.open_stream(channel).await?),
        };
        match tokio::time::timeout(RPC_TIMEOUT, open.batches.send(self.batch(messages))).await {
            Ok(Ok(())) => Ok(()),
            // The call ended since the check above: its receiver is gone.
            Ok(Err(_)) => match stream.take() {
                Some(ended) => Err(ended.outcome().await),
                None => Err(Status::unavailable("the stream to the peer ended")),
            },
            Err(_) => {
                *stream = None;
                Err(Status::deadline_exceeded(format!(
                    "the stream to the peer took no batch within {RPC_TIMEOUT:?}"
                )))
            }
        }
    }

    /// Starts a `StreamMessages` call to the peer on a task of its own, and returns once the
    /// peer took it (its answer's headers came): so a peer that is down, refuses the call or
    /// does not know it (`Unimplemented`) fails here, not after batches were counted as sent.
    /// The call then runs until the stream is dropped, the peer refuses a batch or the
    /// connection breaks.
    async fn open_stream(&self, channel: &mut Option<Channel>) -> Result<OpenStream, Status> {
        let mut client = RaftClient::new(self.channel(channel).map_err(unavailable)?);
        let (batches, queued) = mpsc::channel(STREAM_BUFFER);
        let (opened, taken) = oneshot::channel();
        let call = tokio::spawn(async move {
            let mut answers = client
                .stream_messages(ReceiverStream::new(queued))
                .await?
                .into_inner();
            let _ = opened.send(());
            // No answer carries a message: the stream ends, or ends with the refusal.
            while answers.message().await?.is_some() {}
            Ok(())
        });
        let open = OpenStream { batches, call };
        match tokio::time::timeout(RPC_TIMEOUT, taken).await {
            Ok(Ok(())) => Ok(open),
            // The call ended before it opened.
            Ok(Err(_)) => Err(open.outcome().await),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the peer did not take the stream within {RPC_TIMEOUT:?}"
            ))),
        }
    }

    fn spawn_snapshot(&self, channel: Option<Channel>, message: Outbound) {
        let link = self.clone();
        tokio::spawn(async move {
            let bytes = message.bytes.len();
            let delivered = match link.stream_snapshot(channel, message).await {
                Ok(()) => {
                    info!(peer = link.to, bytes, "raft snapshot sent");
                    true
                }
                Err(error) => {
                    warn!(peer = link.to, addr = %link.addr, bytes, %error, "raft snapshot transfer failed; the leader will send a new one");
                    false
                }
            };
            link.snapshot_finished(delivered);
            if !delivered {
                link.unreachable();
            }
        });
    }

    async fn stream_snapshot(
        &self,
        mut channel: Option<Channel>,
        message: Outbound,
    ) -> Result<(), String> {
        let ch = self.channel(&mut channel).map_err(|e| e.to_string())?;
        let total = message.bytes.len();
        let chunks: Vec<RaftSnapshotChunk> = message
            .bytes
            .chunks(SNAPSHOT_CHUNK)
            .map(|data| RaftSnapshotChunk {
                from: self.from,
                to: self.to,
                total_bytes: total as u64,
                data: data.to_vec(),
            })
            .collect();
        let mib = u32::try_from(total / (1024 * 1024)).unwrap_or(u32::MAX);
        let limit = SNAPSHOT_BASE_TIMEOUT.saturating_add(SNAPSHOT_TIME_PER_MIB.saturating_mul(mib));
        let mut client = RaftClient::new(ch);
        let call = client.stream_snapshot(tokio_stream::iter(chunks));
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(format!("{}: {}", status.code(), status.message())),
            Err(_) => Err(format!("not delivered within {limit:?}")),
        }
    }
}

/// A `StreamMessages` call in progress: batches sent into `batches` go out on it, in order.
struct OpenStream {
    batches: mpsc::Sender<RaftBatch>,
    /// The call, which ends with the peer's answer: an error, or Ok once the stream is closed.
    call: JoinHandle<Result<(), Status>>,
}

impl OpenStream {
    /// Why the call ended, waiting (at most [`RPC_TIMEOUT`]) for it to end. The batches it
    /// took and had not sent are lost.
    async fn outcome(mut self) -> Status {
        match tokio::time::timeout(RPC_TIMEOUT, &mut self.call).await {
            Ok(Ok(Err(status))) => status,
            Ok(Ok(Ok(()))) => Status::unavailable("the peer ended the stream"),
            Ok(Err(e)) => Status::internal(format!("the stream's task failed: {e}")),
            Err(_) => Status::deadline_exceeded(format!(
                "the stream to the peer neither took a batch nor ended within {RPC_TIMEOUT:?}"
            )),
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        // A stream given up on (its peer removed, re-addressed or failing) stops at once
        // rather than waiting for the connection to give up.
        self.call.abort();
    }
}

/// The transport's errors as a call's status, for the sender's one error path.
fn unavailable(e: TransportError) -> Status {
    Status::unavailable(e.to_string())
}

/// Decides whether the caller of a Raft call (its verified certificate, if any) may speak as
/// Raft node `from`; `Err` holds the reason it may not. The manager builds it from its store
/// (`crate::authority`), which this module does not see.
pub type SenderCheck =
    Arc<dyn Fn(Option<&shoal_tls::PeerIdentity>, u64) -> Result<(), String> + Send + Sync>;

/// One on a gauge for as long as it lives.
struct OpenGauge(Gauge);

impl OpenGauge {
    fn inc(gauge: Gauge) -> Self {
        gauge.inc();
        OpenGauge(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The Raft gRPC service of one manager: feeds what peers send into its Raft loop.
#[derive(Clone)]
pub struct RaftService {
    handle: RaftHandle,
    sender_check: Option<SenderCheck>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService")
            .field("id", &self.handle.id())
            .field("checks_senders", &self.sender_check.is_some())
            .finish()
    }
}

impl RaftService {
    pub fn new(handle: RaftHandle) -> Self {
        RaftService {
            handle,
            sender_check: None,
        }
    }

    /// Refuses batches and snapshots whose sender `check` does not accept.
    pub fn with_sender_check(mut self, check: SenderCheck) -> Self {
        self.sender_check = Some(check);
        self
    }

    fn check_sender(
        &self,
        peer: Option<&shoal_tls::PeerIdentity>,
        from: u64,
    ) -> Result<(), Status> {
        let Some(check) = &self.sender_check else {
            return Ok(());
        };
        check(peer, from).map_err(|reason| {
            warn!(from = format_args!("{from:x}"), %reason, "raft message refused");
            Status::permission_denied(reason)
        })
    }

    /// The tonic service, with message size limits fit for Raft batches.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self).max_decoding_message_size(MAX_BATCH_DECODE)
    }

    fn check_addressee(&self, to: u64) -> Result<(), Status> {
        let me = self.handle.id();
        if to == me {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "this manager is raft node {me}, not raft node {to}: the address now belongs to \
             another manager; update the member list"
        )))
    }

    /// Checks a batch's addressee and sender, then hands its messages to the Raft loop.
    fn accept(
        &self,
        peer: Option<&shoal_tls::PeerIdentity>,
        batch: &RaftBatch,
    ) -> Result<(), Status> {
        self.check_addressee(batch.to)?;
        self.check_sender(peer, batch.from)?;
        for message in &batch.messages {
            self.step(message, batch.from)?;
        }
        Ok(())
    }

    fn step(&self, message: &[u8], from: u64) -> Result<(), Status> {
        self.handle.step(message, from).map_err(|e| match e {
            RaftError::BadMessage(_) => Status::invalid_argument(e.to_string()),
            _ => Status::unavailable(e.to_string()),
        })
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn process_messages(
        &self,
        request: Request<RaftBatch>,
    ) -> Result<Response<Empty>, Status> {
        let peer = shoal_tls::peer_identity(&request).cloned();
        self.accept(peer.as_ref(), &request.into_inner())?;
        Ok(Response::new(Empty {}))
    }

    type StreamMessagesStream = ReceiverStream<Result<Empty, Status>>;

    async fn stream_messages(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<Self::StreamMessagesStream>, Status> {
        let peer = shoal_tls::peer_identity(&request).cloned();
        let mut batches = request.into_inner();
        let (refusal, answers) = mpsc::channel(1);
        let service = self.clone();
        let open = OpenGauge::inc(self.handle.instruments().inbound_streams);
        // The answer (its headers) goes at once, which tells the sender the stream is taken;
        // the batches are handled on a task of their own, as they come.
        tokio::spawn(async move {
            let _open = open;
            loop {
                match batches.message().await {
                    // Every batch is checked as a call's would be: a member removed or demoted
                    // meanwhile is refused at its next batch, and the refusal ends the stream.
                    Ok(Some(batch)) => {
                        if let Err(status) = service.accept(peer.as_ref(), &batch) {
                            let _ = refusal.send(Err(status)).await;
                            return;
                        }
                    }
                    // The sender ended its stream, or its connection is gone.
                    Ok(None) | Err(_) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(answers)))
    }

    async fn stream_snapshot(
        &self,
        request: Request<Streaming<RaftSnapshotChunk>>,
    ) -> Result<Response<Empty>, Status> {
        let peer = shoal_tls::peer_identity(&request).cloned();
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the snapshot stream carried no chunk"))?;
        self.check_addressee(first.to)?;
        let (from, total) = (first.from, first.total_bytes);
        self.check_sender(peer.as_ref(), from)?;
        if total == 0 || total > MAX_SNAPSHOT_BYTES {
            return Err(Status::invalid_argument(format!(
                "a raft snapshot of {total} bytes is refused: it must be between 1 byte and \
                 {MAX_SNAPSHOT_BYTES} bytes"
            )));
        }
        // Bounded by MAX_SNAPSHOT_BYTES, which fits in memory by design.
        let expected = usize::try_from(total).map_err(|_| {
            Status::invalid_argument(format!("a raft snapshot of {total} bytes is too large"))
        })?;
        let mut data = Vec::with_capacity(expected.min(64 * 1024 * 1024));
        data.extend_from_slice(&first.data);
        while let Some(chunk) = chunks.message().await? {
            data.extend_from_slice(&chunk.data);
            if data.len() > expected {
                break;
            }
        }
        if data.len() != expected {
            return Err(Status::invalid_argument(format!(
                "the raft snapshot stream from raft node {from} carried {} bytes, not the {expected} announced",
                data.len()
            )));
        }
        self.step(&data, from)?;
        info!(from, bytes = expected, "raft snapshot received");
        Ok(Response::new(Empty {}))
    }
}
