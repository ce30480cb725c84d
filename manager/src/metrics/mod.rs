//! Prometheus metrics of one daemon: [`NodeMetrics`] is its registry, served on `/metrics` by
//! `shoal daemon --metrics-addr` in the OpenMetrics text format (or Prometheus' 0.0.4 text
//! format to a client that does not ask for OpenMetrics, such as `curl | promtool`).
//!
//! Every daemon exports its API traffic (`shoal_api_*`, a tower layer on its gRPC servers,
//! [`ApiLayer`]), its process (`process_*`) and `shoal_build_info`. A daemon that runs a
//! manager also exports, while the manager runs ([`NodeMetrics::attach_manager`]):
//!
//! * Raft (`shoal_raft_*`): term, leadership, indexes, membership, leader changes, proposal
//!   and apply latency, snapshot size. Every manager exports its own view.
//! * The cluster (`shoal_nodes`, `shoal_node_info`, `shoal_services`, `shoal_tasks`,
//!   `shoal_service_replicas_*`, `shoal_scheduler_pending_tasks`): computed from the store at
//!   scrape time, never kept by bookkeeping, so they cannot drift from the state. Every manager
//!   holds a replica of the store and exports it; aggregate over managers with `max`.
//! * The leader's roles: scheduling latency (task created → assigned), dispatcher sessions and
//!   heartbeat failures.
//! * Task resource usage (`shoal_task_*`, per task; `shoal_service_*` usage, per service), from
//!   the [`UsageStore`] the workers' reports fill. Only the leader has it, so only the leader
//!   exports these series.
//!
//! Names and units follow Prometheus' conventions: counters end in `_total`, durations are
//! `_seconds`, sizes `_bytes`; CPU amounts are `_cores` (1 = one CPU).

mod api;
mod autoscale;
mod cluster;
mod encode;
mod process;
mod raft;
mod usage;
mod watch;

use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::dispatcher::Dispatcher;
use crate::raft::RaftHandle;
use crate::roles::Manager;
use crate::store::Store;
use crate::usage::UsageStore;

/// Owned by the Raft loop, which updates them; re-exported where it always was.
pub use crate::raft::RaftInstruments;
pub use api::{ApiLayer, ApiService};
pub use watch::RoleInstruments;

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, what Prometheus asks for.
    OpenMetrics,
    /// Prometheus text 0.0.4, for clients that do not ask for OpenMetrics (curl, promtool).
    PrometheusText,
}

impl Format {
    /// The format an HTTP `Accept` header asks for: OpenMetrics when it names it, else the
    /// 0.0.4 text every Prometheus client reads.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// What the collector reads of the manager this daemon runs.
struct ManagerSource {
    store: Store,
    raft: RaftHandle,
    usage: UsageStore,
    dispatcher: Dispatcher,
    autoscaler: Arc<crate::autoscaler::AutoscalerStats>,
    roles: RoleInstruments,
    /// Follows the store for the role instruments; stopped with the manager.
    watcher: JoinHandle<()>,
}

impl Drop for ManagerSource {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

type ManagerSlot = Arc<RwLock<Option<Arc<ManagerSource>>>>;

/// Encodes the manager's metrics when there is a manager; nothing otherwise.
struct ManagerCollector(ManagerSlot);

impl std::fmt::Debug for ManagerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerCollector").finish_non_exhaustive()
    }
}

impl Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(m) = source else {
            return Ok(());
        };
        let status = m.raft.status();
        raft::encode(&mut encoder, &status, &m.raft.instruments())?;
        // One consistent read for the cluster and usage series; the encoding is quick, and
        // the Raft loop waits on this lock only to apply.
        m.store.view(|st| -> Result<(), std::fmt::Error> {
            cluster::encode(&mut encoder, st)?;
            let sessions = status.is_leader.then(|| m.dispatcher.session_count());
            m.roles.encode(&mut encoder, sessions)?;
            m.dispatcher
                .message_tasks()
                .encode(encoder.encode_descriptor(
                    "shoal_dispatcher_message_tasks",
                    "Tasks in each session message the dispatcher sent to a worker (leader); \
                 its count is the messages sent.",
                    None,
                    MetricType::Histogram,
                )?)?;
            if status.is_leader {
                usage::encode(&mut encoder, st, &m.usage.all())?;
                autoscale::encode(&mut encoder, &m.autoscaler)?;
            }
            Ok(())
        })
    }
}

/// The metrics registry of one daemon; see the module documentation.
pub struct NodeMetrics {
    registry: Registry,
    api: api::ApiMetrics,
    manager: ManagerSlot,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        let mut registry = Registry::default();
        let api = api::ApiMetrics::default();
        api.register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        let manager = ManagerSlot::default();
        registry.register_collector(Box::new(ManagerCollector(manager.clone())));
        NodeMetrics {
            registry,
            api,
            manager,
        }
    }

    /// A tower layer that counts and times the requests of one gRPC server, labelled `server`
    /// ("local" for the API socket, "cluster" for the mutual-TLS port, …).
    pub fn api_layer(&self, server: &'static str) -> ApiLayer {
        ApiLayer::new(self.api.clone(), server)
    }

    /// Exports `m`'s metrics from now on (replacing a previous manager's). Call within a tokio
    /// runtime: it follows the store in a task of its own.
    pub fn attach_manager(&self, m: &Manager) {
        let roles = RoleInstruments::default();
        let watcher = tokio::spawn(watch::run(
            m.store().clone(),
            m.raft().subscribe_status(),
            roles.clone(),
        ));
        let source = ManagerSource {
            store: m.store().clone(),
            raft: m.raft().clone(),
            usage: m.usage().clone(),
            dispatcher: m.dispatcher(),
            autoscaler: m.autoscaler_stats(),
            roles,
            watcher,
        };
        *self.manager.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(source));
    }

    /// Stops exporting the manager's metrics (it stopped, or the node left the swarm).
    pub fn detach_manager(&self) {
        self.manager
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Everything, in `format`.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)?
            }
            Format::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
    }

    #[test]
    fn a_node_without_a_manager_exports_process_and_build_info() {
        let metrics = NodeMetrics::new();
        let text = metrics.encode(Format::OpenMetrics).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("shoal_build_info{version=\""), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(!text.contains("shoal_raft_"), "{text}");
        let text = metrics.encode(Format::PrometheusText).unwrap();
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
    }
}
