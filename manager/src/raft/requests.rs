//! What may be asked of the Raft loop, and how it answers: the requests the handles, the server
//! and the transport send it ([`Control`], [`MemberChange`]) and the channels its answers go
//! back on ([`Reply`], [`ChangeReply`]).
//!
//! A leaf on purpose: the loop and everything that talks to it import these types, and this
//! module imports none of them, so the imports inside `raft/` keep running one way.

use raft::eraftpb::Message;
use tokio::sync::oneshot;

use super::MembershipError;
use crate::store::StoreError;

/// Where a proposal or a read is answered: with the log index it resolved at.
pub(super) type Reply = oneshot::Sender<Result<u64, StoreError>>;
/// Where a membership change is answered: with the log index it was applied at.
pub(super) type ChangeReply = oneshot::Sender<Result<u64, MembershipError>>;

/// What the handles, the server and the transport ask of the loop.
pub(crate) enum Control {
    Step(Box<Message>),
    Shutdown,
    Unreachable(u64),
    SnapshotStatus {
        id: u64,
        delivered: bool,
    },
    ReadIndex(Reply),
    ChangeMembership {
        change: MemberChange,
        reply: ChangeReply,
    },
    TransferLeader(u64),
}

/// One step of a membership change, proposed as a ConfChangeV2.
#[derive(Debug, Clone)]
pub(crate) enum MemberChange {
    AddLearner {
        id: u64,
        addr: String,
    },
    Promote {
        id: u64,
    },
    Remove {
        id: u64,
    },
    /// A member's Raft address changed: re-state its role (a no-op for raft-rs) with the new
    /// member list in the context.
    SetAddress {
        id: u64,
        addr: String,
    },
}
