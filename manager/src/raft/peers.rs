//! The other managers as the Raft loop sees them: the transport that carries its messages to
//! them, the address it gave the transport for each (kept in step with the replicated member
//! list), and when each was last heard from or reported unreachable, which the published
//! status shows as reachability (`status.rs`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::members::Members;
use super::transport::{Outbound, RaftTransport};

/// The loop's peers and its way to them; owned by the loop.
pub(super) struct Peers {
    transport: Box<dyn RaftTransport>,
    /// The peers this loop gave the transport, with the address it gave.
    addrs: BTreeMap<u64, String>,
    /// When each peer last sent us a message.
    last_heard: HashMap<u64, Instant>,
    /// When the transport last failed to reach each peer.
    unreachable_at: HashMap<u64, Instant>,
    election_timeout: Duration,
}

impl Peers {
    /// Peers reached through `transport`; a peer counts as reachable when heard from within
    /// `election_timeout`.
    pub(super) fn new(transport: Box<dyn RaftTransport>, election_timeout: Duration) -> Self {
        Peers {
            transport,
            addrs: BTreeMap::new(),
            last_heard: HashMap::new(),
            unreachable_at: HashMap::new(),
            election_timeout,
        }
    }

    /// Hands the transport the messages of a `Ready`, encoded.
    pub(super) fn send(&mut self, messages: Vec<Message>) {
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

    /// Peer `from` just sent us a message.
    pub(super) fn heard(&mut self, from: u64) {
        self.last_heard.insert(from, Instant::now());
    }

    /// The transport just failed to reach peer `id`.
    pub(super) fn unreachable(&mut self, id: u64) {
        self.unreachable_at.insert(id, Instant::now());
    }

    /// Heard from within an election timeout, and not reported unreachable since.
    pub(super) fn reachable(&self, id: u64, now: Instant) -> bool {
        let Some(&heard) = self.last_heard.get(&id) else {
            return false;
        };
        let recent = now.saturating_duration_since(heard) <= self.election_timeout;
        let failed_since = self.unreachable_at.get(&id).is_some_and(|&at| at > heard);
        recent && !failed_since
    }

    /// Gives the transport the address of every member (but `me`), and takes away those that
    /// left. Peers the transport was given by someone else are left alone.
    pub(super) fn sync(&mut self, me: u64, list: &Members) {
        for (&id, addr) in list {
            if id == me || addr.is_empty() || self.addrs.get(&id) == Some(addr) {
                continue;
            }
            debug!(peer = id, addr, "raft peer address known");
            self.transport.add_peer(id, addr);
            self.addrs.insert(id, addr.clone());
        }
        let gone: Vec<u64> = self
            .addrs
            .keys()
            .filter(|id| !list.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            debug!(peer = id, "raft peer left the configuration");
            self.transport.remove_peer(id);
            self.addrs.remove(&id);
            self.last_heard.remove(&id);
            self.unreachable_at.remove(&id);
        }
    }
}
