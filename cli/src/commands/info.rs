//! `shoal info` and `shoal version`.

use anyhow::Result;
use clap::Args;
use shoal_proto::{Empty, InfoResponse};

use crate::client::{Client, RpcResult};
use crate::output;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format output: json, or a Go-style template such as '{{.swarm_state}}'
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct VersionArgs {}

pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn info(host: &str, args: InfoArgs) -> Result<()> {
    let client = Client::connect(host).await?;
    let info = client.daemon().info(Empty {}).await.or_daemon_error()?;
    match args.format {
        Some(format) => print!(
            "{}",
            output::render_object(&format, &serde_json::to_value(&info)?)?
        ),
        None => print!("{}", render_info(&info)),
    }
    Ok(())
}

/// Laid out as docker's `info`: a Client and a Server block, with the Swarm section inside.
pub fn render_info(info: &InfoResponse) -> String {
    let mut out = String::new();
    let mut line = |indent: usize, text: String| {
        let line = format!("{}{text}", " ".repeat(indent));
        out.push_str(line.trim_end());
        out.push('\n');
    };
    line(0, "Client:".into());
    line(1, format!("Version:    {CLIENT_VERSION}"));
    line(0, String::new());
    line(0, "Server:".into());
    line(1, format!("Server Version: {}", info.shoal_version));
    line(1, format!("Name: {}", info.hostname));
    line(1, format!("Swarm: {}", info.swarm_state));
    if info.swarm_state == "active" {
        line(2, format!("NodeID: {}", info.node_id));
        line(2, format!("Is Manager: {}", info.is_manager));
        if info.is_manager {
            line(2, format!("ClusterID: {}", info.cluster_id));
            line(2, format!("Managers: {}", info.managers));
            line(2, format!("Nodes: {}", info.nodes));
            line(2, format!("Services: {}", info.services));
            line(2, format!("Tasks Running: {}", info.tasks_running));
            line(2, "Raft:".into());
            line(3, format!("Applied Index: {}", info.raft_applied_index));
            line(3, format!("Term: {}", info.raft_term));
        }
        line(2, format!("Node Address: {}", info.node_addr));
        line(2, "Manager Addresses:".into());
        for addr in &info.manager_addrs {
            line(3, addr.clone());
        }
    }
    line(
        1,
        format!("containerd Version: {}", info.containerd_version),
    );
    line(
        1,
        format!("containerd Address: {}", info.containerd_address),
    );
    line(1, format!("Shoal Root Dir: {}", info.data_dir));
    out
}

/// The client's version always; the server's when the daemon answers (docker prints the client
/// block, then fails on the server part).
pub async fn version(host: &str, _args: VersionArgs) -> Result<()> {
    println!("Client:");
    println!(" Version:    {CLIENT_VERSION}");
    println!(
        " OS/Arch:    {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!();
    let client = Client::connect(host).await?;
    let info = client.daemon().info(Empty {}).await.or_daemon_error()?;
    println!("Server:");
    println!(" Shoal:");
    println!("  Version:    {}", info.shoal_version);
    println!(" containerd:");
    println!("  Version:    {}", info.containerd_version);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_swarm_has_no_swarm_details() {
        let out = render_info(&InfoResponse {
            swarm_state: "inactive".into(),
            node_id: "n1".into(),
            ..Default::default()
        });
        assert!(out.contains(" Swarm: inactive\n"));
        assert!(!out.contains("NodeID"));
    }

    #[test]
    fn active_manager_lists_swarm_details() {
        let out = render_info(&InfoResponse {
            swarm_state: "active".into(),
            node_id: "n1".into(),
            is_manager: true,
            cluster_id: "c1".into(),
            managers: 1,
            nodes: 2,
            node_addr: "10.0.0.1".into(),
            manager_addrs: vec!["10.0.0.1:2377".into()],
            ..Default::default()
        });
        assert!(out.contains(" Swarm: active\n  NodeID: n1\n  Is Manager: true\n  ClusterID: c1\n  Managers: 1\n  Nodes: 2\n"));
        assert!(out.contains("  Node Address: 10.0.0.1\n  Manager Addresses:\n   10.0.0.1:2377\n"));
    }
}
