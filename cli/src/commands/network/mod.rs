//! `shoal network create | ls | inspect | rm`: docker's network commands for the swarm's
//! overlay networks.
//!
//! `create` checks its flags with the same validator the control API runs, so a bad name,
//! driver, subnet, gateway or label is refused before the daemon is dialled and in the words
//! the daemon would use. [`list`] prints docker's `ls` table (or JSON lines, or a template),
//! [`inspect`] docker's `inspect` objects (the VNI as docker's
//! `com.docker.network.driver.overlay.vxlanid_list` option).

mod inspect;
mod list;

use anyhow::Result;
use clap::{Args, Subcommand};
use shoal_proto::validate::network::{
    network_create, NetworkError, NetworkRequest, OVERLAY_DRIVER,
};
use shoal_proto::{CreateNetworkRequest, Network, NetworkRef, NetworkSpec};

use crate::client::{Client, RpcResult};
use crate::commands::flags::parse_label;
use crate::commands::remove_each;

/// Every Shoal network spans the swarm, as docker's overlay networks do.
const SCOPE: &str = "swarm";

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver to manage the Network
    #[arg(short, long, default_value = OVERLAY_DRIVER)]
    pub driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// IPv4 Gateway for the subnet
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// Enable manual container attachment
    #[arg(long)]
    pub attachable: bool,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Create swarm routing-mesh network (there is one at most; swarm init makes `ingress`)
    #[arg(long)]
    pub ingress: bool,
    /// Set metadata on a network
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Network name
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display network IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: table, json, or a Go-style template such as '{{.Name}}'
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Networks (name, ID or ID prefix)
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Networks (name, ID or ID prefix)
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

pub async fn run(host: &str, command: NetworkCommand) -> Result<()> {
    match command {
        NetworkCommand::Create(args) => {
            // Refused before dialling: a typo needs no daemon to be reported.
            let spec = create_spec(&args)?;
            create(&Client::connect(host).await?, spec).await
        }
        NetworkCommand::Ls(args) => list::ls(&Client::connect(host).await?, args).await,
        NetworkCommand::Inspect(args) => {
            inspect::inspect(&Client::connect(host).await?, args).await
        }
        NetworkCommand::Rm(args) => rm(&Client::connect(host).await?, args).await,
    }
}

/// The spec `create` sends, after the control API's own offline checks. The subnet and
/// gateway go as parsed (the given text, canonical), or "" for the allocator to choose.
pub fn create_spec(args: &CreateArgs) -> Result<NetworkSpec, NetworkError> {
    // The validator reads labels as typed; `parse_label` has already split them.
    let labels: Vec<String> = args
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let checked = network_create(&NetworkRequest {
        name: &args.name,
        driver: &args.driver,
        subnet: args.subnet.as_deref(),
        gateway: args.gateway.as_deref(),
        labels: &labels,
    })?;
    Ok(NetworkSpec {
        name: checked.name,
        driver: checked.driver.to_string(),
        subnet: checked.subnet.map_or_else(String::new, |s| s.to_string()),
        gateway: checked.gateway.map_or_else(String::new, |g| g.to_string()),
        attachable: args.attachable,
        internal: args.internal,
        labels: checked.labels.into_iter().collect(),
        ingress: args.ingress,
    })
}

async fn create(client: &Client, spec: NetworkSpec) -> Result<()> {
    let network = client
        .control()
        .create_network(CreateNetworkRequest { spec: Some(spec) })
        .await
        .or_daemon_error()?;
    println!("{}", network.id);
    Ok(())
}

async fn get_network(client: &Client, name: &str) -> Result<Network> {
    client
        .control()
        .get_network(NetworkRef {
            network: name.to_string(),
        })
        .await
        .or_daemon_error()
}

async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    remove_each(&args.networks, |name| async move {
        client
            .control()
            .remove_network(NetworkRef {
                network: name.clone(),
            })
            .await
            .or_daemon_error()?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The `network` group alone, as `main` mounts it.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: NetworkCommand,
    }

    fn parse(args: &[&str]) -> Result<NetworkCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("network").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    fn create_args(args: &[&str]) -> CreateArgs {
        match parse(&[&["create"], args].concat()) {
            Ok(NetworkCommand::Create(a)) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn create_flags_become_the_spec() {
        let args = create_args(&[
            "--subnet",
            "198.18.4.0/24",
            "--gateway",
            "198.18.4.254",
            "--attachable",
            "--internal",
            "--label",
            "env=prod",
            "--label",
            "team",
            "backend",
        ]);
        let spec = create_spec(&args).unwrap();
        assert_eq!(spec.name, "backend");
        assert_eq!(spec.driver, "overlay");
        assert_eq!(spec.subnet, "198.18.4.0/24");
        assert_eq!(spec.gateway, "198.18.4.254");
        assert!(spec.attachable && spec.internal);
        assert_eq!(spec.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(spec.labels.get("team").map(String::as_str), Some(""));

        let bare = create_spec(&create_args(&["-d", "overlay", "plain"])).unwrap();
        assert_eq!(
            (bare.driver.as_str(), bare.subnet.as_str()),
            ("overlay", "")
        );
        assert_eq!(bare.gateway, "");
        assert!(!bare.attachable && !bare.internal && bare.labels.is_empty());
        assert!(!bare.ingress);
        assert!(
            create_spec(&create_args(&["--ingress", "mesh"]))
                .unwrap()
                .ingress
        );
    }

    #[test]
    fn create_refuses_what_the_validator_refuses() {
        let refused = |args: &[&str]| create_spec(&create_args(args)).unwrap_err();
        assert!(matches!(
            refused(&["--driver", "bridge", "n"]),
            NetworkError::UnsupportedDriver(_)
        ));
        assert!(matches!(
            refused(&["--subnet", "198.18.1.5/24", "n"]),
            NetworkError::SubnetNotNetworkAddress { .. }
        ));
        assert!(matches!(
            refused(&["--label", "my key=v", "n"]),
            NetworkError::LabelKeyWhitespace(_)
        ));
        assert!(matches!(refused(&["my.net"]), NetworkError::InvalidName(_)));
    }

    #[test]
    fn usage_errors_and_aliases() {
        // An empty label name is refused by the shared flag parser, as for services.
        let err = parse(&["create", "--label", "=x", "n"]).unwrap_err();
        assert!(err.to_string().contains("invalid label \"=x\""), "{err}");
        assert!(parse(&["create"]).is_err(), "NAME is required");
        assert!(parse(&["rm"]).is_err(), "a network is required");
        assert!(parse(&["inspect"]).is_err(), "a network is required");
        assert!(matches!(parse(&["list", "-q"]), Ok(NetworkCommand::Ls(a)) if a.quiet));
        assert!(matches!(
            parse(&["remove", "a", "b"]),
            Ok(NetworkCommand::Rm(a)) if a.networks == ["a", "b"]
        ));
    }
}
