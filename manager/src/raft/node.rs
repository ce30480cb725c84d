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
//! earlier run of the manager, re-applied at restart, from answering a new proposer.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole, Storage as _};
use shoal_proto::{Proposal, StoreSnapshot};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use super::logger::raft_logger;
use super::storage::RaftStorage;
use super::transport::{NoPeers, RaftTransport};
use super::{RaftConfig, RaftError, PROPOSE_TIMEOUT};
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
}

enum Control {
    Step(Box<Message>),
    Shutdown,
}

/// How the loop ended: `Ok` for a requested or orderly stop, `Err(reason)` when it died.
type Exit = Option<Result<(), String>>;

/// Controls a running Raft loop. Cheap to clone; the loop keeps running while any handle or any
/// [`Store`] is alive, or until [`RaftHandle::shutdown`].
#[derive(Clone)]
pub struct RaftHandle {
    control: mpsc::UnboundedSender<Control>,
    status: watch::Receiver<RaftStatus>,
    exit: watch::Receiver<Exit>,
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

    /// Hands the loop a message a peer sent (the bytes its [`RaftTransport`] carried).
    pub fn step(&self, message: &[u8]) -> Result<(), RaftError> {
        let message =
            Message::parse_from_bytes(message).map_err(|e| RaftError::BadMessage(e.to_string()))?;
        self.control
            .send(Control::Step(Box::new(message)))
            .map_err(|_| RaftError::Stopped)
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
    let mut storage = RaftStorage::open(&cfg.data_dir, cfg.raft_id)?;
    if !storage.is_initialized() {
        storage.bootstrap(ConfState {
            voters: vec![cfg.raft_id],
            ..Default::default()
        })?;
        info!(raft_id = cfg.raft_id, path = %storage.path().display(), "new single-manager raft cluster");
    }

    let snapshot = storage.snapshot_ref();
    let applied = snapshot.get_metadata().index;
    let initial = if applied > 0 {
        let snapshot = decode_snapshot(snapshot).map_err(|reason| RaftError::Corrupt {
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

    let raft_loop = RaftLoop {
        node,
        applier,
        transport,
        pending: HashMap::new(),
        answers: Vec::new(),
        nonce: rand::random(),
        next_id: 1,
        applied,
        snapshot_interval: cfg.snapshot_interval,
        status: status_tx,
    };
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
            control: control_tx,
            status: status_rx,
            exit: exit_rx,
        },
    ))
}

fn decode_snapshot(snapshot: &Snapshot) -> Result<StoreSnapshot, String> {
    StoreSnapshot::decode(snapshot.data.as_ref()).map_err(|e| e.to_string())
}

type Reply = oneshot::Sender<Result<u64, StoreError>>;

struct Pending {
    reply: Reply,
    deadline: Instant,
}

struct RaftLoop {
    node: RawNode<RaftStorage>,
    applier: StoreApplier,
    transport: Box<dyn RaftTransport>,
    /// Proposals waiting for their entry to be applied, by proposal counter.
    pending: HashMap<u64, Pending>,
    /// Answers for applied entries, sent once the status shows them applied.
    answers: Vec<(Reply, Result<u64, StoreError>)>,
    /// Random per run: see the module doc.
    nonce: u64,
    next_id: u64,
    /// Last entry applied to the store.
    applied: u64,
    snapshot_interval: u64,
    status: watch::Sender<RaftStatus>,
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
            let _ = p.reply.send(Err(answer()));
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
                    Some(Control::Step(m)) => {
                        let from = m.from;
                        if let Err(e) = self.node.step(*m) {
                            debug!(from, error = %e, "raft message from peer ignored");
                        }
                    }
                    None => control_open = false,
                },
            }
            if !proposals_open && !control_open {
                // Every Store and RaftHandle is gone: nobody can use or stop this log.
                return Ok(());
            }
            self.handle_readies()?;
            // Ticks and messages can change the status without a Ready (e.g. the term seen).
            self.publish_status();
        }
    }

    fn propose(&mut self, req: ProposeRequest) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            let leader = leader_label(raft.leader_id);
            let _ = req.reply.send(Err(StoreError::NotLeader { leader }));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.nonce.to_be_bytes());
        context.extend_from_slice(&id.to_be_bytes());
        match self.node.propose(context, req.proposal.encode_to_vec()) {
            Ok(()) => {
                self.pending.insert(
                    id,
                    Pending {
                        reply: req.reply,
                        deadline: Instant::now() + PROPOSE_TIMEOUT,
                    },
                );
            }
            Err(raft::Error::ProposalDropped) => {
                // Leadership is moving (a transfer is under way): the proposer retries against
                // the new leader.
                let leader = leader_label(self.node.raft.leader_id);
                let _ = req.reply.send(Err(StoreError::NotLeader { leader }));
            }
            Err(e) => {
                let _ = req.reply.send(Err(StoreError::Storage(e.to_string())));
            }
        }
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
                let _ = p.reply.send(Err(StoreError::Timeout(PROPOSE_TIMEOUT)));
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

    /// Publishes the status, then answers the proposers whose entries were applied: a proposer
    /// that reads the status after its answer sees its entry applied.
    fn answer_applied(&mut self) {
        self.publish_status();
        for (reply, result) in self.answers.drain(..) {
            let _ = reply.send(result);
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
                let leader = leader_label(ss.leader_id);
                warn!(
                    pending = self.pending.len(),
                    leader, "lost raft leadership with proposals in flight"
                );
                for (_, p) in self.pending.drain() {
                    let _ = p.reply.send(Err(StoreError::NotLeader {
                        leader: leader.clone(),
                    }));
                }
            }
        }

        // A leader may send before persisting (Raft thesis 10.2.1).
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }

        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let index = snapshot.get_metadata().index;
            let state = decode_snapshot(&snapshot).map_err(|reason| RaftError::CorruptEntry {
                index,
                reason: format!("snapshot from the leader cannot be decoded: {reason}"),
            })?;
            self.node.mut_store().apply_snapshot(snapshot)?;
            self.applier.restore(state, index);
            self.applied = index;
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
                Ok(bytes) => self.transport.send(m.to, bytes),
                Err(e) => warn!(to = m.to, error = %e, "cannot encode raft message; dropped"),
            }
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
                    let result = self.applier.apply(index, &proposal);
                    if let Err(e) = &result {
                        debug!(index, error = %e, "raft entry rejected by the store");
                    }
                    if let Some(p) = self.take_pending(&entry.context) {
                        self.answers
                            .push((p.reply, result.map(|()| index).map_err(StoreError::from)));
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
        let applied = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            // Empty data is raft-rs's own "leave the joint configuration" entry.
            let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(bad)?;
            self.node.apply_conf_change(&cc)
        } else {
            let cc = ConfChange::parse_from_bytes(&entry.data).map_err(bad)?;
            self.node.apply_conf_change(&cc)
        };
        let result = match applied {
            Ok(cs) => {
                info!(index, voters = ?cs.voters, learners = ?cs.learners, "raft configuration changed");
                self.node.mut_store().set_conf_state(cs)?;
                Ok(index)
            }
            Err(e) => {
                // Every manager refuses the same change the same way, so skipping it keeps
                // them in agreement.
                warn!(index, error = %e, "raft configuration change refused");
                Err(StoreError::Storage(format!(
                    "configuration change refused: {e}"
                )))
            }
        };
        if let Some(p) = self.take_pending(&entry.context) {
            self.answers.push((p.reply, result));
        }
        Ok(())
    }

    fn take_pending(&mut self, context: &[u8]) -> Option<Pending> {
        let (nonce, id) = context.split_at_checked(8)?;
        let nonce = u64::from_be_bytes(nonce.try_into().ok()?);
        let id = u64::from_be_bytes(id.try_into().ok()?);
        if nonce != self.nonce {
            return None;
        }
        self.pending.remove(&id)
    }

    /// Every `snapshot_interval` applied entries: store the state as the Raft snapshot at the
    /// applied index and drop the log up to it.
    fn maybe_snapshot(&mut self) -> Result<(), RaftError> {
        let snapshot_index = self.node.store().snapshot_index();
        if self.applied < snapshot_index.saturating_add(self.snapshot_interval) {
            return Ok(());
        }
        let index = self.applied;
        let data = self.applier.snapshot().encode_to_vec();
        let bytes = data.len();
        let conf_state = self.node.store().conf_state().clone();
        let store = self.node.mut_store();
        store.create_snapshot(index, conf_state, data)?;
        store.compact(index)?;
        info!(index, bytes, "raft snapshot taken and log compacted");
        Ok(())
    }

    fn publish_status(&self) {
        let raft = &self.node.raft;
        let status = RaftStatus {
            id: raft.id,
            term: raft.term,
            leader_id: raft.leader_id,
            commit: raft.raft_log.committed,
            applied: self.applied,
            is_leader: raft.state == StateRole::Leader,
            last_index: raft.raft_log.last_index(),
            snapshot_index: self.node.store().snapshot_index(),
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                return false;
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

fn leader_label(leader_id: u64) -> String {
    if leader_id == 0 {
        "none elected yet".to_string()
    } else {
        format!("raft node {leader_id}")
    }
}
