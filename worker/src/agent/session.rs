//! The session with a manager's dispatcher (swarmkit's session): one at a time
//! (`Dispatcher.Session`). Its first message is the complete assignment set the worker module
//! reconciles; the next ones say only which tasks were added, changed or removed since. Heartbeats keep it alive; when either breaks, the agent reconnects with backoff.
//! Tasks keep running meanwhile and their reports wait for the next session, which this module
//! publishes to the reporter.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::{HeartbeatRequest, SessionRequest};
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::config::{AgentConfig, AgentError, RPC_TIMEOUT};
use super::reporter::SessionHandle;
use super::worker::Worker;

/// Heartbeat period until the dispatcher says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// How the agent reaches a dispatcher, asked again after every broken session.
pub trait Connect: Send + 'static {
    fn connect(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + '_>>;
}

/// A dispatcher served on a unix socket at this path.
impl Connect for PathBuf {
    fn connect(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + '_>>
    {
        let path = self.clone();
        Box::pin(async move {
            let err = |reason: String| AgentError::Connect {
                target: path.display().to_string(),
                reason,
            };
            let channel = crate::containerd::connect_unix(&path)
                .await
                .map_err(|e| err(format!("{e}: {}", source_chain(&e))))?;
            Ok(DispatcherClient::new(channel))
        })
    }
}

/// An already-made client (its channel reconnects by itself).
impl Connect for DispatcherClient<Channel> {
    fn connect(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + '_>>
    {
        let client = self.clone();
        Box::pin(async move { Ok(client) })
    }
}

/// Any closure making a client, e.g. one that picks the current leader's address.
pub struct ConnectFn<F>(pub F);

impl<F, Fut> Connect for ConnectFn<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + 'static,
{
    fn connect(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<DispatcherClient<Channel>, AgentError>> + Send + '_>>
    {
        Box::pin((self.0)())
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// Holds sessions, one after the other, until `shutdown` turns true (or its sender is
/// dropped). The last session's handle stays published for the reporter's final flush.
pub(super) async fn run_sessions(
    cfg: &AgentConfig,
    dispatcher: &mut impl Connect,
    worker: &mut Worker,
    session_tx: &watch::Sender<Option<SessionHandle>>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let outcome = tokio::select! {
            res = session(cfg, dispatcher, worker, session_tx, &mut backoff) => res,
            _ = wait_shutdown(shutdown) => break,
        };
        session_tx.send_replace(None);
        if let Err(reason) = outcome {
            warn!(%reason, "dispatcher session ended; reconnecting");
        }
        worker.reap_cleanups();
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = wait_shutdown(shutdown) => break,
        }
    }
}

async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// One session: connect, open, then apply assignment sets and heartbeat until it breaks.
/// Returns why it ended. The session handle stays published while the agent stops, for the
/// final flush.
async fn session(
    cfg: &AgentConfig,
    dispatcher: &mut impl Connect,
    worker: &mut Worker,
    session_tx: &watch::Sender<Option<SessionHandle>>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let mut client = dispatcher.connect().await.map_err(|e| e.to_string())?;
    let mut stream = client
        .session(SessionRequest {
            node_id: cfg.node_id.clone(),
            description: Some(cfg.description.clone()),
            addr: cfg.addr.clone(),
            incremental_assignments: true,
        })
        .await
        .map_err(|s| format!("Session failed: {}", s.message()))?
        .into_inner();
    let first = match stream.message().await {
        Ok(Some(m)) => m,
        Ok(None) => return Err("the dispatcher closed the session at once".into()),
        Err(s) => return Err(format!("session stream failed: {}", s.message())),
    };
    let session_id = first.session_id.clone();
    info!(node = %cfg.node_id, session = %session_id, tasks = first.tasks.len(), "dispatcher session open");
    backoff.reset();
    session_tx.send_replace(Some(SessionHandle {
        client: client.clone(),
        session_id: session_id.clone(),
    }));

    let mut period = match first.heartbeat_period_ms {
        0 => DEFAULT_HEARTBEAT,
        ms => Duration::from_millis(ms),
    };
    if let Some(observe) = &cfg.on_session_message {
        observe(&first);
    }
    worker.set_peers(first.networks).await;
    worker.set_dependencies(first.secrets, first.configs);
    worker.reconcile(first.tasks);
    let mut next_beat = Instant::now() + period;
    loop {
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(m)) => {
                    debug!(tasks = m.tasks.len(), "assignment set");
                    if m.heartbeat_period_ms > 0 {
                        period = Duration::from_millis(m.heartbeat_period_ms);
                    }
                    if let Some(observe) = &cfg.on_session_message {
                        observe(&m);
                    }
                    // The dispatcher leaves out tables that did not change.
                    if !m.peers_unchanged {
                        worker.set_peers(m.networks).await;
                    }
                    worker.set_dependencies(m.secrets, m.configs);
                    if m.incremental {
                        worker.apply_changes(m.tasks, m.removed_task_ids);
                    } else {
                        worker.reconcile(m.tasks);
                    }
                    worker.reap_cleanups();
                }
                Ok(None) => return Err("the dispatcher closed the session".into()),
                Err(s) => return Err(format!("session stream failed: {}", s.message())),
            },
            _ = tokio::time::sleep_until(next_beat.into()) => {
                let req = HeartbeatRequest {
                    node_id: cfg.node_id.clone(),
                    session_id: session_id.clone(),
                };
                match tokio::time::timeout(RPC_TIMEOUT.min(period * 2), client.heartbeat(req)).await {
                    Ok(Ok(resp)) => {
                        let p = resp.into_inner().period_ms;
                        if p > 0 {
                            period = Duration::from_millis(p);
                        }
                    }
                    Ok(Err(s)) => return Err(format!("heartbeat failed: {}", s.message())),
                    Err(_) => return Err("heartbeat timed out".into()),
                }
                next_beat = Instant::now() + period;
            }
        }
    }
}
