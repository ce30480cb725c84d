//! The Raft loop: one thread owns the raft-rs `RawNode` and drives it — ticks, proposals from
//! the store, messages from peers — persisting each `Ready` before acting on it and applying
//! committed entries to the store in log order.
//!
//! The loop runs on its own OS thread with a single-threaded tokio runtime rather than as a
//! task on the caller's runtime: every `Ready` ends in an fsync, and blocking a shared runtime
//! worker for it would stall unrelated tasks (or the whole runtime, when it has one thread).
//!
//! A proposal is tagged with a context (this run's random nonce and a counter) so that the
//! proposer is answered when that very entry is applied; the nonce keeps entries proposed by an
//! earlier run of the manager, re-applied at restart, from answering a new proposer. The same
//! tags name ReadIndex requests ([`RaftHandle::read_index`]) and configuration changes.
//!
//! Membership: a member joins with an empty log and must start from a snapshot, because the
//! first configuration of a cluster is not in its log (it was written straight into the first
//! manager's storage) — a node replaying the log from entry 1 would not know the first voter.
//! So before the first member is added the leader compacts its log, and a snapshot it sends
//! always names the receiver (see [`RaftStorage`]'s `snapshot`); as a second line of defence, a
//! node with no configuration yet refuses appends that would replay the log from entry 1.
//!
//! A node that forced a new cluster ([`RaftConfig::force_new_cluster`]) ignores every message
//! from the members it retired, and refuses to add them again: they hold the old
//! configuration, and heeding them would hand the recovered cluster back to it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message, MessageType,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};
use shoal_proto::Proposal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use super::logger::raft_logger;
use super::members::{self, Members};
use super::recovery;
use super::storage::{RaftStorage, DATA_FILE};
use super::transport::{NoPeers, Outbound, PeerReports, RaftTransport};
use super::{MembershipError, RaftConfig, RaftError, PROPOSE_TIMEOUT};
use crate::metrics::RaftInstruments;
use crate::store::{new_store, ProposeRequest, Store, StoreApplier, StoreError, StoreState};

/// Largest batch of queued proposals taken into one `Ready` (one fsync); bounded so a flood of
/// proposals cannot starve ticks and peer messages.
const MAX_PROPOSAL_BATCH: usize = 256;

/// Readies handled back to back before the loop waits again; one usually suffices, a second
/// carries the commit that persisting the first allowed.
const MAX_READY_ROUNDS: usize = 8;

/// What the Raft node looks like now; cheap to read through [`RaftHandle::status`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub term: u64,
    /// 0 while no leader is known.
    pub leader_id: u64,
    pub commit: u64,
    pub applied: u64,
    pub is_leader: bool,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// Voting members, sorted (the incoming ones while a joint change is under way).
    pub voters: Vec<u64>,
    /// Non-voting members catching up before they become voters, sorted.
    pub learners: Vec<u64>,
    /// The Raft address of every member known here.
    pub members: Members,
    /// Replication to each other member; only the leader tracks it, so it is empty elsewhere.
    pub peers: Vec<PeerStatus>,
}

impl RaftStatus {
    /// The leader's Raft address, when a leader is known and its address is.
    pub fn leader_addr(&self) -> Option<&str> {
        self.members
            .get(&self.leader_id)
            .map(String::as_str)
            .filter(|a| !a.is_empty())
    }

    /// Whether `id` is a voter or learner of the configuration.
    pub fn is_member(&self, id: u64) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

/// How the leader sees one other member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    /// Highest log index known to be replicated on it.
    pub matched: u64,
    /// Heard from within an election timeout, and not reported unreachable since.
    pub reachable: bool,
}

/// What the handles, the server and the transport ask of the loop.
pub(crate) enum Control {
    Step(Box<Message>),
    Shutdown,
    Unreachable(u64),
    SnapshotStatus {
        id: u64,
        delivered: bool,
    },
    ReadIndex(oneshot::Sender<Result<u64, StoreError>>),
    ChangeMembership {
        change: MemberChange,
        reply: oneshot::Sender<Result<u64, MembershipError>>,
    },
    TransferLeader(u64),
}

/// One step of a membership change, proposed as a ConfChangeV2.
#[derive(Debug, Clone)]
pub(crate) enum MemberChange {
    AddLearner {
        id: u64,
        addr: String,
    },
    Promote {
        id: u64,
    },
    Remove {
        id: u64,
    },
    /// A member's Raft address changed: re-state its role (a no-op for raft-rs) with the new
    /// member list in the context.
    SetAddress {
        id: u64,
        addr: String,
    },
}

/// How the loop ended: `Ok` for a requested or orderly stop, `Err(reason)` when it died.
type Exit = Option<Result<(), String>>;

/// Controls a running Raft loop. Cheap to clone; the loop keeps running while any handle or any
/// [`Store`] is alive, or until [`RaftHandle::shutdown`].
#[derive(Clone)]
pub struct RaftHandle {
    id: u64,
    control: mpsc::UnboundedSender<Control>,
    status: watch::Receiver<RaftStatus>,
    exit: watch::Receiver<Exit>,
    /// One election timeout (ticks × tick): how fast leadership can move.
    pub(super) election_timeout: Duration,
    pub(super) catch_up_timeout: Duration,
    /// Shared with the loop, which updates them; read by the metrics collector.
    instruments: RaftInstruments,
}

