//! What the Raft loop measures as it works: latencies, leader changes, snapshots.
//!
//! The instruments live here, next to the loop that updates them, so that Raft needs nothing
//! from the metrics module; `crate::metrics` reads them through [`super::RaftHandle::instruments`]
//! and encodes them at scrape time.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// What the Raft loop measures as it goes; cheap to clone (every field is shared), read by
/// the metrics collector through [`super::RaftHandle::instruments`].
#[derive(Debug, Clone)]
pub struct RaftInstruments {
    /// Seconds from a proposal entering the loop to its entry being applied (the proposer's
    /// wait, less queueing before the loop).
    pub proposal_duration: Histogram,
    /// Seconds applying one entry to the store.
    pub apply_duration: Histogram,
    /// Entries in each durable append to the log (one per `Ready` that carries entries): how
    /// many writes share an fsync. Its count is the number of appends.
    pub append_entries: Histogram,
    /// Times a (new) leader became known to this node.
    pub leader_changes: Counter,
    /// Size of the last snapshot this node stored (taken or received).
    pub snapshot_bytes: Gauge,
    /// Snapshots this node took.
    pub snapshots: Counter,
    /// Streams of Raft batches other managers hold open to this one (`StreamMessages`): one
    /// per peer that sends; one more for a while after a peer's connection broke unseen, until
    /// the server's keepalive lets it go.
    pub inbound_streams: Gauge,
}

impl Default for RaftInstruments {
    fn default() -> Self {
        RaftInstruments {
            // 0.5 ms … 8 s: one fsync on a fast disk up to a quorum that barely answers.
            proposal_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            // 10 µs … 0.65 s: applying is in-memory work.
            apply_duration: Histogram::new(exponential_buckets(0.00001, 4.0, 9)),
            // 1 … 1,024: a lone write up to a Ready full of proposals (MAX_PROPOSAL_BATCH)
            // or of a follower's appends.
            append_entries: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            leader_changes: Counter::default(),
            snapshot_bytes: Gauge::default(),
            snapshots: Counter::default(),
            inbound_streams: Gauge::default(),
        }
    }
}
