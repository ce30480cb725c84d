//! Recovering from lost quorum (`swarm init --force-new-cluster`): the surviving manager's log
//! becomes a cluster of one voter, itself, holding every object it had.
//!
//! Restarting with a changed configuration is not enough: the log still holds the
//! configuration changes that added the old members, and raft-rs would replay them (a
//! restart, or a new member catching up from the log, would bring the old voters back and
//! quorum would be lost again). So the log itself is rewritten, before the loop starts: the
//! store is rebuilt from the latest snapshot plus the entries after it, and becomes a new
//! snapshot at the last entry whose configuration names this node alone; every entry goes.
//! What remains carries no trace of the old members except the list of their IDs
//! ([`RaftStorage::retired`]), whose messages the loop then ignores: an old manager that comes
//! back with its old log still believes in the old configuration, and as leader of it (two
//! old managers make a quorum of three) it would otherwise depose this one and overwrite the
//! recovered cluster with its own.
//!
//! Every entry in the log is kept, not only those this node knows to be committed. A follower
//! learns that an entry is committed only with the leader's next message, so the entries past
//! its commit index may well have been committed and acknowledged by the lost leader; dropping
//! them would lose acknowledged writes. Those that were not committed were never acknowledged
//! as done (their proposers were told the outcome is unknown: no quorum, or leadership lost),
//! and keeping them is what Raft itself does when a node wins an election: the new leader
//! commits its whole log. Configuration changes are skipped: the new configuration replaces
//! them.

use std::collections::BTreeSet;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, EntryType, Snapshot};
use raft::{GetEntriesContext, Storage as _};
use shoal_proto::Proposal;
use tracing::{debug, info, warn};

use super::members::{self, Members};
use super::storage::RaftStorage;
use super::{RaftConfig, RaftError};
use crate::store::StoreState;

/// What [`force_new_cluster`] did, for the log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recovered {
    /// The index of the new snapshot: the last entry of the old log.
    pub index: u64,
    /// Entries after the old snapshot applied to the store.
    pub applied: u64,
    /// Entries after the old snapshot the store refused (as it did when they were first applied).
    pub rejected: u64,
    /// Entries past the old commit index, kept (see the module doc).
    pub uncommitted: u64,
    /// Raft IDs of the old cluster's other members.
    pub retired: BTreeSet<u64>,
}

