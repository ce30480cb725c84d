//! The Raft log end to end on one manager: proposals through `Store::propose` are committed,
//! applied in order and survive restarts, snapshots and compaction; refused proposals change
//! nothing; damaged data refuses to start.

use std::path::Path;
use std::time::Duration;

use shoal_manager::raft::{self, RaftConfig, RaftError, RaftHandle, RaftStorage};
use shoal_manager::store::{Store, StoreError};
use shoal_proto::store_action::Action;

mod common;
use common::{create_service, service_names, start_err};

const LEADER_WAIT: Duration = Duration::from_secs(5);

fn config(dir: &Path) -> RaftConfig {
    let mut cfg = RaftConfig::new(dir, 1);
    // Fast ticks keep the tests quick; the single voter campaigns at once anyway.
    cfg.tick = Duration::from_millis(20);
    cfg
}

async fn start(cfg: RaftConfig) -> (Store, RaftHandle) {
    let (store, handle) = raft::start(cfg).await.expect("raft starts");
    handle
        .wait_leader(LEADER_WAIT)
        .await
        .expect("becomes leader");
    (store, handle)
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|i| format!("svc-{i:03}")).collect();
    v.sort();
    v
}

#[tokio::test]
async fn raft_applies_proposals_in_order_and_shows_them_in_views() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, handle) = start(config(dir.path())).await;
    let mut events = store.subscribe();

    let mut indices = Vec::new();
    for i in 0..5 {
        let index = store
            .propose(vec![create_service(&format!("svc-{i:03}"))])
            .await
            .expect("proposal applied");
        indices.push(index);
    }
    assert!(
        indices.windows(2).all(|w| w[0] < w[1]),
        "indices grow: {indices:?}"
    );
    assert_eq!(service_names(&store), names(0..5));
    assert_eq!(store.view(|s| s.applied_index), indices[4]);

    // Watchers see each applied entry once, in log order.
    for want in &indices {
        let applied = events.recv().await.expect("event");
        assert_eq!(applied.index, *want);
        assert_eq!(applied.actions.len(), 1);
    }

    // Many proposers at once: every one is answered with its own, distinct index.
    let proposals = (5..40).map(|i| {
        let store = store.clone();
        async move {
            store
                .propose(vec![create_service(&format!("svc-{i:03}"))])
                .await
        }
    });
    let mut concurrent: Vec<u64> = futures::future::join_all(proposals)
        .await
        .into_iter()
        .map(|r| r.expect("concurrent proposal applied"))
        .collect();
    concurrent.sort_unstable();
    concurrent.dedup();
    assert_eq!(concurrent.len(), 35);
    assert_eq!(service_names(&store), names(0..40));

    let status = handle.status();
    assert!(status.is_leader);
    assert_eq!(status.id, 1);
    assert_eq!(status.leader_id, 1);
    assert!(status.term >= 1);
    assert_eq!(status.applied, status.commit);
    assert_eq!(status.last_index, status.commit);
    assert!(status.applied >= *concurrent.last().expect("indices"));

    handle.shutdown().await.expect("clean shutdown");
    assert!(!handle.is_running());
    assert!(matches!(
        store.propose(vec![create_service("late")]).await,
        Err(StoreError::Stopped)
    ));
}

