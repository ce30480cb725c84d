//! The Raft loop: one thread owns the raft-rs `RawNode` and drives it — ticks, proposals from
//! the store, messages from peers — persisting each `Ready` before acting on it and applying
//! committed entries to the store in log order (tikv raft-rs's `single_mem_node` shape: tick,
//! step, propose, then on `ready`: persist, send, apply, advance).
//!
//! The loop runs on its own OS thread with a single-threaded tokio runtime rather than as a
//! task on the caller's runtime (`open.rs` starts it): every `Ready` ends in an fsync, and
//! blocking a shared runtime worker for it would stall unrelated tasks (or the whole runtime,
//! when it has one thread). Everything else talks to it through channels ([`Control`],
//! [`ProposeRequest`]).
//!
//! Its concerns live beside it, each an `impl RaftLoop` of its own: proposals and their
//! answers (`proposals.rs`), linearizable reads (`reads.rs`), configuration changes
//! (`conf_change.rs`), snapshots (`snapshots.rs`) and the published status (`status.rs`).
//!
//! A node that forced a new cluster ([`super::RaftConfig::force_new_cluster`]) ignores every
//! message from the members it retired: they hold the old configuration, and heeding them
//! would hand the recovered cluster back to it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use shoal_proto::Proposal;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::handle::Control;
use super::proposals::{Pending, Reply};
use super::reads::PendingRead;
use super::storage::RaftStorage;
use super::transport::{Outbound, RaftTransport};
use super::{RaftError, RaftInstruments, RaftStatus};
use crate::store::{ProposeRequest, StoreApplier, StoreError};

/// Largest batch of queued proposals taken into one `Ready` (one fsync); bounded so a flood of
/// proposals cannot starve ticks and peer messages.
const MAX_PROPOSAL_BATCH: usize = 256;

/// Readies handled back to back before the loop waits again; one usually suffices, a second
/// carries the commit that persisting the first allowed.
const MAX_READY_ROUNDS: usize = 8;

/// An answer to send once the status shows what it answers.
pub(super) type Answer = Box<dyn FnOnce() + Send>;

/// The state the loop owns; built by `open.rs`, then [`RaftLoop::run`] on the loop's thread.
pub(super) struct RaftLoop {
    pub(super) node: RawNode<RaftStorage>,
    pub(super) applier: StoreApplier,
    pub(super) transport: Box<dyn RaftTransport>,
    /// Proposals and configuration changes waiting for their entry to be applied, by counter.
    pub(super) pending: HashMap<u64, Pending>,
    /// ReadIndex requests waiting for the leader's confirmation, by counter.
    pub(super) reads: HashMap<u64, PendingRead>,
    /// Confirmed reads waiting for the store to reach their index.
    pub(super) confirmed_reads: Vec<(u64, Reply)>,
    /// Answers for applied entries, sent once the status shows them applied.
    pub(super) answers: Vec<Answer>,
    /// Random per run: see `proposals.rs`.
    pub(super) nonce: u64,
    pub(super) next_id: u64,
    /// Last entry applied to the store.
    pub(super) applied: u64,
    pub(super) snapshot_interval: u64,
    pub(super) status: watch::Sender<RaftStatus>,
    /// The peers this loop gave the transport, with the address it gave.
    pub(super) peer_addrs: BTreeMap<u64, String>,
    /// When each peer last sent us a message.
    pub(super) last_heard: HashMap<u64, Instant>,
    /// When the transport last failed to reach each peer.
    pub(super) unreachable_at: HashMap<u64, Instant>,
    pub(super) election_timeout: Duration,
    pub(super) read_retry: Duration,
    pub(super) warned_unsnapshotted_append: bool,
    /// Retired members whose messages were dropped (and said so once) during this run.
    pub(super) warned_retired: HashSet<u64>,
    /// This manager's Raft address as configured now; replicated when it leads.
    pub(super) own_addr: String,
    /// The term in which this leader last proposed its own address.
    pub(super) announced_term: u64,
    /// Metrics the loop updates (shared with every [`super::RaftHandle`]).
    pub(super) instruments: RaftInstruments,
}

impl RaftLoop {
    pub(super) async fn run(
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
                    let now = Instant::now();
                    self.expire_proposals(now);
                    self.expire_reads(now);
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
            // would miss the cluster's first configuration (see `conf_change.rs`). Appends that
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
        self.answer_confirmed_reads();
    }

    /// One round of the raft-rs protocol: persist, send, apply, advance.
    fn handle_ready(&mut self) -> Result<(), RaftError> {
        let mut ready = self.node.ready();

        if let Some(ss) = ready.ss() {
            if ss.raft_state != StateRole::Leader {
                self.fail_proposals_of_deposed_leader(ss.leader_id);
            }
            self.retry_reads_at_next_tick();
        }
        self.confirm_reads(ready.take_read_states());

        // A leader may send before persisting (Raft thesis 10.2.1).
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }

        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
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
}
