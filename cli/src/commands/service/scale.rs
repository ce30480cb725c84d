//! `service scale` and `service rm`: act on each named service in turn, report the ones that
//! failed at the end (docker's way), and for `scale` follow each to convergence.

use anyhow::{anyhow, Result};
use shoal_proto::{Service, ServiceRef, UpdateServiceRequest};

use super::args::{RmArgs, ScaleArgs};
use crate::client::{Client, RpcResult};
use crate::commands::{progress, report_each};

pub(super) async fn scale(client: &Client, args: ScaleArgs) -> Result<()> {
    let mut scaled = Vec::new();
    let mut errors = Vec::new();
    for (name, replicas) in &args.scales {
        match scale_one(client, name, *replicas).await {
            Ok(service) => {
                println!("{name} scaled to {replicas}");
                scaled.push(service);
            }
            Err(e) => errors.push(e),
        }
    }
    if !args.detach {
        for service in &scaled {
            let since = service.meta.as_ref().map_or(0, |m| m.updated_at_ms);
            if let Err(e) = progress::wait(client, service, since, false).await {
                errors.push(e);
            }
        }
    }
    report_each(&errors)
}

async fn scale_one(client: &Client, name: &str, replicas: u64) -> Result<Service> {
    let service = client
        .control()
        .get_service(ServiceRef {
            service: name.to_string(),
        })
        .await
        .or_daemon_error()?;
    let mut spec = service
        .spec
        .clone()
        .ok_or_else(|| anyhow!("service {name} has no spec"))?;
    spec.replicas = replicas;
    client
        .control()
        .update_service(UpdateServiceRequest {
            service: service.id.clone(),
            version: service.meta.as_ref().map_or(0, |m| m.version),
            spec: Some(spec),
        })
        .await
        .or_daemon_error()
}

pub(super) async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    let mut errors = Vec::new();
    for name in &args.services {
        match client
            .control()
            .remove_service(ServiceRef {
                service: name.clone(),
            })
            .await
            .or_daemon_error()
        {
            Ok(_) => println!("{name}"),
            Err(e) => errors.push(e),
        }
    }
    report_each(&errors)
}
