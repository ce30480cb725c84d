//! Where the Raft loop sends messages for other managers.
//!
//! Messages cross this boundary encoded (rust-protobuf bytes of `raft::eraftpb::Message`) so the
//! transport — a gRPC client in the multi-manager work — never depends on raft-rs types, and
//! the receiving side hands the same bytes to [`super::RaftHandle::step`].

use tracing::warn;

/// Delivers encoded Raft messages to peers.
pub trait RaftTransport: Send + 'static {
    /// Sends one encoded message to the peer with Raft ID `to`.
    ///
    /// Called from the Raft loop: it must not block. Queue the message and return; a message
    /// that cannot be delivered may be dropped, Raft resends what matters.
    fn send(&mut self, to: u64, message: Vec<u8>);
}

/// The transport of a swarm with one manager: there is nobody to talk to.
#[derive(Debug, Default)]
pub struct NoPeers {
    warned: bool,
}

impl RaftTransport for NoPeers {
    fn send(&mut self, to: u64, message: Vec<u8>) {
        // A single voter produces no messages; one showing up means the configuration has peers
        // this manager cannot reach, which is worth one warning, not one per heartbeat.
        if !self.warned {
            self.warned = true;
            warn!(
                to,
                bytes = message.len(),
                "raft message for another manager dropped: this manager has no transport to peers"
            );
        }
    }
}
