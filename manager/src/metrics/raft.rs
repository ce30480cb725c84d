//! Raft metrics: the status every manager's Raft loop publishes ([`RaftStatus`]), and the
//! instruments the loop updates as it works ([`RaftInstruments`], owned by `crate::raft`;
//! this module only reads and encodes them).

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::encode::{counter, gauge};
use crate::raft::{RaftInstruments, RaftStatus};

fn bool01(b: bool) -> i64 {
    i64::from(b)
}

/// The `shoal_raft_*` series of one manager.
pub fn encode(
    enc: &mut DescriptorEncoder,
    status: &RaftStatus,
    instruments: &RaftInstruments,
) -> fmt::Result {
    gauge(
        enc,
        "shoal_raft_term",
        "Current Raft term.",
        None,
        status.term,
    )?;
    gauge(
        enc,
        "shoal_raft_is_leader",
        "1 if this manager is the Raft leader.",
        None,
        bool01(status.is_leader),
    )?;
    gauge(
        enc,
        "shoal_raft_has_leader",
        "1 if this manager knows a Raft leader.",
        None,
        bool01(status.leader_id != 0),
    )?;
    gauge(
        enc,
        "shoal_raft_commit_index",
        "Highest Raft log index known to be committed.",
        None,
        status.commit,
    )?;
    gauge(
        enc,
        "shoal_raft_applied_index",
        "Highest Raft log index applied to this manager's store.",
        None,
        status.applied,
    )?;
    gauge(
        enc,
        "shoal_raft_last_index",
        "Last index of this manager's Raft log.",
        None,
        status.last_index,
    )?;
    gauge(
        enc,
        "shoal_raft_snapshot_index",
        "Raft log index of the latest snapshot; the log is compacted up to it.",
        None,
        status.snapshot_index,
    )?;
    gauge(
        enc,
        "shoal_raft_voters",
        "Voting members of the Raft configuration.",
        None,
        status.voters.len() as u64,
    )?;
    gauge(
        enc,
        "shoal_raft_learners",
        "Non-voting members catching up before they become voters.",
        None,
        status.learners.len() as u64,
    )?;
    if status.is_leader {
        // Only the leader tracks its peers; itself counts as reachable.
        let reachable = 1 + status
            .peers
            .iter()
            .filter(|p| p.voter && p.reachable)
            .count() as u64;
        gauge(
            enc,
            "shoal_raft_voters_reachable",
            "Voters the leader heard from within an election timeout, itself included \
             (exported by the leader only).",
            None,
            reachable,
        )?;
    }
    counter(
        enc,
        "shoal_raft_leader_changes",
        "Times this manager saw a new Raft leader.",
        None,
        instruments.leader_changes.get(),
    )?;
    let seconds = Unit::Seconds;
    instruments.proposal_duration.encode(enc.encode_descriptor(
        "shoal_raft_proposal_duration",
        "Time from a proposal reaching the Raft loop to its entry being applied (leader).",
        Some(&seconds),
        MetricType::Histogram,
    )?)?;
    instruments.apply_duration.encode(enc.encode_descriptor(
        "shoal_raft_apply_duration",
        "Time to apply one Raft log entry to the store.",
        Some(&seconds),
        MetricType::Histogram,
    )?)?;
    instruments.append_entries.encode(enc.encode_descriptor(
        "shoal_raft_log_append_entries",
        "Entries in each durable append to this manager's Raft log (one fsync each).",
        None,
        MetricType::Histogram,
    )?)?;
    gauge(
        enc,
        "shoal_raft_snapshot_size",
        "Size of the latest Raft snapshot stored by this manager.",
        Some(&Unit::Bytes),
        instruments.snapshot_bytes.get(),
    )?;
    gauge(
        enc,
        "shoal_raft_inbound_streams",
        "Streams of Raft messages other managers hold open to this manager.",
        None,
        instruments.inbound_streams.get(),
    )?;
    counter(
        enc,
        "shoal_raft_snapshots",
        "Raft snapshots this manager took.",
        None,
        instruments.snapshots.get(),
    )
}
