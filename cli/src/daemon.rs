//! `shoal daemon`: its flags. The daemon itself is the `shoal-node` crate.

use std::path::PathBuf;

use anyhow::Result;

use crate::client::socket_path;

/// Flags of `shoal daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Where the daemon keeps its state (Raft log, node identity, task logs).
    #[arg(long, default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// containerd's gRPC socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd: PathBuf,
    /// containerd namespace for Shoal's images and containers.
    #[arg(long, default_value = "shoal")]
    pub containerd_namespace: String,
    /// How often workers heartbeat their manager (a node silent for three periods is down).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub dispatcher_heartbeat: std::time::Duration,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP; off unless given).
    /// Every node exports its API and process metrics; a manager also the cluster's state, Raft,
    /// and (the leader) every task's CPU, memory and network use. Example: 127.0.0.1:9323.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
}

/// Runs the daemon, serving the client API on `host`'s socket.
pub async fn run(host: &str, args: DaemonArgs) -> Result<()> {
    shoal_node::run(shoal_node::Config {
        socket: socket_path(host)?,
        data_dir: args.data_dir,
        containerd: args.containerd,
        containerd_namespace: args.containerd_namespace,
        dispatcher_heartbeat: args.dispatcher_heartbeat,
        metrics_addr: args.metrics_addr,
    })
    .await
}
