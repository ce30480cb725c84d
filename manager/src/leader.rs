//! Reaching the Raft leader from any manager: what only the leader may do (writes, the
//! dispatcher, signing for new nodes) is forwarded to it, so any manager answers any command.
//!
//! A forwarded call must not outlive the leadership it was sent to: when the leader is cut off
//! the network, its HTTP/2 connection does not break (no packet says so), and a call on it
//! would wait forever. So every forwarded call ([`LeaderChannel`]) ends, with UNAVAILABLE and a
//! message saying why, [`MOVED_GRACE`] after this manager sees the leadership change (a new
//! leader, or none) unless the old leader answered by then, or after [`FORWARD_TIMEOUT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service, StdError};
use tonic::transport::Channel;
use tonic::Status;

use crate::raft::grpc::ChannelFactory;
use crate::raft::{RaftHandle, RaftStatus, PROPOSE_TIMEOUT};

pub const NO_LEADER: &str = "no quorum: this manager knows of no elected leader; are a majority \
     of the managers running and reachable? (`shoal node ls` on another manager shows which \
     are unreachable)";

/// How long a forwarded call may take: longer than the leader itself waits for a proposal to
/// commit, so that the leader's own "no quorum" answer comes through.
pub const FORWARD_TIMEOUT: Duration = PROPOSE_TIMEOUT.saturating_add(Duration::from_secs(5));

/// How long a forwarded call may still take once leadership moved away from where it went.
pub const MOVED_GRACE: Duration = Duration::from_secs(3);

type ChannelCache = Arc<Mutex<HashMap<String, Channel>>>;

#[derive(Clone)]
pub struct LeaderLink {
    raft: RaftHandle,
    channels: Arc<dyn ChannelFactory>,
    /// One long-lived channel per leader address: forwarding must not pay a TLS handshake per
    /// call.
    cache: ChannelCache,
}

impl LeaderLink {
    pub fn new(raft: RaftHandle, channels: Arc<dyn ChannelFactory>) -> Self {
        LeaderLink {
            raft,
            channels,
            cache: Arc::default(),
        }
    }

    pub fn raft(&self) -> &RaftHandle {
        &self.raft
    }

    /// `None` when this manager leads (serve locally), else a channel to the leader.
    pub fn forward(&self) -> Result<Option<LeaderChannel>, Status> {
        let status = self.raft.status();
        if status.is_leader {
            return Ok(None);
        }
        let addr = status
            .leader_addr()
            .ok_or_else(|| Status::unavailable(NO_LEADER))?
            .to_string();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match cache.get(&addr) {
            Some(ch) => ch.clone(),
            None => {
                let ch = self.channels.channel(&addr).map_err(|e| {
                    Status::unavailable(format!("cannot reach the leader at {addr}: {e}"))
                })?;
                cache.insert(addr.clone(), ch.clone());
                ch
            }
        };
        Ok(Some(LeaderChannel {
            channel,
            addr,
            leader_id: status.leader_id,
            status: self.raft.subscribe_status(),
            cache: self.cache.clone(),
        }))
    }
}

/// A channel to the leader whose calls end when that leadership does (see the module docs).
/// Use it as a tonic client's transport: `ControlClient::new(ch)`.
#[derive(Clone)]
pub struct LeaderChannel {
    channel: Channel,
    addr: String,
    /// The leader the call goes to, as Raft numbers it.
    leader_id: u64,
    status: tokio::sync::watch::Receiver<RaftStatus>,
    cache: ChannelCache,
}

/// Resolves once `status` names a leader other than `leader_id` (or none); returns the new one.
async fn leadership_moved(
    mut status: tokio::sync::watch::Receiver<RaftStatus>,
    leader_id: u64,
) -> u64 {
    loop {
        let now = status.borrow_and_update().leader_id;
        if now != leader_id {
            return now;
        }
        if status.changed().await.is_err() {
            // The Raft loop stopped: nothing will change any more; the timeout decides.
            std::future::pending::<()>().await;
        }
    }
}

impl Service<http::Request<Body>> for LeaderChannel {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let call = self.channel.call(request);
        let moved = leadership_moved(self.status.clone(), self.leader_id);
        let addr = self.addr.clone();
        let cache = self.cache.clone();
        Box::pin(async move {
            let mut call = std::pin::pin!(call);
            let status = tokio::select! {
                response = &mut call => return response.map_err(Into::into),
                new_leader = moved => {
                    // The old leader may still answer: it may be the one that handed over
                    // leadership (a leader demoting itself forwards the demotion to its
                    // successor), or the new leader may be this very manager.
                    if let Ok(response) = tokio::time::timeout(MOVED_GRACE, &mut call).await {
                        return response.map_err(Into::into);
                    }
                    if new_leader == 0 {
                        Status::unavailable(format!(
                            "no quorum: this manager lost contact with the leader at {addr} \
                             while the call was forwarded to it, and knows of no leader now; \
                             the call may or may not have taken effect. Are a majority of \
                             the managers running and reachable? (`shoal node ls` on another \
                             manager shows which are unreachable)"
                        ))
                    } else {
                        Status::unavailable(format!(
                            "the leader at {addr} is not reachable: leadership moved away from \
                             it while the call was forwarded to it, and it did not answer; the \
                             call may or may not have taken effect: run the command again"
                        ))
                    }
                }
                _ = tokio::time::sleep(FORWARD_TIMEOUT) => {
                    Status::unavailable(format!(
                        "the leader at {addr} is not reachable: it did not answer within \
                         {FORWARD_TIMEOUT:?}; the call may or may not have taken effect. Are a \
                         majority of the managers running and reachable? (`shoal node ls` on \
                         another manager shows which are unreachable)"
                    ))
                }
            };
            // The connection may be dead without knowing it: dial afresh next time.
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&addr);
            Err(Box::new(status) as StdError)
        })
    }
}