impl std::fmt::Debug for RaftHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHandle")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl RaftHandle {
    /// Stops the loop and waits until it has stopped and closed the data file. Proposals still
    /// waiting are answered [`StoreError::Stopped`]. Returns why the loop died if it had.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        // A closed channel means the loop already ended; the exit report below says how.
        let _ = self.control.send(Control::Shutdown);
        let mut exit = self.exit.clone();
        let outcome = match exit.wait_for(Option::is_some).await {
            Ok(report) => report.clone(),
            Err(_) => Some(Err("the raft loop ended without reporting why".to_string())),
        };
        match outcome {
            Some(Ok(())) | None => Ok(()),
            Some(Err(reason)) => Err(RaftError::Failed { reason }),
        }
    }

    /// The node's current state.
    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// Follows status changes (leadership, commit index) as they happen.
    pub fn subscribe_status(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    /// Whether the loop is still running.
    pub fn is_running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Returns once this node is the leader, or fails after `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<(), RaftError> {
        let mut status = self.status.clone();
        let outcome = tokio::time::timeout(timeout, async {
            status.wait_for(|s| s.is_leader).await.map(|_| ())
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(RaftError::Stopped),
            Err(_) => Err(RaftError::NoLeader(timeout)),
        }
    }

    /// What the loop measures (latencies, leader changes, snapshots), for metrics.
    pub fn instruments(&self) -> RaftInstruments {
        self.instruments.clone()
    }

    /// This node's Raft ID.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The leader's Raft ID and address (empty when unknown), when a leader is known: where
    /// a follower forwards what only the leader may do.
    pub fn leader(&self) -> Option<(u64, String)> {
        let status = self.status.borrow();
        (status.leader_id != 0).then(|| {
            let addr = status.leader_addr().unwrap_or_default().to_string();
            (status.leader_id, addr)
        })
    }

    /// Hands the loop a message a peer sent (the bytes its [`RaftTransport`] carried).
    pub fn step(&self, message: &[u8]) -> Result<(), RaftError> {
        let message =
            Message::parse_from_bytes(message).map_err(|e| RaftError::BadMessage(e.to_string()))?;
        if message.to != self.id {
            return Err(RaftError::BadMessage(format!(
                "a message for raft node {} reached raft node {}",
                message.to, self.id
            )));
        }
        if message.from == 0 || message.from == self.id {
            return Err(RaftError::BadMessage(format!(
                "a message claims to come from raft node {}",
                message.from
            )));
        }
        self.control
            .send(Control::Step(Box::new(message)))
            .map_err(|_| RaftError::Stopped)
    }

    /// A linearizable read point: resolves with an index once the leader confirmed (with a
    /// quorum) that it was still the leader when asked, and this node has applied the log up to
    /// that index, so a [`Store::view`] taken afterwards reflects every write acknowledged
    /// before the call. Works on followers (the leader is asked through Raft).
    pub async fn read_index(&self) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::ReadIndex(reply))
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    pub(super) fn request(&self, control: Control) -> Result<(), StoreError> {
        self.control.send(control).map_err(|_| StoreError::Stopped)
    }
}

/// Starts the Raft log of a manager with no peers (see [`start_with_transport`]).
pub async fn start(cfg: RaftConfig) -> Result<(Store, RaftHandle), RaftError> {
    start_with_transport(cfg, Box::new(NoPeers::default())).await
}

/// Opens the log in `cfg.data_dir` (a new one becomes a single-voter cluster of this node),
/// restores the store from the latest snapshot, and starts the Raft loop. Entries committed
/// after the snapshot are applied again by the loop as it starts, before it answers any
/// proposal; a single voter also elects itself right away.
pub async fn start_with_transport(
    cfg: RaftConfig,
    transport: Box<dyn RaftTransport>,
) -> Result<(Store, RaftHandle), RaftError> {
    // Opening reads and checks the whole data file: keep it off the caller's runtime workers.
    tokio::task::spawn_blocking(move || start_blocking(cfg, transport))
        .await
        .map_err(|e| RaftError::Failed {
            reason: format!("opening the raft log did not finish: {e}"),
        })?
}

fn start_blocking(
    cfg: RaftConfig,
    transport: Box<dyn RaftTransport>,
) -> Result<(Store, RaftHandle), RaftError> {
    cfg.validate()?;
    if cfg.force_new_cluster && !cfg.data_dir.join(DATA_FILE).exists() {
        // Refused before opening, which would create the directory and an empty data file.
        return Err(RaftError::NothingToRecover {
            path: cfg.data_dir.join(DATA_FILE),
        });
    }
    let mut storage = RaftStorage::open(&cfg.data_dir, cfg.raft_id)?;
    if cfg.force_new_cluster {
        // Refuses an uninitialized log, which the branch below would otherwise bootstrap.
        recovery::force_new_cluster(&mut storage, &cfg)?;
    }
    if !storage.is_initialized() {
        if cfg.join {
            info!(
                raft_id = cfg.raft_id,
                path = %storage.path().display(),
                "new raft node waiting to join a cluster: it stays empty until the leader sends a snapshot"
            );
        } else {
            storage.bootstrap(ConfState {
                voters: vec![cfg.raft_id],
                ..Default::default()
            })?;
            if !cfg.addr.is_empty() {
                storage.set_members(Members::from([(cfg.raft_id, cfg.addr.clone())]))?;
            }
            info!(raft_id = cfg.raft_id, path = %storage.path().display(), "new single-manager raft cluster");
        }
    }

    let snapshot = storage.snapshot_ref();
    let applied = snapshot.get_metadata().index;
    let initial = if applied > 0 {
        let (snapshot, _) =
            members::decode_snapshot_data(&snapshot.data).map_err(|reason| RaftError::Corrupt {
                path: storage.path().to_path_buf(),
                reason: format!("the snapshot at {applied} cannot be decoded: {reason}"),
            })?;
        StoreState::from_snapshot(snapshot, applied)
    } else {
        StoreState::default()
    };
    let sole_voter = {
        let cs = storage.conf_state();
        cs.voters == [cfg.raft_id] && cs.voters_outgoing.is_empty()
    };
    info!(
        raft_id = cfg.raft_id,
        snapshot_index = applied,
        last_index = storage.last_index().unwrap_or(applied),
        commit = storage.hard_state().commit,
        "raft log opened"
    );

    let raft_cfg = raft::Config {
        id: cfg.raft_id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        // The store holds exactly the snapshot: raft-rs must hand back every committed entry
        // after it, and none before it.
        applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let node = RawNode::new(&raft_cfg, storage, &raft_logger(cfg.raft_id))?;

    let (store, applier, proposals) = new_store(initial);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let mut transport = transport;
    transport.attach(PeerReports::new(&control_tx));
    let (status_tx, status_rx) = watch::channel(RaftStatus {
        id: cfg.raft_id,
        applied,
        ..Default::default()
    });
    let (exit_tx, exit_rx) = watch::channel(None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(RaftError::Spawn)?;

    let election_timeout = cfg.tick * cfg.election_ticks as u32;
    let instruments = RaftInstruments::default();
    instruments
        .snapshot_bytes
        .set(node.store().snapshot_ref().data.len() as i64);
    let mut raft_loop = RaftLoop {
        node,
        applier,
        transport,
        pending: HashMap::new(),
        reads: HashMap::new(),
        confirmed_reads: Vec::new(),
        answers: Vec::new(),
        nonce: rand::random(),
        next_id: 1,
        applied,
        snapshot_interval: cfg.snapshot_interval,
        status: status_tx,
        peer_addrs: BTreeMap::new(),
        last_heard: HashMap::new(),
        unreachable_at: HashMap::new(),
        election_timeout,
        read_retry: (cfg.tick * cfg.heartbeat_ticks as u32 * 2).max(cfg.tick),
        warned_unsnapshotted_append: false,
        warned_retired: HashSet::new(),
        own_addr: cfg.addr.clone(),
        announced_term: 0,
        instruments: instruments.clone(),
    };
    raft_loop.sync_peers();
    let tick = cfg.tick;
    std::thread::Builder::new()
        .name(format!("shoal-raft-{}", cfg.raft_id))
        .spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                runtime.block_on(raft_loop.run(proposals, control_rx, tick, sole_voter))
            }));
            // By now the RawNode, and with it the data file, is closed: whoever waits on the
            // exit report may reopen the directory.
            let report = match outcome {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    error!(error = %e, "raft loop stopped");
                    Err(e.to_string())
                }
                Err(panic) => {
                    let reason = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".to_string());
                    error!(reason, "raft loop panicked");
                    Err(format!("raft loop panicked: {reason}"))
                }
            };
            exit_tx.send_replace(Some(report));
        })
        .map_err(RaftError::Spawn)?;

    Ok((
        store,
        RaftHandle {
            id: cfg.raft_id,
            control: control_tx,
            status: status_rx,
            exit: exit_rx,
            election_timeout,
            catch_up_timeout: cfg.catch_up_timeout,
            instruments,
        },
    ))
}

type Reply = oneshot::Sender<Result<u64, StoreError>>;
type ChangeReply = oneshot::Sender<Result<u64, MembershipError>>;

/// Who waits for an entry to be applied.
enum Waiter {
    Proposal(Reply),
    Change(ChangeReply),
}

impl Waiter {
    fn answer(self, result: Result<u64, StoreError>) {
        match self {
            Waiter::Proposal(reply) => {
                let _ = reply.send(result);
            }
            Waiter::Change(reply) => {
                let _ = reply.send(result.map_err(MembershipError::from));
            }
        }
    }
}

struct Pending {
    waiter: Waiter,
    deadline: Instant,
    /// For the proposal latency metric.
    proposed_at: Instant,
}

/// A ReadIndex request not yet confirmed by the leader.
struct PendingRead {
    reply: Reply,
    context: Vec<u8>,
    deadline: Instant,
    /// When to ask again: the leader drops requests it cannot serve yet (no entry committed in
    /// its term) and a forwarded request dies with the leader it went to.
    retry_at: Instant,
}

/// An answer to send once the status shows what it answers.
type Answer = Box<dyn FnOnce() + Send>;

struct RaftLoop {
    node: RawNode<RaftStorage>,
    applier: StoreApplier,
    transport: Box<dyn RaftTransport>,
    /// Proposals and configuration changes waiting for their entry to be applied, by counter.
    pending: HashMap<u64, Pending>,
    /// ReadIndex requests waiting for the leader's confirmation, by counter.
    reads: HashMap<u64, PendingRead>,
    /// Confirmed reads waiting for the store to reach their index.
    confirmed_reads: Vec<(u64, Reply)>,
    /// Answers for applied entries, sent once the status shows them applied.
    answers: Vec<Answer>,
    /// Random per run: see the module doc.
    nonce: u64,
    next_id: u64,
    /// Last entry applied to the store.
    applied: u64,
    snapshot_interval: u64,
    status: watch::Sender<RaftStatus>,
    /// The peers this loop gave the transport, with the address it gave.
    peer_addrs: BTreeMap<u64, String>,
    /// When each peer last sent us a message.
    last_heard: HashMap<u64, Instant>,
    /// When the transport last failed to reach each peer.
    unreachable_at: HashMap<u64, Instant>,
    election_timeout: Duration,
    read_retry: Duration,
    warned_unsnapshotted_append: bool,
    /// Retired members whose messages were dropped (and said so once) during this run.
    warned_retired: HashSet<u64>,
    /// This manager's Raft address as configured now; replicated when it leads.
    own_addr: String,
    /// The term in which this leader last proposed its own address.
    announced_term: u64,
    /// Metrics the loop updates (shared with every [`RaftHandle`]).
    instruments: RaftInstruments,
}

impl RaftLoop {
    async fn run(
        mut self,
        mut proposals: mpsc::Receiver<ProposeRequest>,
        mut control: mpsc::UnboundedReceiver<Control>,
        tick: Duration,
        sole_voter: bool,
    ) -> Result<(), RaftError> {
        let result = self
            .drive(&mut proposals, &mut control, tick, sole_voter)
            .await;
        let answer = || match &result {
            Ok(()) => StoreError::Stopped,
            Err(e) => StoreError::Storage(e.to_string()),
        };
        for (_, p) in self.pending.drain() {
            p.waiter.answer(Err(answer()));
        }
        for (_, r) in self.reads.drain() {
            let _ = r.reply.send(Err(answer()));
        }
        for (_, reply) in self.confirmed_reads.drain(..) {
            let _ = reply.send(Err(answer()));
        }
        let mut last = self.status.borrow().clone();
        last.is_leader = false;
        last.leader_id = 0;
        self.status.send_replace(last);
        info!(raft_id = self.node.raft.id, "raft loop stopped");
        result
    }

    async fn drive(
        &mut self,
        proposals: &mut mpsc::Receiver<ProposeRequest>,
        control: &mut mpsc::UnboundedReceiver<Control>,
        tick: Duration,
        sole_voter: bool,
    ) -> Result<(), RaftError> {
        // Re-apply what was committed after the snapshot before anything else happens, so the
        // store is current before the first proposal is answered.
        self.handle_readies()?;
        if sole_voter {
            // Waiting out an election timeout would only delay a one-manager swarm.
            self.node.campaign()?;
            self.handle_readies()?;
        }

        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (mut proposals_open, mut control_open) = (true, true);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.node.tick();
                    self.expire_pending();
                    self.retry_reads();
                }
                req = proposals.recv(), if proposals_open => match req {
                    Some(req) => {
                        self.propose(req);
                        for _ in 1..MAX_PROPOSAL_BATCH {
                            match proposals.try_recv() {
                                Ok(req) => self.propose(req),
                                Err(_) => break,
                            }
                        }
                    }
                    None => proposals_open = false,
                },
                msg = control.recv(), if control_open => match msg {
                    Some(Control::Shutdown) => return Ok(()),
                    Some(other) => self.control(other)?,
                    None => control_open = false,
                },
            }
            if !proposals_open && !control_open {
                // Every Store and RaftHandle is gone: nobody can use or stop this log.
                return Ok(());
            }
            self.handle_readies()?;
            self.maybe_snapshot()?;
            self.announce_own_address()?;
            // Ticks and messages can change the status without a Ready (e.g. the term seen).
            self.publish_status();
        }
    }

    /// Handles one request from a handle, the server or the transport.
    fn control(&mut self, control: Control) -> Result<(), RaftError> {
        match control {
            // Handled by the caller: it ends the loop.
            Control::Shutdown => {}
            Control::Step(m) => self.step(*m),
            Control::Unreachable(id) => {
                self.unreachable_at.insert(id, Instant::now());
                self.node.report_unreachable(id);
            }
            Control::SnapshotStatus { id, delivered } => {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                info!(peer = id, delivered, "raft snapshot transfer ended");
                self.node.report_snapshot(id, status);
            }
            Control::ReadIndex(reply) => self.read_index(reply),
            Control::ChangeMembership { change, reply } => {
                self.change_membership(change, reply)?;
            }
            Control::TransferLeader(to) => {
                if self.node.raft.state == StateRole::Leader {
                    info!(to, "transferring raft leadership");
                    self.node.transfer_leader(to);
                }
            }
        }
        Ok(())
    }

    fn step(&mut self, m: Message) {
        let from = m.from;
        if self.node.store().retired().contains(&from) {
            // A member of the cluster this node left by forcing a new one (see the module doc).
            if self.warned_retired.insert(from) {
                warn!(
                    from,
                    "raft messages from a manager retired by --force-new-cluster are ignored; \
                     have it leave the swarm and join again"
                );
            }
            return;
        }
        if m.get_msg_type() == MessageType::MsgAppend
            && m.index == 0
            && !m.entries.is_empty()
            && !self.node.store().is_initialized()
        {
            // A joining node must start from a snapshot: replaying the log from its first entry
            // would miss the cluster's first configuration (see the module doc). Appends that
            // start later are let through: raft-rs refuses them, and the refusal makes the
            // leader send the snapshot.
            if !self.warned_unsnapshotted_append {
                self.warned_unsnapshotted_append = true;
                warn!(
                    from,
                    index = m.index,
                    "raft log entries refused: this node joins the cluster and needs a snapshot first"
                );
            }
            return;
        }
        self.last_heard.insert(from, Instant::now());
        if let Err(e) = self.node.step(m) {
            debug!(from, error = %e, "raft message from peer ignored");
        }
    }

    fn next_context(&mut self) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.nonce.to_be_bytes());
        context.extend_from_slice(&id.to_be_bytes());
        (id, context)
    }

    fn not_leader(&self) -> StoreError {
        StoreError::NotLeader {
            leader: self.leader_label(self.node.raft.leader_id),
        }
    }

    fn propose(&mut self, req: ProposeRequest) {
        if self.node.raft.state != StateRole::Leader {
            let _ = req.reply.send(Err(self.not_leader()));
            return;
        }
        let (id, context) = self.next_context();
        match self.node.propose(context, req.proposal.encode_to_vec()) {
            Ok(()) => {
                self.pending.insert(
                    id,
                    Pending {
                        waiter: Waiter::Proposal(req.reply),
                        deadline: Instant::now() + PROPOSE_TIMEOUT,
                        proposed_at: Instant::now(),
                    },
                );
            }
            Err(raft::Error::ProposalDropped) => {
                // Leadership is moving (a transfer is under way): the proposer retries against
                // the new leader.
                let _ = req.reply.send(Err(self.not_leader()));
            }
            Err(e) => {
                let _ = req.reply.send(Err(StoreError::Storage(e.to_string())));
            }
        }
    }

    fn read_index(&mut self, reply: Reply) {
        if self.node.raft.leader_id == 0 {
            // Nobody can confirm the read: answer now rather than after the timeout.
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let (id, context) = self.next_context();
        self.node.read_index(context.clone());
        let now = Instant::now();
        self.reads.insert(
            id,
            PendingRead {
                reply,
                context,
                deadline: now + PROPOSE_TIMEOUT,
                retry_at: now + self.read_retry,
            },
        );
    }

    fn retry_reads(&mut self) {
        if self.node.raft.leader_id == 0 || self.reads.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut again = Vec::new();
        for read in self.reads.values_mut() {
            if read.retry_at <= now {
                read.retry_at = now + self.read_retry;
                again.push(read.context.clone());
            }
        }
        for context in again {
            // raft-rs ignores a context it already holds, and an answer for a read already
            // answered finds nobody waiting.
            self.node.read_index(context);
        }
    }

    /// As leader, makes sure the replicated member list has this manager's current address
    /// (it may have restarted with a new one): other managers need it once another leads.
    fn announce_own_address(&mut self) -> Result<(), RaftError> {
        let me = self.node.raft.id;
        let term = self.node.raft.term;
        if self.own_addr.is_empty()
            || self.announced_term == term
            || self.node.raft.state != StateRole::Leader
            || self.node.raft.has_pending_conf()
            || !self.node.store().conf_state().voters.contains(&me)
            || self.node.store().members().get(&me) == Some(&self.own_addr)
        {
            return Ok(());
        }
        // Once per term: should the change be refused, trying again at once would only repeat.
        self.announced_term = term;
        info!(addr = %self.own_addr, "replicating this manager's new raft address");
        // Nobody waits for this change: its outcome shows in the member list.
        let (reply, _) = oneshot::channel();
        let change = MemberChange::SetAddress {
            id: me,
            addr: self.own_addr.clone(),
        };
        self.change_membership(change, reply)
    }

    /// Proposes one step of a membership change (leader only); answered once it is applied.
    fn change_membership(
        &mut self,
        change: MemberChange,
        reply: ChangeReply,
    ) -> Result<(), RaftError> {
        if self.node.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader().into()));
            return Ok(());
        }
        let cs = self.node.store().conf_state().clone();
        if self.node.raft.has_pending_conf() || !cs.voters_outgoing.is_empty() {
            let _ = reply.send(Err(MembershipError::ChangeInProgress));
            return Ok(());
        }
        let is_voter = |id: u64| cs.voters.contains(&id);
        let is_learner = |id: u64| cs.learners.contains(&id);
        let mut list = self.node.store().members().clone();
        let single = match &change {
            MemberChange::AddLearner { id, addr } => {
                if self.node.store().retired().contains(id) {
                    let _ = reply.send(Err(MembershipError::Retired { id: *id }));
                    return Ok(());
                }
                if is_voter(*id) || is_learner(*id) {
                    let _ = reply.send(Ok(self.applied));
                    return Ok(());
                }
                if self.applied == 0 {
                    // Nothing to snapshot yet: a brand-new leader has not applied its first
                    // entry. It will have in a moment.
                    let _ = reply.send(Err(MembershipError::ChangeInProgress));
                    return Ok(());
                }
                if self.node.store().first_log_index() <= 1 {
                    // The joining node must get a snapshot, not the log from entry 1 (see the
                    // module doc): compact once before the first member joins.
                    info!(
                        index = self.applied,
                        "compacting the raft log before the first member joins"
                    );
                    self.snapshot_at_applied(true)?;
                }
                list.insert(*id, addr.clone());
                conf_change_single(*id, ConfChangeType::AddLearnerNode)
            }
            MemberChange::Promote { id } => {
                if is_voter(*id) {
                    let _ = reply.send(Ok(self.applied));
                    return Ok(());
                }
                if !is_learner(*id) {
                    let _ = reply.send(Err(MembershipError::NotAMember { id: *id }));
                    return Ok(());
                }
                conf_change_single(*id, ConfChangeType::AddNode)
            }
            MemberChange::SetAddress { id, addr } => {
                if list.get(id) == Some(addr) {
                    let _ = reply.send(Ok(self.applied));
                    return Ok(());
                }
                let change_type = if is_voter(*id) {
                    ConfChangeType::AddNode
                } else if is_learner(*id) {
                    ConfChangeType::AddLearnerNode
                } else {
                    let _ = reply.send(Err(MembershipError::NotAMember { id: *id }));
                    return Ok(());
                };
                list.insert(*id, addr.clone());
                conf_change_single(*id, change_type)
            }
            MemberChange::Remove { id } => {
                if *id == self.node.raft.id {
                    let _ = reply.send(Err(MembershipError::RemovingLeader { id: *id }));
                    return Ok(());
                }
                if !is_voter(*id) && !is_learner(*id) {
                    let _ = reply.send(Ok(self.applied));
                    return Ok(());
                }
                list.remove(id);
                conf_change_single(*id, ConfChangeType::RemoveNode)
            }
        };
        let mut cc = ConfChangeV2::default();
        cc.mut_changes().push(single);
        // The whole list, so every member (and a future leader) learns every address,
        // including this leader's own current one.
        cc.context = members::encode(&list).into();
        let (id, context) = self.next_context();
        match self.node.propose_conf_change(context, cc) {
            Ok(()) => {
                info!(?change, "raft configuration change proposed");
                self.pending.insert(
                    id,
                    Pending {
                        waiter: Waiter::Change(reply),
                        deadline: Instant::now() + PROPOSE_TIMEOUT,
                        proposed_at: Instant::now(),
                    },
                );
            }
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(self.not_leader().into()));
            }
            Err(e) => {
                let _ = reply.send(Err(MembershipError::Refused(e.to_string())));
            }
        }
        Ok(())
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                warn!(
                    proposal = id,
                    "proposal not committed in time; telling the proposer"
                );
                p.waiter.answer(Err(StoreError::Timeout(PROPOSE_TIMEOUT)));
            }
        }
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(r) = self.reads.remove(&id) {
                warn!(
                    read = id,
                    "linearizable read not confirmed by a leader in time"
                );
                let _ = r.reply.send(Err(StoreError::Timeout(PROPOSE_TIMEOUT)));
            }
        }
    }

    fn handle_readies(&mut self) -> Result<(), RaftError> {
        let mut result = Ok(());
        for _ in 0..MAX_READY_ROUNDS {
            if !self.node.has_ready() {
                break;
            }
            result = self.handle_ready();
            if result.is_err() {
                break;
            }
        }
        // Entries applied before a failure were applied: their proposers hear so either way.
        self.answer_applied();
        result
    }

    /// Publishes the status, then answers the proposers whose entries were applied and the
    /// readers whose read index is applied: whoever reads the status (or the store) after its
    /// answer sees what it was answered.
    fn answer_applied(&mut self) {
        self.publish_status();
        for answer in self.answers.drain(..) {
            answer();
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.confirmed_reads = waiting;
        for (index, reply) in ready {
            let _ = reply.send(Ok(index));
        }
    }

    /// One round of the raft-rs protocol: persist, send, apply, advance.
    fn handle_ready(&mut self) -> Result<(), RaftError> {
        let mut ready = self.node.ready();

        if let Some(ss) = ready.ss() {
            if ss.raft_state != StateRole::Leader && !self.pending.is_empty() {
                // Proposals of a deposed leader may never commit: tell their proposers now (they
                // retry against the new leader; a store change that did land is then refused as
                // a duplicate or a stale version) rather than after the full timeout.
                let leader = self.leader_label(ss.leader_id);
                warn!(
                    pending = self.pending.len(),
                    leader, "lost raft leadership with proposals in flight"
                );
                for (_, p) in self.pending.drain() {
                    p.waiter.answer(Err(StoreError::NotLeader {
                        leader: leader.clone(),
                    }));
                }
            }
            // Reads sent to a leader that is gone are lost: ask the new one at the next tick.
            let now = Instant::now();
            for read in self.reads.values_mut() {
                read.retry_at = now;
            }
        }

        for rs in ready.take_read_states() {
            if let Some(read) = self.take_read(&rs.request_ctx) {
                self.confirmed_reads.push((rs.index, read.reply));
            }
        }

        // A leader may send before persisting (Raft thesis 10.2.1).
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }

        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let index = snapshot.get_metadata().index;
            let (state, mut list) =
                members::decode_snapshot_data(&snapshot.data).map_err(|reason| {
                    RaftError::CorruptEntry {
                        index,
                        reason: format!("snapshot from the leader cannot be decoded: {reason}"),
                    }
                })?;
            if list.is_empty() {
                // A snapshot from before members were replicated: keep what we know.
                list = self.node.store().members().clone();
            }
            let list = members::restrict(&list, snapshot.get_metadata().get_conf_state());
            self.instruments
                .snapshot_bytes
                .set(snapshot.data.len() as i64);
            self.node.mut_store().apply_snapshot(snapshot, list)?;
            self.applier.restore(state, index);
            self.applied = index;
            self.sync_peers();
        }

        // Entries and hard state in one durable write: nothing below runs unless it is on disk.
        let hs = ready.hs().cloned();
        self.node
            .mut_store()
            .persist(ready.entries(), hs.as_ref())?;

        // raft-rs only hands out committed entries that are already persisted.
        let committed = ready.take_committed_entries();
        self.apply_entries(committed)?;

        // Followers answer (votes, appends) only once what they acknowledge is durable.
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages());
        }

        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            // Recorded before applying, so a snapshot never runs ahead of the stored commit.
            self.node.mut_store().set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.node.advance_apply();

        self.maybe_snapshot()
    }

    fn send(&mut self, messages: Vec<Message>) {
        for m in messages {
            match m.write_to_bytes() {
                Ok(bytes) => self.transport.send(Outbound {
                    to: m.to,
                    bytes,
                    is_snapshot: m.get_msg_type() == MessageType::MsgSnapshot,
                }),
                Err(e) => warn!(to = m.to, error = %e, "cannot encode raft message; dropped"),
            }
        }
    }

    /// Gives the transport the address of every member (but us), and takes away those that
    /// left. Peers the transport was given by someone else are left alone.
    fn sync_peers(&mut self) {
        let me = self.node.raft.id;
        let list = self.node.store().members().clone();
        for (&id, addr) in &list {
            if id == me || addr.is_empty() || self.peer_addrs.get(&id) == Some(addr) {
                continue;
            }
            debug!(peer = id, addr, "raft peer address known");
            self.transport.add_peer(id, addr);
            self.peer_addrs.insert(id, addr.clone());
        }
        let gone: Vec<u64> = self
            .peer_addrs
            .keys()
            .filter(|id| !list.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            debug!(peer = id, "raft peer left the configuration");
            self.transport.remove_peer(id);
            self.peer_addrs.remove(&id);
            self.last_heard.remove(&id);
            self.unreachable_at.remove(&id);
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        for entry in entries {
            let index = entry.index;
            match entry.get_entry_type() {
                // A new leader's empty entry carries nothing for the store.
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => {
                    let proposal = Proposal::decode(entry.data.as_ref()).map_err(|e| {
                        RaftError::CorruptEntry {
                            index,
                            reason: format!("not a store proposal: {e}"),
                        }
                    })?;
                    let started = Instant::now();
                    let result = self.applier.apply(index, &proposal);
                    self.instruments
                        .apply_duration
                        .observe(started.elapsed().as_secs_f64());
                    if let Err(e) = &result {
                        debug!(index, error = %e, "raft entry rejected by the store");
                    }
                    if let Some(p) = self.take_pending(&entry.context) {
                        self.instruments
                            .proposal_duration
                            .observe(p.proposed_at.elapsed().as_secs_f64());
                        let result = result.map(|()| index).map_err(StoreError::from);
                        self.answers.push(Box::new(move || p.waiter.answer(result)));
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry)?;
                }
            }
            self.applied = index;
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), RaftError> {
        let index = entry.index;
        let bad = |e: protobuf::ProtobufError| RaftError::CorruptEntry {
            index,
            reason: format!("not a configuration change: {e}"),
        };
        let (applied, context) = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            // Empty data is raft-rs's own "leave the joint configuration" entry.
            let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(bad)?;
            (self.node.apply_conf_change(&cc), cc.context)
        } else {
            let cc = ConfChange::parse_from_bytes(&entry.data).map_err(bad)?;
            // Shoal never proposes these; their context is not a member list.
            (self.node.apply_conf_change(&cc), Default::default())
        };
        let result = match applied {
            Ok(cs) => {
                let mut list = self.node.store().members().clone();
                if !context.is_empty() {
                    match members::decode(&context) {
                        Ok(replicated) => list = replicated,
                        // Every manager decodes the same bytes the same way, so they agree
                        // even on ignoring them.
                        Err(e) => {
                            warn!(index, error = %e, "member list of a raft configuration change cannot be decoded; addresses unchanged")
                        }
                    }
                }
                let list = members::restrict(&list, &cs);
                info!(index, voters = ?cs.voters, learners = ?cs.learners, members = ?list, "raft configuration changed");
                let me = self.node.raft.id;
                if !members::conf_ids(&cs).any(|id| id == me) {
                    warn!(
                        index,
                        raft_id = me,
                        "this manager was removed from the raft cluster"
                    );
                }
                self.node.mut_store().set_membership(cs, list)?;
                self.sync_peers();
                Ok(index)
            }
            Err(e) => {
                // Every manager refuses the same change the same way, so skipping it keeps
                // them in agreement.
                warn!(index, error = %e, "raft configuration change refused");
                Err(MembershipError::Refused(e.to_string()))
            }
        };
        if let Some(p) = self.take_pending(&entry.context) {
            self.answers.push(Box::new(move || match p.waiter {
                Waiter::Change(reply) => {
                    let _ = reply.send(result);
                }
                Waiter::Proposal(reply) => {
                    let _ = reply.send(result.map_err(|e| StoreError::Storage(e.to_string())));
                }
            }));
        }
        Ok(())
    }

    fn take_pending(&mut self, context: &[u8]) -> Option<Pending> {
        let id = self.context_id(context)?;
        self.pending.remove(&id)
    }

    fn take_read(&mut self, context: &[u8]) -> Option<PendingRead> {
        let id = self.context_id(context)?;
        self.reads.remove(&id)
    }

    /// The counter in a context made by [`RaftLoop::next_context`] of this run.
    fn context_id(&self, context: &[u8]) -> Option<u64> {
        let (nonce, id) = context.split_at_checked(8)?;
        let nonce = u64::from_be_bytes(nonce.try_into().ok()?);
        let id = u64::from_be_bytes(id.try_into().ok()?);
        (nonce == self.nonce).then_some(id)
    }

    /// Every `snapshot_interval` applied entries: store the state as the Raft snapshot at the
    /// applied index and drop the log up to it. Also when raft-rs wanted to send a peer a
    /// snapshot the stored one cannot serve; that one keeps the log, which other followers may
    /// still be reading.
    fn maybe_snapshot(&mut self) -> Result<(), RaftError> {
        let wanted = self.node.store().take_snapshot_wanted();
        let snapshot_index = self.node.store().snapshot_index();
        if self.applied >= snapshot_index.saturating_add(self.snapshot_interval) {
            self.snapshot_at_applied(true)
        } else if wanted && self.applied > snapshot_index {
            self.snapshot_at_applied(false)
        } else {
            Ok(())
        }
    }

    /// Stores the state at the applied index as the Raft snapshot, with the member list, and
    /// compacts the log up to it when `compact`.
    fn snapshot_at_applied(&mut self, compact: bool) -> Result<(), RaftError> {
        let index = self.applied;
        if index == 0 {
            return Ok(());
        }
        let data = members::snapshot_data(&self.applier.snapshot(), self.node.store().members());
        let bytes = data.len();
        let conf_state = self.node.store().conf_state().clone();
        let store = self.node.mut_store();
        store.create_snapshot(index, conf_state, data)?;
        self.instruments.snapshot_bytes.set(bytes as i64);
        self.instruments.snapshots.inc();
        if compact {
            store.compact(index)?;
            info!(index, bytes, "raft snapshot taken and log compacted");
        } else {
            info!(index, bytes, "raft snapshot taken for a peer");
        }
        Ok(())
    }

    /// Heard from within an election timeout, and not reported unreachable since.
    fn reachable(&self, id: u64, now: Instant) -> bool {
        let Some(&heard) = self.last_heard.get(&id) else {
            return false;
        };
        let recent = now.saturating_duration_since(heard) <= self.election_timeout;
        let failed_since = self.unreachable_at.get(&id).is_some_and(|&at| at > heard);
        recent && !failed_since
    }

    fn publish_status(&self) {
        let raft = &self.node.raft;
        let storage = self.node.store();
        let cs = storage.conf_state();
        let is_leader = raft.state == StateRole::Leader;
        let now = Instant::now();
        let mut peers: Vec<PeerStatus> = if is_leader {
            raft.prs()
                .iter()
                .filter(|(&id, _)| id != raft.id)
                .map(|(&id, pr)| PeerStatus {
                    id,
                    addr: storage.members().get(&id).cloned().unwrap_or_default(),
                    voter: cs.voters.contains(&id) || cs.voters_outgoing.contains(&id),
                    matched: pr.matched,
                    reachable: self.reachable(id, now),
                })
                .collect()
        } else {
            Vec::new()
        };
        peers.sort_by_key(|p| p.id);
        let status = RaftStatus {
            id: raft.id,
            term: raft.term,
            leader_id: raft.leader_id,
            commit: raft.raft_log.committed,
            applied: self.applied,
            is_leader,
            last_index: raft.raft_log.last_index(),
            snapshot_index: storage.snapshot_index(),
            voters: sorted(&cs.voters),
            learners: sorted(&cs.learners),
            members: storage.members().clone(),
            peers,
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                return false;
            }
            if status.leader_id != 0 && current.leader_id != status.leader_id {
                self.instruments.leader_changes.inc();
            }
            if current.is_leader != status.is_leader || current.leader_id != status.leader_id {
                info!(
                    term = status.term,
                    leader_id = status.leader_id,
                    is_leader = status.is_leader,
                    "raft leadership changed"
                );
            }
            *current = status;
            true
        });
    }
}

impl RaftLoop {
    /// How a NotLeader answer names the leader: with its address when known, so the caller
    /// can forward.
    fn leader_label(&self, leader_id: u64) -> String {
        let addr = self
            .node
            .store()
            .members()
            .get(&leader_id)
            .map(String::as_str);
        super::leader_label(leader_id, addr)
    }
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

fn conf_change_single(id: u64, change_type: ConfChangeType) -> ConfChangeSingle {
    ConfChangeSingle {
        node_id: id,
        change_type,
        ..Default::default()
    }
}
