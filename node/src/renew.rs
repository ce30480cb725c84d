//! Keeping the node's certificate fresh: renewed before it expires (at a point between half
//! and four fifths of its life), and at once when the leader says the node's role changed —
//! the new certificate carries the new role, and the node then restarts its swarm services in
//! that role (a promoted node joins the Raft cluster, a demoted one leaves it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use shoal_manager::raft::RaftHandle;
use shoal_proto::{membership_client::MembershipClient, IssueCertificateRequest};
use shoal_tls::{LiveCert, NodeKey, Role};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::{leader_search, net, Daemon};

/// One renewal; returns the role of the new certificate.
async fn renew_once(
    daemon: &Daemon,
    cert: &Arc<LiveCert>,
    candidates: Vec<String>,
) -> anyhow::Result<Role> {
    let config = Arc::new(shoal_tls::client_config_live(cert.clone())?);
    let key = NodeKey::generate()?;
    let req = IssueCertificateRequest {
        csr_pem: key.csr_pem()?,
        ..Default::default()
    };
    let resp = leader_search::call_leader(candidates, &config, |channel| {
        let req = req.clone();
        async move { MembershipClient::new(channel).issue_certificate(req).await }
    })
    .await
    .map_err(|reasons| anyhow::anyhow!("no manager renewed the certificate: {reasons}"))?
    .into_inner();
    let current = cert.node_cert();
    let fresh = key.into_node_cert(resp.cert_pem, resp.ca_pem)?;
    fresh.save(&net::certs_dir(&daemon.args.data_dir))?;
    let role = fresh.role();
    cert.replace(fresh)?;
    info!(node = %current.node_id(), role = role.as_str(), "certificate renewed");
    Ok(role)
}

/// Runs until `stop` flips, or until a renewal brings a certificate for another role: then it
/// returns that role, for the caller to restart the node's swarm services in it (which ends
/// this loop's task too, so the caller must do it from another task).
pub async fn run(
    daemon: Arc<Daemon>,
    cert: Arc<LiveCert>,
    local: Option<RaftHandle>,
    managers: Arc<Mutex<Vec<String>>>,
    role_changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> Option<Role> {
    let started_as = cert.node_cert().role();
    loop {
        let due = cert.node_cert().renew_at();
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = stop.changed() => return None,
            _ = role_changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        let candidates = leader_search::candidates(local.as_ref(), &managers);
        match renew_once(&daemon, &cert, candidates).await {
            Ok(role) if role != started_as => return Some(role),
            Ok(_) => {}
            Err(e) => {
                if cert.node_cert().is_expired(SystemTime::now()) {
                    warn!(error = %e, "the node certificate has expired; leave the swarm and join it again");
                } else {
                    warn!(error = %e, "certificate renewal failed; retrying");
                }
                tokio::select! {
                    _ = stop.changed() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}
