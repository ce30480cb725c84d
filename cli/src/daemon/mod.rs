//! `shoal daemon`: the per-host process. Serves the client API on a unix socket, runs the
//! worker agent against containerd, and — once the node is in a swarm as a manager — the Raft
//! log and the manager roles.

use std::path::PathBuf;

/// Flags of `shoal daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Where the daemon keeps its state (Raft log, certificates, task logs).
    #[arg(long, default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// containerd's gRPC socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd: PathBuf,
    /// containerd namespace for Shoal's images and containers.
    #[arg(long, default_value = "shoal")]
    pub containerd_namespace: String,
}

pub async fn run(host: &str, args: DaemonArgs) -> anyhow::Result<()> {
    let _ = (host, args);
    anyhow::bail!("daemon not wired yet")
}
