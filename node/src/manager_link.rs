//! How this node reaches the managers' services: the private dispatcher socket a manager
//! serves its own agent on, the agent's connector to whichever manager leads, and a new
//! manager's request to join the Raft configuration.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use shoal_manager::raft::RaftHandle;
use shoal_manager::Manager;
use shoal_proto::{
    dispatcher_client::DispatcherClient, dispatcher_server::DispatcherServer,
    membership_client::MembershipClient, JoinRaftRequest,
};
use shoal_tls::LiveCert;
use shoal_worker::agent::{AgentError, ConnectFn};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::warn;

use super::identity::Membership;
use crate::{leader_search, Daemon};

/// How long a joining manager waits to become a Raft voter.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves the local manager's dispatcher on the private unix socket (0600) this node's own
/// agent uses while the local manager leads.
pub(crate) fn serve_local_dispatcher(
    daemon: &Daemon,
    m: &Manager,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let sock = daemon.dispatcher_socket();
    let _ = std::fs::remove_file(&sock);
    let listener = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("cannot listen on {}", sock.display()))?;
    // Only this daemon's own agent speaks on it.
    crate::access::private_socket(&sock)?;
    let server = tonic::transport::Server::builder()
        .layer(daemon.metrics.api_layer("dispatcher"))
        .add_service(
            DispatcherServer::new(m.dispatcher())
                .max_decoding_message_size(shoal_proto::MAX_REQUEST_BYTES),
        );
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = server
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await
        {
            warn!(error = %e, "local dispatcher server failed");
        }
    }))
}

/// Asks the leader (found through the managers the join named) to add this manager to the Raft
/// configuration, then waits to be a voter. Only the leader is sure to know this node already:
/// a follower may not have applied the entry that made it a member yet, and says so with a
/// leader hint.
pub(crate) async fn join_raft(
    membership: &Membership,
    node_id: &str,
    m: &Manager,
    cert: &Arc<LiveCert>,
) -> anyhow::Result<()> {
    let config = Arc::new(shoal_tls::client_config_live(cert.clone())?);
    let req = JoinRaftRequest {
        node_id: node_id.to_string(),
        addr: membership.advertise_addr.clone(),
        raft_id: membership.raft_id,
    };
    let resp = leader_search::call_leader(membership.managers.clone(), &config, |ch| {
        let req = req.clone();
        async move { MembershipClient::new(ch).join_raft(req).await }
    })
    .await
    .map_err(|reasons| anyhow::anyhow!("cannot join the managers' Raft cluster: {reasons}"))?;
    for member in resp.into_inner().members {
        m.transport().add_peer(member.raft_id, &member.addr);
    }
    let mut status = m.raft().subscribe_status();
    let me = membership.raft_id;
    tokio::time::timeout(JOIN_TIMEOUT, status.wait_for(|s| s.voters.contains(&me)))
        .await
        .context("timed out waiting to become a Raft voter")?
        .context("the Raft log stopped while joining")?;
    Ok(())
}

/// How the agent finds the dispatcher: the local one while this manager leads, else the
/// leader, found by asking the known managers (a follower names the leader in its refusal).
pub(crate) fn dispatcher_connector(
    daemon: &Arc<Daemon>,
    node_id: String,
    local: Option<RaftHandle>,
    managers: Arc<Mutex<Vec<String>>>,
    cert: Arc<LiveCert>,
) -> anyhow::Result<impl shoal_worker::agent::Connect> {
    let sock = daemon.dispatcher_socket();
    let config = Arc::new(shoal_tls::client_config_live(cert)?);
    Ok(ConnectFn(move || {
        let (sock, node_id, local, managers, config) = (
            sock.clone(),
            node_id.clone(),
            local.clone(),
            managers.clone(),
            config.clone(),
        );
        async move {
            if local.as_ref().is_some_and(|r| r.status().is_leader) {
                let ch = shoal_worker::containerd::connect_unix(&sock)
                    .await
                    .map_err(|e| AgentError::Connect {
                        target: sock.display().to_string(),
                        reason: e.to_string(),
                    })?;
                return Ok(DispatcherClient::new(ch));
            }
            let candidates = leader_search::candidates(local.as_ref(), &managers);
            let found = leader_search::find_dispatcher(candidates, &config, node_id).await;
            found.map_err(|reasons| AgentError::Connect {
                target: "the swarm's managers".into(),
                reason: reasons,
            })
        }
    }))
}
