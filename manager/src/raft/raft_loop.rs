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
//! Its concerns live beside it, each with the state it keeps, which the loop owns and calls
//! with the parts of its own state they need: proposals and their answers (`proposals.rs`),
//! linearizable reads (`reads.rs`), configuration changes (`conf_change.rs`), snapshots
//! (`snapshots.rs`), the peers and the transport to them (`peers.rs`) and the published status
//! (`status.rs`). None of them imports the loop: the imports run one way, from here outwards.
//!
//! A node that forced a new cluster ([`super::RaftConfig::force_new_cluster`]) ignores every
//! message from the members it retired: they hold the old configuration, and heeding them
//! would hand the recovered cluster back to it.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message as _;
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use shoal_proto::Proposal;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::conf_change::{self, OwnAddress};
use super::instruments::RaftInstruments;
use super::peers::Peers;
use super::proposals::PendingProposals;
use super::reads::PendingReads;
use super::requests::Control;
use super::snapshots::Snapshots;
use super::status::{RaftStatus, StatusPublisher};
use super::storage::RaftStorage;
use super::transport::RaftTransport;
use super::{RaftConfig, RaftError};
use crate::store::{ProposeRequest, StoreApplier, StoreError};

/// Largest batch of queued proposals taken into one `Ready` (one fsync) and one raft-rs
/// proposal message (one append to each follower); bounded so a flood of proposals cannot
/// starve ticks and peer messages.
const MAX_PROPOSAL_BATCH: usize = 256;

/// Largest batch of queued peer messages and requests stepped into one `Ready`. Each `Ready`
/// ends in an fsync, so handling them one `Ready` each would make every append response (and
/// on a follower every append) cost its own fsync and cap the log at one fsync per message;
/// bounded so that a flood cannot starve ticks and proposals.
const MAX_CONTROL_BATCH: usize = 1024;

/// Readies handled back to back before the loop waits again; one usually suffices, a second
/// carries the commit that persisting the first allowed.
const MAX_READY_ROUNDS: usize = 8;

/// The state the loop owns: the node, the store it applies to, and the state of each concern;
/// built by `open.rs` ([`RaftLoop::new`]), then [`RaftLoop::run`] on the loop's thread.
pub(super) struct RaftLoop {
    node: RawNode<RaftStorage>,
    applier: StoreApplier,
    /// Last entry applied to the store.
    applied: u64,
    /// The other managers, and the transport to them.
    peers: Peers,
    /// Proposals and configuration changes waiting for their entry to be applied.
    proposals: PendingProposals,
    /// Linearizable reads waiting for the leader's confirmation or for the store.
    reads: PendingReads,
    /// This manager's Raft address as configured now; replicated when it leads.
    own_addr: OwnAddress,
    snapshots: Snapshots,
    status: StatusPublisher,
    warned_unsnapshotted_append: bool,
    /// Retired members whose messages were dropped (and said so once) during this run.
    warned_retired: HashSet<u64>,
    /// Metrics the loop updates (shared with every [`super::RaftHandle`]).
    instruments: RaftInstruments,
}

