//! `shoal volume create | ls | inspect | rm`: the local volumes of the node the CLI talks to,
//! as `docker volume` on a swarm node (volumes are a node's own, not the swarm's).

use std::collections::HashMap;

use anyhow::Result;
use clap::{Args, Subcommand};
use shoal_proto::{CreateVolumeRequest, Empty, RemoveVolumeRequest, Volume, VolumeRef};

use crate::client::{Client, RpcResult};
use crate::commands::flags::parse_label;
use crate::commands::{each, print_inspected, remove_each};
use crate::output::{Format, Listing, Row};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Volume driver name (only local)
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
    /// Volume name (a random one when left out)
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display volume names
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: table, json, or a Go-style template such as '{{.Name}}'
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a Go-style template
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Do not fail when a volume does not exist
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

pub async fn run(host: &str, command: VolumeCommand) -> Result<()> {
    if let VolumeCommand::Create(args) = &command {
        if args.driver != "local" {
            anyhow::bail!(
                "unsupported volume driver {:?}: Shoal's volumes are the node's own (local)",
                args.driver
            );
        }
    }
    let client = Client::connect(host).await?;
    match command {
        VolumeCommand::Create(args) => {
            let v = client
                .daemon()
                .create_volume(CreateVolumeRequest {
                    name: args.name.unwrap_or_default(),
                    labels: args.label.into_iter().collect::<HashMap<_, _>>(),
                })
                .await
                .or_daemon_error()?;
            println!("{}", v.name);
            Ok(())
        }
        VolumeCommand::Ls(args) => {
            let volumes = client
                .daemon()
                .list_volumes(Empty {})
                .await
                .or_daemon_error()?
                .volumes;
            if args.quiet {
                volumes.iter().for_each(|v| println!("{}", v.name));
                return Ok(());
            }
            print!(
                "{}",
                listing(&volumes).render(&Format::parse(args.format.as_deref()))?
            );
            Ok(())
        }
        VolumeCommand::Inspect(args) => {
            let (found, errors) = each(&args.names, |name| {
                let mut daemon = client.daemon();
                async move {
                    daemon
                        .inspect_volume(VolumeRef { name: name.clone() })
                        .await
                        .or_daemon_error()
                }
            })
            .await;
            match &args.format {
                Some(template) => {
                    for v in &found {
                        println!(
                            "{}",
                            crate::output::render_object(template, &volume_json(v))?
                        );
                    }
                    crate::commands::report_each(&errors)
                }
                None => print_inspected(&found, &errors, None, |v| Ok(volume_json(v))),
            }
        }
        VolumeCommand::Rm(args) => {
            remove_each(&args.names, |name| {
                let mut daemon = client.daemon();
                async move {
                    daemon
                        .remove_volume(RemoveVolumeRequest {
                            name: name.clone(),
                            force: args.force,
                        })
                        .await
                        .or_daemon_error()?;
                    Ok(())
                }
            })
            .await
        }
    }
}

const VOLUME_COLUMNS: &[(&str, &str)] = &[("Driver", "DRIVER"), ("Name", "VOLUME NAME")];

fn listing(volumes: &[Volume]) -> Listing {
    let rows = volumes
        .iter()
        .map(|v| {
            let cells = vec![v.driver.clone(), v.name.clone()];
            let mut fields: serde_json::Map<String, serde_json::Value> = VOLUME_COLUMNS
                .iter()
                .zip(&cells)
                .map(|((k, _), c)| (k.to_string(), c.clone().into()))
                .collect();
            fields.insert("Mountpoint".into(), v.mountpoint.clone().into());
            fields.insert("Scope".into(), v.scope.clone().into());
            Row { cells, fields }
        })
        .collect();
    Listing {
        columns: VOLUME_COLUMNS,
        rows,
    }
}

/// `docker volume inspect`'s shape.
fn volume_json(v: &Volume) -> serde_json::Value {
    serde_json::json!({
        "CreatedAt": v.created_at,
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": null,
        "Scope": v.scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_list_like_docker() {
        let v = Volume {
            name: "data".into(),
            driver: "local".into(),
            mountpoint: "/var/lib/shoal/worker/volumes/data/_data".into(),
            created_at: "2026-12-05T06:00:00Z".into(),
            labels: HashMap::new(),
            scope: "local".into(),
        };
        let out = listing(std::slice::from_ref(&v))
            .render(&Format::Table)
            .expect("render");
        assert!(out.starts_with("DRIVER"), "{out}");
        assert!(out.contains("VOLUME NAME"), "{out}");
        assert!(out.contains("local") && out.contains("data"), "{out}");
        assert_eq!(volume_json(&v)["Mountpoint"], v.mountpoint);
    }
}
