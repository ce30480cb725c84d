//! Keeping the node's certificate fresh: renewed before it expires (at a point between half
//! and four fifths of its life), and at once when the leader says the node's role changed —
//! the new certificate carries the new role, and the node then restarts its swarm services in
//! that role (a promoted node joins the Raft cluster, a demoted one leaves it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use shoal_manager::dispatcher::NOT_LEADER;
use shoal_manager::raft::RaftHandle;
use shoal_proto::{membership_client::MembershipClient, IssueCertificateRequest};
use shoal_tls::{LiveCert, NodeKey, Role};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use super::{net, Daemon};

/// Where to ask: the leader as the local Raft knows it, then every manager heard of.
pub fn candidates(local: Option<&RaftHandle>, managers: &Mutex<Vec<String>>) -> Vec<String> {
    let mut c: Vec<String> = local
        .and_then(|r| r.status().leader_addr().map(str::to_string))
        .into_iter()
        .collect();
    for m in managers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if !c.contains(m) {
            c.push(m.clone());
        }
    }
    c
}

/// A follower's refusal names the leader: "…; the leader is ADDR".
pub fn leader_named_in(message: &str) -> Option<&str> {
    if !message.starts_with(NOT_LEADER) {
        return None;
    }
    message
        .rsplit("the leader is ")
        .next()
        .filter(|a| a.contains(':'))
}

/// One renewal; returns the role of the new certificate.
async fn renew_once(
    daemon: &Daemon,
    cert: &Arc<LiveCert>,
    mut candidates: Vec<String>,
) -> anyhow::Result<Role> {
    let config = Arc::new(shoal_tls::client_config_live(cert.clone())?);
    let key = NodeKey::generate()?;
    let csr_pem = key.csr_pem()?;
    let mut reasons = Vec::new();
    let mut i = 0;
    while i < candidates.len() && i < 16 {
        let addr = candidates[i].clone();
        i += 1;
        let channel =
            match shoal_tls::connect(&addr, config.clone(), Role::Manager.server_name()).await {
                Ok(ch) => ch,
                Err(e) => {
                    reasons.push(format!("{addr}: {e}"));
                    continue;
                }
            };
        let req = IssueCertificateRequest {
            csr_pem: csr_pem.clone(),
            ..Default::default()
        };
        match MembershipClient::new(channel).issue_certificate(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                let current = cert.node_cert();
                let fresh = key.into_node_cert(resp.cert_pem, resp.ca_pem)?;
                fresh.save(&net::certs_dir(&daemon.args.data_dir))?;
                let role = fresh.role();
                cert.replace(fresh)?;
                info!(node = %current.node_id(), role = role.as_str(), "certificate renewed");
                return Ok(role);
            }
            Err(s) => {
                if let Some(leader) = leader_named_in(s.message()) {
                    if !candidates.iter().any(|c| c == leader) {
                        candidates.insert(i, leader.to_string());
                    }
                }
                reasons.push(format!("{addr}: {}", s.message()));
            }
        }
    }
    anyhow::bail!("no manager renewed the certificate: {}", reasons.join("; "))
}

/// Runs until `stop` flips; see the module documentation.
pub async fn run(
    daemon: Arc<Daemon>,
    cert: Arc<LiveCert>,
    local: Option<RaftHandle>,
    managers: Arc<Mutex<Vec<String>>>,
    role_changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let started_as = cert.node_cert().role();
    loop {
        let due = cert.node_cert().renew_at();
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = stop.changed() => return,
            _ = role_changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        match renew_once(&daemon, &cert, candidates(local.as_ref(), &managers)).await {
            Ok(role) if role != started_as => {
                // Restarting the swarm services stops this task too: do it from outside.
                let daemon = daemon.clone();
                tokio::spawn(async move {
                    if let Err(e) = super::swarm::switch_role(&daemon, role).await {
                        warn!(error = %e, "could not switch to the new role");
                    }
                });
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if cert.node_cert().is_expired(SystemTime::now()) {
                    warn!(error = %e, "the node certificate has expired; leave the swarm and join it again");
                } else {
                    warn!(error = %e, "certificate renewal failed; retrying");
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_is_read_from_a_followers_refusal() {
        let msg = format!("{NOT_LEADER}; the leader is 198.18.0.11:2377");
        assert_eq!(leader_named_in(&msg), Some("198.18.0.11:2377"));
        let unknown = format!("{NOT_LEADER}; the leader is not known yet");
        assert_eq!(leader_named_in(&unknown), None);
        assert_eq!(leader_named_in("some other error"), None);
    }
}