/// Rewrites the initialized log in `storage` as a cluster whose only voter and member is
/// `cfg.raft_id` at `cfg.addr`, keeping the store's state as of the last entry.
pub(super) fn force_new_cluster(
    storage: &mut RaftStorage,
    cfg: &RaftConfig,
) -> Result<Recovered, RaftError> {
    if !storage.is_initialized() {
        return Err(RaftError::NothingToRecover {
            path: storage.path().to_path_buf(),
        });
    }
    let me = cfg.raft_id;
    let snap_index = storage.snapshot_index();
    let (mut state, snap_members) = if snap_index > 0 {
        let (snapshot, list) = members::decode_snapshot_data(&storage.snapshot_ref().data)
            .map_err(|reason| RaftError::Corrupt {
                path: storage.path().to_path_buf(),
                reason: format!("the snapshot at {snap_index} cannot be decoded: {reason}"),
            })?;
        (StoreState::from_snapshot(snapshot, snap_index), list)
    } else {
        (StoreState::default(), Members::new())
    };

    let was_voter = storage.conf_state().voters.contains(&me);
    let mut old_ids: BTreeSet<u64> = members::conf_ids(storage.conf_state()).collect();
    old_ids.extend(members::conf_ids(
        storage.snapshot_ref().get_metadata().get_conf_state(),
    ));
    old_ids.extend(storage.members().keys());
    old_ids.extend(snap_members.keys());

    let commit = storage.hard_state().commit;
    let last = storage.last_index()?;
    let entries = if last > snap_index {
        storage.entries(
            snap_index + 1,
            last + 1,
            None,
            GetEntriesContext::empty(false),
        )?
    } else {
        Vec::new()
    };
    let (mut applied, mut rejected) = (0, 0);
    for entry in &entries {
        let index = entry.index;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| RaftError::CorruptEntry {
            index,
            reason: format!("not a {what}: {e}"),
        };
        match entry.get_entry_type() {
            // A new leader's empty entry carries nothing for the store.
            EntryType::EntryNormal if entry.data.is_empty() => {}
            EntryType::EntryNormal => {
                let proposal = Proposal::decode(entry.data.as_ref())
                    .map_err(|e| corrupt("store proposal", &e))?;
                // Refused entries were refused when first applied too (applying is
                // deterministic) and change nothing.
                match state.apply(index, &proposal) {
                    Ok(()) => applied += 1,
                    Err(e) => {
                        debug!(index, error = %e, "raft entry rejected by the store");
                        rejected += 1;
                    }
                }
            }
            // Their members are the old cluster's, retired with it; a member added by a change
            // that was not applied yet is in no configuration, only here.
            EntryType::EntryConfChange => {
                let cc = ConfChange::parse_from_bytes(&entry.data)
                    .map_err(|e| corrupt("configuration change", &e))?;
                old_ids.insert(cc.node_id);
            }
            EntryType::EntryConfChangeV2 => {
                let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                    .map_err(|e| corrupt("configuration change", &e))?;
                old_ids.extend(cc.changes.iter().map(|c| c.node_id));
            }
        }
    }
    old_ids.remove(&me);
    old_ids.remove(&0);

    let index = last.max(snap_index);
    let term = storage.term(index)?;
    // This node's address as configured now (the recovering host may have moved), else as
    // the old cluster knew it.
    let addr = Some(cfg.addr.clone())
        .filter(|a| !a.is_empty())
        .or_else(|| storage.members().get(&me).cloned())
        .or_else(|| snap_members.get(&me).cloned())
        .unwrap_or_default();
    let list = if addr.is_empty() {
        Members::new()
    } else {
        Members::from([(me, addr)])
    };
    let conf_state = ConfState {
        voters: vec![me],
        ..Default::default()
    };
    let mut snapshot = Snapshot::default();
    if index > 0 {
        snapshot.data = members::snapshot_data(&state.to_snapshot(), &list).into();
    }
    let meta = snapshot.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf_state);
    storage.reset_to_snapshot(snapshot, list, &old_ids)?;

    let recovered = Recovered {
        index,
        applied,
        rejected,
        uncommitted: last.saturating_sub(commit.max(snap_index)),
        retired: old_ids,
    };
    if !was_voter {
        warn!(
            raft_id = me,
            "this manager was not a voter of the old raft cluster: its state may be behind what \
             the cluster had committed"
        );
    }
    info!(
        raft_id = me,
        path = %storage.path().display(),
        index,
        term,
        applied = recovered.applied,
        rejected = recovered.rejected,
        uncommitted = recovered.uncommitted,
        "forced a new raft cluster with this manager as its only voter, keeping the state of \
         every log entry"
    );
    if !recovered.retired.is_empty() {
        warn!(
            retired = ?recovered.retired,
            "the other managers of the old raft cluster are no longer members and their raft \
             messages are ignored; have them leave the swarm and join it again"
        );
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{ConfChangeSingle, ConfChangeType, Entry, HardState};
    use shoal_proto::{store_action::Action, Service, ServiceSpec, StoreAction};

    use super::*;

    fn proposal_entry(index: u64, term: u64, name: &str) -> Entry {
        let proposal = Proposal {
            actions: vec![StoreAction {
                action: Some(Action::CreateService(
                    Service {
                        id: format!("id-{name}"),
                        spec: Some(Box::new(ServiceSpec {
                            name: name.to_string(),
                            replicas: 1,
                            ..Default::default()
                        })),
                        ..Default::default()
                    }
                    .into(),
                )),
            }],
        };
        Entry {
            index,
            term,
            data: proposal.encode_to_vec().into(),
            ..Default::default()
        }
    }

    fn add_voter_entry(index: u64, term: u64, id: u64) -> Entry {
        let mut cc = ConfChangeV2::default();
        cc.mut_changes().push(ConfChangeSingle {
            node_id: id,
            change_type: ConfChangeType::AddNode,
            ..Default::default()
        });
        Entry {
            index,
            term,
            entry_type: EntryType::EntryConfChangeV2,
            data: cc.write_to_bytes().expect("encode").into(),
            ..Default::default()
        }
    }

    fn names(state: &StoreState) -> Vec<String> {
        let mut names: Vec<String> = state
            .services
            .values()
            .filter_map(|s| s.spec.as_ref().map(|spec| spec.name.clone()))
            .collect();
        names.sort();
        names
    }

    /// The store as the loop would restore it at start.
    fn restored(storage: &RaftStorage) -> StoreState {
        let (snapshot, _) =
            members::decode_snapshot_data(&storage.snapshot_ref().data).expect("snapshot data");
        StoreState::from_snapshot(snapshot, storage.snapshot_index())
    }

    /// A follower's log: a snapshot at 3 (voters 1, 2, 3), entries 4 to 8, of which 4 to 6 are
    /// known committed here; entry 5 adds voter 4 (unapplied), entry 8 repeats a name (refused).
    fn follower_log(dir: &std::path::Path) {
        let mut s = RaftStorage::open_unlocked(dir, 2).expect("open");
        s.bootstrap(ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        })
        .expect("bootstrap");
        s.set_members(Members::from([
            (1, "10.0.0.1:1".to_string()),
            (2, "10.0.0.2:2".to_string()),
            (3, "10.0.0.3:3".to_string()),
        ]))
        .expect("members");
        let ents = vec![
            Entry {
                index: 1,
                term: 1,
                ..Default::default()
            },
            proposal_entry(2, 1, "a"),
            proposal_entry(3, 1, "b"),
            proposal_entry(4, 2, "c"),
            add_voter_entry(5, 2, 4),
            proposal_entry(6, 2, "d"),
            proposal_entry(7, 2, "e"),
            proposal_entry(8, 2, "a"),
        ];
        s.persist(
            &ents,
            Some(&HardState {
                term: 2,
                vote: 1,
                commit: 6,
                ..Default::default()
            }),
        )
        .expect("persist");
        let mut at3 = StoreState::default();
        for e in &ents[1..3] {
            let p = Proposal::decode(e.data.as_ref()).expect("proposal");
            at3.apply(e.index, &p).expect("apply");
        }
        let data = members::snapshot_data(&at3.to_snapshot(), s.members());
        s.create_snapshot(3, s.conf_state().clone(), data)
            .expect("snapshot");
        s.compact(3).expect("compact");
    }

    #[test]
    fn force_new_cluster_keeps_every_entry_and_forgets_the_old_members() {
        let dir = tempfile::tempdir().expect("tempdir");
        follower_log(dir.path());
        let mut cfg = RaftConfig::new(dir.path(), 2);
        cfg.addr = "10.0.0.9:9".into();
        {
            let mut s = RaftStorage::open_unlocked(dir.path(), 2).expect("reopen");
            let got = force_new_cluster(&mut s, &cfg).expect("recover");
            assert_eq!(
                got,
                Recovered {
                    index: 8,
                    applied: 3,
                    rejected: 1,
                    uncommitted: 2,
                    retired: BTreeSet::from([1, 3, 4]),
                }
            );
        }
        // Durable: what a restart (with or without the flag) starts from.
        let s = RaftStorage::open_unlocked(dir.path(), 2).expect("reopen after recovery");
        assert_eq!(s.conf_state().voters, vec![2]);
        assert!(s.conf_state().learners.is_empty());
        assert_eq!(s.members(), &Members::from([(2, "10.0.0.9:9".to_string())]));
        assert_eq!(s.retired(), &BTreeSet::from([1, 3, 4]));
        assert_eq!(s.snapshot_index(), 8);
        assert_eq!(s.snapshot_ref().get_metadata().term, 2);
        assert_eq!(
            s.snapshot_ref().get_metadata().get_conf_state().voters,
            vec![2]
        );
        // No entry is left to replay: not the old configuration changes, not anything else.
        assert_eq!(s.first_log_index(), 9);
        assert_eq!(s.last_index().ok(), Some(8));
        assert_eq!(s.hard_state().commit, 8);
        assert_eq!(s.hard_state().term, 2);
        let state = restored(&s);
        assert_eq!(names(&state), vec!["a", "b", "c", "d", "e"]);
        let (_, list) = members::decode_snapshot_data(&s.snapshot_ref().data).expect("data");
        assert_eq!(list, Members::from([(2, "10.0.0.9:9".to_string())]));
    }

    #[test]
    fn force_new_cluster_twice_keeps_the_state_and_the_retired_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        follower_log(dir.path());
        // No address configured: the one the old cluster knew stays.
        let cfg = RaftConfig::new(dir.path(), 2);
        let mut s = RaftStorage::open_unlocked(dir.path(), 2).expect("open");
        force_new_cluster(&mut s, &cfg).expect("first recovery");
        let again = force_new_cluster(&mut s, &cfg).expect("second recovery");
        assert_eq!(again.index, 8);
        assert_eq!(again.applied, 0);
        assert!(again.retired.is_empty());
        assert_eq!(s.retired(), &BTreeSet::from([1, 3, 4]));
        assert_eq!(s.members(), &Members::from([(2, "10.0.0.2:2".to_string())]));
        assert_eq!(names(&restored(&s)), vec!["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn force_new_cluster_refuses_a_log_that_never_joined_a_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = RaftConfig::new(dir.path(), 5);
        let mut s = RaftStorage::open_unlocked(dir.path(), 5).expect("open");
        let err = force_new_cluster(&mut s, &cfg).expect_err("nothing to recover");
        assert!(matches!(err, RaftError::NothingToRecover { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "nothing to recover: no raft data at {}",
                s.path().display()
            )),
            "{err}"
        );
    }
}
