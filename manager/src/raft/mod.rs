//! The Raft log that every store change goes through.
//!
//! [`start`] opens the durable log in the data directory (a redb file, [`storage`]), restores
//! the store from the latest snapshot (`open.rs`), and runs one Raft loop (`raft_loop.rs`) that
//! commits the proposals made through [`crate::store::Store::propose`], applies committed
//! entries to the store in log order and answers the proposers (`proposals.rs`); it also
//! serves linearizable reads (`reads.rs`), configuration changes (`conf_change.rs`) and
//! snapshots (`snapshots.rs`), keeps the transport's peers in step with the members
//! (`peers.rs`), and publishes its status (`status.rs`) and instruments (`instruments.rs`) for
//! the rest of the manager. The loop owns the state of each of these concerns and calls them;
//! none of them imports the loop. Every other part talks to the loop through a [`RaftHandle`]
//! (`handle.rs`), which sends it the requests of `requests.rs`.
//!
//! A new data directory becomes a one-manager cluster that elects itself at once, unless it is
//! started to join one ([`RaftConfig::join`]): then it waits, empty, for a leader to send it a
//! snapshot. A manager that survived the loss of quorum restarts as a one-manager cluster
//! keeping every object with [`RaftConfig::force_new_cluster`] (`recovery.rs`).
//!
//! Managers talk through a [`RaftTransport`]: [`GrpcTransport`] sends to the [`RaftService`] of
//! the others (`service Raft` in `shoal.proto`); [`NoPeers`] serves a single manager. The
//! membership ([`RaftHandle::add_voter`], [`RaftHandle::remove_voter`]) and the members' Raft
//! addresses ([`members`]) are replicated through the log itself.

pub mod cipher;
mod conf_change;
pub mod grpc;
mod handle;
mod instruments;
pub mod keys;
mod logger;
pub mod members;
mod membership;
mod net_runtime;
mod open;
mod peers;
mod proposals;
mod raft_loop;
mod reads;
mod recovery;
mod requests;
mod snapshots;
mod status;
pub mod storage;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

pub use cipher::DataKey;
pub use grpc::{ChannelFactory, GrpcTransport, PlainHttp, RaftService, TransportError};
pub use handle::RaftHandle;
pub use instruments::RaftInstruments;
pub use members::Members;
pub use open::{start, start_with_transport};
pub use status::{PeerStatus, RaftStatus};
pub use storage::RaftStorage;
pub use transport::{NoPeers, Outbound, PeerReports, RaftTransport};

use crate::store::StoreError;

/// How long a proposal may wait to be committed and applied before its proposer is told
/// [`crate::store::StoreError::Timeout`].
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How this manager's Raft node runs.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// Directory holding the Raft data file (`raft.redb`); created if missing.
    pub data_dir: PathBuf,
    /// This manager's Raft ID: non-zero and unique in the swarm.
    pub raft_id: u64,
    /// One Raft clock tick.
    pub tick: Duration,
    /// Ticks without a leader before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between two snapshots; the log is compacted up to each snapshot.
    pub snapshot_interval: u64,
    /// host:port where this manager's [`RaftService`] listens for the other managers; recorded
    /// in the replicated member list. May stay empty while the swarm has one manager.
    pub addr: String,
    /// Start to join an existing cluster: a new data directory stays empty, with no voters, until
    /// the leader (which added this node with [`RaftHandle::add_voter`]) sends it a snapshot. An
    /// initialized data directory ignores this and resumes as it was.
    pub join: bool,
    /// How long [`RaftHandle::add_voter`] waits for a new member to catch up with the leader's
    /// log before it would become a voter.
    pub catch_up_timeout: Duration,
    /// Recover from lost quorum (`swarm init --force-new-cluster`): before the loop starts, the
    /// initialized log in `data_dir` is rewritten as a cluster whose only voter is this node
    /// (members: this node at `addr`), keeping the whole store; every other member is retired
    /// for good. Applies once per start: pass it only for the start that recovers, not on
    /// every restart, or managers that joined since are dropped again. An uninitialized data
    /// directory is refused ([`RaftError::NothingToRecover`]); `join` is ignored.
    pub force_new_cluster: bool,
    /// The key that seals the log and snapshots at rest. `None`: the one in `data_dir`'s key
    /// files, unwrapped with the `kek` file there (a new directory gets new key files); a
    /// locked log ([`keys::Wrapping::UnlockKey`]) needs it given.
    pub data_key: Option<DataKey>,
}

impl RaftConfig {
    /// The defaults: 100ms ticks, elections after 20 ticks, a heartbeat every tick, and a
    /// snapshot every 10,000 entries (swarmkit's default; each snapshot encodes, seals and
    /// fsyncs the whole store, so at thousands of writes a second a snapshot every 1,000
    /// entries cost several whole-store writes a second; 10,000 entries of a few hundred bytes
    /// keep the log at a few MiB).
    pub fn new(data_dir: impl Into<PathBuf>, raft_id: u64) -> Self {
        RaftConfig {
            data_dir: data_dir.into(),
            raft_id,
            tick: Duration::from_millis(100),
            // 2 s, so 2–4 s once raft-rs randomizes it: a follower waits out 20 missed
            // heartbeats before it campaigns, and a leader keeps office as long as it heard
            // from a majority within 2 s (check-quorum). 1 s was too short for two loaded
            // cores running 100,000 tasks: the loop or the transport could stall that long
            // and the cluster fed itself elections. swarmkit waits 10 s (ElectionTick 10 ×
            // TickInterval 1 s, a heartbeat a second); 2 s keeps failover short.
            election_ticks: 20,
            heartbeat_ticks: 1,
            snapshot_interval: 10_000,
            addr: String::new(),
            join: false,
            catch_up_timeout: Duration::from_secs(60),
            force_new_cluster: false,
            data_key: None,
        }
    }

