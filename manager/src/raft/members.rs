//! The managers' Raft addresses, replicated with the configuration.
//!
//! raft-rs knows members only by ID. Their addresses travel with the configuration so that any
//! manager that becomes leader can reach every other: each configuration change proposed here
//! carries the full list (ID → address) in its context, and each snapshot carries the list
//! after the store's bytes. The encoding is `RaftMembers`, whose one field number (1000) is far
//! from `StoreSnapshot`'s, so a snapshot's data is simply the two encodings back to back:
//! protobuf decoders skip fields they do not know, and snapshots written before members existed
//! still decode (with no members).

use std::collections::BTreeMap;

use prost::Message as _;
use raft::eraftpb::ConfState;
use shoal_proto::{RaftMember, RaftMembers, StoreSnapshot};

/// Raft address (host:port) of each member, by Raft ID.
pub type Members = BTreeMap<u64, String>;

/// Encodes `members` as a `RaftMembers` message.
pub(crate) fn encode(members: &Members) -> Vec<u8> {
    RaftMembers {
        raft_members: members
            .iter()
            .map(|(&raft_id, addr)| RaftMember {
                raft_id,
                addr: addr.clone(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Decodes a `RaftMembers` message (or any bytes holding its field, such as snapshot data).
pub(crate) fn decode(bytes: &[u8]) -> Result<Members, prost::DecodeError> {
    let list = RaftMembers::decode(bytes)?;
    Ok(list
        .raft_members
        .into_iter()
        .filter(|m| m.raft_id != 0)
        .map(|m| (m.raft_id, m.addr))
        .collect())
}

/// The data of a Raft snapshot: the store, then the members.
pub(crate) fn snapshot_data(store: &StoreSnapshot, members: &Members) -> Vec<u8> {
    let mut data = store.encode_to_vec();
    data.extend_from_slice(&encode(members));
    data
}

/// Splits a Raft snapshot's data back into the store and the members.
pub(crate) fn decode_snapshot_data(data: &[u8]) -> Result<(StoreSnapshot, Members), String> {
    let store = StoreSnapshot::decode(data).map_err(|e| format!("store: {e}"))?;
    let members = decode(data).map_err(|e| format!("member list: {e}"))?;
    Ok((store, members))
}

/// Every Raft ID the configuration names (voters, learners, and outgoing voters while a joint
/// change is under way).
pub(crate) fn conf_ids(cs: &ConfState) -> impl Iterator<Item = u64> + '_ {
    cs.voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners_next)
        .copied()
}

/// `members` restricted to the IDs `cs` names: addresses of managers that left are forgotten.
pub(crate) fn restrict(members: &Members, cs: &ConfState) -> Members {
    let ids: std::collections::BTreeSet<u64> = conf_ids(cs).collect();
    members
        .iter()
        .filter(|(id, _)| ids.contains(id))
        .map(|(&id, addr)| (id, addr.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::Service;

    #[test]
    fn snapshot_data_carries_store_and_members_and_old_data_still_decodes() {
        let store = StoreSnapshot {
            services: vec![Service {
                id: "svc".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let members = Members::from([(1, "127.0.0.1:1".into()), (3, "127.0.0.1:3".into())]);
        let data = snapshot_data(&store, &members);
        let (got_store, got_members) = decode_snapshot_data(&data).expect("decodes");
        assert_eq!(got_store, store);
        assert_eq!(got_members, members);

        // A snapshot written before members were replicated: the store alone.
        let (old_store, old_members) =
            decode_snapshot_data(&store.encode_to_vec()).expect("old data decodes");
        assert_eq!(old_store, store);
        assert!(old_members.is_empty());
    }

    #[test]
    fn restrict_keeps_only_configured_members() {
        let members = Members::from([(1, "a:1".into()), (2, "b:2".into()), (3, "c:3".into())]);
        let cs = ConfState {
            voters: vec![1],
            learners: vec![3],
            ..Default::default()
        };
        let kept = restrict(&members, &cs);
        assert_eq!(kept.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    }
}
