//! The handle every part of the manager holds to the Raft loop ([`RaftHandle`]).
//!
//! The loop itself runs on its own thread (`raft_loop.rs`); the handle only sends it requests
//! (`requests.rs`) and reads what it publishes (its status, how it exited, its instruments).
//! The handle's other methods live with their concern: reads in `reads.rs`, membership in
//! `membership.rs`.

use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::{mpsc, watch};

use super::instruments::RaftInstruments;
use super::requests::Control;
use super::status::RaftStatus;
use super::RaftError;
use crate::store::StoreError;

/// How the loop ended: `Ok` for a requested or orderly stop, `Err(reason)` when it died.
pub(super) type Exit = Option<Result<(), String>>;

/// Controls a running Raft loop. Cheap to clone; the loop keeps running while any handle or any
/// [`crate::store::Store`] is alive, or until [`RaftHandle::shutdown`].
#[derive(Clone)]
pub struct RaftHandle {
    pub(super) id: u64,
    pub(super) control: mpsc::UnboundedSender<Control>,
    pub(super) status: watch::Receiver<RaftStatus>,
    pub(super) exit: watch::Receiver<Exit>,
    /// One election timeout (ticks × tick): how fast leadership can move.
    pub(super) election_timeout: Duration,
    pub(super) catch_up_timeout: Duration,
    /// Shared with the loop, which updates them; read by the metrics collector.
    pub(super) instruments: RaftInstruments,
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

    /// Hands the loop a message raft node `sender` sent (the bytes its
    /// [`super::RaftTransport`] carried); a message claiming another sender is refused.
    pub fn step(&self, message: &[u8], sender: u64) -> Result<(), RaftError> {
        let message =
            Message::parse_from_bytes(message).map_err(|e| RaftError::BadMessage(e.to_string()))?;
        if message.to != self.id {
            return Err(RaftError::BadMessage(format!(
                "a message for raft node {} reached raft node {}",
                message.to, self.id
            )));
        }
        if message.from == 0 || message.from == self.id || message.from != sender {
            return Err(RaftError::BadMessage(format!(
                "a message from raft node {sender} claims to come from raft node {}",
                message.from
            )));
        }
        self.control
            .send(Control::Step(Box::new(message)))
            .map_err(|_| RaftError::Stopped)
    }

    pub(super) fn request(&self, control: Control) -> Result<(), StoreError> {
        self.control.send(control).map_err(|_| StoreError::Stopped)
    }
}
