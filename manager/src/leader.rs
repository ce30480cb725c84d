//! Reaching the Raft leader from any manager: what only the leader may do (writes, the
//! dispatcher, signing for new nodes) is forwarded to it, so any manager answers any command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;
use tonic::Status;

use crate::raft::grpc::ChannelFactory;
use crate::raft::RaftHandle;

pub const NO_LEADER: &str = "no quorum: this manager knows of no elected leader; are a majority \
     of the managers running and reachable? (`shoal node ls` on another manager shows which \
     are unreachable)";

#[derive(Clone)]
pub struct LeaderLink {
    raft: RaftHandle,
    channels: Arc<dyn ChannelFactory>,
    /// One long-lived channel per leader address: forwarding must not pay a TLS handshake per
    /// call.
    cache: Arc<Mutex<HashMap<String, Channel>>>,
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
    pub fn forward(&self) -> Result<Option<Channel>, Status> {
        let status = self.raft.status();
        if status.is_leader {
            return Ok(None);
        }
        let addr = status
            .leader_addr()
            .ok_or_else(|| Status::unavailable(NO_LEADER))?
            .to_string();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = cache.get(&addr) {
            return Ok(Some(ch.clone()));
        }
        let ch = self
            .channels
            .channel(&addr)
            .map_err(|e| Status::unavailable(format!("cannot reach the leader at {addr}: {e}")))?;
        cache.insert(addr, ch.clone());
        Ok(Some(ch))
    }
}
