//! Where the Raft loop sends messages for other managers.
//!
//! Messages cross this boundary encoded (rust-protobuf bytes of `raft::eraftpb::Message`) so the
//! transport — [`super::GrpcTransport`] between managers — never depends on raft-rs types, and
//! the receiving side hands the same bytes to [`super::RaftHandle::step`].
//!
//! The loop tells the transport where peers are ([`RaftTransport::add_peer`], from the
//! replicated member list), and the transport tells the loop what became of the messages
//! ([`PeerReports`]): raft-rs slows down replication to a peer reported unreachable and needs
//! to hear how a snapshot transfer ended before it sends that peer anything else.

use tokio::sync::mpsc;
use tracing::warn;

use super::requests::Control;

/// One encoded Raft message for a peer.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Raft ID of the receiving manager.
    pub to: u64,
    /// The encoded `raft::eraftpb::Message`.
    pub bytes: Vec<u8>,
    /// Whether it carries a snapshot: such a message holds the whole store and its delivery
    /// must be reported through [`PeerReports::snapshot_finished`].
    pub is_snapshot: bool,
}

/// Delivers encoded Raft messages to peers.
///
/// Every method is called from the Raft loop and must not block: queue and return. A message
/// that cannot be delivered may be dropped (Raft resends what matters) but should be reported.
pub trait RaftTransport: Send + 'static {
    /// Gives the transport the way to report delivery problems back to the loop. Called once,
    /// before the loop sends anything.
    fn attach(&mut self, reports: PeerReports) {
        let _ = reports;
    }

    /// Sends one message to the peer with Raft ID `message.to`.
    fn send(&mut self, message: Outbound);

    /// The peer with Raft ID `id` listens at `addr` (host:port); replaces a previous address.
    fn add_peer(&mut self, id: u64, addr: &str) {
        let _ = (id, addr);
    }

    /// The peer with Raft ID `id` left the configuration: stop sending to it.
    fn remove_peer(&mut self, id: u64) {
        let _ = id;
    }
}

/// The transport's way back into the Raft loop. Cheap to clone; reports made after the loop
/// stopped are dropped. It does not keep the loop alive.
#[derive(Clone)]
pub struct PeerReports {
    control: mpsc::WeakUnboundedSender<Control>,
}

impl std::fmt::Debug for PeerReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerReports").finish_non_exhaustive()
    }
}

impl PeerReports {
    pub(crate) fn new(control: &mpsc::UnboundedSender<Control>) -> Self {
        // Weak: transport tasks outlive nothing. A strong sender would keep the loop's channel
        // open, and the loop would never notice that every handle to it is gone.
        PeerReports {
            control: control.downgrade(),
        }
    }

    /// Messages to `id` could not be delivered: raft-rs stops streaming to it and probes.
    pub fn unreachable(&self, id: u64) {
        self.report(Control::Unreachable(id));
    }

    /// A snapshot message to `id` was delivered (`delivered`) or lost: raft-rs resumes sending
    /// that peer log entries, or sends it a snapshot again later.
    pub fn snapshot_finished(&self, id: u64, delivered: bool) {
        self.report(Control::SnapshotStatus { id, delivered });
    }

    fn report(&self, report: Control) {
        if let Some(control) = self.control.upgrade() {
            // A closed channel means the loop stopped: nobody needs the report.
            let _ = control.send(report);
        }
    }
}

/// The transport of a swarm with one manager: there is nobody to talk to.
#[derive(Debug, Default)]
pub struct NoPeers {
    warned: bool,
}

impl RaftTransport for NoPeers {
    fn send(&mut self, message: Outbound) {
        // A single voter produces no messages; one showing up means the configuration has peers
        // this manager cannot reach, which is worth one warning, not one per heartbeat.
        if !self.warned {
            self.warned = true;
            warn!(
                to = message.to,
                bytes = message.bytes.len(),
                "raft message for another manager dropped: this manager has no transport to peers"
            );
        }
    }
}