#[tokio::test]
async fn raft_restart_recovers_state_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last = {
        let (store, handle) = start(config(dir.path())).await;
        let mut last = 0;
        for i in 0..10 {
            last = store
                .propose(vec![create_service(&format!("svc-{i:03}"))])
                .await
                .expect("applied");
        }
        handle.shutdown().await.expect("clean shutdown");
        last
    };

    let (store, handle) = start(config(dir.path())).await;
    // Every entry came back exactly once: a second apply of a create would have been refused
    // and a missing one would be absent.
    assert_eq!(service_names(&store), names(0..10));
    let status = handle.status();
    assert!(
        status.applied > last,
        "the new term's entry follows the old log"
    );
    assert_eq!(status.snapshot_index, 0);

    let next = store
        .propose(vec![create_service("svc-010")])
        .await
        .expect("applied after restart");
    assert!(next > last);
    assert_eq!(service_names(&store), names(0..11));
    handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn raft_snapshots_and_compacts_then_recovers_from_snapshot_and_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.snapshot_interval = 10;
    {
        let (store, handle) = start(cfg.clone()).await;
        for i in 0..25 {
            store
                .propose(vec![create_service(&format!("svc-{i:03}"))])
                .await
                .expect("applied");
        }
        // Snapshots are written on their own thread: the last one lands a moment after its
        // entry is applied.
        let mut status = handle.status();
        for _ in 0..500 {
            if status.snapshot_index >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            status = handle.status();
        }
        assert!(
            status.snapshot_index >= 20,
            "a snapshot every 10 entries: {status:?}"
        );
        assert!(status.snapshot_index <= status.applied);
        handle.shutdown().await.expect("clean shutdown");
    }

    // On disk: the log starts right after the snapshot, which holds the state at its index.
    let snapshot_index = {
        let storage = RaftStorage::open_unlocked(dir.path(), 1).expect("storage reopens");
        let snapshot_index = storage.snapshot_index();
        assert!(snapshot_index >= 20);
        use ::raft::Storage as _;
        assert_eq!(
            storage.first_index().expect("first index"),
            snapshot_index + 1
        );
        assert!(storage.last_index().expect("last index") >= 26);
        snapshot_index
    };

    let (store, handle) = start(cfg).await;
    assert_eq!(service_names(&store), names(0..25));
    assert!(store.view(|s| s.applied_index) >= snapshot_index);
    assert!(handle.status().snapshot_index >= snapshot_index);
    store
        .propose(vec![create_service("svc-025")])
        .await
        .expect("applied after restart");
    assert_eq!(service_names(&store), names(0..26));
    handle.shutdown().await.expect("clean shutdown");

    // And once more, now that the restart may itself have snapshotted.
    let (store, handle) = start(config(dir.path())).await;
    assert_eq!(service_names(&store), names(0..26));
    handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn raft_rejected_proposal_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, handle) = start(config(dir.path())).await;
    let mut events = store.subscribe();

    let first = store
        .propose(vec![create_service("web")])
        .await
        .expect("first create applied");
    let before = store.view(|s| s.services.clone());

    // The second entry creates "api" and then a second "web": all or nothing.
    let mut dup = create_service("web");
    if let Some(Action::CreateService(s)) = dup.action.as_mut() {
        s.id = "id-web-2".into();
    }
    let err = store
        .propose(vec![create_service("api"), dup])
        .await
        .expect_err("duplicate name refused");
    assert!(matches!(err, StoreError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("web"), "{err}");
    assert_eq!(store.view(|s| s.services.clone()), before);

    // The refused entry is not broadcast; the next accepted one is.
    let next = store
        .propose(vec![create_service("api")])
        .await
        .expect("api applied");
    assert_eq!(events.recv().await.expect("event").index, first);
    assert_eq!(events.recv().await.expect("event").index, next);
    assert_eq!(
        service_names(&store),
        vec!["api".to_string(), "web".to_string()]
    );
    handle.shutdown().await.expect("clean shutdown");

    // The refusal replays identically after a restart.
    let (store, handle) = start(config(dir.path())).await;
    assert_eq!(
        service_names(&store),
        vec!["api".to_string(), "web".to_string()]
    );
    handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn raft_refuses_a_corrupt_data_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).expect("write garbage");

    let err = start_err(config(dir.path()), "corrupt data refused").await;
    let msg = err.to_string();
    assert!(matches!(err, RaftError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("move it away"), "{msg}");
    // Nothing was overwritten: the operator still has the file to inspect.
    assert_eq!(
        std::fs::read(&path).expect("file kept"),
        vec![0x5a; 64 * 1024]
    );
}

#[tokio::test]
async fn raft_refuses_a_damaged_data_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, handle) = start(config(dir.path())).await;
        for i in 0..5 {
            store
                .propose(vec![create_service(&format!("svc-{i:03}"))])
                .await
                .expect("applied");
        }
        handle.shutdown().await.expect("clean shutdown");
    }
    // Keep redb's header page (so the file still looks like a database) and flip every byte
    // after it, where the pages holding the log live.
    let path = dir.path().join("raft.redb");
    let mut bytes = std::fs::read(&path).expect("read");
    for b in bytes.iter_mut().skip(4096) {
        *b ^= 0xa5;
    }
    std::fs::write(&path, &bytes).expect("damage");

    let err = start_err(config(dir.path()), "damaged data refused").await;
    let msg = err.to_string();
    assert!(matches!(err, RaftError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[tokio::test]
async fn raft_follower_without_quorum_answers_not_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A two-voter configuration whose other voter never answers: this node cannot win.
    {
        let mut storage = RaftStorage::open_unlocked(dir.path(), 1).expect("open");
        storage
            .bootstrap(::raft::eraftpb::ConfState {
                voters: vec![1, 2],
                ..Default::default()
            })
            .expect("bootstrap");
    }
    let (store, handle) = raft::start(config(dir.path())).await.expect("starts");
    assert!(matches!(
        handle.wait_leader(Duration::from_millis(500)).await,
        Err(RaftError::NoLeader(_))
    ));
    let err = store
        .propose(vec![create_service("web")])
        .await
        .expect_err("not leader");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    assert!(service_names(&store).is_empty());
    handle.shutdown().await.expect("clean shutdown");
    assert!(matches!(
        handle.wait_leader(Duration::from_millis(100)).await,
        Err(RaftError::Stopped)
    ));
}

#[tokio::test]
async fn raft_second_start_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, handle) = start(config(dir.path())).await;
    let err = start_err(config(dir.path()), "data dir in use").await;
    assert!(matches!(err, RaftError::InUse { .. }), "{err}");
    handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn raft_refuses_invalid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = start_err(RaftConfig::new(dir.path(), 0), "raft id 0").await;
    assert!(matches!(err, RaftError::Config(_)), "{err}");
}