    /// One election timeout (ticks × tick): how fast leadership can move, and how recently a
    /// peer must have been heard from to count as reachable.
    fn election_timeout(&self) -> Duration {
        self.tick * self.election_ticks as u32
    }

    fn validate(&self) -> Result<(), RaftError> {
        let invalid = |reason: String| Err(RaftError::Config(reason));
        if self.raft_id == 0 {
            return invalid("raft_id must not be 0 (Raft reserves it for \"no node\")".into());
        }
        if self.tick.is_zero() {
            return invalid("tick must be longer than 0".into());
        }
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks must be at least 1".into());
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return invalid(format!(
                "election_ticks ({}) must be greater than heartbeat_ticks ({})",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.snapshot_interval == 0 {
            return invalid("snapshot_interval must be at least 1 entry".into());
        }
        Ok(())
    }
}

/// Why the Raft log could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("refuse to start: raft data at {path} is corrupt: {reason}; move it away to start a new swarm")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot use raft data at {path}: {source}; check that the directory exists and is readable and writable by shoal")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("raft data at {path} is in use by another process; stop the other shoal manager using this data directory first")]
    InUse { path: PathBuf },
    #[error("refuse to start: raft data at {path} belongs to raft node {stored}, not {configured}; use the data directory of this node or move it away to start a new swarm")]
    WrongNode {
        path: PathBuf,
        stored: u64,
        configured: u64,
    },
    #[error("writing raft data at {path} failed: {source}; check the disk (free space, permissions) and restart the manager")]
    Write {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("refusing to change raft data at {path}: {reason} (this is a bug in shoal; please report it)")]
    InvalidWrite { path: PathBuf, reason: String },
    #[error("refuse to apply raft log entry {index}: {reason}; the log was written by an incompatible shoal or is damaged")]
    CorruptEntry { index: u64, reason: String },
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("nothing to recover: no raft data at {path}; --force-new-cluster restarts the raft log of a manager that was in a swarm, run `swarm init` without it to start a new swarm")]
    NothingToRecover { path: PathBuf },
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("cannot start the raft loop thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the raft loop is not running")]
    Stopped,
    #[error("the raft loop stopped: {reason}")]
    Failed { reason: String },
    #[error("this manager did not become the swarm leader within {0:?}; are a majority of managers reachable?")]
    NoLeader(Duration),
    #[error("malformed raft message from a peer: {0}")]
    BadMessage(String),
}

/// Why a change of the Raft membership (or of its leader) did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Not the leader (ask the leader: [`RaftStatus::leader_addr`]), no quorum, or stopped.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("raft ID 0 is reserved for \"no node\"; give the manager a non-zero raft ID")]
    InvalidId,
    #[error("raft node {id} needs the address of its raft service (host:port) so the other managers can reach it")]
    MissingAddress { id: u64 },
    #[error("another raft configuration change is still being applied; retry once it is")]
    ChangeInProgress,
    #[error("raft node {id} is not a member of the raft cluster; add it before promoting it")]
    NotAMember { id: u64 },
    #[error("raft ID {id} belonged to a manager of the cluster this manager left with --force-new-cluster and cannot join again; have that manager leave the swarm and join with a new raft ID")]
    Retired { id: u64 },
    #[error("raft node {id} did not catch up with the leader's log within {waited:?} (it has entries up to {matched}, it needs {needed}); check that it runs and that this manager reaches it at {addr}. It stays a non-voting learner until it is added again or removed")]
    NotCaughtUp {
        id: u64,
        addr: String,
        matched: u64,
        needed: u64,
        waited: Duration,
    },
    #[error("raft node {id} is the leader and cannot remove itself; transfer leadership to another manager first, then remove it through the new leader")]
    RemovingLeader { id: u64 },
    #[error("the raft cluster refused the configuration change: {0}")]
    Refused(String),
    #[error("no other voter can take over leadership: {0}")]
    NoTransferTarget(String),
    #[error("leadership did not move to raft node {to} within {waited:?}; it may be behind or unreachable, retry or pick another manager")]
    TransferTimeout { to: u64, waited: Duration },
}

/// How a NotLeader answer names the leader: with its address when known, so the caller can
/// forward; when none is known the likely cause is a lost quorum, and the answer says so.
pub(crate) fn leader_label(leader_id: u64, addr: Option<&str>) -> String {
    match (leader_id, addr) {
        (0, _) => "none elected: no quorum; are a majority of the managers running and \
                   reachable?"
            .to_string(),
        (id, Some(addr)) if !addr.is_empty() => format!("raft node {id} at {addr}"),
        (id, _) => format!("raft node {id}"),
    }
}
