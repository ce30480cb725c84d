//! Finding the leader among the managers. Dispatcher sessions and certificate renewals are
//! served by the leader only, so both the agent's connector and the renewal loop ask the
//! managers they know in turn; a follower's refusal names the leader (a structured hint, see
//! `shoal_proto::leader_hint`), who is asked next.

use std::future::Future;
use std::sync::{Arc, Mutex};

use shoal_manager::raft::RaftHandle;
use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::leader_hint::leader_hint;
use shoal_proto::HeartbeatRequest;
use shoal_tls::{ClientConfig, Role};
use tonic::transport::Channel;
use tonic::Status;

/// At most this many calls per search: followers may name each other while an election settles,
/// and a search must end.
const MAX_CALLS: usize = 16;

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

/// Makes `call` on the candidates in turn, over mutual TLS as a client of `config`, until one
/// answers. A refusal naming the leader puts the leader next in line. When none answers, the
/// error lists every candidate's reason.
pub async fn call_leader<T, F, Fut>(
    mut candidates: Vec<String>,
    config: &Arc<ClientConfig>,
    mut call: F,
) -> Result<T, String>
where
    F: FnMut(Channel) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut reasons = Vec::new();
    let mut i = 0;
    while i < candidates.len() && i < MAX_CALLS {
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
        match call(channel).await {
            Ok(answer) => return Ok(answer),
            Err(s) => {
                if let Some(Some(leader)) = leader_hint(&s) {
                    if !candidates.iter().any(|c| c == leader) {
                        candidates.insert(i, leader.to_string());
                    }
                }
                reasons.push(format!("{addr}: {}", s.message()));
            }
        }
    }
    Err(reasons.join("; "))
}

/// A dispatcher client on the leader, found among `candidates`: a heartbeat without a session
/// is the probe (the leader says "unknown session", a follower refuses and names the leader).
pub async fn find_dispatcher(
    candidates: Vec<String>,
    config: &Arc<ClientConfig>,
    node_id: String,
) -> Result<DispatcherClient<Channel>, String> {
    let probe = HeartbeatRequest {
        node_id,
        session_id: String::new(),
    };
    call_leader(candidates, config, |channel| {
        let probe = probe.clone();
        async move {
            let mut client = DispatcherClient::new(channel);
            match client.heartbeat(probe).await {
                Ok(_) => Ok(client),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(client),
                Err(s) => Err(s),
            }
        }
    })
    .await
}
