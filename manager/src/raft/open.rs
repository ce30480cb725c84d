//! Opening the Raft log and starting its loop: check the configuration, open the data file,
//! recover from lost quorum when asked (`recovery.rs`), give a new log its first configuration,
//! restore the store from the latest snapshot, and start the loop (`raft_loop.rs`) on its own
//! thread.

use std::panic::AssertUnwindSafe;

use raft::eraftpb::ConfState;
use raft::{RawNode, Storage as _};
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use super::handle::RaftHandle;
use super::instruments::RaftInstruments;
use super::logger::raft_logger;
use super::members::{self, Members};
use super::raft_loop::RaftLoop;
use super::recovery;
use super::status::RaftStatus;
use super::storage::{panic_message, RaftStorage, DATA_FILE};
use super::transport::{NoPeers, PeerReports, RaftTransport};
use super::{RaftConfig, RaftError};
use crate::store::{new_store, Store, StoreState};

/// Starts the Raft log of a manager with no peers (see [`start_with_transport`]).
pub async fn start(cfg: RaftConfig) -> Result<(Store, RaftHandle), RaftError> {
    start_with_transport(cfg, Box::new(NoPeers::default())).await
}

/// Opens the log in `cfg.data_dir` (a new one becomes a single-voter cluster of this node),
/// restores the store from the latest snapshot, and starts the Raft loop. Entries committed
/// after the snapshot are applied again by the loop as it starts, before it answers any
/// proposal; a single voter also elects itself right away.
pub async fn start_with_transport(
    cfg: RaftConfig,
    transport: Box<dyn RaftTransport>,
) -> Result<(Store, RaftHandle), RaftError> {
    // Opening reads and checks the whole data file: keep it off the caller's runtime workers.
    tokio::task::spawn_blocking(move || start_blocking(cfg, transport))
        .await
        .map_err(|e| RaftError::Failed {
            reason: format!("opening the raft log did not finish: {e}"),
        })?
}

/// [`start_with_transport`], on a thread that may block.
fn start_blocking(
    cfg: RaftConfig,
    transport: Box<dyn RaftTransport>,
) -> Result<(Store, RaftHandle), RaftError> {
    let storage = open_storage(&cfg)?;
    let (initial, applied) = restored_state(&storage)?;
    let sole_voter = {
        let cs = storage.conf_state();
        cs.voters == [cfg.raft_id] && cs.voters_outgoing.is_empty()
    };
    info!(
        raft_id = cfg.raft_id,
        snapshot_index = applied,
        last_index = storage.last_index().unwrap_or(applied),
        commit = storage.hard_state().commit,
        "raft log opened"
    );

    let raft_cfg = raft::Config {
        id: cfg.raft_id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        // The store holds exactly the snapshot: raft-rs must hand back every committed entry
        // after it, and none before it.
        applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let node = RawNode::new(&raft_cfg, storage, &raft_logger(cfg.raft_id))?;

    let (store, applier, proposals) = new_store(initial);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let mut transport = transport;
    transport.attach(PeerReports::new(&control_tx));
    let (status_tx, status_rx) = watch::channel(RaftStatus {
        id: cfg.raft_id,
        applied,
        ..Default::default()
    });
    let (exit_tx, exit_rx) = watch::channel(None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(RaftError::Spawn)?;

    let instruments = RaftInstruments::default();
    instruments
        .snapshot_bytes
        .set(node.store().snapshot_ref().data.len() as i64);
    let raft_loop = RaftLoop::new(
        node,
        applier,
        applied,
        transport,
        &cfg,
        status_tx,
        instruments.clone(),
    );
    let tick = cfg.tick;
    std::thread::Builder::new()
        .name(format!("shoal-raft-{}", cfg.raft_id))
        .spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                runtime.block_on(raft_loop.run(proposals, control_rx, tick, sole_voter))
            }));
            // By now the RawNode, and with it the data file, is closed: whoever waits on the
            // exit report may reopen the directory.
            let report = match outcome {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    error!(error = %e, "raft loop stopped");
                    Err(e.to_string())
                }
                Err(panic) => {
                    let reason = panic_message(panic.as_ref());
                    error!(reason, "raft loop panicked");
                    Err(format!("raft loop panicked: {reason}"))
                }
            };
            exit_tx.send_replace(Some(report));
        })
        .map_err(RaftError::Spawn)?;

    Ok((
        store,
        RaftHandle {
            id: cfg.raft_id,
            control: control_tx,
            status: status_rx,
            exit: exit_rx,
            election_timeout: cfg.election_timeout(),
            catch_up_timeout: cfg.catch_up_timeout,
            instruments,
        },
    ))
}

/// Opens the log in `cfg.data_dir`, recovers it when `cfg.force_new_cluster` asks to, and
/// makes a new one a single-voter cluster of this node (unless it is to join one).
fn open_storage(cfg: &RaftConfig) -> Result<RaftStorage, RaftError> {
    cfg.validate()?;
    if cfg.force_new_cluster && !cfg.data_dir.join(DATA_FILE).exists() {
        // Refused before opening, which would create the directory and an empty data file.
        return Err(RaftError::NothingToRecover {
            path: cfg.data_dir.join(DATA_FILE),
        });
    }
    let mut storage = match &cfg.data_key {
        Some(key) => RaftStorage::open(&cfg.data_dir, cfg.raft_id, key.clone())?,
        None => RaftStorage::open_unlocked(&cfg.data_dir, cfg.raft_id)?,
    };
    if cfg.force_new_cluster {
        // Refuses an uninitialized log, which the branch below would otherwise bootstrap.
        recovery::force_new_cluster(&mut storage, cfg)?;
    }
    if !storage.is_initialized() {
        if cfg.join {
            info!(
                raft_id = cfg.raft_id,
                path = %storage.path().display(),
                "new raft node waiting to join a cluster: it stays empty until the leader sends a snapshot"
            );
        } else {
            storage.bootstrap(ConfState {
                voters: vec![cfg.raft_id],
                ..Default::default()
            })?;
            if !cfg.addr.is_empty() {
                storage.set_members(Members::from([(cfg.raft_id, cfg.addr.clone())]))?;
            }
            info!(raft_id = cfg.raft_id, path = %storage.path().display(), "new single-manager raft cluster");
        }
    }
    Ok(storage)
}

/// The store as of the latest snapshot, and the index it was taken at (0 without one).
fn restored_state(storage: &RaftStorage) -> Result<(StoreState, u64), RaftError> {
    let snapshot = storage.snapshot_ref();
    let applied = snapshot.get_metadata().index;
    let initial = if applied > 0 {
        let (snapshot, _) =
            members::decode_snapshot_data(&snapshot.data).map_err(|reason| RaftError::Corrupt {
                path: storage.path().to_path_buf(),
                reason: format!("the snapshot at {applied} cannot be decoded: {reason}"),
            })?;
        StoreState::from_snapshot(snapshot, applied)
    } else {
        StoreState::default()
    };
    Ok((initial, applied))
}