impl RaftLoop {
    /// The loop of `node`, whose store (through `applier`) holds the log up to `applied`;
    /// it tells the transport where the members are at once.
    pub(super) fn new(
        node: RawNode<RaftStorage>,
        applier: StoreApplier,
        applied: u64,
        transport: Box<dyn RaftTransport>,
        cfg: &RaftConfig,
        status: watch::Sender<RaftStatus>,
        instruments: RaftInstruments,
    ) -> Self {
        let mut raft_loop = RaftLoop {
            node,
            applier,
            applied,
            peers: Peers::new(transport, cfg.election_timeout()),
            proposals: PendingProposals::new(),
            reads: PendingReads::new((cfg.tick * cfg.heartbeat_ticks as u32 * 2).max(cfg.tick)),
            own_addr: OwnAddress::new(cfg.addr.clone()),
            snapshots: Snapshots::new(cfg.snapshot_interval, instruments.clone()),
            status: StatusPublisher::new(status, instruments.clone()),
            warned_unsnapshotted_append: false,
            warned_retired: HashSet::new(),
            instruments,
        };
        raft_loop.sync_peers();
        raft_loop
    }

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
        // A snapshot being written holds the data file open: finish it before the log closes.
        if let Err(e) = self.snapshots.settle(&mut self.node) {
            warn!(error = %e, "the raft snapshot being written when the loop stopped failed");
        }
        if let Err(e) = self.node.store().sync() {
            warn!(error = %e, "the raft log's last commit index could not be made durable");
        }
        self.proposals.fail_all(answer);
        self.reads.fail_all(answer);
        self.status.publish_stopped();
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
        // Proposals taken this turn, proposed together (see `PendingProposals::propose`).
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.node.tick();
                    let now = Instant::now();
                    self.proposals.expire(now);
                    self.reads.expire(now);
                    self.reads.retry(&mut self.node);
                }
                req = proposals.recv(), if proposals_open => match req {
                    Some(req) => batch.push(req),
                    None => proposals_open = false,
                },
                msg = control.recv(), if control_open => match msg {
                    Some(Control::Shutdown) => return Ok(()),
                    Some(other) => self.control(other)?,
                    None => control_open = false,
                },
            }
            // Whatever else is queued already goes into the same Ready: one fsync for all of
            // it (see MAX_CONTROL_BATCH).
            for _ in 0..MAX_CONTROL_BATCH {
                match control.try_recv() {
                    Ok(Control::Shutdown) => return Ok(()),
                    Ok(other) => self.control(other)?,
                    Err(_) => break,
                }
            }
            while batch.len() < MAX_PROPOSAL_BATCH {
                match proposals.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            self.proposals
                .propose(&mut self.node, std::mem::take(&mut batch));
            if !proposals_open && !control_open {
                // Every Store and RaftHandle is gone: nobody can use or stop this log.
                return Ok(());
            }
            self.handle_readies()?;
            self.maybe_snapshot()?;
            self.own_addr.announce(
                &mut self.node,
                &mut self.proposals,
                &mut self.snapshots,
                &self.applier,
                self.applied,
            )?;
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
                self.peers.unreachable(id);
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
            Control::ReadIndex(reply) => {
                self.reads
                    .read_index(&mut self.node, &mut self.proposals.tags, reply);
            }
            Control::ChangeMembership { change, reply } => {
                conf_change::change_membership(
                    &mut self.node,
                    &mut self.proposals,
                    &mut self.snapshots,
                    &self.applier,
                    self.applied,
                    change,
                    reply,
                )?;
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
        self.peers.heard(from);
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
        self.applier.publish();
        self.proposals.send_answers();
        self.reads.answer_applied(self.applied);
    }

    /// One round of the raft-rs protocol: persist, send, apply, advance.
    fn handle_ready(&mut self) -> Result<(), RaftError> {
        let mut ready = self.node.ready();

        if let Some(ss) = ready.ss() {
            if ss.raft_state != StateRole::Leader {
                self.proposals
                    .fail_of_deposed_leader(&self.node, ss.leader_id);
            }
            self.reads.retry_at_next_tick();
        }
        self.reads
            .confirm(&self.proposals.tags, ready.take_read_states());

        // A leader may send before persisting (Raft thesis 10.2.1).
        if !ready.messages().is_empty() {
            self.peers.send(ready.take_messages());
        }

        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
        }

        // raft-rs only hands out committed entries that are already persisted (here and on a
        // majority), so they are applied and their proposers answered before this Ready's own
        // write: a proposer does not wait for the fsync of the entries proposed after it.
        let committed = ready.take_committed_entries();
        if !committed.is_empty() {
            self.apply_entries(committed)?;
            self.answer_applied();
        }

        // Entries and hard state in one durable write: nothing below runs unless it is on disk.
        let hs = ready.hs().cloned();
        self.node
            .mut_store()
            .persist(ready.entries(), hs.as_ref())?;
        if !ready.entries().is_empty() {
            self.instruments
                .append_entries
                .observe(ready.entries().len() as f64);
        }

        // Followers answer (votes, appends) only once what they acknowledge is durable.
        if !ready.persisted_messages().is_empty() {
            self.peers.send(ready.take_persisted_messages());
        }

        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            // Recorded before applying, so a snapshot never runs ahead of the commit index
            // (kept in memory until the next write of the log: see `RaftStorage::persist`).
            self.node.mut_store().set_commit(commit)?;
        }
        self.peers.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.node.advance_apply();

        self.maybe_snapshot()
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        for entry in entries {
            let index = entry.index;
            match entry.get_entry_type() {
                // A new leader's empty entry carries nothing for the store.
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => {
                    let mut pending = self.proposals.take(&entry.context);
                    // An entry this run proposed carries that very proposal (its context is
                    // this run's alone): applied as it was proposed, not decoded again.
                    let proposal = match pending.as_mut().and_then(|p| p.proposal.take()) {
                        Some(proposal) => proposal,
                        None => Proposal::decode(entry.data.as_ref()).map_err(|e| {
                            RaftError::CorruptEntry {
                                index,
                                reason: format!("not a store proposal: {e}"),
                            }
                        })?,
                    };
                    let started = Instant::now();
                    let result = self.applier.apply(index, proposal);
                    self.instruments
                        .apply_duration
                        .observe(started.elapsed().as_secs_f64());
                    if let Err(e) = &result {
                        debug!(index, error = %e, "raft entry rejected by the store");
                    }
                    if let Some(p) = pending {
                        self.instruments
                            .proposal_duration
                            .observe(p.proposed_at.elapsed().as_secs_f64());
                        let result = result.map(|()| index).map_err(StoreError::from);
                        self.proposals
                            .queue_answer(Box::new(move || p.waiter.answer(result)));
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    conf_change::apply_conf_change(
                        &mut self.node,
                        &mut self.proposals,
                        &mut self.peers,
                        &entry,
                    )?;
                }
            }
            self.applied = index;
        }
        Ok(())
    }

    /// Snapshots the store when it is due (see [`Snapshots::maybe_snapshot`]).
    fn maybe_snapshot(&mut self) -> Result<(), RaftError> {
        self.snapshots
            .maybe_snapshot(&mut self.node, &self.applier, self.applied)
    }

    /// Installs a snapshot the leader sent; the store is then applied up to it, and the
    /// transport learns the members it names.
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), RaftError> {
        self.applied = self
            .snapshots
            .install(&mut self.node, &mut self.applier, snapshot)?;
        self.sync_peers();
        Ok(())
    }

    /// Gives the transport the address of every member (see [`Peers::sync`]).
    fn sync_peers(&mut self) {
        self.peers
            .sync(self.node.raft.id, self.node.store().members());
    }

    /// Publishes the status when it changed (see [`StatusPublisher::publish`]).
    fn publish_status(&self) {
        self.status.publish(&self.node, self.applied, &self.peers);
    }
}
